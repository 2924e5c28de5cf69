//! The etcd containers of the simulated etcd clusters, run for real (Debian's etcd-server).
//!
//! **Bitnami clusters (CSM 1.5+): one `etcd` per member pod.** The simulated kubelet gives a
//! member pod a loopback address as its pod IP (`status.podIP`, from 127.76.0.0/16), and its
//! container runs what the image runs (`bitnami`: `etcd_initialize`, then etcd with the
//! container's `ETCD_*` variables as its flags), with its data in its own PVC's directory
//! (`data-<sts>-N`: one directory per PVC uid, deleted when the PVC is, as a dynamically
//! provisioned volume with reclaim policy Delete). The cluster DNS names in the env
//! (`ETCD_INITIAL_CLUSTER`, `ETCD_INITIAL_ADVERTISE_PEER_URLS`, `ETCD_ADVERTISE_CLIENT_URLS`)
//! are resolved when the container starts (`env`): a pod's name to its pod IP, a Service's to
//! its cluster IP. A StatefulSet pod keeps its address across incarnations (a real pod gets a
//! new IP but keeps its DNS name, which is what the members registered), so a member's peer
//! URL stays right when its pod is made again. The client Service's cluster IP answers on its
//! ports for the Ready members only, through the simulated kube-proxy (`kube_proxy`); each
//! member answers on its own pod IP, port 2379 (client) and 2380 (peer).
//!
//! Readiness follows the member's own health (the chart's probe, `healthcheck.sh`: `etcdctl
//! endpoint health` of the member, which fails without a leader or with an alarm raised),
//! probed every 250 ms (not the pod's `periodSeconds`), a Ready pod turning not Ready after
//! the probe's `failureThreshold` failures in a row (CSM: 10), written when it changes; the
//! liveness probe is not simulated. A container that exits, or whose start
//! fails, is started again after the kubelet's crash-loop back-off
//! (`SimOptions::job_backoff` doubling, at least 200 ms, up to 30 times it); meanwhile the
//! pod shows `CrashLoopBackOff`, the last termination's message (the last error etcd logged,
//! or the script's), and the restarts. A pod being deleted has its etcd stopped with SIGTERM
//! (etcd hands leadership over), with no member removal (`ETCD_DISABLE_PRESTOP=yes`).
//!
//! **etcd-operator clusters (CSM 1.0-1.4): one `etcd` per cluster**, not per pod, listening
//! on the cluster IP of the client Service `<name>-client` (no kube-proxy in between), named
//! after the cluster's first member pod (a restored cluster's seed first), its data living as
//! long as the process (the operator's members use pod storage). The service under test only
//! rebuilds and restores those clusters whole (the operator replaces members itself), so their
//! members are not worth a process each; their pods are Ready as soon as they run.
//!
//! The first time a cluster's etcd is healthy, the fake BSS stores its seeded boot parameters
//! in it (`cray-bss-*`), and a Bitnami cluster gets a real backup in the snapshotter directory
//! (`<snapshots>/<sts>/db-YYYY-MM-DD_HH-MM`, by `etcdctl snapshot save`, as the chart's
//! snapshotter CronJob names them), and, on CSM 1.7, the snapshot its Helm upgrade's
//! pre-upgrade Job put in S3 ([`upgrade_job::pre_upgrade_snapshot`]).
//!
//! Faults (`faults`): a member can be stopped (its container down, not restarted) and started
//! again, and have its data files corrupted or removed (its process killed first, as a crash).
//!
//! Off unless [`SimOptions::real_etcd`](super::super::SimOptions::real_etcd), and only for
//! the clusters [`SimOptions::real_etcd_clusters`](super::super::SimOptions::real_etcd_clusters)
//! names, if it names any; every process is killed when the simulated cluster stops or is
//! dropped.

mod bitnami;
mod env;
pub mod faults;
mod member;
mod process;
mod real_etcd;
mod upgrade_job;

pub use process::{CLIENT_PORT, ETCD_BINARY, ETCDCTL_BINARY, PEER_PORT, save_snapshot};
pub use real_etcd::{RealEtcd, RealMember, SNAPSHOTTER_PVC};

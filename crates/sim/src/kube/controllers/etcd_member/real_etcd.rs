//! The hub of the real members: every member's task, the directories of their data, the
//! addresses and DNS of the member pods, and what the simulated cluster asks of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kube::admission::allocate_pod_ip;
use crate::kube::controllers::annotations::{NEVER_READY, UPGRADED_AT_REVISION};
use crate::kube::controllers::ctx::{ContainerRuntime, Ctx, all, log_err};
use crate::kube::controllers::etcd_restore::RESTORE_FROM;
use crate::kube::meta;
use crate::kube::resources::{PERSISTENTVOLUMECLAIMS, PODS, SERVICES, STATEFULSETS};

use super::env::Dns;
use super::member::{self, ContainerState, Kind, Member, MemberSpec, MemberTask, Shared};
use super::process::{self, CLIENT_PORT};

/// The RWX PVC the Bitnami pods mount at `/snapshots` (cray-etcd-base's
/// `disasterRecovery.pvc.existingClaim`), backed by the simulated cluster's snapshotter
/// directory.
pub const SNAPSHOTTER_PVC: &str = "bitnami-etcd-snapshotter";

/// A member of a simulated etcd cluster that runs for real, as the simulated cluster sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealMember {
    /// The member's pod (Bitnami), or the etcd-operator cluster's first member pod.
    pub pod: String,
    /// Its pod IP (Bitnami), or the client Service's cluster IP (etcd-operator).
    pub ip: Ipv4Addr,
    /// `http://<ip>:2379`.
    pub client_url: String,
    /// The directory behind its data volume (`ETCD_DATA_DIR` is `<dir>/data`).
    pub volume: PathBuf,
    /// Its etcd answers `/health`.
    pub healthy: bool,
    /// Times the container was started again.
    pub restarts: u32,
    /// Stopped with [`faults`] (not running, not restarted).
    pub stopped: bool,
    /// etcd's log (its standard error, every incarnation's).
    pub log: PathBuf,
}

/// The real etcd processes of one simulated cluster.
pub struct RealEtcd {
    root: tempfile::TempDir,
    /// The snapshotter PVC's directory (`/snapshots` in the pods).
    snapshots: PathBuf,
    /// The clusters that run for real (None: all).
    only: Option<HashSet<String>>,
    pub(super) gateway: process::Gateway,
    pub(super) members: Mutex<BTreeMap<String, Member>>,
    /// The address each pod (by `<namespace>/<name>`) has, across its incarnations.
    pod_ips: Mutex<HashMap<String, Ipv4Addr>>,
    /// The last member on each address: the next waits until it has ended.
    last_on_ip: Mutex<HashMap<Ipv4Addr, CancellationToken>>,
    /// Members stopped whose process may still run: key, data directory, cancelled when
    /// it has ended.
    retiring: Mutex<Vec<(String, PathBuf, CancellationToken)>>,
    /// Clusters (`<namespace>/<cluster>`) whose first-healthy work is done, or under way.
    seeded: Mutex<HashSet<String>>,
    seeding: Mutex<HashSet<String>>,
    /// Pods (`<namespace>/<name>`) whose container was stopped on purpose.
    pub(super) stopped: Mutex<HashSet<String>>,
    /// The readiness last written to each pod (by uid), as the kubelet's probe manager
    /// reports only changes.
    reported: Mutex<HashMap<String, ContainerState>>,
    /// Bumped whenever a member's state changes (for [`RealEtcd::settled`] waiters).
    changed: watch::Sender<u64>,
}

/// `<namespace>/<name>`.
pub(super) fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

fn running(pod: &Value) -> bool {
    !meta::is_deleting(pod)
        && pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
}

/// The etcd cluster a pod is a member of, the client Service of that cluster, and whether it
/// is a Bitnami StatefulSet's pod.
fn cluster_of(pod: &Value) -> Option<(String, String, bool)> {
    if let Some(cluster) = label(pod, "etcd_cluster") {
        return Some((cluster.to_owned(), format!("{cluster}-client"), false));
    }
    if label(pod, "app.kubernetes.io/name") != Some("etcd") {
        return None;
    }
    let owner = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["kind"] == "StatefulSet" && r["controller"] == true)?;
    let sts = owner["name"].as_str()?.to_owned();
    Some((sts.clone(), sts, true))
}

/// The prefix of a simulated cluster's etcd directory in the temporary directory.
const ROOT_PREFIX: &str = "sim-etcd-";
/// The file in it naming the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Removes the etcd directories of simulated clusters whose process is gone without removing
/// them (killed with SIGKILL, or ended without running destructors): each holds about 128 MB
/// per member (etcd preallocates its WAL), so a few killed test runs would fill a disk.
fn remove_abandoned_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        let ours = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(ROOT_PREFIX));
        // A directory without the file is being created (or predates it): left alone.
        let Some(owner) = ours
            .then(|| std::fs::read_to_string(dir.join(OWNER_FILE)).ok())
            .flatten()
        else {
            continue;
        };
        let alive = owner
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive && std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(dir = %dir.display(), "removed the etcd directory of a simulated cluster whose process is gone");
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RealEtcd {
    /// Real etcd for the clusters `only` names (None: every cluster), with the snapshotter
    /// PVC's volume at `snapshots`.
    pub fn new(snapshots: PathBuf, only: Option<&[String]>) -> anyhow::Result<RealEtcd> {
        if !crate::kube::options::etcd_installed() {
            anyhow::bail!(
                "the simulated cluster was asked to run real etcd clusters, but `{}` is not on the \
                 PATH (Debian: apt-get install etcd-server)",
                process::ETCD_BINARY
            );
        }
        remove_abandoned_roots();
        let root = tempfile::Builder::new().prefix(ROOT_PREFIX).tempdir()?;
        std::fs::write(root.path().join(OWNER_FILE), std::process::id().to_string())?;
        Ok(RealEtcd {
            root,
            snapshots,
            only: only.map(|names| names.iter().cloned().collect()),
            gateway: process::Gateway::default(),
            members: Mutex::default(),
            pod_ips: Mutex::default(),
            last_on_ip: Mutex::default(),
            retiring: Mutex::default(),
            seeded: Mutex::default(),
            seeding: Mutex::default(),
            stopped: Mutex::default(),
            reported: Mutex::default(),
            changed: watch::channel(0).0,
        })
    }

    /// Whether the etcd cluster `name` runs for real.
    pub fn runs(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(name))
    }

    fn pvc_dir(&self, uid: &str) -> PathBuf {
        self.root.path().join(format!("pvc-{uid}"))
    }

    /// Where the member's etcd logs.
    fn log_path(&self, spec: &MemberSpec) -> PathBuf {
        self.root
            .path()
            .join(format!("{}_{}.log", spec.ns, spec.name))
    }

    /// A container's own filesystem (for paths on no volume).
    fn container_dir(&self, spec: &MemberSpec) -> PathBuf {
        self.root
            .path()
            .join(format!("container-{}-{}", spec.ns, spec.name))
    }

    /// The address of the pod `name` in `ns`, the same for each of its incarnations.
    fn pod_ip_of(&self, ns: &str, name: &str) -> Ipv4Addr {
        *lock(&self.pod_ips)
            .entry(key(ns, name))
            .or_insert_with(allocate_pod_ip)
    }

    /// The pod is a member of a Bitnami cluster that runs for real.
    pub(super) fn real_bitnami_member(&self, pod: &Value) -> bool {
        cluster_of(pod).is_some_and(|(cluster, _, bitnami)| bitnami && self.runs(&cluster))
    }

    /// The pod IP the kubelet gives `pod`: a loopback address when it is a member of a
    /// Bitnami cluster that runs for real (None: any address will do).
    pub fn pod_ip(&self, pod: &Value) -> Option<Ipv4Addr> {
        self.real_bitnami_member(pod).then(|| {
            self.pod_ip_of(
                meta::namespace(pod).unwrap_or_default(),
                meta::name(pod).unwrap_or_default(),
            )
        })
    }

    fn dns(&self, ctx: &Ctx, ns: &str) -> Dns {
        Dns::of_namespace(
            ns,
            &all(ctx, &SERVICES),
            &all(ctx, &PODS),
            &all(ctx, &STATEFULSETS),
        )
    }

    /// Where each PVC the pod mounts is here (PVCs that do not exist are left out).
    pub(super) fn claims(&self, pod: &Value, pvcs: &[Value]) -> BTreeMap<String, PathBuf> {
        let ns = meta::namespace(pod).unwrap_or_default();
        pod.pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
            .filter_map(|claim| {
                if claim == SNAPSHOTTER_PVC {
                    return Some((claim.to_owned(), self.snapshots.clone()));
                }
                let pvc = pvcs
                    .iter()
                    .find(|p| meta::namespace(p) == Some(ns) && meta::name(p) == Some(claim))?;
                Some((claim.to_owned(), self.pvc_dir(meta::uid(pvc)?)))
            })
            .collect()
    }

    /// What should run now, by member key (`pod/<uid>`, `cluster/<namespace>/<cluster>`).
    fn desired(&self, ctx: &Ctx) -> BTreeMap<String, MemberSpec> {
        let pods = all(ctx, &PODS);
        let services = all(ctx, &SERVICES);
        let pvcs = all(ctx, &PERSISTENTVOLUMECLAIMS);
        let stopped = lock(&self.stopped).clone();
        let mut desired = BTreeMap::new();
        // An etcd-operator cluster's member is named after its first pod (by name) that is
        // not going away, so that it keeps its name while the other pods start; a restored
        // cluster's seed member comes first: it holds the backup.
        let mut pods: Vec<&Value> = pods.iter().filter(|p| running(p)).collect();
        pods.sort_by_key(|p| {
            (
                meta::annotation(p, RESTORE_FROM).is_none(),
                meta::name(p).unwrap_or_default().to_owned(),
            )
        });
        for pod in pods {
            let Some((cluster, service, bitnami)) = cluster_of(pod) else {
                continue;
            };
            let ns = meta::namespace(pod).unwrap_or_default();
            let name = meta::name(pod).unwrap_or_default();
            if !self.runs(&cluster) {
                continue;
            }
            if bitnami {
                let Some(ip) = pod
                    .pointer("/status/podIP")
                    .and_then(Value::as_str)
                    .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                    .filter(Ipv4Addr::is_loopback)
                else {
                    continue;
                };
                if stopped.contains(&key(ns, name)) {
                    continue;
                }
                let claims = self.claims(pod, &pvcs);
                let data = claims
                    .iter()
                    .find(|(claim, _)| claim.as_str() != SNAPSHOTTER_PVC)
                    .map(|(_, dir)| dir.clone());
                let mut spec = MemberSpec {
                    ns: ns.to_owned(),
                    name: name.to_owned(),
                    cluster,
                    ip,
                    data_dir: PathBuf::new(),
                    ephemeral: data.is_none(),
                    kind: Kind::Bitnami {
                        pod: json!({
                            "metadata": pod["metadata"],
                            "spec": pod["spec"],
                            "status": { "podIP": ip.to_string() },
                        }),
                        claims,
                    },
                };
                spec.data_dir = data.unwrap_or_else(|| self.container_dir(&spec));
                desired.insert(format!("pod/{}", meta::uid(pod).unwrap_or_default()), spec);
                continue;
            }
            let k = format!("cluster/{}", key(ns, &cluster));
            if desired.contains_key(&k) {
                continue;
            }
            // Only loopback addresses are ever listened on.
            let Some(ip) = services
                .iter()
                .find(|s| meta::namespace(s) == Some(ns) && meta::name(s) == Some(&service))
                .and_then(|s| {
                    s.pointer("/spec/clusterIP")?
                        .as_str()?
                        .parse::<Ipv4Addr>()
                        .ok()
                })
                .filter(Ipv4Addr::is_loopback)
            else {
                continue;
            };
            let owner = meta::controller_uid(pod).unwrap_or("none");
            desired.insert(
                k,
                MemberSpec {
                    ns: ns.to_owned(),
                    name: name.to_owned(),
                    cluster,
                    ip,
                    data_dir: self.root.path().join(format!("member-{owner}")),
                    ephemeral: true,
                    kind: Kind::Operator {
                        restore_from: meta::annotation(pod, RESTORE_FROM).map(PathBuf::from),
                    },
                },
            );
        }
        desired
    }

    /// Starts and stops members to match the store; removes the directories of deleted PVCs;
    /// writes the Bitnami pods' readiness.
    pub fn reconcile(self: &Arc<Self>, ctx: &Ctx) {
        let desired = self.desired(ctx);
        {
            let mut members = lock(&self.members);
            // A Bitnami member is its pod's container: it runs as long as that pod (its spec
            // cannot change); an etcd-operator cluster's one member follows its pods.
            let stale: Vec<String> = members
                .iter()
                .filter(|(k, m)| match desired.get(*k) {
                    None => true,
                    Some(spec) => !spec.is_bitnami() && *spec != m.spec,
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                if let Some(m) = members.remove(&k) {
                    m.shared.cancel.cancel();
                    lock(&self.last_on_ip).insert(m.spec.ip, m.shared.finished.clone());
                    lock(&self.retiring).push((
                        k.clone(),
                        m.spec.data_dir.clone(),
                        m.shared.finished.clone(),
                    ));
                }
            }
            for (k, spec) in desired {
                if members.contains_key(&k) {
                    continue;
                }
                let member = Member {
                    spec: spec.clone(),
                    shared: Shared::new(&ctx.shutdown),
                };
                let task = MemberTask {
                    etcd: self.clone(),
                    ctx: ctx.clone(),
                    key: k.clone(),
                    after: lock(&self.last_on_ip).get(&spec.ip).cloned(),
                    spec,
                    shared: member.shared.clone(),
                    log_from: Mutex::default(),
                };
                let etcd = self.clone();
                let ctx2 = ctx.clone();
                ctx.spawn(async move {
                    task.run().await;
                    etcd.remove_unused_volumes(&ctx2);
                });
                members.insert(k, member);
            }
        }
        self.remove_unused_volumes(ctx);
        self.sync_pods(ctx);
    }

    /// A deleted PVC's volume goes with it, once no process uses it.
    fn remove_unused_volumes(&self, ctx: &Ctx) {
        let live: HashSet<PathBuf> = all(ctx, &PERSISTENTVOLUMECLAIMS)
            .iter()
            .filter_map(meta::uid)
            .map(|uid| self.pvc_dir(uid))
            .collect();
        let mut used: HashSet<PathBuf> = lock(&self.members)
            .values()
            .map(|m| m.spec.data_dir.clone())
            .collect();
        {
            let mut retiring = lock(&self.retiring);
            retiring.retain(|(_, _, finished)| !finished.is_cancelled());
            used.extend(retiring.iter().map(|(_, dir, _)| dir.clone()));
        }
        if let Ok(dirs) = std::fs::read_dir(self.root.path()) {
            for dir in dirs.flatten().map(|d| d.path()) {
                let is_pvc = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("pvc-"));
                if is_pvc && !live.contains(&dir) && !used.contains(&dir) {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
    }

    /// The state of the member `k` (None: nothing runs for it).
    fn member_state(&self, k: &str) -> Option<ContainerState> {
        lock(&self.members)
            .get(k)
            .map(|m| lock(&m.shared.state).clone())
    }

    /// Writes each running Bitnami pod's readiness and container state when what its probe
    /// (or its container's crash loop) says changed since the last write.
    pub(super) fn sync_pods(&self, ctx: &Ctx) {
        let pods = all(ctx, &PODS);
        let stopped = lock(&self.stopped).clone();
        let mut reported = lock(&self.reported);
        let live: HashSet<&str> = pods.iter().filter_map(meta::uid).collect();
        reported.retain(|uid, _| live.contains(uid.as_str()));
        for pod in &pods {
            if !running(pod) || !self.real_bitnami_member(pod) {
                continue;
            }
            let uid = meta::uid(pod).unwrap_or_default().to_owned();
            let ns = meta::namespace(pod).unwrap_or_default();
            let name = meta::name(pod).unwrap_or_default();
            let mut state = self.member_state(&format!("pod/{uid}")).unwrap_or_default();
            state.stopped = stopped.contains(&key(ns, name));
            if state.stopped || meta::annotation(pod, NEVER_READY) == Some("true") {
                state.healthy = false;
            }
            if reported.get(&uid) == Some(&state) {
                continue;
            }
            let now = meta::now();
            let r = ctx.modify(&PODS, pod, |p| {
                if running(p) {
                    write_container_state(p, &state, &now);
                }
            });
            if r.is_ok() {
                reported.insert(uid, state);
            }
            log_err("write etcd pod readiness", r);
        }
    }

    /// Every member that should run is up and healthy, and every cluster with members has its
    /// first-healthy work done.
    pub fn settled(&self, ctx: &Ctx) -> bool {
        let desired = self.desired(ctx);
        let members = lock(&self.members);
        let seeded = lock(&self.seeded);
        desired.iter().all(|(k, spec)| {
            seeded.contains(&key(&spec.ns, &spec.cluster))
                && members.get(k).is_some_and(|m| {
                    (spec.is_bitnami() || m.spec == *spec) && lock(&m.shared.state).healthy
                })
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `http://<client Service's cluster IP>:2379` of the etcd cluster `cluster` in `ns`,
    /// while a member of it runs.
    pub fn url(&self, ctx: &Ctx, ns: &str, cluster: &str) -> Option<String> {
        let members = lock(&self.members);
        let member = members
            .values()
            .find(|m| m.spec.ns == ns && m.spec.cluster == cluster)?;
        if !member.spec.is_bitnami() {
            return Some(member.spec.client_url());
        }
        let service = ctx.store.try_get(&SERVICES, ns, cluster)?;
        let ip = service.pointer("/spec/clusterIP")?.as_str()?;
        Some(process::url(ip.parse().ok()?, CLIENT_PORT))
    }

    /// The members of the etcd cluster `cluster` in `ns` that run for real, by pod name: a
    /// Bitnami cluster's running pods (their containers up, crash-looping or stopped), an
    /// etcd-operator cluster's one process.
    pub fn members(&self, ctx: &Ctx, ns: &str, cluster: &str) -> Vec<RealMember> {
        let members = lock(&self.members);
        let stopped = lock(&self.stopped);
        let mut out: Vec<RealMember> = members
            .values()
            .filter(|m| m.spec.ns == ns && m.spec.cluster == cluster)
            .map(|m| {
                let state = lock(&m.shared.state).clone();
                RealMember {
                    pod: m.spec.name.clone(),
                    ip: m.spec.ip,
                    client_url: m.spec.client_url(),
                    volume: m.spec.data_dir.clone(),
                    healthy: state.healthy,
                    restarts: state.restarts,
                    stopped: false,
                    log: self.log_path(&m.spec),
                }
            })
            .collect();
        let pvcs = all(ctx, &PERSISTENTVOLUMECLAIMS);
        for pod in all(ctx, &PODS) {
            let name = meta::name(&pod).unwrap_or_default();
            let mine = meta::namespace(&pod) == Some(ns)
                && running(&pod)
                && cluster_of(&pod).is_some_and(|(c, _, _)| c == cluster)
                && stopped.contains(&key(ns, name));
            if !mine {
                continue;
            }
            let ip = self.pod_ip_of(ns, name);
            let volume = self
                .claims(&pod, &pvcs)
                .into_iter()
                .find(|(claim, _)| claim != SNAPSHOTTER_PVC)
                .map(|(_, dir)| dir)
                .unwrap_or_default();
            let spec_name = name.to_owned();
            out.push(RealMember {
                pod: spec_name.clone(),
                ip,
                client_url: process::url(ip, CLIENT_PORT),
                volume,
                healthy: false,
                restarts: 0,
                stopped: true,
                log: self.root.path().join(format!("{ns}_{spec_name}.log")),
            });
        }
        out.sort_by(|a, b| a.pod.cmp(&b.pod));
        out
    }

    /// Stops the container of the pod with `uid` (if it runs a member) and waits until its
    /// process has ended, as the kubelet does before a deleted pod goes.
    pub async fn stop_container(&self, uid: &str) {
        let k = format!("pod/{uid}");
        let finished = lock(&self.members)
            .get(&k)
            .map(|m| {
                m.shared.cancel.cancel();
                m.shared.finished.clone()
            })
            .or_else(|| {
                lock(&self.retiring)
                    .iter()
                    .find(|(key, _, _)| *key == k)
                    .map(|(_, _, finished)| finished.clone())
            });
        if let Some(finished) = finished {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), finished.cancelled())
                .await;
        }
    }

    /// The snapshotter directory.
    pub fn snapshots(&self) -> &Path {
        &self.snapshots
    }

    /// Kills every process (at shutdown). It waits (briefly: SIGKILL ends a process within
    /// milliseconds) until each is gone, so that no etcd still writes (its WAL preallocates
    /// 64 MB) into a directory being removed: a race that left the simulated cluster's
    /// directories behind.
    pub fn stop_all(&self) {
        let members = std::mem::take(&mut *lock(&self.members));
        for (k, m) in members {
            m.shared.cancel.cancel();
            if let Some(child) = lock(&m.shared.child).as_mut() {
                let _ = child.start_kill();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            if m.spec.ephemeral {
                let _ = std::fs::remove_dir_all(&m.spec.data_dir);
            }
            tracing::info!(member = %k, "simulated etcd stopped");
        }
    }

    /// Appends `lines` to the log of the member's pod (every running pod of an etcd-operator
    /// cluster, whose one process stands for them all).
    fn pod_log(&self, ctx: &Ctx, spec: &MemberSpec, lines: &[String]) {
        for pod in all(ctx, &PODS) {
            let mine = meta::namespace(&pod) == Some(spec.ns.as_str())
                && running(&pod)
                && if spec.is_bitnami() {
                    meta::name(&pod) == Some(spec.name.as_str())
                } else {
                    cluster_of(&pod).is_some_and(|(c, _, _)| c == spec.cluster)
                };
            if mine {
                ctx.store.append_log(&pod, lines.iter().cloned());
            }
        }
    }

    /// The first time the member's cluster is healthy: the fake BSS puts its data into its
    /// etcd, and a Bitnami cluster gets a backup in the snapshotter directory.
    async fn first_healthy(&self, ctx: &Ctx, spec: &MemberSpec) {
        let k = key(&spec.ns, &spec.cluster);
        if lock(&self.seeded).contains(&k) || !lock(&self.seeding).insert(k.clone()) {
            return;
        }
        let url = spec.client_url();
        if (spec.cluster == "cray-bss-etcd" || spec.cluster == "cray-bss-bitnami-etcd")
            && let Err(e) = ctx.csm.seed_bss_etcd(&url).await
        {
            tracing::warn!(cluster = %k, error = %e, "cannot seed BSS's boot parameters");
        }
        let snapshotter = ctx
            .store
            .get(&PERSISTENTVOLUMECLAIMS, &spec.ns, SNAPSHOTTER_PVC)
            .is_ok();
        if spec.is_bitnami() && snapshotter {
            match process::save_snapshot(&url, &self.snapshots.join(&spec.cluster)).await {
                Ok(file) => tracing::info!(cluster = %k, file = %file.display(), "seeded a backup"),
                Err(e) => tracing::warn!(cluster = %k, error = %e, "cannot seed a backup"),
            }
            self.upgrade_snapshot(ctx, spec, &url).await;
        }
        lock(&self.seeded).insert(k);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The kubelet runs the member pods' containers through this.
/// What a member's task asks of the hub.
impl member::Hub for RealEtcd {
    fn changed(&self, ctx: &Ctx) {
        self.changed.send_modify(|n| *n += 1);
        self.sync_pods(ctx);
    }

    fn log_path(&self, spec: &MemberSpec) -> PathBuf {
        RealEtcd::log_path(self, spec)
    }

    fn container_dir(&self, spec: &MemberSpec) -> PathBuf {
        RealEtcd::container_dir(self, spec)
    }

    fn pod_ip_of(&self, ns: &str, pod: &str) -> Ipv4Addr {
        RealEtcd::pod_ip_of(self, ns, pod)
    }

    fn dns(&self, ctx: &Ctx, ns: &str) -> Dns {
        RealEtcd::dns(self, ctx, ns)
    }

    fn gateway(&self) -> &process::Gateway {
        &self.gateway
    }

    fn pod_log(&self, ctx: &Ctx, spec: &MemberSpec, lines: &[String]) {
        RealEtcd::pod_log(self, ctx, spec, lines);
    }

    fn first_healthy<'a>(
        &'a self,
        ctx: &'a Ctx,
        spec: &'a MemberSpec,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(RealEtcd::first_healthy(self, ctx, spec))
    }
}

impl ContainerRuntime for RealEtcd {
    fn pod_ip(&self, pod: &Value) -> Option<Ipv4Addr> {
        RealEtcd::pod_ip(self, pod)
    }

    fn stop_container<'a>(&'a self, uid: &'a str) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(RealEtcd::stop_container(self, uid))
    }
}

impl RealEtcd {
    /// A cluster Helm upgraded on CSM 1.7 ([`UPGRADED_AT_REVISION`] on its StatefulSet) gets
    /// the object its pre-upgrade Job left in S3 (when the simulated S3 runs).
    async fn upgrade_snapshot(&self, ctx: &Ctx, spec: &MemberSpec, url: &str) {
        let revision = ctx
            .store
            .get(&STATEFULSETS, &spec.ns, &spec.cluster)
            .ok()
            .and_then(|sts| meta::annotation(&sts, UPGRADED_AT_REVISION).map(str::to_owned))
            .and_then(|revision| revision.parse().ok());
        let (Some(revision), Some(root)) = (revision, ctx.s3_root.as_ref()) else {
            return;
        };
        match super::upgrade_job::pre_upgrade_snapshot(root, url, &spec.cluster, revision).await {
            Ok(key) => {
                tracing::info!(cluster = %spec.cluster, %key, "seeded the pre-upgrade snapshot")
            }
            Err(e) => {
                tracing::warn!(cluster = %spec.cluster, error = %e, "cannot seed the pre-upgrade snapshot")
            }
        }
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The pod's etcd container status and Ready conditions for `state`.
fn write_container_state(pod: &mut Value, state: &ContainerState, now: &str) {
    let ready = state.healthy;
    if let Some(cs) = pod["status"]["containerStatuses"].as_array_mut() {
        for c in cs.iter_mut() {
            c["ready"] = json!(ready);
            c["restartCount"] = json!(state.restarts);
            match &state.failure {
                _ if state.stopped => {
                    if c.pointer("/state/terminated").is_none() {
                        c["state"] = json!({ "terminated": {
                            "exitCode": 137, "reason": "Error", "finishedAt": now,
                        }});
                    }
                    c["started"] = json!(false);
                }
                Some(message) if !ready => {
                    c["state"] = json!({ "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": format!("back-off restarting failed container {}", c["name"].as_str().unwrap_or("etcd")),
                    }});
                    c["lastState"] = json!({ "terminated": {
                        "exitCode": 1, "reason": "Error", "message": message, "finishedAt": now,
                    }});
                    c["started"] = json!(false);
                }
                _ => {
                    if c.pointer("/state/running").is_none() {
                        c["state"] = json!({ "running": { "startedAt": now } });
                    }
                    c["started"] = json!(true);
                }
            }
        }
    }
    if let Some(cs) = pod["status"]["conditions"].as_array_mut() {
        for c in cs.iter_mut() {
            if c["type"] != "Ready" && c["type"] != "ContainersReady" {
                continue;
            }
            let status = if ready { "True" } else { "False" };
            if c["status"] != status {
                c["status"] = json!(status);
                c["lastTransitionTime"] = json!(now);
            }
            match c.as_object_mut() {
                Some(m) if ready => {
                    m.remove("reason");
                }
                Some(m) => {
                    m.insert("reason".into(), json!("ContainersNotReady"));
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::{expand, resolve_pod_path};
    use super::super::member::crash_backoff;
    use super::*;

    #[test]
    fn env_references_expand_like_the_kubelet() {
        let mut env = BTreeMap::new();
        env.insert(
            "MY_POD_NAME".to_owned(),
            "cray-bss-bitnami-etcd-0".to_owned(),
        );
        assert_eq!(
            expand("http://$(MY_POD_NAME).h:2380", &env),
            "http://cray-bss-bitnami-etcd-0.h:2380"
        );
        assert_eq!(expand("$(UNSET) $$ $x", &env), "$(UNSET) $ $x");
    }

    #[test]
    fn pod_paths_resolve_only_on_volumes_the_sim_backs() {
        let pod = json!({
            "spec": {
                "containers": [{ "name": "etcd", "volumeMounts": [
                    { "name": "data", "mountPath": "/bitnami/etcd" },
                    { "name": "snapshot-volume", "mountPath": "/snapshots" },
                ]}],
                "volumes": [
                    { "name": "data", "persistentVolumeClaim": { "claimName": "data-x-0" } },
                    { "name": "snapshot-volume", "persistentVolumeClaim": { "claimName": SNAPSHOTTER_PVC } },
                ],
            },
        });
        let root = Path::new("/tmp/snap");
        let claims = |claim: &str| (claim == SNAPSHOTTER_PVC).then(|| root.to_path_buf());
        assert_eq!(
            resolve_pod_path(&pod, "/snapshots/x/db-1", &claims),
            Some(root.join("x/db-1"))
        );
        assert_eq!(resolve_pod_path(&pod, "/bitnami/etcd/db", &claims), None);
        assert_eq!(resolve_pod_path(&pod, "/init-snapshot/db", &claims), None);
        assert_eq!(resolve_pod_path(&pod, "/snapshots/../etc", &claims), None);
        let data = |claim: &str| (claim == "data-x-0").then(|| PathBuf::from("/tmp/pvc"));
        assert_eq!(
            resolve_pod_path(&pod, "/bitnami/etcd/data", &data),
            Some(PathBuf::from("/tmp/pvc/data"))
        );
    }

    #[test]
    fn the_crash_loop_back_off_doubles_up_to_thirty_times_its_base() {
        let base = std::time::Duration::from_secs(10);
        assert_eq!(crash_backoff(base, 1), base);
        assert_eq!(crash_backoff(base, 2), base * 2);
        assert_eq!(crash_backoff(base, 9), base * 30);
    }

    #[test]
    fn cluster_dns_names_in_urls_resolve_to_pod_and_service_addresses() {
        let ns = "services";
        let services = vec![
            json!({ "metadata": { "name": "e", "namespace": ns }, "spec": { "clusterIP": "127.77.0.9" } }),
            json!({ "metadata": { "name": "e-headless", "namespace": ns }, "spec": {
                "clusterIP": "None", "publishNotReadyAddresses": true, "selector": { "app": "e" },
            }}),
        ];
        let pods = vec![json!({
            "metadata": { "name": "e-0", "namespace": ns, "labels": { "app": "e" } },
            "spec": { "hostname": "e-0", "subdomain": "e-headless" },
            "status": { "podIP": "127.76.0.2" },
        })];
        let sets = vec![
            json!({ "metadata": { "name": "e", "namespace": ns }, "spec": { "serviceName": "e-headless" } }),
        ];
        let dns = Dns::of_namespace(ns, &services, &pods, &sets);
        let stable = |pod: &str| (pod == "e-1").then(|| Ipv4Addr::new(127, 76, 0, 3));
        let own = Ipv4Addr::new(127, 76, 0, 2);
        assert_eq!(
            dns.rewrite_urls(
                "e-0=http://e-0.e-headless.services.svc.cluster.local:2380,e-1=http://e-1.e-headless.services.svc.cluster.local:2380",
                own,
                &stable,
            ),
            "e-0=http://127.76.0.2:2380,e-1=http://127.76.0.3:2380"
        );
        assert_eq!(
            dns.rewrite_urls(
                "http://e-0.e-headless.services.svc.cluster.local:2379,http://e.services.svc.cluster.local:2379",
                own,
                &stable,
            ),
            "http://127.76.0.2:2379,http://127.77.0.9:2379"
        );
        assert_eq!(
            dns.rewrite_urls("http://0.0.0.0:2379", own, &stable),
            "http://127.76.0.2:2379"
        );
        assert_eq!(
            dns.lookup("e-headless.services.svc.cluster.local"),
            vec![own]
        );
        assert!(dns.lookup("nowhere.services.svc.cluster.local").is_empty());
    }
}

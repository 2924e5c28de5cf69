//! The etcd containers of the simulated etcd clusters, run for real: for each etcd cluster
//! whose member pods run (etcd-operator pods labelled `etcd_cluster=<name>`, or the pods of a
//! Bitnami StatefulSet labelled `app.kubernetes.io/name=etcd`), the simulated kubelet starts
//! ONE real `etcd` (Debian's etcd-server) listening on the cluster IP of the cluster's client
//! Service (`<name>-client`, or `<sts>`), port 2379 (peer port 2380), as kube-proxy would make
//! the Service answer. One process per cluster, not per pod: nine clusters of three members
//! would be 27 processes on a laptop; the cluster's pods are what Kubernetes shows, its one
//! member is what etcd shows.
//!
//! Data directories: a Bitnami cluster keeps its data in the directory of the PVC
//! `data-<sts>-0` (one directory per PVC uid, deleted when the PVC is, as a dynamically
//! provisioned volume with reclaim policy Delete), so the data survives the pods and the
//! StatefulSet; an etcd-operator cluster's data lives as long as its process (the operator's
//! members use pod storage). The process stops when the cluster's pods are all gone (or not
//! Running). A process that exits, or a container start that fails, is started again after
//! the kubelet's crash-loop back-off (`SimOptions::job_backoff` doubling, at least 200 ms, up
//! to 30 times it), as long as the cluster's pods and their inputs stay the same.
//!
//! A Bitnami pod's container does what the image's `etcd_initialize` (libetcd.sh) does with
//! the env the pod got from its StatefulSet's template, read from the pod named after the
//! member (the lowest ordinal that is not going away): with an empty data directory,
//! `ETCD_START_FROM_SNAPSHOT=yes` restores `$ETCD_INIT_SNAPSHOTS_DIR/$ETCD_INIT_SNAPSHOT_FILENAME`
//! with the real `etcdctl snapshot restore` (which checks the snapshot's SHA-256 trailer) and a
//! missing file or a failed restore fails the container ("There was no snapshot to restore!");
//! then, still without data, a member of a cluster of several (`ETCD_INITIAL_CLUSTER` lists
//! more than one) whose `ETCD_INITIAL_CLUSTER_STATE` is `existing` cannot join: no member of
//! the existing cluster answers (they all lost their data), so etcd exits; `new` (or unset,
//! etcd's default) bootstraps an empty cluster. With data, the env's
//! snapshot variables are ignored. Pod paths resolve through the pod's volume mounts: a path on
//! the PVC `bitnami-etcd-snapshotter` (mounted at `/snapshots` by the chart) is in the
//! simulated cluster's snapshotter directory; any other path does not exist in the container.
//! Not simulated: `ETCD_DISASTER_RECOVERY` (restoring the latest `/snapshots/db-*` when a
//! member with data finds the cluster unhealthy), member replacement within a live cluster (in
//! the one-process model only `data-<sts>-0` holds data: deleting that PVC alone loses it,
//! where a real member would sync it again from the two others).
//!
//! Readiness: a Bitnami pod is Ready only while its cluster's etcd answers `/health` (the
//! chart's readiness probe runs `healthcheck.sh`, an `etcdctl endpoint health`), written when
//! the probe's result changes, as the kubelet does; while the container crash-loops, the pod's
//! container status shows it (`CrashLoopBackOff`, the last termination's message, restarts).
//! etcd-operator pods are Ready as soon as they run, as before.
//!
//! The first time a cluster's etcd is healthy, the fake BSS stores its seeded boot parameters
//! in it (`cray-bss-*`), and a Bitnami cluster gets a real backup in the snapshotter directory
//! (`<snapshots>/<sts>/db-YYYY-MM-DD_HH-MM`, by `etcdctl snapshot save`, as the chart's
//! snapshotter CronJob names them).
//!
//! Off unless [`SimOptions::real_etcd`](super::super::SimOptions::real_etcd); every process is
//! killed when the simulated cluster stops or is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::super::meta;
use super::super::resources::{PERSISTENTVOLUMECLAIMS, PODS, SERVICES};
use super::etcd_restore::RESTORE_FROM;
use super::{Ctx, NEVER_READY, all, log_err};

/// The etcd command (Debian: etcd-server).
pub const ETCD_BINARY: &str = "etcd";
/// The etcdctl command (Debian: etcd-client).
pub const ETCDCTL_BINARY: &str = "etcdctl";

/// The client port of etcd in both layouts.
pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

/// The RWX PVC the Bitnami pods mount at `/snapshots` (cray-etcd-base's
/// `disasterRecovery.pvc.existingClaim`), backed by the simulated cluster's snapshotter
/// directory.
pub const SNAPSHOTTER_PVC: &str = "bitnami-etcd-snapshotter";

/// Whether `etcd` is on the PATH.
pub fn etcd_installed() -> bool {
    on_path(ETCD_BINARY)
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|dir| std::fs::metadata(dir.join(command)).is_ok_and(|m| m.is_file()))
    })
}

/// What a Bitnami container's `etcd_initialize` reads from its env.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BitnamiInit {
    /// `ETCD_INITIAL_CLUSTER_STATE`.
    state: String,
    /// The members `ETCD_INITIAL_CLUSTER` lists (1 when unset, as the chart renders it for
    /// one replica).
    initial_members: usize,
    /// `ETCD_INITIAL_CLUSTER_TOKEN`.
    token: String,
    /// `ETCD_START_FROM_SNAPSHOT=yes`: the snapshot's path in the pod, and where that is here
    /// (None: not on a volume the simulated cluster backs, so not in the container).
    snapshot: Option<(String, Option<PathBuf>)>,
}

/// What one cluster's etcd runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemberSpec {
    /// The member's name: `<sts>-0`, or the first member pod of an etcd-operator cluster.
    name: String,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    /// Removed when the process stops (pod storage).
    ephemeral: bool,
    /// A Bitnami container's initialization (None: etcd-operator).
    bitnami: Option<BitnamiInit>,
    /// etcd-operator: the snapshot a restored cluster's seed member restores its data from,
    /// when its data directory is new (see `etcd_restore`).
    restore_from: Option<PathBuf>,
}

impl MemberSpec {
    /// etcd's `--data-dir` (`ETCD_DATA_DIR=/bitnami/etcd/data` on the PVC mounted at
    /// `/bitnami/etcd`).
    fn etcd_data(&self) -> PathBuf {
        self.data_dir.join("data")
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.ip)
    }

    fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.ip)
    }
}

/// The container's state, shared by the member's task and the readiness writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ContainerState {
    healthy: bool,
    /// Restarts so far (the pod's `restartCount`).
    restarts: u32,
    /// Why the last start failed or the process ended, while it is not running again.
    failure: Option<String>,
}

struct Member {
    spec: MemberSpec,
    /// The running process (None while starting, restoring or crash-looping).
    child: Arc<Mutex<Option<tokio::process::Child>>>,
    state: Arc<Mutex<ContainerState>>,
    cancel: CancellationToken,
    /// Cancelled when its task has ended (its process reaped).
    finished: CancellationToken,
}

/// The real etcd processes of one simulated cluster.
pub struct RealEtcd {
    root: tempfile::TempDir,
    /// The snapshotter PVC's directory (`/snapshots` in the pods).
    snapshots: PathBuf,
    members: Mutex<BTreeMap<String, Member>>,
    /// Clusters whose first-healthy work (BSS's data, the seeded backup) is done.
    seeded: Mutex<HashSet<String>>,
    /// The readiness last written to each pod (by uid), as the kubelet's probe manager
    /// reports only changes.
    reported: Mutex<HashMap<String, ContainerState>>,
    /// Bumped whenever a member's state changes (for [`RealEtcd::settled`] waiters).
    changed: watch::Sender<u64>,
}

/// `<namespace>/<cluster>`.
fn key(ns: &str, cluster: &str) -> String {
    format!("{ns}/{cluster}")
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

/// Whether the pod is a Bitnami etcd member whose readiness the real etcd decides (the kubelet
/// starts it not Ready).
pub fn gates_readiness(ctx: &Ctx, pod: &Value) -> bool {
    ctx.etcd.is_some() && cluster_of(pod).is_some_and(|(_, _, bitnami)| bitnami)
}

/// The pod's etcd container (named `etcd`, else the first).
fn etcd_container(pod: &Value) -> Option<&Value> {
    let containers = pod.pointer("/spec/containers")?.as_array()?;
    containers
        .iter()
        .find(|c| c["name"] == "etcd")
        .or_else(|| containers.first())
}

/// The container's environment as the kubelet makes it: `value`s with `$(VAR)` references to
/// earlier variables expanded, and the `fieldRef`s the chart uses.
fn pod_env(pod: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(vars) = etcd_container(pod)
        .and_then(|c| c.get("env"))
        .and_then(Value::as_array)
    else {
        return env;
    };
    for var in vars {
        let Some(name) = var.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = if let Some(v) = var.get("value").and_then(Value::as_str) {
            expand(v, &env)
        } else if let Some(path) = var
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            let field = match path {
                "metadata.name" => meta::name(pod),
                "metadata.namespace" => meta::namespace(pod),
                "status.podIP" => pod.pointer("/status/podIP").and_then(Value::as_str),
                _ => None,
            };
            field.unwrap_or_default().to_owned()
        } else {
            String::new()
        };
        env.insert(name.to_owned(), value);
    }
    env
}

/// `$(VAR)` -> its value when defined earlier; `$$` -> `$`; anything else is kept.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = tail
            .strip_prefix("$(")
            .and_then(|t| t.split_once(')'))
            .filter(|(name, _)| env.contains_key(*name))
        {
            out.push_str(&env[name]);
            rest = after;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Where the pod's path `path` is here: on the volume mounted at the longest matching
/// `mountPath`, when that volume is the snapshotter PVC (the only one the sim backs with files
/// a test can reach).
fn resolve_pod_path(pod: &Value, path: &str, snapshots: &Path) -> Option<PathBuf> {
    let mounts = etcd_container(pod)?.get("volumeMounts")?.as_array()?;
    let (mount, rest) = mounts
        .iter()
        .filter_map(|m| {
            let at = m.get("mountPath")?.as_str()?.trim_end_matches('/');
            let rest = if path == at {
                ""
            } else {
                path.strip_prefix(at)?.strip_prefix('/')?
            };
            Some((m, rest, at.len()))
        })
        .max_by_key(|(_, _, len)| *len)
        .map(|(m, rest, _)| (m, rest))?;
    let volume = mount.get("name")?.as_str()?;
    let claim = pod
        .pointer("/spec/volumes")?
        .as_array()?
        .iter()
        .find(|v| v["name"] == volume)?
        .pointer("/persistentVolumeClaim/claimName")?
        .as_str()?;
    if claim != SNAPSHOTTER_PVC {
        return None;
    }
    let mut host = snapshots.to_path_buf();
    if let Some(sub) = mount
        .get("subPath")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        host.push(sub);
    }
    // No escaping the volume.
    if rest.split('/').any(|c| c == "..") {
        return None;
    }
    if !rest.is_empty() {
        host.push(rest);
    }
    Some(host)
}

fn bitnami_init(pod: &Value, snapshots: &Path) -> BitnamiInit {
    let env = pod_env(pod);
    let get = |k: &str| env.get(k).cloned().unwrap_or_default();
    let initial_members = get("ETCD_INITIAL_CLUSTER")
        .split([',', ';'])
        .filter(|m| !m.trim().is_empty())
        .count()
        .max(1);
    let yes = |k: &str| matches!(get(k).to_ascii_lowercase().as_str(), "yes" | "true" | "1");
    let snapshot = yes("ETCD_START_FROM_SNAPSHOT").then(|| {
        // etcd-env.sh's default.
        let dir = env
            .get("ETCD_INIT_SNAPSHOTS_DIR")
            .cloned()
            .unwrap_or_else(|| "/init-snapshot".into());
        let file = format!(
            "{}/{}",
            dir.trim_end_matches('/'),
            get("ETCD_INIT_SNAPSHOT_FILENAME")
        );
        let host = resolve_pod_path(pod, &file, snapshots);
        (file, host)
    });
    BitnamiInit {
        state: get("ETCD_INITIAL_CLUSTER_STATE"),
        initial_members,
        token: get("ETCD_INITIAL_CLUSTER_TOKEN"),
        snapshot,
    }
}

/// The kubelet's crash-loop back-off before the `restarts`-th restart.
fn crash_backoff(base: Duration, restarts: u32) -> Duration {
    let base = base.max(Duration::from_millis(200));
    let factor = 1u32 << restarts.saturating_sub(1).min(5);
    (base * factor).min(base * 30)
}

fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// A Bitnami-style log line (`etcd 12:00:00.00 ERROR ==> ...`).
fn bitnami_line(level: &str, message: &str) -> String {
    let mut time = chrono::Utc::now().format("%H:%M:%S%.3f").to_string();
    time.pop();
    format!("etcd {time} {level} ==> {message}")
}

/// The prefix of a simulated cluster's etcd directory in the temporary directory.
const ROOT_PREFIX: &str = "sim-etcd-";
/// The file in it naming the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// Removes the etcd directories of simulated clusters whose process is gone without removing
/// them (killed with SIGKILL, or ended without running destructors): each holds about 128 MB
/// per cluster (etcd preallocates its WAL), so a few killed test runs would fill a disk.
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

impl RealEtcd {
    pub fn new(snapshots: PathBuf) -> anyhow::Result<RealEtcd> {
        if !etcd_installed() {
            anyhow::bail!(
                "the simulated cluster was asked to run real etcd clusters, but `{ETCD_BINARY}` \
                 is not on the PATH (Debian: apt-get install etcd-server)"
            );
        }
        remove_abandoned_roots();
        let root = tempfile::Builder::new().prefix(ROOT_PREFIX).tempdir()?;
        std::fs::write(root.path().join(OWNER_FILE), std::process::id().to_string())?;
        Ok(RealEtcd {
            root,
            snapshots,
            members: Mutex::new(BTreeMap::new()),
            seeded: Mutex::new(HashSet::new()),
            reported: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        })
    }

    fn pvc_dir(&self, uid: &str) -> PathBuf {
        self.root.path().join(format!("pvc-{uid}"))
    }

    /// What should run now, by `<namespace>/<cluster>`.
    fn desired(&self, ctx: &Ctx) -> BTreeMap<String, MemberSpec> {
        let pods = all(ctx, &PODS);
        let services = all(ctx, &SERVICES);
        let pvcs = all(ctx, &PERSISTENTVOLUMECLAIMS);
        let find = |items: &[Value], ns: &str, name: &str| -> Option<Value> {
            items
                .iter()
                .find(|o| meta::namespace(o) == Some(ns) && meta::name(o) == Some(name))
                .cloned()
        };
        let mut desired = BTreeMap::new();
        // The member is named after the cluster's first pod (by name) that is not going away,
        // so that it keeps its name while the other pods start.
        // A restored etcd-operator cluster's seed member comes first: it holds the backup.
        let mut pods: Vec<&Value> = pods.iter().filter(|p| !meta::is_deleting(p)).collect();
        pods.sort_by_key(|p| {
            (
                meta::annotation(p, RESTORE_FROM).is_none(),
                meta::name(p).unwrap_or_default().to_owned(),
            )
        });
        let runs: HashSet<String> = pods
            .iter()
            .filter(|p| running(p))
            .filter_map(|p| {
                let (cluster, _, _) = cluster_of(p)?;
                Some(key(meta::namespace(p).unwrap_or_default(), &cluster))
            })
            .collect();
        for pod in pods {
            let Some((cluster, service, bitnami)) = cluster_of(pod) else {
                continue;
            };
            let ns = meta::namespace(pod).unwrap_or_default();
            let k = key(ns, &cluster);
            if desired.contains_key(&k) || !runs.contains(&k) {
                continue;
            }
            // Only loopback addresses are ever listened on.
            let Some(ip) = find(&services, ns, &service)
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
            let spec = if bitnami {
                let Some(pvc) = find(&pvcs, ns, &format!("data-{cluster}-0")) else {
                    continue;
                };
                MemberSpec {
                    name: format!("{cluster}-0"),
                    ip,
                    data_dir: self.pvc_dir(meta::uid(&pvc).unwrap_or_default()),
                    ephemeral: false,
                    bitnami: Some(bitnami_init(pod, &self.snapshots)),
                    restore_from: None,
                }
            } else {
                let owner = meta::controller_uid(pod).unwrap_or("none");
                MemberSpec {
                    name: meta::name(pod).unwrap_or_default().to_owned(),
                    ip,
                    data_dir: self.root.path().join(format!("member-{owner}")),
                    ephemeral: true,
                    bitnami: None,
                    restore_from: meta::annotation(pod, RESTORE_FROM).map(PathBuf::from),
                }
            };
            desired.insert(k, spec);
        }
        desired
    }

    /// Starts and stops members to match the store; removes the directories of deleted PVCs;
    /// writes the Bitnami pods' readiness.
    pub fn reconcile(self: &Arc<Self>, ctx: &Ctx) {
        let desired = self.desired(ctx);
        {
            let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            let stale: Vec<String> = members
                .iter()
                .filter(|(k, m)| desired.get(*k) != Some(&m.spec))
                .map(|(k, _)| k.clone())
                .collect();
            let mut predecessors = HashMap::new();
            for k in stale {
                if let Some(m) = members.remove(&k) {
                    predecessors.insert(k.clone(), m.finished.clone());
                    stop(&k, m);
                }
            }
            for (k, spec) in desired {
                if members.contains_key(&k) {
                    continue;
                }
                let member = Member {
                    spec: spec.clone(),
                    child: Arc::default(),
                    state: Arc::default(),
                    cancel: ctx.shutdown.child_token(),
                    finished: CancellationToken::new(),
                };
                let task = MemberTask {
                    etcd: self.clone(),
                    ctx: ctx.clone(),
                    key: k.clone(),
                    spec,
                    child: member.child.clone(),
                    state: member.state.clone(),
                    cancel: member.cancel.clone(),
                    finished: member.finished.clone(),
                    after: predecessors.remove(&k),
                };
                ctx.spawn(task.run());
                members.insert(k, member);
            }
            // A deleted PVC's volume goes with it.
            let live: HashSet<PathBuf> = all(ctx, &PERSISTENTVOLUMECLAIMS)
                .iter()
                .filter_map(meta::uid)
                .map(|uid| self.pvc_dir(uid))
                .collect();
            let used: HashSet<&Path> = members
                .values()
                .map(|m| m.spec.data_dir.as_path())
                .collect();
            if let Ok(dirs) = std::fs::read_dir(self.root.path()) {
                for dir in dirs.flatten().map(|d| d.path()) {
                    let is_pvc = dir
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("pvc-"));
                    if is_pvc && !live.contains(&dir) && !used.contains(dir.as_path()) {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
        }
        self.sync_pods(ctx);
    }

    /// The state of the member of the cluster `k` (None: nothing runs for it).
    fn member_state(&self, k: &str) -> Option<ContainerState> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .get(k)
            .map(|m| m.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Writes each running Bitnami pod's readiness and container state when what its probe
    /// (or its container's crash loop) says changed since the last write.
    fn sync_pods(&self, ctx: &Ctx) {
        let pods = all(ctx, &PODS);
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        let live: HashSet<&str> = pods.iter().filter_map(meta::uid).collect();
        reported.retain(|uid, _| live.contains(uid.as_str()));
        for pod in &pods {
            let Some((cluster, _, true)) = cluster_of(pod) else {
                continue;
            };
            if !running(pod) {
                continue;
            }
            let uid = meta::uid(pod).unwrap_or_default().to_owned();
            let k = key(meta::namespace(pod).unwrap_or_default(), &cluster);
            let mut state = self.member_state(&k).unwrap_or_default();
            if meta::annotation(pod, NEVER_READY) == Some("true") {
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

    /// Every cluster with running member pods has its etcd up and healthy, and its
    /// first-healthy work done.
    pub fn settled(&self, ctx: &Ctx) -> bool {
        let desired = self.desired(ctx);
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let seeded = self.seeded.lock().unwrap_or_else(|e| e.into_inner());
        desired.iter().all(|(k, spec)| {
            seeded.contains(k)
                && members.get(k).is_some_and(|m| {
                    &m.spec == spec && m.state.lock().unwrap_or_else(|e| e.into_inner()).healthy
                })
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `http://<ip>:2379` of the running etcd of `cluster` in `ns`.
    pub fn url(&self, ns: &str, cluster: &str) -> Option<String> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.get(&key(ns, cluster)).map(|m| m.spec.client_url())
    }

    /// The snapshotter directory.
    pub fn snapshots(&self) -> &Path {
        &self.snapshots
    }

    /// Kills every process (at shutdown).
    pub fn stop_all(&self) {
        let members = std::mem::take(&mut *self.members.lock().unwrap_or_else(|e| e.into_inner()));
        for (k, m) in members {
            stop(&k, m);
        }
    }

    /// The first time the cluster `k` is healthy: the fake BSS puts its data into its etcd,
    /// and a Bitnami cluster gets a backup in the snapshotter directory.
    async fn first_healthy(&self, ctx: &Ctx, k: &str, spec: &MemberSpec) {
        if self
            .seeded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(k)
        {
            return;
        }
        let (ns, cluster) = k.split_once('/').unwrap_or(("", k));
        let url = spec.client_url();
        if (cluster == "cray-bss-etcd" || cluster == "cray-bss-bitnami-etcd")
            && let Err(e) = ctx.csm.seed_bss_etcd(&url).await
        {
            tracing::warn!(cluster = %k, error = %e, "cannot seed BSS's boot parameters");
        }
        let snapshotter = ctx
            .store
            .get(&PERSISTENTVOLUMECLAIMS, ns, SNAPSHOTTER_PVC)
            .is_ok();
        if spec.bitnami.is_some() && snapshotter {
            match save_snapshot(&url, &self.snapshots.join(cluster)).await {
                Ok(file) => tracing::info!(cluster = %k, file = %file.display(), "seeded a backup"),
                Err(e) => tracing::warn!(cluster = %k, error = %e, "cannot seed a backup"),
            }
        }
        self.seeded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k.to_owned());
        self.changed.send_modify(|n| *n += 1);
    }
}

/// `etcdctl snapshot save <dir>/db-YYYY-MM-DD_HH-MM` against `url`, as the chart's
/// snapshotter (snapshot.sh) names the file.
pub async fn save_snapshot(url: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!(
        "db-{}",
        chrono::Utc::now().format("%Y-%m-%d_%H-%M")
    ));
    let out = tokio::process::Command::new(ETCDCTL_BINARY)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(["snapshot", "save"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("running {ETCDCTL_BINARY} (Debian: etcd-client): {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "etcdctl snapshot save: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(file)
}

/// The pod's etcd container status and Ready conditions for `state`.
fn write_container_state(pod: &mut Value, state: &ContainerState, now: &str) {
    let ready = state.healthy;
    if let Some(cs) = pod["status"]["containerStatuses"].as_array_mut() {
        for c in cs.iter_mut() {
            c["ready"] = json!(ready);
            c["restartCount"] = json!(state.restarts);
            match &state.failure {
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

impl Drop for RealEtcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Kills the process (SIGKILL: a container's end) and removes pod storage. It waits (briefly:
/// SIGKILL ends a process within milliseconds) until the process is gone, so that no etcd
/// still writes (its WAL preallocates 64 MB) into a directory being removed: a race that left
/// the simulated cluster's directories behind.
fn stop(k: &str, m: Member) {
    m.cancel.cancel();
    if let Some(child) = m.child.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let _ = child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    if m.spec.ephemeral {
        let _ = std::fs::remove_dir_all(&m.spec.data_dir);
    }
    tracing::info!(cluster = %k, member = %m.spec.name, "simulated etcd stopped");
}

/// One cluster's container: initialize, run etcd, probe it, restart it after a crash.
struct MemberTask {
    etcd: Arc<RealEtcd>,
    ctx: Ctx,
    key: String,
    spec: MemberSpec,
    child: Arc<Mutex<Option<tokio::process::Child>>>,
    state: Arc<Mutex<ContainerState>>,
    cancel: CancellationToken,
    finished: CancellationToken,
    /// The previous member of the cluster, whose process must be gone (its ports free)
    /// before this one starts.
    after: Option<CancellationToken>,
}

impl MemberTask {
    fn set(&self, change: impl FnOnce(&mut ContainerState)) {
        let changed = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let before = state.clone();
            change(&mut state);
            *state != before
        };
        if changed {
            self.etcd.changed.send_modify(|n| *n += 1);
            self.etcd.sync_pods(&self.ctx);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.etcd
            .root
            .path()
            .join(format!("{}.log", self.key.replace('/', "_")))
    }

    /// Appends `lines` to the logs of the cluster's running pods.
    fn pod_log(&self, lines: &[String]) {
        let (ns, cluster) = self.key.split_once('/').unwrap_or(("", &self.key));
        for pod in all(&self.ctx, &PODS) {
            if meta::namespace(&pod) == Some(ns)
                && running(&pod)
                && cluster_of(&pod).is_some_and(|(c, _, _)| c == cluster)
            {
                self.ctx.store.append_log(&pod, lines.iter().cloned());
            }
        }
    }

    async fn run(self) {
        let _finished = self.finished.clone().drop_guard();
        if let Some(after) = &self.after {
            let _ = tokio::time::timeout(Duration::from_secs(5), after.cancelled()).await;
        }
        let mut restarts = 0u32;
        loop {
            match self.start().await {
                Err(message) => {
                    tracing::warn!(cluster = %self.key, error = %message, "simulated etcd container failed to start");
                    self.pod_log(&[bitnami_line("ERROR", &message)]);
                    self.set(|s| {
                        s.healthy = false;
                        s.failure = Some(message);
                        s.restarts = restarts;
                    });
                }
                Ok(child) => {
                    tracing::info!(cluster = %self.key, url = %self.spec.client_url(), pid = child.id(), "simulated etcd started");
                    *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
                    self.set(|s| {
                        s.failure = None;
                        s.restarts = restarts;
                    });
                    if let Some(message) = self.watch().await {
                        tracing::warn!(cluster = %self.key, error = %message, log = %self.log_path().display(), "simulated etcd exited");
                        self.pod_log(&[bitnami_line("ERROR", &message)]);
                        self.set(|s| {
                            s.healthy = false;
                            s.failure = Some(message);
                        });
                    } else {
                        return;
                    }
                }
            }
            restarts += 1;
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(crash_backoff(self.ctx.opts.job_backoff, restarts)) => {}
            }
        }
    }

    /// Probes the running process until it exits (Some(why)) or the member is stopped (None).
    async fn watch(&self) -> Option<String> {
        loop {
            let exited = {
                let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
                match child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => {
                        *child = None;
                        Some(format!("etcd exited ({status})"))
                    }
                    Some(Err(e)) => Some(format!("etcd: {e}")),
                    _ => None,
                }
            };
            if self.cancel.is_cancelled() {
                self.reap().await;
                return None;
            }
            if exited.is_some() {
                return exited;
            }
            let healthy = health(self.spec.ip).await;
            let was = self.state.lock().unwrap_or_else(|e| e.into_inner()).healthy;
            if healthy != was {
                if healthy {
                    self.etcd
                        .first_healthy(&self.ctx, &self.key, &self.spec)
                        .await;
                }
                self.set(|s| s.healthy = healthy);
            }
            // The readiness probe's period (fast while starting).
            let period = if healthy {
                Duration::from_millis(500)
            } else {
                Duration::from_millis(50)
            };
            tokio::select! {
                _ = self.cancel.cancelled() => {}
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Waits for the killed process to end, so that a successor never finds its port taken.
    async fn reap(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The container's start: a Bitnami container's initialization, then etcd.
    async fn start(&self) -> Result<tokio::process::Child, String> {
        let spec = &self.spec;
        let data = spec.etcd_data();
        std::fs::create_dir_all(&spec.data_dir).map_err(|e| e.to_string())?;
        if let Some(init) = &spec.bitnami
            && dir_is_empty(&data)
        {
            self.pod_log(&[bitnami_line(
                "INFO ",
                "There is no data from previous deployments",
            )]);
            if let Some((file, host)) = &init.snapshot {
                let Some(host) = host.as_ref().filter(|h| h.is_file()) else {
                    return Err(format!("There was no snapshot to restore! ({file})"));
                };
                self.restore(&init.token, host).await?;
            }
            if dir_is_empty(&data) && init.initial_members > 1 && init.state == "existing" {
                return Err(format!(
                    "member {} cannot join the existing cluster: \
                     cannot fetch cluster info from peer urls: could not retrieve cluster \
                     information from the given URLs (ETCD_INITIAL_CLUSTER_STATE={:?}, \
                     no member of the cluster answers)",
                    spec.name, init.state
                ));
            }
        }
        // The etcd-operator's seed member: its init container restores the backup.
        if let Some(file) = &spec.restore_from
            && dir_is_empty(&data)
        {
            self.restore("", file).await?;
        }
        self.spawn_etcd().map_err(|e| e.to_string())
    }

    /// `etcdctl snapshot restore` into the empty data directory.
    async fn restore(&self, token: &str, file: &Path) -> Result<(), String> {
        let spec = &self.spec;
        let data = spec.etcd_data();
        let _ = std::fs::remove_dir(&data);
        self.pod_log(&[bitnami_line(
            "INFO ",
            "Restoring snapshot before initializing etcd cluster",
        )]);
        let mut command = tokio::process::Command::new(ETCDCTL_BINARY);
        command
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore"])
            .arg(file)
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", &spec.name])
            .args([
                "--initial-cluster",
                &format!("{}={}", spec.name, spec.peer_url()),
            ])
            .args(["--initial-advertise-peer-urls", &spec.peer_url()]);
        if !token.is_empty() {
            command.args(["--initial-cluster-token", token]);
        }
        let out = command
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("running {ETCDCTL_BINARY} (Debian: etcd-client): {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        // What the failed restore left is not data: the next start finds the directory empty.
        let _ = std::fs::remove_dir_all(&data);
        Err(format!(
            "etcdctl snapshot restore {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }

    fn spawn_etcd(&self) -> anyhow::Result<tokio::process::Child> {
        let spec = &self.spec;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let (client, peer) = (spec.client_url(), spec.peer_url());
        // With util-linux's setpriv (it execs etcd in its place) the kernel kills etcd when
        // the thread that started it ends, even if this process is killed without running its
        // destructors; kill_on_drop covers an orderly end.
        let mut command = if on_path("setpriv") {
            let mut c = tokio::process::Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--", ETCD_BINARY]);
            c
        } else {
            tokio::process::Command::new(ETCD_BINARY)
        };
        command
            .arg(format!("--name={}", spec.name))
            .arg(format!("--data-dir={}", spec.etcd_data().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}={peer}", spec.name));
        if let Some(init) = spec.bitnami.as_ref().filter(|i| !i.token.is_empty()) {
            command.arg(format!("--initial-cluster-token={}", init.token));
        }
        Ok(command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?)
    }
}

/// `GET /health` says `"health":"true"` (HTTP/1.0 by hand, bounded by a short timeout).
async fn health(ip: Ipv4Addr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((ip, CLIENT_PORT))
            .await
            .ok()?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body.contains("\"health\":\"true\""))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
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
    fn pod_paths_resolve_only_on_the_snapshotter_volume() {
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
        assert_eq!(
            resolve_pod_path(&pod, "/snapshots/x/db-1", root),
            Some(root.join("x/db-1"))
        );
        assert_eq!(resolve_pod_path(&pod, "/bitnami/etcd/db", root), None);
        assert_eq!(resolve_pod_path(&pod, "/init-snapshot/db", root), None);
        assert_eq!(resolve_pod_path(&pod, "/snapshots/../etc", root), None);
    }

    #[test]
    fn the_crash_loop_back_off_doubles_up_to_thirty_times_its_base() {
        let base = Duration::from_secs(10);
        assert_eq!(crash_backoff(base, 1), base);
        assert_eq!(crash_backoff(base, 2), base * 2);
        assert_eq!(crash_backoff(base, 9), base * 30);
    }
}

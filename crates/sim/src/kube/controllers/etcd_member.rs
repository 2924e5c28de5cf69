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
//! Running), and is restarted (as a crashed container would be) on the next change.
//!
//! Off unless [`SimOptions::real_etcd`](super::super::SimOptions::real_etcd); every process is
//! killed when the simulated cluster stops or is dropped.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::super::meta;
use super::super::resources::{PERSISTENTVOLUMECLAIMS, PODS, SERVICES};
use super::etcd_restore::RESTORE_FROM;
use super::{Ctx, all};

/// The etcd command (Debian: etcd-server).
pub const ETCD_BINARY: &str = "etcd";

/// The client port of etcd in both layouts.
pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

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

/// What one cluster's etcd runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MemberSpec {
    /// The member's name: `<sts>-0`, or the first member pod of an etcd-operator cluster.
    name: String,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    /// Removed when the process stops (pod storage).
    ephemeral: bool,
    /// A snapshot the member's data is restored from when its data directory is new (the seed
    /// member of an `EtcdRestore`, see `etcd_restore`).
    restore_from: Option<PathBuf>,
}

struct Member {
    spec: MemberSpec,
    child: tokio::process::Child,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    log: PathBuf,
}

/// The real etcd processes of one simulated cluster.
pub struct RealEtcd {
    root: tempfile::TempDir,
    members: Mutex<BTreeMap<String, Member>>,
    /// Bumped whenever a member becomes healthy (for [`RealEtcd::settled`] waiters).
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

/// The etcd cluster a pod is a member of, and the client Service of that cluster.
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

impl RealEtcd {
    pub fn new() -> anyhow::Result<RealEtcd> {
        if !etcd_installed() {
            anyhow::bail!(
                "the simulated cluster was asked to run real etcd clusters, but `{ETCD_BINARY}` \
                 is not on the PATH (Debian: apt-get install etcd-server)"
            );
        }
        let root = tempfile::Builder::new().prefix("sim-etcd-").tempdir()?;
        Ok(RealEtcd {
            root,
            members: Mutex::new(BTreeMap::new()),
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
        // A restored cluster's seed member comes first: the member restored from the backup.
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
                    restore_from: None,
                }
            } else {
                let owner = meta::controller_uid(pod).unwrap_or("none");
                MemberSpec {
                    name: meta::name(pod).unwrap_or_default().to_owned(),
                    ip,
                    data_dir: self.root.path().join(format!("member-{owner}")),
                    ephemeral: true,
                    restore_from: meta::annotation(pod, RESTORE_FROM).map(PathBuf::from),
                }
            };
            desired.insert(k, spec);
        }
        desired
    }

    /// Starts, restarts and stops processes to match the store; removes the directories of
    /// deleted PVCs.
    pub fn reconcile(self: &Arc<Self>, ctx: &Ctx) {
        let desired = self.desired(ctx);
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let mut stale = Vec::new();
        for (k, m) in members.iter_mut() {
            if let Ok(Some(status)) = m.child.try_wait() {
                tracing::warn!(cluster = %k, %status, log = %m.log.display(), "simulated etcd exited; restarting it");
                stale.push(k.clone());
            } else if desired.get(k) != Some(&m.spec) {
                stale.push(k.clone());
            }
        }
        for k in stale {
            if let Some(m) = members.remove(&k) {
                stop(m);
            }
        }
        for (k, spec) in desired {
            if members.contains_key(&k) {
                continue;
            }
            match self.spawn(ctx, &k, &spec) {
                Ok(m) => {
                    members.insert(k, m);
                }
                Err(e) => {
                    tracing::warn!(cluster = %k, error = %e, "cannot start the simulated etcd")
                }
            }
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

    fn spawn(self: &Arc<Self>, ctx: &Ctx, k: &str, spec: &MemberSpec) -> anyhow::Result<Member> {
        std::fs::create_dir_all(&spec.data_dir)?;
        let log = self
            .root
            .path()
            .join(format!("{}.log", k.replace('/', "_")));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let client = format!("http://{}:{CLIENT_PORT}", spec.ip);
        let peer = format!("http://{}:{PEER_PORT}", spec.ip);
        let data = spec.data_dir.join("data");
        if let Some(snapshot) = spec.restore_from.as_ref().filter(|_| !data.exists()) {
            restore_snapshot(snapshot, &data, &spec.name, &peer)?;
            tracing::info!(cluster = %k, snapshot = %snapshot.display(), "simulated etcd restored from a snapshot");
        }
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
        let child = command
            .arg(format!("--name={}", spec.name))
            .arg(format!(
                "--data-dir={}",
                spec.data_dir.join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}={peer}", spec.name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()?;
        tracing::info!(cluster = %k, url = %client, pid = child.id(), "simulated etcd started");
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, changed, ip) = (healthy.clone(), self.changed.clone(), spec.ip);
        let cluster = k.to_owned();
        ctx.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if health(ip).await {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                    changed.send_modify(|n| *n += 1);
                    return;
                }
                // Polling a starting process's health endpoint, not a synchronising sleep.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tracing::warn!(%cluster, "simulated etcd did not become healthy within 60s");
        });
        Ok(Member {
            spec: spec.clone(),
            child,
            healthy,
            log,
        })
    }

    /// Every cluster with running member pods has its etcd up and healthy.
    pub fn settled(&self, ctx: &Ctx) -> bool {
        let desired = self.desired(ctx);
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        desired.iter().all(|(k, spec)| {
            members.get(k).is_some_and(|m| {
                &m.spec == spec && m.healthy.load(std::sync::atomic::Ordering::SeqCst)
            })
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `http://<ip>:2379` of the running etcd of `cluster` in `ns`.
    pub fn url(&self, ns: &str, cluster: &str) -> Option<String> {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .get(&key(ns, cluster))
            .map(|m| format!("http://{}:{CLIENT_PORT}", m.spec.ip))
    }

    /// Kills every process (at shutdown).
    pub fn stop_all(&self) {
        let members = std::mem::take(&mut *self.members.lock().unwrap_or_else(|e| e.into_inner()));
        for m in members.into_values() {
            stop(m);
        }
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The etcd command-line client (Debian: etcd-client), for `snapshot restore`.
pub const ETCDCTL_BINARY: &str = "etcdctl";

/// `etcdctl snapshot restore` of `snapshot` into `data` for the single member `name` (as the
/// etcd-operator's seed member does before it starts etcd).
fn restore_snapshot(snapshot: &Path, data: &Path, name: &str, peer: &str) -> anyhow::Result<()> {
    let output = std::process::Command::new(ETCDCTL_BINARY)
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--name={name}"))
        .arg(format!("--initial-cluster={name}={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running {ETCDCTL_BINARY} (Debian: etcd-client): {e}"))?;
    if !output.status.success() {
        anyhow::bail!(
            "{ETCDCTL_BINARY} snapshot restore {} failed: {}",
            snapshot.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Kills the process (SIGKILL: a container's end) and reaps it in the background; removes pod
/// storage.
fn stop(mut m: Member) {
    let _ = m.child.start_kill();
    if m.spec.ephemeral {
        let _ = std::fs::remove_dir_all(&m.spec.data_dir);
    }
    tracing::info!(member = %m.spec.name, "simulated etcd stopped");
}

/// `GET /health` says `"health":"true"` (HTTP/1.0 by hand: the sim has no HTTP client).
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

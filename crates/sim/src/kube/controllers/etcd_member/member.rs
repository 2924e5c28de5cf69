//! One member's container, run by the simulated kubelet: start it (a Bitnami container's
//! initialization, see `bitnami`; the etcd-operator's seed restore), run etcd, probe it, and
//! start it again after the kubelet's crash-loop back-off when it exits.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::super::ctx::Ctx;
use super::bitnami::bitnami_line;
use super::bitnami::{Container, Runtime};
use super::env::{Dns, pod_env, resolve_pod_path};
use super::process::{self, CLIENT_PORT, Gateway, LogSince, PEER_PORT, etcd_command, etcdctl};
use futures::future::BoxFuture;

/// What one member runs as.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A Bitnami StatefulSet's pod: `pod` is its metadata and spec (immutable while it runs)
    /// and IP; `claims` where each of its PVCs is here.
    Bitnami {
        pod: Value,
        claims: BTreeMap<String, PathBuf>,
    },
    /// The one etcd of an etcd-operator cluster (on its client Service's address); a restored
    /// cluster's seed restores `restore_from` when its data directory is new.
    Operator { restore_from: Option<PathBuf> },
}

/// What a member runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberSpec {
    pub ns: String,
    /// The member's name: the pod (Bitnami), or the first member pod of an etcd-operator
    /// cluster.
    pub name: String,
    /// The StatefulSet or EtcdCluster.
    pub cluster: String,
    pub ip: Ipv4Addr,
    /// The directory behind the member's storage: its data PVC's, or pod storage.
    pub data_dir: PathBuf,
    /// Removed when the process stops (pod storage).
    pub ephemeral: bool,
    pub kind: Kind,
}

impl MemberSpec {
    pub fn client_url(&self) -> String {
        process::url(self.ip, CLIENT_PORT)
    }

    fn peer_url(&self) -> String {
        process::url(self.ip, PEER_PORT)
    }

    /// etcd's `--data-dir` of an etcd-operator member.
    fn operator_data(&self) -> PathBuf {
        self.data_dir.join("data")
    }

    pub fn is_bitnami(&self) -> bool {
        matches!(self.kind, Kind::Bitnami { .. })
    }
}

/// The container's state, shared by the member's task and the readiness writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerState {
    pub healthy: bool,
    /// Restarts so far (the pod's `restartCount`).
    pub restarts: u32,
    /// Why the last start failed or the process ended, while it is not running again.
    pub failure: Option<String>,
    /// Stopped on purpose ([`RealEtcd::stop_member`]): not running, not restarted.
    pub stopped: bool,
}

/// What a member's task and [`RealEtcd`] share.
#[derive(Clone)]
pub struct Shared {
    /// The running process (None while starting, restoring or crash-looping).
    pub child: Arc<Mutex<Option<tokio::process::Child>>>,
    pub state: Arc<Mutex<ContainerState>>,
    pub cancel: CancellationToken,
    /// Cancelled when its task has ended (its process reaped).
    pub finished: CancellationToken,
    /// Held while a fault changes the member's files: the container does not start meanwhile.
    pub files: Arc<tokio::sync::Mutex<()>>,
}

impl Shared {
    /// A new member's, stopped with `parent`.
    pub fn new(parent: &CancellationToken) -> Shared {
        Shared {
            child: Arc::default(),
            state: Arc::default(),
            cancel: parent.child_token(),
            finished: CancellationToken::new(),
            files: Arc::default(),
        }
    }
}

/// A running member, as [`RealEtcd`] keeps it.
pub struct Member {
    pub spec: MemberSpec,
    pub shared: Shared,
}

/// The kubelet's crash-loop back-off before the `restarts`-th restart.
pub fn crash_backoff(base: Duration, restarts: u32) -> Duration {
    let base = base.max(Duration::from_millis(200));
    let factor = 1u32 << restarts.saturating_sub(1).min(5);
    (base * factor).min(base * 30)
}

/// How often a Ready member is probed.
const PROBE_PERIOD: Duration = Duration::from_millis(250);

/// How long a stopped container has to end after SIGTERM before SIGKILL (the pod's grace
/// period, shortened: etcd ends within milliseconds).
const GRACE: Duration = Duration::from_secs(2);

/// Sends SIGTERM (`kill`, as the container runtime does), then SIGKILL after [`GRACE`].
async fn terminate(mut child: tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// What a member's task asks of the hub of the real members (`RealEtcd`): its directories,
/// the member pods' DNS and addresses, the pod's log, what the first healthy look brings, and
/// the news that its container's state changed.
pub trait Hub: Send + Sync {
    /// The container's state changed: publish it on the pods.
    fn changed(&self, ctx: &Ctx);
    fn log_path(&self, spec: &MemberSpec) -> PathBuf;
    fn container_dir(&self, spec: &MemberSpec) -> PathBuf;
    fn pod_ip_of(&self, ns: &str, pod: &str) -> Ipv4Addr;
    fn dns(&self, ctx: &Ctx, ns: &str) -> Dns;
    fn gateway(&self) -> &Gateway;
    fn pod_log(&self, ctx: &Ctx, spec: &MemberSpec, lines: &[String]);
    /// The first time the member's cluster is healthy.
    fn first_healthy<'a>(&'a self, ctx: &'a Ctx, spec: &'a MemberSpec) -> BoxFuture<'a, ()>;
}

/// One member's container.
pub struct MemberTask {
    pub etcd: Arc<dyn Hub>,
    pub ctx: Ctx,
    pub key: String,
    pub spec: MemberSpec,
    pub shared: Shared,
    /// The previous member on the same address, whose process must be gone (its ports free)
    /// before this one starts.
    pub after: Option<CancellationToken>,
    /// Where the current process's log starts.
    pub log_from: Mutex<Option<LogSince>>,
}

impl MemberTask {
    fn set(&self, change: impl FnOnce(&mut ContainerState)) {
        let changed = {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let before = state.clone();
            change(&mut state);
            *state != before
        };
        if changed {
            self.etcd.changed(&self.ctx);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.etcd.log_path(&self.spec)
    }

    pub async fn run(self) {
        let _finished = self.shared.finished.clone().drop_guard();
        if let Some(after) = &self.after {
            let _ = tokio::time::timeout(Duration::from_secs(5), after.cancelled()).await;
        }
        let mut restarts = 0u32;
        loop {
            let started = {
                let _files = self.shared.files.lock().await;
                if self.shared.cancel.is_cancelled() {
                    return;
                }
                self.start().await
            };
            match started {
                Err(message) => {
                    if self.shared.cancel.is_cancelled() {
                        return;
                    }
                    tracing::warn!(member = %self.key, error = %message, "simulated etcd container failed to start");
                    self.pod_log("ERROR", &message);
                    self.set(|s| {
                        s.healthy = false;
                        s.failure = Some(message);
                        s.restarts = restarts;
                    });
                }
                Ok(child) => {
                    tracing::info!(member = %self.key, url = %self.spec.client_url(), pid = child.id(), "simulated etcd started");
                    *self.shared.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
                    self.set(|s| {
                        s.failure = None;
                        s.restarts = restarts;
                    });
                    let Some(message) = self.watch().await else {
                        return;
                    };
                    tracing::warn!(member = %self.key, error = %message, log = %self.log_path().display(), "simulated etcd exited");
                    self.pod_log("ERROR", &message);
                    self.set(|s| {
                        s.healthy = false;
                        s.failure = Some(message);
                    });
                }
            }
            restarts += 1;
            if self
                .pause(crash_backoff(self.ctx.opts.job_backoff, restarts))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// The readiness probe's `failureThreshold` (Kubernetes' default: 3): the probe must fail
    /// that many times in a row before a Ready pod is not.
    fn failure_threshold(&self) -> u32 {
        let Kind::Bitnami { pod, .. } = &self.spec.kind else {
            return 1;
        };
        super::env::etcd_container(pod)
            .and_then(|c| c.pointer("/readinessProbe/failureThreshold"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(3)
            .max(1)
    }

    /// Probes the running process until it exits (Some(why)) or the member is stopped (None).
    /// The probe runs every [`PROBE_PERIOD`] (fast while starting) rather than the pod's
    /// `periodSeconds`; its `failureThreshold` holds.
    async fn watch(&self) -> Option<String> {
        let threshold = self.failure_threshold();
        let mut failures = 0u32;
        loop {
            let exited = {
                let mut child = self.shared.child.lock().unwrap_or_else(|e| e.into_inner());
                match child.as_mut().map(tokio::process::Child::try_wait) {
                    Some(Ok(Some(status))) => {
                        *child = None;
                        Some(status.to_string())
                    }
                    Some(Err(e)) => Some(e.to_string()),
                    Some(Ok(None)) => None,
                    // Taken by a fault that killed it.
                    None => Some("killed".to_owned()),
                }
            };
            if self.shared.cancel.is_cancelled() {
                self.reap().await;
                return None;
            }
            if let Some(status) = exited {
                return Some(self.exit_message(&status));
            }
            let healthy = process::health(SocketAddr::from((self.spec.ip, CLIENT_PORT))).await;
            failures = if healthy { 0 } else { failures + 1 };
            let was = self
                .shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .healthy;
            let ready = healthy || (was && failures < threshold);
            if ready != was {
                if ready {
                    self.etcd.first_healthy(&self.ctx, &self.spec).await;
                }
                self.set(|s| s.healthy = ready);
            }
            let period = if ready {
                PROBE_PERIOD
            } else {
                Duration::from_millis(100)
            };
            tokio::select! {
                () = self.shared.cancel.cancelled() => {}
                () = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Stops the process as the kubelet stops a container (SIGTERM, then SIGKILL), and
    /// removes pod storage.
    async fn reap(&self) {
        let child = self
            .shared
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(child) = child {
            terminate(child).await;
        }
        if self.spec.ephemeral {
            let _ = std::fs::remove_dir_all(&self.spec.data_dir);
        }
        tracing::info!(member = %self.key, "simulated etcd stopped");
    }

    /// The container's start: a Bitnami container's initialization and etcd, or an
    /// etcd-operator member's.
    async fn start(&self) -> Result<tokio::process::Child, String> {
        std::fs::create_dir_all(&self.spec.data_dir).map_err(|e| e.to_string())?;
        match &self.spec.kind {
            Kind::Bitnami { pod, claims } => self.bitnami(pod, claims).start().await,
            Kind::Operator { restore_from } => {
                let data = self.spec.operator_data();
                if let Some(file) = restore_from
                    && std::fs::read_dir(&data).map_or(true, |mut d| d.next().is_none())
                {
                    self.restore_operator_seed(file).await?;
                }
                self.spawn_operator_etcd()
            }
        }
    }

    /// The Bitnami container's view of itself: its env with the cluster's names resolved and
    /// its paths on its volumes.
    fn bitnami<'a>(
        &'a self,
        pod: &Value,
        claims: &'a BTreeMap<String, PathBuf>,
    ) -> Container<'a, Self> {
        let raw = pod_env(pod);
        let dns = self.dns();
        let stable = |p: &str| self.stable_ip(p);
        let resolve = |path: &str| {
            resolve_pod_path(pod, path, &|claim| claims.get(claim).cloned()).unwrap_or_else(|| {
                self.etcd
                    .container_dir(&self.spec)
                    .join(path.trim_start_matches('/'))
            })
        };
        let mut env = BTreeMap::new();
        for (k, v) in &raw {
            let v = if k.ends_with("_URLS") || k == "ETCD_INITIAL_CLUSTER" {
                dns.rewrite_urls(v, self.spec.ip, &stable)
            } else {
                v.clone()
            };
            env.insert(k.clone(), v);
        }
        let data_path = raw
            .get("ETCD_DATA_DIR")
            .cloned()
            .unwrap_or_else(|| "/bitnami/etcd/data".into());
        let data = resolve(&data_path);
        env.insert("ETCD_DATA_DIR".into(), data.to_string_lossy().into_owned());
        if let Some(wal) = raw.get("ETCD_WAL_DIR").filter(|w| !w.is_empty()) {
            env.insert(
                "ETCD_WAL_DIR".into(),
                resolve(wal).to_string_lossy().into_owned(),
            );
        }
        // etcd-env.sh's default.
        let dir = raw
            .get("ETCD_INIT_SNAPSHOTS_DIR")
            .cloned()
            .unwrap_or_else(|| "/init-snapshot".into());
        let file = format!(
            "{}/{}",
            dir.trim_end_matches('/'),
            raw.get("ETCD_INIT_SNAPSHOT_FILENAME")
                .map_or("", String::as_str)
        );
        let on_volume = resolve_pod_path(pod, &file, &|claim| claims.get(claim).cloned());
        let snapshots = resolve_pod_path(pod, "/snapshots", &|claim| claims.get(claim).cloned());
        // The image's etcd 3.5 logs JSON (zap); 3.4 does when asked.
        env.entry("ETCD_LOGGER".into())
            .or_insert_with(|| "zap".into());
        if let Some((heartbeat, election)) = self.ctx.opts.etcd_raft_timing {
            env.insert(
                "ETCD_HEARTBEAT_INTERVAL".into(),
                heartbeat.as_millis().to_string(),
            );
            env.insert(
                "ETCD_ELECTION_TIMEOUT".into(),
                election.as_millis().to_string(),
            );
        }
        Container {
            task: self,
            raw,
            env,
            data,
            init_snapshot: (file, on_volume),
            snapshots,
        }
    }

    /// The etcd-operator's seed member: its init container restores the backup.
    async fn restore_operator_seed(&self, file: &Path) -> Result<(), String> {
        let spec = &self.spec;
        let data = spec.operator_data();
        let _ = std::fs::remove_dir(&data);
        let (file, data_arg) = (
            file.to_string_lossy().into_owned(),
            data.to_string_lossy().into_owned(),
        );
        let cluster = format!("{}={}", spec.name, spec.peer_url());
        let peer = spec.peer_url();
        let result = etcdctl(
            None,
            &[
                "snapshot",
                "restore",
                &file,
                "--data-dir",
                &data_arg,
                "--name",
                &spec.name,
                "--initial-cluster",
                &cluster,
                "--initial-advertise-peer-urls",
                &peer,
            ],
        )
        .await;
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&data);
        }
        result.map(drop)
    }

    /// An etcd-operator cluster's one etcd, on its client Service's address.
    fn spawn_operator_etcd(&self) -> Result<tokio::process::Child, String> {
        let spec = &self.spec;
        let (client, peer) = (spec.client_url(), spec.peer_url());
        let env = BTreeMap::from([
            ("ETCD_NAME".to_owned(), spec.name.clone()),
            (
                "ETCD_DATA_DIR".to_owned(),
                spec.operator_data().to_string_lossy().into_owned(),
            ),
            ("ETCD_LISTEN_CLIENT_URLS".to_owned(), client.clone()),
            ("ETCD_ADVERTISE_CLIENT_URLS".to_owned(), client),
            ("ETCD_LISTEN_PEER_URLS".to_owned(), peer.clone()),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS".to_owned(), peer.clone()),
            (
                "ETCD_INITIAL_CLUSTER".to_owned(),
                format!("{}={peer}", spec.name),
            ),
        ]);
        self.spawn_etcd_with_log(&env).map(|(child, _)| child)
    }
}

/// The kubelet's side of a Bitnami container's scripts.
impl Runtime for MemberTask {
    fn pod_log(&self, level: &str, message: &str) {
        self.etcd
            .pod_log(&self.ctx, &self.spec, &[bitnami_line(level, message)]);
    }

    fn gateway(&self) -> &Gateway {
        self.etcd.gateway()
    }

    fn dns(&self) -> Dns {
        self.etcd.dns(&self.ctx, &self.spec.ns)
    }

    fn stable_ip(&self, pod: &str) -> Option<Ipv4Addr> {
        Some(self.etcd.pod_ip_of(&self.spec.ns, pod))
    }

    async fn pause(&self, d: Duration) -> Result<(), String> {
        tokio::select! {
            () = self.shared.cancel.cancelled() => Err("the container was stopped".into()),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }

    fn spawn_etcd_with_log(
        &self,
        env: &BTreeMap<String, String>,
    ) -> Result<(tokio::process::Child, LogSince), String> {
        let log = self.log_path();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| e.to_string())?;
        let since = LogSince::at_end(&log);
        let child = etcd_command(env)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                format!(
                    "running {} (Debian: etcd-server): {e}",
                    process::ETCD_BINARY
                )
            })?;
        *self.log_from.lock().unwrap_or_else(|e| e.into_inner()) = Some(LogSince {
            path: log,
            offset: since.offset,
        });
        Ok((child, since))
    }

    fn exit_message(&self, status: &str) -> String {
        let words = self
            .log_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(LogSince::last_words);
        match words {
            Some(words) => format!("etcd exited ({status}): {words}"),
            None => format!("etcd exited ({status})"),
        }
    }
}

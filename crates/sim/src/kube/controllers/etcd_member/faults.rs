//! Breaking a Bitnami member the ways the field does, for tests and rehearsals (the HTTP side
//! is `/sim/etcd/...`, see the README): stop a member's container and start it again (a node
//! down and back, a member killed), corrupt or remove files in its data directory (its process
//! killed first, as in a crash, so that etcd meets the damage when the container starts
//! again), and fill a cluster up to its quota (`ETCD_QUOTA_BACKEND_BYTES`) so that it raises
//! `NOSPACE`. Deleting a member's PVC and pod needs nothing here: `kubectl delete pvc ...
//! --wait=false; kubectl delete pod ...` does it as on a real cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::super::meta;
use super::super::super::resources::{PERSISTENTVOLUMECLAIMS, PODS, STATEFULSETS};
use super::super::ctx::Ctx;
use super::env::pod_env;
use super::real_etcd::{RealEtcd, SNAPSHOTTER_PVC, key, lock};

/// What happens to a member's data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Damage {
    /// Garbage over the start of the bbolt database (`member/snap/db`, its meta pages): etcd
    /// panics when it opens it.
    CorruptDb,
    /// Flipped bytes in the records of the first WAL segment (`member/wal/*.wal`): etcd fails
    /// its CRC check when it replays the log.
    CorruptWal,
    /// The WAL directory removed: etcd starts as if it had never run, and refuses to
    /// bootstrap a member the cluster knows.
    RemoveWal,
    /// Everything in the data directory removed (the volume itself stays, as after a wiped
    /// disk): the container starts as a member without data.
    RemoveData,
}

/// Why a fault could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// No such pod, member or cluster.
    #[error("{0}")]
    NotFound(String),
    /// Not possible as asked.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// What [`RealEtcd::fill_quota`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Filled {
    /// Keys written (`/sim/fill/<n>`) before the cluster refused.
    pub keys: u64,
    /// What etcd answered to the write it refused.
    pub refused: String,
}

/// The largest quota [`RealEtcd::fill_quota`] fills (writing 2 GiB is no test).
const FILL_LIMIT: u64 = 256 << 20;
/// The value of each key written to fill a cluster (below etcd's request limit of 1.5 MiB).
const FILL_VALUE: usize = 256 << 10;

fn newest_file(dir: &Path, extension: &str) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(extension))
        .collect();
    files.sort();
    files.first().cloned()
}

/// Does `damage` to the etcd data directory `data` (`ETCD_DATA_DIR`).
fn apply(damage: Damage, data: &Path) -> Result<(), FaultError> {
    let io = |e: std::io::Error| FaultError::Failed(format!("{}: {e}", data.display()));
    let member = data.join("member");
    match damage {
        Damage::CorruptDb => {
            let db = member.join("snap").join("db");
            let mut bytes = std::fs::read(&db).map_err(io)?;
            let end = bytes.len().min(16 << 10);
            bytes[..end].iter_mut().for_each(|b| *b = 0xA5);
            std::fs::write(&db, bytes).map_err(io)
        }
        Damage::CorruptWal => {
            let wal = newest_file(&member.join("wal"), "wal")
                .ok_or_else(|| FaultError::Invalid(format!("no WAL in {}", data.display())))?;
            let mut bytes = std::fs::read(&wal).map_err(io)?;
            // Past the segment's header records, inside the first entries.
            for b in bytes.iter_mut().skip(256).take(64) {
                *b ^= 0xFF;
            }
            std::fs::write(&wal, bytes).map_err(io)
        }
        Damage::RemoveWal => std::fs::remove_dir_all(member.join("wal")).map_err(io),
        Damage::RemoveData => {
            for entry in std::fs::read_dir(data).map_err(io)?.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).map_err(io)?;
                } else {
                    std::fs::remove_file(&path).map_err(io)?;
                }
            }
            Ok(())
        }
    }
}

impl RealEtcd {
    /// The running (not deleting) pod `pod` in `ns` of a Bitnami cluster that runs for real.
    fn member_pod(&self, ctx: &Ctx, ns: &str, pod: &str) -> Result<Value, FaultError> {
        let found = ctx
            .store
            .try_get(&PODS, ns, pod)
            .filter(|p| !meta::is_deleting(p))
            .ok_or_else(|| FaultError::NotFound(format!("no pod {pod} in {ns}")))?;
        if !self.real_bitnami_member(&found) {
            return Err(FaultError::Invalid(format!(
                "{pod} is not a member of a Bitnami etcd cluster that runs for real"
            )));
        }
        Ok(found)
    }

    /// Kills the process of the member of pod `pod` (SIGKILL, as a crash) while holding its
    /// files, then calls `then`; the container starts again after its back-off (unless
    /// stopped).
    async fn kill_then(
        &self,
        ns: &str,
        pod: &str,
        then: impl FnOnce() -> Result<(), FaultError>,
    ) -> Result<(), FaultError> {
        let found = lock(&self.members)
            .values()
            .find(|m| m.spec.ns == ns && m.spec.name == pod)
            .map(|m| (m.shared.child.clone(), m.shared.files.clone()));
        let Some((child, files)) = found else {
            return then();
        };
        let _files = files.lock().await;
        let running = lock(&child).take();
        if let Some(mut running) = running {
            let _ = running.start_kill();
            let _ = running.wait().await;
        }
        then()
    }

    /// Stops the container of the member `pod` (killed, not restarted; the pod stays, not
    /// Ready) until [`RealEtcd::start_member`].
    pub async fn stop_member(
        self: &Arc<Self>,
        ctx: &Ctx,
        ns: &str,
        pod: &str,
    ) -> Result<(), FaultError> {
        let found = self.member_pod(ctx, ns, pod)?;
        self.kill_then(ns, pod, || Ok(())).await?;
        lock(&self.stopped).insert(key(ns, pod));
        self.reconcile(ctx);
        if let Some(uid) = meta::uid(&found) {
            self.stop_container(uid).await;
        }
        self.sync_pods(ctx);
        Ok(())
    }

    /// Starts the container of the member `pod` again after [`RealEtcd::stop_member`]: it
    /// starts as after a crash, with its data.
    pub fn start_member(
        self: &Arc<Self>,
        ctx: &Ctx,
        ns: &str,
        pod: &str,
    ) -> Result<(), FaultError> {
        self.member_pod(ctx, ns, pod)?;
        if !lock(&self.stopped).remove(&key(ns, pod)) {
            return Err(FaultError::Invalid(format!("{pod} is not stopped")));
        }
        self.reconcile(ctx);
        Ok(())
    }

    /// Does `damage` to the data directory of the member `pod` (its process killed first; it
    /// meets the damage when its container starts again).
    pub async fn damage_member(
        &self,
        ctx: &Ctx,
        ns: &str,
        pod: &str,
        damage: Damage,
    ) -> Result<(), FaultError> {
        let found = self.member_pod(ctx, ns, pod)?;
        let pvcs = ctx
            .store
            .list(&PERSISTENTVOLUMECLAIMS, None, &Default::default())
            .0;
        let claims = self.claims(&found, &pvcs);
        let env = pod_env(&found);
        let data_path = env
            .get("ETCD_DATA_DIR")
            .cloned()
            .unwrap_or_else(|| "/bitnami/etcd/data".into());
        let data = super::env::resolve_pod_path(&found, &data_path, &|claim| {
            claims
                .get(claim)
                .cloned()
                .filter(|_| claim != SNAPSHOTTER_PVC)
        })
        .ok_or_else(|| {
            FaultError::Invalid(format!("{pod}'s ETCD_DATA_DIR {data_path} is on no PVC"))
        })?;
        if !data.is_dir() {
            return Err(FaultError::Invalid(format!(
                "{pod} has no data yet ({data_path})"
            )));
        }
        self.kill_then(ns, pod, || apply(damage, &data)).await
    }

    /// Writes keys through the client Service of the Bitnami cluster `cluster` until etcd
    /// refuses (`etcdserver: mvcc: database space exceeded`: the `NOSPACE` alarm is raised),
    /// which takes a few writes when its StatefulSet's `ETCD_QUOTA_BACKEND_BYTES` is small.
    pub async fn fill_quota(
        &self,
        ctx: &Ctx,
        ns: &str,
        cluster: &str,
    ) -> Result<Filled, FaultError> {
        let set = ctx
            .store
            .try_get(&STATEFULSETS, ns, cluster)
            .ok_or_else(|| FaultError::NotFound(format!("no StatefulSet {cluster} in {ns}")))?;
        let quota = set
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["env"].as_array().into_iter().flatten())
            .find(|v| v["name"] == "ETCD_QUOTA_BACKEND_BYTES")
            .and_then(|v| v["value"].as_str()?.parse::<u64>().ok())
            .unwrap_or(2 << 30);
        if quota > FILL_LIMIT {
            return Err(FaultError::Invalid(format!(
                "{cluster}'s ETCD_QUOTA_BACKEND_BYTES is {quota}: filling more than {FILL_LIMIT} \
                 bytes is not worth it; set a small one first (SimOptions::etcd_quota_backend_bytes, \
                 or `kubectl set env statefulset/{cluster} ETCD_QUOTA_BACKEND_BYTES=4194304`)"
            )));
        }
        let url = self
            .url(ctx, ns, cluster)
            .ok_or_else(|| FaultError::NotFound(format!("no member of {cluster} runs")))?;
        let value = vec![b'x'; FILL_VALUE];
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut keys = 0u64;
        loop {
            let key = format!("/sim/fill/{keys:08}");
            match self.gateway.put(&url, key.as_bytes(), &value).await {
                Ok(()) => keys += 1,
                Err(refused) if refused.contains("space exceeded") => {
                    return Ok(Filled { keys, refused });
                }
                Err(e) if Instant::now() > deadline => return Err(FaultError::Failed(e)),
                // A write that failed otherwise (the cluster busy): try again.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            if Instant::now() > deadline {
                return Err(FaultError::Failed(format!(
                    "{cluster} still takes writes after {keys} keys"
                )));
            }
        }
    }
}

//! CSM's S3 (Ceph RGW) as far as the etcd backups go: a real S3 server (`s3s-fs`, objects as
//! files under a temporary directory) on loopback, with one access/secret key pair and the
//! bucket `etcd-backup`; the Secret `etcd-backup-s3-credentials` (keys `access_key`,
//! `secret_key`, `http_s3_endpoint`) describes it, and [`SimS3::credentials_dir`] is that Secret
//! mounted as files, as a pod would see it.
//!
//! [`sync_snapshots_to_s3`] does what CSM's CronJob `etcd-backup-pvc-snapshots-to-s3` does
//! (`sync-snapshots-to-s3.sh`): `/snapshots/<sts>/*` -> `etcd-backup/<service>/`.
//!
//! What cray-etcd-base's pre-upgrade Job does (CSM 1.7), a snapshot of the cluster to
//! `etcd-backup/<service>/<service>_etcd_upgrade.snapshot-<rev>.db`, is the etcd members'
//! controller's (`kube::controllers::etcd_member::upgrade_job`): it takes the snapshot.
//!
//! s3s-fs reports an object's `LastModified` from its file's modification time: a test ages a
//! backup by setting it ([`SimS3::object_path`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::{ObjectStore, ObjectStoreExt as _, aws::AmazonS3Builder, path::Path as S3Path};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// CSM's bucket of etcd backups.
pub const BUCKET: &str = "etcd-backup";
/// The Secret that holds the S3 credentials of the backups.
pub const SECRET: &str = "etcd-backup-s3-credentials";
/// How often the simulated cluster runs [`sync_snapshots_to_s3`] (CSM's CronJob: hourly).
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// A running S3 server.
pub struct SimS3 {
    endpoint: String,
    access_key: String,
    secret_key: String,
    root: tempfile::TempDir,
    credentials: tempfile::TempDir,
    server: JoinHandle<()>,
}

impl SimS3 {
    /// Starts the server on `127.0.0.1:<free port>`, with bucket [`BUCKET`] and a random key
    /// pair; it stops when `shutdown` is cancelled or the value is dropped.
    pub async fn start(shutdown: CancellationToken) -> anyhow::Result<SimS3> {
        let root = tempfile::tempdir().context("creating the simulated S3's directory")?;
        std::fs::create_dir(root.path().join(BUCKET))
            .with_context(|| format!("creating the simulated S3's bucket {BUCKET}"))?;
        let access_key = format!("sim{}", uuid::Uuid::now_v7().simple());
        let secret_key = uuid::Uuid::new_v4().simple().to_string();
        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| anyhow::anyhow!("the simulated S3's file system: {e:?}"))?;
        let service = {
            let mut builder = s3s::service::S3ServiceBuilder::new(fs);
            builder.set_auth(s3s::auth::SimpleAuth::from_single(
                access_key.clone(),
                secret_key.clone(),
            ));
            builder.build()
        };
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the simulated S3")?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let socket = tokio::select! {
                    () = shutdown.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(e) => {
                            tracing::warn!(error = %e, "simulated S3: accepting a connection");
                            continue;
                        }
                    },
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        let endpoint = format!("http://{addr}");
        let credentials = tempfile::tempdir().context("creating the S3 credentials' directory")?;
        for (key, value) in [
            ("access_key", &access_key),
            ("secret_key", &secret_key),
            ("http_s3_endpoint", &endpoint),
        ] {
            std::fs::write(credentials.path().join(key), value)
                .with_context(|| format!("writing the S3 credential {key}"))?;
        }
        tracing::info!(%endpoint, bucket = BUCKET, "simulated S3 listening");
        Ok(SimS3 {
            endpoint,
            access_key,
            secret_key,
            root,
            credentials,
            server,
        })
    }

    /// `http://127.0.0.1:PORT` (the Secret's `http_s3_endpoint`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The server's storage: `<root>/<bucket>/<key>` is the object `<key>`.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The file of the object `key` of [`BUCKET`] (`cray-bss/db-2025-01-01_00-00`).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// A directory with the Secret's keys as files, as the Secret mounted in a pod.
    pub fn credentials_dir(&self) -> &Path {
        self.credentials.path()
    }

    /// The Secret [`SECRET`] as the simulated API server stores it.
    pub fn secret(&self, namespace: &str) -> serde_json::Value {
        use base64::Engine as _;
        let encode = |value: &str| base64::engine::general_purpose::STANDARD.encode(value);
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": SECRET, "namespace": namespace },
            "type": "Opaque",
            "data": {
                "access_key": encode(&self.access_key),
                "secret_key": encode(&self.secret_key),
                "http_s3_endpoint": encode(&self.endpoint),
            },
        })
    }

    /// A client of [`BUCKET`] with this server's keys.
    pub fn client(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(BUCKET)
            .with_region("foo")
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .with_allow_http(true)
            .build()
            .context("the simulated S3's client")?;
        Ok(Arc::new(store))
    }
}

impl Drop for SimS3 {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The CSM service of a snapshotter directory's StatefulSet, as `sync-snapshots-to-s3.sh`
/// computes it (`awk 'BEGIN{FS=OFS="-"}{NF--; NF--; print}'`: the name without its last two
/// `-` fields): `cray-bss-bitnami-etcd` -> `cray-bss`.
pub fn short_name(sts: &str) -> String {
    let fields: Vec<&str> = sts.split('-').collect();
    fields[..fields.len().saturating_sub(2)].join("-")
}

/// What CSM's CronJob `etcd-backup-pvc-snapshots-to-s3` does (`sync-snapshots-to-s3.sh`): every
/// file of every `<snapshots_dir>/<sts>/` goes to `<bucket>/<short name>/<file>` when S3 does
/// not have it with the same size and a modification time at least as recent (`aws s3 sync`'s
/// rule). Hidden entries are skipped, as the script's `ls` skips them. Returns the keys
/// uploaded. (The script's pruning of old objects is not done.)
pub async fn sync_snapshots_to_s3(
    snapshots_dir: &Path,
    bucket: &dyn ObjectStore,
) -> anyhow::Result<Vec<String>> {
    let mut uploaded = Vec::new();
    for sts in visible_entries(snapshots_dir, true)? {
        let short = short_name(&sts);
        if short.is_empty() {
            continue;
        }
        for file in visible_entries(&snapshots_dir.join(&sts), false)? {
            let path = snapshots_dir.join(&sts).join(&file);
            let meta = std::fs::metadata(&path)?;
            let key = S3Path::from(format!("{short}/{file}"));
            let modified: chrono::DateTime<chrono::Utc> = meta.modified()?.into();
            let current = match bucket.head(&key).await {
                // S3 times have whole seconds.
                Ok(object) => {
                    object.size == meta.len()
                        && object.last_modified.timestamp() >= modified.timestamp()
                }
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(e).with_context(|| format!("looking at s3://{BUCKET}/{key}")),
            };
            if current {
                continue;
            }
            let data = tokio::fs::read(&path).await?;
            bucket
                .put(&key, data.into())
                .await
                .with_context(|| format!("uploading {} to s3://{BUCKET}/{key}", path.display()))?;
            uploaded.push(key.to_string());
        }
    }
    Ok(uploaded)
}

/// How long before the cluster's first hourly snapshot the simulated Helm upgrade ran: the
/// upgrade snapshot is older than the `db-*` one, as on a system upgraded before its latest
/// hourly snapshot.
pub const UPGRADE_BEFORE_SNAPSHOT: std::time::Duration = std::time::Duration::from_secs(600);

/// The names in `dir` that `ls` shows, directories or files as asked; none when `dir` does not
/// exist.
fn visible_entries(dir: &Path, directories: bool) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let is_dir = entry.file_type()?.is_dir();
        match entry.file_name().into_string() {
            Ok(name) if !name.starts_with('.') && is_dir == directories => names.push(name),
            _ => {}
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_drop_the_last_two_fields() {
        assert_eq!(short_name("cray-bss-bitnami-etcd"), "cray-bss");
        assert_eq!(
            short_name("cray-power-control-bitnami-etcd"),
            "cray-power-control"
        );
        assert_eq!(short_name("etcd"), "");
    }

    #[tokio::test]
    async fn the_bucket_answers_with_its_keys_only_and_sync_copies_the_snapshotter_dir() {
        let shutdown = CancellationToken::new();
        let s3 = SimS3::start(shutdown.clone()).await.unwrap();
        let client = s3.client().unwrap();
        client
            .put(&S3Path::from("cray-bss/db-1"), b"one".to_vec().into())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(s3.object_path("cray-bss/db-1")).unwrap(),
            b"one"
        );

        let wrong = AmazonS3Builder::new()
            .with_endpoint(s3.endpoint())
            .with_bucket_name(BUCKET)
            .with_region("foo")
            .with_access_key_id(s3.access_key())
            .with_secret_access_key("not-the-secret")
            .with_allow_http(true)
            .build()
            .unwrap();
        let err = wrong
            .head(&S3Path::from("cray-bss/db-1"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
            "{err}"
        );

        let snapshots = tempfile::tempdir().unwrap();
        let dir = snapshots.path().join("cray-bss-bitnami-etcd");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(snapshots.path().join(".hidden")).unwrap();
        std::fs::write(dir.join("db-2"), b"two").unwrap();
        std::fs::write(dir.join(".part"), b"partial").unwrap();
        let uploaded = sync_snapshots_to_s3(snapshots.path(), client.as_ref())
            .await
            .unwrap();
        assert_eq!(uploaded, ["cray-bss/db-2"]);
        // Already there: nothing to do.
        let again = sync_snapshots_to_s3(snapshots.path(), client.as_ref())
            .await
            .unwrap();
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(
            std::fs::read(s3.object_path("cray-bss/db-2")).unwrap(),
            b"two"
        );
        shutdown.cancel();
    }
}

//! The backups of a Bitnami etcd cluster (CSM ≥ 1.5), where CSM keeps them:
//!
//! - the snapshotter PVC `bitnami-etcd-snapshotter` (`/snapshots/<statefulset>/db-YYYY-MM-DD_HH-MM`,
//!   written hourly by the cluster's snapshotter CronJob, Bitnami's `snapshot.sh`);
//! - the S3 bucket `etcd-backup` (`<service>/<name>`), where CSM's CronJob
//!   `etcd-backup-pvc-snapshots-to-s3` copies them (`sync-snapshots-to-s3.sh`) and its
//!   `create_backup` puts named ones; `list_backups`, `has_recent_backup` and
//!   `restore_from_backup` (cray-etcd-backup) read them there.
//!
//! [`Backups::list`] merges both places by name, newest first; [`Backups::fetch`] makes sure a
//! backup is in the snapshotter directory, where a restoring pod reads it
//! (`ETCD_INIT_SNAPSHOTS_DIR=/snapshots/<sts>`), downloading it from S3 as `restore_from_backup`
//! does, and checks it ([`check_backup_file`]: the SHA-256 that etcd appends to every snapshot,
//! the database read whole, and a restore by etcd's own tool into a scratch directory);
//! [`Backups::check`] checks one where it is. With a store ([`Backups::recording`]), every
//! verdict is remembered by copy (`crate::store`'s `backup_checks`).
//! [`Backups::take_safety_snapshot`] saves what a cluster holds before it is restored or rebuilt,
//! in both places, under a name both CSM's tools and this one list as a backup of the service.
//!
//! The S3 client is `object_store` (SigV4 signing, retries); the keys never reach a log or an
//! error message.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _, aws::AmazonS3Builder, path::Path as S3Path};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use utoipa::ToSchema;

use super::{
    EtcdClient, EtcdError, RecoveryConfig,
    backup_check::{self, BackupCheck, check_backup_file},
};
use crate::store::Store;

/// The region the S3 client signs for: CSM's own tools use this one against its Ceph RGW
/// (`create_aws_creds.sh` writes `region=foo`), which does not check it.
const S3_REGION: &str = "foo";
/// The prefix of the safety snapshots' names (see [`SafetySnapshot`]).
const SAFETY_PREFIX: &str = "repopulator-";
/// The suffix of a safety snapshot of a cluster that had no keys.
const EMPTY_SUFFIX: &str = "-empty";
/// The format of the time in a safety snapshot's name (UTC).
const SAFETY_TIME: &str = "%Y-%m-%d_%H-%M-%S";
/// Where partial files are written, under the snapshotter directory: a hidden directory, so
/// that neither CSM's sync to S3 (`ls /snapshots/`) nor Bitnami's restore (`find /snapshots/
/// -maxdepth 1 -type f -name 'db-*'`) ever sees a half-written file, and on the same volume,
/// so that the finished file is renamed into place.
pub(crate) const PARTIAL_DIR: &str = ".etcd-repopulator";

/// Why a backup could not be listed, fetched, verified or taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "no backups are configured: neither [recovery] snapshots_dir (the snapshotter PVC \
         bitnami-etcd-snapshotter) nor s3_credentials_dir (CSM's Secret \
         etcd-backup-s3-credentials) is set"
    )]
    NotConfigured,
    #[error("{what} needs the snapshotter directory, and [recovery] snapshots_dir is empty")]
    NoSnapshotsDir { what: &'static str },
    #[error(
        "the snapshotter directory {} does not exist: is the PVC bitnami-etcd-snapshotter \
         mounted there? (set [recovery] snapshots_dir = \"\" if it is not)", .0.display()
    )]
    SnapshotsDirMissing(PathBuf),
    #[error("the S3 credentials in {}: {detail}", .dir.display())]
    Credentials { dir: PathBuf, detail: String },
    #[error(
        "S3 at {endpoint} refused {what}: {detail} (check the access_key and secret_key of etcd-backup-s3-credentials)"
    )]
    S3Denied {
        endpoint: String,
        what: String,
        detail: String,
    },
    #[error("S3 at {endpoint} failed {what}: {detail}")]
    S3 {
        endpoint: String,
        what: String,
        detail: String,
    },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no backup {name:?} of {service}, neither in S3 nor in the snapshotter directory")]
    NotFound { service: String, name: String },
    #[error("the snapshot {} is corrupt: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("taking a snapshot of {sts}: {source}")]
    Etcd {
        sts: String,
        #[source]
        source: EtcdError,
    },
    #[error("{what} did not finish within {timeout:?} ([recovery] timeout)")]
    Timeout { what: String, timeout: Duration },
}

impl BackupError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.to_owned();
        move |source| BackupError::Io { what, path, source }
    }

    /// Whether the fault is the service's configuration or what it is configured to reach
    /// (S3, the mounts), not the request.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            BackupError::NotConfigured
                | BackupError::NoSnapshotsDir { .. }
                | BackupError::SnapshotsDirMissing(_)
                | BackupError::Credentials { .. }
        )
    }
}

/// One copy of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct BackupCopy {
    /// `s3://etcd-backup/cray-bss/db-2025-01-01_00-00`, or
    /// `/snapshots/cray-bss-bitnami-etcd/db-2025-01-01_00-00`.
    pub location: String,
    pub size: u64,
    /// S3's `LastModified` (when it was uploaded), or the file's modification time.
    pub last_modified: DateTime<Utc>,
}

/// What the name of one of this service's safety snapshots says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SafetySnapshot {
    /// The run that took it.
    pub run_id: String,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// The cluster had no keys then (the snapshot restores an empty cluster).
    pub empty: bool,
}

impl SafetySnapshot {
    /// `repopulator-<YYYY-MM-DD_HH-MM-SS>-<run id>[-empty]`: not `db-*`, so that the snapshotter's
    /// pruning and Bitnami's "latest snapshot" never take it for one of theirs.
    pub fn name(&self) -> String {
        format!(
            "{SAFETY_PREFIX}{}-{}{}",
            self.taken_at.format(SAFETY_TIME),
            self.run_id,
            if self.empty { EMPTY_SUFFIX } else { "" }
        )
    }

    /// The safety snapshot a backup's name describes, if it is one.
    pub fn parse(name: &str) -> Option<SafetySnapshot> {
        let rest = name.strip_prefix(SAFETY_PREFIX)?;
        // The time is 19 characters: 2025-01-01_00-00-00.
        let (time, rest) = (rest.get(..19)?, rest.get(19..)?);
        let taken_at = chrono::NaiveDateTime::parse_from_str(time, SAFETY_TIME)
            .ok()?
            .and_utc();
        let run = rest.strip_prefix('-')?;
        let (run, empty) = match run.strip_suffix(EMPTY_SUFFIX) {
            Some(run) => (run, true),
            None => (run, false),
        };
        (!run.is_empty() && !run.contains('/')).then(|| SafetySnapshot {
            run_id: run.to_owned(),
            taken_at,
            empty,
        })
    }
}

/// A backup of one etcd cluster, in S3, in the snapshotter directory, or both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Backup {
    /// The file's name (`db-2025-01-01_00-00`): the same in both places.
    pub name: String,
    /// The copy in S3 (`s3://<bucket>/<service>/<name>`).
    pub s3: Option<BackupCopy>,
    /// The copy in the snapshotter directory (`<snapshots_dir>/<statefulset>/<name>`).
    pub snapshotter: Option<BackupCopy>,
    /// Bytes (of the larger copy, should they differ).
    pub size: u64,
    /// The earliest modification time of its copies: about when it was taken (S3's copy is
    /// the later upload of the snapshotter's file).
    pub last_modified: DateTime<Utc>,
    /// Seconds since `last_modified`, when listed.
    pub age_seconds: u64,
    /// Set when it is one of this service's safety snapshots.
    pub safety: Option<SafetySnapshot>,
}

impl Backup {
    /// How old it was when listed.
    pub fn age(&self) -> Duration {
        Duration::from_secs(self.age_seconds)
    }

    /// Where it is: its S3 URL and/or its path.
    pub fn locations(&self) -> Vec<&str> {
        [&self.s3, &self.snapshotter]
            .into_iter()
            .flatten()
            .map(|copy| copy.location.as_str())
            .collect()
    }

    fn new(name: String) -> Backup {
        Backup {
            safety: SafetySnapshot::parse(&name),
            name,
            s3: None,
            snapshotter: None,
            size: 0,
            last_modified: DateTime::<Utc>::MAX_UTC,
            age_seconds: 0,
        }
    }

    fn add(&mut self, copy: BackupCopy, in_s3: bool) {
        self.size = self.size.max(copy.size);
        self.last_modified = self.last_modified.min(copy.last_modified);
        if in_s3 {
            self.s3 = Some(copy);
        } else {
            self.snapshotter = Some(copy);
        }
    }
}

/// A snapshot whose SHA-256 trailer matches its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSnapshot {
    pub path: PathBuf,
    /// Bytes, with the trailer.
    pub size: u64,
    /// The SHA-256 of the database (the trailer), hex.
    pub sha256: String,
}

/// Checks a snapshot as `etcdctl snapshot restore` does (etcd 3.4 `clientv3/snapshot`,
/// `saveDB`): a snapshot is the bbolt database, whose size is a multiple of 512, followed by
/// the 32-byte SHA-256 of it, which etcd's maintenance `Snapshot` RPC appends; the file's size
/// must be 32 more than a multiple of 512 and the trailer must be the SHA-256 of what comes
/// before it. A file without the trailer is refused too (`snapshot restore` refuses it unless
/// `--skip-hash-check`, which is for a member's raw `db` file, not a backup). Blocking: call it
/// from `spawn_blocking` in async code.
pub fn verify_snapshot(path: &Path) -> Result<VerifiedSnapshot, BackupError> {
    let mut file = std::fs::File::open(path).map_err(BackupError::io("opening", path))?;
    let mut check = SnapshotCheck::default();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(BackupError::io("reading", path))?;
        if read == 0 {
            break;
        }
        check.update(&buffer[..read]);
    }
    check.finish(path)
}

/// The check of [`verify_snapshot`] over a snapshot that arrives in pieces (a file, or an S3
/// object as it is downloaded): everything but the last 32 bytes is hashed as it comes.
#[derive(Default)]
struct SnapshotCheck {
    hasher: Sha256,
    /// The last (up to) 32 bytes seen: the trailer, once everything has come.
    tail: Vec<u8>,
    size: u64,
}

const TRAILER: usize = 32;

impl SnapshotCheck {
    fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > TRAILER {
            let hashed = self.tail.len() - TRAILER;
            self.hasher.update(&self.tail[..hashed]);
            self.tail.drain(..hashed);
        }
    }

    /// The verdict for the snapshot called `path` (in messages).
    fn finish(self, path: &Path) -> Result<VerifiedSnapshot, BackupError> {
        let corrupt = |detail: String| BackupError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        let size = self.size;
        if size < TRAILER as u64 || size % 512 != TRAILER as u64 {
            return Err(corrupt(format!(
                "{size} bytes is not a database (a multiple of 512 bytes) followed by its SHA-256 \
                 (32 bytes): truncated, or not an etcd snapshot"
            )));
        }
        let actual = self.hasher.finalize();
        if actual.as_slice() != self.tail.as_slice() {
            return Err(corrupt(format!(
                "its SHA-256 is {}, its trailer says {}",
                hex::encode(actual),
                hex::encode(&self.tail)
            )));
        }
        Ok(VerifiedSnapshot {
            path: path.to_owned(),
            size,
            sha256: hex::encode(&self.tail),
        })
    }
}

/// The three keys of CSM's Secret `etcd-backup-s3-credentials`, read from their files.
struct S3Credentials {
    access_key: String,
    secret_key: String,
    endpoint: String,
}

impl S3Credentials {
    fn read(dir: &Path) -> Result<S3Credentials, BackupError> {
        let read = |key: &str| {
            let path = dir.join(key);
            let text = std::fs::read_to_string(&path).map_err(|e| BackupError::Credentials {
                dir: dir.to_owned(),
                detail: format!("cannot read {key}: {e}"),
            })?;
            let value = text.trim().to_owned();
            if value.is_empty() {
                return Err(BackupError::Credentials {
                    dir: dir.to_owned(),
                    detail: format!("{key} is empty"),
                });
            }
            Ok(value)
        };
        Ok(S3Credentials {
            access_key: read("access_key")?,
            secret_key: read("secret_key")?,
            endpoint: read("http_s3_endpoint")?,
        })
    }
}

/// A client of the bucket, and the endpoint for messages.
struct Bucket {
    store: Arc<dyn ObjectStore>,
    endpoint: String,
    name: String,
    /// The access and secret key, taken out of every message: S3 servers quote the access key
    /// in their error responses (AWS and MinIO: `<AWSAccessKeyId>`), which object_store puts in
    /// its errors.
    keys: [String; 2],
}

impl Bucket {
    /// The object `copy` (`s3://<bucket>/<key>`) as it downloads.
    async fn download(
        &self,
        copy: &BackupCopy,
    ) -> Result<futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>, BackupError>
    {
        let key = copy
            .location
            .strip_prefix(&format!("s3://{}/", self.name))
            .unwrap_or(&copy.location);
        let download = self
            .store
            .get(&S3Path::from(key))
            .await
            .map_err(|e| self.error(format!("downloading {}", copy.location), e))?;
        Ok(download.into_stream())
    }

    fn error(&self, what: String, err: object_store::Error) -> BackupError {
        let detail = self.redact(crate::errors::error_chain(&err));
        // `head`/`get` say so in the error's kind; a list's refusal is only in its message
        // (object_store keeps the status of its `Generic` errors private).
        let denied = matches!(
            err,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || [
            "403 Forbidden",
            "401 Unauthorized",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
        ]
        .iter()
        .any(|sign| detail.contains(sign));
        if denied {
            BackupError::S3Denied {
                endpoint: self.endpoint.clone(),
                what,
                detail,
            }
        } else {
            BackupError::S3 {
                endpoint: self.endpoint.clone(),
                what,
                detail,
            }
        }
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    /// `text` without the keys.
    fn redact(&self, mut text: String) -> String {
        for key in &self.keys {
            if !key.is_empty() {
                text = text.replace(key.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// The backups, as `[recovery]` says where they are.
#[derive(Clone)]
pub struct Backups {
    config: RecoveryConfig,
    /// Where checks are remembered, when set.
    store: Option<Store>,
}

/// A backup in the snapshotter directory, checked.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub check: BackupCheck,
}

impl Backups {
    pub fn new(config: &RecoveryConfig) -> Backups {
        Backups {
            config: config.clone(),
            store: None,
        }
    }

    /// These backups, remembering every check's verdict in `store`.
    pub fn recording(mut self, store: &Store) -> Backups {
        self.store = Some(store.clone());
        self
    }

    /// Remembers `outcome` as the verdict on `copy` of `name` (when recording).
    async fn remember(
        &self,
        name: &str,
        copy: &BackupCopy,
        outcome: Result<BackupCheck, BackupError>,
    ) -> Result<BackupCheck, BackupError> {
        if let Some(store) = &self.store {
            backup_check::remember(store, name, copy, &outcome).await;
        }
        match &outcome {
            Ok(check) => {
                tracing::info!(backup = name, location = %copy.location, result = %check.summary(), "backup checked")
            }
            Err(BackupError::Corrupt { detail, .. }) => {
                tracing::warn!(backup = name, location = %copy.location, %detail, "backup refused by its check")
            }
            Err(_) => {}
        }
        outcome
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    /// Whether S3 or the snapshotter directory is configured at all.
    pub fn configured(&self) -> bool {
        self.config.snapshots_dir().is_some() || self.config.s3_credentials_dir().is_some()
    }

    /// The bucket, when S3 is configured; the credentials are read at every call, so that a
    /// rotated Secret is used without a restart.
    fn bucket(&self) -> Result<Option<Bucket>, BackupError> {
        let Some(dir) = self.config.s3_credentials_dir() else {
            return Ok(None);
        };
        let credentials = S3Credentials::read(dir)?;
        let endpoint = credentials.endpoint.trim_end_matches('/').to_owned();
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: self.config.timeout.min(Duration::from_secs(60)),
            ..object_store::RetryConfig::default()
        };
        let options = object_store::ClientOptions::new()
            .with_timeout(self.config.timeout)
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(endpoint.starts_with("http://"));
        let keys = [credentials.access_key, credentials.secret_key];
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&self.config.s3_bucket)
            .with_region(S3_REGION)
            .with_access_key_id(&keys[0])
            .with_secret_access_key(&keys[1])
            .with_virtual_hosted_style_request(false)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| BackupError::Credentials {
                dir: dir.to_owned(),
                detail: format!("http_s3_endpoint {endpoint:?}: {e}"),
            })?;
        Ok(Some(Bucket {
            store: Arc::new(store),
            endpoint,
            name: self.config.s3_bucket.clone(),
            keys,
        }))
    }

    /// The snapshotter directory of `sts`, when mounted; an error when it should be mounted and
    /// is not there.
    fn snapshots_dir(&self, sts: &str) -> Result<Option<PathBuf>, BackupError> {
        let Some(root) = self.config.snapshots_dir() else {
            return Ok(None);
        };
        if !root.is_dir() {
            return Err(BackupError::SnapshotsDirMissing(root.to_owned()));
        }
        Ok(Some(root.join(sts)))
    }

    async fn timed<T>(
        &self,
        what: impl FnOnce() -> String,
        work: impl Future<Output = Result<T, BackupError>>,
    ) -> Result<T, BackupError> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| BackupError::Timeout {
                what: what(),
                timeout,
            })?
    }

    /// The backups of the CSM service `csm_service` (`cray-bss`), whose cluster is the
    /// StatefulSet `sts` (`cray-bss-bitnami-etcd`): S3's `<bucket>/<csm_service>/*` and
    /// `<snapshots_dir>/<sts>/*`, merged by name, newest first.
    pub async fn list(&self, csm_service: &str, sts: &str) -> Result<Vec<Backup>, BackupError> {
        self.timed(
            || format!("listing the backups of {csm_service}"),
            self.list_inner(csm_service, sts),
        )
        .await
    }

    async fn list_inner(&self, csm_service: &str, sts: &str) -> Result<Vec<Backup>, BackupError> {
        if !self.configured() {
            return Err(BackupError::NotConfigured);
        }
        let mut found: std::collections::BTreeMap<String, Backup> = Default::default();
        if let Some(dir) = self.snapshots_dir(sts)? {
            for (name, copy) in list_dir(&dir).await? {
                found
                    .entry(name.clone())
                    .or_insert_with(|| Backup::new(name))
                    .add(copy, false);
            }
        }
        if let Some(bucket) = self.bucket()? {
            let prefix = S3Path::from(csm_service);
            let objects: Vec<object_store::ObjectMeta> = bucket
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| {
                    bucket.error(
                        format!("listing {}", bucket.url(&format!("{csm_service}/"))),
                        e,
                    )
                })?;
            for object in objects {
                let key = object.location.as_ref();
                let Some(name) = key
                    .strip_prefix(csm_service)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .filter(|name| !name.is_empty() && !name.contains('/'))
                else {
                    continue;
                };
                let copy = BackupCopy {
                    location: bucket.url(key),
                    size: object.size,
                    last_modified: object.last_modified,
                };
                found
                    .entry(name.to_owned())
                    .or_insert_with(|| Backup::new(name.to_owned()))
                    .add(copy, true);
            }
        }
        let now = Utc::now();
        let mut backups: Vec<Backup> = found
            .into_values()
            .map(|mut backup| {
                backup.age_seconds =
                    u64::try_from((now - backup.last_modified).num_seconds()).unwrap_or_default();
                backup
            })
            .collect();
        backups.sort_by(|a, b| {
            b.last_modified
                .cmp(&a.last_modified)
                .then_with(|| b.name.cmp(&a.name))
        });
        Ok(backups)
    }

    /// The backup `name` of `csm_service`, wherever it is.
    pub async fn find(
        &self,
        csm_service: &str,
        sts: &str,
        name: &str,
    ) -> Result<Backup, BackupError> {
        self.list(csm_service, sts)
            .await?
            .into_iter()
            .find(|backup| backup.name == name)
            .ok_or_else(|| BackupError::NotFound {
                service: csm_service.to_owned(),
                name: name.to_owned(),
            })
    }

    /// Makes sure `backup` is at `<snapshots_dir>/<sts>/<name>` (downloading it from S3 when
    /// only S3 has it, to a hidden partial file renamed into place once complete and checked)
    /// and that it restores ([`check_backup_file`]); returns that path and the check. A
    /// snapshot that fails is refused ([`BackupError::Corrupt`], naming it and what is wrong),
    /// and a download that fails is not kept.
    pub async fn fetch(&self, backup: &Backup, sts: &str) -> Result<Fetched, BackupError> {
        self.timed(
            || format!("fetching the backup {}", backup.name),
            self.fetch_inner(backup, sts),
        )
        .await
    }

    async fn fetch_inner(&self, backup: &Backup, sts: &str) -> Result<Fetched, BackupError> {
        let Some(dir) = self.snapshots_dir(sts)? else {
            return Err(BackupError::NoSnapshotsDir {
                what: "restoring a backup",
            });
        };
        let target = dir.join(&backup.name);
        if tokio::fs::try_exists(&target)
            .await
            .map_err(BackupError::io("looking for", &target))?
        {
            let copy = local_copy(&target).await?;
            let outcome = check_backup_file(&target, &self.config).await;
            let check = self.remember(&backup.name, &copy, outcome).await?;
            return Ok(Fetched {
                path: target,
                check,
            });
        }
        let (bucket, copy) = self.s3_copy(backup, sts)?;
        // Removed however this ends: an error, the timeout, or the caller dropping the future
        // (a cancelled run).
        let partial = PartialFile(self.partial(&backup.name)?);
        let partial = partial.0.as_path();
        let result = async {
            download(&bucket, copy, partial).await?;
            // Refused under the name the user knows, not the partial file's.
            let outcome = check_backup_file(partial, &self.config)
                .await
                .map_err(|e| in_s3(e, copy));
            let mut check = self.remember(&backup.name, copy, outcome).await?;
            put_in_place(partial, &target).await?;
            check.path.clone_from(&target);
            Ok(check)
        }
        .await;
        let check = result?;
        tracing::info!(backup = %backup.name, from = %copy.location, to = %target.display(), "backup downloaded from S3 and checked");
        Ok(Fetched {
            path: target,
            check,
        })
    }

    /// Checks `backup` ([`check_backup_file`]) where it is, changing nothing there: its copy
    /// in the snapshotter directory of `sts` when it has one (what a Bitnami restore reads),
    /// else its S3 copy, downloaded into a temporary file removed after.
    pub async fn check(&self, backup: &Backup) -> Result<BackupCheck, BackupError> {
        self.timed(|| format!("checking the backup {}", backup.name), async {
            match &backup.snapshotter {
                Some(copy) => {
                    let outcome = check_backup_file(Path::new(&copy.location), &self.config).await;
                    self.remember(&backup.name, copy, outcome).await
                }
                None => self.check_s3_copy(backup).await,
            }
        })
        .await
    }

    /// Downloads `backup`'s S3 copy into a temporary file (in the snapshotter directory's
    /// hidden directory, or the system's temporary directory), removed however this ends, and
    /// checks it.
    async fn check_s3_copy(&self, backup: &Backup) -> Result<BackupCheck, BackupError> {
        // Listed backups have a copy in one place or the other.
        let (bucket, copy) = self.s3_copy(backup, "its cluster")?;
        let partial = PartialFile(match self.config.snapshots_dir() {
            Some(_) => self.partial(&backup.name)?,
            None => std::env::temp_dir().join(format!(
                "etcd-repopulator-{}.{}.part",
                backup.name,
                uuid::Uuid::now_v7().simple()
            )),
        });
        let partial = partial.0.as_path();
        download(&bucket, copy, partial).await?;
        let outcome = check_backup_file(partial, &self.config)
            .await
            .map_err(|e| in_s3(e, copy));
        self.remember(&backup.name, copy, outcome).await
    }

    /// The bucket and `backup`'s copy in it; [`BackupError::NotFound`] (of `service`) when it
    /// has none or S3 is not configured.
    fn s3_copy<'b>(
        &self,
        backup: &'b Backup,
        service: &str,
    ) -> Result<(Bucket, &'b BackupCopy), BackupError> {
        match (&backup.s3, self.bucket()?) {
            (Some(copy), Some(bucket)) => Ok((bucket, copy)),
            _ => Err(BackupError::NotFound {
                service: service.to_owned(),
                name: backup.name.clone(),
            }),
        }
    }

    /// Downloads `backup`'s S3 copy into the new file `target` (whoever owns `target` removes
    /// it), changing nothing in S3 or the snapshotter directory; returns that copy.
    /// [`BackupError::NotFound`] when it has no S3 copy or S3 is not configured.
    pub async fn download_to<'b>(
        &self,
        backup: &'b Backup,
        target: &Path,
    ) -> Result<&'b BackupCopy, BackupError> {
        let (bucket, copy) = self.s3_copy(backup, "its cluster")?;
        self.timed(
            || format!("downloading the backup {}", backup.name),
            download(&bucket, copy, target),
        )
        .await?;
        Ok(copy)
    }

    /// Checks `backup`'s copy in S3 ([`check_backup_file`], on a temporary copy removed
    /// after): for a restore that reads the backup from S3 itself (the etcd-operator's restore
    /// operator, CSM ≤ 1.4). A backup without an S3 copy is [`BackupError::NotFound`].
    pub async fn verify_in_s3(
        &self,
        backup: &Backup,
        csm_service: &str,
    ) -> Result<BackupCheck, BackupError> {
        self.timed(
            || format!("checking the backup {} in S3", backup.name),
            async {
                self.s3_copy(backup, csm_service)?;
                self.check_s3_copy(backup).await
            },
        )
        .await
    }

    /// A new partial file's path in the snapshotter directory (created with its directory).
    fn partial(&self, name: &str) -> Result<PathBuf, BackupError> {
        let root = self
            .config
            .snapshots_dir()
            .ok_or(BackupError::NoSnapshotsDir {
                what: "a partial file",
            })?;
        let dir = root.join(PARTIAL_DIR);
        std::fs::create_dir_all(&dir).map_err(BackupError::io("creating", &dir))?;
        Ok(dir.join(format!("{name}.{}.part", uuid::Uuid::now_v7().simple())))
    }

    /// Saves what the cluster behind `etcd` holds, before it is restored or rebuilt: etcd's
    /// maintenance snapshot, streamed through its gateway, verified, then put in the
    /// snapshotter directory (`<snapshots_dir>/<sts>/<name>`) and in S3
    /// (`<bucket>/<csm_service>/<name>`), each where configured. The name
    /// ([`SafetySnapshot::name`]) carries the run id, the time, and `-empty` when the cluster
    /// had no keys. Returns the backup as [`Backups::list`] would list it.
    pub async fn take_safety_snapshot(
        &self,
        etcd: &EtcdClient,
        csm_service: &str,
        sts: &str,
        run_id: &str,
    ) -> Result<Backup, BackupError> {
        self.timed(
            || format!("the safety snapshot of {sts}"),
            self.safety_inner(etcd, csm_service, sts, run_id),
        )
        .await
    }

    async fn safety_inner(
        &self,
        etcd: &EtcdClient,
        csm_service: &str,
        sts: &str,
        run_id: &str,
    ) -> Result<Backup, BackupError> {
        if !self.configured() {
            return Err(BackupError::NotConfigured);
        }
        let etcd_error = |source| BackupError::Etcd {
            sts: sts.to_owned(),
            source,
        };
        // Serializable: the member answering counts what it holds, with or without a quorum.
        let (keys, _) = etcd.key_count(true).await.map_err(etcd_error)?;
        let safety = SafetySnapshot {
            run_id: run_id.to_owned(),
            taken_at: Utc::now(),
            empty: keys == 0,
        };
        let name = safety.name();
        let dir = self.snapshots_dir(sts)?;
        // Without the snapshotter directory, the snapshot goes to S3 from a temporary file.
        // Removed however this ends (an error, the timeout, the caller dropping the future) when
        // it was not moved into place; without the snapshotter directory, always.
        let partial = PartialFile(match &dir {
            Some(_) => self.partial(&name)?,
            None => std::env::temp_dir().join(format!(
                "etcd-repopulator-{name}.{}.part",
                uuid::Uuid::now_v7().simple()
            )),
        });
        let mut backup = self
            .save_snapshot(etcd, &partial.0, sts, csm_service, &name, dir.as_deref())
            .await?;
        tracing::info!(
            run_id,
            sts,
            backup = %name,
            keys,
            locations = ?backup.locations(),
            "safety snapshot taken"
        );
        backup.safety = Some(safety);
        Ok(backup)
    }

    async fn save_snapshot(
        &self,
        etcd: &EtcdClient,
        partial: &Path,
        sts: &str,
        csm_service: &str,
        name: &str,
        dir: Option<&Path>,
    ) -> Result<Backup, BackupError> {
        let mut file = tokio::fs::File::create(partial)
            .await
            .map_err(BackupError::io("creating", partial))?;
        etcd.snapshot(&mut file, self.config.timeout)
            .await
            .map_err(|source| BackupError::Etcd {
                sts: sts.to_owned(),
                source,
            })?;
        file.sync_all()
            .await
            .map_err(BackupError::io("writing", partial))?;
        drop(file);
        // A snapshot that does not restore is no safety net: refused before it is put in
        // place. Remembered against each copy once in place, not the partial file's name.
        let checked = check_backup_file(partial, &self.config).await?;
        let size = checked.size;
        let mut backup = Backup::new(name.to_owned());
        if let Some(dir) = dir {
            let target = dir.join(name);
            put_in_place(partial, &target).await?;
            let copy = local_copy(&target).await?;
            let placed = BackupCheck {
                path: target,
                ..checked.clone()
            };
            self.remember(name, &copy, Ok(placed)).await?;
            backup.add(copy, false);
        }
        if let Some(bucket) = self.bucket()? {
            let source = dir.map_or_else(|| partial.to_owned(), |dir| dir.join(name));
            let key = format!("{csm_service}/{name}");
            let location = bucket.url(&key);
            upload(&bucket, &source, &key).await.map_err(|e| match e {
                UploadError::Read(e) => BackupError::io("reading", &source)(e),
                UploadError::S3(e) => bucket.error(format!("uploading {location}"), e),
            })?;
            let meta = bucket
                .store
                .head(&S3Path::from(key.as_str()))
                .await
                .map_err(|e| bucket.error(format!("reading back {location}"), e))?;
            let copy = BackupCopy {
                location,
                size: meta.size,
                last_modified: meta.last_modified,
            };
            self.remember(name, &copy, Ok(checked.clone())).await?;
            backup.add(copy, true);
        }
        debug_assert_eq!(backup.size, size);
        Ok(backup)
    }
}

/// `err` about the S3 copy `copy` rather than the temporary file it was downloaded to.
fn in_s3(err: BackupError, copy: &BackupCopy) -> BackupError {
    match err {
        BackupError::Corrupt { detail, .. } => BackupError::Corrupt {
            path: PathBuf::from(&copy.location),
            detail,
        },
        other => other,
    }
}

/// Downloads `copy` from `bucket` into the file `target` (created), synced.
async fn download(bucket: &Bucket, copy: &BackupCopy, target: &Path) -> Result<(), BackupError> {
    let mut stream = bucket.download(copy).await?;
    let mut file = tokio::fs::File::create(target)
        .await
        .map_err(BackupError::io("creating", target))?;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| bucket.error(format!("downloading {}", copy.location), e))?
    {
        file.write_all(&chunk)
            .await
            .map_err(BackupError::io("writing", target))?;
    }
    file.sync_all()
        .await
        .map_err(BackupError::io("writing", target))
}

/// A partial file, removed when this is dropped (unless it was renamed into place before).
struct PartialFile(PathBuf);

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Small and local: a blocking call is fine here, and the only one that runs when the
        // future that owns this is dropped.
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "removing a partial snapshot file");
        }
    }
}

enum UploadError {
    Read(std::io::Error),
    S3(object_store::Error),
}

/// Streams the file at `source` to `key` (a multipart upload when it is large).
async fn upload(bucket: &Bucket, source: &Path, key: &str) -> Result<(), UploadError> {
    let mut file = tokio::fs::File::open(source)
        .await
        .map_err(UploadError::Read)?;
    let mut writer =
        object_store::buffered::BufWriter::new(bucket.store.clone(), S3Path::from(key));
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut buffer)
            .await
            .map_err(UploadError::Read)?;
        if n == 0 {
            break;
        }
        writer
            .put(bytes::Bytes::copy_from_slice(&buffer[..n]))
            .await
            .map_err(UploadError::S3)?;
    }
    tokio::io::AsyncWriteExt::shutdown(&mut writer)
        .await
        .map_err(|e| {
            // The upload's own error, when it is one.
            let kind = e.kind();
            match e
                .into_inner()
                .map(|inner| inner.downcast::<object_store::Error>())
            {
                Some(Ok(err)) => UploadError::S3(*err),
                Some(Err(other)) => UploadError::Read(std::io::Error::new(kind, other)),
                None => UploadError::Read(std::io::Error::from(kind)),
            }
        })
}

/// Moves the finished `partial` file to `target` (creating its directory): a rename, so that
/// `target` is either absent or complete.
async fn put_in_place(partial: &Path, target: &Path) -> Result<(), BackupError> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(BackupError::io("creating", parent))?;
    }
    tokio::fs::rename(partial, target)
        .await
        .map_err(BackupError::io("moving a snapshot to", target))
}

async fn local_copy(path: &Path) -> Result<BackupCopy, BackupError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(BackupError::io("reading", path))?;
    Ok(BackupCopy {
        location: path.display().to_string(),
        size: meta.len(),
        last_modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH).into(),
    })
}

/// The snapshots in `dir` (regular files, not hidden); none when it does not exist.
async fn list_dir(dir: &Path) -> Result<Vec<(String, BackupCopy)>, BackupError> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError::io("listing", dir)(e)),
    };
    let mut found = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(BackupError::io("listing", dir))?
    {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let is_file = entry.file_type().await.is_ok_and(|t| t.is_file());
        if name.starts_with('.') || !is_file {
            continue;
        }
        found.push((name, local_copy(&entry.path()).await?));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed snapshot: `pages` of 512 bytes, then their SHA-256.
    pub(crate) fn snapshot_bytes(pages: usize, fill: u8) -> Vec<u8> {
        let mut data = vec![fill; pages * 512];
        let sha = Sha256::digest(&data);
        data.extend_from_slice(&sha);
        data
    }

    #[test]
    fn a_snapshot_with_its_sha256_verifies_and_a_flipped_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-2025-01-01_00-00");
        let data = snapshot_bytes(8, 7);
        std::fs::write(&path, &data).unwrap();
        let verified = verify_snapshot(&path).unwrap();
        assert_eq!(verified.size, 8 * 512 + 32);
        assert_eq!(verified.sha256, hex::encode(&data[8 * 512..]));

        let mut flipped = data.clone();
        flipped[100] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let err = verify_snapshot(&path).unwrap_err();
        assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("db-2025-01-01_00-00"), "{err}");

        // Truncated, or without the trailer.
        std::fs::write(&path, &data[..8 * 512]).unwrap();
        let err = verify_snapshot(&path).unwrap_err().to_string();
        assert!(err.contains("not a database"), "{err}");
        // Shorter than the trailer itself, or empty.
        for short in [&data[..5], &[][..]] {
            std::fs::write(&path, short).unwrap();
            let err = verify_snapshot(&path).unwrap_err();
            assert!(matches!(err, BackupError::Corrupt { .. }), "{err}");
            let err = err.to_string();
            assert!(
                err.contains(&format!("{} bytes is not a database", short.len())),
                "{err}"
            );
        }
    }

    #[test]
    fn safety_names_round_trip_and_others_are_not_ours() {
        let taken_at = DateTime::parse_from_rfc3339("2025-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        for empty in [false, true] {
            let safety = SafetySnapshot {
                run_id: "0190e1c4-3b5a-7c3e-9d2f-0123456789ab".to_owned(),
                taken_at,
                empty,
            };
            let name = safety.name();
            assert!(
                name.starts_with("repopulator-2025-03-04_05-06-07-0190e1c4"),
                "{name}"
            );
            assert_eq!(name.ends_with("-empty"), empty);
            assert_eq!(SafetySnapshot::parse(&name), Some(safety));
        }
        for other in [
            "db-2025-01-01_00-00",
            "repopulator-",
            "repopulator-2025-13-01_00-00-00-x",
        ] {
            assert_eq!(SafetySnapshot::parse(other), None, "{other}");
        }
    }

    /// An S3 endpoint on loopback that answers every request with `respond` (and then keeps
    /// the connection open, unless the response closes it).
    async fn fake_s3(respond: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = socket.write_all(respond).await;
                    // Held until the client goes away.
                    let _ = socket.read(&mut buffer).await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// `[recovery]` with the snapshotter directory `root` and S3 at `endpoint` with these keys.
    fn with_s3(root: &Path, creds: &Path, endpoint: &str, access: &str) -> RecoveryConfig {
        for (key, value) in [
            ("access_key", access),
            ("secret_key", "the-secret-key-0123456789"),
            ("http_s3_endpoint", endpoint),
        ] {
            std::fs::write(creds.join(key), value).unwrap();
        }
        RecoveryConfig {
            snapshots_dir: root.to_owned(),
            s3_credentials_dir: creds.to_owned(),
            ..RecoveryConfig::default()
        }
    }

    #[tokio::test]
    async fn an_s3_error_that_quotes_the_access_key_is_told_without_it() {
        // What AWS and MinIO answer a request signed with a wrong secret key.
        let endpoint = fake_s3(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nConnection: close\r\n\
              Content-Length: 186\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\
              <Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIAQUOTEDACCESSKEY9</AWSAccessKeyId>\
              <RequestId>1</RequestId><HostId>h</HostId></Error>   ",
        )
        .await;
        let root = tempfile::tempdir().unwrap();
        let creds = tempfile::tempdir().unwrap();
        let config = with_s3(root.path(), creds.path(), &endpoint, "AKIAQUOTEDACCESSKEY9");
        let err = Backups::new(&config)
            .list("cray-bss", "cray-bss-bitnami-etcd")
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, BackupError::S3Denied { .. }), "{text}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
        assert!(
            !text.contains("AKIAQUOTEDACCESSKEY9") && !text.contains("the-secret-key"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_download_cut_short_by_its_caller_leaves_no_partial_file() {
        // Headers and the first KiB of a 100 000-byte object, then nothing.
        let endpoint = fake_s3(Box::leak(
            [
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nETag: \"e\"\r\n\
                  Last-Modified: Mon, 30 Nov 2026 10:00:00 GMT\r\n\r\n"
                    .as_slice(),
                &[1u8; 1024],
            ]
            .concat()
            .into_boxed_slice(),
        ))
        .await;
        let root = tempfile::tempdir().unwrap();
        let creds = tempfile::tempdir().unwrap();
        let config = with_s3(root.path(), creds.path(), &endpoint, "AKIAEXAMPLE");
        let mut backup = Backup::new("db-2026-11-30_10-00".to_owned());
        backup.add(
            BackupCopy {
                location: "s3://etcd-backup/cray-bss/db-2026-11-30_10-00".to_owned(),
                size: 100_000,
                last_modified: Utc::now(),
            },
            true,
        );
        let backups = Backups::new(&config);
        let mut fetch = Box::pin(backups.fetch(&backup, "cray-bss-bitnami-etcd"));
        let partial_dir = root.path().join(PARTIAL_DIR);
        let files = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .map(|entries| entries.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default()
        };
        // Driven until its partial file has the first bytes (as a cancelled run or the
        // timeout would find it).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            tokio::select! {
                ended = &mut fetch => panic!("the download ended: {ended:?}"),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            if files(&partial_dir)
                .iter()
                .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no partial file");
        }
        drop(fetch);
        assert_eq!(files(&partial_dir), Vec::<PathBuf>::new());
        assert_eq!(
            files(&root.path().join("cray-bss-bitnami-etcd")),
            Vec::<PathBuf>::new()
        );
    }

    #[tokio::test]
    async fn the_snapshotter_directory_alone_lists_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cray-bss-bitnami-etcd");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let now = SystemTime::now();
        for (name, hours) in [("db-old", 30u64), ("db-new", 1), (".hidden", 0)] {
            let path = dir.join(name);
            std::fs::write(&path, snapshot_bytes(1, 1)).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(now - Duration::from_secs(hours * 3600))
                .unwrap();
        }
        let config = RecoveryConfig {
            snapshots_dir: root.path().to_owned(),
            ..RecoveryConfig::default()
        };
        let backups = Backups::new(&config)
            .list("cray-bss", "cray-bss-bitnami-etcd")
            .await
            .unwrap();
        let names: Vec<&str> = backups.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["db-new", "db-old"]);
        assert_eq!(backups[1].age().as_secs() / 3600, 30);
        assert!(backups[0].s3.is_none());
        assert_eq!(backups[0].size, 512 + 32);

        // Nothing configured, or the PVC not mounted where configured: said so.
        let none = RecoveryConfig {
            snapshots_dir: PathBuf::new(),
            ..RecoveryConfig::default()
        };
        let err = Backups::new(&none).list("cray-bss", "x").await.unwrap_err();
        assert!(matches!(err, BackupError::NotConfigured), "{err}");
        let missing = RecoveryConfig {
            snapshots_dir: root.path().join("absent"),
            ..RecoveryConfig::default()
        };
        let err = Backups::new(&missing)
            .list("cray-bss", "x")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("bitnami-etcd-snapshotter"),
            "{err}"
        );
    }
}

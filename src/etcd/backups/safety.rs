//! [`Backups::take_safety_snapshot`]: what a cluster holds, saved before it is restored or
//! rebuilt, in both places, under a name both CSM's tools and this one list.

use std::path::Path;

use chrono::Utc;
use object_store::{ObjectStoreExt as _, path::Path as S3Path};

use super::{
    Backup, BackupCopy, BackupError, Backups, PartialFile, SafetySnapshot,
    check::{BackupCheck, check_backup_file},
    local_copy, put_in_place,
    s3::{UploadError, upload},
};
use crate::etcd::client::EtcdClient;

impl Backups {
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

//! Getting a backup where a restore reads it (the snapshotter directory), and checking one
//! where it is.

use std::path::Path;

use super::{
    Backup, BackupCopy, BackupError, Backups, Fetched, PartialFile,
    check::{BackupCheck, check_backup_file},
    local_copy, put_in_place,
    s3::{Bucket, download, in_s3},
};

impl Backups {
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
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use chrono::Utc;

    use super::super::tests::{fake_s3, with_s3};
    use super::super::*;

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
}

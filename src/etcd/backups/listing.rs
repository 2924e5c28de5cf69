//! [`Backups::list`]: the backups of one cluster, in S3 and in the snapshotter directory,
//! merged by name, newest first.

use std::path::Path;

use chrono::Utc;
use futures::TryStreamExt as _;
use object_store::path::Path as S3Path;

use super::{Backup, BackupCopy, BackupError, Backups, local_copy};

impl Backups {
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
    use std::{
        path::PathBuf,
        time::{Duration, SystemTime},
    };

    use super::super::tests::snapshot_bytes;
    use super::*;
    use crate::etcd::recovery_config::RecoveryConfig;

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

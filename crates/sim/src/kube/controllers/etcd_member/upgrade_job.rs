//! What cray-etcd-base's pre-upgrade Job (CSM 1.7) leaves in S3, for the simulated 1.7.

use std::path::Path;

use anyhow::Context as _;

use crate::s3::{BUCKET, UPGRADE_BEFORE_SNAPSHOT, short_name};

/// What cray-etcd-base's pre-upgrade Job (`templates/upgrade-job.yaml`, CSM 1.7) does when Helm
/// upgrades the release of the StatefulSet `sts` to `revision`: `etcdctl snapshot save` of the
/// cluster at `url`, uploaded as `<service>/<service>_etcd_upgrade.snapshot-<revision>.db` to
/// [`crate::s3::BUCKET`] of the simulated S3 whose storage is `s3_root`, dated
/// [`crate::s3::UPGRADE_BEFORE_SNAPSHOT`] ago. The object appears whole (a rename into the bucket).
/// Returns its key.
pub async fn pre_upgrade_snapshot(
    s3_root: &Path,
    url: &str,
    sts: &str,
    revision: u32,
) -> anyhow::Result<String> {
    let service = short_name(sts);
    let key = format!("{service}/{service}_etcd_upgrade.snapshot-{revision}.db");
    // Beside the bucket, on the same file system, so that the object appears by a rename.
    let scratch = tempfile::Builder::new()
        .prefix(".upgrade-job-")
        .tempdir_in(s3_root)?;
    let file = super::process::save_snapshot(url, scratch.path()).await?;
    let taken = std::time::SystemTime::now() - UPGRADE_BEFORE_SNAPSHOT;
    std::fs::File::options()
        .write(true)
        .open(&file)?
        .set_modified(taken)?;
    let target = s3_root.join(BUCKET).join(&key);
    std::fs::create_dir_all(target.parent().context("an object's directory")?)?;
    std::fs::rename(&file, &target)
        .with_context(|| format!("putting s3://{BUCKET}/{key} in place"))?;
    Ok(key)
}

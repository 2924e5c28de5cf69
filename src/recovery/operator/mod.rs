//! Rebuild or restore an etcd cluster of the etcd-operator layout (CSM ≤ 1.4), as the CSM 1.3
//! pages do it (`shared/csm/docs-csm/*.release-1.3.md`):
//!
//! - **Rebuild** ("Rebuild Unhealthy etcd Clusters", manual procedure): the service's
//!   Deployment (`cray-bss` for `cray-bss-etcd`) is taken down first; the `EtcdCluster` is
//!   stored as a sanitized manifest ("Remove the entire lines for creationTimestamp,
//!   generation, resourceVersion, and uid ... the status line, as well as every line after
//!   it"), deleted, its pods awaited until they terminate, created again and awaited until its
//!   members run; then the Deployment comes back. The page deletes the Deployment and applies
//!   its saved YAML again; this step scales it to 0 and back to its stored replica count
//!   instead: the same effect on the service's pods (none runs against the cluster while it is
//!   rebuilt, new ones start afterwards), without deleting and re-creating an object Helm owns.
//!   The re-create is `crate::step::recreate`'s (manifest stored before the delete, crash-safe, no safe
//!   point between delete and create), waiting for the old member pods to be gone in between.
//! - **Restore** ("Restore an etcd Cluster from a Backup"): an `EtcdRestore` named after the
//!   cluster (what CSM's `restore_from_backup cray-bos <backup>` creates) asks the
//!   etcd-operator's restore operator to replace the cluster with one seeded from the backup in
//!   S3 (`etcd-backup/<service>/<backup>`, with the S3 settings of the cluster's periodic
//!   `EtcdBackup`, which wrote the backups); the step waits until the pods run again, deletes
//!   the `EtcdRestore` ("This step will make it possible for future restores to occur") and
//!   checks that the client Service `<cluster>-client` exists. The page leaves the Deployment
//!   alone during a restore, and so does this step.
//!
//! Both store what they need (the Deployment's replica count, the manifest, the restore's
//! settings) before changing anything, and are idempotent: a resume after a crash carries on
//! from what the step stored. Every ending of a rebuild puts the Deployment back at its stored
//! replica count, and says so. All the waits of one rebuild or restore share its `timeout`
//! (`[recovery] timeout`); putting the Deployment back comes on top.

use std::time::Duration;

use super::{Decided, decision::Decision, nothing_to_recover};
use crate::step::{StepContext, StepError, StepOutcome};

mod members;
mod objects;
mod rebuild;
mod record;
mod restore;

pub use objects::{cluster_object, paired_deployment, periodic_backup_object, restore_object};
use rebuild::rebuild;
pub use record::RestoreSource;
use restore::restore;

/// `etcd-recover` on the etcd-operator layout: what `etcd-assess` decided for `cluster` (nothing,
/// `rebuild` with the service Deployment paired with it, or `restore` from the backup it
/// chose), within `timeout`.
pub async fn run(
    ctx: &StepContext<'_>,
    decided: &Decided,
    cluster: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let assessment = decided.assessment()?;
    match &assessment.decision {
        Decision::LeaveAlone => nothing_to_recover(cluster, assessment),
        Decision::ReclaimSpace => super::space::perform(ctx, cluster).await,
        // Decided for the Bitnami layout only: the etcd operator replaces its members itself.
        Decision::ReplaceMembers { members } => {
            super::replace::perform(ctx, cluster, members).await
        }
        Decision::StartWithData => Err(StepError::Failed(format!(
            "{cluster}: starting the members with their data is for the Bitnami layout"
        ))),
        Decision::RestoreFromMember { pod, .. } => Err(StepError::Failed(format!(
            "{cluster}: a restore from member pod {pod} is for the Bitnami layout; the etcd \
             operator restores from its backups"
        ))),
        Decision::Rebuild => {
            let deployment = paired_deployment(cluster).ok_or_else(|| {
                StepError::Failed(format!(
                    "{cluster} is not the name of an etcd-operator cluster (<service>-etcd)"
                ))
            })?;
            rebuild(ctx, cluster, &deployment, timeout).await
        }
        Decision::Restore { backup, .. } => restore(ctx, cluster, backup, timeout).await,
    }
}

//! BSS on CSM 1.5+: the runbook says "Restore BSS from the ETCD backup, see Restore an ETCD
//! Cluster from a Backup". Restoring is a later feature of this service; until then the step
//! checks what it can (the cluster's state) and ends `action_required` with the procedure.
//! Backups live in the S3 bucket `etcd-backup` and on the `bitnami-etcd-snapshotter` PVC,
//! neither of which the service can read (no S3 credentials, no exec into pods), so it cannot
//! name the newest backup: it names the command that lists them.

use serde_json::json;

use crate::{
    etcd::layout,
    handlers::{StepContext, StepError, StepOutcome},
};

pub async fn restore_required(
    ctx: &StepContext<'_>,
    cluster: &str,
) -> Result<StepOutcome, StepError> {
    let found = layout::find(ctx.cluster, cluster).await?;
    let state = match &found {
        Some(found) => format!(
            "{} {} exists ({} member(s) wanted)",
            found.object.kind, found.name, found.desired
        ),
        None => format!(
            "{cluster} does not exist in namespace {}",
            ctx.cluster.namespace()
        ),
    };
    let csm = cluster.trim_end_matches("-bitnami-etcd");
    StepOutcome::action_required(
        format!(
            "BSS is repopulated by restoring its etcd cluster from a backup (runbook: \"Restore \
             BSS from the ETCD backup\", see \"Restore an etcd Cluster from a Backup\"); this \
             service does not restore clusters yet. {state}. Run \
             `/opt/cray/platform-utils/etcd/etcd_restore_rebuild.sh -s {csm}` on a master or \
             worker NCN: it restores the newest backup of the last 7 days. This service cannot \
             see the backups (S3 bucket etcd-backup, prefix {csm}/); list them with \
             `list_backups {csm}` in the etcd-backup-restore pod (namespace operators)"
        ),
        json!({
            "cluster": cluster,
            "exists": found.is_some(),
            "procedure": "Restore_an_etcd_Cluster_from_a_Backup.release-1.6.md",
            "command": format!("/opt/cray/platform-utils/etcd/etcd_restore_rebuild.sh -s {csm}"),
        }),
    )
}

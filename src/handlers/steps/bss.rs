//! BSS on CSM 1.5+: the runbook says "Restore BSS from the ETCD backup, see Restore an ETCD
//! Cluster from a Backup". A run with `"etcd": "restore"` (or `auto` choosing a restore) does
//! that first, and this step then ends `skipped` (see `StepKind::covered_by_restore`).
//! Otherwise (a check-only run, or a rebuild, which empties BSS's cluster) the step asks BSS:
//! when it holds boot parameters, nothing is missing and the step succeeds; when it holds none
//! (or cannot be asked), the step checks what it can (the cluster's state, its newest backup)
//! and ends `action_required`, naming how to restore it: a run of this service, or CSM's own
//! script.

use serde_json::json;

use crate::{
    etcd::{backups::Backups, layout},
    step::{StepContext, StepError, StepOutcome},
};

use serde::{Deserialize, Serialize};

use crate::handlers::kind::{Earlier, StepKind};

/// BSS on CSM 1.5+: "Restore BSS from the ETCD backup", a procedure this service does not
/// perform; the step names it and what it can see of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestoreBssFromBackup {
    pub cluster: String,
    /// The release's "Restore an etcd Cluster from a Backup" (`None` in plans stored before
    /// it was named: 1.6's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<String>,
}

#[async_trait::async_trait]
impl StepKind for RestoreBssFromBackup {
    fn describe(&self) -> String {
        let cluster = &self.cluster;
        format!(
            "BSS is restored from the etcd backup of {cluster} (\"Restore an etcd Cluster from \
             a Backup\"): skipped when this run restored it, else report its newest backup \
             and how to restore it"
        )
    }

    /// On 1.5+ the restore is the runbook's answer.
    fn covered_by_restore(&self) -> bool {
        true
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        let procedure = self
            .procedure
            .clone()
            .unwrap_or_else(|| crate::release::Release::V1_6.profile().restore_procedure());
        restore_required(ctx, &self.cluster, &procedure).await
    }
}

async fn restore_required(
    ctx: &StepContext<'_>,
    cluster: &str,
    procedure: &str,
) -> Result<StepOutcome, StepError> {
    let asked = match ctx.csm.bss.list_bootparameters().await {
        Ok(entries) if !entries.is_empty() => {
            let hosts: usize = entries.iter().map(|entry| entry.hosts.len()).sum();
            return StepOutcome::done(
                format!(
                    "BSS holds {} boot parameter entr{} for {hosts} host(s): its data is there, \
                     nothing to restore",
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" }
                ),
                json!({ "cluster": cluster, "entries": entries.len(), "hosts": hosts }),
            );
        }
        Ok(_) => "BSS holds no boot parameters".to_owned(),
        Err(err) => format!("BSS could not be asked for its boot parameters ({err})"),
    };
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
    let newest = match Backups::new(ctx.recovery).list(csm, cluster).await {
        Ok(backups) => match backups
            .iter()
            .find(|b| b.safety.as_ref().is_none_or(|s| !s.empty))
        {
            Some(b) => format!(
                "its newest backup is {} ({} old)",
                b.name,
                humantime::format_duration(b.age())
            ),
            None => "it has no backup".to_owned(),
        },
        Err(err) => format!("its backups could not be listed: {err}"),
    };
    StepOutcome::action_required(
        format!(
            "{asked}. BSS is repopulated by restoring its etcd cluster from a backup (runbook: \
             \"Restore BSS from the ETCD backup\", see \"Restore an etcd Cluster from a Backup\", \
             {procedure}), which this run did not do. {state}; {newest} (GET /etcd-clusters/{cluster}/backups lists \
             them). Restore it with a run: POST /repopulations {{\"services\": [\"bss\"], \
             \"etcd\": \"restore\", \"confirm\": [\"{cluster}\"]}}, or with CSM's \
             `/opt/cray/platform-utils/etcd/etcd_restore_rebuild.sh -s {csm}` on a master or \
             worker NCN"
        ),
        json!({
            "cluster": cluster,
            "exists": found.is_some(),
            "procedure": procedure,
            "command": format!("/opt/cray/platform-utils/etcd/etcd_restore_rebuild.sh -s {csm}"),
            "backups": newest,
        }),
    )
}

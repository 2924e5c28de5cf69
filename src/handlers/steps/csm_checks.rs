//! Steps that ask the CSM services themselves (CRUS, CPS, FAS): reads only, so a dry run
//! performs them as they are.

use std::collections::BTreeSet;

use serde_json::json;

use crate::{
    csm::ComponentFilter,
    step::{StepContext, StepError, StepOutcome},
};

use serde::{Deserialize, Serialize};

use crate::handlers::kind::{Earlier, StepKind};

/// Record the CRUS sessions; after the restart, sessions not completed need a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListCrusSessions {
    pub after_restart: bool,
}

#[async_trait::async_trait]
impl StepKind for ListCrusSessions {
    fn describe(&self) -> String {
        if self.after_restart {
            "list the CRUS sessions again; sessions not completed need a look".to_owned()
        } else {
            "list the CRUS sessions and record their upgrade_id, state and messages".to_owned()
        }
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        list_crus_sessions(ctx, self.after_restart).await
    }
}

/// Find out whether clients had CPS content mounted, and which nodes must be rebooted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckCpsClients {}

#[async_trait::async_trait]
impl StepKind for CheckCpsClients {
    fn describe(&self) -> String {
        "ask CPS whether content is in use; list the nodes that must be rebooted to re-mount"
            .to_owned()
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        check_cps_clients(ctx).await
    }
}

/// Check that FAS lists firmware images again, and report what an etcd rebuild loses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyFasImages {}

#[async_trait::async_trait]
impl StepKind for VerifyFasImages {
    fn describe(&self) -> String {
        "check that FAS lists firmware images; report lost actions and snapshots".to_owned()
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        verify_fas_images(ctx).await
    }
}

/// Check that BSS holds boot parameters again (the work of `cray-reds-init`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyBssBootParameters {}

#[async_trait::async_trait]
impl StepKind for VerifyBssBootParameters {
    fn describe(&self) -> String {
        "check that BSS holds boot parameters again".to_owned()
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        verify_bss_boot_parameters(ctx).await
    }
}

pub async fn list_crus_sessions(
    ctx: &StepContext<'_>,
    after_restart: bool,
) -> Result<StepOutcome, StepError> {
    let sessions = ctx.csm.crus.list_sessions().await?;
    let recorded: Vec<_> = sessions
        .iter()
        .map(|s| {
            json!({
                "upgrade_id": s.upgrade_id,
                "state": s.state,
                "completed": s.completed,
                "messages": s.messages,
            })
        })
        .collect();
    let open: Vec<String> = sessions
        .iter()
        .filter(|s| !s.completed)
        .map(|s| format!("{} ({})", s.upgrade_id, s.state))
        .collect();
    let data = json!({ "sessions": recorded, "not_completed": open });
    if open.is_empty() {
        return StepOutcome::done(
            format!("{} CRUS session(s), all completed", sessions.len()),
            data,
        );
    }
    if !after_restart {
        return StepOutcome::done(
            format!(
                "{} CRUS session(s) recorded; not completed: {}",
                sessions.len(),
                open.join(", ")
            ),
            data,
        );
    }
    if ctx.mode.is_dry_run() {
        return StepOutcome::action_required(
            format!(
                "dry run: {} of {} CRUS session(s) not completed now: {}; after the restart a \
                 real run would ask to check that each is progressing",
                open.len(),
                sessions.len(),
                open.join(", ")
            ),
            data,
        );
    }
    StepOutcome::action_required(
        format!(
            "{} of {} CRUS session(s) not completed: {}; check that each is progressing \
             (`cray crus session describe <upgrade_id>`) and not failed or stuck",
            open.len(),
            sessions.len(),
            open.join(", ")
        ),
        data,
    )
}

/// CPS keeps no record of which clients mounted content (see `csm::cps`), so: content exported
/// means clients may have it mounted; the compute nodes that boot their root file system through
/// CPS (`rootfs_provider: cpss3` in a BOS boot set) are then the ones to reboot.
pub async fn check_cps_clients(ctx: &StepContext<'_>) -> Result<StepOutcome, StepError> {
    let serving = ctx.csm.cps.nodes_with_mounted_content().await?;
    if serving.is_empty() {
        return StepOutcome::done(
            "no CPS content is exported: no client can have had content mounted",
            json!({ "serving_workers": [], "nodes_to_reboot": [] }),
        );
    }
    let nodes = cps_root_fs_nodes(ctx).await?;
    let data = json!({ "serving_workers": serving, "nodes_to_reboot": nodes });
    let which = if nodes.is_empty() {
        "no BOS boot set names its nodes with rootfs_provider cpss3; identify the clients that \
         mount CPS content by hand"
            .to_owned()
    } else {
        format!(
            "reboot these nodes so they mount their CPS content again: {}",
            nodes.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let workers = serving.iter().cloned().collect::<Vec<_>>().join(", ");
    if ctx.mode.is_dry_run() {
        return StepOutcome::action_required(
            format!(
                "dry run: CPS content is exported by {} worker(s) ({workers}); after a rebuild of \
                 its etcd cluster a real run would ask for it to be unmounted and mounted again \
                 on the clients: {which}",
                serving.len(),
            ),
            data,
        );
    }
    StepOutcome::action_required(
        format!(
            "CPS content is exported by {} worker(s) ({}), so clients had content mounted when \
             etcd was rebuilt: it must be unmounted and mounted again (compute nodes that use CPS \
             for their root file system: shut down, then boot). {which}",
            serving.len(),
            workers
        ),
        data,
    )
}

/// Nodes named (directly, or by role) by BOS boot sets that use CPS for the root file system.
async fn cps_root_fs_nodes(ctx: &StepContext<'_>) -> Result<BTreeSet<String>, StepError> {
    let templates = ctx.csm.bos.list_session_templates().await?;
    let mut nodes = BTreeSet::new();
    let mut roles = BTreeSet::new();
    for template in &templates {
        let Some(sets) = template.get("boot_sets").and_then(|b| b.as_object()) else {
            continue;
        };
        for set in sets.values() {
            if set.get("rootfs_provider").and_then(|p| p.as_str()) != Some("cpss3") {
                continue;
            }
            let strings = |key: &str| {
                set.get(key)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            };
            nodes.extend(strings("node_list"));
            roles.extend(strings("node_roles_groups"));
        }
    }
    for role in roles {
        let filter = ComponentFilter::nodes().with_role(role).with_state("Ready");
        for component in ctx.csm.hsm.list_components(&filter).await? {
            nodes.insert(component.id);
        }
    }
    Ok(nodes)
}

pub async fn verify_bss_boot_parameters(ctx: &StepContext<'_>) -> Result<StepOutcome, StepError> {
    let entries = ctx.csm.bss.list_bootparameters().await?;
    let hosts: usize = entries.iter().map(|entry| entry.hosts.len()).sum();
    let data = json!({ "entries": entries.len(), "hosts": hosts });
    if entries.is_empty() && !ctx.mode.is_dry_run() {
        return Err(StepError::Failed(
            "BSS holds no boot parameters after the cray-reds-init Job ran: nodes cannot boot. \
             Check the Job's log (see the previous step) and that BSS reaches its etcd cluster"
                .to_owned(),
        ));
    }
    StepOutcome::done(
        format!(
            "BSS holds {} boot parameter entr{} for {hosts} host(s)",
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" }
        ),
        data,
    )
}

pub async fn verify_fas_images(ctx: &StepContext<'_>) -> Result<StepOutcome, StepError> {
    let images = ctx.csm.fas.list_images().await?;
    let actions = ctx.csm.fas.list_actions().await?;
    let snapshots = ctx.csm.fas.list_snapshots().await?;
    let data = json!({
        "images": images.len(),
        "actions": actions.len(),
        "snapshots": snapshots.len(),
    });
    if images.is_empty() && !ctx.mode.is_dry_run() {
        return Err(StepError::Failed(
            "FAS lists no firmware images after the reload: the images were not reloaded; check \
             the loader (see the previous step) and the firmware repository in Nexus"
                .to_owned(),
        ));
    }
    if ctx.mode.is_dry_run() {
        return StepOutcome::action_required(
            format!(
                "dry run: FAS lists {} firmware image(s), {} action(s) and {} snapshot(s) now. \
                 A rebuild of its etcd cluster would lose all historic firmware actions and \
                 recorded snapshots: any firmware action or snapshot running at the time would \
                 have to be recreated",
                images.len(),
                actions.len(),
                snapshots.len()
            ),
            data,
        );
    }
    StepOutcome::action_required(
        format!(
            "FAS lists {} firmware image(s). When its etcd cluster was rebuilt, all historic \
             firmware actions and recorded snapshots were lost ({} action(s) and {} snapshot(s) \
             exist now): any firmware action or snapshot that was running at the time of the \
             failure must be recreated",
            images.len(),
            actions.len(),
            snapshots.len()
        ),
        data,
    )
}

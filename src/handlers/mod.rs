//! One module per service, each a short declarative list of steps; each kind of step is a
//! struct in `steps` that owns its description, limits and execution ([`kind::StepKind`]),
//! built from `cluster`, `csm`, `remote`, `step` and `recovery`. The runner stores the planned
//! steps with the run and executes them here, so a resumed run follows the plan it was created
//! with.

mod action;
mod bos;
mod bss;
mod cps;
mod crus;
mod externaldns;
mod fas;
mod hmnfd;
pub mod kind;
mod meds;
mod reds;
mod steps;

use serde_json::Value;

pub use crate::recovery::operator::RestoreSource;
pub use crate::step::{Journal, StepContext, StepError, StepOutcome};
use action::step;
pub use action::{Action, PlannedStep};
pub use steps::{
    bos::RestoreBosTemplates,
    bss::RestoreBssFromBackup,
    csm_checks::{CheckCpsClients, ListCrusSessions, VerifyBssBootParameters, VerifyFasImages},
    etcd::CheckEtcd,
    fas::ReloadFasFromNexus,
    orca::{NcnTargets, ResolveOrcaTargets, RestartOrca, VerifyHmnfdSubscriptions},
    pods::{EnsurePodsReady, RestartPods},
    recovery::{AssessEtcd, RecoverBitnami, RecoverOperator, SafetySnapshot},
    recreate::Recreate,
};

use crate::{
    cluster::{Cluster, ClusterError},
    config::Config,
    model::{EtcdLayout, EtcdMode, Service, State},
    release::{BssRepopulation, FasReload, Profile},
};

/// What the runbook of `profile`'s release says about a service, in one line.
pub fn description(service: Service, profile: &Profile) -> String {
    match (service, profile.bss, profile.fas) {
        (Service::Bss, BssRepopulation::RestoreFromBackup, _) => {
            "Boot Script Service: restore its etcd cluster from a backup (a run with \"etcd\": \
             \"restore\")"
                .to_owned()
        }
        (Service::Fas, _, FasReload::Nexus) => {
            "Firmware Action Service: reload firmware images from Nexus".to_owned()
        }
        (Service::Hmnfd, ..) => format!(
            "HMS Notification Fanout Daemon: restart {} on nodes",
            profile.orca_unit
        ),
        _ => runbook_1_0(service).to_owned(),
    }
}

fn runbook_1_0(service: Service) -> &'static str {
    match service {
        Service::Bos => "Boot Orchestration Service: restore boot session templates",
        Service::Bss => "Boot Script Service: re-run the cray-reds-init Job",
        Service::Cps => {
            "Content Projection Service: ensure components are up; list nodes to reboot"
        }
        Service::Crus => "Compute Rolling Upgrade Service: record sessions, restart cray-crus",
        Service::Externaldns => "External DNS: recreate the cray-externaldns-etcd EtcdCluster",
        Service::Fas => "Firmware Action Service: re-run the cray-fas-loader Job",
        Service::Hmnfd => "HMS Notification Fanout Daemon: restart cray-dvs-orca on nodes",
        Service::Meds => "Mountain Endpoint Discovery Service: restart cray-meds pods",
        Service::Reds => "River Endpoint Discovery Service: restart cray-reds pods",
    }
}

pub use crate::recovery::{Decided, ETCD_ASSESS, ETCD_RECOVER, ETCD_SAFETY_SNAPSHOT};
pub use kind::Earlier;
pub use steps::etcd::{CHECK_ETCD, RECOUNT_ETCD};

/// The steps a run takes for `service` on `profile`'s release, or `None` when the release
/// does not have it: its own, between the check of its etcd cluster and a recount of its keys
/// (when configured). With `etcd` other than `check`, the recovery of the cluster comes first
/// (assess and decide, then restore from `backup` or rebuild; Bitnami layout).
pub fn plan(
    service: Service,
    config: &Config,
    profile: &Profile,
    etcd: EtcdMode,
    backup: Option<&str>,
    discard_newer: bool,
    confirm: &[String],
) -> Option<Vec<PlannedStep>> {
    if !profile.has(service) {
        return None;
    }
    let own = service_steps(service, config, profile);
    let recovery = profile
        .etcd_cluster(service)
        .filter(|_| etcd != EtcdMode::Check)
        .map(|cluster| {
            recovery_steps(
                &cluster,
                profile.layout,
                config,
                etcd,
                backup,
                discard_newer,
                confirm.contains(&cluster),
            )
        })
        .unwrap_or_default();
    let Some(cluster) = profile
        .etcd_cluster(service)
        .filter(|_| config.etcd.enabled || !recovery.is_empty())
    else {
        return Some(own);
    };
    let endpoint = config
        .etcd
        .endpoint_of(&cluster, &config.namespace)
        .unwrap_or_default();
    let check = |name: &str, after: bool| {
        step(
            name,
            Action::CheckEtcd(CheckEtcd {
                cluster: cluster.clone(),
                endpoint: endpoint.clone(),
                after,
            }),
        )
    };
    let mut steps = recovery;
    steps.push(check(CHECK_ETCD, false));
    steps.extend(own);
    steps.push(check(RECOUNT_ETCD, true));
    Some(steps)
}

/// Assess and decide, snapshot, then recover `cluster` (a Bitnami StatefulSet, or an
/// etcd-operator EtcdCluster, as `layout` has them).
fn recovery_steps(
    cluster: &str,
    layout: EtcdLayout,
    config: &Config,
    etcd: EtcdMode,
    backup: Option<&str>,
    discard_newer: bool,
    confirmed: bool,
) -> Vec<PlannedStep> {
    let (cluster_name, timeout) = (cluster.to_owned(), config.recovery.timeout);
    let recover = match layout {
        EtcdLayout::Bitnami => Action::RecoverBitnami(RecoverBitnami {
            cluster: cluster_name,
            timeout,
        }),
        EtcdLayout::Operator => Action::RecoverOperator(RecoverOperator {
            cluster: cluster_name,
            timeout,
        }),
    };
    vec![
        step(
            ETCD_ASSESS,
            Action::AssessEtcd(AssessEtcd {
                cluster: cluster.to_owned(),
                mode: etcd,
                backup: backup.map(str::to_owned),
                restore_max_age: config.recovery.restore_max_age,
                discard_newer,
                confirmed,
            }),
        ),
        step(
            ETCD_SAFETY_SNAPSHOT,
            Action::SafetySnapshot(SafetySnapshot {
                cluster: cluster.to_owned(),
            }),
        ),
        step(ETCD_RECOVER, recover),
    ]
}

fn service_steps(service: Service, config: &Config, profile: &Profile) -> Vec<PlannedStep> {
    match service {
        Service::Bos => bos::steps(config),
        Service::Bss => bss::steps(config, profile),
        Service::Cps => cps::steps(config),
        Service::Crus => crus::steps(config),
        Service::Externaldns => externaldns::steps(config),
        Service::Fas => fas::steps(config, profile),
        Service::Hmnfd => hmnfd::steps(config, profile),
        Service::Meds => meds::steps(config),
        Service::Reds => reds::steps(config),
    }
}

/// Why a resume of the step planned as `spec`, whose journal is `data`, must not go on: the
/// cluster it acts on changed since its last journalled write (see
/// `crate::recovery::bitnami::resume_blocker`). `None`: nothing stands in the way.
pub async fn resume_blocker(
    cluster: &Cluster,
    spec: &Value,
    data: &Value,
    run_id: &str,
) -> Result<Option<String>, StepError> {
    match serde_json::from_value::<Action>(spec.clone()) {
        Ok(Action::RecoverBitnami(_)) => {
            crate::recovery::bitnami::resume_blocker(cluster, data, run_id).await
        }
        _ => Ok(None),
    }
}

/// The etcd cluster `name` as it is now, in words (for a person deciding what to do next):
/// whether it serves, and for a StatefulSet its replicas and recovery environment.
pub async fn describe_cluster_now(cluster: &Cluster, config: &Config, name: &str) -> String {
    let found = match crate::etcd::layout::find(cluster, name).await {
        Ok(Some(found)) => found,
        Ok(None) => return format!("{name} does not exist"),
        Err(err) => return format!("{name} could not be read: {err}"),
    };
    let report = match crate::etcd::layout::report(cluster, &found, &config.etcd).await {
        Ok(report) => crate::recovery::bitnami::describe_report(&report),
        Err(err) => format!("{name} could not be read: {err}"),
    };
    match crate::recovery::bitnami::describe_statefulset(cluster, &found).await {
        Some(set) => format!("{report}; {set}"),
        None => report,
    }
}

/// The services a run can repopulate on `profile`'s release.
pub fn implemented(profile: &Profile) -> Vec<Service> {
    let config = Config::default();
    Service::ALL
        .into_iter()
        .filter(|s| plan(*s, &config, profile, EtcdMode::Check, None, false, &[]).is_some())
        .collect()
}

/// Executes one step. Kubernetes requests retried after transient errors are counted and
/// named in the outcome. A dry run is a plan: what a real run would leave to a person ends the
/// step `succeeded` (the message says what it would be), and what would stop a real run ends it
/// `failed`, saying so.
pub async fn execute(
    action: &Action,
    ctx: &StepContext<'_>,
    earlier: &Earlier,
) -> Result<StepOutcome, StepError> {
    let cluster = ctx.cluster.counting();
    let counted = StepContext {
        run_id: ctx.run_id,
        cluster: &cluster,
        csm: ctx.csm,
        mode: ctx.mode,
        cancel: ctx.cancel,
        shutdown: ctx.shutdown,
        journal: ctx.journal,
        saved: ctx.saved.clone(),
        ssh: ctx.ssh,
        etcd: ctx.etcd,
        recovery: ctx.recovery,
        store: ctx.store,
        events: ctx.events,
    };
    let result = perform(action, &counted, earlier).await;
    let retries = cluster.retries();
    let result = match result {
        Ok(mut outcome) => {
            if retries > 0 {
                outcome.message.push_str(&format!(
                    " ({retries} Kubernetes API request(s) retried after transient errors)"
                ));
                if let Some(data) = outcome.data.as_object_mut() {
                    data.insert("kubernetes_api_retries".to_owned(), retries.into());
                }
            }
            Ok(outcome)
        }
        Err(err) if err.is_cancelled() => Err(err),
        Err(err) => {
            let counted_in_error = matches!(
                &err,
                StepError::Cluster(ClusterError::Api { retries: r, .. }) if *r == retries
            );
            if retries > 0 && !counted_in_error {
                Err(StepError::Failed(format!(
                    "{err} ({retries} Kubernetes API request(s) retried after transient errors)"
                )))
            } else {
                Err(err)
            }
        }
    };
    if ctx.mode.is_dry_run() {
        as_plan(result)
    } else {
        result
    }
}

/// A dry run's outcome as a plan: `action_required` becomes `succeeded` (noted in the data as
/// `real_run_state`), and a failure says that a real run would fail there.
fn as_plan(result: Result<StepOutcome, StepError>) -> Result<StepOutcome, StepError> {
    const PREFIX: &str = "dry run: ";
    let conditional = |message: &str, state: State| {
        if message.starts_with(PREFIX) {
            message.to_owned()
        } else {
            format!("{PREFIX}a real run would end {state} here: {message}")
        }
    };
    match result {
        Ok(mut outcome) if outcome.state != State::Succeeded => {
            let real = outcome.state;
            outcome.message = conditional(&outcome.message, real);
            if let Some(data) = outcome.data.as_object_mut() {
                data.insert("real_run_state".to_owned(), real.as_str().into());
            }
            if real == State::ActionRequired {
                outcome.state = State::Succeeded;
            }
            Ok(outcome)
        }
        Err(err) if !err.is_cancelled() => Err(StepError::Failed(conditional(
            &err.to_string(),
            State::Failed,
        ))),
        other => other,
    }
}

/// Repopulates data a restore of the service's etcd cluster brings back: after a restore, the
/// step ends `skipped`, saying so. That is BSS's boot parameters (on 1.5+ the restore is the
/// runbook's answer; before, the `cray-reds-init` Job writes them) and FAS's images (the
/// `cray-fas-loader` Job, or the Nexus reload). What a backup cannot hold still runs: the
/// checks that follow (they confirm the data is back), HMNFD's ORCA restarts (the nodes
/// subscribe again), and BOS's templates from the newest snapshot (they may be newer than the
/// backup; only missing ones are put back).
async fn perform(
    action: &Action,
    ctx: &StepContext<'_>,
    earlier: &Earlier,
) -> Result<StepOutcome, StepError> {
    let step = action.kind();
    if step.covered_by_restore()
        && let Some(reason) = earlier.recovery().covered_by_restore(ctx.mode)
    {
        return StepOutcome::with_state(State::Skipped, reason, serde_json::json!({}));
    }
    step.perform(ctx, earlier).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans stored by earlier versions (each step's `spec`) read back, and are written again
    /// exactly as they were: a run stored before a change to the kinds of step still resumes.
    #[test]
    fn stored_plans_read_back_and_are_written_the_same() {
        let stored = [
            r#"{"action":"restart_pods","selector":"app=x","timeout":"5m"}"#,
            r#"{"action":"ensure_pods_ready","selector":"app=x","timeout":"5m"}"#,
            r#"{"action":"recreate","object":{"api_version":"batch/v1","kind":"Job","plural":"jobs","name":"cray-reds-init"},"timeout":"10m"}"#,
            r#"{"action":"list_crus_sessions","after_restart":true}"#,
            r#"{"action":"check_cps_clients"}"#,
            r#"{"action":"verify_fas_images"}"#,
            r#"{"action":"reload_fas_from_nexus","timeout":"10m"}"#,
            r#"{"action":"restore_bss_from_backup","cluster":"cray-bss-bitnami-etcd"}"#,
            r#"{"action":"restore_bss_from_backup","cluster":"cray-bss-bitnami-etcd","procedure":"p"}"#,
            r#"{"action":"verify_bss_boot_parameters"}"#,
            r#"{"action":"resolve_orca_targets","compute_hostname":"nid{nid:06}-nmn","ncns":{"from":"hostlists","hostlists":["ncn-w00[1-3]"]}}"#,
            r#"{"action":"restart_orca","command":"systemctl restart cray-dvs-orca"}"#,
            r#"{"action":"verify_hmnfd_subscriptions","wait":"2m"}"#,
            r#"{"action":"restore_bos_templates"}"#,
            r#"{"action":"check_etcd","cluster":"cray-bss-etcd","endpoint":"","after":false}"#,
            r#"{"action":"assess_etcd","cluster":"cray-bss-etcd","mode":"auto","restore_max_age":"7days"}"#,
            r#"{"action":"assess_etcd","cluster":"c","mode":"restore","backup":"b","restore_max_age":"1day","discard_newer":true}"#,
            r#"{"action":"safety_snapshot","cluster":"cray-bss-etcd"}"#,
            r#"{"action":"recover_bitnami","cluster":"cray-bss-bitnami-etcd","timeout":"30m"}"#,
            r#"{"action":"recover_operator","cluster":"cray-bss-etcd","timeout":"30m"}"#,
        ];
        for json in stored {
            let value: Value = serde_json::from_str(json).unwrap();
            let action: Action = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(serde_json::to_value(&action).unwrap(), value, "{json}");
        }
    }
}

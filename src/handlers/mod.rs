//! One module per service, each a short declarative list of steps built from the primitives
//! in `cluster` (and later `csm` and `remote`). The runner stores the planned steps with the run
//! and executes them here, so a resumed run follows the plan it was created with.

mod bos;
mod bss;
mod cps;
mod crus;
mod externaldns;
mod fas;
mod hmnfd;
mod meds;
mod reds;
mod steps;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::recovery::operator::{RestoreSource, paired_deployment};
pub use crate::step::{Journal, StepContext, StepError, StepOutcome};
pub use steps::orca::NcnTargets;

use crate::{
    cluster::{Cluster, ClusterError, ObjectRef},
    config::{Config, JobRerun, PodRestart},
    etcd::layout::EtcdLayout,
    model::{EtcdMode, Service, State},
    release::{BssRepopulation, FasReload, Profile},
};

/// What one step does. Stored (as JSON) in the step's `spec` when the run is created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Delete the pods matching `selector` and wait until their replacements are Ready.
    RestartPods {
        selector: String,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
    /// Restart the pods matching `selector` only if they are not all Ready.
    EnsurePodsReady {
        selector: String,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
    /// Delete the object and create it again from its sanitized manifest (stored first), then
    /// wait until it completes (Job) or runs (EtcdCluster, StatefulSet).
    Recreate {
        object: ObjectRef,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
    /// Record the CRUS sessions; after the restart, sessions not completed need a person.
    ListCrusSessions { after_restart: bool },
    /// Find out whether clients had CPS content mounted, and which nodes must be rebooted.
    CheckCpsClients,
    /// Check that FAS lists firmware images again, and report what an etcd rebuild loses.
    VerifyFasImages,
    /// `POST /loader/nexus` on FAS (CSM 1.2+), then wait until the loader is `ready` again.
    ReloadFasFromNexus {
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
    /// BSS on CSM 1.5+: "Restore BSS from the ETCD backup", a procedure this service does not
    /// perform; the step names it and what it can see of the cluster.
    RestoreBssFromBackup { cluster: String },
    /// Check that BSS holds boot parameters again (the work of `cray-reds-init`).
    VerifyBssBootParameters,
    /// List the nodes that run ORCA: Ready compute nodes from HSM, and the NCNs.
    ResolveOrcaTargets {
        compute_hostname: String,
        ncns: NcnTargets,
    },
    /// Run `command` on every target of the step `resolve-targets` over SSH.
    RestartOrca { command: String },
    /// Wait (bounded) until every restarted node with a known xname is subscribed to HMNFD.
    VerifyHmnfdSubscriptions {
        #[serde(with = "humantime_serde")]
        wait: Duration,
    },
    /// Put back every BOS session template BOS no longer has, each from the newest snapshot
    /// that holds it.
    RestoreBosTemplates,
    /// Check the service's etcd cluster is healthy and count its keys: before the service is
    /// repopulated (the runbook's prerequisite), or after (`after`), against the count before.
    /// `endpoint` is the `[etcd] endpoint` override; empty: found from the cluster's layout.
    CheckEtcd {
        cluster: String,
        endpoint: String,
        after: bool,
    },
    /// Report the cluster's health and the backups seen, and decide what to do: nothing,
    /// restore (which backup) or rebuild (`mode`, `backup` as the run asked).
    AssessEtcd {
        cluster: String,
        mode: EtcdMode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backup: Option<String>,
        #[serde(with = "humantime_serde")]
        restore_max_age: Duration,
        /// The request accepts losing what the live cluster holds beyond the backup.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        discard_newer: bool,
    },
    /// Before a cluster that still answers is restored or rebuilt: a snapshot of it, kept
    /// where backups are kept and named so that it is listed as one.
    SafetySnapshot { cluster: String },
    /// Bitnami (CSM 1.5+): restore or rebuild the StatefulSet `cluster` as `etcd-assess`
    /// decided (scale to 0, environment, PVCs, scale back, healthy, environment back), within
    /// `[recovery] timeout` (`timeout` is what it was when the run was planned; an attempt uses
    /// the one in force, so a run that ran out of it can be resumed with a longer one); every
    /// ending that is not a success puts the StatefulSet back.
    RecoverBitnami {
        cluster: String,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
    /// etcd-operator (CSM ≤ 1.4): rebuild or restore the EtcdCluster `cluster` as `etcd-assess`
    /// decided, as the CSM 1.3 pages do it (rebuild: the service's Deployment scaled to 0, the
    /// EtcdCluster re-created from its stored manifest, the Deployment back at its replica
    /// count, on every ending; restore: an `EtcdRestore` for the restore operator), within
    /// `[recovery] timeout` (`timeout` as for `RecoverBitnami`).
    RecoverOperator {
        cluster: String,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    },
}

impl Action {
    /// Repopulates data a restore of the service's etcd cluster brings back: after a
    /// restore, the step ends `skipped`, saying so. That is BSS's boot parameters (on 1.5+ the
    /// restore is the runbook's answer; before, the `cray-reds-init` Job writes them) and FAS's
    /// images (the `cray-fas-loader` Job, or the Nexus reload): the loader Jobs a run re-creates
    /// only write their service's data into its etcd. What a backup cannot hold still runs:
    /// the checks that follow (they confirm the data is back), HMNFD's ORCA restarts (the
    /// nodes subscribe again), and BOS's templates from the newest snapshot (they may be
    /// newer than the backup; only missing ones are put back).
    fn covered_by_restore(&self) -> bool {
        match self {
            Action::RestoreBssFromBackup { .. } | Action::ReloadFasFromNexus { .. } => true,
            Action::Recreate { object, .. } => object.kind == "Job",
            _ => false,
        }
    }

    /// What the step's data, once it ended, tells the steps after it (see [`Decided`]).
    pub fn learn(&self, data: &Value, decided: &mut Decided) {
        match self {
            Action::AssessEtcd { .. } => decided.learn_assessment(data),
            Action::SafetySnapshot { .. } => decided.learn_safety_snapshot(data),
            _ => {}
        }
    }

    /// How long the runner lets the step run: the step timeout, or for the recovery steps what
    /// they bound themselves by `[recovery] timeout` (a listing and a download or a snapshot;
    /// the recovery and the time to put the StatefulSet back), so that the runner never cuts a
    /// recovery short without its put-back.
    pub fn time_limit(&self, config: &Config) -> Duration {
        let step_timeout = config.step_timeout;
        let margin = Duration::from_secs(180);
        match self {
            Action::RecoverBitnami { .. } | Action::RecoverOperator { .. } => {
                step_timeout.max(config.recovery.timeout.saturating_add(margin))
            }
            Action::AssessEtcd { .. } | Action::SafetySnapshot { .. } => step_timeout.max(
                config
                    .recovery
                    .timeout
                    .saturating_mul(2)
                    .saturating_add(margin),
            ),
            _ => step_timeout,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PlannedStep {
    pub name: String,
    pub action: Action,
}

impl PlannedStep {
    pub fn describe(&self) -> String {
        let wait = |t: &Duration| humantime::format_duration(*t).to_string();
        match &self.action {
            Action::RestartPods { selector, timeout } => format!(
                "delete the pods {selector:?} and wait up to {} until as many replacements are Ready",
                wait(timeout)
            ),
            Action::EnsurePodsReady { selector, timeout } => format!(
                "check that the pods {selector:?} are Ready; restart them (waiting up to {}) only if not",
                wait(timeout)
            ),
            Action::Recreate { object, timeout } => format!(
                "store the sanitized manifest of {} {}, delete it, create it again from the stored \
                 manifest and wait up to {} until it {}",
                object.kind,
                object.name,
                wait(timeout),
                if object.kind == "Job" { "completes" } else { "runs" }
            ),
            Action::ListCrusSessions { after_restart: false } => {
                "list the CRUS sessions and record their upgrade_id, state and messages".to_owned()
            }
            Action::ListCrusSessions { after_restart: true } => {
                "list the CRUS sessions again; sessions not completed need a look".to_owned()
            }
            Action::CheckCpsClients => {
                "ask CPS whether content is in use; list the nodes that must be rebooted to re-mount".to_owned()
            }
            Action::VerifyFasImages => {
                "check that FAS lists firmware images; report lost actions and snapshots".to_owned()
            }
            Action::ReloadFasFromNexus { timeout } => format!(
                "POST /loader/nexus on FAS (\"Load Firmware from Nexus\") and wait up to {} until \
                 the loader is ready again",
                wait(timeout)
            ),
            Action::RestoreBssFromBackup { cluster } => format!(
                "BSS is restored from the etcd backup of {cluster} (\"Restore an etcd Cluster from \
                 a Backup\"): skipped when this run restored it, else report its newest backup \
                 and how to restore it"
            ),
            Action::CheckEtcd {
                cluster,
                endpoint,
                after: false,
            } => format!(
                "check that the etcd cluster {cluster} ({}) is healthy and count its keys; \
                 stop here if it is not",
                if endpoint.is_empty() {
                    "its client Service"
                } else {
                    endpoint
                }
            ),
            Action::CheckEtcd {
                cluster,
                after: true,
                ..
            } => format!("count the keys of {cluster} again, to see the data came back"),
            Action::VerifyBssBootParameters => {
                "check that BSS holds boot parameters again".to_owned()
            }
            Action::ResolveOrcaTargets {
                compute_hostname,
                ncns,
            } => format!(
                "list the Ready compute nodes in HSM (host name {compute_hostname:?}) and {}",
                ncns.describe()
            ),
            Action::RestartOrca { command } => format!(
                "run {command:?} on every target over SSH (pdsh-like fan-out); every host must succeed"
            ),
            Action::VerifyHmnfdSubscriptions { wait: limit } => format!(
                "wait up to {} until every restarted node is subscribed to HMNFD; list those that are not",
                wait(limit)
            ),
            Action::RestoreBosTemplates => {
                "restore every session template BOS lacks, each from the newest snapshot that \
                 holds it; leave existing ones untouched"
                    .to_owned()
            }
            Action::AssessEtcd {
                cluster,
                mode,
                backup,
                restore_max_age,
                discard_newer,
            } => {
                let weigh = if *discard_newer {
                    "; what the cluster holds beyond the backup is discarded, as the request \
                     accepts (it is kept in the safety snapshot)"
                } else {
                    "; stop, changing nothing, if the cluster (or a member) holds data newer than \
                     the backup"
                };
                match (mode, backup) {
                    (EtcdMode::Restore, Some(backup)) => format!(
                        "report the health of {cluster}; prove backup {backup} is an etcd \
                         database and restore it{weigh}"
                    ),
                    (EtcdMode::Restore, None) => format!(
                        "report the health of {cluster} and its backups; restore it from the \
                         newest backup proven to be an etcd database{weigh}"
                    ),
                    (EtcdMode::Auto, _) => format!(
                        "report the health of {cluster} and its backups; if it serves (a quorum \
                         answers reads), leave it alone; otherwise restore it from the newest \
                         usable backup younger than {}, unless a member holds newer data, else \
                         rebuild it if no member holds any",
                        wait(restore_max_age)
                    ),
                    _ => format!(
                        "report the health of {cluster}; rebuild it{}",
                        if *discard_newer {
                            ", discarding what it holds (kept in the safety snapshot)"
                        } else {
                            "; stop, changing nothing, if it holds keys"
                        }
                    ),
                }
            }
            Action::SafetySnapshot { cluster } => format!(
                "if {cluster} still answers, take a snapshot of it through its gateway and keep \
                 it where backups are kept, listed as a backup (repopulator-<time>-<run id>)"
            ),
            Action::RecoverBitnami { cluster, timeout } => format!(
                "as decided: store the replica count and etcd environment of StatefulSet \
                 {cluster}, scale it to 0, set ETCD_INITIAL_CLUSTER_STATE=new (and the snapshot \
                 to start from), delete its data PVCs, scale it back, wait up to {} until every \
                 member is Ready and the cluster healthy, set the environment back; any other \
                 ending puts the replicas and environment back",
                wait(timeout)
            ),
            Action::RecoverOperator { cluster, timeout } => {
                let deployment = paired_deployment(cluster).unwrap_or_default();
                format!(
                    "as decided: rebuild the EtcdCluster {cluster} (store the replica count of \
                     Deployment {deployment} and scale it to 0; store the sanitized manifest, \
                     delete the cluster, wait until its pods are gone, create it again and wait \
                     until its members run and etcd is healthy; scale {deployment} back, on \
                     every ending), or restore it (create the EtcdRestore {cluster}, wait until \
                     the restore operator has replaced the cluster and its members run, delete \
                     the EtcdRestore), within {}",
                    wait(timeout)
                )
            }
        }
    }
}

fn step(name: &str, action: Action) -> PlannedStep {
    PlannedStep {
        name: name.to_owned(),
        action,
    }
}

fn restart_pods(name: &str, restart: &PodRestart) -> PlannedStep {
    step(
        name,
        Action::RestartPods {
            selector: restart.selector.clone(),
            timeout: restart.timeout,
        },
    )
}

fn rerun_job(name: &str, rerun: &JobRerun) -> PlannedStep {
    step(
        name,
        Action::Recreate {
            object: ObjectRef::job(&rerun.job),
            timeout: rerun.timeout,
        },
    )
}

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

/// The names of the etcd steps around a service's own steps.
pub const CHECK_ETCD: &str = "check-etcd-cluster";
pub const RECOUNT_ETCD: &str = "recount-etcd-keys";
pub use crate::recovery::{Decided, ETCD_ASSESS, ETCD_RECOVER, ETCD_SAFETY_SNAPSHOT};

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
            Action::CheckEtcd {
                cluster: cluster.clone(),
                endpoint: endpoint.clone(),
                after,
            },
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
) -> Vec<PlannedStep> {
    let (cluster_name, timeout) = (cluster.to_owned(), config.recovery.timeout);
    let recover = match layout {
        EtcdLayout::Bitnami => Action::RecoverBitnami {
            cluster: cluster_name,
            timeout,
        },
        EtcdLayout::Operator => Action::RecoverOperator {
            cluster: cluster_name,
            timeout,
        },
    };
    vec![
        step(
            ETCD_ASSESS,
            Action::AssessEtcd {
                cluster: cluster.to_owned(),
                mode: etcd,
                backup: backup.map(str::to_owned),
                restore_max_age: config.recovery.restore_max_age,
                discard_newer,
            },
        ),
        step(
            ETCD_SAFETY_SNAPSHOT,
            Action::SafetySnapshot {
                cluster: cluster.to_owned(),
            },
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
        Ok(Action::RecoverBitnami { .. }) => {
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
        .filter(|s| plan(*s, &config, profile, EtcdMode::Check, None, false).is_some())
        .collect()
}

/// Executes one step. Kubernetes requests retried after transient errors are counted and
/// named in the outcome. A dry run is a plan: what a real run would leave to a person ends the
/// step `succeeded` (the message says what it would be), and what would stop a real run ends it
/// `failed`, saying so.
pub async fn execute(
    action: &Action,
    ctx: &StepContext<'_>,
    decided: &Decided,
) -> Result<StepOutcome, StepError> {
    let cluster = ctx.cluster.counting();
    let counted = StepContext {
        run_id: ctx.run_id,
        cluster: &cluster,
        csm: ctx.csm,
        dry_run: ctx.dry_run,
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
    let result = perform(action, &counted, decided).await;
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
    if ctx.dry_run { as_plan(result) } else { result }
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

async fn perform(
    action: &Action,
    ctx: &StepContext<'_>,
    decided: &Decided,
) -> Result<StepOutcome, StepError> {
    if action.covered_by_restore()
        && let Some(reason) = decided.covered_by_restore(ctx.dry_run)
    {
        return StepOutcome::with_state(State::Skipped, reason, serde_json::json!({}));
    }
    match action {
        Action::RestartPods { selector, timeout } => {
            steps::pods::restart(ctx, selector, *timeout).await
        }
        Action::EnsurePodsReady { selector, timeout } => {
            steps::pods::ensure_ready(ctx, selector, *timeout).await
        }
        Action::Recreate { object, timeout } => {
            crate::step::recreate::run(ctx, object, *timeout).await
        }
        Action::ListCrusSessions { after_restart } => {
            steps::csm_checks::list_crus_sessions(ctx, *after_restart).await
        }
        Action::CheckCpsClients => steps::csm_checks::check_cps_clients(ctx).await,
        Action::VerifyFasImages => steps::csm_checks::verify_fas_images(ctx).await,
        Action::ReloadFasFromNexus { timeout } => {
            steps::fas::reload_from_nexus(ctx, *timeout).await
        }
        Action::RestoreBssFromBackup { cluster } => {
            steps::bss::restore_required(ctx, cluster).await
        }
        Action::VerifyBssBootParameters => steps::csm_checks::verify_bss_boot_parameters(ctx).await,
        Action::ResolveOrcaTargets {
            compute_hostname,
            ncns,
        } => steps::orca::resolve_targets(ctx, compute_hostname, ncns).await,
        Action::RestartOrca { command } => steps::orca::restart(ctx, command).await,
        Action::VerifyHmnfdSubscriptions { wait } => {
            steps::orca::verify_subscriptions(ctx, *wait).await
        }
        Action::RestoreBosTemplates => steps::bos::restore_templates(ctx).await,
        Action::CheckEtcd {
            cluster,
            endpoint,
            after,
        } => steps::etcd::check(ctx, decided, cluster, endpoint, *after).await,
        Action::AssessEtcd {
            cluster,
            mode,
            backup,
            restore_max_age,
            discard_newer,
        } => {
            crate::recovery::assess::assess(
                ctx,
                cluster,
                *mode,
                backup.as_deref(),
                *restore_max_age,
                *discard_newer,
            )
            .await
        }
        Action::SafetySnapshot { cluster } => {
            crate::recovery::safety_snapshot::safety_snapshot(ctx, decided, cluster).await
        }
        Action::RecoverBitnami { cluster, .. } => {
            crate::recovery::bitnami::run(ctx, decided, cluster, ctx.recovery.timeout).await
        }
        Action::RecoverOperator { cluster, .. } => {
            crate::recovery::operator::run(ctx, decided, cluster, ctx.recovery.timeout).await
        }
    }
}

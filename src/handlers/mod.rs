//! One module per service, each a short declarative list of steps built from the primitives
//! in `cluster` (and later `csm` and `remote`). The runner stores the planned steps with the run
//! and executes them here, so a resumed run follows the plan it was created with.

mod meds;
mod reds;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{Cluster, ClusterError, RestartPlan},
    config::{Config, PodRestart},
    model::{Service, State},
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
}

#[derive(Clone, Debug)]
pub struct PlannedStep {
    pub name: String,
    pub action: Action,
}

impl PlannedStep {
    pub fn describe(&self) -> String {
        match &self.action {
            Action::RestartPods { selector, timeout } => format!(
                "delete the pods {selector:?} and wait up to {} until as many replacements are Ready",
                humantime::format_duration(*timeout)
            ),
        }
    }
}

fn restart_pods(name: &str, restart: &PodRestart) -> PlannedStep {
    PlannedStep {
        name: name.to_owned(),
        action: Action::RestartPods {
            selector: restart.selector.clone(),
            timeout: restart.timeout,
        },
    }
}

/// What the runbook says about a service, in one line.
pub fn description(service: Service) -> &'static str {
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

/// The steps a run takes for `service`, or `None` when this build has no handler for it.
pub fn plan(service: Service, config: &Config) -> Option<Vec<PlannedStep>> {
    match service {
        Service::Reds => Some(reds::steps(config)),
        Service::Meds => Some(meds::steps(config)),
        _ => None,
    }
}

/// The services this build can repopulate.
pub fn implemented() -> Vec<Service> {
    let config = Config::default();
    Service::ALL
        .into_iter()
        .filter(|s| plan(*s, &config).is_some())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not record the step's data: {0}")]
    Journal(String),
    #[error("stored step data is unreadable: {0}")]
    BadData(String),
}

impl StepError {
    pub fn is_cancelled(&self) -> bool {
        matches!(self, StepError::Cluster(ClusterError::Cancelled { .. }))
    }
}

/// Where a running step records what it must not lose (implemented by the runner on the store).
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// Durably stores the step's data; returns once it is on disk.
    async fn save(&self, data: &Value) -> Result<(), StepError>;
    /// Appends a line to the run's log.
    async fn log(&self, message: &str);
}

pub struct StepContext<'a> {
    pub cluster: &'a Cluster,
    pub dry_run: bool,
    pub cancel: &'a CancellationToken,
    pub journal: &'a dyn Journal,
    /// What this step saved in an earlier attempt (a resume after a crash).
    pub saved: Option<Value>,
}

#[derive(Debug)]
pub struct StepOutcome {
    /// `Succeeded`, or `ActionRequired` when a person still has work to do.
    pub state: State,
    pub message: String,
    pub data: Value,
}

pub async fn execute(action: &Action, ctx: &StepContext<'_>) -> Result<StepOutcome, StepError> {
    match action {
        Action::RestartPods { selector, timeout } => {
            let plan = ctx.cluster.plan_restart(selector).await?;
            ctx.journal.save(&json!({ "plan": &plan })).await?;
            restart_planned(plan, ctx, *timeout).await
        }
    }
}

async fn restart_planned(
    plan: RestartPlan,
    ctx: &StepContext<'_>,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let names: Vec<&str> = plan.pods.iter().map(|p| p.name.as_str()).collect();
    ctx.journal
        .log(&format!(
            "{} pod(s) {}: {}",
            names.len(),
            if ctx.dry_run {
                "would be deleted (dry run)"
            } else {
                "deleting"
            },
            names.join(", ")
        ))
        .await;
    let report = ctx
        .cluster
        .restart(plan, ctx.dry_run, timeout, ctx.cancel)
        .await?;
    let message = if report.dry_run {
        format!(
            "dry run: would delete {} pod(s) matching {:?} and wait for {} Ready replacement(s)",
            report.plan.pods.len(),
            report.plan.selector,
            report.plan.expected_ready
        )
    } else {
        let new: Vec<&str> = report.new_pods.iter().map(|p| p.name.as_str()).collect();
        format!(
            "restarted {} pod(s); Ready now: {}",
            report.plan.pods.len(),
            new.join(", ")
        )
    };
    let data = serde_json::to_value(&report).map_err(|e| StepError::BadData(e.to_string()))?;
    Ok(StepOutcome {
        state: State::Succeeded,
        message,
        data,
    })
}

//! Pod restarts (REDS, MEDS, CRUS) and the "make sure it is up" check (CPS).

use std::time::Duration;

use serde_json::json;

use crate::{
    cluster::ObjectRef,
    step::{StepContext, StepError, StepOutcome},
};

use serde::{Deserialize, Serialize};

use crate::handlers::kind::{Earlier, StepKind, wait};

/// Delete the pods matching `selector` and wait until their replacements are Ready.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartPods {
    pub selector: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl StepKind for RestartPods {
    fn describe(&self) -> String {
        let Self { selector, timeout } = self;
        format!(
            "delete the pods {selector:?} and wait up to {} until as many replacements are Ready",
            wait(timeout)
        )
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        restart(ctx, &self.selector, self.timeout).await
    }
}

/// Restart the pods matching `selector` only if they are not all Ready.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsurePodsReady {
    pub selector: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl StepKind for EnsurePodsReady {
    fn describe(&self) -> String {
        let Self { selector, timeout } = self;
        format!(
            "check that the pods {selector:?} are Ready; restart them (waiting up to {}) only if not",
            wait(timeout)
        )
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        ensure_ready(ctx, &self.selector, self.timeout).await
    }
}

pub async fn restart(
    ctx: &StepContext<'_>,
    selector: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let plan = ctx.cluster.plan_restart(selector).await?;
    ctx.journal.save(&json!({ "plan": &plan })).await?;
    let names: Vec<String> = plan.pods.iter().map(|p| p.name.clone()).collect();
    ctx.journal
        .log(&format!(
            "{} pod(s) {}: {}",
            names.len(),
            if ctx.mode.is_dry_run() {
                "would be deleted (dry run)"
            } else {
                "deleting"
            },
            names.join(", ")
        ))
        .await;
    for pod in &plan.pods {
        ctx.announce(
            &ObjectRef::pod(&pod.name),
            &pod.uid,
            false,
            "Delete",
            "deleting this pod so that its replacement loads its data from the rebuilt etcd cluster",
        )
        .await;
    }
    let report = ctx
        .cluster
        .restart(plan, ctx.mode, timeout, ctx.cancel)
        .await?;
    for pod in &report.new_pods {
        ctx.announce(
            &ObjectRef::pod(&pod.name),
            &pod.uid,
            false,
            "Restart",
            &format!("Ready; replaces {}", names.join(", ")),
        )
        .await;
    }
    let message = if report.dry_run {
        format!(
            "dry run: would delete {} pod(s) matching {:?} ({}) and wait for {} Ready replacement(s)",
            report.plan.pods.len(),
            report.plan.selector,
            names.join(", "),
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
    StepOutcome::done(message, &report)
}

pub async fn ensure_ready(
    ctx: &StepContext<'_>,
    selector: &str,
    timeout: Duration,
) -> Result<StepOutcome, StepError> {
    let status = ctx.cluster.pods_ready(selector).await?;
    if status.all_ready() {
        return StepOutcome::done(
            format!(
                "all {} pod(s) matching {selector:?} are Ready; nothing restarted",
                status.ready.len()
            ),
            json!({ "ready": status.ready, "restarted": false }),
        );
    }
    ctx.journal
        .log(&format!(
            "not Ready: {}; restarting the pods",
            status.not_ready.join(", ")
        ))
        .await;
    let mut outcome = restart(ctx, selector, timeout).await?;
    outcome.data["restarted"] = json!(true);
    outcome.data["not_ready_before"] = json!(status.not_ready);
    Ok(outcome)
}

//! HMNFD resubscription: find the nodes that run ORCA (`cray-dvs-orca`), restart it on all of
//! them over SSH, and check that each subscribed to HMNFD again.
//!
//! The runbook builds compute host names from `sat status` (`nid%06d-nmn` of the Ready compute
//! nodes) and names the NCNs by pdsh ranges; here the compute nodes come from HSM directly and
//! the NCNs from hostlists or, optionally, from HSM as well.

use std::{collections::BTreeSet, fmt::Write as _, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    config::HostnameTemplate,
    csm::{ComponentFilter, HsmComponent},
    remote::{self, hostlist},
    step::{StepContext, StepError, StepOutcome},
};

use crate::handlers::kind::{Earlier, StepKind, wait};

/// List the nodes that run ORCA: Ready compute nodes from HSM, and the NCNs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolveOrcaTargets {
    pub compute_hostname: String,
    pub ncns: NcnTargets,
}

#[async_trait::async_trait]
impl StepKind for ResolveOrcaTargets {
    fn describe(&self) -> String {
        let Self {
            compute_hostname,
            ncns,
        } = self;
        format!(
            "list the Ready compute nodes in HSM (host name {compute_hostname:?}) and {}",
            ncns.describe()
        )
    }

    fn learn(&self, data: &Value, earlier: &mut Earlier) {
        earlier.insert(ResolvedTargets(
            serde_json::from_value(data.clone()).map_err(|e| e.to_string()),
        ));
    }

    async fn perform(&self, ctx: &StepContext<'_>, _: &Earlier) -> Result<StepOutcome, StepError> {
        resolve_targets(ctx, &self.compute_hostname, &self.ncns).await
    }
}

/// Run `command` on every target of the step `resolve-targets` over SSH.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartOrca {
    pub command: String,
}

#[async_trait::async_trait]
impl StepKind for RestartOrca {
    fn describe(&self) -> String {
        let command = &self.command;
        format!(
            "run {command:?} on every target over SSH (pdsh-like fan-out); every host must succeed"
        )
    }

    async fn perform(
        &self,
        ctx: &StepContext<'_>,
        earlier: &Earlier,
    ) -> Result<StepOutcome, StepError> {
        restart(ctx, earlier, &self.command).await
    }
}

/// Wait (bounded) until every restarted node with a known xname is subscribed to HMNFD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyHmnfdSubscriptions {
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
}

#[async_trait::async_trait]
impl StepKind for VerifyHmnfdSubscriptions {
    fn describe(&self) -> String {
        format!(
            "wait up to {} until every restarted node is subscribed to HMNFD; list those that are not",
            wait(&self.wait)
        )
    }

    async fn perform(
        &self,
        ctx: &StepContext<'_>,
        earlier: &Earlier,
    ) -> Result<StepOutcome, StepError> {
        verify_subscriptions(ctx, earlier, self.wait).await
    }
}

/// The name of the step whose data lists the targets (see `handlers::hmnfd`).
const TARGETS_STEP: &str = "resolve-targets";
/// How often HMNFD is asked again while waiting for subscriptions.
const VERIFY_INTERVAL: Duration = Duration::from_secs(2);

/// Where the NCN targets come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum NcnTargets {
    /// pdsh-style hostlist expressions, as in the runbook.
    Hostlists { hostlists: Vec<String> },
    /// Ready HSM nodes with role Management and one of `subroles`, named by `hostname`.
    Discover {
        subroles: Vec<String>,
        hostname: String,
    },
}

impl NcnTargets {
    pub fn describe(&self) -> String {
        match self {
            NcnTargets::Hostlists { hostlists } => {
                format!("the NCNs {}", hostlists.join(" "))
            }
            NcnTargets::Discover { subroles, hostname } => format!(
                "the Ready Management nodes with subrole {} in HSM (host name {hostname:?})",
                subroles.join(" or ")
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetRole {
    Compute,
    Ncn,
}

/// One node to restart ORCA on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub host: String,
    pub role: TargetRole,
    /// Known for nodes from HSM; hostlist NCNs have none, so their subscription is not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nid: Option<i64>,
}

/// What `resolve-targets` stores.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Targets {
    targets: Vec<Target>,
    /// Ready compute nodes the template could not name (no NID in HSM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unnamed: Vec<String>,
}

impl Targets {
    fn hosts(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.host.clone()).collect()
    }
}

fn template(text: &str) -> Result<HostnameTemplate, StepError> {
    HostnameTemplate::parse(text)
        .map_err(|problem| StepError::Failed(format!("host name template: {problem}")))
}

/// Ready compute nodes (by NID) named by `compute_hostname`, then the NCNs.
pub async fn resolve_targets(
    ctx: &StepContext<'_>,
    compute_hostname: &str,
    ncns: &NcnTargets,
) -> Result<StepOutcome, StepError> {
    let compute_template = template(compute_hostname)?;
    let mut computes = ctx
        .csm
        .hsm
        .list_components(
            &ComponentFilter::nodes()
                .with_role("Compute")
                .with_state("Ready"),
        )
        .await?;
    computes.sort_by(|a, b| a.nid.cmp(&b.nid).then_with(|| a.id.cmp(&b.id)));
    let mut resolved = Targets::default();
    let push = |resolved: &mut Targets, node: &HsmComponent, host: Option<String>, role| match host
    {
        Some(host) => resolved.targets.push(Target {
            host,
            role,
            xname: Some(node.id.clone()),
            nid: node.nid,
        }),
        None => resolved.unnamed.push(node.id.clone()),
    };
    for node in &computes {
        push(
            &mut resolved,
            node,
            compute_template.render(node),
            TargetRole::Compute,
        );
    }
    match ncns {
        NcnTargets::Hostlists { hostlists } => {
            for expr in hostlists {
                let hosts = hostlist::expand(expr).map_err(|e| {
                    StepError::Failed(format!("NCN hostlist {expr:?} is invalid: {e}"))
                })?;
                resolved
                    .targets
                    .extend(hosts.into_iter().map(|host| Target {
                        host,
                        role: TargetRole::Ncn,
                        xname: None,
                        nid: None,
                    }));
            }
        }
        NcnTargets::Discover { subroles, hostname } => {
            let ncn_template = template(hostname)?;
            let mut filter = ComponentFilter::nodes()
                .with_role("Management")
                .with_state("Ready");
            for subrole in subroles {
                filter = filter.with_subrole(subrole.clone());
            }
            let mut found = ctx.csm.hsm.list_components(&filter).await?;
            found.sort_by(|a, b| a.id.cmp(&b.id));
            for node in &found {
                push(
                    &mut resolved,
                    node,
                    ncn_template.render(node),
                    TargetRole::Ncn,
                );
            }
        }
    }
    // A name listed twice would be restarted twice; keep the first (HSM's, with its xname).
    let mut seen = BTreeSet::new();
    resolved.targets.retain(|t| seen.insert(t.host.clone()));
    let data = serde_json::to_value(&resolved).map_err(|e| StepError::BadData(e.to_string()))?;
    ctx.journal.save(&data).await?;

    let hosts = resolved.hosts();
    let count = |role| resolved.targets.iter().filter(|t| t.role == role).count();
    let mut message = format!(
        "{} {} host(s) ({} compute, {} NCN): {}",
        if ctx.mode.is_dry_run() {
            "dry run: would contact"
        } else {
            "will contact"
        },
        hosts.len(),
        count(TargetRole::Compute),
        count(TargetRole::Ncn),
        hostlist::compress(&hosts)
    );
    if !resolved.unnamed.is_empty() {
        let _ = write!(
            message,
            "; Ready compute node(s) without a NID in HSM, {}: {}",
            if ctx.mode.is_dry_run() {
                "would not be contacted"
            } else {
                "not contacted"
            },
            resolved.unnamed.join(", ")
        );
        return StepOutcome::action_required(message, data);
    }
    StepOutcome::done(message, data)
}

fn targets(earlier: &Earlier) -> Result<Targets, StepError> {
    match earlier.get::<ResolvedTargets>() {
        Some(ResolvedTargets(Ok(targets))) => Ok(targets.clone()),
        Some(ResolvedTargets(Err(unreadable))) => Err(StepError::BadData(format!(
            "targets of {TARGETS_STEP}: {unreadable}"
        ))),
        None => Err(StepError::BadData(format!(
            "the step {TARGETS_STEP} stored no targets; start a new run"
        ))),
    }
}

/// The targets `resolve-targets` listed, for the steps after it.
struct ResolvedTargets(Result<Targets, String>);

/// Runs `command` on every target; succeeds only if every host did.
pub async fn restart(
    ctx: &StepContext<'_>,
    earlier: &Earlier,
    command: &str,
) -> Result<StepOutcome, StepError> {
    let targets = targets(earlier)?;
    let hosts = targets.hosts();
    if ctx.mode.is_dry_run() {
        // What the fan-out would trip on before reaching any host: a missing or unreadable
        // identity or known_hosts file.
        let fingerprint = remote::preflight(ctx.ssh).map_err(|problems| {
            StepError::Failed(format!(
                "SSH fan-out could not start: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        return StepOutcome::done(
            format!(
                "dry run: would run {command:?} as {} on {} host(s), {} at a time: {} (SSH \
                 identity {} ({fingerprint}) and known_hosts {} readable)",
                ctx.ssh.user,
                hosts.len(),
                ctx.ssh.fanout,
                hostlist::compress(&hosts),
                ctx.ssh.identity_file.display(),
                ctx.ssh.known_hosts_file.display(),
            ),
            json!({
                "hosts": hosts, "command": command, "dry_run": true,
                "identity_fingerprint": fingerprint,
            }),
        );
    }
    if hosts.is_empty() {
        return StepOutcome::done("no hosts to contact", json!({ "results": [] }));
    }
    ctx.journal
        .log(&format!(
            "running {command:?} on {} host(s), {} at a time",
            hosts.len(),
            ctx.ssh.fanout
        ))
        .await;
    let report = remote::run(ctx.ssh, &hosts, command, Some(ctx.cancel.clone())).await?;
    let summary = report.summary();
    let mut data = serde_json::to_value(&report).map_err(|e| StepError::BadData(e.to_string()))?;
    data["summary"] = json!(summary);
    data["command"] = json!(command);
    ctx.journal.save(&data).await?;
    if ctx.cancel.is_cancelled() {
        return Err(StepError::Cancelled(format!(
            "restarting cray-dvs-orca ({summary})"
        )));
    }
    if report.all_succeeded() {
        return StepOutcome::done(
            format!(
                "ran {command:?} on all {} host(s) in {}",
                hosts.len(),
                humantime::format_duration(round(report.duration))
            ),
            data,
        );
    }
    StepOutcome::failed(summary, data)
}

fn round(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Waits (bounded by `wait`) until every target with a known xname has a subscription.
pub async fn verify_subscriptions(
    ctx: &StepContext<'_>,
    earlier: &Earlier,
    wait: Duration,
) -> Result<StepOutcome, StepError> {
    let targets = targets(earlier)?;
    let expected: Vec<&Target> = targets
        .targets
        .iter()
        .filter(|t| t.xname.is_some())
        .collect();
    let unchecked: Vec<&str> = targets
        .targets
        .iter()
        .filter(|t| t.xname.is_none())
        .map(|t| t.host.as_str())
        .collect();
    let deadline = tokio::time::Instant::now() + wait;
    let mut reads = 0u32;
    let missing = loop {
        let subscribed = ctx.csm.hmnfd.subscriber_nodes().await?;
        reads += 1;
        let missing: Vec<&Target> = expected
            .iter()
            .copied()
            .filter(|t| t.xname.as_ref().is_some_and(|x| !subscribed.contains(x)))
            .collect();
        // A dry run restarted nothing, so there is nothing to wait for.
        let now = tokio::time::Instant::now();
        if missing.is_empty() || ctx.mode.is_dry_run() || now >= deadline {
            break missing;
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                return Err(StepError::Cancelled("waiting for HMNFD subscriptions".to_owned()));
            }
            // Polling a remote REST API against a deadline: HMNFD offers no watch.
            _ = tokio::time::sleep(VERIFY_INTERVAL.min(deadline - now)) => {}
        }
    };
    let describe = |t: &Target| match &t.xname {
        Some(xname) => format!("{xname} ({})", t.host),
        None => t.host.clone(),
    };
    let data = json!({
        "checked": expected.len(),
        "missing": missing.iter().map(|t| json!({"host": t.host, "xname": t.xname})).collect::<Vec<_>>(),
        "not_checked": unchecked,
        "reads": reads,
    });
    let unchecked_note = if unchecked.is_empty() {
        String::new()
    } else {
        format!(
            "; not checked (no xname known for hostlist NCNs): {}",
            hostlist::compress(&unchecked.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        )
    };
    if missing.is_empty() {
        return StepOutcome::done(
            format!(
                "all {} node(s) with a known xname are subscribed to HMNFD{unchecked_note}",
                expected.len()
            ),
            data,
        );
    }
    let names: Vec<String> = missing.iter().map(|t| describe(t)).collect();
    if ctx.mode.is_dry_run() {
        return StepOutcome::done(
            format!(
                "dry run: {} of {} node(s) have no HMNFD subscription now: {}",
                missing.len(),
                expected.len(),
                names.join(", ")
            ),
            data,
        );
    }
    StepOutcome::action_required(
        format!(
            "{} of {} node(s) have no HMNFD subscription {} after cray-dvs-orca was restarted: \
             {}. Check `systemctl status cray-dvs-orca` on them and restart it (ORCA subscribes \
             when it starts){unchecked_note}",
            missing.len(),
            expected.len(),
            format_args!("{}s", wait.as_secs()),
            names.join(", ")
        ),
        data,
    )
}

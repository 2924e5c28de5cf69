//! `POST /webhooks/alertmanager`: a resolved etcd alert means the cluster was rebuilt and is
//! healthy again, so the services whose data lived in it need their data back.

use std::{collections::BTreeMap, sync::Once};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::WebhookError;
use crate::{
    api::{
        auth::Principal,
        problem::{
            ApiError, BodyProblems, PROBLEM, Problem, RawBody, content_type, json_from_bytes,
        },
        state::SharedState,
    },
    config::AlertmanagerConfig,
    metrics::WebhookOutcome,
    model::{EtcdMode, Service},
    runner::{Created, RunRequest, RunnerError},
};

/// Alertmanager's webhook payload (version 4). Fields the service does not use are accepted
/// and ignored, so newer Alertmanagers keep working.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    /// Payload version; must be "4".
    #[schema(pattern = "^4$")]
    pub version: String,
    /// Identifies the alert group.
    pub group_key: String,
    /// `firing` or `resolved`, of the group.
    pub status: AlertStatus,
    pub receiver: Option<String>,
    pub alerts: Vec<Alert>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339; with `groupKey` and `fingerprint` it identifies one occurrence of the alert.
    pub starts_at: String,
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: Option<String>,
    pub fingerprint: String,
}

/// What became of one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertOutcome {
    /// A run was started (`run_id`).
    Started,
    /// A firing alert for a cluster `webhooks.recover_clusters` does not list: it starts no
    /// run (the cluster is not rebuilt yet).
    Firing,
    /// Its `alertname` is not in `webhooks.alertmanager.alertnames`.
    NotSelected,
    /// None of the cluster labels is set.
    NoClusterLabel,
    /// The etcd cluster is not in `webhooks.alertmanager.clusters`.
    UnmappedCluster,
    /// This occurrence of the alert already started `run_id`.
    Duplicate,
    /// A service is being repopulated by `run_id` already.
    Busy,
    /// This build cannot repopulate one of the services.
    NotSupported,
    /// The run would rebuild or restore etcd clusters other than the alert's, which alone
    /// `webhooks.recover_clusters` confirms (the detail names them).
    NotConfirmed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertResult {
    pub fingerprint: String,
    pub alertname: Option<String>,
    pub etcd_cluster: Option<String>,
    pub outcome: AlertOutcome,
    /// The run started, the earlier run of a duplicate, or the active run of a busy service;
    /// absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub run_id: Option<Uuid>,
    pub services: Vec<Service>,
    pub detail: String,
}

/// What a webhook delivery did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertmanagerResponse {
    /// Runs this delivery started.
    pub runs: Vec<Uuid>,
    /// Per alert, in the order of the payload: the run started, or why none was.
    pub alerts: Vec<AlertResult>,
}

/// Start runs from Alertmanager: each `resolved` alert naming a known etcd cluster starts a run
/// for the services on that cluster; a `firing` one does only for a cluster that
/// `webhooks.recover_clusters` lists, and that run first restores or rebuilds the cluster with
/// the mode listed.
///
/// Alertmanager authenticates like any API client, with a bearer token holding the `write`
/// role (`http_config.authorization.credentials_file` in its receiver, or `oauth2` client
/// credentials in JWT mode). The same alert occurrence (`groupKey`, `fingerprint`, `startsAt`)
/// never starts two runs, so redeliveries are harmless.
#[utoipa::path(post, path = "/webhooks/alertmanager", tag = "webhooks", operation_id = "alertmanager_webhook",
    request_body(content = AlertmanagerPayload, content_type = "application/json", description = "Alertmanager webhook payload, version 4"),
    responses(
        (status = 200, description = "Nothing started; `alerts` says why for each alert", body = AlertmanagerResponse),
        (status = 202, description = "At least one run started", body = AlertmanagerResponse),
        (status = 400, description = "Malformed or empty JSON", body = Problem, content_type = PROBLEM),
        BodyProblems,
        (status = 422, description = "Not an Alertmanager version 4 payload", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Shutting down; Alertmanager retries", body = Problem, content_type = PROBLEM),
    ))]
pub async fn receive(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Response {
    let result = match body {
        Ok(RawBody(body)) => alertmanager_delivery(&state, &principal, &headers, &body).await,
        Err(err) => Err(err.into()),
    };
    let outcome = match &result {
        Ok(response) if response.runs.is_empty() => WebhookOutcome::Ignored,
        Ok(_) => WebhookOutcome::Started,
        Err(err) => err.outcome(),
    };
    state
        .runner
        .metrics()
        .webhook_delivery("alertmanager", outcome);
    match result {
        Ok(response) => {
            let status = if response.runs.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (status, Json(response)).into_response()
        }
        Err(err) => err.into_response(),
    }
}

async fn alertmanager_delivery(
    state: &SharedState,
    principal: &Principal,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<AlertmanagerResponse, WebhookError> {
    let payload: AlertmanagerPayload = json_from_bytes(content_type(headers).as_deref(), body)?;
    if payload.version != "4" {
        return Err(ApiError::InvalidBody {
            detail: format!(
                "Alertmanager payload version {:?} is not supported (expected \"4\")",
                payload.version
            ),
            field: Some("version".to_owned()),
        }
        .into());
    }
    tracing::info!(caller = %principal.name, group_key = %payload.group_key, alerts = payload.alerts.len(), "Alertmanager delivery");
    let rules = &state.webhooks.alertmanager;
    let mut response = AlertmanagerResponse {
        runs: Vec::new(),
        alerts: Vec::new(),
    };
    for alert in &payload.alerts {
        let result = handle_alert(state, rules, &payload.group_key, alert).await?;
        if result.outcome == AlertOutcome::Started
            && let Some(id) = result.run_id
        {
            response.runs.push(id);
        }
        response.alerts.push(result);
    }
    Ok(response)
}

/// Says once per process how to make Alertmanager's alerts start runs: with no alert names
/// configured (the default), none does.
fn hint_alertnames() {
    static HINT: Once = Once::new();
    HINT.call_once(|| {
        tracing::warn!(
            "an Alertmanager delivery started nothing: webhooks.alertmanager.alertnames is \
             empty, so no alert starts runs; list the alerts whose resolution means an etcd \
             cluster was rebuilt (see the README, \"Webhooks\")"
        );
    });
}

async fn handle_alert(
    state: &SharedState,
    rules: &AlertmanagerConfig,
    group_key: &str,
    alert: &Alert,
) -> Result<AlertResult, WebhookError> {
    let alertname = alert.labels.get("alertname").cloned();
    let etcd_cluster = rules
        .cluster_labels
        .iter()
        .find_map(|label| alert.labels.get(label))
        .cloned();
    let mut result = AlertResult {
        fingerprint: alert.fingerprint.clone(),
        alertname: alertname.clone(),
        etcd_cluster: etcd_cluster.clone(),
        outcome: AlertOutcome::Firing,
        run_id: None,
        services: Vec::new(),
        detail: String::new(),
    };
    let mut skip = |outcome, detail: String| {
        result.outcome = outcome;
        result.detail = detail;
    };
    // The mode webhook runs may use on the alert's cluster, if any but `check`.
    let recovery = etcd_cluster
        .as_ref()
        .and_then(|cluster| state.webhooks.recover_clusters.get(cluster))
        .copied();
    let etcd = match (alert.status, recovery) {
        // The cluster is broken now: recover it (and then repopulate).
        (AlertStatus::Firing, Some(mode)) => mode,
        (AlertStatus::Firing, None) => {
            skip(
                AlertOutcome::Firing,
                "firing alerts start runs only for the etcd clusters webhooks.recover_clusters \
                 lists (to restore or rebuild them); otherwise the run starts when the alert \
                 resolves (the cluster is rebuilt)"
                    .to_owned(),
            );
            return Ok(result);
        }
        // Resolved: the cluster is healthy again; its services need their data back. (If
        // the firing alert started a recovery run, this occurrence is a duplicate of it.)
        (AlertStatus::Resolved, _) => EtcdMode::Check,
    };
    if !alertname
        .as_ref()
        .is_some_and(|name| rules.alertnames.contains(name))
    {
        let name = alertname.as_deref().unwrap_or("(none)");
        let detail = if rules.alertnames.is_empty() {
            hint_alertnames();
            format!(
                "no alert starts runs until webhooks.alertmanager.alertnames names the alerts \
                 that mean an etcd cluster was rebuilt (this one is {name})"
            )
        } else {
            format!("alertname {name} is not one of webhooks.alertmanager.alertnames")
        };
        skip(AlertOutcome::NotSelected, detail);
        return Ok(result);
    }
    let Some(cluster) = etcd_cluster else {
        skip(
            AlertOutcome::NoClusterLabel,
            format!(
                "the alert has none of the labels {} naming the etcd cluster",
                rules.cluster_labels.join(", ")
            ),
        );
        return Ok(result);
    };
    let Some(services) = rules.clusters.get(&cluster) else {
        skip(
            AlertOutcome::UnmappedCluster,
            format!(
                "etcd cluster {cluster:?} holds no service this service repopulates (known: {})",
                rules
                    .clusters
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return Ok(result);
    };
    result.services = services.clone();
    let key = hex::encode(Sha256::digest(
        [group_key, &alert.fingerprint, &alert.starts_at].join("\u{0}"),
    ));
    let (status, allowed, confirm) = match etcd {
        EtcdMode::Check => ("resolved", String::new(), Vec::new()),
        mode => (
            "firing",
            format!("; etcd {mode} allowed by webhooks.recover_clusters.{cluster}"),
            vec![cluster.clone()],
        ),
    };
    let request = RunRequest {
        services: services.clone(),
        dry_run: rules.dry_run,
        reason: Some(format!(
            "Alertmanager: {} {status} for {cluster} (fingerprint {}, started {}){allowed}",
            alertname.as_deref().unwrap_or("alert"),
            alert.fingerprint,
            alert.starts_at
        )),
        requested_by: "webhook:alertmanager".to_owned(),
        idempotency_key: Some(format!("alertmanager:{key}")),
        etcd,
        backup: None,
        confirm,
        // A webhook never discards data newer than a backup: `auto` and a restore stop instead.
        discard_newer: false,
    };
    match state.runner.create(request).await {
        Ok(Created::New(run)) => {
            result.outcome = AlertOutcome::Started;
            result.run_id = Some(run.id);
            result.detail = format!("run {} started", run.id);
        }
        Ok(Created::Existing(run)) => {
            result.outcome = AlertOutcome::Duplicate;
            result.run_id = Some(run.id);
            result.detail = format!("this alert occurrence already started run {}", run.id);
        }
        // The rules changed since the first delivery; it is still the same occurrence.
        Err(RunnerError::IdempotencyMismatch { run_id, .. }) => {
            result.outcome = AlertOutcome::Duplicate;
            result.run_id = Some(run_id);
            result.detail = format!("this alert occurrence already started run {run_id}");
        }
        Err(err @ RunnerError::Conflict { run_id, .. }) => {
            result.outcome = AlertOutcome::Busy;
            result.run_id = Some(run_id);
            result.detail = err.to_string();
        }
        Err(err @ RunnerError::NotImplemented { .. }) => {
            result.outcome = AlertOutcome::NotSupported;
            result.detail = err.to_string();
        }
        Err(RunnerError::Unconfirmed { needed, .. }) => {
            result.outcome = AlertOutcome::NotConfirmed;
            result.detail = format!(
                "an etcd {etcd} run for {cluster} would touch {} on the CSM release in force; \
                 webhooks.recover_clusters confirms only {cluster} for this alert",
                needed.join(", ")
            );
        }
        // Shutting down or the store failing: the whole delivery fails with a 5xx so that
        // Alertmanager retries; alerts that did start runs are recognised as duplicates then.
        Err(err) => return Err(err.into()),
    }
    Ok(result)
}

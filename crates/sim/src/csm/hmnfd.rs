//! Fake HMNFD v2: `GET /subscriptions`, `GET /subscriptions/{xname}`,
//! `POST /subscriptions/{xname}/agents/{agent}`, `DELETE /subscriptions/{xname}/agents`.
//!
//! Seeded with the subscriptions `cray-dvs-orca` holds on a healthy system: one per Ready
//! compute node and per management NCN, each watching all compute nodes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use super::{hub::FakeCsm, problem::problem};
use csm_wire::{CsmService, HsmComponent, Subscription};

/// The agent name ORCA subscribes with, and the port it listens on for notifications. Neither
/// is in `hmnfd.yaml`; both are inventions that only have to be plausible and stable.
const ORCA_AGENT: &str = "cray-dvs-orca";
const ORCA_SCN_PORT: u16 = 7801;

#[derive(Default)]
pub(super) struct HmnfdState {
    pub(super) subscriptions: Vec<Subscription>,
}

impl HmnfdState {
    pub(super) fn seeded(components: &[HsmComponent]) -> Self {
        let mut state = Self::default();
        let subscribers = components.iter().filter(|c| {
            c.state.as_deref() == Some("Ready")
                && matches!(c.role.as_deref(), Some("Compute") | Some("Management"))
        });
        for node in subscribers {
            state.subscribe_orca(&node.id, components);
        }
        state
    }

    /// The subscription ORCA makes when it starts on `xname`: state changes of every compute
    /// node, delivered to its own SCN endpoint.
    pub(super) fn subscribe_orca(&mut self, xname: &str, components: &[HsmComponent]) {
        let watched = components
            .iter()
            .filter(|c| c.role.as_deref() == Some("Compute"))
            .map(|c| c.id.clone())
            .collect();
        self.subscribe(
            xname,
            ORCA_AGENT,
            SubscribePostV2 {
                components: watched,
                enabled: Some(true),
                roles: Vec::new(),
                software_status: Vec::new(),
                states: ["Ready", "Off", "Standby", "Halt", "Empty"]
                    .map(String::from)
                    .to_vec(),
                url: Some(format!("http://{xname}:{ORCA_SCN_PORT}/scn")),
            },
        );
    }

    /// One subscription per (subscriber, agent), as HMNFD keys them: a repeated POST replaces.
    fn subscribe(&mut self, xname: &str, agent: &str, request: SubscribePostV2) {
        self.subscriptions.retain(|s| {
            !(s.subscriber_component.as_deref() == Some(xname)
                && s.subscriber_agent.as_deref() == Some(agent))
        });
        self.subscriptions.push(Subscription {
            components: request.components,
            subscriber: Some(format!("{agent}@{xname}")),
            subscriber_component: Some(xname.into()),
            subscriber_agent: Some(agent.into()),
            enabled: request.enabled,
            roles: request.roles,
            software_status: request.software_status,
            states: request.states,
            url: request.url,
        });
    }
}

/// `SubscribePostV2` from `hmnfd.yaml`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SubscribePostV2 {
    #[serde(default)]
    components: Vec<String>,
    enabled: Option<bool>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    software_status: Vec<String>,
    #[serde(default)]
    states: Vec<String>,
    url: Option<String>,
}

pub(super) fn routes() -> Router<FakeCsm> {
    Router::new()
        .route("/subscriptions", get(list_subscriptions))
        .route("/subscriptions/{xname}", get(list_for_subscriber))
        .route("/subscriptions/{xname}/agents", delete(unsubscribe_all))
        .route("/subscriptions/{xname}/agents/{agent}", post(subscribe))
}

async fn list_subscriptions(State(fake): State<FakeCsm>) -> Response {
    axum::Json(
        json!({ "SubscriptionList": fake.part(|s: &mut HmnfdState| s.subscriptions.clone()) }),
    )
    .into_response()
}

/// A loose xname check (`x` + digits, then letters/digits); HMNFD's is stricter per type.
fn is_xname(s: &str) -> bool {
    s.strip_prefix('x').is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_digit())
            && rest.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

fn bad_xname(xname: &str) -> Response {
    problem(
        CsmService::Hmnfd,
        StatusCode::BAD_REQUEST,
        format!("Invalid XName in URL path: {xname}"),
    )
}

async fn list_for_subscriber(State(fake): State<FakeCsm>, Path(xname): Path<String>) -> Response {
    if !is_xname(&xname) {
        return bad_xname(&xname);
    }
    let list: Vec<Subscription> = fake.part(|s: &mut HmnfdState| {
        s.subscriptions
            .iter()
            .filter(|sub| sub.subscriber_node() == Some(xname.as_str()))
            .cloned()
            .collect()
    });
    axum::Json(json!({ "SubscriptionList": list })).into_response()
}

async fn subscribe(
    State(fake): State<FakeCsm>,
    Path((xname, agent)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if !is_xname(&xname) {
        return bad_xname(&xname);
    }
    let request: SubscribePostV2 = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                CsmService::Hmnfd,
                StatusCode::BAD_REQUEST,
                format!("Malformed JSON: {e}"),
            );
        }
    };
    // HMNFD cannot deliver anything without a URL; it rejects such subscriptions.
    if request.url.as_deref().is_none_or(str::is_empty) {
        return problem(
            CsmService::Hmnfd,
            StatusCode::BAD_REQUEST,
            "Missing subscription URL",
        );
    }
    if let Some(bad) = request.components.iter().find(|c| !is_xname(c)) {
        return problem(
            CsmService::Hmnfd,
            StatusCode::BAD_REQUEST,
            format!("Invalid XName in payload: {bad}"),
        );
    }
    fake.part(|s: &mut HmnfdState| s.subscribe(&xname, &agent, request));
    StatusCode::OK.into_response()
}

async fn unsubscribe_all(State(fake): State<FakeCsm>, Path(xname): Path<String>) -> Response {
    if !is_xname(&xname) {
        return bad_xname(&xname);
    }
    let removed = fake.part(|s: &mut HmnfdState| {
        let before = s.subscriptions.len();
        s.subscriptions
            .retain(|sub| sub.subscriber_node() != Some(xname.as_str()));
        before - s.subscriptions.len()
    });
    if removed == 0 {
        return problem(
            CsmService::Hmnfd,
            StatusCode::NOT_FOUND,
            format!("No subscriptions for {xname}"),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

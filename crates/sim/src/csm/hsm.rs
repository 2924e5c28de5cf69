//! Fake HSM v2: `GET /State/Components` with the filters of `hsm.yaml`.
//!
//! Seeded with a small system: 8 Mountain compute nodes (NID 1..8; NID 4 is Off and NID 7 is
//! Standby, i.e. not Ready) and 4 River management NCNs (2 workers, 2 storage).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{hub::FakeCsm, problem::problem};
use csm_wire::{CsmService, HsmComponent};

/// `HMSType.1.0.0` values a node query can meaningfully use. Real HSM knows ~40 types; this
/// subset is what the seed data contains plus the common neighbours (an invention: others get
/// 400, as an unknown type does in HSM).
const KNOWN_TYPES: [&str; 6] = [
    "Node",
    "NodeBMC",
    "NodeEnclosure",
    "Chassis",
    "Cabinet",
    "RouterBMC",
];
/// `HMSState.1.0.0`.
const KNOWN_STATES: [&str; 8] = [
    "Unknown",
    "Empty",
    "Populated",
    "Off",
    "On",
    "Standby",
    "Halt",
    "Ready",
];

#[derive(Default)]
pub(super) struct HsmState {
    pub(super) components: Vec<HsmComponent>,
}

impl HsmState {
    pub(super) fn seeded() -> Self {
        let compute = (1..=8).map(|nid: i64| {
            // Two nodes per blade (b0, b1), two blades per slot: x1000c0s{slot}b{bmc}n{node}.
            let index = nid - 1;
            let xname = format!("x1000c0s{}b{}n{}", index / 4, (index / 2) % 2, index % 2);
            let state = match nid {
                4 => "Off",
                7 => "Standby",
                _ => "Ready",
            };
            node(&xname, nid, state, "Compute", None, "Mountain")
        });
        // NCN xnames and NIDs as on a typical River management rack (ncn-w001 = x3000c0s4b0n0).
        let ncns = [
            ("x3000c0s4b0n0", 100_004, "Worker"),
            ("x3000c0s5b0n0", 100_005, "Worker"),
            ("x3000c0s10b0n0", 100_010, "Storage"),
            ("x3000c0s11b0n0", 100_011, "Storage"),
        ]
        .into_iter()
        .map(|(xname, nid, subrole)| {
            node(xname, nid, "Ready", "Management", Some(subrole), "River")
        });
        Self {
            components: compute.chain(ncns).collect(),
        }
    }

    /// An xname for `node`: compute NMN host names (`nid000003-nmn`, `nid000003`) are resolved
    /// through the NIDs; anything else is taken to be an xname already.
    pub(super) fn resolve_node(&self, node: &str) -> String {
        let nid = node
            .strip_prefix("nid")
            .map(|rest| rest.trim_end_matches("-nmn"))
            .and_then(|digits| digits.parse::<i64>().ok());
        nid.and_then(|nid| self.components.iter().find(|c| c.nid == Some(nid)))
            .map_or_else(|| node.to_owned(), |c| c.id.clone())
    }
}

fn node(
    xname: &str,
    nid: i64,
    state: &str,
    role: &str,
    subrole: Option<&str>,
    class: &str,
) -> HsmComponent {
    HsmComponent {
        id: xname.into(),
        kind: "Node".into(),
        state: Some(state.into()),
        flag: Some("OK".into()),
        enabled: Some(true),
        role: Some(role.into()),
        sub_role: subrole.map(Into::into),
        nid: Some(nid),
        net_type: Some("Sling".into()),
        arch: Some("X86".into()),
        class: Some(class.into()),
        ..HsmComponent::default()
    }
}

pub(super) fn routes() -> Router<FakeCsm> {
    Router::new().route("/State/Components", get(list_components))
}

/// Values of one parameter are ORed, parameters ANDed; matching is case-insensitive like HSM's.
async fn list_components(
    State(fake): State<FakeCsm>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let bad = |detail: String| problem(CsmService::Hsm, StatusCode::BAD_REQUEST, detail);
    let values = |name: &str| -> Vec<&str> {
        params
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let (ids, types, states, roles, subroles) = (
        values("id"),
        values("type"),
        values("state"),
        values("role"),
        values("subrole"),
    );
    if let Some(t) = types
        .iter()
        .find(|t| !KNOWN_TYPES.iter().any(|k| k.eq_ignore_ascii_case(t)))
    {
        return bad(format!(
            "bad query param: Argument was not a valid HMS Type: {t}"
        ));
    }
    if let Some(s) = states
        .iter()
        .find(|s| !KNOWN_STATES.iter().any(|k| k.eq_ignore_ascii_case(s)))
    {
        return bad(format!(
            "bad query param: Argument was not a valid HMS State: {s}"
        ));
    }
    let enabled = match values("enabled").last() {
        None => None,
        Some(v) => match v.parse::<bool>() {
            Ok(b) => Some(b),
            Err(_) => {
                return bad(format!(
                    "bad query param: enabled must be true or false, not {v}"
                ));
            }
        },
    };
    let matches = |wanted: &[&str], actual: Option<&str>| {
        wanted.is_empty()
            || actual.is_some_and(|a| wanted.iter().any(|w| w.eq_ignore_ascii_case(a)))
    };
    let components: Vec<HsmComponent> = fake.part(|s: &mut HsmState| {
        s.components
            .iter()
            .filter(|c| matches(&ids, Some(&c.id)))
            .filter(|c| matches(&types, Some(&c.kind)))
            .filter(|c| matches(&states, c.state.as_deref()))
            .filter(|c| matches(&roles, c.role.as_deref()))
            .filter(|c| matches(&subroles, c.sub_role.as_deref()))
            .filter(|c| enabled.is_none() || c.enabled == enabled)
            .cloned()
            .collect()
    });
    axum::Json(json!({ "Components": components })).into_response()
}

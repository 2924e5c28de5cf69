//! Fake BOS v2 session templates: `GET /v2/sessiontemplates`,
//! `GET|PUT|DELETE /v2/sessiontemplates/{session_template_id}`.
//!
//! Seeded with the templates a CSM system typically has: a COS compute template, a UAN
//! template (names as the COS and UAN product docs create them) and `boot-template`, the one
//! the runbook's CRUS session uses.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::{hub::FakeCsm, problem::problem};
use csm_wire::{CsmService, SESSION_TEMPLATE_READ_ONLY_FIELDS};

/// Writable properties of `V2SessionTemplate` (`additionalProperties: false`).
const TEMPLATE_FIELDS: [&str; 4] = ["description", "enable_cfs", "cfs", "boot_sets"];
/// Properties of `V2BootSet` (`additionalProperties: false`).
const BOOT_SET_FIELDS: [&str; 12] = [
    "name",
    "path",
    "cfs",
    "type",
    "etag",
    "kernel_parameters",
    "node_list",
    "node_roles_groups",
    "node_groups",
    "arch",
    "rootfs_provider",
    "rootfs_provider_passthrough",
];

/// Templates by name, stored as written (without the read-only `name`, `tenant`, `links`).
#[derive(Default)]
pub(super) struct BosState {
    templates: BTreeMap<String, Map<String, Value>>,
}

impl BosState {
    pub(super) fn seeded() -> Self {
        let kernel_parameters = "ip=dhcp quiet spire_join_token=${SPIRE_JOIN_TOKEN} root=craycps-s3:s3://boot-images/e06f1a4e-0a2b-4d3c-9c1a-6a1e2f3b4c5d/rootfs:4e7c3a0f5b2d4d7e:dvs:api-gw-service-nmn.local:300:nmn0";
        let template = |description: &str,
                        configuration: &str,
                        image: &str,
                        boot_set: &str,
                        roles: &[&str]| {
            json!({
                "description": description,
                "enable_cfs": true,
                "cfs": { "configuration": configuration },
                "boot_sets": {
                    boot_set: {
                        "name": boot_set,
                        "path": format!("s3://boot-images/{image}/manifest.json"),
                        "type": "s3",
                        "etag": "4e7c3a0f5b2d4d7e8a9b0c1d2e3f4a5b",
                        "kernel_parameters": kernel_parameters,
                        "node_roles_groups": roles,
                        "arch": "X86",
                        "rootfs_provider": "cpss3",
                        "rootfs_provider_passthrough": "dvs:api-gw-service-nmn.local:300:nmn0"
                    }
                }
            })
        };
        let templates = [
            (
                "cos-sessiontemplate-2.4.99",
                template(
                    "COS compute nodes",
                    "cos-config-2.4.99",
                    "e06f1a4e-0a2b-4d3c-9c1a-6a1e2f3b4c5d",
                    "compute",
                    &["Compute"],
                ),
            ),
            (
                "uan-sessiontemplate-2.5.3",
                template(
                    "User access nodes",
                    "uan-config-2.5.3",
                    "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
                    "uan",
                    &["Application_UAN"],
                ),
            ),
            (
                "boot-template",
                template(
                    "CRUS rolling upgrade target",
                    "cos-config-2.4.99",
                    "e06f1a4e-0a2b-4d3c-9c1a-6a1e2f3b4c5d",
                    "compute",
                    &["Compute"],
                ),
            ),
        ];
        Self {
            templates: templates
                .into_iter()
                .filter_map(|(name, t)| match t {
                    Value::Object(fields) => Some((name.to_owned(), fields)),
                    _ => None,
                })
                .collect(),
        }
    }

    /// All templates as GET renders them.
    pub(super) fn rendered(&self) -> BTreeMap<String, Value> {
        self.templates
            .iter()
            .map(|(name, fields)| (name.clone(), render(name, fields)))
            .collect()
    }
}

/// A stored template plus the read-only properties BOS adds in responses.
fn render(name: &str, fields: &Map<String, Value>) -> Value {
    let mut out = fields.clone();
    out.insert("name".into(), json!(name));
    out.insert("tenant".into(), json!(""));
    out.insert(
        "links".into(),
        json!([{ "href": format!("/v2/sessiontemplates/{name}"), "rel": "self" }]),
    );
    Value::Object(out)
}

pub(super) fn routes() -> Router<FakeCsm> {
    Router::new()
        .route("/v2/sessiontemplates", get(list_templates))
        .route(
            "/v2/sessiontemplates/{session_template_id}",
            get(get_template).put(put_template).delete(delete_template),
        )
}

async fn list_templates(State(fake): State<FakeCsm>) -> Response {
    let templates: Vec<Value> = fake.part(|s: &mut BosState| s.rendered().into_values().collect());
    axum::Json(templates).into_response()
}

fn not_found(name: &str) -> Response {
    problem(
        CsmService::Bos,
        StatusCode::NOT_FOUND,
        format!("Sessiontemplate {name} could not be found"),
    )
}

async fn get_template(State(fake): State<FakeCsm>, Path(name): Path<String>) -> Response {
    match fake.part(|s: &mut BosState| s.templates.get(&name).map(|t| render(&name, t))) {
        Some(template) => axum::Json(template).into_response(),
        None => not_found(&name),
    }
}

async fn delete_template(State(fake): State<FakeCsm>, Path(name): Path<String>) -> Response {
    match fake.part(|s: &mut BosState| s.templates.remove(&name)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&name),
    }
}

/// Creates or replaces; validates as BOS's connexion layer does against `V2SessionTemplate`.
async fn put_template(
    State(fake): State<FakeCsm>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let template = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => value,
        Err(e) => return bad_request(format!("Request body is not valid JSON: {e}")),
    };
    let fields = match validate(&name, template) {
        Ok(fields) => fields,
        Err(detail) => return bad_request(detail),
    };
    let stored = fake.part(|s: &mut BosState| {
        let rendered = render(&name, &fields);
        s.templates.insert(name.clone(), fields);
        rendered
    });
    axum::Json(stored).into_response()
}

fn bad_request(detail: String) -> Response {
    problem(CsmService::Bos, StatusCode::BAD_REQUEST, detail)
}

fn validate(name: &str, template: Value) -> Result<Map<String, Value>, String> {
    if !is_valid_name(name) {
        return Err(format!(
            "'{name}' does not match '^[a-zA-Z0-9](?:[-._a-zA-Z0-9]{{0,125}}[a-zA-Z0-9])?$'"
        ));
    }
    let Value::Object(fields) = template else {
        return Err("Session Template must be an object".into());
    };
    for key in fields.keys() {
        if SESSION_TEMPLATE_READ_ONLY_FIELDS.contains(&key.as_str()) {
            return Err(format!("'{key}' is read-only"));
        }
        if !TEMPLATE_FIELDS.contains(&key.as_str()) {
            return Err(format!(
                "Additional properties are not allowed ('{key}' was unexpected)"
            ));
        }
    }
    let Some(Value::Object(boot_sets)) = fields.get("boot_sets") else {
        return Err("'boot_sets' is a required property and must be an object".into());
    };
    if boot_sets.is_empty() || boot_sets.len() > 127 {
        return Err("'boot_sets' must have between 1 and 127 properties".into());
    }
    for (set_name, boot_set) in boot_sets {
        validate_boot_set(set_name, boot_set)?;
    }
    Ok(fields)
}

fn validate_boot_set(set_name: &str, boot_set: &Value) -> Result<(), String> {
    if !is_valid_name(set_name) {
        return Err(format!("boot set name '{set_name}' is not valid"));
    }
    let Value::Object(fields) = boot_set else {
        return Err(format!("boot set '{set_name}' must be an object"));
    };
    if let Some(key) = fields
        .keys()
        .find(|k| !BOOT_SET_FIELDS.contains(&k.as_str()))
    {
        return Err(format!(
            "boot set '{set_name}': additional property '{key}' is not allowed"
        ));
    }
    for required in ["path", "type"] {
        match fields.get(required) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => {
                return Err(format!(
                    "boot set '{set_name}': '{required}' is a required non-empty string"
                ));
            }
        }
    }
    if fields.get("name").is_some_and(|n| n != set_name) {
        return Err(format!(
            "boot set '{set_name}': name does not match its key"
        ));
    }
    // The V2BootSet description: at least one way of naming nodes is required.
    if !["node_list", "node_roles_groups", "node_groups"]
        .iter()
        .any(|k| fields.contains_key(*k))
    {
        return Err(format!(
            "boot set '{set_name}': one of node_list, node_roles_groups, node_groups is required"
        ));
    }
    Ok(())
}

/// `SessionTemplateName`'s pattern `^[a-zA-Z0-9](?:[-._a-zA-Z0-9]{0,125}[a-zA-Z0-9])?$`.
fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    (1..=127).contains(&bytes.len())
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b))
}

//! Fake CPS: `GET /contents` (`s3path`, `etag` filters) and `GET /deployment` (`nodes` filter).
//!
//! Seeded with two artifacts (a COS rootfs exported over DVS and ready, a PE image whose export
//! is not ready) and cm-pm pods on three worker nodes, one of them not ready.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{hub::FakeCsm, problem::problem};
use csm_wire::{
    ContainerStatus, ContentAttribute, ContentReplicas, CsmService, ExportStatus, ReplicaStatus,
    WorkerNodeData,
};

#[derive(Default)]
pub(super) struct CpsState {
    pub(super) contents: Vec<ContentAttribute>,
    pub(super) deployments: Vec<WorkerNodeData>,
}

impl CpsState {
    pub(super) fn seeded() -> Self {
        let content = |artifact_id: &str, s3path: &str, status: &str| ContentAttribute {
            artifact_id: artifact_id.into(),
            s3path: s3path.into(),
            export_status: vec![ExportStatus {
                transport: "dvs".into(),
                status: status.into(),
            }],
            transports: vec!["dvs".into()],
            content_replicas: Some(ContentReplicas {
                ready: 1,
                total: 1,
                status: vec![ReplicaStatus {
                    replica_id: "replica_id1".into(),
                    status: "ready".into(),
                    detail: format!("{artifact_id} ... ready"),
                }],
            }),
            export_path: Some(format!("/var/lib/cps-local/{artifact_id}")),
            errors: Vec::new(),
        };
        let cm_pm = |node: &str, pod: &str, ready: bool| WorkerNodeData {
            node: node.into(),
            podname: pod.into(),
            cpspods: ["cray-cps-cm-pm", "cray-cps-etcd-client"]
                .into_iter()
                .map(|name| ContainerStatus {
                    name: name.into(),
                    readiness: ready,
                    restartcount: 0,
                    state: if ready { "running" } else { "waiting" }.into(),
                })
                .collect(),
        };
        Self {
            contents: vec![
                content(
                    "03602894a457b4bb1b0cf20bf6384706",
                    "s3://boot-images/e06f1a4e-0a2b-4d3c-9c1a-6a1e2f3b4c5d/rootfs",
                    "ready",
                ),
                content(
                    "7c1e5f0b2a9d4e8f1b3c5d7e9f0a2b4c",
                    "s3://boot-images/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d/pe.squashfs",
                    "notready",
                ),
            ],
            deployments: vec![
                cm_pm("ncn-w001", "cray-cps-cm-pm-j7k2x", true),
                cm_pm("ncn-w002", "cray-cps-cm-pm-p4s9q", true),
                cm_pm("ncn-w003", "cray-cps-cm-pm-zz81m", false),
            ],
        }
    }
}

pub(super) fn routes() -> Router<FakeCsm> {
    Router::new()
        .route("/contents", get(list_contents))
        .route("/deployment", get(list_deployment))
}

async fn list_contents(
    State(fake): State<FakeCsm>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (s3path, etag) = (param("s3path"), param("etag"));
    let contents: Vec<ContentAttribute> = fake.part(|s: &mut CpsState| {
        s.contents
            .iter()
            .filter(|c| s3path.as_ref().is_none_or(|p| &c.s3path == p))
            .cloned()
            .collect()
    });
    // `ContentAttribute` has no etag; we treat the artifact ID as the etag (an invention).
    let contents: Vec<ContentAttribute> = contents
        .into_iter()
        .filter(|c| etag.as_ref().is_none_or(|e| &c.artifact_id == e))
        .collect();
    if contents.is_empty() && (s3path.is_some() || etag.is_some()) {
        return problem(
            CsmService::Cps,
            StatusCode::NOT_FOUND,
            "The specified content was not found",
        );
    }
    axum::Json(contents).into_response()
}

/// `nodes` is an array query parameter; accepted both repeated and comma-separated.
async fn list_deployment(
    State(fake): State<FakeCsm>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let nodes: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "nodes")
        .flat_map(|(_, v)| v.split(','))
        .filter(|n| !n.is_empty())
        .collect();
    let deployments: Vec<WorkerNodeData> = fake.part(|s: &mut CpsState| {
        s.deployments
            .iter()
            .filter(|d| nodes.is_empty() || nodes.contains(&d.node.as_str()))
            .cloned()
            .collect()
    });
    if let Some(unknown) = nodes
        .iter()
        .find(|n| !deployments.iter().any(|d| d.node == **n))
    {
        return problem(
            CsmService::Cps,
            StatusCode::NOT_FOUND,
            format!("Node {unknown} not found"),
        );
    }
    axum::Json(deployments).into_response()
}

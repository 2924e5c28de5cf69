//! Fake BSS: `GET /boot/v1/bootparameters` with the `name` and `nid` filters of `bss.yaml`.
//!
//! Seeded with a `Default` entry and one entry per compute node in HSM. After a wipe the list
//! is empty until [`super::FakeCsm::repopulate_bss`] (the `cray-reds-init` Job) restores it.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{FakeCsm, problem};
use csm_wire::{BootParams, CsmService, HsmComponent};

#[derive(Default)]
pub(super) struct BssState {
    pub(super) entries: Vec<BootParams>,
    /// What the REDS init Job puts back (it rebuilds entries from HSM and SLS data, which the
    /// etcd rebuild does not touch).
    discovered: Vec<BootParams>,
}

impl BssState {
    pub(super) fn seeded(components: &[HsmComponent]) -> Self {
        let image = "s3://boot-images/e06f1a4e-0a2b-4d3c-9c1a-6a1e2f3b4c5d";
        let default = BootParams {
            hosts: vec!["Default".into()],
            params: Some("console=ttyS0,115200 ip=dhcp".into()),
            kernel: Some(format!("{image}/kernel")),
            initrd: Some(format!("{image}/initrd")),
            cloud_init: Some(json!({ "meta-data": null, "user-data": null, "phone-home": null })),
            ..BootParams::default()
        };
        let nodes = components
            .iter()
            .filter(|c| c.role.as_deref() == Some("Compute"))
            .map(|c| BootParams {
                hosts: vec![c.id.clone()],
                params: Some("console=ttyS0,115200 ip=dhcp rd.neednet=1 crashkernel=340M".into()),
                kernel: Some(format!("{image}/kernel")),
                initrd: Some(format!("{image}/initrd")),
                ..BootParams::default()
            });
        let entries: Vec<BootParams> = std::iter::once(default).chain(nodes).collect();
        Self {
            discovered: entries.clone(),
            entries,
        }
    }

    pub(super) fn wipe(&mut self) {
        self.entries.clear();
    }

    pub(super) fn repopulate(&mut self) {
        self.entries = self.discovered.clone();
    }
}

pub(super) fn routes() -> Router<FakeCsm> {
    Router::new().route("/boot/v1/bootparameters", get(list_bootparameters))
}

/// `name` and `nid` may be comma-separated lists (`bss.yaml`); `mac` is accepted and ignored
/// because the seed data has no MACs.
#[derive(Deserialize)]
struct Filter {
    name: Option<String>,
    nid: Option<String>,
    #[allow(dead_code)]
    mac: Option<String>,
}

async fn list_bootparameters(
    State(fake): State<FakeCsm>,
    Query(filter): Query<Filter>,
) -> Response {
    let split = |list: &Option<String>| -> Vec<String> {
        list.iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let names = split(&filter.name);
    let mut nids = Vec::new();
    for nid in split(&filter.nid) {
        match nid.parse::<i64>() {
            Ok(n) => nids.push(n),
            Err(_) => {
                return problem(
                    CsmService::Bss,
                    StatusCode::BAD_REQUEST,
                    format!("invalid nid '{nid}'"),
                );
            }
        }
    }
    if names.is_empty() && nids.is_empty() {
        return axum::Json(fake.with(|s| s.bss.entries.clone())).into_response();
    }
    // Like real BSS, NIDs are mapped to xnames through HSM.
    let selected: Vec<BootParams> = fake.with(|s| {
        let mut hosts = names.clone();
        hosts.extend(
            s.hsm
                .components
                .iter()
                .filter(|c| c.nid.is_some_and(|n| nids.contains(&n)))
                .map(|c| c.id.clone()),
        );
        s.bss
            .entries
            .iter()
            .filter(|e| {
                e.hosts.iter().any(|h| hosts.contains(h)) || e.nids.iter().any(|n| nids.contains(n))
            })
            .cloned()
            .collect()
    });
    if selected.is_empty() {
        return problem(
            CsmService::Bss,
            StatusCode::NOT_FOUND,
            "Cannot find host, MAC, or NID",
        );
    }
    axum::Json(selected).into_response()
}

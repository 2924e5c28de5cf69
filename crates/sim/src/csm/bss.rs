//! Fake BSS: `GET /boot/v1/bootparameters` with the `name` and `nid` filters of `bss.yaml`,
//! `POST` (create) and `PUT` (set) of boot parameters.
//!
//! Seeded with a `Default` entry and one entry per compute node in HSM. After a wipe the list
//! is empty until [`super::FakeCsm::repopulate_bss`] (the `cray-reds-init` Job) restores it.
//!
//! Where the entries live: in memory, or (when the simulated cluster runs real etcd, see
//! [`super::FakeCsm::use_etcd_for_bss`]) in the real etcd of the `cray-bss` etcd cluster, as
//! real BSS keeps them: one key per host (MAC, NID) under [`ETCD_PREFIX`], a `BootParams`
//! JSON value, through etcd's v3 JSON gateway. Then a rebuilt cluster really loses them, a
//! restored one really has them back, and with its etcd down BSS answers 500 as real BSS does.
//! The keys are named as hms-bss names them (`boot_data.go`: `/params/<xname>`, else the MAC
//! or `nid<N>` it was stored by), so that what reads BSS's etcd (the restore drills' counts of
//! boot parameters) reads the fake's as it would read the real one; the values are the fake's
//! own (`BootParams` JSON, where hms-bss keeps its images under `/kernel/` and `/initrd/`).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{hsm::HsmState, hub::FakeCsm, problem::problem};
use csm_wire::{BootParams, CsmService, HsmComponent};

/// Where BSS's entries are in its etcd (hms-bss's `paramsPfx`).
pub const ETCD_PREFIX: &str = "/params/";

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

    /// What the REDS init Job puts back.
    pub(super) fn discovered(&self) -> Vec<BootParams> {
        self.discovered.clone()
    }

    /// Sets `entry` (one per identity, see [`split`]), replacing the entries of the same
    /// identities.
    fn set(&mut self, entries: Vec<BootParams>) {
        for entry in entries {
            let id = identity(&entry);
            self.entries.retain(|e| identity(e) != id);
            self.entries.push(entry);
        }
    }
}

/// One entry per host, MAC or NID it names (hosts first), as BSS stores them.
fn split(entry: &BootParams) -> Vec<BootParams> {
    let one = |hosts: Vec<String>, macs: Vec<String>, nids: Vec<i64>| BootParams {
        hosts,
        macs,
        nids,
        ..entry.clone()
    };
    if !entry.hosts.is_empty() {
        return entry
            .hosts
            .iter()
            .map(|h| one(vec![h.clone()], vec![], vec![]))
            .collect();
    }
    if !entry.macs.is_empty() {
        return entry
            .macs
            .iter()
            .map(|m| one(vec![], vec![m.clone()], vec![]))
            .collect();
    }
    entry
        .nids
        .iter()
        .map(|n| one(vec![], vec![], vec![*n]))
        .collect()
}

/// The key part naming a split entry, as hms-bss names it: the host (`x3000c0s1b0n0`,
/// `Default`), the MAC, or `nid<N>`.
fn identity(entry: &BootParams) -> String {
    if let Some(h) = entry.hosts.first() {
        h.clone()
    } else if let Some(m) = entry.macs.first() {
        m.clone()
    } else {
        format!("nid{}", entry.nids.first().copied().unwrap_or_default())
    }
}

/// A minimal etcd v3 JSON-gateway client (`/v3/kv/*`, keys and values base64).
pub(super) mod etcd {
    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .unwrap_or_default()
    }

    /// The key just after every key that starts with `prefix` (etcd's `range_end`).
    fn prefix_end(prefix: &str) -> Vec<u8> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        end
    }

    async fn call(url: &str, op: &str, body: Value) -> Result<Value, String> {
        let resp = client()
            .post(format!("{}/v3/kv/{op}", url.trim_end_matches('/')))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("etcd at {url}: {e}"))?;
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .map_err(|e| format!("etcd at {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("etcd at {url}: {status}: {value}"));
        }
        Ok(value)
    }

    pub async fn put(url: &str, key: &str, value: &str) -> Result<(), String> {
        call(
            url,
            "put",
            json!({ "key": B64.encode(key), "value": B64.encode(value) }),
        )
        .await
        .map(drop)
    }

    /// The values under `prefix`.
    pub async fn values(url: &str, prefix: &str) -> Result<Vec<Vec<u8>>, String> {
        let range = call(
            url,
            "range",
            json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) }),
        )
        .await?;
        Ok(range["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| B64.decode(kv["value"].as_str().unwrap_or_default()).ok())
            .collect())
    }

    /// How many keys start with `prefix`.
    pub async fn count(url: &str, prefix: &str) -> Result<usize, String> {
        let range = call(
            url,
            "range",
            json!({
                "key": B64.encode(prefix),
                "range_end": B64.encode(prefix_end(prefix)),
                "count_only": true,
            }),
        )
        .await?;
        // int64 fields are strings in the gateway's JSON, and left out when 0.
        Ok(range["count"]
            .as_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    }

    pub async fn delete_prefix(url: &str, prefix: &str) -> Result<(), String> {
        call(
            url,
            "deleterange",
            json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) }),
        )
        .await
        .map(drop)
    }
}

impl FakeCsm {
    /// BSS's etcd (`Some(Err)` when it keeps its entries in etcd but cannot say where it is).
    fn bss_etcd(&self) -> Option<Result<String, String>> {
        let endpoint = self.with(|hub| hub.bss_etcd.clone())?;
        Some(endpoint().ok_or_else(|| "BSS's etcd cluster has no client Service".to_owned()))
    }

    /// Every entry BSS keeps.
    pub async fn bss_entries(&self) -> Result<Vec<BootParams>, String> {
        match self.bss_etcd() {
            None => Ok(self.part(|s: &mut BssState| s.entries.clone())),
            Some(url) => {
                let values = etcd::values(&url?, ETCD_PREFIX).await?;
                values
                    .iter()
                    .map(|v| serde_json::from_slice(v).map_err(|e| format!("a stored entry: {e}")))
                    .collect()
            }
        }
    }

    /// How many keys (split entries) BSS keeps: in its etcd, or in memory.
    pub async fn bss_key_count(&self) -> Result<usize, String> {
        match self.bss_etcd() {
            None => Ok(self.part(|s: &mut BssState| s.entries.len())),
            Some(url) => etcd::count(&url?, ETCD_PREFIX).await,
        }
    }

    /// Stores `entries` (split per host, MAC, NID), replacing those of the same identity.
    async fn set_bss(&self, entries: &[BootParams]) -> Result<(), String> {
        let split: Vec<BootParams> = entries.iter().flat_map(split).collect();
        match self.bss_etcd() {
            None => {
                self.part(|s: &mut BssState| s.set(split));
                Ok(())
            }
            Some(url) => {
                let url = url?;
                for entry in split {
                    let value = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
                    etcd::put(&url, &format!("{ETCD_PREFIX}{}", identity(&entry)), &value).await?;
                }
                Ok(())
            }
        }
    }

    /// Puts BSS's seeded entries into the etcd at `url` (the first time its etcd cluster is up).
    pub async fn seed_bss_etcd(&self, url: &str) -> Result<(), String> {
        let entries = self.part(|s: &mut BssState| s.entries.clone());
        for entry in entries.iter().flat_map(split) {
            let value = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
            etcd::put(url, &format!("{ETCD_PREFIX}{}", identity(&entry)), &value).await?;
        }
        Ok(())
    }

    /// What the `cray-reds-init` Job does, wherever BSS keeps its entries; fails as the Job
    /// would while BSS's etcd does not answer.
    pub async fn repopulate_bss_async(&self) -> Result<(), String> {
        if self.bss_etcd().is_none() {
            self.repopulate_bss();
            return Ok(());
        }
        let discovered = self.part(|s: &mut BssState| s.discovered());
        self.set_bss(&discovered).await
    }

    /// Deletes BSS's entries from its etcd (a rebuild's effect on them).
    pub(super) async fn wipe_bss_etcd(&self) -> Result<(), String> {
        match self.bss_etcd() {
            Some(url) => etcd::delete_prefix(&url?, ETCD_PREFIX).await,
            None => Ok(()),
        }
    }
}

pub(super) fn routes() -> Router<FakeCsm> {
    Router::new().route(
        "/boot/v1/bootparameters",
        get(list_bootparameters)
            .post(create_bootparameters)
            .put(set_bootparameters),
    )
}

/// BSS with its etcd not answering.
fn etcd_down(error: &str) -> Response {
    problem(
        CsmService::Bss,
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Failed to access the key-value store: {error}"),
    )
}

fn invalid(entry: &BootParams) -> Option<Response> {
    (entry.hosts.is_empty() && entry.macs.is_empty() && entry.nids.is_empty()).then(|| {
        problem(
            CsmService::Bss,
            StatusCode::BAD_REQUEST,
            "Bad Request - Invalid BootParams value: no hosts, macs or nids",
        )
    })
}

/// `POST`: creates the entries; an identity that already has one is a 400, as in BSS.
async fn create_bootparameters(
    State(fake): State<FakeCsm>,
    axum::Json(entry): axum::Json<BootParams>,
) -> Response {
    if let Some(bad) = invalid(&entry) {
        return bad;
    }
    let existing = match fake.bss_entries().await {
        Ok(e) => e,
        Err(e) => return etcd_down(&e),
    };
    let taken: Vec<String> = split(&entry)
        .iter()
        .map(identity)
        .filter(|id| existing.iter().any(|e| identity(e) == *id))
        .collect();
    if !taken.is_empty() {
        return problem(
            CsmService::Bss,
            StatusCode::BAD_REQUEST,
            format!("Bad Request - already exists: {}", taken.join(", ")),
        );
    }
    match fake.set_bss(std::slice::from_ref(&entry)).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => etcd_down(&e),
    }
}

/// `PUT`: sets the entries (created or replaced).
async fn set_bootparameters(
    State(fake): State<FakeCsm>,
    axum::Json(entry): axum::Json<BootParams>,
) -> Response {
    if let Some(bad) = invalid(&entry) {
        return bad;
    }
    match fake.set_bss(std::slice::from_ref(&entry)).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => etcd_down(&e),
    }
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
    let entries = match fake.bss_entries().await {
        Ok(entries) => entries,
        Err(e) => return etcd_down(&e),
    };
    if names.is_empty() && nids.is_empty() {
        return axum::Json(entries).into_response();
    }
    // Like real BSS, NIDs are mapped to xnames through HSM.
    let selected: Vec<BootParams> = fake.part(|hsm: &mut HsmState| {
        let mut hosts = names.clone();
        hosts.extend(
            hsm.components
                .iter()
                .filter(|c| c.nid.is_some_and(|n| nids.contains(&n)))
                .map(|c| c.id.clone()),
        );
        entries
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

//! Shared setup of the simulated cluster's tests.

use reqwest::StatusCode;
use serde_json::Value;
use sim::{SimCluster, SimOptions};

pub use sim::testing::{WAIT, until};

/// A simulated cluster laid out as CSM `release` with real etcd processes behind the etcd
/// clusters `only` names (all of them: None), settled.
pub async fn real_etcd_sim(release: &str, only: Option<&[&str]>) -> SimCluster {
    sim::testing::release_sim(
        release,
        SimOptions {
            real_etcd: true,
            real_etcd_clusters: only.map(|names| names.iter().map(|n| (*n).to_owned()).collect()),
            ..SimOptions::default()
        },
    )
    .await
}

/// The status and JSON body of a response (null when it is not JSON).
pub async fn json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

//! Shared setup of the simulated cluster's tests.

use reqwest::StatusCode;
use serde_json::Value;

pub use sim::testing::{WAIT, real_etcd_sim, until};

/// The status and JSON body of a response (null when it is not JSON).
pub async fn json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

//! BSS boot parameters (`bss.yaml`: `GET /boot/v1/bootparameters`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::CsmError;
use super::http::Endpoint;

/// `BootParams` from `bss.yaml`. Unknown fields are kept in `extra` so an entry survives a
/// read/write round trip unchanged.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct BootParams {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub macs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nids: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(
        rename = "cloud-init",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_init: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug)]
pub struct BssClient {
    endpoint: Endpoint,
}

impl BssClient {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// `GET /boot/v1/bootparameters` without filters: every entry BSS knows. After an etcd
    /// rebuild this is empty until the `cray-reds-init` Job has run again.
    pub async fn list_bootparameters(&self) -> Result<Vec<BootParams>, CsmError> {
        // Go services encode an empty slice as `null`; treat that as "no entries".
        let entries: Option<Vec<BootParams>> = self
            .endpoint
            .get_json(&["boot", "v1", "bootparameters"], &[])
            .await?;
        Ok(entries.unwrap_or_default())
    }
}

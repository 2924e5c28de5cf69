//! BSS boot parameters (`bss.yaml`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

//! HSM v2 component state (`hsm.yaml`).

use serde::{Deserialize, Serialize};

/// `Component.1.0.0_Component` from `hsm.yaml`. Only `ID` and `Type` are always present; HSM
/// omits the other fields when unset (and for `stateonly`-style queries).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HsmComponent {
    /// The xname, e.g. `x1000c0s0b0n0`.
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_role: Option<String>,
    #[serde(rename = "NID", default, skip_serializing_if = "Option::is_none")]
    pub nid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
}

impl HsmComponent {
    /// The node's NMN host name as the runbook builds it (`nid%06d-nmn`), for nodes with a NID.
    pub fn nmn_hostname(&self) -> Option<String> {
        self.nid.map(|nid| format!("nid{nid:06}-nmn"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmn_hostname_pads_the_nid() {
        let node = HsmComponent {
            nid: Some(7),
            ..HsmComponent::default()
        };
        assert_eq!(node.nmn_hostname().as_deref(), Some("nid000007-nmn"));
    }
}

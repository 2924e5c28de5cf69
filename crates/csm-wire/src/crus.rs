//! CRUS upgrade sessions (`crus.json`).

use serde::{Deserialize, Serialize};

/// `upgrade_session` from `crus.json`. The fields CRUS sets itself (`readOnly` in the schema)
/// are defaulted when absent, because a session CRUS has not processed yet may lack them.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct CrusSession {
    #[serde(default)]
    pub upgrade_id: String,
    /// One of READY, UPDATING, DELETING, DELETED, PENDING (kept as text: a newer CRUS may add states).
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub completed: bool,
    #[serde(default)]
    pub messages: Vec<String>,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub api_version: String,
    pub upgrade_template_id: String,
    pub starting_label: String,
    pub upgrading_label: String,
    pub failed_label: String,
    pub workload_manager_type: String,
    pub upgrade_step_size: i32,
}

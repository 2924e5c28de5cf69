//! The cluster's membership as etcd keeps it (`/v3/cluster/member/*`).

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{
    client::{EtcdClient, int, strings},
    error::EtcdError,
};

/// A member as `member/list` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EtcdMember {
    pub id: String,
    /// Empty for a member added but not started yet.
    pub name: String,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
}

impl EtcdClient {
    /// `/v3/cluster/member/list`: every member with its client URLs, as the cluster knows them.
    pub async fn members(&self) -> Result<Vec<EtcdMember>, EtcdError> {
        let (code, body) = self
            .call("/v3/cluster/member/list", Some(json!({})))
            .await?;
        self.expect_ok(code, &body, "a member list")?;
        let empty = Vec::new();
        let members = body["members"].as_array().unwrap_or(&empty);
        Ok(members
            .iter()
            .map(|m| EtcdMember {
                id: int(m, "ID").to_string(),
                name: m["name"].as_str().unwrap_or_default().to_owned(),
                client_urls: strings(&m["clientURLs"]),
                peer_urls: strings(&m["peerURLs"]),
                is_learner: m["isLearner"].as_bool().unwrap_or(false),
            })
            .collect())
    }

    /// `/v3/cluster/member/remove` of the member `id` (a decimal member id, as
    /// [`EtcdMember::id`]): it leaves the cluster, and its etcd, once it learns that, exits and
    /// refuses to start with its data again. Needs a quorum, and etcd refuses (`unhealthy
    /// cluster`) while fewer members than a quorum of those left have been connected to the
    /// leader for 5 s (right after a leader change, or a member's restart): ask again. An
    /// unknown id is an error (`member not found`).
    pub async fn remove_member(&self, id: &str) -> Result<(), EtcdError> {
        let (code, body) = self
            .call("/v3/cluster/member/remove", Some(json!({ "ID": id })))
            .await?;
        self.expect_ok(code, &body, "a member removal")
    }
}

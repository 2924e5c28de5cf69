//! HMNFD v2 subscriptions (`hmnfd.yaml`: `GET /subscriptions`).
//!
//! After HMNFD's etcd is rebuilt its subscription list is empty; `cray-dvs-orca` on each node
//! subscribes again when restarted. The handler compares the subscribers it sees here with the
//! nodes it restarted.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::http::Endpoint;
use csm_wire::Subscription;

use super::error::CsmError;

/// The distinct subscriber nodes (xnames) of `subscriptions`.
pub fn subscriber_nodes(subscriptions: &[Subscription]) -> BTreeSet<String> {
    subscriptions
        .iter()
        .filter_map(Subscription::subscriber_node)
        .map(str::to_owned)
        .collect()
}

/// `SubscriptionListArray`. HMNFD (Go) may send `null` for an empty list.
#[derive(Deserialize)]
struct SubscriptionListArray {
    #[serde(rename = "SubscriptionList", default)]
    subscription_list: Option<Vec<Subscription>>,
}

#[derive(Clone, Debug)]
pub struct HmnfdClient {
    endpoint: Endpoint,
}

impl HmnfdClient {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// `GET /subscriptions`: every subscription HMNFD currently holds.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, CsmError> {
        let list: SubscriptionListArray = self.endpoint.get_json(&["subscriptions"], &[]).await?;
        Ok(list.subscription_list.unwrap_or_default())
    }

    /// [`subscriber_nodes`] of [`Self::list_subscriptions`].
    pub async fn subscriber_nodes(&self) -> Result<BTreeSet<String>, CsmError> {
        Ok(subscriber_nodes(&self.list_subscriptions().await?))
    }
}

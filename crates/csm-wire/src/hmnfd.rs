//! HMNFD v2 subscriptions (`hmnfd.yaml`).

use serde::{Deserialize, Serialize};

/// `SubscribePost` from `hmnfd.yaml`: one subscription as listed by `GET /subscriptions`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Subscription {
    pub components: Vec<String>,
    /// `agent@xname`; kept by HMNFD for v1 compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber_component: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub software_status: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Subscription {
    /// The subscribing node's xname: `SubscriberComponent`, or else the part of `Subscriber`
    /// after the `@` (the v1 form `agent@xname`), or else `Subscriber` itself.
    pub fn subscriber_node(&self) -> Option<&str> {
        if let Some(xname) = self
            .subscriber_component
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            return Some(xname);
        }
        let subscriber = self.subscriber.as_deref().filter(|s| !s.is_empty())?;
        Some(
            subscriber
                .rsplit_once('@')
                .map_or(subscriber, |(_, node)| node),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_node_prefers_component_then_v1_subscriber() {
        let sub = |subscriber: Option<&str>, component: Option<&str>| Subscription {
            subscriber: subscriber.map(Into::into),
            subscriber_component: component.map(Into::into),
            ..Subscription::default()
        };
        assert_eq!(
            sub(Some("orca@x1"), Some("x2")).subscriber_node(),
            Some("x2")
        );
        assert_eq!(sub(Some("orca@x1"), None).subscriber_node(), Some("x1"));
        assert_eq!(sub(Some("x3"), Some("")).subscriber_node(), Some("x3"));
        assert_eq!(sub(None, None).subscriber_node(), None);
    }
}

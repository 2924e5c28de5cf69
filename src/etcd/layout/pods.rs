//! A cluster's member pods, each as Kubernetes shows it and as its own etcd answers at the
//! pod's address.

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt, api::ListParams};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Found, endpoint};
use crate::{
    cluster::{Cluster, ClusterError, pod_is_ready},
    etcd::{EtcdClient, EtcdConfig, EtcdError},
};

/// A member pod as Kubernetes shows it and as its own etcd answers at the pod's address: a
/// member answers its maintenance status alone, so this reads what each member holds when the
/// cluster has lost its quorum (and its client Service, which only sends to Ready pods, has
/// nobody to send to).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberPod {
    pub pod: String,
    pub ip: Option<String>,
    pub ready: bool,
    /// Why its etcd container is not running, as the kubelet says (`CrashLoopBackOff: <its last
    /// message>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub restarts: i32,
    /// The member's store revision and raft index, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// Keys it holds (a serializable count of its own store), when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The client URL of the member at `ip`: the cluster's endpoint with the pod's address.
pub fn member_url(endpoint: &str, ip: &str) -> Option<String> {
    let mut url = reqwest::Url::parse(endpoint).ok()?;
    url.set_host(Some(ip)).ok()?;
    Some(url.as_str().trim_end_matches('/').to_owned())
}

/// How long a member probe waits to connect: a pod address that routes nowhere must not hold
/// a report for the whole request timeout.
const PROBE_CONNECT: std::time::Duration = std::time::Duration::from_secs(2);

/// Every member pod of `found`, with what its etcd says at its own address.
pub async fn probe_member_pods(
    cluster: &Cluster,
    found: &Found,
    config: &EtcdConfig,
) -> Result<Vec<MemberPod>, ClusterError> {
    let api: Api<Pod> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let selector = found.pod_selector();
    let params = ListParams::default().labels(&selector);
    let pods = cluster
        .retrying(&format!("listing the pods {selector}"), || {
            api.list(&params)
        })
        .await?;
    let endpoint = endpoint(cluster, found, config).await?;
    let config = EtcdConfig {
        timeout: config.timeout.min(PROBE_CONNECT * 2),
        ..config.clone()
    };
    let mut probed = join_all(pods.items.iter().map(|pod| {
        let config = &config;
        let endpoint = endpoint.as_deref();
        async move {
            let status = pod.status.clone().unwrap_or_default();
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty());
            let container = status
                .container_statuses
                .as_ref()
                .and_then(|all| all.iter().find(|c| c.name == "etcd").or(all.first()));
            let waiting = container
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref())
                .map(|w| {
                    let last = container
                        .and_then(|c| c.last_state.as_ref())
                        .and_then(|s| s.terminated.as_ref())
                        .and_then(|t| t.message.clone().or(t.reason.clone()));
                    match (w.reason.as_deref(), last) {
                        (Some(reason), Some(last)) => format!("{reason}: {}", last.trim()),
                        (Some(reason), None) => reason.to_owned(),
                        (None, _) => "waiting".to_owned(),
                    }
                });
            let mut member = MemberPod {
                pod: pod.name_any(),
                ip: ip.clone(),
                ready: pod_is_ready(pod),
                waiting,
                restarts: container.map(|c| c.restart_count).unwrap_or(0),
                revision: None,
                raft_index: None,
                member_id: None,
                keys: None,
                error: None,
            };
            let Some(url) = ip.and_then(|ip| member_url(endpoint?, &ip)) else {
                member.error = Some("no address yet (not running)".to_owned());
                return member;
            };
            let answer = async {
                let client = EtcdClient::new(&url, config)?;
                let status = client.member_status().await?;
                let (keys, _) = client.key_count(true).await?;
                Ok::<_, EtcdError>((status, keys))
            }
            .await;
            match answer {
                Ok((status, keys)) => {
                    member.revision = Some(status.revision);
                    member.raft_index = Some(status.raft_index);
                    member.member_id = Some(status.member_id);
                    member.keys = Some(keys);
                }
                Err(err) => member.error = Some(err.to_string()),
            }
            member
        }
    }))
    .await;
    probed.sort_by(|a, b| a.pod.cmp(&b.pod));
    Ok(probed)
}

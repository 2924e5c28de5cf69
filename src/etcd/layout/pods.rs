//! A cluster's member pods, each as Kubernetes shows it and as its own etcd answers at the
//! pod's address.

use futures::future::join_all;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::{Api, ResourceExt, api::ListParams};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::locate::{LocatedCluster, endpoint};
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

/// `config` for asking one member at its own address (see [`PROBE_CONNECT`]).
pub(super) fn probe_config(config: &EtcdConfig) -> EtcdConfig {
    EtcdConfig {
        timeout: config.timeout.min(PROBE_CONNECT * 2),
        ..config.clone()
    }
}

/// The member pods of `found`, by name.
pub(super) async fn list_member_pods(
    cluster: &Cluster,
    found: &LocatedCluster,
) -> Result<Vec<Pod>, ClusterError> {
    let api: Api<Pod> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let selector = found.pod_selector();
    let params = ListParams::default().labels(&selector);
    let mut pods = cluster
        .retrying(&format!("listing the pods {selector}"), || {
            api.list(&params)
        })
        .await?
        .items;
    pods.sort_by_key(|pod| pod.name_any());
    Ok(pods)
}

/// The pod's IP, once it has one.
pub(super) fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
}

/// The status of the pod's etcd container (named `etcd` in both layouts; else its first).
fn etcd_container(pod: &Pod) -> Option<&ContainerStatus> {
    let all = pod.status.as_ref()?.container_statuses.as_ref()?;
    all.iter().find(|c| c.name == "etcd").or(all.first())
}

pub(super) fn restarts(pod: &Pod) -> i32 {
    etcd_container(pod).map_or(0, |c| c.restart_count)
}

/// Why the pod's etcd container waits, as the kubelet says, with the message of its last
/// termination (`CrashLoopBackOff: <what etcd said last>`).
pub(super) fn waiting(pod: &Pod) -> Option<String> {
    let container = etcd_container(pod)?;
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let last = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.message.clone().or(t.reason.clone()));
    Some(match (waiting.reason.as_deref(), last) {
        (Some(reason), Some(last)) => format!("{reason}: {}", last.trim()),
        (Some(reason), None) => reason.to_owned(),
        (None, _) => "waiting".to_owned(),
    })
}

/// Why the pod's etcd container does not run: it waits ([`waiting`]), or it ended and stays
/// down (`terminated: Error, exit code 137`, with its message).
pub(super) fn not_running(pod: &Pod) -> Option<String> {
    waiting(pod).or_else(|| {
        let ended = etcd_container(pod)?.state.as_ref()?.terminated.as_ref()?;
        let mut text = format!(
            "terminated: {}, exit code {}",
            ended.reason.as_deref().unwrap_or("unknown reason"),
            ended.exit_code
        );
        if let Some(message) = ended.message.as_deref().filter(|m| !m.trim().is_empty()) {
            text.push_str(&format!(": {}", message.trim()));
        }
        Some(text)
    })
}

/// Every member pod of `found`, with what its etcd says at its own address.
pub async fn probe_member_pods(
    cluster: &Cluster,
    found: &LocatedCluster,
    config: &EtcdConfig,
) -> Result<Vec<MemberPod>, ClusterError> {
    let pods = list_member_pods(cluster, found).await?;
    let endpoint = endpoint(cluster, found, config).await?;
    let config = probe_config(config);
    let probed = join_all(pods.iter().map(|pod| {
        let config = &config;
        let endpoint = endpoint.as_deref();
        async move {
            let ip = pod_ip(pod);
            let mut member = MemberPod {
                pod: pod.name_any(),
                ip: ip.clone(),
                ready: pod_is_ready(pod),
                waiting: waiting(pod),
                restarts: restarts(pod),
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
    Ok(probed)
}

//! Where a CSM service's etcd cluster is, in either of the two layouts CSM has used, and how it
//! is doing: CSM's "Check the Health of etcd Clusters" (`ncnHealthChecks.sh -s
//! etcd_health_status`, `etcd_cluster_balance`, `etcd_database_health`) as data.
//!
//! - **etcd-operator** (CSM ≤ 1.4): an `EtcdCluster` (`etcd.database.coreos.com/v1beta2`)
//!   `<service>-etcd`, pods labelled `etcd_cluster=<name>`, client Service `<name>-client`.
//! - **Bitnami** (CSM ≥ 1.5, `cray-etcd/charts/cray-etcd-base`): a StatefulSet
//!   `<service>-bitnami-etcd`, pods `<sts>-N` labelled `app.kubernetes.io/name=etcd,
//!   app.kubernetes.io/instance=<service>`, PVCs `data-<sts>-N`, client Service `<sts>`,
//!   headless Service `<sts>-headless`, ConfigMap `<sts>-config`; plain HTTP, no auth.
//!
//! The names are functions of the layout so that a restore or rebuild (scale the StatefulSet to
//! 0, delete the PVCs, edit the ConfigMap, scale back) can be built on [`Found`].

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{PersistentVolumeClaim, Pod, Service as KubeService},
};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{EtcdAlarm, EtcdClient, EtcdConfig, quota::Quota};
use crate::{
    cluster::{Cluster, ClusterError, ObjectRef, pod_is_ready},
    model::Service,
};

/// How a CSM release runs its etcd clusters.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum EtcdLayout {
    /// `EtcdCluster` objects of the etcd operator (CSM ≤ 1.4).
    #[serde(rename = "etcd-operator")]
    Operator,
    /// StatefulSets of the Bitnami chart (CSM ≥ 1.5).
    #[serde(rename = "bitnami")]
    Bitnami,
}

const BITNAMI_SUFFIX: &str = "-bitnami-etcd";
const OPERATOR_SUFFIX: &str = "-etcd";
/// The etcd client port in both layouts.
pub const CLIENT_PORT: i32 = 2379;

impl EtcdLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdLayout::Operator => "etcd-operator",
            EtcdLayout::Bitnami => "bitnami",
        }
    }

    /// The cluster of the CSM service `csm` (`cray-bss`).
    pub fn cluster_name(self, csm: &str) -> String {
        match self {
            EtcdLayout::Operator => format!("{csm}{OPERATOR_SUFFIX}"),
            EtcdLayout::Bitnami => format!("{csm}{BITNAMI_SUFFIX}"),
        }
    }

    /// The layout and CSM service of a cluster name, if it is one.
    pub fn parse_name(name: &str) -> Option<(EtcdLayout, &str)> {
        if let Some(csm) = name.strip_suffix(BITNAMI_SUFFIX) {
            return Some((EtcdLayout::Bitnami, csm));
        }
        name.strip_suffix(OPERATOR_SUFFIX)
            .filter(|csm| !csm.is_empty())
            .map(|csm| (EtcdLayout::Operator, csm))
    }

    /// The Kubernetes object that is the cluster.
    pub fn object(self, cluster: &str) -> ObjectRef {
        match self {
            EtcdLayout::Operator => ObjectRef {
                api_version: "etcd.database.coreos.com/v1beta2".to_owned(),
                kind: "EtcdCluster".to_owned(),
                plural: "etcdclusters".to_owned(),
                name: cluster.to_owned(),
            },
            EtcdLayout::Bitnami => ObjectRef {
                api_version: "apps/v1".to_owned(),
                kind: "StatefulSet".to_owned(),
                plural: "statefulsets".to_owned(),
                name: cluster.to_owned(),
            },
        }
    }

    /// Label selector of the cluster's member pods.
    pub fn pod_selector(self, cluster: &str, csm: &str) -> String {
        match self {
            EtcdLayout::Operator => format!("etcd_cluster={cluster}"),
            EtcdLayout::Bitnami => {
                format!("app.kubernetes.io/name=etcd,app.kubernetes.io/instance={csm}")
            }
        }
    }

    /// The Service clients use.
    pub fn client_service(self, cluster: &str) -> String {
        match self {
            EtcdLayout::Operator => format!("{cluster}-client"),
            EtcdLayout::Bitnami => cluster.to_owned(),
        }
    }

    /// Bitnami only: the headless Service of the members' DNS names.
    pub fn headless_service(self, cluster: &str) -> Option<String> {
        (self == EtcdLayout::Bitnami).then(|| format!("{cluster}-headless"))
    }

    /// Bitnami only: the ConfigMap with the members' environment (`ETCD_INITIAL_CLUSTER_STATE`).
    pub fn config_map(self, cluster: &str) -> Option<String> {
        (self == EtcdLayout::Bitnami).then(|| format!("{cluster}-config"))
    }

    /// Bitnami only: the data PVC of member `ordinal` (`data-<sts>-<ordinal>`).
    pub fn data_pvc(self, cluster: &str, ordinal: i64) -> Option<String> {
        (self == EtcdLayout::Bitnami).then(|| format!("data-{cluster}-{ordinal}"))
    }
}

/// The Kubernetes object of a cluster, as found.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClusterObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: Option<String>,
    pub generation: Option<i64>,
}

/// A cluster found in the services' namespace.
#[derive(Clone, Debug)]
pub struct Found {
    pub layout: EtcdLayout,
    pub name: String,
    /// The CSM service it belongs to (`cray-bss`).
    pub csm_service: String,
    pub object: ClusterObject,
    /// `spec.size` (EtcdCluster) or `spec.replicas` (StatefulSet).
    pub desired: i64,
    /// The backend quota its members run with.
    pub quota: Quota,
}

impl Found {
    /// Our name of the service (`bss`), or the CSM service's (`cray-uas-mgr`) for clusters of
    /// services this tool does not repopulate.
    pub fn service_name(&self) -> String {
        Service::of_etcd_service(&self.csm_service)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| self.csm_service.clone())
    }

    pub fn pod_selector(&self) -> String {
        self.layout.pod_selector(&self.name, &self.csm_service)
    }
}

fn etcdclusters(cluster: &Cluster) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("etcd.database.coreos.com", "v1beta2", "EtcdCluster"),
        "etcdclusters",
    );
    Api::namespaced_with(cluster.client().clone(), cluster.namespace(), &resource)
}

fn is_not_found(err: &ClusterError) -> bool {
    err.api_status().is_some_and(|status| status.code == 404)
}

fn from_etcdcluster(object: &DynamicObject) -> Option<Found> {
    let name = object.name_any();
    let (layout, csm) = EtcdLayout::parse_name(&name)?;
    let csm = csm.to_owned();
    (layout == EtcdLayout::Operator).then(|| Found {
        layout,
        csm_service: csm,
        object: ClusterObject {
            api_version: "etcd.database.coreos.com/v1beta2".to_owned(),
            kind: "EtcdCluster".to_owned(),
            name: name.clone(),
            uid: object.metadata.uid.clone(),
            generation: object.metadata.generation,
        },
        desired: object.data["spec"]["size"].as_i64().unwrap_or(0),
        quota: Quota::of_etcd_env(&object.data["spec"]["pod"]["etcdEnv"]),
        name,
    })
}

fn from_statefulset(sts: &StatefulSet) -> Option<Found> {
    let name = sts.name_any();
    let (layout, csm) = EtcdLayout::parse_name(&name)?;
    let csm = csm.to_owned();
    (layout == EtcdLayout::Bitnami).then(|| Found {
        layout,
        csm_service: csm,
        object: ClusterObject {
            api_version: "apps/v1".to_owned(),
            kind: "StatefulSet".to_owned(),
            name: name.clone(),
            uid: sts.metadata.uid.clone(),
            generation: sts.metadata.generation,
        },
        desired: sts
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .map(i64::from)
            .unwrap_or(1),
        quota: Quota::of_statefulset(sts),
        name,
    })
}

/// The label every Bitnami etcd StatefulSet carries.
const BITNAMI_LABEL: &str = "app.kubernetes.io/name=etcd";

/// The EtcdClusters of the namespace; `None` when the EtcdCluster CRD is not installed (the
/// etcd operator is gone, CSM ≥ 1.5).
pub async fn operator_clusters(cluster: &Cluster) -> Result<Option<Vec<Found>>, ClusterError> {
    let api = etcdclusters(cluster);
    let params = ListParams::default();
    match cluster
        .retrying("listing EtcdClusters", || api.list(&params))
        .await
    {
        Ok(list) => Ok(Some(
            list.items.iter().filter_map(from_etcdcluster).collect(),
        )),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The Bitnami etcd StatefulSets of the namespace.
pub async fn bitnami_clusters(cluster: &Cluster) -> Result<Vec<Found>, ClusterError> {
    let api: Api<StatefulSet> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let params = ListParams::default().labels(BITNAMI_LABEL);
    let list = cluster
        .retrying("listing the etcd StatefulSets", || api.list(&params))
        .await?;
    Ok(list.items.iter().filter_map(from_statefulset).collect())
}

/// Every etcd cluster of the namespace, in both layouts, sorted by name.
pub async fn find_all(cluster: &Cluster) -> Result<Vec<Found>, ClusterError> {
    let mut found = operator_clusters(cluster).await?.unwrap_or_default();
    found.extend(bitnami_clusters(cluster).await?);
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// The cluster named `name`, in whichever layout its name says.
pub async fn find(cluster: &Cluster, name: &str) -> Result<Option<Found>, ClusterError> {
    let Some((layout, _)) = EtcdLayout::parse_name(name) else {
        return Ok(None);
    };
    match layout {
        EtcdLayout::Operator => {
            let api = etcdclusters(cluster);
            match cluster
                .retrying(&format!("reading EtcdCluster {name}"), || api.get_opt(name))
                .await
            {
                Ok(object) => Ok(object.as_ref().and_then(from_etcdcluster)),
                Err(err) if is_not_found(&err) => Ok(None),
                Err(err) => Err(err),
            }
        }
        EtcdLayout::Bitnami => {
            let api: Api<StatefulSet> =
                Api::namespaced(cluster.client().clone(), cluster.namespace());
            let sts = cluster
                .retrying(&format!("reading StatefulSet {name}"), || api.get_opt(name))
                .await?;
            Ok(sts.as_ref().and_then(from_statefulset))
        }
    }
}

/// The client URL of `found`: the `[etcd] endpoint` template when set, else its client
/// Service (`http://<cluster IP>:<client port>`); `None` when that Service does not exist.
pub async fn endpoint(
    cluster: &Cluster,
    found: &Found,
    config: &EtcdConfig,
) -> Result<Option<String>, ClusterError> {
    if let Some(url) = config.endpoint_of(&found.name, cluster.namespace()) {
        return Ok(Some(url));
    }
    client_url(cluster, &found.layout.client_service(&found.name)).await
}

/// `http://<cluster IP>:<port>` of the Service `name` (its port named `client`, else 2379,
/// else its first); the DNS name when it has no cluster IP.
pub async fn client_url(cluster: &Cluster, name: &str) -> Result<Option<String>, ClusterError> {
    let api: Api<KubeService> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let Some(service) = cluster
        .retrying(&format!("reading Service {name}"), || api.get_opt(name))
        .await?
    else {
        return Ok(None);
    };
    let spec = service.spec.unwrap_or_default();
    let ports = spec.ports.unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("client"))
        .or_else(|| ports.iter().find(|p| p.port == CLIENT_PORT))
        .or(ports.first())
        .map(|p| p.port)
        .unwrap_or(CLIENT_PORT);
    let host = match spec.cluster_ip.as_deref() {
        Some(ip) if !ip.is_empty() && ip != "None" => ip.to_owned(),
        _ => format!("{name}.{}.svc", cluster.namespace()),
    };
    Ok(Some(format!("http://{host}:{port}")))
}

/// One member's health, from the member itself.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MemberHealth {
    pub id: String,
    pub name: String,
    pub client_url: Option<String>,
    pub healthy: bool,
    pub is_leader: bool,
    pub db_size: Option<u64>,
    pub version: Option<String>,
    /// Why it is not healthy.
    pub error: Option<String>,
}

/// A cluster as `GET /etcd-clusters` shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EtcdClusterReport {
    /// `cray-bss-etcd` or `cray-bss-bitnami-etcd`.
    pub name: String,
    /// The service (`bss`), or the CSM service for clusters this tool does not repopulate.
    pub service: String,
    pub layout: EtcdLayout,
    pub object: ClusterObject,
    /// Members wanted (`spec.size` / `spec.replicas`).
    pub members: i64,
    /// Member pods that are Ready.
    pub ready: i64,
    pub pods: Vec<String>,
    /// Bitnami: the data PVCs (`data-<sts>-N`), kept when pods or the StatefulSet go.
    pub pvcs: Vec<String>,
    pub client_service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headless_service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// Client URL used for the checks.
    pub endpoint: Option<String>,
    /// Every member healthy, a leader, no alarm and every member Ready.
    pub healthy: bool,
    /// The cluster answers a linearizable read through its client endpoint: a quorum of
    /// members holds it and serves its data, however many members or pods are not well. A
    /// serving cluster is never restored or rebuilt by `auto`.
    #[serde(default)]
    pub serving: bool,
    /// The cluster's store revision, when it serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    pub leader: Option<String>,
    pub alarms: Vec<EtcdAlarm>,
    pub db_size: Option<u64>,
    /// Bytes of the database in use (etcd ≥ 3.4; the rest is freed by a defrag).
    pub db_size_in_use: Option<u64>,
    /// The backend quota: beyond it etcd raises `NOSPACE` and refuses writes.
    pub quota: Quota,
    pub keys: Option<u64>,
    pub version: Option<String>,
    pub member_health: Vec<MemberHealth>,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

/// Ready pods and names of the cluster's member pods.
async fn member_pods(
    cluster: &Cluster,
    selector: &str,
) -> Result<(Vec<String>, i64), ClusterError> {
    let api: Api<Pod> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let params = ListParams::default().labels(selector);
    let pods = cluster
        .retrying(&format!("listing the pods {selector}"), || {
            api.list(&params)
        })
        .await?;
    let ready = pods.items.iter().filter(|pod| pod_is_ready(pod)).count();
    let mut names: Vec<String> = pods.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    Ok((names, ready as i64))
}

async fn data_pvcs(cluster: &Cluster, found: &Found) -> Result<Vec<String>, ClusterError> {
    if found.layout != EtcdLayout::Bitnami {
        return Ok(Vec::new());
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(cluster.client().clone(), cluster.namespace());
    let prefix = format!("data-{}-", found.name);
    let params = ListParams::default().labels(&found.pod_selector());
    let list = cluster
        .retrying(&format!("listing the PVCs of {}", found.name), || {
            api.list(&params)
        })
        .await?;
    let mut names: Vec<String> = list
        .items
        .iter()
        .map(|p| p.name_any())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// Health of every member the cluster lists, asked of each member at its own client URL.
async fn member_health(
    members: &[super::EtcdMember],
    config: &EtcdConfig,
) -> Vec<(MemberHealth, Option<String>)> {
    join_all(members.iter().map(|member| async move {
        let url = member.client_urls.first().cloned();
        let mut health = MemberHealth {
            id: member.id.clone(),
            name: member.name.clone(),
            client_url: url.clone(),
            healthy: false,
            is_leader: false,
            db_size: None,
            version: None,
            error: None,
        };
        let Some(url) = url else {
            health.error = Some("the member has not started (no client URL)".to_owned());
            return (health, None);
        };
        let result = async {
            let client = EtcdClient::new(&url, config)?;
            let status = client.member_status().await?;
            client.check_health().await?;
            Ok::<_, super::EtcdError>(status)
        }
        .await;
        let mut leader = None;
        match result {
            Ok(status) => {
                health.healthy = status.errors.is_empty();
                health.is_leader = status.leader.as_deref() == Some(status.member_id.as_str());
                health.db_size = Some(status.db_size);
                health.version = Some(status.version);
                if !status.errors.is_empty() {
                    health.error = Some(status.errors.join("; "));
                }
                leader = status.leader;
            }
            Err(err) => health.error = Some(err.to_string()),
        }
        (health, leader)
    }))
    .await
}

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
                let (keys, _) = client.changed_since(0, true).await?;
                Ok::<_, super::EtcdError>((status, keys))
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

/// The report of one cluster: what Kubernetes and etcd say of it. Kubernetes errors are
/// errors; etcd's answers (or silence) are the report.
pub async fn report(
    cluster: &Cluster,
    found: &Found,
    config: &EtcdConfig,
) -> Result<EtcdClusterReport, ClusterError> {
    let (pods, ready) = member_pods(cluster, &found.pod_selector()).await?;
    let pvcs = data_pvcs(cluster, found).await?;
    let endpoint = endpoint(cluster, found, config).await?;
    let client_service = found.layout.client_service(&found.name);
    let mut report = EtcdClusterReport {
        name: found.name.clone(),
        service: found.service_name(),
        layout: found.layout,
        object: found.object.clone(),
        members: found.desired,
        ready,
        pods,
        pvcs,
        headless_service: found.layout.headless_service(&found.name),
        config_map: found.layout.config_map(&found.name),
        client_service: client_service.clone(),
        endpoint: endpoint.clone(),
        healthy: false,
        serving: false,
        revision: None,
        leader: None,
        alarms: Vec::new(),
        db_size: None,
        db_size_in_use: None,
        quota: found.quota,
        keys: None,
        version: None,
        member_health: Vec::new(),
        problems: Vec::new(),
    };
    if ready < found.desired {
        report.problems.push(format!(
            "{ready} of {} member pods are Ready",
            found.desired
        ));
    }
    let Some(url) = endpoint else {
        report.problems.push(format!(
            "the client Service {client_service} does not exist"
        ));
        return Ok(report);
    };
    let client = match EtcdClient::new(&url, config) {
        Ok(client) => client,
        Err(err) => {
            report.problems.push(err.to_string());
            return Ok(report);
        }
    };
    match client.members().await {
        Ok(members) => {
            let checked = member_health(&members, config).await;
            let mut leaders: BTreeMap<String, usize> = BTreeMap::new();
            for (health, leader) in checked {
                if let Some(leader) = leader {
                    *leaders.entry(leader).or_default() += 1;
                }
                if let Some(error) = &health.error {
                    report.problems.push(format!(
                        "member {} ({}): {error}",
                        if health.name.is_empty() {
                            &health.id
                        } else {
                            &health.name
                        },
                        health.id
                    ));
                }
                report.member_health.push(health);
            }
            report.leader = leaders.into_iter().max_by_key(|(_, n)| *n).map(|(l, _)| l);
        }
        Err(err) => report.problems.push(err.to_string()),
    }
    match client.alarms().await {
        Ok(alarms) => {
            for alarm in &alarms {
                report.problems.push(format!(
                    "alarm {} raised by member {}",
                    alarm.alarm, alarm.member_id
                ));
            }
            report.alarms = alarms;
        }
        Err(err) => report.problems.push(err.to_string()),
    }
    match client.status().await {
        Ok(status) => {
            // The count is a linearizable read: a quorum answered it.
            report.serving = true;
            report.revision = Some(status.revision);
            report.keys = Some(status.keys);
            report.db_size = Some(status.db_size);
            report.db_size_in_use = status.db_size_in_use;
            report.version = Some(status.version);
            if report.leader.is_none() {
                report.leader = status.leader;
            }
        }
        Err(err) => report.problems.push(err.to_string()),
    }
    if report.leader.is_none() {
        report.problems.push("no leader".to_owned());
    }
    report.healthy = report.problems.is_empty();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_each_layout() {
        let bitnami = EtcdLayout::Bitnami;
        let sts = bitnami.cluster_name("cray-bss");
        assert_eq!(sts, "cray-bss-bitnami-etcd");
        assert_eq!(bitnami.client_service(&sts), "cray-bss-bitnami-etcd");
        assert_eq!(
            bitnami.headless_service(&sts).as_deref(),
            Some("cray-bss-bitnami-etcd-headless")
        );
        assert_eq!(
            bitnami.config_map(&sts).as_deref(),
            Some("cray-bss-bitnami-etcd-config")
        );
        assert_eq!(
            bitnami.data_pvc(&sts, 2).as_deref(),
            Some("data-cray-bss-bitnami-etcd-2")
        );
        assert_eq!(
            bitnami.pod_selector(&sts, "cray-bss"),
            "app.kubernetes.io/name=etcd,app.kubernetes.io/instance=cray-bss"
        );
        let operator = EtcdLayout::Operator;
        let name = operator.cluster_name("cray-bss");
        assert_eq!(name, "cray-bss-etcd");
        assert_eq!(operator.client_service(&name), "cray-bss-etcd-client");
        assert_eq!(
            operator.pod_selector(&name, "cray-bss"),
            "etcd_cluster=cray-bss-etcd"
        );
        assert_eq!(
            EtcdLayout::parse_name("cray-bss-bitnami-etcd"),
            Some((EtcdLayout::Bitnami, "cray-bss"))
        );
        assert_eq!(
            EtcdLayout::parse_name("cray-bss-etcd"),
            Some((EtcdLayout::Operator, "cray-bss"))
        );
        assert_eq!(EtcdLayout::parse_name("cray-bss"), None);
    }
}

//! A cluster as `GET /etcd-clusters` shows it: what Kubernetes and etcd say of it, CSM's
//! "Check the Health of etcd Clusters" (`ncnHealthChecks.sh -s etcd_health_status`,
//! `etcd_cluster_balance`, `etcd_database_health`) as data, member by member.
//!
//! In the Bitnami layout each member pod's etcd is asked at the pod's own address: a member
//! answers its maintenance status alone, so what each member holds shows even when the
//! cluster has lost its quorum, and a pod is matched to its member by the member id it answers
//! with (else by name). The etcd operator reconciles its members against its pods itself (and
//! the simulated cluster runs one etcd for all the pods of such a cluster), so there each
//! member is asked at the client URL it advertises, and pods and members are not matched up
//! for problems.

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, ResourceExt, api::ListParams};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    locate::{ClusterObject, LocatedCluster, endpoint},
    pods::{list_member_pods, member_url, not_running, pod_ip, probe_config, restarts},
};
use crate::{
    cluster::{Cluster, ClusterError, pod_is_ready},
    etcd::{
        client::{EtcdClient, EtcdStatus},
        config::EtcdConfig,
        maintenance::{EtcdAlarm, MemberStatus},
        members::EtcdMember,
        quota::Quota,
    },
    model::EtcdLayout,
};

/// One member of a cluster as etcd and Kubernetes see it: a member etcd lists and its pod, a
/// member without a pod, or a member pod that is no member.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct MemberHealth {
    /// Its member id (decimal); absent for a pod that is no member etcd lists, or that did not
    /// answer when the member list could not be read.
    pub id: Option<String>,
    /// etcd's name of it (the pod's name in both layouts); empty for a member added but not
    /// started.
    pub name: String,
    /// Its pod; absent for a member without one.
    pub pod: Option<String>,
    /// The pod is Ready (its etcd answers the chart's probe).
    pub pod_ready: bool,
    /// Why the pod's etcd container does not run, as the kubelet says: `CrashLoopBackOff:
    /// <its last message>`, `terminated: Error, exit code 137`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Restarts of the pod's etcd container.
    pub restarts: i32,
    pub peer_urls: Vec<String>,
    /// Where it was asked: its pod's address (Bitnami), or the client URL it advertises.
    pub client_url: Option<String>,
    /// It has started (a member added but not started has no name and no client URL yet).
    pub started: bool,
    pub is_learner: bool,
    /// It answered, without errors, and a read through it found a leader and a quorum.
    pub healthy: bool,
    pub is_leader: bool,
    /// Its raft term and index, its store's revision and its database's size: what it holds,
    /// whether or not the cluster has a quorum.
    pub raft_term: Option<u64>,
    pub raft_index: Option<u64>,
    pub revision: Option<i64>,
    pub db_size: Option<u64>,
    /// The part of `db_size` in use; the rest is free pages a defragmentation returns.
    pub db_size_in_use: Option<u64>,
    pub version: Option<String>,
    /// The alarms raised by this member (`NOSPACE`, `CORRUPT`).
    pub alarms: Vec<String>,
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
    /// Every member, as etcd and Kubernetes see it: each member etcd lists, with its pod, and
    /// each member pod that is no member etcd lists.
    pub member_health: Vec<MemberHealth>,
    /// Bitnami: the StatefulSet's etcd variables that decide how a member starts
    /// (`ETCD_INITIAL_CLUSTER_STATE`, `ETCD_START_FROM_SNAPSHOT`, the snapshot's directory and
    /// file, `ETCD_DISASTER_RECOVERY`, `ETCD_QUOTA_BACKEND_BYTES`), as its pod template sets
    /// them (a recovery sets them and sets them back).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub recovery_env: std::collections::BTreeMap<String, String>,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
}

async fn data_pvcs(cluster: &Cluster, found: &LocatedCluster) -> Result<Vec<String>, ClusterError> {
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

/// What one member says at its own address: its status, and whether a read through it finds a
/// leader and a quorum (`/health`; the reason when not).
type MemberAnswer = Result<(MemberStatus, Result<(), String>), String>;

async fn ask_member(url: &str, config: &EtcdConfig) -> MemberAnswer {
    let client = EtcdClient::new(url, config).map_err(|e| e.to_string())?;
    let status = client.member_status().await.map_err(|e| e.to_string())?;
    let health = client.check_health().await.map_err(|e| e.to_string());
    Ok((status, health))
}

/// A member pod and what its etcd said at the pod's address (`None`: not asked).
struct PodRead<'a> {
    pod: &'a Pod,
    url: Option<String>,
    answer: Option<MemberAnswer>,
}

impl PodRead<'_> {
    fn member_id(&self) -> Option<&str> {
        match &self.answer {
            Some(Ok((status, _))) => Some(&status.member_id),
            _ => None,
        }
    }
}

/// Each pod of `pods` asked at its own address (the cluster's endpoint with the pod's IP).
async fn ask_pods<'a>(pods: &'a [Pod], endpoint: &str, config: &EtcdConfig) -> Vec<PodRead<'a>> {
    let config = probe_config(config);
    join_all(pods.iter().map(|pod| {
        let config = &config;
        async move {
            let url = pod_ip(pod).and_then(|ip| member_url(endpoint, &ip));
            let answer = match &url {
                Some(url) => Some(ask_member(url, config).await),
                None => None,
            };
            PodRead { pod, url, answer }
        }
    }))
    .await
}

/// What a cluster said through one endpoint.
struct ClusterRead {
    members: Result<Vec<EtcdMember>, String>,
    alarms: Result<Vec<EtcdAlarm>, String>,
    status: Result<EtcdStatus, String>,
}

impl ClusterRead {
    /// The three asked at once: without a quorum the alarms and the status (a linearizable
    /// count) each wait for a timeout, and a report must not wait for them one after another.
    async fn through(client: &EtcdClient) -> ClusterRead {
        let (members, alarms, status) =
            tokio::join!(client.members(), client.alarms(), client.status());
        ClusterRead {
            members: members.map_err(|e| e.to_string()),
            alarms: alarms.map_err(|e| e.to_string()),
            status: status.map_err(|e| e.to_string()),
        }
    }

    fn answered(&self) -> bool {
        self.members.is_ok() || self.alarms.is_ok() || self.status.is_ok()
    }
}

/// The report of one cluster: what Kubernetes and etcd say of it. Kubernetes errors are
/// errors; etcd's answers (or silence) are the report.
pub async fn report(
    cluster: &Cluster,
    found: &LocatedCluster,
    config: &EtcdConfig,
) -> Result<EtcdClusterReport, ClusterError> {
    let pods = list_member_pods(cluster, found).await?;
    let ready = pods.iter().filter(|pod| pod_is_ready(pod)).count() as i64;
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
        pods: pods.iter().map(|pod| pod.name_any()).collect(),
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
        recovery_env: found.recovery_env.clone(),
        problems: Vec::new(),
    };
    if ready < found.desired {
        report.problems.push(format!(
            "{ready} of {} member pods are Ready",
            found.desired
        ));
    }
    // What the kubelet says of a pod whose etcd does not run (a pod that runs but is not
    // Ready is counted above, and its member says why below).
    for pod in &pods {
        if let Some(state) = not_running(pod) {
            report
                .problems
                .push(format!("pod {}: {state}", pod.name_any()));
        }
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
    let bitnami = found.layout == EtcdLayout::Bitnami;
    let mut read = ClusterRead::through(&client).await;
    let mut pod_reads = if bitnami {
        ask_pods(&pods, &url, config).await
    } else {
        Vec::new()
    };
    // The client Service sends only to Ready pods, and etcd's readiness probe fails on more
    // than a lost quorum (an alarm, a member catching up): when it answers nothing, the
    // cluster is read through a member that answers at its own address (a member lists the
    // members it knows and reads through a quorum if there is one).
    if !read.answered() && !pods.is_empty() {
        if !bitnami {
            pod_reads = ask_pods(&pods, &url, config).await;
        }
        let answering = pod_reads
            .iter()
            .find(|p| p.member_id().is_some())
            .and_then(|p| Some((p.pod.name_any(), p.url.clone()?)));
        // Asked as a member probe is (a short timeout): the Service having nobody to send to
        // usually means no quorum, and then every read through raft only times out.
        if let Some((pod, member_url)) = answering
            && let Ok(member_client) = EtcdClient::new(&member_url, &probe_config(config))
        {
            let via_member = ClusterRead::through(&member_client).await;
            if via_member.answered() {
                report.problems.push(format!(
                    "the client Service {client_service} has no Ready member to answer: read \
                     through member pod {pod}"
                ));
                read = via_member;
            }
        }
    }
    apply_cluster_read(&mut report, &read);
    let members = read.members.as_deref().ok();
    report.member_health = if bitnami {
        members_by_pod(members, &pod_reads, &report.alarms)
    } else {
        members_at_their_urls(members.unwrap_or_default(), &pods, &report.alarms, config).await
    };
    member_problems(&mut report, bitnami && members.is_some());
    // The leader most members follow, else the one the status through the endpoint named.
    let mut leaders: BTreeMap<&str, usize> = BTreeMap::new();
    for member in &report.member_health {
        if let Some(leader) = member.is_leader.then_some(member.id.as_deref()).flatten() {
            *leaders.entry(leader).or_default() += 1;
        }
    }
    if let Some(leader) = leaders.into_iter().max_by_key(|(_, n)| *n) {
        report.leader = Some(leader.0.to_owned());
    }
    if report.leader.is_none() {
        report.problems.push("no leader".to_owned());
    }
    report.healthy = report.problems.is_empty();
    Ok(report)
}

/// The cluster's alarms, status and keys into `report`, and what it could not read into its
/// problems.
fn apply_cluster_read(report: &mut EtcdClusterReport, read: &ClusterRead) {
    if let Err(err) = &read.members {
        report.problems.push(err.clone());
    }
    match &read.alarms {
        Ok(alarms) => {
            for alarm in alarms {
                report.problems.push(format!(
                    "alarm {} raised by member {}",
                    alarm.alarm, alarm.member_id
                ));
            }
            report.alarms = alarms.clone();
        }
        Err(err) => report.problems.push(err.clone()),
    }
    match &read.status {
        Ok(status) => {
            // The count is a linearizable read: a quorum answered it.
            report.serving = true;
            report.revision = Some(status.revision);
            report.keys = Some(status.keys);
            report.db_size = Some(status.db_size);
            report.db_size_in_use = status.db_size_in_use;
            report.version = Some(status.version.clone());
            report.leader = status.leader.clone();
        }
        Err(err) => report.problems.push(err.clone()),
    }
}

/// A member's view from what it answered (at `url`) and the alarms raised by it.
fn member_view(
    member: Option<&EtcdMember>,
    url: Option<String>,
    answer: Option<&MemberAnswer>,
    alarms: &[EtcdAlarm],
) -> MemberHealth {
    let mut view = MemberHealth {
        client_url: url,
        ..MemberHealth::default()
    };
    if let Some(member) = member {
        view.id = Some(member.id.clone());
        view.name = member.name.clone();
        view.peer_urls = member.peer_urls.clone();
        view.started = !member.name.is_empty() || !member.client_urls.is_empty();
        view.is_learner = member.is_learner;
    }
    match answer {
        Some(Ok((status, health))) => {
            view.id.get_or_insert_with(|| status.member_id.clone());
            view.started = true;
            view.is_leader = status.leader.as_deref() == Some(status.member_id.as_str());
            view.raft_term = Some(status.raft_term);
            view.raft_index = Some(status.raft_index);
            view.revision = Some(status.revision);
            view.db_size = Some(status.db_size);
            view.db_size_in_use = Some(status.db_size_in_use);
            view.version = Some(status.version.clone());
            view.healthy = health.is_ok() && status.errors.is_empty();
            view.error = match health {
                Err(why) => Some(why.clone()),
                Ok(()) if !status.errors.is_empty() => Some(status.errors.join("; ")),
                Ok(()) => None,
            };
        }
        Some(Err(err)) => view.error = Some(err.clone()),
        None if member.is_none() => view.error = Some("no address yet (not running)".to_owned()),
        None if view.started => view.error = Some("no address to ask it at".to_owned()),
        None => view.error = Some("the member has not started (no client URL)".to_owned()),
    }
    view.alarms = alarms
        .iter()
        .filter(|a| view.id.as_deref() == Some(a.member_id.as_str()))
        .map(|a| a.alarm.clone())
        .collect();
    view
}

/// Bitnami: each member etcd lists with the pod that answered as it (else the pod of its
/// name), each member without a pod, each pod that is no member.
fn members_by_pod(
    members: Option<&[EtcdMember]>,
    pod_reads: &[PodRead<'_>],
    alarms: &[EtcdAlarm],
) -> Vec<MemberHealth> {
    let members = members.unwrap_or_default();
    let pod_of = |member: &EtcdMember| {
        pod_reads
            .iter()
            .position(|p| p.member_id() == Some(member.id.as_str()))
            .or_else(|| {
                pod_reads.iter().position(|p| {
                    p.member_id().is_none()
                        && !member.name.is_empty()
                        && p.pod.name_any() == member.name
                })
            })
    };
    let mut matched = vec![false; pod_reads.len()];
    let mut views: Vec<MemberHealth> = members
        .iter()
        .map(|member| match pod_of(member) {
            Some(i) => {
                matched[i] = true;
                with_pod(
                    member_view(
                        Some(member),
                        pod_reads[i].url.clone(),
                        pod_reads[i].answer.as_ref(),
                        alarms,
                    ),
                    pod_reads[i].pod,
                )
            }
            None => member_view(Some(member), None, None, alarms),
        })
        .collect();
    for (read, _) in pod_reads.iter().zip(&matched).filter(|(_, m)| !**m) {
        let mut view = member_view(None, read.url.clone(), read.answer.as_ref(), alarms);
        view.name = read.pod.name_any();
        views.push(with_pod(view, read.pod));
    }
    views.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    views
}

/// etcd-operator: each member asked at the client URL it advertises, with the pod of its name.
async fn members_at_their_urls(
    members: &[EtcdMember],
    pods: &[Pod],
    alarms: &[EtcdAlarm],
    config: &EtcdConfig,
) -> Vec<MemberHealth> {
    join_all(members.iter().map(|member| async move {
        let url = member.client_urls.first().cloned();
        let answer = match &url {
            Some(url) => Some(ask_member(url, config).await),
            None => None,
        };
        let view = member_view(Some(member), url, answer.as_ref(), alarms);
        match pods.iter().find(|pod| pod.name_any() == member.name) {
            Some(pod) => with_pod(view, pod),
            None => view,
        }
    }))
    .await
}

fn with_pod(mut view: MemberHealth, pod: &Pod) -> MemberHealth {
    view.pod = Some(pod.name_any());
    view.pod_ready = pod_is_ready(pod);
    view.container = not_running(pod);
    view.restarts = restarts(pod);
    view
}

/// What is wrong with the members, one line each. `matched`: pods and members were matched
/// up, so a pod without a member and a member without a pod are problems.
fn member_problems(report: &mut EtcdClusterReport, matched: bool) {
    for member in &report.member_health {
        let id = member.id.as_deref().unwrap_or("?");
        let name = if member.name.is_empty() {
            id
        } else {
            &member.name
        };
        match (&member.pod, &member.id) {
            (Some(pod), None) if matched => {
                report.problems.push(format!("pod {pod} is no etcd member"));
                continue;
            }
            (None, Some(id)) if matched => {
                report
                    .problems
                    .push(format!("member {name} ({id}) has no pod"));
            }
            _ => {}
        }
        if member.id.is_some() && !member.started {
            report
                .problems
                .push(format!("member {id} was added but has not started"));
        } else if let Some(error) = &member.error
            && member.container.is_none()
        {
            // A pod whose container does not run said why already.
            report
                .problems
                .push(format!("member {name} ({id}): {error}"));
        }
    }
}

//! A cluster as `GET /etcd-clusters` shows it: what Kubernetes and etcd say of it, CSM's
//! "Check the Health of etcd Clusters" (`ncnHealthChecks.sh -s etcd_health_status`,
//! `etcd_cluster_balance`, `etcd_database_health`) as data.

use std::collections::BTreeMap;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, ResourceExt, api::ListParams};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ClusterObject, EtcdLayout, Found, endpoint, member_url, probe_member_pods};
use crate::{
    cluster::{Cluster, ClusterError, pod_is_ready},
    etcd::{EtcdAlarm, EtcdClient, EtcdConfig, EtcdError, EtcdMember, quota::Quota},
};

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
    members: &[EtcdMember],
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
            Ok::<_, EtcdError>(status)
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
    let through_service = read_cluster(&client, config, &mut report).await;
    // The client Service sends only to Ready pods, and etcd's readiness probe fails on more
    // than a lost quorum (an alarm, a member catching up): when it answers nothing, the
    // members are asked at their own addresses, and the cluster serves if one of them reads
    // through a quorum.
    if !through_service && !report.pods.is_empty() {
        let answering = probe_member_pods(cluster, found, config)
            .await?
            .into_iter()
            .find(|m| m.revision.is_some());
        if let Some(member) = answering
            && let Some(member_url) = member.ip.as_deref().and_then(|ip| member_url(&url, ip))
            && let Ok(member_client) = EtcdClient::new(&member_url, config)
        {
            let mut via_member = report.clone();
            via_member.problems.clear();
            if ready < found.desired {
                via_member.problems.push(format!(
                    "{ready} of {} member pods are Ready",
                    found.desired
                ));
            }
            via_member.problems.push(format!(
                "the client Service {client_service} has no Ready member to answer: read \
                 through member pod {}",
                member.pod
            ));
            read_cluster(&member_client, config, &mut via_member).await;
            report = via_member;
        }
    }
    if report.leader.is_none() {
        report.problems.push("no leader".to_owned());
    }
    report.healthy = report.problems.is_empty();
    Ok(report)
}

/// Fills `report` with what the cluster says through `client`: its members and their health,
/// its alarms, its status and keys. Returns whether it answered at all.
async fn read_cluster(
    client: &EtcdClient,
    config: &EtcdConfig,
    report: &mut EtcdClusterReport,
) -> bool {
    let mut answered = false;
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
            answered = true;
        }
        Err(err) => report.problems.push(err.to_string()),
    }
    match client.alarms().await {
        Ok(alarms) => {
            answered = true;
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
            answered = true;
        }
        Err(err) => report.problems.push(err.to_string()),
    }
    answered
}

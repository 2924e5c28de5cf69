//! Where a service's etcd cluster is: found in either layout, with the names of its objects.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Service as KubeService};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::etcd::{config::EtcdConfig, container::etcd_container, quota::Quota};
use crate::{
    cluster::{Cluster, ClusterError, ObjectRef},
    model::{EtcdLayout, Service},
};

/// The etcd client port in both layouts.
pub const CLIENT_PORT: i32 = 2379;

/// Where the objects of a layout's cluster are, by name.
impl EtcdLayout {
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

/// A cluster found in the services' namespace (by `find`): where it is and how it starts.
#[derive(Clone, Debug)]
pub struct LocatedCluster {
    pub layout: EtcdLayout,
    pub name: String,
    /// The CSM service it belongs to (`cray-bss`).
    pub csm_service: String,
    pub object: ClusterObject,
    /// `spec.size` (EtcdCluster) or `spec.replicas` (StatefulSet).
    pub desired: i64,
    /// The backend quota its members run with.
    pub quota: Quota,
    /// Bitnami: the etcd container's variables that decide how a member starts (see
    /// [`RECOVERY_ENV`]), as the pod template sets them; empty for the etcd-operator.
    pub recovery_env: std::collections::BTreeMap<String, String>,
}

/// The variables of a Bitnami etcd container that decide how a member starts, and which a
/// recovery sets and sets back: the state it joins with, the snapshot it starts from, the
/// disaster recovery of a member with data, and the quota.
pub const RECOVERY_ENV: [&str; 6] = [
    "ETCD_INITIAL_CLUSTER_STATE",
    "ETCD_START_FROM_SNAPSHOT",
    "ETCD_INIT_SNAPSHOTS_DIR",
    "ETCD_INIT_SNAPSHOT_FILENAME",
    "ETCD_DISASTER_RECOVERY",
    "ETCD_QUOTA_BACKEND_BYTES",
];

/// The [`RECOVERY_ENV`] variables the StatefulSet's etcd container sets (a value from a
/// reference shows as `<from a reference>`).
fn recovery_env(sts: &StatefulSet) -> std::collections::BTreeMap<String, String> {
    etcd_container(sts)
        .and_then(|(_, c)| c.env.as_ref())
        .into_iter()
        .flatten()
        .filter(|var| RECOVERY_ENV.contains(&var.name.as_str()))
        .map(|var| {
            let value = var
                .value
                .clone()
                .unwrap_or_else(|| "<from a reference>".to_owned());
            (var.name.clone(), value)
        })
        .collect()
}

impl LocatedCluster {
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

fn from_etcdcluster(object: &DynamicObject) -> Option<LocatedCluster> {
    let name = object.name_any();
    let (layout, csm) = EtcdLayout::parse_name(&name)?;
    let csm = csm.to_owned();
    (layout == EtcdLayout::Operator).then(|| LocatedCluster {
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
        recovery_env: Default::default(),
        name,
    })
}

fn from_statefulset(sts: &StatefulSet) -> Option<LocatedCluster> {
    let name = sts.name_any();
    let (layout, csm) = EtcdLayout::parse_name(&name)?;
    let csm = csm.to_owned();
    (layout == EtcdLayout::Bitnami).then(|| LocatedCluster {
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
        recovery_env: recovery_env(sts),
        name,
    })
}

/// The label every Bitnami etcd StatefulSet carries.
const BITNAMI_LABEL: &str = "app.kubernetes.io/name=etcd";

/// The EtcdClusters of the namespace; `None` when the EtcdCluster CRD is not installed (the
/// etcd operator is gone, CSM ≥ 1.5).
pub async fn operator_clusters(
    cluster: &Cluster,
) -> Result<Option<Vec<LocatedCluster>>, ClusterError> {
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
pub async fn bitnami_clusters(cluster: &Cluster) -> Result<Vec<LocatedCluster>, ClusterError> {
    let api: Api<StatefulSet> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let params = ListParams::default().labels(BITNAMI_LABEL);
    let list = cluster
        .retrying("listing the etcd StatefulSets", || api.list(&params))
        .await?;
    Ok(list.items.iter().filter_map(from_statefulset).collect())
}

/// Every etcd cluster of the namespace, in both layouts, sorted by name.
pub async fn find_all(cluster: &Cluster) -> Result<Vec<LocatedCluster>, ClusterError> {
    let mut found = operator_clusters(cluster).await?.unwrap_or_default();
    found.extend(bitnami_clusters(cluster).await?);
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// The cluster named `name`, in whichever layout its name says.
pub async fn find(cluster: &Cluster, name: &str) -> Result<Option<LocatedCluster>, ClusterError> {
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
    found: &LocatedCluster,
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

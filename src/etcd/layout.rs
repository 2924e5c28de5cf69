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
//! 0, delete the PVCs, edit the ConfigMap, scale back) can be built on [`LocatedCluster`]. What each
//! member pod's etcd says is in `pods`, the whole report of a cluster in `report`.

mod locate;
mod pods;
mod report;

pub use locate::{
    CLIENT_PORT, ClusterObject, LocatedCluster, RECOVERY_ENV, bitnami_clusters, client_url,
    endpoint, find, find_all, operator_clusters,
};
pub use pods::{MemberPod, member_url, probe_member_pods};
pub use report::{EtcdClusterReport, MemberHealth, report};

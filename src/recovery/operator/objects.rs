//! The etcd-operator's objects a recovery reads and writes, by name.

use crate::cluster::ObjectRef;

/// The etcd-operator's API group and version.
pub(super) const API_VERSION: &str = "etcd.database.coreos.com/v1beta2";

/// Where the periodic backups of a cluster are configured (CSM 1.3: "kubectl get etcdbackup -n
/// services | grep bos.*periodic").
pub(super) const PERIODIC_BACKUP_SUFFIX: &str = "-cluster-periodic-backup";

pub(super) fn etcd_object(kind: &str, plural: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: API_VERSION.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
        name: name.to_owned(),
    }
}

/// The `EtcdCluster` `cluster`.
pub fn cluster_object(cluster: &str) -> ObjectRef {
    etcd_object("EtcdCluster", "etcdclusters", cluster)
}

/// The `EtcdRestore` of `cluster` (the restore operator requires its name to be the cluster's).
pub fn restore_object(cluster: &str) -> ObjectRef {
    etcd_object("EtcdRestore", "etcdrestores", cluster)
}

/// The periodic `EtcdBackup` of `cluster`.
pub fn periodic_backup_object(cluster: &str) -> ObjectRef {
    etcd_object(
        "EtcdBackup",
        "etcdbackups",
        &format!("{cluster}{PERIODIC_BACKUP_SUFFIX}"),
    )
}

/// The service Deployment paired with `cluster` (`cray-bss` for `cray-bss-etcd`), as the page
/// pairs `cray-bos` with `cray-bos-etcd`.
pub fn paired_deployment(cluster: &str) -> Option<String> {
    match crate::model::EtcdLayout::parse_name(cluster) {
        Some((crate::model::EtcdLayout::Operator, csm)) => Some(csm.to_owned()),
        _ => None,
    }
}

/// The label selector of the cluster's member pods.
pub(super) fn members_of(cluster: &str) -> String {
    crate::model::EtcdLayout::Operator.pod_selector(cluster, "")
}

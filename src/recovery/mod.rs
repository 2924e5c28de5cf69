//! Everything that decides and performs the recovery of a service's etcd cluster, for both
//! layouts: the decision ([`assess`]: health, backups, restore or rebuild or nothing), the
//! Bitnami StatefulSet's sequence ([`bitnami`], CSM ≥ 1.5) and the etcd-operator's
//! ([`operator`], CSM ≤ 1.4). The steps in `handlers` name what runs; this module does it.

pub mod assess;
pub mod bitnami;
pub mod operator;

/// The recovery steps before a service's own (`"etcd": "restore" | "rebuild" | "auto"`).
pub const ETCD_ASSESS: &str = "etcd-assess";
pub const ETCD_SAFETY_SNAPSHOT: &str = "etcd-safety-snapshot";
pub const ETCD_RECOVER: &str = "etcd-recover";

//! The service's etcd client and what it knows of etcd clusters: where they are
//! ([`layout`]), how they are doing, their backups ([`backups`]) and how they are restored.
//!
//! The client ([`EtcdClient`]) talks to etcd through its own JSON gateway, which every etcd
//! 3.4+ serves on the client port: [`client`] has the connection and the key-value reads,
//! [`members`] the membership calls, [`maintenance`] one member's status, alarms and snapshot.

pub mod backup_drill;
pub mod backups;
mod client;
mod config;
pub mod container;
mod error;
pub mod layout;
mod maintenance;
mod members;
pub mod quota;
mod recovery_config;
pub mod restore_tool;
pub mod snapshot_db;

pub use client::{EtcdClient, EtcdStatus, KeyEntry, KeyPage};
pub use config::EtcdConfig;
pub use error::EtcdError;
pub use maintenance::{EtcdAlarm, MemberStatus};
pub use members::EtcdMember;
pub use recovery_config::{InvalidSetting, RecoveryConfig};

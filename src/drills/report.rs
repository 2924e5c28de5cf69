//! What a drill found, as stored (JSON, `drills.report`) and shown (`GET
//! /etcd-clusters/{name}/drills`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::data::DataCount;
use crate::etcd::backups::check::BackupCheck;

/// A drill's findings, step by step; a step not reached is absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DrillReport {
    /// The backup drilled.
    pub backup: Option<DrilledBackup>,
    /// Its integrity, as a backup check proves it: the SHA-256 trailer, the database read
    /// whole (revision, total keys, size, hash), the restore by the real tool.
    pub integrity: Option<BackupCheck>,
    /// The restore into the scratch directory (`etcdutl snapshot restore`, or etcd 3.4's
    /// `etcdctl snapshot restore`): an estimate of the restore part of a real recovery.
    pub restore: Option<RestoreFacts>,
    /// The real etcd that served the restored data.
    pub scratch_etcd: Option<ScratchEtcdFacts>,
    /// The live cluster, read for the comparison.
    pub live: Option<LiveFacts>,
    /// The keys by the data they are (the service's known prefixes, then first path
    /// segments), in the backup and live.
    pub data: Vec<DataCount>,
    /// Why the drill did not pass (empty when it passed).
    pub problems: Vec<String>,
}

/// The backup drilled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DrilledBackup {
    pub name: String,
    /// The copy read: its path in the snapshotter directory, or its S3 URL (downloaded into
    /// the drill's scratch directory).
    pub location: String,
    pub size: u64,
    /// When it was taken (its copy's modification time).
    pub taken_at: DateTime<Utc>,
    /// Its age when drilled.
    pub age_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RestoreFacts {
    /// `etcdutl` or `etcdctl`.
    pub tool: String,
    pub version: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScratchEtcdFacts {
    pub version: String,
    /// Its client URL (loopback, in the service's pod).
    pub url: String,
    /// The backend quota it ran with (at least the database's size).
    pub quota_bytes: u64,
    /// Its revision: the backup's.
    pub revision: u64,
    /// The keys it serves (a count through etcd, which must equal the live keys the database
    /// holds).
    pub keys: u64,
    /// How long it took to answer healthy.
    pub start_seconds: f64,
}

/// The live cluster when the drill read it; `error` says why it could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LiveFacts {
    pub endpoint: Option<String>,
    pub revision: Option<u64>,
    pub keys: Option<u64>,
    /// Why the live cluster is not compared (it does not answer, no client Service, `[etcd]
    /// enabled = false`). The drill's verdict on the backup stands without it.
    pub error: Option<String>,
}

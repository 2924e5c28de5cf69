//! What a rebuild or restore saved, typed, and the journal of the re-create nested in a rebuild.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recovery::journal::Journaled;
use crate::{
    cluster::DeploymentScale,
    etcd::EtcdStatus,
    step::{Journal, StepError},
};

/// What a rebuild or restore saved, field by field as it went (the step's data; a resume
/// reads it back and carries on). The nested [`recreate`] step's own data is under `recreate`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct OperatorJournal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cluster: Option<String>,
    /// The service Deployment's Scale before the rebuild took it to 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deployment: Option<DeploymentScale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) recreate: Option<Value>,
    /// The member pods Running and Ready at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) members: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) etcd: Option<EtcdStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deployment_restored: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deployment_pods_ready: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) periodic_backup_deleted: Option<String>,
    /// A dry run's rebuild: the sanitized manifest a real run would store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) manifest: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) restore: Option<RestorePlan>,
    /// A dry run's restore: the EtcdRestore a real run would create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) etcd_restore: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) restore_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) restore_deleted: Option<bool>,
}

pub(super) type Record<'a> = Journaled<'a, OperatorJournal>;

/// The journal the nested [`recreate`] step writes to: its data under `recreate` in the record.
pub(super) struct RecreateJournal<'a, 'b> {
    pub(super) record: &'b Record<'a>,
}

#[async_trait::async_trait]
impl Journal for RecreateJournal<'_, '_> {
    async fn save(&self, data: &Value) -> Result<(), StepError> {
        let data = data.clone();
        self.record
            .update(|saved| saved.recreate = Some(data))
            .await
    }

    async fn log(&self, message: &str) {
        self.record.journal().log(message).await;
    }
}

/// Where the restore operator finds a backup: the S3 settings of the cluster's periodic
/// `EtcdBackup` (`spec.s3`), with the object's path `<bucket>/<service>/<backup>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// `<bucket>/<service>/<backup>`, as `EtcdRestore.spec.s3.path` wants it.
    pub path: String,
    pub aws_secret: String,
    pub endpoint: String,
    pub force_path_style: bool,
    /// The `EtcdBackup` the settings came from.
    pub from: String,
}

/// What a restore stores before it creates anything.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct RestorePlan {
    pub(super) cluster: String,
    pub(super) backup: String,
    pub(super) source: RestoreSource,
    /// The uid of the cluster the restore replaces.
    pub(super) original_uid: String,
    /// Its sanitized manifest: if the restore operator deletes it and fails, this is what it
    /// was (a rebuild can create it again from here).
    pub(super) manifest: Value,
    /// The run that planned it (its `EtcdRestore` carries it as [`RUN_ANNOTATION`]).
    #[serde(default)]
    pub(super) run_id: String,
}

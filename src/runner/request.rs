//! What a caller asks a run to do, checked before anything is stored.

use crate::{
    model::{EtcdMode, Service},
    run::Run,
};

use super::error::*;

/// A request for a new run, validated by the API layer.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub services: Vec<Service>,
    pub dry_run: bool,
    pub reason: Option<String>,
    pub requested_by: String,
    pub idempotency_key: Option<String>,
    /// What the run does with each service's etcd cluster before repopulating it.
    pub etcd: EtcdMode,
    /// `restore` only: the backup to restore from (`None`: the newest).
    pub backup: Option<String>,
    /// The etcd clusters the requester confirmed the run may rebuild or restore: a real run
    /// with a destructive `etcd` mode must name exactly the clusters it may touch.
    pub confirm: Vec<String>,
    /// `restore`/`rebuild`: the request accepts losing what the live cluster holds beyond the
    /// backup (all it holds, for a rebuild).
    pub discard_newer: bool,
}

impl RunRequest {
    /// What makes two requests "the same" for an idempotency key. The etcd fields are left
    /// out when they are the defaults, so that keys stored before they existed still match.
    pub(super) fn fingerprint(&self) -> String {
        let mut services = self.services.clone();
        services.sort();
        services.dedup();
        let mut fingerprint = serde_json::json!({
            "services": services,
            "dry_run": self.dry_run,
            "reason": self.reason,
        });
        if self.etcd != EtcdMode::Check || self.backup.is_some() || !self.confirm.is_empty() {
            fingerprint["etcd"] = serde_json::json!(self.etcd);
            fingerprint["backup"] = serde_json::json!(self.backup);
            fingerprint["confirm"] = serde_json::json!(sorted(&self.confirm));
        }
        if self.discard_newer {
            fingerprint["discard_newer"] = serde_json::json!(true);
        }
        fingerprint.to_string()
    }

    /// Checks that the request confirms exactly the etcd clusters `needed` (those of its
    /// services on the release in force), when it has to: a real run with a destructive mode,
    /// or a dry run that names clusters (it rehearses the real request). A named `backup` must
    /// be of the one cluster the run restores.
    pub(super) fn check_confirmed(&self, needed: Vec<String>) -> Result<(), RunnerError> {
        let given = sorted(&self.confirm);
        // A repair confirms clusters only to let it replace their members.
        let must_confirm = (self.etcd.is_destructive() && !self.dry_run)
            || (self.etcd != EtcdMode::Check && !given.is_empty());
        if must_confirm && given != needed {
            return Err(RunnerError::Unconfirmed {
                mode: self.etcd,
                needed,
                given,
            });
        }
        if let Some(backup) = &self.backup
            && needed.len() > 1
        {
            return Err(RunnerError::BackupAmbiguous {
                backup: backup.clone(),
                clusters: needed,
            });
        }
        Ok(())
    }
}

/// `names` sorted, each once.
pub(super) fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    names
}

pub enum Created {
    New(Run),
    /// The run an earlier request with the same idempotency key created.
    Existing(Run),
}

//! The service's etcd cluster: healthy before the service is repopulated (the runbook's
//! prerequisite, "A etcd cluster was rebuilt"), and its keys counted before and after, so the
//! run shows the data coming back. Read-only, so a dry run does it too.

use serde_json::{Value, json};

use crate::{
    etcd::{EtcdClient, EtcdConfig, EtcdError, EtcdStatus, layout},
    step::{StepContext, StepError, StepOutcome},
};

use serde::{Deserialize, Serialize};

use crate::handlers::kind::{Earlier, StepKind};

/// The names of the etcd steps around a service's own steps.
pub const CHECK_ETCD: &str = "check-etcd-cluster";
pub const RECOUNT_ETCD: &str = "recount-etcd-keys";

/// The keys the cluster held before the service was repopulated.
struct KeysBefore(u64);

/// Check the service's etcd cluster is healthy and count its keys: before the service is
/// repopulated (the runbook's prerequisite), or after (`after`), against the count before.
/// `endpoint` is the `[etcd] endpoint` override; empty: found from the cluster's layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckEtcd {
    pub cluster: String,
    pub endpoint: String,
    pub after: bool,
}

#[async_trait::async_trait]
impl StepKind for CheckEtcd {
    fn describe(&self) -> String {
        let Self {
            cluster,
            endpoint,
            after,
        } = self;
        if *after {
            return format!("count the keys of {cluster} again, to see the data came back");
        }
        format!(
            "check that the etcd cluster {cluster} ({}) is healthy and count its keys; stop here \
             if it is not",
            if endpoint.is_empty() {
                "its client Service"
            } else {
                endpoint
            }
        )
    }

    /// The check before the repopulation tells the recount how many keys there were.
    fn learn(&self, data: &Value, earlier: &mut Earlier) {
        if let Some(keys) = data.pointer("/status/keys").and_then(Value::as_u64)
            && !self.after
        {
            earlier.insert(KeysBefore(keys));
        }
    }

    async fn perform(
        &self,
        ctx: &StepContext<'_>,
        earlier: &Earlier,
    ) -> Result<StepOutcome, StepError> {
        check(ctx, earlier, &self.cluster, &self.endpoint, self.after).await
    }
}

pub async fn check(
    ctx: &StepContext<'_>,
    earlier: &Earlier,
    cluster: &str,
    endpoint: &str,
    after: bool,
) -> Result<StepOutcome, StepError> {
    let decided = earlier.recovery();
    if let Some(recovered) = decided.planned_recovery().filter(|_| ctx.mode.is_dry_run()) {
        return StepOutcome::done(
            format!(
                "dry run: would {} once the cluster is {recovered} by step etcd-recover; as it is \
                 now, before that, it says nothing of what the real run would find",
                if after {
                    "count its keys again"
                } else {
                    "check it is healthy and count its keys"
                }
            ),
            json!({ "cluster": cluster }),
        );
    }
    let endpoint = &match endpoint {
        "" => discover(ctx, cluster).await?,
        given => given.to_owned(),
    };
    let status = match read_status(endpoint, ctx.etcd).await {
        Ok(status) => status,
        Err(err) if !after => {
            return Err(StepError::Failed(format!(
                "the etcd cluster {cluster} is not ready to be repopulated: {err}. The runbook's \
                 prerequisite is a rebuilt, healthy cluster (see \"Rebuild Unhealthy etcd \
                 Clusters\"); rebuild it, then resume this run. If the cluster is fine, check \
                 [etcd] in the configuration (endpoint, ca_file, cert_file, key_file; or \
                 enabled = false to skip these checks)"
            )));
        }
        Err(err) => return Err(StepError::Etcd(err)),
    };
    let leader = status.leader.clone().unwrap_or_default();
    let data = json!({
        "cluster": cluster,
        "endpoint": endpoint,
        "status": &status,
    });
    let keys = status.keys;
    let message = if after {
        match earlier.get::<KeysBefore>() {
            Some(KeysBefore(before)) => format!(
                "{cluster} holds {keys} key(s) now, {before} before the service was repopulated"
            ),
            None => format!("{cluster} holds {keys} key(s) now"),
        }
    } else if keys == 0 {
        format!(
            "{cluster} is healthy (etcd {}, leader {leader}) and empty, as after a rebuild",
            status.version
        )
    } else if let Some(restored) = decided.restored_from() {
        format!(
            "{cluster} is healthy (etcd {}, leader {leader}) and holds {keys} key(s), restored \
             from {restored} by step etcd-recover",
            status.version
        )
    } else {
        format!(
            "{cluster} is healthy (etcd {}, leader {leader}) and already holds {keys} key(s): \
             repopulating is still safe, but check it really was rebuilt",
            status.version
        )
    };
    StepOutcome::done(message, data)
}

/// The client URL of `cluster` from its layout's client Service.
async fn discover(ctx: &StepContext<'_>, cluster: &str) -> Result<String, StepError> {
    let namespace = ctx.cluster.namespace();
    let Some(found) = layout::find(ctx.cluster, cluster).await? else {
        return Err(StepError::Failed(format!(
            "the etcd cluster {cluster} does not exist in namespace {namespace}: the runbook's \
             prerequisite is a rebuilt cluster (see \"Rebuild Unhealthy etcd Clusters\"); if this \
             is not the system's CSM release, set csm_release in the configuration"
        )));
    };
    layout::endpoint(ctx.cluster, &found, ctx.etcd)
        .await?
        .ok_or_else(|| {
            StepError::Failed(format!(
                "the etcd cluster {cluster} has no client Service {} in namespace {namespace}; \
                 set [etcd] endpoint to reach it",
                found.layout.client_service(cluster)
            ))
        })
}

/// The cluster's status, once it has said it is healthy and has a leader.
async fn read_status(endpoint: &str, config: &EtcdConfig) -> Result<EtcdStatus, EtcdError> {
    let client = EtcdClient::new(endpoint, config)?;
    client.check_health().await?;
    let status = client.status().await?;
    if status.leader.is_none() {
        return Err(EtcdError::Unhealthy {
            url: endpoint.to_owned(),
            reason: "no leader".to_owned(),
        });
    }
    Ok(status)
}

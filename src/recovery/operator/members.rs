//! Waiting for a rebuilt or restored cluster: its member pods, then etcd itself.

use serde_json::Value;

use crate::recovery::wait::{Deadline, wait_healthy};
use crate::{
    etcd::{EtcdClient, EtcdStatus, layout},
    step::{StepContext, StepError},
};

use super::{objects::*, record::Record};

/// The error with `note` appended to what it says.
pub(super) fn with_note(err: StepError, note: &str) -> StepError {
    match err {
        StepError::Cancelled(what) => StepError::Cancelled(format!("{what}{note}")),
        other => StepError::Failed(format!("{other}{note}")),
    }
}

/// Waits until the cluster's member pods are Ready (`spec.size` of them) and, when the etcd
/// checks are on, etcd answers healthy with a leader through the client Service; journals both.
pub(super) async fn members_up(
    ctx: &StepContext<'_>,
    record: &Record<'_>,
    cluster: &str,
    deadline: Deadline,
) -> Result<(Vec<String>, Option<EtcdStatus>), StepError> {
    let (members, status) = wait_members_up(ctx, cluster, deadline).await?;
    record
        .update(|saved| {
            saved.members = Some(members.clone());
            if let Some(status) = &status {
                saved.etcd = Some(status.clone());
            }
        })
        .await?;
    Ok((members, status))
}

async fn wait_members_up(
    ctx: &StepContext<'_>,
    cluster: &str,
    deadline: Deadline,
) -> Result<(Vec<String>, Option<EtcdStatus>), StepError> {
    let object = ctx
        .cluster
        .wait_object_running(&cluster_object(cluster), deadline.left(), ctx.cancel)
        .await?;
    let size = object
        .pointer("/spec/size")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    let members = ctx
        .cluster
        .wait_pods_ready(
            &members_of(cluster),
            usize::try_from(size).unwrap_or(1),
            deadline.left(),
            ctx.cancel,
        )
        .await?;
    if !ctx.etcd.enabled {
        return Ok((members, None));
    }
    let status = etcd_healthy(ctx, cluster, deadline).await?;
    Ok((members, Some(status)))
}

/// Asks etcd (through the cluster's client Service) until it is healthy with a leader.
pub(super) async fn etcd_healthy(
    ctx: &StepContext<'_>,
    cluster: &str,
    deadline: Deadline,
) -> Result<EtcdStatus, StepError> {
    let endpoint = match ctx.etcd.endpoint_of(cluster, ctx.cluster.namespace()) {
        Some(url) => url,
        None => layout::client_url(ctx.cluster, &format!("{cluster}-client"))
            .await?
            .ok_or_else(|| {
                StepError::Failed(format!(
                    "{cluster} runs, but its client Service {cluster}-client does not exist: \
                     the page says to restore (or rebuild) it again"
                ))
            })?,
    };
    let client = EtcdClient::new(&endpoint, ctx.etcd)?;
    let waiting_for = format!("etcd {cluster} to be healthy at {endpoint}");
    wait_healthy(deadline, ctx.cancel, &waiting_for, || async {
        Ok(match client.check_health().await {
            Ok(()) => match client.status().await {
                Ok(status) if status.leader.is_some() => Ok(status),
                Ok(_) => Err("no leader".to_owned()),
                Err(err) => Err(err.to_string()),
            },
            Err(err) => Err(err.to_string()),
        })
    })
    .await
}

//! Waiting for a condition over a watched set of objects.

use std::{fmt::Debug, sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Resource,
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::{client::Cluster, error::ClusterError, error::describe_kube_error};

/// A watch error as a person reads it.
fn describe(err: &watcher::Error) -> String {
    match err {
        watcher::Error::InitialListFailed(e) => {
            format!("listing failed: {}", describe_kube_error(e))
        }
        watcher::Error::WatchStartFailed(e) => {
            format!("starting the watch failed: {}", describe_kube_error(e))
        }
        watcher::Error::WatchFailed(e) => format!("the watch failed: {}", describe_kube_error(e)),
        watcher::Error::WatchError(status) => format!(
            "the watch failed: {}",
            describe_kube_error(&kube::Error::Api(status.clone()))
        ),
        other => other.to_string(),
    }
}

/// Watches the objects `config` selects until `check` over the complete current set returns
/// `Ok(value)`; `Err(description)` describes what is still missing (reported on timeout).
/// Watch errors (dropped streams, 5xx, 429) are retried with backoff by the watcher itself, and
/// counted as retries of `cluster`.
pub(crate) async fn watch_until<K, T>(
    cluster: &Cluster,
    (api, dyntype): (Api<K>, K::DynamicType),
    config: watcher::Config,
    timeout: Duration,
    cancel: &CancellationToken,
    waiting_for: &str,
    mut check: impl FnMut(&[Arc<K>]) -> Result<T, String>,
) -> Result<T, ClusterError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector(writer, watcher(api, config).default_backoff());
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::sleep(timeout);
    let mut deadline = std::pin::pin!(deadline);
    let mut complete = false;
    let mut last_seen = "nothing listed yet".to_owned();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                return Err(ClusterError::Cancelled { waiting_for: waiting_for.to_owned() });
            }
            _ = &mut deadline => {
                return Err(ClusterError::Timeout {
                    after: timeout,
                    waiting_for: waiting_for.to_owned(),
                    last_seen,
                });
            }
            event = stream.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => complete = true,
                Some(Ok(watcher::Event::Init)) => complete = false,
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    let error = describe(&err);
                    tracing::warn!(%error, waiting_for, "watch failed; retrying");
                    cluster.count_retry();
                    if !complete {
                        last_seen = format!("{error} (retrying)");
                    }
                    continue;
                }
                None => {
                    return Err(ClusterError::Timeout {
                        after: timeout,
                        waiting_for: waiting_for.to_owned(),
                        last_seen: format!("{last_seen} (watch ended)"),
                    });
                }
            }
        }
        if complete {
            match check(&reader.state()) {
                Ok(value) => return Ok(value),
                Err(missing) => last_seen = missing,
            }
        }
    }
}

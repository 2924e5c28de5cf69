//! Waiting for a condition over a watched set of objects.

use std::{fmt::Debug, sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Resource,
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::ClusterError;

/// Watches the objects `config` selects until `check` over the complete current set returns
/// `Ok(value)`; `Err(description)` describes what is still missing (reported on timeout).
/// Watch errors (dropped streams, 5xx, 429) are retried with backoff by the watcher itself.
pub(crate) async fn watch_until<K, T>(
    api: Api<K>,
    dyntype: K::DynamicType,
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
                    tracing::warn!(error = %err, waiting_for, "watch failed; retrying");
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

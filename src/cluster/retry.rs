//! Transient Kubernetes API errors (5xx, 429 beyond what the client retries itself, a dropped
//! connection) are retried with backoff for requests that are safe to repeat: reads, and the
//! writes that are idempotent as sent (deletes with a uid precondition; creates whose
//! `AlreadyExists` the caller resolves). How often is counted, so a step can say so.

use std::{future::Future, time::Duration};

use backon::{ExponentialBuilder, Retryable};

use super::{
    client::Cluster,
    error::{ClusterError, describe_kube_error},
};

/// 0.2 s, 0.4 s, ... up to 5 s between attempts, at most 8 retries or a minute in all: well
/// within any step's timeout, and long enough for an API server restart or a leader change.
const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_max_delay(Duration::from_secs(5))
    .with_factor(2.0)
    .with_max_times(8)
    .with_total_delay(Some(Duration::from_secs(60)))
    .with_jitter();

/// Whether a request that failed with `err` may succeed when sent again unchanged.
pub(crate) fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

impl Cluster {
    /// Sends the request `op` makes, again after transient errors (with backoff), and names
    /// `action` in the error. Only for requests that are safe to repeat.
    pub(crate) async fn retrying<T, Fut>(
        &self,
        action: &str,
        op: impl FnMut() -> Fut,
    ) -> Result<T, ClusterError>
    where
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut retries = 0u32;
        let result = op
            .retry(BACKOFF)
            .when(is_transient)
            .notify(|err, after| {
                retries += 1;
                self.count_retry();
                tracing::warn!(
                    error = %describe_kube_error(err),
                    retry_in = ?after,
                    action,
                    "transient Kubernetes API error; retrying"
                );
            })
            .await;
        result.map_err(|source| ClusterError::Api {
            action: action.to_owned(),
            source,
            retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                reason: reason.to_owned(),
                message: message.to_owned(),
                ..kube::core::Status::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn api_errors_read_as_code_reason_message() {
        assert_eq!(
            describe_kube_error(&api(400, "BadRequest", "bad selector")),
            "400 BadRequest: bad selector"
        );
        assert_eq!(
            describe_kube_error(&api(500, "", "etcdserver: leader changed")),
            "500: etcdserver: leader changed"
        );
    }

    #[test]
    fn server_errors_and_throttling_are_transient_client_errors_not() {
        assert!(is_transient(&api(500, "InternalError", "x")));
        assert!(is_transient(&api(503, "ServiceUnavailable", "x")));
        assert!(is_transient(&api(429, "TooManyRequests", "x")));
        assert!(!is_transient(&api(404, "NotFound", "x")));
        assert!(!is_transient(&api(409, "Conflict", "x")));
        assert!(!is_transient(&api(422, "Invalid", "x")));
    }
}

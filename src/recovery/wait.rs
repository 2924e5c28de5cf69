//! The waits every recovery shares: one [`Deadline`] for all the waits of one attempt, and
//! one [`wait_healthy`] (etcd has nothing to watch for health, so it is asked again, with a
//! growing pause). A cancel ends a wait as [`StepError::Cancelled`], whoever waits.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use crate::{
    cluster::ClusterError,
    etcd::layout::{self, EtcdClusterReport, LocatedCluster},
    step::{StepContext, StepError},
};

/// When the waits of one recovery attempt (`[recovery] timeout` from its start) must be over.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    /// What is left; zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// What is left, at least a second, for a wait that must look once before it fails.
    pub fn left(self) -> Duration {
        self.remaining().max(Duration::from_secs(1))
    }
}

/// The first and the longest pause between two looks at a cluster's health.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// Asks `probe` until it answers `Ok(Ok(_))` (healthy), with a pause growing from 0.1 s to
/// 2 s, until `deadline` (a timeout naming `waiting_for` and what the probe said last) or
/// `token` (cancelled). `Ok(Err(problems))` is "not healthy yet"; an `Err` ends the wait.
pub async fn wait_healthy<T, F, Fut>(
    deadline: Deadline,
    token: &CancellationToken,
    waiting_for: &str,
    mut probe: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>, StepError>>,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let last_seen = match probe().await? {
            Ok(healthy) => return Ok(healthy),
            Err(problems) => problems,
        };
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            return Err(StepError::Cluster(ClusterError::Timeout {
                after: started.elapsed(),
                waiting_for: waiting_for.to_owned(),
                last_seen,
            }));
        }
        tokio::select! {
            () = token.cancelled() => {
                return Err(StepError::Cancelled(format!(
                    "waiting for {waiting_for} ({last_seen})"
                )));
            }
            () = tokio::time::sleep(pause.min(remaining)) => {}
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// The cluster's report once it says healthy (healthy: every member answers, the cluster
/// serves, no alarm), asked through [`wait_healthy`].
pub async fn healthy_report(
    ctx: &StepContext<'_>,
    found: &LocatedCluster,
    deadline: Deadline,
    token: &CancellationToken,
) -> Result<EtcdClusterReport, StepError> {
    let waiting_for = format!("{} to be healthy", found.name);
    wait_healthy(deadline, token, &waiting_for, || async {
        let report = layout::report(ctx.cluster, found, ctx.etcd).await?;
        Ok(if report.healthy {
            Ok(report)
        } else {
            Err(report.problems.join("; "))
        })
    })
    .await
}

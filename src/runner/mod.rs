//! Runs execute here as background tasks: one tokio task per run, its services concurrently,
//! each service's steps in order. Every transition is written to the store first; at most one
//! active run per service; cancellation and shutdown stop runs at the next safe point.

mod detect;
mod error;
mod journal;
mod request;
mod state;
mod task;

use std::{sync::Arc, time::Duration};

use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    cluster::{Cluster, Mode},
    config::Config,
    csm::CsmClients,
    handlers::{self},
    metrics::Metrics,
    model::{EtcdMode, Service, State, new_run_id},
    release::{ReleaseInForce, ReleaseSetting},
    run::Run,
    store::{NewRun, NewStep, NewTask, Store, StoreError},
};

pub use detect::{DetectError, Evidence, PRODUCT_CATALOG, detect};
pub use error::RunnerError;
use error::*;
use request::sorted;
pub use request::{Created, RunRequest};
use state::*;
use task::*;

#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl Runner {
    /// Creates the runner and marks every run a previous process left unfinished as
    /// interrupted (they can be resumed).
    pub async fn start(
        store: Store,
        cluster: Cluster,
        csm: CsmClients,
        config: Arc<Config>,
    ) -> Result<Runner, StoreError> {
        for run in store.mark_interrupted(now()).await? {
            tracing::warn!(run_id = %run.run_id, steps = ?run.steps, "run interrupted by the previous stop; resume it to continue");
        }
        Ok(Runner {
            inner: Arc::new(Inner {
                store,
                cluster,
                csm,
                config,
                active: Mutex::new(Active::default()),
                tracker: TaskTracker::new(),
                finished: tokio::sync::Notify::new(),
                metrics: Arc::new(Metrics::new()),
                detected: Mutex::new(None),
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The cluster the runs act on.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The CSM release whose runbook runs follow: the configured one, or the one detected in
    /// the cluster (once; a failed detection is tried again at the next call).
    pub async fn release(&self) -> Result<ReleaseInForce, DetectError> {
        if let ReleaseSetting::Pinned(release) = self.inner.config.csm_release {
            return Ok(ReleaseInForce::pinned(release));
        }
        let mut detected = self.inner.detected.lock().await;
        if let Some(found) = detected.as_ref() {
            return Ok(found.clone());
        }
        let found = detect(&self.inner.cluster).await?;
        tracing::info!(release = %found.release, evidence = ?found.evidence, "CSM release detected");
        *detected = Some(found.clone());
        Ok(found)
    }

    /// The etcd clusters a run of `services` may rebuild or restore on the release in force
    /// (what a real run with a destructive `etcd` mode must confirm), sorted.
    pub async fn etcd_clusters(&self, services: &[Service]) -> Result<Vec<String>, RunnerError> {
        let release = self.release().await?;
        Ok(etcd_clusters(release.profile(), services))
    }

    /// The CSM API clients (for snapshots taken outside a run).
    pub fn csm(&self) -> &CsmClients {
        &self.inner.csm
    }

    /// The service's metrics (runs, steps, webhook deliveries).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Whether run `id` is executing now (its log may still grow).
    pub async fn is_active(&self, id: Uuid) -> bool {
        self.inner.active.lock().await.runs.contains_key(&id)
    }

    /// Waits until run `id` is not executing. Every event of the execution is stored when
    /// this returns: the run task appends its last event before it leaves the active set.
    pub async fn wait_inactive(&self, id: Uuid) {
        loop {
            let notified = self.inner.finished.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if !self.is_active(id).await {
                return;
            }
            notified.await;
        }
    }

    /// Plans, stores and starts a run; returns at once.
    pub async fn create(&self, request: RunRequest) -> Result<Created, RunnerError> {
        let inner = &self.inner;
        let mut active = inner.active.lock().await;
        if active.shutting_down {
            return Err(RunnerError::ShuttingDown);
        }
        let fingerprint = request.fingerprint();
        if let Some(key) = &request.idempotency_key
            && let Some((run_id, stored)) = inner.store.find_idempotent(key).await?
        {
            if stored != fingerprint {
                return Err(RunnerError::IdempotencyMismatch {
                    key: key.clone(),
                    run_id,
                });
            }
            let run = inner
                .store
                .get_run(run_id)
                .await?
                .ok_or(RunnerError::NotFound(run_id))?;
            return Ok(Created::Existing(run));
        }
        let release = self.release().await?;
        let profile = release.profile();
        let mut services = request.services.clone();
        services.sort();
        services.dedup();
        let mut tasks = Vec::new();
        let mut missing = Vec::new();
        for &service in &services {
            match handlers::plan(
                service,
                &inner.config,
                profile,
                request.etcd,
                request.backup.as_deref(),
                request.discard_newer,
                &request.confirm,
            ) {
                Some(steps) => tasks.push(NewTask {
                    service,
                    steps: steps
                        .into_iter()
                        .map(|step| NewStep {
                            name: step.name,
                            spec: serde_json::to_value(&step.action)
                                .unwrap_or(serde_json::Value::Null),
                        })
                        .collect(),
                }),
                None => missing.push(service),
            }
        }
        if !missing.is_empty() {
            return Err(RunnerError::NotInRelease {
                services: missing,
                release: release.release,
                supported: handlers::implemented(profile),
            });
        }
        request.check_confirmed(etcd_clusters(profile, &services))?;
        check_free(&active, &services)?;
        if request.etcd.may_delete(!request.confirm.is_empty()) && !request.dry_run {
            let clusters = etcd_clusters(profile, &services);
            if let Some((run_id, cluster)) = inner
                .store
                .interrupted_recoveries(handlers::ETCD_RECOVER)
                .await?
                .into_iter()
                .find(|(_, cluster)| clusters.contains(cluster))
            {
                return Err(RunnerError::InterruptedRecovery { run_id, cluster });
            }
        }
        let id = new_run_id();
        inner
            .store
            .create_run(
                NewRun {
                    id,
                    reason: request.reason.clone(),
                    dry_run: request.dry_run,
                    requested_by: request.requested_by.clone(),
                    idempotency: request.idempotency_key.clone().map(|k| (k, fingerprint)),
                    csm_release: Some(release.clone()),
                    etcd: request.etcd,
                    backup: request.backup.clone(),
                    confirm: sorted(&request.confirm),
                    discard_newer: request.discard_newer,
                    tasks,
                },
                now(),
            )
            .await?;
        inner
            .store
            .append_event(
                id,
                "info",
                None,
                None,
                &format!(
                    "run created by {} for {}{}{}",
                    request.requested_by,
                    list(&services),
                    match request.etcd {
                        EtcdMode::Check => String::new(),
                        mode => format!(
                            ", etcd {mode}{} (confirmed: {})",
                            request
                                .backup
                                .as_ref()
                                .map(|b| format!(" from backup {b}"))
                                .unwrap_or_default(),
                            names(&sorted(&request.confirm))
                        ),
                    },
                    if request.dry_run { " (dry run)" } else { "" }
                ),
                now(),
            )
            .await?;
        inner
            .store
            .append_event(id, "info", None, None, &release.describe(), now())
            .await?;
        self.launch(
            &mut active,
            id,
            &services,
            Mode::dry_run_if(request.dry_run),
        );
        drop(active);
        let run = inner
            .store
            .get_run(id)
            .await?
            .ok_or(RunnerError::NotFound(id))?;
        Ok(Created::New(run))
    }

    /// Asks a running run to stop at its next safe point; it ends `cancelled`.
    pub async fn cancel(&self, id: Uuid) -> Result<Run, RunnerError> {
        let inner = &self.inner;
        let active = inner.active.lock().await;
        let run = inner
            .store
            .get_run(id)
            .await?
            .ok_or(RunnerError::NotFound(id))?;
        match active.runs.get(&id) {
            Some(control) => {
                control.stop(StopReason::Cancel);
                inner
                    .store
                    .append_event(id, "warn", None, None, "cancel requested", now())
                    .await?;
                Ok(run)
            }
            None => Err(RunnerError::WrongState {
                run_id: id,
                state: run.state,
                allowed: "pending or running",
                verb: "cancelled",
            }),
        }
    }

    /// Executes an interrupted or failed run's unfinished services again, as a new attempt
    /// on the same run. Steps are idempotent and find what they saved before.
    pub async fn resume(&self, id: Uuid) -> Result<Run, RunnerError> {
        let inner = &self.inner;
        let mut active = inner.active.lock().await;
        if active.shutting_down {
            return Err(RunnerError::ShuttingDown);
        }
        let run = inner
            .store
            .get_run(id)
            .await?
            .ok_or(RunnerError::NotFound(id))?;
        if !matches!(run.state, State::Interrupted | State::Failed) || active.runs.contains_key(&id)
        {
            return Err(RunnerError::WrongState {
                run_id: id,
                state: run.state,
                allowed: "interrupted or failed",
                verb: "resumed",
            });
        }
        let services: Vec<Service> = run
            .services
            .iter()
            .filter(|t| t.state != State::Succeeded)
            .map(|t| t.service)
            .collect();
        check_free(&active, &services)?;
        // A resume acts on what its journal says of the cluster: refused when someone (another
        // run, a person) changed the cluster since.
        if !run.dry_run {
            for &service in &services {
                for step in inner.store.task_steps(id, service).await? {
                    let (Some(data), false) = (&step.data, step.state == State::Succeeded) else {
                        continue;
                    };
                    if let Some(why) =
                        handlers::resume_blocker(&inner.cluster, &step.spec, data, &id.to_string())
                            .await
                            .map_err(|e| RunnerError::ResumeStale {
                                run_id: id,
                                why: format!("the cluster could not be read to check it ({e})"),
                            })?
                    {
                        return Err(RunnerError::ResumeStale { run_id: id, why });
                    }
                }
            }
        }
        inner.store.prepare_resume(id).await?;
        inner
            .store
            .append_event(
                id,
                "info",
                None,
                None,
                &format!(
                    "resumed as attempt {} for {}",
                    run.attempt + 1,
                    list(&services)
                ),
                now(),
            )
            .await?;
        self.launch(&mut active, id, &services, Mode::dry_run_if(run.dry_run));
        drop(active);
        inner
            .store
            .get_run(id)
            .await?
            .ok_or(RunnerError::NotFound(id))
    }

    /// Marks an interrupted or failed run `abandoned` by `by`: it can never be resumed, and no
    /// longer holds back a new recovery of its etcd clusters. The message says what its
    /// clusters look like now.
    pub async fn abandon(&self, id: Uuid, by: &str) -> Result<Run, RunnerError> {
        let inner = &self.inner;
        let active = inner.active.lock().await;
        let run = inner
            .store
            .get_run(id)
            .await?
            .ok_or(RunnerError::NotFound(id))?;
        if !matches!(run.state, State::Interrupted | State::Failed) || active.runs.contains_key(&id)
        {
            return Err(RunnerError::WrongState {
                run_id: id,
                state: run.state,
                allowed: "interrupted or failed",
                verb: "abandoned",
            });
        }
        let mut clusters = Vec::new();
        for task in &run.services {
            for step in inner.store.task_steps(id, task.service).await? {
                if let Some(cluster) = step.spec["cluster"]
                    .as_str()
                    .filter(|_| step.name == handlers::ETCD_RECOVER)
                {
                    clusters.push(
                        handlers::describe_cluster_now(&inner.cluster, &inner.config, cluster)
                            .await,
                    );
                }
            }
        }
        let message = if clusters.is_empty() {
            format!("abandoned by {by}: it can never be resumed")
        } else {
            format!(
                "abandoned by {by}: it can never be resumed; {}",
                clusters.join("; ")
            )
        };
        inner.store.abandon_run(id, &message, now()).await?;
        inner
            .store
            .append_event(id, "warn", None, None, &message, now())
            .await?;
        drop(active);
        inner
            .store
            .get_run(id)
            .await?
            .ok_or(RunnerError::NotFound(id))
    }

    /// Stops accepting runs, asks the running ones to stop at their next safe point (they end
    /// `interrupted`, resumable after the restart) and waits up to `grace` for them.
    pub async fn shutdown(&self, grace: Duration) {
        {
            let mut active = self.inner.active.lock().await;
            active.shutting_down = true;
            for control in active.runs.values() {
                control.stop(StopReason::Shutdown);
            }
        }
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "runs still active after the shutdown grace period; they will be marked interrupted at the next start"
            );
        }
    }

    /// Waits until no run is executing.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.finished.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.inner.active.lock().await.runs.is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn launch(&self, active: &mut Active, id: Uuid, services: &[Service], mode: Mode) {
        let control = Control::new();
        for &service in services {
            active.services.insert(service, id);
        }
        active.runs.insert(id, control.clone());
        self.inner.metrics.run_started();
        let inner = self.inner.clone();
        let span = tracing::info_span!("run", run_id = %id, dry_run = mode.is_dry_run());
        self.inner
            .tracker
            .spawn(execute_run(inner, id, mode, control).instrument(span));
    }
}

/// The etcd clusters of `services` on the release of `profile`, sorted, each once; services
/// without a cluster of their own (MEDS, External DNS) add none.
fn etcd_clusters(profile: &crate::release::Profile, services: &[Service]) -> Vec<String> {
    let clusters: Vec<String> = services
        .iter()
        .filter_map(|&service| profile.etcd_cluster(service))
        .collect();
    sorted(&clusters)
}

fn check_free(active: &Active, services: &[Service]) -> Result<(), RunnerError> {
    for service in services {
        if let Some(&run_id) = active.services.get(service) {
            return Err(RunnerError::Conflict {
                service: *service,
                run_id,
            });
        }
    }
    Ok(())
}

//! Runs execute here as background tasks: one tokio task per run, its services concurrently,
//! each service's steps in order. Every transition is written to the store first; at most one
//! active run per service; cancellation and shutdown stop runs at the next safe point.

mod journal;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use tokio::sync::Mutex;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    cluster::{Cluster, RunEvents},
    config::Config,
    csm::CsmClients,
    handlers::{self, Action, Decided, StepContext},
    metrics::Metrics,
    model::{EtcdMode, Service, State, new_run_id},
    release::{DetectError, Release, ReleaseInForce, ReleaseSetting, detect},
    run::{Run, ServiceTask},
    store::{NewRun, NewStep, NewTask, StepKey, Store, StoreError},
};
use journal::StoreJournal;

/// The one place the runner reads the time.
fn now() -> DateTime<Utc> {
    Utc::now()
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("service {service} is already being repopulated by run {run_id}")]
    Conflict { service: Service, run_id: Uuid },
    #[error("idempotency key {key:?} was used for run {run_id} with a different request")]
    IdempotencyMismatch { key: String, run_id: Uuid },
    #[error("no handler for {}: this build supports {}", list(.requested), list(.supported))]
    NotImplemented {
        requested: Vec<Service>,
        supported: Vec<Service>,
    },
    #[error("{}: not part of CSM {release} (its runbook lists {})", quoted(.services), list(.supported))]
    NotInRelease {
        services: Vec<Service>,
        release: Release,
        supported: Vec<Service>,
    },
    #[error(
        "a real etcd {mode} run may rebuild or restore every etcd cluster it touches: confirm \
         exactly {} (\"confirm\": {}); the request confirmed {}",
        names(.needed), json_list(.needed), names(.given)
    )]
    Unconfirmed {
        mode: EtcdMode,
        /// The clusters the run may touch: what `confirm` must name.
        needed: Vec<String>,
        /// What the request's `confirm` named.
        given: Vec<String>,
    },
    #[error(
        "backup {backup:?} is one backup of one etcd cluster, but this run would restore {}: \
         name one service's cluster per run, or leave backup out to restore each from its newest",
        names(.clusters)
    )]
    BackupAmbiguous {
        backup: String,
        clusters: Vec<String>,
    },
    #[error(transparent)]
    Release(#[from] DetectError),
    #[error("run {0} not found")]
    NotFound(Uuid),
    #[error("run {run_id} is {state}; only {allowed} runs can be {verb}")]
    WrongState {
        run_id: Uuid,
        state: State,
        allowed: &'static str,
        verb: &'static str,
    },
    #[error(
        "run {run_id} was interrupted while it recovered the etcd cluster {cluster}, and may \
         have left it mid-recovery: resume it (POST /repopulations/{run_id}/resume), or abandon \
         it (POST /repopulations/{run_id}/abandon, role recover) to start a new recovery of \
         {cluster}"
    )]
    InterruptedRecovery { run_id: Uuid, cluster: String },
    #[error(
        "run {run_id} cannot be resumed: {why}. Resuming it would act on a cluster it no longer \
         knows; abandon it (POST /repopulations/{run_id}/abandon) and start a new run, which \
         weighs the cluster as it is"
    )]
    ResumeStale { run_id: Uuid, why: String },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn quoted(services: &[Service]) -> String {
    services
        .iter()
        .map(|s| format!("{:?}", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names for a message: `a, b`, or `none`.
fn names(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Names as the JSON array a request would carry.
fn json_list(names: &[String]) -> String {
    serde_json::to_string(names).unwrap_or_default()
}

fn list(services: &[Service]) -> String {
    services
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

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
    fn fingerprint(&self) -> String {
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
    fn check_confirmed(&self, needed: Vec<String>) -> Result<(), RunnerError> {
        let given = sorted(&self.confirm);
        let must_confirm = self.etcd.is_destructive() && (!self.dry_run || !given.is_empty());
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
fn sorted(names: &[String]) -> Vec<String> {
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

/// Why a run's token was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopReason {
    Cancel,
    Shutdown,
}

#[derive(Clone)]
struct Control {
    /// Cancelled by a cancel and by a shutdown.
    token: CancellationToken,
    /// Cancelled by a shutdown only: a step past its point of no return (an etcd recovery
    /// whose data PVCs are being deleted) finishes its work on a cancel, but stops at its next
    /// journalled phase when the process stops.
    shutdown: CancellationToken,
    reason: Arc<StdMutex<Option<StopReason>>>,
}

impl Control {
    fn new() -> Self {
        Control {
            token: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            reason: Arc::new(StdMutex::new(None)),
        }
    }

    fn stop(&self, reason: StopReason) {
        let mut current = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        current.get_or_insert(reason);
        if reason == StopReason::Shutdown {
            self.shutdown.cancel();
        }
        self.token.cancel();
    }

    fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state a step, task or run ends in when stopped.
    fn stopped_state(&self) -> State {
        match self.reason() {
            Some(StopReason::Shutdown) => State::Interrupted,
            _ => State::Cancelled,
        }
    }
}

#[derive(Default)]
struct Active {
    services: HashMap<Service, Uuid>,
    runs: HashMap<Uuid, Control>,
    shutting_down: bool,
}

struct Inner {
    store: Store,
    cluster: Cluster,
    csm: CsmClients,
    config: Arc<Config>,
    active: Mutex<Active>,
    tracker: TaskTracker,
    /// Notified whenever a run stops executing.
    finished: tokio::sync::Notify,
    metrics: Arc<Metrics>,
    /// The release detected (`csm_release = "auto"`), once it was.
    detected: Mutex<Option<ReleaseInForce>>,
}

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
        if request.etcd.is_destructive() && !request.dry_run {
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
        self.launch(&mut active, id, &services, request.dry_run);
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
        self.launch(&mut active, id, &services, run.dry_run);
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

    fn launch(&self, active: &mut Active, id: Uuid, services: &[Service], dry_run: bool) {
        let control = Control::new();
        for &service in services {
            active.services.insert(service, id);
        }
        active.runs.insert(id, control.clone());
        self.inner.metrics.run_started();
        let inner = self.inner.clone();
        let span = tracing::info_span!("run", run_id = %id, dry_run);
        self.inner
            .tracker
            .spawn(execute_run(inner, id, dry_run, control).instrument(span));
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

async fn execute_run(inner: Arc<Inner>, id: Uuid, dry_run: bool, control: Control) {
    let started = Instant::now();
    let state = match drive_run(&inner, id, dry_run, &control).await {
        Ok(state) => Some(state),
        Err(err) => {
            // The store failed under us: leave the run as it is (pending/running); the next
            // start marks it interrupted, and it can be resumed.
            tracing::error!(error = %err, "run aborted: the store failed");
            None
        }
    };
    inner.metrics.run_finished(state, started.elapsed());
    let mut active = inner.active.lock().await;
    active.runs.remove(&id);
    active.services.retain(|_, run| *run != id);
    drop(active);
    inner.finished.notify_waiters();
}

async fn drive_run(
    inner: &Arc<Inner>,
    id: Uuid,
    dry_run: bool,
    control: &Control,
) -> Result<State, StoreError> {
    let (store, started) = (&inner.store, Instant::now());
    store.start_run(id, now()).await?;
    tracing::info!("run started");
    let services = store.pending_tasks(id).await?;
    let tasks = services.into_iter().map(|service| {
        let span = tracing::info_span!("task", service = %service);
        run_task(inner, id, service, dry_run, control).instrument(span)
    });
    for result in join_all(tasks).await {
        result?;
    }
    let run = store
        .get_run(id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))?;
    let (state, message) = (run_state(&run, control), summary_line(&run.services));
    store.finish_run(id, state, &message, now()).await?;
    store
        .append_event(
            id,
            level_of(state),
            None,
            None,
            &format!("run {state}: {message}"),
            now(),
        )
        .await?;
    tracing::info!(state = %state, "{message}");
    inner
        .metrics
        .run_ended(run.etcd, run.dry_run, state, started.elapsed());
    Ok(state)
}

/// The run's final state from its tasks: failure wins, then stops, then work left for a person.
fn run_state(run: &Run, control: &Control) -> State {
    let any = |state: State| run.services.iter().any(|t| t.state == state);
    if any(State::Failed) {
        State::Failed
    } else if any(State::Interrupted)
        || (any(State::Cancelled) && control.stopped_state() == State::Interrupted)
    {
        State::Interrupted
    } else if any(State::Cancelled) {
        State::Cancelled
    } else if any(State::ActionRequired) {
        State::ActionRequired
    } else {
        State::Succeeded
    }
}

/// The run's message: one line counting its services by state and naming those that did not
/// succeed, e.g. "3 succeeded; 2 need action: cps, fas" (each service's own message says more).
fn summary_line(tasks: &[ServiceTask]) -> String {
    const ORDER: [State; 8] = [
        State::Succeeded,
        State::Failed,
        State::Interrupted,
        State::Cancelled,
        State::ActionRequired,
        State::Skipped,
        State::Running,
        State::Pending,
    ];
    let mut groups = Vec::new();
    for state in ORDER {
        let names: Vec<&str> = tasks
            .iter()
            .filter(|t| t.state == state)
            .map(|t| t.service.as_str())
            .collect();
        let label = match (state, names.len()) {
            (_, 0) => continue,
            (State::Succeeded, n) => {
                groups.push(format!("{n} succeeded"));
                continue;
            }
            (State::ActionRequired, 1) => "needs action",
            (State::ActionRequired, _) => "need action",
            (other, _) => other.as_str(),
        };
        groups.push(format!("{} {label}: {}", names.len(), names.join(", ")));
    }
    groups.join("; ")
}

fn level_of(state: State) -> &'static str {
    match state {
        State::Succeeded | State::Pending | State::Running => "info",
        State::ActionRequired
        | State::Cancelled
        | State::Interrupted
        | State::Skipped
        | State::Abandoned => "warn",
        State::Failed => "error",
    }
}

async fn run_task(
    inner: &Arc<Inner>,
    run_id: Uuid,
    service: Service,
    dry_run: bool,
    control: &Control,
) -> Result<(), StoreError> {
    let store = &inner.store;
    let started = Instant::now();
    store.start_task(run_id, service, now()).await?;
    store
        .append_event(run_id, "info", Some(service), None, "started", now())
        .await?;
    let steps = store.task_steps(run_id, service).await?;
    // What the steps a resumed run already took decided, for the steps after them.
    let mut decided = Decided::default();
    for step in steps.iter().filter(|s| s.state == State::Succeeded) {
        if let (Ok(action), Some(data)) = (
            serde_json::from_value::<Action>(step.spec.clone()),
            &step.data,
        ) {
            action.learn(data, &mut decided);
        }
    }
    let mut outcome = (State::Succeeded, String::new());
    let mut notes = Vec::new();
    // Once a step fails or the run is stopped, the state and message of the steps not started.
    let mut not_started: Option<(State, String)> = None;
    for step in steps.iter().filter(|s| s.state != State::Succeeded) {
        if not_started.is_none() && control.token.is_cancelled() {
            let state = control.stopped_state();
            not_started = Some((state, format!("not started: run {state}")));
            outcome = (state, format!("{state} before step {}", step.name));
        }
        if let Some((state, message)) = &not_started {
            let key = StepKey {
                run_id,
                service,
                ordinal: step.ordinal,
            };
            store.finish_step(key, *state, message, None, now()).await?;
            continue;
        }
        let span = tracing::info_span!("step", step = %step.name);
        let (state, message) =
            run_step(inner, run_id, service, step, dry_run, control, &mut decided)
                .instrument(span)
                .await?;
        match state {
            // A step that had nothing to do says why (its message) and the task goes on.
            State::Succeeded | State::Skipped => {}
            State::ActionRequired => notes.push(message),
            other => {
                outcome = (other, format!("step {} {other}: {message}", step.name));
                not_started = Some(match other {
                    State::Failed => (
                        State::Skipped,
                        format!("not started because step {} failed", step.name),
                    ),
                    stopped => (stopped, format!("not started: run {stopped}")),
                });
            }
        }
    }
    let (state, message) = match outcome {
        (State::Succeeded, _) if !notes.is_empty() => (State::ActionRequired, notes.join("; ")),
        (State::Succeeded, _) => (
            State::Succeeded,
            if dry_run {
                "dry run planned".to_owned()
            } else {
                "repopulated".to_owned()
            },
        ),
        other => other,
    };
    store
        .finish_task(run_id, service, state, &message, now())
        .await?;
    inner
        .metrics
        .service_finished(service, state, started.elapsed());
    store
        .append_event(
            run_id,
            level_of(state),
            Some(service),
            None,
            &format!("{state}: {message}"),
            now(),
        )
        .await?;
    Ok(())
}

async fn run_step(
    inner: &Arc<Inner>,
    run_id: Uuid,
    service: Service,
    step: &crate::store::StepRecord,
    dry_run: bool,
    control: &Control,
    decided: &mut Decided,
) -> Result<(State, String), StoreError> {
    let store = &inner.store;
    let started = Instant::now();
    let key = StepKey {
        run_id,
        service,
        ordinal: step.ordinal,
    };
    store.start_step(key, now()).await?;
    store
        .append_event(
            run_id,
            "info",
            Some(service),
            Some(&step.name),
            "started",
            now(),
        )
        .await?;
    let journal = StoreJournal::new(store.clone(), key, &step.name);
    let (state, message, data) = match serde_json::from_value::<Action>(step.spec.clone()) {
        Err(err) => (
            State::Failed,
            format!("the stored plan of this step is unreadable ({err}); start a new run"),
            None,
        ),
        Ok(action) => {
            let events = RunEvents::new(
                inner.cluster.client().clone(),
                run_id,
                service.as_str(),
                &step.name,
                dry_run,
            );
            let ctx = StepContext {
                run_id,
                cluster: &inner.cluster,
                csm: &inner.csm,
                dry_run,
                cancel: &control.token,
                shutdown: &control.shutdown,
                journal: &journal,
                saved: step.data.clone(),
                ssh: &inner.config.ssh,
                etcd: &inner.config.etcd,
                recovery: &inner.config.recovery,
                store: &inner.store,
                events: &events,
            };
            let limit = action.time_limit(&inner.config);
            match tokio::time::timeout(limit, handlers::execute(&action, &ctx, decided)).await {
                Ok(Ok(outcome)) => {
                    action.learn(&outcome.data, decided);
                    (outcome.state, outcome.message, Some(outcome.data))
                }
                Ok(Err(err)) if err.is_cancelled() => {
                    (control.stopped_state(), err.to_string(), None)
                }
                Ok(Err(err)) => (State::Failed, err.to_string(), None),
                Err(_) => (
                    State::Failed,
                    format!(
                        "step exceeded the step timeout of {}",
                        humantime::format_duration(limit)
                    ),
                    None,
                ),
            }
        }
    };
    store
        .finish_step(key, state, &message, data.as_ref(), now())
        .await?;
    inner
        .metrics
        .step_finished(service, &step.name, state, started.elapsed());
    store
        .append_event(
            run_id,
            level_of(state),
            Some(service),
            Some(&step.name),
            &format!("{state}: {message}"),
            now(),
        )
        .await?;
    match state {
        State::Failed => tracing::warn!(state = %state, "{message}"),
        _ => tracing::info!(state = %state, "{message}"),
    }
    Ok((state, message))
}

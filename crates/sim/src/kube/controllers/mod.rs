//! Simulated controllers: level-triggered loops that re-examine the store after every change
//! (the sim holds tens of objects, so a full pass is cheap), plus timers for the delays a
//! real kubelet, Job controller or etcd operator would take; with real etcd, the members'
//! containers (`etcd_member`) and kube-proxy in front of them (`kube_proxy`).

mod deployment;
pub(super) mod etcd;
pub mod etcd_member;
pub mod etcd_restore;
mod gc;
mod job;
mod kube_proxy;
mod kubelet;
mod replicaset;
pub(super) mod statefulset;
pub(super) mod volumes;

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ApiResult};
use super::options::SimOptions;
use super::resources::ResourceDef;
use super::store::{Store, StoreEvent, WriteMode};
use crate::csm::FakeCsm;

/// Annotation (on a pod, pod template or EtcdCluster) that keeps it from ever becoming ready.
pub const NEVER_READY: &str = "sim.etcd-repopulator.io/never-ready";
/// Annotation on a Job's pod template that makes its pod fail.
pub const FAIL: &str = "sim.etcd-repopulator.io/fail";
/// Annotation on a Bitnami etcd StatefulSet: Helm upgraded its release (cray-etcd-base, CSM
/// 1.7) to this revision, whose pre-upgrade Job (`charts/cray-etcd-base/templates/
/// upgrade-job.yaml`) put a snapshot of the cluster in S3 as
/// `etcd-backup/<service>/<service>_etcd_upgrade.snapshot-<revision>.db`. The simulated cluster
/// makes that object, a real snapshot, the first time the cluster is healthy (with S3 on).
pub const UPGRADED_AT_REVISION: &str = "sim.etcd-repopulator.io/upgraded-at-helm-revision";
/// Annotation with newline-separated log lines for a Job's pod.
pub const LOG: &str = "sim.etcd-repopulator.io/log";
/// Annotation on a Job's pod template: what its pod does to the fake CSM services when it
/// succeeds (the work of the real Job's container).
pub const EFFECT: &str = "sim.etcd-repopulator.io/effect";
/// `cray-reds-init`: BSS gets its boot parameters back.
pub const EFFECT_REPOPULATE_BSS: &str = "repopulate-bss";
/// `cray-fas-loader`: FAS gets its firmware images back.
pub const EFFECT_RELOAD_FAS_IMAGES: &str = "reload-fas-images";

/// What every controller needs.
#[derive(Clone)]
pub struct Ctx {
    pub store: Arc<Store>,
    pub opts: SimOptions,
    pub shutdown: CancellationToken,
    /// The fake CSM services, on which Job pods have their [`EFFECT`].
    pub csm: FakeCsm,
    /// The real etcd processes of the etcd clusters ([`SimOptions::real_etcd`]).
    pub etcd: Option<Arc<etcd_member::RealEtcd>>,
    /// The simulated S3's storage (`<root>/<bucket>/<key>`, [`SimOptions::s3`]), where the
    /// restore operator finds the backups (`etcd_restore`).
    pub s3_root: Option<std::path::PathBuf>,
}

impl Ctx {
    /// Runs `fut` until it finishes or the simulator shuts down.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Edits the object as a controller would, only if it is still the same incarnation
    /// (`uid`); used by timers that fire after the object may have been replaced.
    pub fn modify(
        &self,
        def: &'static ResourceDef,
        obj: &Value,
        change: impl FnOnce(&mut Value),
    ) -> ApiResult<Value> {
        let ns = super::meta::namespace(obj).unwrap_or_default().to_string();
        let name = super::meta::name(obj).unwrap_or_default().to_string();
        let uid = super::meta::uid(obj).map(str::to_string);
        self.store
            .update_with(def, &ns, &name, WriteMode::System, false, |cur| {
                if super::meta::uid(cur).map(str::to_string) != uid {
                    return Err(ApiError::not_found(def, &name));
                }
                change(cur);
                Ok(())
            })
    }
}

/// Calls `reconcile` once, then again after each batch of store events that `interested`
/// accepts, until shutdown.
async fn level_loop(
    ctx: Ctx,
    interested: fn(&StoreEvent) -> bool,
    mut reconcile: impl FnMut(&Ctx) + Send,
) {
    let mut rx = ctx.store.subscribe();
    reconcile(&ctx);
    loop {
        let relevant = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            ev = rx.recv() => match ev {
                Ok(ev) => interested(&ev),
                // Missed events: a full pass recovers, which is what level-triggering buys.
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let mut relevant = relevant;
        loop {
            match rx.try_recv() {
                Ok(ev) => relevant |= interested(&ev),
                Err(broadcast::error::TryRecvError::Lagged(_)) => relevant = true,
                Err(_) => break,
            }
        }
        if relevant {
            reconcile(&ctx);
        }
    }
}

fn is(ev: &StoreEvent, group: &str, plural: &str) -> bool {
    ev.def.group == group && ev.def.plural == plural
}

/// Starts every controller.
pub fn start(ctx: &Ctx) {
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| is(e, "apps", "deployments") || is(e, "apps", "replicasets"),
        deployment::reconcile,
    ));
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| is(e, "apps", "replicasets") || is(e, "", "pods"),
        replicaset::reconcile,
    ));
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| {
            is(e, "apps", "statefulsets")
                || is(e, "", "pods")
                || is(e, "", "persistentvolumeclaims")
        },
        statefulset::reconcile,
    ));
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| is(e, "", "persistentvolumeclaims") || is(e, "", "pods"),
        volumes::pvc_protection,
    ));
    let mut binder = volumes::Binder::default();
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| is(e, "", "persistentvolumeclaims"),
        move |c| binder.reconcile(c),
    ));
    let mut kubelet = kubelet::Kubelet::default();
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| is(e, "", "pods") || is(e, "", "persistentvolumeclaims"),
        move |c| kubelet.reconcile(c),
    ));
    let mut jobs = job::JobController::default();
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| is(e, "batch", "jobs") || is(e, "", "pods"),
        move |c| jobs.reconcile(c),
    ));
    let mut operator = etcd::Operator::default();
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| is(e, "etcd.database.coreos.com", "etcdclusters"),
        move |c| operator.reconcile(c),
    ));
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| {
            is(e, "etcd.database.coreos.com", "etcdclusters")
                || is(e, "etcd.database.coreos.com", "etcdbackups")
        },
        etcd::backup_cronjob,
    ));
    let mut restores = etcd_restore::RestoreOperator::default();
    ctx.spawn(level_loop(
        ctx.clone(),
        |e| is(e, "etcd.database.coreos.com", "etcdrestores"),
        move |c| restores.reconcile(c),
    ));
    ctx.spawn(level_loop(ctx.clone(), |_| true, gc::reconcile));
    if let Some(etcd) = ctx.etcd.clone() {
        ctx.spawn(level_loop(
            ctx.clone(),
            |e| is(e, "", "pods") || is(e, "", "services") || is(e, "", "persistentvolumeclaims"),
            move |c| etcd.reconcile(c),
        ));
        let proxy = std::sync::Arc::new(kube_proxy::KubeProxy::default());
        ctx.spawn(level_loop(
            ctx.clone(),
            |e| is(e, "", "pods") || is(e, "", "services"),
            move |c| proxy.reconcile(c),
        ));
    }
}

/// Items of a list result, for brevity in the controllers.
fn all(ctx: &Ctx, def: &'static ResourceDef) -> Vec<Value> {
    ctx.store.list(def, None, &Default::default()).0
}

fn owned_by<'a>(items: &'a [Value], owner: &Value) -> impl Iterator<Item = &'a Value> {
    let uid = super::meta::uid(owner).unwrap_or_default().to_string();
    items
        .iter()
        .filter(move |i| super::meta::controller_uid(i) == Some(uid.as_str()))
}

/// `metadata.generation`, for `status.observedGeneration`.
fn generation(obj: &Value) -> Value {
    obj.pointer("/metadata/generation")
        .cloned()
        .unwrap_or(serde_json::json!(1))
}

fn log_err<T>(what: &str, r: ApiResult<T>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "sim controller: {what}");
    }
}

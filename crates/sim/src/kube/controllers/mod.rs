//! Simulated controllers: level-triggered loops that re-examine the store after every change
//! (the sim holds tens of objects, so a full pass is cheap), plus timers for the delays a
//! real kubelet, Job controller or etcd operator would take; with real etcd, the members'
//! containers (`etcd_member`) and kube-proxy in front of them (`kube_proxy`).

mod annotations;
mod ctx;
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

use std::sync::Arc;

use tokio::sync::broadcast;

use super::store::StoreEvent;
pub use annotations::{
    EFFECT, EFFECT_RELOAD_FAS_IMAGES, EFFECT_REPOPULATE_BSS, FAIL, LOG, NEVER_READY,
    UPGRADED_AT_REVISION,
};
pub use ctx::{ContainerRuntime, Ctx};
use etcd_member::RealEtcd;

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

/// Starts every controller; with `etcd`, the real members' too.
pub fn start(ctx: &Ctx, etcd: Option<Arc<RealEtcd>>) {
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
    if let Some(etcd) = etcd {
        ctx.spawn(level_loop(
            ctx.clone(),
            |e| is(e, "", "pods") || is(e, "", "services") || is(e, "", "persistentvolumeclaims"),
            move |c| etcd.reconcile(c),
        ));
        let proxy = Arc::new(kube_proxy::KubeProxy::default());
        ctx.spawn(level_loop(
            ctx.clone(),
            |e| is(e, "", "pods") || is(e, "", "services"),
            move |c| proxy.reconcile(c),
        ));
    }
}

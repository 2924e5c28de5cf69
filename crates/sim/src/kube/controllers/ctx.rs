//! What every controller needs, the runtime the kubelet runs real containers with, and the
//! small helpers the controllers share.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::super::error::{ApiError, ApiResult};
use super::super::meta;
use super::super::options::SimOptions;
use super::super::resources::ResourceDef;
use super::super::store::{Store, WriteMode};
use crate::csm::FakeCsm;

/// What the kubelet asks of the runtime of real containers (the CRI's part the simulation
/// needs): the IP a pod's real process listens on, and stopping a pod's containers before
/// the pod goes.
pub trait ContainerRuntime: Send + Sync {
    /// The IP of `pod`'s real process, if the runtime runs it.
    fn pod_ip(&self, pod: &Value) -> Option<Ipv4Addr>;
    /// Stops the containers of the pod with `uid`, if the runtime runs them.
    fn stop_container<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, ()>;
}

/// What every controller needs.
#[derive(Clone)]
pub struct Ctx {
    pub store: Arc<Store>,
    pub opts: SimOptions,
    pub shutdown: CancellationToken,
    /// The fake CSM services, on which Job pods have their [`EFFECT`].
    pub csm: FakeCsm,
    /// The runtime of the real containers: the etcd members when the etcd clusters run for
    /// real ([`SimOptions::real_etcd`]).
    pub containers: Option<Arc<dyn ContainerRuntime>>,
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
        let ns = meta::namespace(obj).unwrap_or_default().to_string();
        let name = meta::name(obj).unwrap_or_default().to_string();
        let uid = meta::uid(obj).map(str::to_string);
        self.store
            .update_with(def, &ns, &name, WriteMode::System, false, |cur| {
                if meta::uid(cur).map(str::to_string) != uid {
                    return Err(ApiError::not_found(def, &name));
                }
                change(cur);
                Ok(())
            })
    }
}

/// Items of a list result, for brevity in the controllers.
pub(super) fn all(ctx: &Ctx, def: &'static ResourceDef) -> Vec<Value> {
    ctx.store.list(def, None, &Default::default()).0
}

pub(super) fn owned_by<'a>(items: &'a [Value], owner: &Value) -> impl Iterator<Item = &'a Value> {
    let uid = meta::uid(owner).unwrap_or_default().to_string();
    items
        .iter()
        .filter(move |i| meta::controller_uid(i) == Some(uid.as_str()))
}

/// `metadata.generation`, for `status.observedGeneration`.
pub(super) fn generation(obj: &Value) -> Value {
    obj.pointer("/metadata/generation")
        .cloned()
        .unwrap_or(serde_json::json!(1))
}

pub(super) fn log_err<T>(what: &str, r: ApiResult<T>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "sim controller: {what}");
    }
}

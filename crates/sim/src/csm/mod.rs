//! Fake CSM services (BOS, BSS, CPS, CRUS, FAS, HMNFD, HSM), answering with the shapes of the
//! services' public OpenAPI documents (the ones the `cray` CLI is generated from, in
//! Cray-HPE/craycli's `cray/modules/<service>/`; HMNFD's in Cray-HPE/hms-hmnfd), as the
//! service's typed CSM clients expect them.
//!
//! One in-memory state behind one router. Each fake answers its in-cluster paths behind a
//! per-service prefix (`/bos/v2/...`, `/smd/hsm/v2/...`), so a client configured with the
//! [`service_url`]s differs from production only in base URLs and the real client code path is
//! exercised end to end.
//! Beyond the API, tests and the simulated cluster drive it directly: [`FakeCsm::wipe`] is an
//! etcd rebuild, [`FakeCsm::reload_fas_images`] / [`FakeCsm::repopulate_bss`] /
//! [`FakeCsm::add_subscription`] are what the cluster-side fixes do, and
//! [`FakeCsm::set_available`] / [`FakeCsm::fail_next`] inject faults.

mod bos;
mod bss;
mod cps;
mod crus;
mod fas;
mod hmnfd;
mod hsm;
mod hub;
mod problem;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde_json::Value;

pub use hub::{EtcdEndpoint, FakeCsm, RecordedRequest};
use problem::problem;

use csm_wire::{
    BootParams, ContentAttribute, CrusSession, CsmService, FasActionSummary, FasImage,
    FasSnapshotSummary, HsmComponent, Subscription, WorkerNodeData,
};

/// The base URL of the fake `service` on a simulated cluster served at `base` (the fakes' router
/// is nested under `{base}/csm`), as a client's configuration names it, e.g.
/// `{base}/csm/smd/hsm/v2` for HSM.
pub fn service_url(base: &str, service: CsmService) -> String {
    format!("{}/csm{}", base.trim_end_matches('/'), prefix(service))
}

/// Where below `/csm` the fake `service` answers: a per-service prefix followed by the real
/// service's in-cluster path prefix (HMNFD's `/hmi/v2`, HSM's `/hsm/v2`).
fn prefix(service: CsmService) -> &'static str {
    match service {
        CsmService::Bos => "/bos",
        CsmService::Bss => "/bss",
        CsmService::Cps => "/cps",
        CsmService::Crus => "/crus",
        CsmService::Fas => "/fas",
        CsmService::Hmnfd => "/hmnfd/hmi/v2",
        CsmService::Hsm => "/smd/hsm/v2",
    }
}

impl FakeCsm {
    /// Every service up and empty (what a freshly installed CSM without data looks like).
    pub fn new() -> Self {
        Self::default()
    }

    /// Realistic content for every service; see each service module for what is seeded.
    pub fn seeded() -> Self {
        let fake = Self::default();
        let hsm = hsm::HsmState::seeded();
        fake.with(|hub| {
            hub.set(hmnfd::HmnfdState::seeded(&hsm.components));
            hub.set(bss::BssState::seeded(&hsm.components));
            hub.set(hsm);
            hub.set(bos::BosState::seeded());
            hub.set(cps::CpsState::seeded());
            hub.set(crus::CrusState::seeded());
            hub.set(fas::FasState::seeded());
        });
        fake
    }

    /// The router to nest under `/csm`.
    pub fn router(&self) -> Router {
        let service = |svc: CsmService, routes: Router<FakeCsm>| {
            routes.layer(middleware::from_fn_with_state((self.clone(), svc), gate))
        };
        Router::new()
            .nest(
                prefix(CsmService::Bos),
                service(CsmService::Bos, bos::routes()),
            )
            .nest(
                prefix(CsmService::Bss),
                service(CsmService::Bss, bss::routes()),
            )
            .nest(
                prefix(CsmService::Cps),
                service(CsmService::Cps, cps::routes()),
            )
            .nest(
                prefix(CsmService::Crus),
                service(CsmService::Crus, crus::routes()),
            )
            .nest(
                prefix(CsmService::Fas),
                service(CsmService::Fas, fas::routes()),
            )
            .nest(
                prefix(CsmService::Hmnfd),
                service(CsmService::Hmnfd, hmnfd::routes()),
            )
            .nest(
                prefix(CsmService::Hsm),
                service(CsmService::Hsm, hsm::routes()),
            )
            .with_state(self.clone())
    }

    /// From now on BSS keeps its boot parameters in the real etcd at `endpoint` (see `bss.rs`);
    /// the simulated cluster does this when it runs real etcd.
    pub fn use_etcd_for_bss(&self, endpoint: EtcdEndpoint) {
        self.with(|s| s.bss_etcd = Some(endpoint));
    }

    /// Whether BSS keeps its entries in a real etcd.
    pub fn bss_in_etcd(&self) -> bool {
        self.with(|s| s.bss_etcd.is_some())
    }

    /// [`FakeCsm::wipe`], waiting for BSS's keys to be deleted from its etcd when it keeps them
    /// there.
    pub async fn wipe_async(&self, etcd_cluster: &str) -> bool {
        if self.bss_in_etcd() && bss_cluster(etcd_cluster) {
            if let Err(e) = self.wipe_bss_etcd().await {
                tracing::warn!(error = %e, "wiping BSS's etcd");
            }
            return true;
        }
        self.wipe(etcd_cluster)
    }

    /// Simulates the rebuild of an etcd cluster: the service that kept its data there loses it.
    /// Returns false for a cluster that backs none of the fakes. When BSS keeps its entries in
    /// a real etcd, their deletion is started in the background (use
    /// [`FakeCsm::wipe_async`] to wait for it).
    pub fn wipe(&self, etcd_cluster: &str) -> bool {
        if self.bss_in_etcd() && bss_cluster(etcd_cluster) {
            let fake = self.clone();
            let cluster = etcd_cluster.to_owned();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { fake.wipe_async(&cluster).await });
            }
            return true;
        }
        // The same service's cluster in the Bitnami layout (CSM 1.5+).
        let cluster = match etcd_cluster.strip_suffix("-bitnami-etcd") {
            Some(csm) => format!("{csm}-etcd"),
            None => etcd_cluster.to_owned(),
        };
        self.with(|hub| {
            match cluster.as_str() {
                "cray-bos-etcd" => hub.set(bos::BosState::default()),
                "cray-bss-etcd" => hub.part::<bss::BssState>().wipe(),
                "cray-cps-etcd" => hub.set(cps::CpsState::default()),
                "cray-crus-etcd" => hub.set(crus::CrusState::default()),
                "cray-fas-etcd" => hub.part::<fas::FasState>().wipe(),
                "cray-hmnfd-etcd" => hub.set(hmnfd::HmnfdState::default()),
                _ => return false,
            }
            true
        })
    }

    /// Takes a service down (every request answers 503 with a problem body) or brings it back.
    /// `service` is a [`CsmService`] name (`bos`, `crus`, `hsm`, ...); returns false if unknown.
    pub fn set_available(&self, service: &str, up: bool) -> bool {
        let Some(service) = CsmService::from_name(service) else {
            return false;
        };
        self.with(|s| s.faults.entry(service).or_default().down = !up);
        true
    }

    /// The next `count` requests to `service` answer 503, then it recovers (a restarting pod).
    pub fn fail_next(&self, service: CsmService, count: u32) {
        self.with(|s| s.faults.entry(service).or_default().fail_next = count);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.with(|s| s.requests.clone())
    }

    /// BOS session templates by name, as `GET` returns them.
    pub fn bos_templates(&self) -> BTreeMap<String, Value> {
        self.part(|s: &mut bos::BosState| s.rendered())
    }

    /// BSS's entries in memory (see [`FakeCsm::bss_entries`] for wherever BSS keeps them).
    pub fn bss_bootparameters(&self) -> Vec<BootParams> {
        self.part(|s: &mut bss::BssState| s.entries.clone())
    }

    pub fn cps_contents(&self) -> Vec<ContentAttribute> {
        self.part(|s: &mut cps::CpsState| s.contents.clone())
    }

    pub fn cps_deployments(&self) -> Vec<WorkerNodeData> {
        self.part(|s: &mut cps::CpsState| s.deployments.clone())
    }

    pub fn crus_sessions(&self) -> Vec<CrusSession> {
        self.part(|s: &mut crus::CrusState| s.sessions.clone())
    }

    pub fn fas_images(&self) -> Vec<FasImage> {
        self.part(|s: &mut fas::FasState| s.images.clone())
    }

    pub fn fas_actions(&self) -> Vec<FasActionSummary> {
        self.part(|s: &mut fas::FasState| s.actions.clone())
    }

    pub fn fas_snapshots(&self) -> Vec<FasSnapshotSummary> {
        self.part(|s: &mut fas::FasState| s.snapshots.clone())
    }

    pub fn hmnfd_subscriptions(&self) -> Vec<Subscription> {
        self.part(|s: &mut hmnfd::HmnfdState| s.subscriptions.clone())
    }

    pub fn hsm_components(&self) -> Vec<HsmComponent> {
        self.part(|s: &mut hsm::HsmState| s.components.clone())
    }

    /// What restarting `cray-dvs-orca` on `node` does: it subscribes to HMNFD again. `node` is
    /// an xname or a compute node's NMN host name (`nid000001-nmn`, resolved through HSM).
    /// Returns the subscriber xname.
    pub fn add_subscription(&self, node: &str) -> String {
        self.with(|hub| {
            let hsm = hub.part::<hsm::HsmState>();
            let (xname, components) = (hsm.resolve_node(node), hsm.components.clone());
            hub.part::<hmnfd::HmnfdState>()
                .subscribe_orca(&xname, &components);
            xname
        })
    }

    /// What the `cray-fas-loader` Job does: load the image list into FAS again.
    pub fn reload_fas_images(&self) {
        self.part(|s: &mut fas::FasState| s.reload_images());
    }

    /// What the `cray-reds-init` Job does: put the boot parameters back into BSS.
    pub fn repopulate_bss(&self) {
        self.part(|s: &mut bss::BssState| s.repopulate());
    }
}

/// Whether `etcd_cluster` is BSS's (either layout).
fn bss_cluster(etcd_cluster: &str) -> bool {
    matches!(etcd_cluster, "cray-bss-etcd" | "cray-bss-bitnami-etcd")
}

/// Records the request, then applies injected faults before the service sees it.
async fn gate(
    State((fake, service)): State<(FakeCsm, CsmService)>,
    request: Request,
    next: Next,
) -> Response {
    let recorded = record(service, &request);
    let unavailable = fake.with(|s| {
        s.requests.push(recorded);
        let faults = s.faults.entry(service).or_default();
        if faults.fail_next > 0 {
            faults.fail_next -= 1;
            return true;
        }
        faults.down
    });
    if unavailable {
        return problem(
            service,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{service} is not available"),
        );
    }
    next.run(request).await
}

// A separate function so that no borrow of the request (whose body is not `Sync`) lives across
// the `.await` in `gate`, which would make the middleware future non-`Send`.
fn record(service: CsmService, request: &Request) -> RecordedRequest {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    RecordedRequest {
        service,
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        authorization: header(AUTHORIZATION),
        user_agent: header(USER_AGENT),
        accept: header(ACCEPT),
    }
}

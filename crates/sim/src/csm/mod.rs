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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

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

/// The fake CSM services; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct FakeCsm {
    state: Arc<Mutex<CsmState>>,
}

#[derive(Default)]
struct CsmState {
    bos: bos::BosState,
    bss: bss::BssState,
    cps: cps::CpsState,
    crus: crus::CrusState,
    fas: fas::FasState,
    hmnfd: hmnfd::HmnfdState,
    hsm: hsm::HsmState,
    faults: HashMap<CsmService, Faults>,
    requests: Vec<RecordedRequest>,
    /// Where BSS's etcd answers, when BSS keeps its entries there.
    bss_etcd: Option<EtcdEndpoint>,
}

/// The client URL (`http://<ip>:2379`) of an etcd cluster, looked up when needed (None: the
/// cluster has no client Service).
pub type EtcdEndpoint = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Default)]
struct Faults {
    down: bool,
    /// Answer this many further requests with 503 (transient outage).
    fail_next: u32,
}

/// A request as a fake received it, for tests asserting on what the clients send.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub service: CsmService,
    pub method: String,
    /// Path below the service prefix, e.g. `/v2/sessiontemplates`.
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
    pub accept: Option<String>,
}

impl FakeCsm {
    /// Every service up and empty (what a freshly installed CSM without data looks like).
    pub fn new() -> Self {
        Self::default()
    }

    /// Realistic content for every service; see each service module for what is seeded.
    pub fn seeded() -> Self {
        let hsm = hsm::HsmState::seeded();
        let hmnfd = hmnfd::HmnfdState::seeded(&hsm.components);
        let state = CsmState {
            bos: bos::BosState::seeded(),
            bss: bss::BssState::seeded(&hsm.components),
            cps: cps::CpsState::seeded(),
            crus: crus::CrusState::seeded(),
            fas: fas::FasState::seeded(),
            hmnfd,
            hsm,
            ..CsmState::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
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
        self.with(|s| {
            match cluster.as_str() {
                "cray-bos-etcd" => s.bos = bos::BosState::default(),
                "cray-bss-etcd" => s.bss.wipe(),
                "cray-cps-etcd" => s.cps = cps::CpsState::default(),
                "cray-crus-etcd" => s.crus = crus::CrusState::default(),
                "cray-fas-etcd" => s.fas.wipe(),
                "cray-hmnfd-etcd" => s.hmnfd = hmnfd::HmnfdState::default(),
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
        self.with(|s| s.bos.rendered())
    }

    /// BSS's entries in memory (see [`FakeCsm::bss_entries`] for wherever BSS keeps them).
    pub fn bss_bootparameters(&self) -> Vec<BootParams> {
        self.with(|s| s.bss.entries.clone())
    }

    pub fn cps_contents(&self) -> Vec<ContentAttribute> {
        self.with(|s| s.cps.contents.clone())
    }

    pub fn cps_deployments(&self) -> Vec<WorkerNodeData> {
        self.with(|s| s.cps.deployments.clone())
    }

    pub fn crus_sessions(&self) -> Vec<CrusSession> {
        self.with(|s| s.crus.sessions.clone())
    }

    pub fn fas_images(&self) -> Vec<FasImage> {
        self.with(|s| s.fas.images.clone())
    }

    pub fn fas_actions(&self) -> Vec<FasActionSummary> {
        self.with(|s| s.fas.actions.clone())
    }

    pub fn fas_snapshots(&self) -> Vec<FasSnapshotSummary> {
        self.with(|s| s.fas.snapshots.clone())
    }

    pub fn hmnfd_subscriptions(&self) -> Vec<Subscription> {
        self.with(|s| s.hmnfd.subscriptions.clone())
    }

    pub fn hsm_components(&self) -> Vec<HsmComponent> {
        self.with(|s| s.hsm.components.clone())
    }

    /// What restarting `cray-dvs-orca` on `node` does: it subscribes to HMNFD again. `node` is
    /// an xname or a compute node's NMN host name (`nid000001-nmn`, resolved through HSM).
    /// Returns the subscriber xname.
    pub fn add_subscription(&self, node: &str) -> String {
        self.with(|s| {
            let xname = s.hsm.resolve_node(node);
            s.hmnfd.subscribe_orca(&xname, &s.hsm.components);
            xname
        })
    }

    /// What the `cray-fas-loader` Job does: load the image list into FAS again.
    pub fn reload_fas_images(&self) {
        self.with(|s| s.fas.reload_images());
    }

    /// What the `cray-reds-init` Job does: put the boot parameters back into BSS.
    pub fn repopulate_bss(&self) {
        self.with(|s| s.bss.repopulate());
    }

    /// Runs `f` on the state. Handlers never hold the lock across an await; a panic in a test
    /// thread that held it leaves consistent data (every mutation is a single assignment), so a
    /// poisoned lock is simply taken over.
    fn with<R>(&self, f: impl FnOnce(&mut CsmState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
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

/// An RFC 7807 error body with the content type the service's spec declares for errors:
/// BOS and HSM `application/problem+json`; BSS, CPS and HMNFD `application/json`; FAS
/// `application/error` (sic, `fas.yaml`). `crus.json` declares no error body; CRUS is a
/// connexion app, which answers errors with `application/problem+json`, so we do too.
pub(crate) fn problem(
    service: CsmService,
    status: StatusCode,
    detail: impl Into<String>,
) -> Response {
    let content_type = match service {
        CsmService::Bos | CsmService::Hsm | CsmService::Crus => "application/problem+json",
        CsmService::Bss | CsmService::Cps | CsmService::Hmnfd => "application/json",
        CsmService::Fas => "application/error",
    };
    // BOS's spec pins the titles of its problem types; the others use the status's reason.
    let title = match (service, status) {
        (CsmService::Bos, StatusCode::NOT_FOUND) => "The resource was not found",
        (CsmService::Bos, StatusCode::CONFLICT) => "The resource to be created already exists",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    (status, [(CONTENT_TYPE, content_type)], body.to_string()).into_response()
}

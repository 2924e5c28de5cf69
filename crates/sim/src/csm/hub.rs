//! The fake CSM services' shared state, behind one lock: each service's own state (a part,
//! found by its type, so that this file knows no service), the faults injected and the
//! requests received.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use csm_wire::CsmService;

/// The fake CSM services; cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct FakeCsm {
    state: Arc<Mutex<Hub>>,
}

/// What the lock holds.
#[derive(Default)]
pub(super) struct Hub {
    parts: HashMap<TypeId, Box<dyn Any + Send>>,
    pub(super) faults: HashMap<CsmService, Faults>,
    pub(super) requests: Vec<RecordedRequest>,
    /// Where BSS's etcd answers, when BSS keeps its entries there.
    pub(super) bss_etcd: Option<EtcdEndpoint>,
}

impl Hub {
    /// The state of the service whose state is a `T` (empty until first asked for).
    pub(super) fn part<T: Any + Send + Default>(&mut self) -> &mut T {
        self.parts
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut()
            .expect("a part is stored under its own type")
    }

    /// Puts `part` in place of the state of its type.
    pub(super) fn set<T: Any + Send>(&mut self, part: T) {
        self.parts.insert(TypeId::of::<T>(), Box::new(part));
    }
}

impl FakeCsm {
    /// Runs `f` on the state. Handlers never hold the lock across an await; a panic in a test
    /// thread that held it leaves consistent data (every mutation is a single assignment), so a
    /// poisoned lock is simply taken over.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut Hub) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Runs `f` on the state of one service (see [`FakeCsm::with`]).
    pub(super) fn part<T: Any + Send + Default, R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.with(|hub| f(hub.part()))
    }
}

/// The client URL (`http://<ip>:2379`) of an etcd cluster, looked up when needed (None: the
/// cluster has no client Service).
pub type EtcdEndpoint = Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Default)]
pub(super) struct Faults {
    pub(super) down: bool,
    /// Answer this many further requests with 503 (transient outage).
    pub(super) fail_next: u32,
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

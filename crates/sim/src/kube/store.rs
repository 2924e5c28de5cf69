//! The object store: every object is a `serde_json::Value` keyed by resource, namespace and
//! name, versioned by one global `resourceVersion` counter (as etcd's revision), with a bounded
//! event history for watches that resume from a resourceVersion.
//!
//! Objects are kept in their storage version: a resource served from another one's storage
//! (`ResourceDef::conversion`) is converted on the way in and out here, and its store events
//! carry the storage resource and object (watches convert them for their version).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::admission;
use super::error::{ApiError, ApiResult, FieldError};
use super::meta;
use super::options::KubeVersion;
use super::resources::{self, PropagationPolicy, ResourceDef};
use super::selector::Selectors;

/// Events kept for watches resuming from an older resourceVersion; older ones get 410 Gone.
const HISTORY_LIMIT: usize = 10_000;
const CHANNEL_CAPACITY: usize = 16_384;

/// The kube-controller-manager finalizers used by the garbage collector.
pub const FINALIZER_ORPHAN: &str = "orphan";
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change to the store, as sent to watchers (`old` lets a watch with a selector turn a
/// MODIFIED into ADDED/DELETED when the object starts/stops matching). `def` is the storage
/// resource and the objects are in its form.
#[derive(Debug)]
pub struct StoreEvent {
    pub rv: u64,
    pub def: &'static ResourceDef,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
    pub old: Option<Value>,
}

type ObjKey = (&'static str, &'static str, String, String);

fn key(def: &'static ResourceDef, ns: &str, name: &str) -> ObjKey {
    let def = def.storage();
    // Cluster-scoped objects ignore the namespace.
    let ns = if def.namespaced { ns } else { "" };
    (def.group, def.plural, ns.to_string(), name.to_string())
}

/// Who is writing: a client on the main endpoint, a client on `/status`, or a simulated
/// controller/kubelet (which may change anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Main,
    Status,
    System,
}

/// The parts of `DeleteOptions` the simulator honours (from query or body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<PropagationPolicy>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub enum DeleteOutcome {
    /// The object is gone (or would be, with dryRun).
    Deleted(Value),
    /// The object got a deletionTimestamp and waits for finalizers or graceful termination.
    Pending(Value),
}

struct Inner {
    rv: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: VecDeque<Arc<StoreEvent>>,
    /// Pod logs by pod uid.
    logs: HashMap<String, Vec<String>>,
}

/// Where a watch starts: replayed/synthetic events, then the live receiver.
pub struct WatchStart {
    pub initial: Vec<Arc<StoreEvent>>,
    pub receiver: broadcast::Receiver<Arc<StoreEvent>>,
    pub start_rv: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    /// Resources not served (a CRD that is not installed: the EtcdCluster CRD on CSM 1.5+).
    hidden: Mutex<Vec<&'static ResourceDef>>,
    tx: broadcast::Sender<Arc<StoreEvent>>,
    /// The Kubernetes version whose API rules admission applies.
    version: KubeVersion,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(KubeVersion::default())
    }
}

impl Store {
    pub fn new(version: KubeVersion) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            version,
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                logs: HashMap::new(),
            }),
            hidden: Mutex::new(Vec::new()),
            tx,
        }
    }

    pub fn version(&self) -> KubeVersion {
        self.version
    }

    /// Stops serving `def`, as when its CRD is not installed: every request about it is 404.
    pub fn hide(&self, def: &'static ResourceDef) {
        self.hidden
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(def);
    }

    /// Whether `def` is served.
    pub fn serves(&self, def: &ResourceDef) -> bool {
        !self
            .hidden
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|d| d.group == def.group && d.plural == def.plural)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a simulator bug; keep serving regardless.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.tx.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    fn emit(&self, inner: &mut Inner, ev: StoreEvent) {
        let ev = Arc::new(ev);
        inner.history.push_back(ev.clone());
        while inner.history.len() > HISTORY_LIMIT {
            inner.history.pop_front();
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    pub fn get(&self, def: &'static ResourceDef, ns: &str, name: &str) -> ApiResult<Value> {
        self.lock()
            .objects
            .get(&key(def, ns, name))
            .map(|obj| def.from_storage(obj.clone()))
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    pub fn try_get(&self, def: &'static ResourceDef, ns: &str, name: &str) -> Option<Value> {
        self.get(def, ns, name).ok()
    }

    /// Matching objects sorted by namespace/name, and the list's resourceVersion.
    pub fn list(
        &self,
        def: &'static ResourceDef,
        ns: Option<&str>,
        sel: &Selectors,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = Self::list_locked(&inner, def, ns, sel)
            .into_iter()
            .map(|obj| def.from_storage(obj))
            .collect();
        (items, inner.rv)
    }

    /// Matching objects in their stored form.
    fn list_locked(
        inner: &Inner,
        def: &'static ResourceDef,
        ns: Option<&str>,
        sel: &Selectors,
    ) -> Vec<Value> {
        let def = def.storage();
        inner
            .objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                *g == def.group && *p == def.plural && ns.is_none_or(|ns| ns == n)
            })
            .filter(|(_, v)| sel.matches(v))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// All objects of every resource (for the garbage collector).
    pub fn all_objects(&self) -> Vec<(&'static ResourceDef, Value)> {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .filter_map(|((g, p, _, _), v)| {
                resources::ALL
                    .iter()
                    .find(|d| d.group == *g && d.plural == *p)
                    .map(|d| (d, v.clone()))
            })
            .collect()
    }

    pub fn create(
        &self,
        def: &'static ResourceDef,
        ns: &str,
        mut obj: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request was not a JSON object".into(),
            ));
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let path_ns = if def.namespaced { ns } else { "" };
        match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(body_ns) if !body_ns.is_empty() && def.namespaced && body_ns != path_ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                        .into(),
                ));
            }
            _ => {}
        }
        let name = match meta::name(&obj) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            {
                Some(prefix) if !prefix.is_empty() => meta::generate_name(prefix),
                _ => {
                    return Err(ApiError::invalid(
                        def.storage(),
                        "",
                        vec![FieldError::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ));
                }
            },
        };
        if let Some(problem) = meta::invalid_name(&name) {
            return Err(ApiError::invalid(
                def.storage(),
                &name,
                vec![FieldError::invalid("metadata.name", &json!(name), &problem)],
            ));
        }
        let mut obj = def.to_storage(obj);
        let stored = def.storage();
        obj["apiVersion"] = json!(stored.api_version());
        obj["kind"] = json!(stored.kind);
        obj["metadata"]["name"] = json!(name);
        if def.namespaced {
            obj["metadata"]["namespace"] = json!(path_ns);
        }
        let stale_rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .is_some();
        if let Some(m) = obj["metadata"].as_object_mut() {
            // Server-populated fields a client cannot choose (uid is replaced before
            // validation, as the real server does in BeforeCreate).
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(f);
            }
        }
        obj["metadata"]["uid"] = json!(meta::new_uid());
        obj["metadata"]["creationTimestamp"] = json!(meta::now());
        if def.kind != "Event" && def.kind != "Namespace" {
            obj["metadata"]["generation"] = json!(1);
        }
        if def.status_subresource
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }

        let mut inner = self.lock();
        if def.namespaced
            && !inner
                .objects
                .contains_key(&key(&resources::NAMESPACES, "", path_ns))
        {
            return Err(ApiError::not_found(&resources::NAMESPACES, path_ns));
        }
        admission::prepare_create(def, &mut obj, self.version)?;
        // etcd3 storage: a plain Go error, which the real server turns into a 500 without a
        // reason. Checked after validation and before the existence check, as there.
        if stale_rv {
            return Err(ApiError::Unclassified(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let k = key(def, ns, &name);
        if inner.objects.contains_key(&k) {
            return Err(ApiError::already_exists(def, &name));
        }
        if dry_run {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            return Ok(def.from_storage(obj));
        }
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.objects.insert(k, obj.clone());
        self.emit(
            &mut inner,
            StoreEvent {
                rv,
                def: stored,
                namespace: path_ns.to_string(),
                kind: EventType::Added,
                object: obj.clone(),
                old: None,
            },
        );
        Ok(def.from_storage(obj))
    }

    /// Read-modify-write of one object under the store lock. `change` gets the current object
    /// and edits a candidate; `mode` decides which parts of the candidate are kept. An update
    /// that changes nothing is a no-op (no new resourceVersion, no event), as in the real
    /// server; that keeps level-triggered controllers from looping. `change` edits the object as
    /// `def`'s version serves it.
    pub fn update_with<F>(
        &self,
        def: &'static ResourceDef,
        ns: &str,
        name: &str,
        mode: WriteMode,
        dry_run: bool,
        change: F,
    ) -> ApiResult<Value>
    where
        F: FnOnce(&mut Value) -> ApiResult<()>,
    {
        let mut inner = self.lock();
        let k = key(def, ns, name);
        let old = inner
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        let mut candidate = def.from_storage(old.clone());
        change(&mut candidate)?;
        if !candidate.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request was not a JSON object".into(),
            ));
        }
        if !candidate.get("metadata").is_some_and(Value::is_object) {
            candidate["metadata"] = json!({});
        }
        if meta::name(&candidate).is_some_and(|n| n != name) {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(&candidate).unwrap_or_default()
            )));
        }
        if mode != WriteMode::System
            && let Some(rv) = candidate
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            && Some(rv) != meta::resource_version(&old)
        {
            return Err(ApiError::stale(def, name));
        }
        let candidate = def.to_storage(candidate);
        let mut new = match mode {
            WriteMode::Status => {
                // The status strategy keeps everything but .status from the stored object.
                let mut n = old.clone();
                match candidate.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                n
            }
            WriteMode::Main if def.status_subresource => {
                let mut n = candidate;
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                n
            }
            _ => candidate,
        };
        // Fields the server owns survive any client update.
        let stored = def.storage();
        new["apiVersion"] = json!(stored.api_version());
        new["kind"] = json!(stored.kind);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        if mode != WriteMode::System {
            for f in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
                match old["metadata"].get(f) {
                    Some(v) => new["metadata"][f] = v.clone(),
                    None => {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.remove(f);
                        }
                    }
                }
            }
            if meta::is_deleting(&old) {
                let old_f = meta::finalizers(&old);
                if let Some(added) = meta::finalizers(&new).iter().find(|f| !old_f.contains(f)) {
                    return Err(ApiError::invalid(
                        def,
                        name,
                        vec![FieldError {
                            reason: "FieldValueForbidden",
                            field: "metadata.finalizers".into(),
                            message: format!(
                                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                            ),
                        }],
                    ));
                }
            }
        }
        if mode == WriteMode::Main {
            admission::validate_update(def, &old, &new)?;
        }
        if meta::spec_changed(&old, &new) {
            let g = old.pointer("/metadata/generation").and_then(Value::as_i64);
            if let Some(g) = g {
                new["metadata"]["generation"] = json!(g + 1);
            }
        }
        if new == old {
            return Ok(def.from_storage(old));
        }
        // The last finalizer gone from an object being deleted: the object is deleted now.
        // Pods still in their grace period are removed by the kubelet instead.
        let finalize = meta::is_deleting(&new)
            && meta::finalizers(&new).is_empty()
            && (!def.is(resources::PODS.group, resources::PODS.plural)
                || new
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    == 0);
        if dry_run {
            return Ok(def.from_storage(new));
        }
        inner.rv += 1;
        let rv = inner.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if finalize {
            inner.objects.remove(&k);
            Self::drop_logs(&mut inner, &new);
            EventType::Deleted
        } else {
            inner.objects.insert(k, new.clone());
            EventType::Modified
        };
        self.emit(
            &mut inner,
            StoreEvent {
                rv,
                def: stored,
                namespace: meta::namespace(&new).unwrap_or_default().to_string(),
                kind,
                object: new.clone(),
                old: Some(old),
            },
        );
        Ok(def.from_storage(new))
    }

    /// A client's PUT.
    pub fn replace(
        &self,
        def: &'static ResourceDef,
        ns: &str,
        name: &str,
        body: Value,
        mode: WriteMode,
        dry_run: bool,
    ) -> ApiResult<Value> {
        if def.namespaced
            && let Some(body_ns) = body.pointer("/metadata/namespace").and_then(Value::as_str)
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            ));
        }
        let has_rv = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        if !has_rv && !def.unconditional_update {
            return Err(ApiError::invalid(
                def,
                name,
                vec![FieldError::invalid(
                    "metadata.resourceVersion",
                    &json!("0x0"),
                    "must be specified for an update",
                )],
            ));
        }
        self.update_with(def, ns, name, mode, dry_run, |cur| {
            *cur = body;
            Ok(())
        })
    }

    pub fn delete(
        &self,
        def: &'static ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<DeleteOutcome> {
        let mut inner = self.lock();
        let k = key(def, ns, name);
        let old = inner
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(def, name))?;
        if let Some(uid) = &opts.precondition_uid
            && Some(uid.as_str()) != meta::uid(&old)
        {
            return Err(ApiError::conflict(
                def,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&old).unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && Some(rv.as_str()) != meta::resource_version(&old)
        {
            return Err(ApiError::conflict(
                def,
                name,
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta::resource_version(&old).unwrap_or_default()
                ),
            ));
        }
        let mut new = old.clone();
        let mut finalizers = meta::finalizers(&old);
        // The policy only matters the first time; an object already being deleted keeps
        // whatever GC finalizer it got then.
        if !meta::is_deleting(&old) {
            let policy = opts.propagation_policy.unwrap_or(def.default_gc);
            let gc_finalizer = match policy {
                PropagationPolicy::Orphan => Some(FINALIZER_ORPHAN),
                PropagationPolicy::Foreground => Some(FINALIZER_FOREGROUND),
                PropagationPolicy::Background => None,
            };
            if let Some(f) = gc_finalizer
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_string());
            }
        }
        let is_pod = def.is(resources::PODS.group, resources::PODS.plural);
        // registry/core/pod/strategy.go CheckGracefulDelete: unscheduled and terminated pods
        // are deleted at once; otherwise the grace period defaults to the pod's
        // terminationGracePeriodSeconds (30 s).
        let grace = if is_pod {
            let phase = old.pointer("/status/phase").and_then(Value::as_str);
            let scheduled = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !scheduled || matches!(phase, Some("Succeeded") | Some("Failed")) {
                0
            } else {
                let default = old
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30);
                let requested = opts.grace_period_seconds.unwrap_or(default).max(0);
                match old
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                {
                    // A second delete may only shorten the grace period.
                    Some(current) => requested.min(current),
                    None => requested,
                }
            }
        } else {
            0
        };
        if finalizers.is_empty() && grace == 0 {
            if opts.dry_run {
                return Ok(DeleteOutcome::Deleted(def.from_storage(old)));
            }
            inner.rv += 1;
            let rv = inner.rv;
            new["metadata"]["resourceVersion"] = json!(rv.to_string());
            inner.objects.remove(&k);
            Self::drop_logs(&mut inner, &new);
            self.emit(
                &mut inner,
                StoreEvent {
                    rv,
                    def: def.storage(),
                    namespace: meta::namespace(&new).unwrap_or_default().to_string(),
                    kind: EventType::Deleted,
                    object: new.clone(),
                    old: Some(old),
                },
            );
            return Ok(DeleteOutcome::Deleted(def.from_storage(new)));
        }
        if !meta::is_deleting(&old) {
            let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
            new["metadata"]["deletionTimestamp"] = json!(meta::format_time(at));
        }
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        new["metadata"]["finalizers"] = json!(finalizers);
        if new == old || opts.dry_run {
            return Ok(DeleteOutcome::Pending(def.from_storage(new)));
        }
        inner.rv += 1;
        let rv = inner.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.objects.insert(k, new.clone());
        self.emit(
            &mut inner,
            StoreEvent {
                rv,
                def: def.storage(),
                namespace: meta::namespace(&new).unwrap_or_default().to_string(),
                kind: EventType::Modified,
                object: new.clone(),
                old: Some(old),
            },
        );
        Ok(DeleteOutcome::Pending(def.from_storage(new)))
    }

    fn drop_logs(inner: &mut Inner, obj: &Value) {
        if obj.get("kind").and_then(Value::as_str) == Some("Pod")
            && let Some(uid) = meta::uid(obj)
        {
            inner.logs.remove(uid);
        }
    }

    /// Starts a watch: events after `from_rv` from the history (410 Gone if they are no longer
    /// there), or synthetic ADDED events for the current state when `from_rv` is `None`; in the
    /// stored form, for the watch to convert.
    pub fn watch_from(
        &self,
        def: &'static ResourceDef,
        ns: Option<&str>,
        from_rv: Option<u64>,
    ) -> ApiResult<WatchStart> {
        let inner = self.lock();
        // Subscribing under the lock means no event falls between snapshot and live stream.
        let receiver = self.tx.subscribe();
        let stored = def.storage();
        let same_resource = |e: &StoreEvent| {
            e.def.is(stored.group, stored.plural) && ns.is_none_or(|ns| ns == e.namespace)
        };
        let initial = match from_rv {
            None => Self::list_locked(&inner, def, ns, &Selectors::default())
                .into_iter()
                .map(|obj| {
                    Arc::new(StoreEvent {
                        rv: inner.rv,
                        def: stored,
                        namespace: meta::namespace(&obj).unwrap_or_default().to_string(),
                        kind: EventType::Added,
                        object: obj,
                        old: None,
                    })
                })
                .collect(),
            Some(rv) => {
                let oldest = inner.history.front().map(|e| e.rv).unwrap_or(inner.rv + 1);
                // Events with rv > `rv` are needed; if the first retained one is later than
                // rv + 1 (and something happened since), some were evicted.
                if rv < inner.rv && oldest > rv + 1 {
                    return Err(ApiError::Expired {
                        requested: rv,
                        oldest: oldest.saturating_sub(1),
                    });
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && same_resource(e))
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            initial,
            receiver,
            start_rv: inner.rv,
        })
    }

    pub fn append_log(&self, pod: &Value, lines: impl IntoIterator<Item = String>) {
        if let Some(uid) = meta::uid(pod) {
            self.lock()
                .logs
                .entry(uid.to_string())
                .or_default()
                .extend(lines);
        }
    }

    pub fn logs(&self, pod: &Value) -> Vec<String> {
        meta::uid(pod)
            .and_then(|uid| self.lock().logs.get(uid).cloned())
            .unwrap_or_default()
    }
}

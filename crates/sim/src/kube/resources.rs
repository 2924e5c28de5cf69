//! The resource table: every kind the simulated server knows is one entry here. The store, the
//! HTTP layer and discovery are all driven by it, so adding a resource is adding a row.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

/// How a resource is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Has a `/status` subresource: the main endpoint ignores `.status` and `/status` ignores
    /// everything else, as for built-ins and CRDs with `subresources.status`.
    pub status_subresource: bool,
    /// Built-in resources accept an update without `metadata.resourceVersion`
    /// (`AllowUnconditionalUpdate`); custom resources do not.
    pub unconditional_update: bool,
    /// What the registry strategy's `DefaultGarbageCollectionPolicy` answers.
    pub default_gc: PropagationPolicy,
    /// `ReturnDeletedObject` in the registry store: DELETE answers with the object instead of a
    /// success `Status`.
    pub return_deleted_object: bool,
    /// Served from another resource's storage in a different API version (as events.k8s.io/v1
    /// events are core/v1 events): objects are converted on the way in and out.
    pub conversion: Option<&'static Conversion>,
}

/// How a served version maps onto the storage version: the fields that are renamed (every
/// other field is dropped, as decoding into the typed struct does) and the field selector
/// labels the version accepts (its `AddFieldLabelConversionFunc`).
#[derive(Debug, PartialEq, Eq)]
pub struct Conversion {
    pub storage: &'static ResourceDef,
    /// `(storage name, served name)` of every top-level field but apiVersion and kind.
    pub fields: &'static [(&'static str, &'static str)],
    /// `(served label, storage label)`; a label missing here is not supported.
    pub field_labels: &'static [(&'static str, &'static str)],
}

impl Conversion {
    /// Copies the fields of `obj` under their names on the other side, and stamps `to`'s
    /// apiVersion and kind.
    fn convert(&self, obj: &Value, to: &ResourceDef, to_storage: bool) -> Value {
        let mut out = Map::new();
        out.insert("apiVersion".into(), json!(to.api_version()));
        out.insert("kind".into(), json!(to.kind));
        for &(stored, served) in self.fields {
            let (from, into) = if to_storage {
                (served, stored)
            } else {
                (stored, served)
            };
            if let Some(v) = obj.get(from) {
                out.insert(into.into(), v.clone());
            }
        }
        Value::Object(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropagationPolicy {
    Orphan,
    Background,
    Foreground,
}

impl PropagationPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Orphan" => Some(Self::Orphan),
            "Background" => Some(Self::Background),
            "Foreground" => Some(Self::Foreground),
            _ => None,
        }
    }
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }

    /// The resource whose storage holds this one's objects (itself, unless converted).
    pub fn storage(&self) -> &ResourceDef {
        self.conversion.map_or(self, |c| c.storage)
    }

    /// A request body in this version, as stored.
    pub fn to_storage(&self, obj: Value) -> Value {
        match self.conversion {
            Some(c) if obj.is_object() => c.convert(&obj, c.storage, true),
            _ => obj,
        }
    }

    /// A stored object, as this version serves it.
    pub fn from_storage(&self, stored: Value) -> Value {
        match self.view(&stored) {
            Cow::Owned(v) => v,
            Cow::Borrowed(_) => stored,
        }
    }

    /// [`ResourceDef::from_storage`] without taking the object (watch streams).
    pub fn view<'a>(&self, stored: &'a Value) -> Cow<'a, Value> {
        match self.conversion {
            Some(c) => Cow::Owned(c.convert(stored, self, false)),
            None => Cow::Borrowed(stored),
        }
    }

    /// A field selector label of this version as the storage version names it; `None` when
    /// the version does not support the label.
    pub fn storage_field_label<'a>(&self, label: &'a str) -> Option<&'a str> {
        match self.conversion {
            Some(c) => c
                .field_labels
                .iter()
                .find(|(served, _)| *served == label)
                .map(|(_, stored)| *stored),
            None => Some(label),
        }
    }
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const fn builtin(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
) -> ResourceDef {
    ResourceDef {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced: true,
        short_names,
        verbs: ALL_VERBS,
        status_subresource: true,
        unconditional_update: true,
        default_gc: PropagationPolicy::Background,
        return_deleted_object: false,
        conversion: None,
    }
}

pub const NAMESPACES: ResourceDef = ResourceDef {
    namespaced: false,
    verbs: &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ],
    ..builtin("", "v1", "namespaces", "namespace", "Namespace", &["ns"])
};
pub const PODS: ResourceDef = ResourceDef {
    // pods/storage/storage.go sets ReturnDeletedObject.
    return_deleted_object: true,
    ..builtin("", "v1", "pods", "pod", "Pod", &["po"])
};
pub const EVENTS: ResourceDef = ResourceDef {
    status_subresource: false,
    ..builtin("", "v1", "events", "event", "Event", &["ev"])
};
/// One storage with [`EVENTS`] (pkg/registry/core/event), converted as
/// pkg/apis/events/v1/conversion.go does.
pub const EVENTS_V1: ResourceDef = ResourceDef {
    status_subresource: false,
    conversion: Some(&EVENTS_V1_CONVERSION),
    ..builtin("events.k8s.io", "v1", "events", "event", "Event", &["ev"])
};
/// events.k8s.io/v1 `events` over core/v1 storage: the field mapping of
/// pkg/apis/events/v1/conversion.go (`Convert_v1_Event_To_core_Event` and back) and its
/// `AddFieldLabelConversionsForEvent`.
const EVENTS_V1_CONVERSION: Conversion = Conversion {
    storage: &EVENTS,
    fields: &[
        ("metadata", "metadata"),
        ("involvedObject", "regarding"),
        ("message", "note"),
        ("related", "related"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("action", "action"),
        ("reason", "reason"),
        ("type", "type"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ],
    field_labels: &[
        ("metadata.name", "metadata.name"),
        ("metadata.namespace", "metadata.namespace"),
        ("reason", "reason"),
        ("regarding.kind", "involvedObject.kind"),
        ("regarding.namespace", "involvedObject.namespace"),
        ("regarding.name", "involvedObject.name"),
        ("regarding.uid", "involvedObject.uid"),
        ("regarding.apiVersion", "involvedObject.apiVersion"),
        (
            "regarding.resourceVersion",
            "involvedObject.resourceVersion",
        ),
        ("regarding.fieldPath", "involvedObject.fieldPath"),
        ("reportingController", "reportingComponent"),
        ("source", "source"),
        ("type", "type"),
    ],
};

pub const SERVICES: ResourceDef = builtin("", "v1", "services", "service", "Service", &["svc"]);
pub const CONFIGMAPS: ResourceDef = ResourceDef {
    status_subresource: false,
    ..builtin("", "v1", "configmaps", "configmap", "ConfigMap", &["cm"])
};
/// CSM's `etcd-backup-s3-credentials` (the simulated S3's keys).
pub const SECRETS: ResourceDef = ResourceDef {
    status_subresource: false,
    ..builtin("", "v1", "secrets", "secret", "Secret", &[])
};
pub const PERSISTENTVOLUMECLAIMS: ResourceDef = builtin(
    "",
    "v1",
    "persistentvolumeclaims",
    "persistentvolumeclaim",
    "PersistentVolumeClaim",
    &["pvc"],
);
pub const DEPLOYMENTS: ResourceDef = builtin(
    "apps",
    "v1",
    "deployments",
    "deployment",
    "Deployment",
    &["deploy"],
);
pub const REPLICASETS: ResourceDef = builtin(
    "apps",
    "v1",
    "replicasets",
    "replicaset",
    "ReplicaSet",
    &["rs"],
);
pub const STATEFULSETS: ResourceDef = builtin(
    "apps",
    "v1",
    "statefulsets",
    "statefulset",
    "StatefulSet",
    &["sts"],
);
pub const JOBS: ResourceDef = ResourceDef {
    // pkg/registry/batch/job/strategy.go: DefaultGarbageCollectionPolicy returns
    // OrphanDependents for batch/v1 "for back compatibility": deleting a Job without a
    // propagationPolicy leaves its pods behind.
    default_gc: PropagationPolicy::Orphan,
    ..builtin("batch", "v1", "jobs", "job", "Job", &[])
};
/// OBSERVED.md: the EtcdCluster CRD has no status subresource (`PATCH .../status` is 404), so
/// the status is written with the object, as the restore operator does when it creates a
/// restored cluster already `Running`.
pub const ETCDCLUSTERS: ResourceDef = ResourceDef {
    unconditional_update: false,
    status_subresource: false,
    ..builtin(
        "etcd.database.coreos.com",
        "v1beta2",
        "etcdclusters",
        "etcdcluster",
        "EtcdCluster",
        &["etcd"],
    )
};

/// The etcd-operator's restore requests (its restore operator, `etcd-restore-operator`). As for
/// EtcdClusters, the CRD has no status subresource: the restore operator writes its
/// `status.succeeded`/`status.reason` with the object.
pub const ETCDRESTORES: ResourceDef = ResourceDef {
    unconditional_update: false,
    status_subresource: false,
    ..builtin(
        "etcd.database.coreos.com",
        "v1beta2",
        "etcdrestores",
        "etcdrestore",
        "EtcdRestore",
        &[],
    )
};
/// The etcd-operator's backup requests (CSM's periodic `<cluster>-cluster-periodic-backup`).
pub const ETCDBACKUPS: ResourceDef = ResourceDef {
    unconditional_update: false,
    status_subresource: false,
    ..builtin(
        "etcd.database.coreos.com",
        "v1beta2",
        "etcdbackups",
        "etcdbackup",
        "EtcdBackup",
        &[],
    )
};

pub const ALL: &[ResourceDef] = &[
    NAMESPACES,
    PODS,
    EVENTS,
    EVENTS_V1,
    SERVICES,
    CONFIGMAPS,
    SECRETS,
    PERSISTENTVOLUMECLAIMS,
    DEPLOYMENTS,
    REPLICASETS,
    STATEFULSETS,
    JOBS,
    ETCDCLUSTERS,
    ETCDRESTORES,
    ETCDBACKUPS,
];

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    ALL.iter()
        .find(|d| d.group == group && d.version == version && d.plural == plural)
}

/// Group/versions served under `/apis`, in discovery order.
pub fn api_groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for d in ALL.iter().filter(|d| !d.group.is_empty()) {
        if !out.contains(&(d.group, d.version)) {
            out.push((d.group, d.version));
        }
    }
    out
}

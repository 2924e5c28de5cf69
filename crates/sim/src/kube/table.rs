//! Server-side printing: `Accept: application/json;as=Table;g=meta.k8s.io;v=v1` (what kubectl
//! sends for `kubectl get`) answers a `meta.k8s.io` `Table` with the real server's columns, so
//! `kubectl get pods,jobs,events` against the simulated cluster reads like a real one.
//!
//! Columns and cells follow kubernetes `pkg/printers/internalversion/printers.go` of the
//! version the cluster simulates (Jobs got their Status column in 1.30): the server always
//! renders the wide cells (priority 1 columns), and kubectl shows them with `-o wide`. Custom resources without `additionalPrinterColumns` (the etcd operator's
//! EtcdCluster) get the CRD default, Name and Age (a `date` column, rendered as an age).

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::options::KubeVersion;
use super::resources::ResourceDef;

/// What to put in each row's `object` (`?includeObject=`): the real default is the object's
/// metadata (`PartialObjectMetadata`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// A request answered as a Table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRequest {
    /// `v1` or `v1beta1` of `meta.k8s.io`.
    pub version: &'static str,
    pub include: Include,
    /// The Kubernetes version whose printers to follow.
    pub kube: KubeVersion,
}

/// The Table the `Accept` header asks for, if it does. Media ranges are taken in order (as the
/// real server's negotiation does for equal quality); `406` when nothing offered is served.
pub fn requested(
    headers: &HeaderMap,
    include_object: Option<&str>,
    kube: KubeVersion,
) -> ApiResult<Option<TableRequest>> {
    let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let include = match include_object {
        None | Some("" | "Metadata") => Include::Metadata,
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "includeObject: Unsupported value: \"{other}\": supported values: \"Metadata\", \"None\", \"Object\""
            )));
        }
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let (mut as_, mut group, mut version) = (None, None, None);
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    "as" => as_ = Some(value),
                    "g" => group = Some(value),
                    "v" => version = Some(value),
                    _ => {}
                }
            }
        }
        let json_like = matches!(media.as_str(), "application/json" | "application/*" | "*/*");
        match as_ {
            None if json_like => return Ok(None),
            Some("Table") if json_like && group == Some("meta.k8s.io") => match version {
                Some("v1") => {
                    return Ok(Some(TableRequest {
                        version: "v1",
                        include,
                        kube,
                    }));
                }
                Some("v1beta1") => {
                    return Ok(Some(TableRequest {
                        version: "v1beta1",
                        include,
                        kube,
                    }));
                }
                _ => {}
            },
            _ => {}
        }
    }
    Err(ApiError::NotAcceptable(
        "only the following media types are accepted: application/json, \
         application/json;as=Table;v=v1;g=meta.k8s.io, \
         application/json;as=Table;v=v1beta1;g=meta.k8s.io"
            .to_owned(),
    ))
}

impl TableRequest {
    /// A Table of `items` (as served in `def`'s version), with the list's resourceVersion.
    pub fn render(&self, def: &ResourceDef, items: &[Value], resource_version: &str) -> Value {
        let now = Utc::now();
        let rows: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut row = json!({ "cells": cells(def, item, now, self.kube) });
                if let Some(conditions) = row_conditions(def, item) {
                    row["conditions"] = conditions;
                }
                match self.include {
                    Include::None => {}
                    Include::Metadata => {
                        row["object"] = json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": format!("meta.k8s.io/{}", self.version),
                            "metadata": item.get("metadata").cloned().unwrap_or(json!({})),
                        });
                    }
                    Include::Object => row["object"] = item.clone(),
                }
                row
            })
            .collect();
        json!({
            "kind": "Table",
            "apiVersion": format!("meta.k8s.io/{}", self.version),
            "metadata": { "resourceVersion": resource_version },
            "columnDefinitions": columns(def, self.kube),
            "rows": rows,
        })
    }
}

/// (name, type, format, priority, description) of one column.
type Column = (&'static str, &'static str, &'static str, u8, &'static str);

const NAME: Column = (
    "Name",
    "string",
    "name",
    0,
    "Name must be unique within a namespace. Is required when creating resources, although some \
     resources may allow a client to request the generation of an appropriate name automatically. \
     Name is primarily intended for creation idempotence and configuration definition. Cannot be \
     updated.",
);
const AGE: Column = (
    "Age",
    "string",
    "",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);
const CONTAINERS: Column = (
    "Containers",
    "string",
    "",
    1,
    "Names of each container in the template.",
);
const IMAGES: Column = (
    "Images",
    "string",
    "",
    1,
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = ("Selector", "string", "", 1, "A label query over pods.");

/// `kubectl get job` shows a Status column since 1.30 (kubernetes#123226).
fn job_status_column(kube: KubeVersion) -> bool {
    kube >= KubeVersion::new(1, 30)
}

/// `kubectl get pvc` shows a VolumeAttributesClass column since 1.29.
fn volume_attributes_class_column(kube: KubeVersion) -> bool {
    kube >= KubeVersion::new(1, 29)
}

fn column_set(def: &ResourceDef) -> Vec<Column> {
    match (def.group, def.plural) {
        ("", "pods") => vec![
            NAME,
            (
                "Ready",
                "string",
                "",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                "",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "string",
                "",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            ("IP", "string", "", 1, "podIP address allocated to the pod."),
            (
                "Node",
                "string",
                "",
                1,
                "NodeName indicates in which node this pod is scheduled.",
            ),
            (
                "Nominated Node",
                "string",
                "",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            (
                "Readiness Gates",
                "string",
                "",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        ("", "namespaces") => vec![
            NAME,
            ("Status", "string", "", 0, "The status of the namespace"),
            AGE,
        ],
        ("", "events") | ("events.k8s.io", "events") => vec![
            (
                "Last Seen",
                "string",
                "",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            (
                "Type",
                "string",
                "",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            (
                "Reason",
                "string",
                "",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            (
                "Object",
                "string",
                "",
                0,
                "The object that this event is about.",
            ),
            (
                "Subobject",
                "string",
                "",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            ),
            (
                "Source",
                "string",
                "",
                1,
                "The component reporting this event.",
            ),
            (
                "Message",
                "string",
                "",
                0,
                "A human-readable description of the status of this operation.",
            ),
            (
                "First Seen",
                "string",
                "",
                1,
                "The time at which the event was first recorded.",
            ),
            (
                "Count",
                "string",
                "",
                1,
                "The number of times this event has occurred.",
            ),
            ("Name", "string", "name", 1, NAME.4),
        ],
        ("", "services") => vec![
            NAME,
            (
                "Type",
                "string",
                "",
                0,
                "type determines how the Service is exposed.",
            ),
            (
                "Cluster-IP",
                "string",
                "",
                0,
                "clusterIP is the IP address of the service.",
            ),
            (
                "External-IP",
                "string",
                "",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            (
                "Port(s)",
                "string",
                "",
                0,
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            (
                "Selector",
                "string",
                "",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        ("", "configmaps") => vec![
            NAME,
            (
                "Data",
                "string",
                "",
                0,
                "Data contains the configuration data.",
            ),
            AGE,
        ],
        ("", "secrets") => vec![
            NAME,
            ("Type", "string", "", 0, "The type of the secret."),
            ("Data", "string", "", 0, "Data contains the secret data."),
            AGE,
        ],
        ("", "persistentvolumeclaims") => vec![
            NAME,
            (
                "Status",
                "string",
                "",
                0,
                "phase represents the current phase of PersistentVolumeClaim.",
            ),
            (
                "Volume",
                "string",
                "",
                0,
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            (
                "Capacity",
                "string",
                "",
                0,
                "capacity represents the actual resources of the underlying volume.",
            ),
            (
                "Access Modes",
                "string",
                "",
                0,
                "accessModes contains the actual access modes the volume backing the PVC has.",
            ),
            ("StorageClass", "string", "", 0, "StorageClass of the pvc"),
            (
                "VolumeAttributesClass",
                "string",
                "",
                0,
                "VolumeAttributesClass of the pvc",
            ),
            AGE,
            (
                "VolumeMode",
                "string",
                "",
                1,
                "volumeMode defines what type of volume is required by the claim.",
            ),
        ],
        ("apps", "deployments") => vec![
            NAME,
            (
                "Ready",
                "string",
                "",
                0,
                "Number of the pod with ready state",
            ),
            (
                "Up-to-date",
                "string",
                "",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            (
                "Available",
                "string",
                "",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "replicasets") => vec![
            NAME,
            (
                "Desired",
                "integer",
                "",
                0,
                "Replicas is the number of desired replicas.",
            ),
            (
                "Current",
                "integer",
                "",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            (
                "Ready",
                "integer",
                "",
                0,
                "The number of ready replicas for this replica set.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "statefulsets") => vec![
            NAME,
            (
                "Ready",
                "string",
                "",
                0,
                "Number of the pod with ready state",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        ("batch", "jobs") => vec![
            NAME,
            ("Status", "string", "", 0, "Status of the job."),
            (
                "Completions",
                "string",
                "",
                0,
                "The number of pods which reached phase Succeeded.",
            ),
            (
                "Duration",
                "string",
                "",
                0,
                "Time required to complete the job.",
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        // A CRD's default printer columns: its name and `.metadata.creationTimestamp` as a date.
        _ => vec![NAME, ("Age", "date", "", 0, AGE.4)],
    }
}

fn columns(def: &ResourceDef, kube: KubeVersion) -> Vec<Value> {
    let mut set = column_set(def);
    if def.is("batch", "jobs") && !job_status_column(kube) {
        set.retain(|column| column.0 != "Status");
    }
    if def.is("", "persistentvolumeclaims") && !volume_attributes_class_column(kube) {
        set.retain(|column| column.0 != "VolumeAttributesClass");
    }
    set.into_iter()
        .map(|(name, type_, format, priority, description)| {
            json!({
                "name": name,
                "type": type_,
                "format": format,
                "description": description,
                "priority": priority,
            })
        })
        .collect()
}

/// `duration.HumanDuration` of k8s.io/apimachinery: `45s`, `2m5s`, `15m`, `3h20m`, `2d4h`, `1y`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn time_at(obj: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// `translateTimestampSince`: the age of the time at `pointer`, `<unknown>` without one.
fn since(obj: &Value, pointer: &str, now: DateTime<Utc>) -> String {
    match time_at(obj, pointer) {
        Some(t) => human_duration((now - t).num_seconds()),
        None => "<unknown>".to_owned(),
    }
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn array<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_owned()
    } else {
        s.to_owned()
    }
}

/// `layoutContainerCells`: container names and images, comma-separated.
fn containers(obj: &Value, template: &str) -> (String, String) {
    let list = array(obj, &format!("{template}/spec/containers"));
    let names: Vec<&str> = list.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = list.iter().map(|c| text(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// `metav1.FormatLabelSelector`: `a=b,c in (d)`, `<none>` for an empty one.
fn label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return "<none>".to_owned();
    };
    let mut parts: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for expr in array(selector, "/matchExpressions") {
        let key = text(expr, "/key");
        let values: Vec<&str> = array(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match text(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    if parts.is_empty() {
        "<none>".to_owned()
    } else {
        parts.join(",")
    }
}

fn has_condition(obj: &Value, kind: &str) -> bool {
    array(obj, "/status/conditions")
        .iter()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn cells(def: &ResourceDef, obj: &Value, now: DateTime<Utc>, kube: KubeVersion) -> Vec<Value> {
    let name = json!(text(obj, "/metadata/name"));
    let age = json!(since(obj, "/metadata/creationTimestamp", now));
    match (def.group, def.plural) {
        ("", "pods") => pod_cells(obj, now),
        ("", "namespaces") => vec![name, json!(text(obj, "/status/phase")), age],
        ("", "services") => service_cells(obj, name, age),
        ("", "configmaps") => {
            let count = |key: &str| {
                obj.get(key)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            };
            vec![name, json!(count("data") + count("binaryData")), age]
        }
        ("", "secrets") => {
            let count = |key: &str| {
                obj.get(key)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            };
            let kind = obj.get("type").and_then(Value::as_str).unwrap_or("Opaque");
            vec![
                name,
                json!(kind),
                json!(count("data") + count("stringData")),
                age,
            ]
        }
        ("", "persistentvolumeclaims") => pvc_cells(obj, name, age, kube),
        ("", "events") | ("events.k8s.io", "events") => event_cells(def, obj, now),
        ("apps", "deployments") => {
            let (names, images) = containers(obj, "/spec/template");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                age,
                json!(names),
                json!(images),
                json!(label_selector(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "replicasets") => {
            let (names, images) = containers(obj, "/spec/template");
            vec![
                name,
                json!(int(obj, "/spec/replicas")),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                age,
                json!(names),
                json!(images),
                json!(label_selector(obj.pointer("/spec/selector"))),
            ]
        }
        ("apps", "statefulsets") => {
            let (names, images) = containers(obj, "/spec/template");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                age,
                json!(names),
                json!(images),
            ]
        }
        ("batch", "jobs") => job_cells(obj, now, kube),
        _ => vec![name, age],
    }
}

/// `printService`.
fn service_cells(svc: &Value, name: Value, age: Value) -> Vec<Value> {
    let kind = match text(svc, "/spec/type") {
        "" => "ClusterIP",
        other => other,
    };
    let external_ips: Vec<&str> = array(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match kind {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_owned(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = array(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match text(i, "/ip") {
                    "" => text(i, "/hostname"),
                    ip => ip,
                })
                .filter(|ip| !ip.is_empty())
                .collect();
            ips.extend(&external_ips);
            if ips.is_empty() {
                "<pending>".to_owned()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => text(svc, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    };
    let ports: Vec<String> = array(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = match text(p, "/protocol") {
                "" => "TCP",
                other => other,
            };
            match int(p, "/nodePort") {
                0 => format!("{}/{protocol}", int(p, "/port")),
                node_port => format!("{}:{node_port}/{protocol}", int(p, "/port")),
            }
        })
        .collect();
    let selector: Vec<String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    vec![
        name,
        json!(kind),
        json!(or_none(text(svc, "/spec/clusterIP"))),
        json!(external),
        json!(if ports.is_empty() {
            "<none>".to_owned()
        } else {
            ports.join(",")
        }),
        age,
        json!(if selector.is_empty() {
            "<none>".to_owned()
        } else {
            selector.join(",")
        }),
    ]
}

/// `printPersistentVolumeClaim`.
fn pvc_cells(pvc: &Value, name: Value, age: Value, kube: KubeVersion) -> Vec<Value> {
    let deleting = pvc
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    let phase = if deleting {
        "Terminating"
    } else {
        text(pvc, "/status/phase")
    };
    let volume = text(pvc, "/spec/volumeName");
    let (capacity, access_modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        let modes: Vec<&str> = array(pvc, "/status/accessModes")
            .iter()
            .filter_map(Value::as_str)
            .map(|m| match m {
                "ReadWriteOnce" => "RWO",
                "ReadOnlyMany" => "ROX",
                "ReadWriteMany" => "RWX",
                "ReadWriteOncePod" => "RWOP",
                other => other,
            })
            .collect();
        (
            text(pvc, "/status/capacity/storage").to_owned(),
            modes.join(","),
        )
    };
    let storage_class = match text(pvc, "/spec/storageClassName") {
        "" => pvc
            .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .and_then(Value::as_str)
            .unwrap_or(""),
        class => class,
    };
    let mut cells = vec![
        name,
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(access_modes),
        json!(storage_class),
    ];
    if volume_attributes_class_column(kube) {
        cells.push(json!(match text(pvc, "/spec/volumeAttributesClassName") {
            "" => "<unset>",
            class => class,
        }));
    }
    cells.push(age);
    cells.push(json!(match text(pvc, "/spec/volumeMode") {
        "" => "<unset>",
        mode => mode,
    }));
    cells
}

/// `printJob`.
fn job_cells(obj: &Value, now: DateTime<Utc>, kube: KubeVersion) -> Vec<Value> {
    let succeeded = int(obj, "/status/succeeded");
    let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match int(obj, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(obj, "/status/startTime"),
        time_at(obj, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration((now - start).num_seconds()),
        (Some(start), Some(end)) => human_duration((end - start).num_seconds()),
    };
    let status = if has_condition(obj, "Complete") {
        "Complete"
    } else if has_condition(obj, "Failed") {
        "Failed"
    } else if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        "Terminating"
    } else if has_condition(obj, "Suspended") {
        "Suspended"
    } else if has_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(obj, "/spec/template");
    let mut cells = vec![
        json!(text(obj, "/metadata/name")),
        json!(status),
        json!(completions),
        json!(duration),
        json!(since(obj, "/metadata/creationTimestamp", now)),
        json!(names),
        json!(images),
        json!(label_selector(obj.pointer("/spec/selector"))),
    ];
    if !job_status_column(kube) {
        cells.remove(1);
    }
    cells
}

/// `printPod` for pods without init containers (the simulation has none).
fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = text(pod, "/status/phase");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    let total = array(pod, "/spec/containers").len();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut has_running = false;
    for container in array(pod, "/status/containerStatuses").iter().rev() {
        restarts += int(container, "/restartCount");
        if let Some(finished) = time_at(container, "/lastState/terminated/finishedAt") {
            last_restart = Some(last_restart.map_or(finished, |t| t.max(finished)));
        }
        let waiting = text(container, "/state/waiting/reason");
        let terminated = container.pointer("/state/terminated");
        if !waiting.is_empty() {
            reason = waiting.to_owned();
        } else if let Some(terminated) = terminated {
            reason = match text(terminated, "/reason") {
                "" => match int(terminated, "/signal") {
                    0 => format!("ExitCode:{}", int(terminated, "/exitCode")),
                    signal => format!("Signal:{signal}"),
                },
                r => r.to_owned(),
            };
        } else if container["ready"] == true && container.pointer("/state/running").is_some() {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        reason = if has_condition(pod, "Ready") {
            "Running".to_owned()
        } else {
            "NotReady".to_owned()
        };
    }
    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null());
    if deleting && text(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".to_owned();
    }
    let restarts = match last_restart {
        Some(at) if restarts != 0 => {
            format!(
                "{restarts} ({} ago)",
                human_duration((now - at).num_seconds())
            )
        }
        _ => restarts.to_string(),
    };
    let ip = array(pod, "/status/podIPs")
        .first()
        .map(|ip| text(ip, "/ip"))
        .unwrap_or_default();
    let gates = array(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let met = gates
            .iter()
            .filter(|g| has_condition(pod, text(g, "/conditionType")))
            .count();
        format!("{met}/{}", gates.len())
    };
    vec![
        json!(text(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(since(pod, "/metadata/creationTimestamp", now)),
        json!(or_none(ip)),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates),
    ]
}

/// `printEvent`, on either served version of an Event (core/v1 names its fields differently
/// from events.k8s.io/v1).
fn event_cells(def: &ResourceDef, event: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let core = def.group.is_empty();
    let field = |core_name: &str, v1_name: &str| {
        if core {
            format!("/{core_name}")
        } else {
            format!("/{v1_name}")
        }
    };
    let age =
        |pointer: &str| time_at(event, pointer).map(|t| human_duration((now - t).num_seconds()));
    let first = age(&field("firstTimestamp", "deprecatedFirstTimestamp"))
        .or_else(|| age("/eventTime"))
        .unwrap_or_else(|| "<unknown>".to_owned());
    let mut last =
        age(&field("lastTimestamp", "deprecatedLastTimestamp")).unwrap_or_else(|| first.clone());
    let mut count = int(event, &field("count", "deprecatedCount"));
    if event.get("series").is_some_and(|s| !s.is_null()) {
        last = age("/series/lastObservedTime").unwrap_or_else(|| "<unknown>".to_owned());
        count = int(event, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let regarding = field("involvedObject", "regarding");
    let kind = text(event, &format!("{regarding}/kind")).to_lowercase();
    let object_name = text(event, &format!("{regarding}/name"));
    let target = if object_name.is_empty() {
        kind
    } else {
        format!("{kind}/{object_name}")
    };
    // `formatEventSource`: the old source's component and host, else the reporting
    // controller and instance.
    let first_non_empty = |a: &'static str, b: &str| {
        let a = text(event, a);
        if a.is_empty() {
            text(event, b).to_owned()
        } else {
            a.to_owned()
        }
    };
    let (component, host) = if core {
        (
            first_non_empty("/source/component", "/reportingComponent"),
            first_non_empty("/source/host", "/reportingInstance"),
        )
    } else {
        (
            first_non_empty("/deprecatedSource/component", "/reportingController"),
            first_non_empty("/deprecatedSource/host", "/reportingInstance"),
        )
    };
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(text(event, "/type")),
        json!(text(event, "/reason")),
        json!(target),
        json!(text(event, &format!("{regarding}/fieldPath"))),
        json!(source),
        json!(text(event, &field("message", "note")).trim()),
        json!(first),
        json!(count),
        json!(text(event, "/metadata/name")),
    ]
}

/// `podSuccessConditions` and `podFailedConditions`: finished pods are marked completed.
fn row_conditions(def: &ResourceDef, obj: &Value) -> Option<Value> {
    if !def.is("", "pods") {
        return None;
    }
    let (reason, message) = match text(obj, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    }]))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accept(value: &str) -> ApiResult<Option<TableRequest>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        requested(&headers, None, KubeVersion::CSM)
    }

    #[test]
    fn kubectl_accept_header_asks_for_a_v1_table() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,\
                       application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            accept(kubectl).unwrap(),
            Some(TableRequest {
                version: "v1",
                include: Include::Metadata,
                kube: KubeVersion::CSM,
            })
        );
        assert_eq!(
            accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io")
                .unwrap()
                .map(|t| t.version),
            Some("v1beta1")
        );
        assert_eq!(accept("application/json").unwrap(), None);
        assert_eq!(accept("*/*").unwrap(), None);
        assert!(matches!(
            accept("application/json;as=Table;v=v9;g=meta.k8s.io"),
            Err(ApiError::NotAcceptable(_))
        ));
    }

    #[test]
    fn human_durations_match_apimachinery() {
        for (seconds, text) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (125, "2m5s"),
            (180, "3m"),
            (15 * 60 + 30, "15m"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (10 * 3600, "10h"),
            (2 * 86400 + 4 * 3600, "2d4h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ] {
            assert_eq!(human_duration(seconds), text, "{seconds}");
        }
    }

    #[test]
    fn pods_show_the_container_reason_and_restarts() {
        let now = Utc::now();
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": meta_time(now, 30)},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "c", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": meta_time(now, 5)}},
            }]},
        });
        let cells = pod_cells(&pod, now);
        assert_eq!(cells[1], "0/1");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "2 (5s ago)");
        assert_eq!(cells[4], "30s");
    }

    fn meta_time(now: DateTime<Utc>, seconds_ago: i64) -> String {
        super::super::meta::format_time(now - chrono::Duration::seconds(seconds_ago))
    }
}

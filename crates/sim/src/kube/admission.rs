//! Per-resource defaulting and validation done by the API server before storing (the
//! registry strategies' PrepareForCreate/Validate/ValidateUpdate), on the stored form of the
//! object; `def` is the resource as requested, whose version some rules depend on. The Job
//! rules matter most: re-creating a Job from its own saved manifest fails here exactly as on a
//! real cluster.

use serde_json::{Value, json};

use super::error::{ApiError, ApiResult, FieldError};
use super::events;
use super::meta;
use super::options::KubeVersion;
use super::resources::ResourceDef;
use super::selector::{LabelSelector, labels_of, string_map};

/// Labels the Job API generates (pkg/apis/batch/types.go): the unprefixed ones on every version,
/// the prefixed ones from 1.27 on.
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_CONTROLLER_UID: &str = "controller-uid";
pub const LEGACY_JOB_NAME: &str = "job-name";

pub fn prepare_create(def: &ResourceDef, obj: &mut Value, version: KubeVersion) -> ApiResult<()> {
    match (def.group, def.plural) {
        ("", "namespaces") => {
            obj["status"] = json!({ "phase": "Active" });
            Ok(())
        }
        ("", "pods") => prepare_pod(def, obj),
        ("", "services") => prepare_service(obj),
        ("", "events") | ("events.k8s.io", "events") => events::prepare_create(def, obj),
        ("batch", "jobs") => prepare_job(def, obj, version),
        ("apps", "deployments" | "replicasets" | "statefulsets") => {
            prepare_workload(def, obj, version)
        }
        // SetDefaults_PersistentVolumeClaim: the volume controller binds it later.
        ("", "persistentvolumeclaims") => {
            obj["status"] = json!({ "phase": "Pending" });
            Ok(())
        }
        _ => Ok(()),
    }
}

pub fn validate_update(def: &ResourceDef, old: &Value, new: &Value) -> ApiResult<()> {
    if def.storage().is("", "events") {
        return events::validate_update(def, old, new);
    }
    let immutable: &[&str] = match (def.group, def.plural) {
        // The pod template is immutable too, except for a few scheduling fields.
        ("batch", "jobs") => &["selector", "template"],
        ("apps", "deployments" | "replicasets" | "statefulsets") => &["selector"],
        // Allocated once (pkg/apis/core/validation ValidateServiceUpdate), unless the type
        // changes to or from ExternalName, which the simulator does not model.
        ("", "services") => &["clusterIP"],
        _ => &[],
    };
    let causes: Vec<FieldError> = immutable
        .iter()
        .filter(|f| old.pointer(&format!("/spec/{f}")) != new.pointer(&format!("/spec/{f}")))
        .map(|f| {
            FieldError::invalid(
                format!("spec.{f}"),
                new.pointer(&format!("/spec/{f}")).unwrap_or(&Value::Null),
                "field is immutable",
            )
        })
        .collect();
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            def,
            meta::name(new).unwrap_or_default(),
            causes,
        ))
    }
}

fn set_default(obj: &mut Value, pointer: &str, value: Value) {
    if obj.pointer(pointer).is_none() {
        let mut parts: Vec<&str> = pointer.split('/').skip(1).collect();
        let Some(last) = parts.pop() else { return };
        let mut cur = &mut *obj;
        for p in parts {
            if !cur.get(p).is_some_and(Value::is_object) {
                cur[p] = json!({});
            }
            cur = &mut cur[p];
        }
        cur[last] = value;
    }
}

fn containers_required(spec_path: &str, spec: Option<&Value>) -> Option<FieldError> {
    let has = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    (!has).then(|| FieldError::required(format!("{spec_path}.containers"), ""))
}

fn prepare_pod(def: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
    if let Some(err) = containers_required("spec", obj.get("spec")) {
        return Err(ApiError::invalid(
            def,
            meta::name(obj).unwrap_or_default(),
            vec![err],
        ));
    }
    set_default(obj, "/spec/restartPolicy", json!("Always"));
    set_default(obj, "/spec/terminationGracePeriodSeconds", json!(30));
    set_default(obj, "/spec/dnsPolicy", json!("ClusterFirst"));
    set_default(obj, "/spec/schedulerName", json!("default-scheduler"));
    obj["status"] = json!({ "phase": "Pending", "qosClass": "BestEffort" });
    Ok(())
}

/// The service CIDR of the simulated cluster: 127.77.0.0/16, on loopback (all of 127/8 is
/// loopback on Linux), so that what the simulated kubelet starts behind a Service (a real etcd
/// for an etcd cluster) is reachable at the Service's cluster IP, as through kube-proxy.
pub const SERVICE_CIDR: &str = "127.77.0.0/16";

/// The pod network of the simulated cluster's real etcd members: 127.76.0.0/16, on loopback,
/// so that a member's etcd listens on its pod's IP. Below the service CIDR, so that a member's
/// URL at its pod comes before the one at its Service where etcd sorts them (`clientURLs`),
/// as `<pod>.<headless>...` comes before `<service>.<namespace>...` on a real cluster.
pub const POD_CIDR: &str = "127.76.0.0/16";

/// Process-wide, so that simulated clusters running side by side (tests) never share an
/// address; starting at a random offset so that test processes running side by side rarely do.
static NEXT_CLUSTER_IP: std::sync::LazyLock<std::sync::atomic::AtomicU32> =
    std::sync::LazyLock::new(|| std::sync::atomic::AtomicU32::new(rand::random::<u32>()));
static NEXT_POD_IP: std::sync::LazyLock<std::sync::atomic::AtomicU32> =
    std::sync::LazyLock::new(|| std::sync::atomic::AtomicU32::new(rand::random::<u32>()));

/// A free address of `127.<net>.0.0/16`: one nobody listens on at the etcd ports.
fn allocate_loopback(net: u8, next: &std::sync::atomic::AtomicU32) -> std::net::Ipv4Addr {
    loop {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u16;
        let [hi, lo] = n.to_be_bytes();
        if lo == 0 || lo == 255 {
            continue;
        }
        let ip = std::net::Ipv4Addr::new(127, net, hi, lo);
        let free = [2379, 2380]
            .iter()
            .all(|port| std::net::TcpListener::bind((ip, *port)).is_ok());
        if free {
            return ip;
        }
    }
}

/// A free address of [`SERVICE_CIDR`].
pub fn allocate_cluster_ip() -> std::net::Ipv4Addr {
    allocate_loopback(77, &NEXT_CLUSTER_IP)
}

/// A free address of [`POD_CIDR`].
pub fn allocate_pod_ip() -> std::net::Ipv4Addr {
    allocate_loopback(76, &NEXT_POD_IP)
}

/// A Service gets its cluster IP at creation (`spec.clusterIP` and `spec.clusterIPs`), except a
/// headless one (`None`) and an ExternalName one.
fn prepare_service(obj: &mut Value) -> ApiResult<()> {
    set_default(obj, "/spec/type", json!("ClusterIP"));
    set_default(obj, "/spec/sessionAffinity", json!("None"));
    if obj.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return Ok(());
    }
    let requested = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .map(str::to_string);
    let ip = requested.unwrap_or_else(|| allocate_cluster_ip().to_string());
    obj["spec"]["clusterIP"] = json!(ip);
    obj["spec"]["clusterIPs"] = json!([ip]);
    set_default(obj, "/spec/ipFamilies", json!(["IPv4"]));
    set_default(obj, "/spec/ipFamilyPolicy", json!("SingleStack"));
    Ok(())
}

fn prepare_workload(def: &ResourceDef, obj: &mut Value, version: KubeVersion) -> ApiResult<()> {
    if def.plural != "statefulsets" || obj.pointer("/spec/replicas").is_none() {
        set_default(obj, "/spec/replicas", json!(1));
    }
    if def.plural == "statefulsets" {
        // SetDefaults_StatefulSet (pkg/apis/apps/v1/defaults.go).
        set_default(obj, "/spec/podManagementPolicy", json!("OrderedReady"));
        set_default(obj, "/spec/updateStrategy/type", json!("RollingUpdate"));
        if obj.pointer("/spec/updateStrategy/type") == Some(&json!("RollingUpdate")) {
            set_default(
                obj,
                "/spec/updateStrategy/rollingUpdate/partition",
                json!(0),
            );
        }
        set_default(obj, "/spec/revisionHistoryLimit", json!(10));
        // The StatefulSetAutoDeletePVC feature is on from 1.27 (beta); before, the field is
        // dropped (`dropStatefulSetDisabledFields`) and never defaulted.
        if version >= KubeVersion::new(1, 27) {
            set_default(
                obj,
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({ "whenDeleted": "Retain", "whenScaled": "Retain" }),
            );
        } else if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("persistentVolumeClaimRetentionPolicy");
        }
    }
    let name = meta::name(obj).unwrap_or_default().to_string();
    let mut causes = Vec::new();
    if let Some(err) = containers_required("spec.template.spec", obj.pointer("/spec/template/spec"))
    {
        causes.push(err);
    }
    match obj.pointer("/spec/selector") {
        None => causes.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let template_labels = string_map(obj.pointer("/spec/template/metadata/labels"));
            match LabelSelector::from_object(sel) {
                Some(s) if !s.is_empty() && s.matches(&template_labels) => {}
                Some(s) if s.is_empty() => causes.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for deployment",
                )),
                _ => causes.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    obj.pointer("/spec/template/metadata/labels")
                        .unwrap_or(&Value::Null),
                    "`selector` does not match template `labels`",
                )),
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(def, &name, causes))
    }
}

/// `ValidateHasLabel` from pkg/apis/core/validation.
fn has_label(labels: &Value, key: &str, expected: &str, causes: &mut Vec<FieldError>) {
    let field = format!("spec.template.metadata.labels[{key}]");
    match labels.get(key).and_then(Value::as_str) {
        None => causes.push(FieldError::required(
            field,
            &format!("must be '{expected}'"),
        )),
        Some(actual) if actual != expected => causes.push(FieldError::invalid(
            field,
            labels,
            &format!("must be '{expected}'"),
        )),
        Some(_) => {}
    }
}

/// `SetDefaults_Job` (pkg/apis/batch/v1/defaults.go): a Job without labels of its own takes its
/// pod template's. Defaulting runs when the request is decoded and again whenever the object is
/// read from storage, so a Job created without labels shows the generated ones too.
fn default_job_labels(obj: &mut Value) {
    let own = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|l| !l.is_empty());
    let template = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|l| !l.is_empty()))
        .cloned();
    if let (false, Some(labels)) = (own, template) {
        obj["metadata"]["labels"] = labels;
    }
}

/// pkg/registry/batch/job/strategy.go (`generateSelector`) followed by
/// pkg/apis/batch/validation (`validateGeneratedSelector`, `ValidateJobSpec`), as of `version`:
/// before 1.27 the generated labels are `controller-uid` and `job-name` and the selector uses
/// `controller-uid`; from 1.27 on the `batch.kubernetes.io/` ones are added and selected by.
fn prepare_job(def: &ResourceDef, obj: &mut Value, version: KubeVersion) -> ApiResult<()> {
    let name = meta::name(obj).unwrap_or_default().to_string();
    let uid = meta::uid(obj).unwrap_or_default().to_string();
    let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    let prefixed = version.prefixed_job_labels();
    // In the order validation checks them.
    let all = [
        (LEGACY_CONTROLLER_UID, &uid),
        (LEGACY_JOB_NAME, &name),
        (JOB_CONTROLLER_UID, &uid),
        (JOB_NAME, &name),
    ];
    let generated = &all[..if prefixed { 4 } else { 2 }];
    let selected_by = if prefixed {
        JOB_CONTROLLER_UID
    } else {
        LEGACY_CONTROLLER_UID
    };
    default_job_labels(obj);
    set_default(obj, "/spec/template/metadata/labels", json!({}));
    if !manual {
        // Generated labels are added only where absent: labels copied from the old Job keep
        // their old values and are then rejected below.
        let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
        for (k, v) in generated {
            if labels.get(k).is_none() {
                labels[k] = json!(v);
            }
        }
        set_default(obj, "/spec/selector/matchLabels", json!({}));
        let ml = &mut obj["spec"]["selector"]["matchLabels"];
        if ml.get(selected_by).is_none() {
            ml[selected_by] = json!(uid);
        }
    }
    default_job_labels(obj);
    set_default(obj, "/spec/parallelism", json!(1));
    set_default(obj, "/spec/completions", json!(1));
    set_default(obj, "/spec/backoffLimit", json!(6));
    set_default(obj, "/spec/completionMode", json!("NonIndexed"));
    set_default(obj, "/spec/suspend", json!(false));
    if version >= KubeVersion::new(1, 29) {
        set_default(
            obj,
            "/spec/podReplacementPolicy",
            json!("TerminatingOrFailed"),
        );
    }

    let mut causes = Vec::new();
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let selector = obj.pointer("/spec/selector").cloned();
    if !manual && let Some(sel) = &selector {
        for (k, v) in generated {
            has_label(&labels, k, v, &mut causes);
        }
        let expected = generated
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).clone()))
            .collect();
        if LabelSelector::from_object(sel).is_some_and(|s| !s.matches(&expected)) {
            causes.push(FieldError::invalid(
                "spec.selector",
                sel,
                "`selector` not auto-generated",
            ));
        }
    }
    match &selector {
        None => causes.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let template_labels = labels_of(&json!({ "metadata": { "labels": labels } }));
            match LabelSelector::from_object(sel) {
                Some(s) if s.matches(&template_labels) => {}
                Some(_) => causes.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &labels,
                    "`selector` does not match template `labels`",
                )),
                None => causes.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    "invalid selector",
                )),
            }
        }
    }
    if let Some(err) = containers_required("spec.template.spec", obj.pointer("/spec/template/spec"))
    {
        causes.push(err);
    }
    match obj
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
    {
        Some("OnFailure" | "Never") => {}
        None | Some("" | "Always") => causes.push(FieldError::required(
            "spec.template.spec.restartPolicy",
            "valid values: \"OnFailure\", \"Never\"",
        )),
        Some(other) => causes.push(FieldError {
            reason: "FieldValueNotSupported",
            field: "spec.template.spec.restartPolicy".into(),
            message: format!(
                "Unsupported value: \"{other}\": supported values: \"OnFailure\", \"Never\""
            ),
        }),
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(def, &name, causes))
    }
}

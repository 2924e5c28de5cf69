//! Events: one storage (pkg/registry/core/event) served as core/v1 `events` and as
//! events.k8s.io/v1 `events`. Objects are stored in the core/v1 form; `resources::EVENTS_V1`
//! converts them with the field mapping of pkg/apis/events/v1/conversion.go
//! (`Convert_v1_Event_To_core_Event` and back, and `AddFieldLabelConversionsForEvent`), and the
//! validation here is pkg/apis/core/validation/events.go
//! (`ValidateEventCreate`/`ValidateEventUpdate`), which runs on the stored form but depends on
//! the API version of the request.

use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult, FieldError};
use super::meta;
use super::resources::ResourceDef;

/// The fields `ToSelectableFields` (pkg/registry/core/event/strategy.go) offers, as JSON
/// pointers into the stored object; with several, the first non-empty one counts (`source` is
/// `source.component`, or `reportingComponent` when that is empty).
pub fn selectable_field(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "involvedObject.kind" => &["/involvedObject/kind"],
        "involvedObject.namespace" => &["/involvedObject/namespace"],
        "involvedObject.name" => &["/involvedObject/name"],
        "involvedObject.uid" => &["/involvedObject/uid"],
        "involvedObject.apiVersion" => &["/involvedObject/apiVersion"],
        "involvedObject.resourceVersion" => &["/involvedObject/resourceVersion"],
        "involvedObject.fieldPath" => &["/involvedObject/fieldPath"],
        "reason" => &["/reason"],
        "reportingComponent" => &["/reportingComponent"],
        "source" => &["/source/component", "/reportingComponent"],
        "type" => &["/type"],
        _ => return None,
    })
}

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

/// `(stored field, error path)` of what an events.k8s.io/v1 update may not change, in the
/// order of `ValidateEventUpdate` (which checks `reason` twice).
const IMMUTABLE: &[(&str, &str)] = &[
    ("involvedObject", "involvedObject"),
    ("reason", "reason"),
    ("message", "message"),
    ("source", "source"),
    ("firstTimestamp", "firstTimestamp"),
    ("lastTimestamp", "lastTimestamp"),
    ("count", "count"),
    ("reason", "reason"),
    ("type", "type"),
    ("eventTime", "eventTime"),
    ("action", "action"),
    ("related", "related"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
];

/// The value with Go's zero values (null, "", 0, false, empty lists and objects) dropped: an
/// absent field and a zero one are the same once decoded into the Go structs.
fn strip(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Object(m)) => {
            let m: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), strip(Some(v))))
                .filter(|(_, v)| !v.is_null())
                .collect();
            if m.is_empty() {
                Value::Null
            } else {
                Value::Object(m)
            }
        }
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Value::Null,
        Some(Value::Bool(false)) => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(other) => other.clone(),
    }
}

fn is_set(obj: &Value, pointer: &str) -> bool {
    !strip(obj.pointer(pointer)).is_null()
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Strict validation applies to writes through events.k8s.io/v1; core/v1 (and v1beta1) get
/// only the legacy rules, for backwards compatibility.
fn strict(def: &ResourceDef) -> bool {
    !def.group.is_empty()
}

const QUALIFIED_NAME: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// `validation.IsQualifiedName`: a name of at most 63 characters with an optional DNS
/// subdomain prefix and '/'.
fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let name = match value.split('/').collect::<Vec<_>>().as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if let Some(msg) = meta::invalid_name(prefix) {
                errs.push(format!("prefix part {msg}"));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".into());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'));
    if !ok {
        errs.push(format!("name part {QUALIFIED_NAME}"));
    }
    errs
}

/// `legacyValidateEvent`: every write, whatever its version.
fn legacy(def: &ResourceDef, ev: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = meta::namespace(ev).unwrap_or_default();
    let involved_ns = str_at(ev, "/involvedObject/namespace");
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            &json!(involved_ns),
            "does not match event.namespace",
        )
    };
    if !is_set(ev, "/eventTime") {
        // An old-style event: its namespace is the involved object's ("" or "default" for a
        // cluster-scoped one).
        let matches = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !matches {
            errs.push(mismatch());
        }
        return errs;
    }
    if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
        errs.push(mismatch());
    }
    let controller_path = if strict(def) {
        "reportingController"
    } else {
        "reportingComponent"
    };
    let controller = str_at(ev, "/reportingComponent");
    if controller.is_empty() {
        errs.push(FieldError::required(controller_path, ""));
    }
    for msg in qualified_name(controller) {
        errs.push(FieldError::invalid(
            controller_path,
            &json!(controller),
            &msg,
        ));
    }
    for (field, limit) in [
        ("reportingInstance", REPORTING_INSTANCE_LIMIT),
        ("action", ACTION_LIMIT),
        ("reason", REASON_LIMIT),
    ] {
        let v = str_at(ev, &format!("/{field}"));
        if v.is_empty() {
            errs.push(FieldError::required(field, ""));
        }
        if v.len() > limit {
            errs.push(too_long(field, limit));
        }
    }
    if str_at(ev, "/message").len() > NOTE_LIMIT {
        errs.push(too_long("message", NOTE_LIMIT));
    }
    errs
}

fn too_long(field: &str, limit: usize) -> FieldError {
    FieldError::invalid(
        field,
        &json!(""),
        &format!("can have at most {limit} characters"),
    )
}

/// `validateV1EventSeries`.
fn series(ev: &Value) -> Vec<FieldError> {
    let Some(series) = ev.get("series").filter(|s| !s.is_null()) else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        errs.push(FieldError::invalid(
            "series.count",
            &json!(""),
            "should be at least 2",
        ));
    }
    if !is_set(series, "/lastObservedTime") {
        errs.push(FieldError::required("series.lastObservedTime", ""));
    }
    errs
}

fn result(def: &ResourceDef, ev: &Value, causes: Vec<FieldError>) -> ApiResult<()> {
    if causes.is_empty() {
        return Ok(());
    }
    // The error names the stored (internal) kind, whatever the request's version.
    Err(ApiError::invalid(
        def.storage(),
        meta::name(ev).unwrap_or_default(),
        causes,
    ))
}

/// PrepareForCreate and `ValidateEventCreate`, on the stored form of a new event.
pub fn prepare_create(def: &ResourceDef, ev: &mut Value) -> ApiResult<()> {
    // involvedObject is a struct, not a pointer: always there, if empty.
    if !ev.get("involvedObject").is_some_and(Value::is_object) {
        ev["involvedObject"] = json!({});
    }
    let mut errs = legacy(def, ev);
    if strict(def) {
        errs.extend(series(ev));
        if !is_set(ev, "/eventTime") {
            errs.push(FieldError::required("eventTime", ""));
        }
        let ty = str_at(ev, "/type");
        if ty != "Normal" && ty != "Warning" {
            errs.push(FieldError::invalid(
                "type",
                &json!(""),
                &format!("has invalid value: {ty}"),
            ));
        }
        for field in ["firstTimestamp", "lastTimestamp", "count"] {
            if is_set(ev, &format!("/{field}")) {
                errs.push(FieldError::invalid(field, &json!(""), "needs to be unset"));
            }
        }
        if is_set(ev, "/source/component") || is_set(ev, "/source/host") {
            errs.push(FieldError::invalid(
                "source",
                &json!(""),
                "needs to be unset",
            ));
        }
    }
    result(def, ev, errs)
}

/// `ValidateEventUpdate`, on the stored forms.
pub fn validate_update(def: &ResourceDef, old: &Value, new: &Value) -> ApiResult<()> {
    let mut errs = legacy(def, new);
    if strict(def) {
        if strip(old.get("series")) != strip(new.get("series")) {
            errs.extend(series(new));
        }
        for &(field, path) in IMMUTABLE {
            if strip(old.get(field)) != strip(new.get(field)) {
                errs.push(FieldError::invalid(
                    path,
                    new.get(field).unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
    }
    result(def, new, errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{EVENTS, EVENTS_V1};

    fn v1_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": { "name": "p.1", "namespace": "services" },
            "eventTime": "2025-01-01T00:00:00.000001Z",
            "action": "Restart",
            "reason": "Restarted",
            "note": "restarted p",
            "type": "Normal",
            "regarding": { "kind": "Pod", "name": "p", "namespace": "services", "uid": "u" },
            "reportingController": "etcd-repopulator",
            "reportingInstance": "pod-1",
            "series": { "count": 2, "lastObservedTime": "2025-01-01T00:00:01.000000Z" },
        })
    }

    #[test]
    fn v1_round_trips_through_the_core_form() {
        let mut ev = v1_event();
        ev["deprecatedCount"] = json!(3);
        ev["deprecatedSource"] = json!({ "component": "c" });
        ev["message"] = json!("not a v1 field: dropped");
        let stored = EVENTS_V1.to_storage(ev.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["uid"], "u");
        assert_eq!(stored["message"], "restarted p");
        assert_eq!(stored["reportingComponent"], "etcd-repopulator");
        assert_eq!(stored["count"], 3);
        assert_eq!(stored["source"]["component"], "c");
        assert!(stored.get("note").is_none() && stored.get("regarding").is_none());
        if let Some(m) = ev.as_object_mut() {
            m.remove("message");
        }
        assert_eq!(EVENTS_V1.from_storage(stored.clone()), ev);
        assert_eq!(EVENTS.from_storage(stored.clone()), stored);
    }

    #[test]
    fn field_labels_map_to_the_core_names() {
        assert_eq!(
            EVENTS_V1.storage_field_label("regarding.uid"),
            Some("involvedObject.uid")
        );
        assert_eq!(EVENTS_V1.storage_field_label("involvedObject.uid"), None);
        assert_eq!(EVENTS.storage_field_label("x"), Some("x"));
    }

    fn causes(r: ApiResult<()>) -> Vec<String> {
        match r {
            Err(ApiError::Invalid { causes, kind, .. }) => {
                assert_eq!(kind, "Event");
                causes.into_iter().map(|c| c.field).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn create_rules_depend_on_the_request_version() {
        let ok = EVENTS_V1.to_storage(v1_event());
        assert!(prepare_create(&EVENTS_V1, &mut ok.clone()).is_ok());

        let mut bad = ok.clone();
        bad["reason"] = json!("");
        bad["type"] = json!("Odd");
        bad["involvedObject"]["namespace"] = json!("");
        bad["series"]["count"] = json!(1);
        bad["count"] = json!(1);
        assert_eq!(
            causes(prepare_create(&EVENTS_V1, &mut bad.clone())),
            [
                "involvedObject.namespace",
                "reason",
                "series.count",
                "type",
                "count"
            ]
        );
        // Through core/v1 only the legacy rules apply, naming core fields.
        bad["reportingComponent"] = json!("");
        assert_eq!(
            causes(prepare_create(&EVENTS, &mut bad)),
            [
                "involvedObject.namespace",
                "reportingComponent",
                "reportingComponent",
                "reportingComponent",
                "reason"
            ]
        );
        let mut legacy = json!({
            "metadata": { "name": "e", "namespace": "services" },
            "involvedObject": { "namespace": "other" },
        });
        assert_eq!(
            causes(prepare_create(&EVENTS, &mut legacy)),
            ["involvedObject.namespace"]
        );
    }

    #[test]
    fn v1_updates_keep_the_event_immutable_but_its_series() {
        let old = EVENTS_V1.to_storage(v1_event());
        let mut new = old.clone();
        new["series"] = json!({ "count": 3, "lastObservedTime": "2025-01-01T00:00:02Z" });
        assert!(validate_update(&EVENTS_V1, &old, &new).is_ok());
        new["message"] = json!("changed");
        assert_eq!(causes(validate_update(&EVENTS_V1, &old, &new)), ["message"]);
        assert!(validate_update(&EVENTS, &old, &new).is_ok());
    }

    #[test]
    fn qualified_names() {
        assert!(qualified_name("etcd-repopulator").is_empty());
        assert!(qualified_name("example.com/My_Name").is_empty());
        assert_eq!(qualified_name("").len(), 2);
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert_eq!(qualified_name("-x").len(), 1);
    }
}

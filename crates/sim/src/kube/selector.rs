//! Label and field selectors, with the grammar of k8s.io/apimachinery/pkg/labels and
//! pkg/fields: comma-separated requirements that must all hold.

use std::collections::BTreeMap;

use serde_json::Value;

use labels::{Op, Requirement, Selector};

use super::error::ApiError;
use super::events;
use super::resources::ResourceDef;

/// A parsed `labelSelector` (the grammar and matching of the shared `labels` crate, which the
/// service's configuration check uses too); the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Selector);

impl LabelSelector {
    /// The API server answers a selector it cannot parse with 400 and the parser's message.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        Selector::parse(s).map(Self).map_err(ApiError::BadRequest)
    }

    /// A `metav1.LabelSelector` object (`matchLabels` + `matchExpressions`), as used in
    /// Deployment/ReplicaSet/Job specs. `None` if it is malformed.
    pub fn from_object(sel: &Value) -> Option<Self> {
        let mut reqs = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::Eq(v.as_str()?.to_string()),
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key")?.as_str()?.to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator")?.as_str()? {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    _ => return None,
                };
                reqs.push(Requirement { key, op });
            }
        }
        Some(Self(Selector(reqs)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.is_empty() || self.matches(&labels_of(obj))
    }
}

/// `metadata.labels` as a map (non-string values are ignored).
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    string_map(obj.pointer("/metadata/labels"))
}

pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
struct FieldTerm {
    /// Where the value is in the stored object; the first non-empty one counts.
    pointers: &'static [&'static str],
    value: String,
    negate: bool,
}

/// A parsed `fieldSelector`, limited to the fields the real server indexes for the resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<FieldTerm>);

/// The selectable fields per stored resource (the `*ToSelectableFields` functions of the
/// registries), as JSON pointers.
fn selectable_field(def: &ResourceDef, field: &str) -> Option<&'static [&'static str]> {
    let common: Option<&'static [&'static str]> = match field {
        "metadata.name" => Some(&["/metadata/name"]),
        "metadata.namespace" => Some(&["/metadata/namespace"]),
        _ => None,
    };
    common.or(match (def.group, def.plural, field) {
        ("", "pods", "status.phase") => Some(&["/status/phase"]),
        ("", "pods", "spec.nodeName") => Some(&["/spec/nodeName"]),
        ("", "pods", "spec.restartPolicy") => Some(&["/spec/restartPolicy"]),
        ("", "pods", "spec.serviceAccountName") => Some(&["/spec/serviceAccountName"]),
        ("", "namespaces", "status.phase") => Some(&["/status/phase"]),
        ("", "events", f) => events::selectable_field(f),
        ("batch", "jobs", "status.successful") => Some(&["/status/succeeded"]),
        _ => None,
    })
}

impl FieldSelector {
    /// Parses `s` as `def`'s version names its fields (converted to the storage version's
    /// labels, as the real server's field label conversion does); matching is on stored objects.
    pub fn parse(def: &ResourceDef, s: &str) -> Result<Self, ApiError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut terms = Vec::new();
        for term in s.split(',') {
            let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            let pointers = def
                .storage_field_label(field)
                .and_then(|f| selectable_field(def.storage(), f))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("field label not supported: {field}"))
                })?;
            terms.push(FieldTerm {
                pointers,
                value: value.trim().to_string(),
                negate,
            });
        }
        Ok(Self(terms))
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        self.0.iter().all(|t| {
            let actual = t
                .pointers
                .iter()
                .map(|p| match obj.pointer(p) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                })
                .find(|v| !v.is_empty())
                .unwrap_or_default();
            (actual == t.value) != t.negate
        })
    }
}

/// Label and field selector of one list or watch request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_set_based() {
        let l = labels(&[("app", "cray-reds"), ("tier", "be")]);
        let ok = [
            "app=cray-reds",
            "app==cray-reds",
            "app!=x",
            "app in (x, cray-reds)",
            "app notin (x)",
            "app",
            "!other",
            "app=cray-reds,tier=be",
            "missing!=x",
        ];
        for s in ok {
            assert!(LabelSelector::parse(s).unwrap().matches(&l), "{s}");
        }
        let no = [
            "app=x",
            "app in (x)",
            "app notin (cray-reds)",
            "!app",
            "other",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&l), "{s}");
        }
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        for s in ["app in x", "app=(", "=x", "app in (a", "a b", "app=a b"] {
            assert!(LabelSelector::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn field_selector() {
        let def = super::super::resources::PODS;
        let fs = FieldSelector::parse(&def, "metadata.name=a,status.phase!=Failed").unwrap();
        assert!(fs.matches_object(&json!({"metadata":{"name":"a"},"status":{"phase":"Running"}})));
        assert!(!fs.matches_object(&json!({"metadata":{"name":"b"}})));
        assert!(FieldSelector::parse(&def, "spec.foo=a").is_err());
    }

    #[test]
    fn event_field_selectors_per_version() {
        use super::super::resources::{EVENTS, EVENTS_V1};
        let stored = json!({
            "involvedObject": { "uid": "u", "name": "p" },
            "reportingComponent": "ctl",
        });
        let core = FieldSelector::parse(&EVENTS, "involvedObject.uid=u,source=ctl").unwrap();
        assert!(core.matches_object(&stored));
        let v1 = FieldSelector::parse(&EVENTS_V1, "regarding.name=p,reportingController=ctl");
        assert!(v1.unwrap().matches_object(&stored));
        assert!(FieldSelector::parse(&EVENTS_V1, "involvedObject.uid=u").is_err());
        assert!(FieldSelector::parse(&EVENTS, "regarding.uid=u").is_err());
    }
}

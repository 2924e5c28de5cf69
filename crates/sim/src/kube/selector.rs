//! Label and field selectors, with the grammar of k8s.io/apimachinery/pkg/labels and
//! pkg/fields: comma-separated requirements that must all hold.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ApiError;
use super::events;
use super::resources::ResourceDef;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::Eq(x) => v == Some(x),
            // As in the real selector, `!=` and `notin` also match objects without the key.
            Op::NotEq(x) => v != Some(x),
            Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
            Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Op::Lt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

fn parse_error(detail: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("unable to parse requirement: {detail}"))
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    let name = key.rsplit('/').next().unwrap_or(key);
    if key.is_empty() || name.is_empty() || name.len() > 63 || key.matches('/').count() > 1 {
        return Err(parse_error(format!(
            "Invalid value: {key:?}: name part must be non-empty and at most 63 characters"
        )));
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), ApiError> {
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(parse_error(format!(
            "Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, ApiError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(parse_error("found ')', expected: identifier"));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(parse_error("found '', expected: ')'"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_set(rest: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| parse_error(format!("found '{rest}', expected: '('")))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &values {
        validate_value(v)?;
    }
    Ok(values)
}

fn parse_requirement(term: &str) -> Result<Requirement, ApiError> {
    let term = term.trim();
    if term.is_empty() {
        return Err(parse_error("found '', expected: identifier"));
    }
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement {
            key: key.to_string(),
            op: Op::DoesNotExist,
        });
    }
    let key_end = term.find(|c: char| !is_key_char(c)).unwrap_or(term.len());
    let key = &term[..key_end];
    validate_key(key)?;
    let rest = term[key_end..].trim_start();
    let op = if rest.is_empty() {
        Op::Exists
    } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        let v = v.trim();
        validate_value(v)?;
        Op::Eq(v.to_string())
    } else if let Some(v) = rest.strip_prefix("!=") {
        let v = v.trim();
        validate_value(v)?;
        Op::NotEq(v.to_string())
    } else if let Some(v) = rest.strip_prefix("notin") {
        Op::NotIn(parse_set(v)?)
    } else if let Some(v) = rest.strip_prefix("in") {
        Op::In(parse_set(v)?)
    } else if let Some(v) = rest.strip_prefix('>') {
        Op::Gt(v.trim().parse().map_err(|_| {
            parse_error(format!(
                "for 'Gt', 'Lt' operators, the value must be an integer: {v}"
            ))
        })?)
    } else if let Some(v) = rest.strip_prefix('<') {
        Op::Lt(v.trim().parse().map_err(|_| {
            parse_error(format!(
                "for 'Gt', 'Lt' operators, the value must be an integer: {v}"
            ))
        })?)
    } else {
        return Err(parse_error(format!(
            "found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
        )));
    };
    Ok(Requirement {
        key: key.to_string(),
        op,
    })
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        split_top_level(s)?
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
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
        Some(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
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

//! PATCH bodies. Strategic merge patch merges the lists the core types give a merge key
//! (`containers`, `env`, `volumes` by `name`, `volumeMounts` by `mountPath`, ...: what
//! `kubectl set env` relies on) element by element, honours `$patch: delete` in such an element
//! and ignores the `$setElementOrder` / `$retainKeys` directives; anything else is a JSON merge
//! patch (RFC 7386). Server-side apply is approximated by a merge patch (no field ownership
//! tracking).

use serde_json::Value;

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let mime = ct.split(';').next().unwrap_or("").trim();
        match mime {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The merge key of the list `field` whose elements look like `sample` (the
/// `patchMergeKey`s of core/v1 and apps/v1 that matter here), None for a list that a patch
/// replaces.
fn merge_key(field: &str, sample: &Value) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" if sample.get("containerPort").is_some() => "containerPort",
        "ports" => "port",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        _ => return None,
    })
}

/// A strategic merge patch (see the module's note).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let key = v
            .as_array()
            .and_then(|items| items.first())
            .and_then(|first| merge_key(k, first));
        match (key, v, t.get_mut(k)) {
            (Some(key), Value::Array(items), Some(Value::Array(current))) => {
                for item in items {
                    let id = item.get(key);
                    let at = current
                        .iter()
                        .position(|c| id.is_some() && c.get(key) == id);
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (at, delete) {
                        (Some(i), true) => {
                            current.remove(i);
                        }
                        (Some(i), false) => strategic_merge_patch(&mut current[i], item),
                        (None, true) => {}
                        (None, false) => {
                            let mut new = Value::Null;
                            strategic_merge_patch(&mut new, item);
                            current.push(new);
                        }
                    }
                }
            }
            _ => strategic_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(String, String), ApiError> {
    let idx = path
        .rfind('/')
        .ok_or_else(|| ApiError::UnsupportedMediaType(format!("invalid JSON pointer {path:?}")))?;
    Ok((path[..idx].to_string(), unescape(&path[idx + 1..])))
}

/// A patch that cannot be applied is the client's fault: a 4xx Status, never a panic.
fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let target = doc.pointer_mut(&parent).ok_or_else(|| {
        bad(format!(
            "add operation does not apply: doc is missing path: {path}"
        ))
    })?;
    match target {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| bad(format!("add operation: invalid index in {path}")))?
            };
            a.insert(idx, value);
        }
        _ => return Err(bad(format!("add operation does not apply: {path}"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split_pointer(path)?;
    let missing = || {
        bad(format!(
            "remove operation does not apply: doc is missing path: {path}"
        ))
    };
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let idx = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(idx))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| bad("json patch must be an array of operations"))?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("json patch operation is missing \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| bad(format!("{kind} operation is missing \"value\"")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{kind} operation is missing \"from\"")))
        };
        match kind {
            "add" => add(doc, path, value()?)?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, value()?)?;
            }
            "move" => {
                let v = remove(doc, from()?)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| bad(format!("copy operation: missing from path in {path}")))?;
                add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(bad(format!("testing value {path} failed: test failed")));
                }
            }
            other => return Err(bad(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_patch_merges_containers_and_env_by_name() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "etcd", "image": "i",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "volumeMounts": [{"name": "data", "mountPath": "/bitnami/etcd"}],
        }]}}}});
        strategic_merge_patch(
            &mut d,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "etcd"}],
                "containers": [{
                    "name": "etcd",
                    "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                    "env": [{"name": "B", "value": "new"}, {"name": "C", "value": "3"}, {"name": "A", "$patch": "delete"}],
                }],
            }}}}),
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "i");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/bitnami/etcd");
        assert_eq!(
            c["env"],
            json!([{"name": "B", "value": "new"}, {"name": "C", "value": "3"}])
        );
        // A list without a merge key is replaced.
        let mut d = json!({"args": ["a", "b"]});
        strategic_merge_patch(&mut d, &json!({"args": ["c"]}));
        assert_eq!(d, json!({"args": ["c"]}));
    }

    #[test]
    fn merge_patch_removes_nulls_and_merges_objects() {
        let mut d = json!({"a": {"b": 1, "c": 2}, "l": [1]});
        merge_patch(&mut d, &json!({"a": {"b": null, "d": 3}, "l": [2]}));
        assert_eq!(d, json!({"a": {"c": 2, "d": 3}, "l": [2]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"metadata": {"finalizers": ["x", "y"]}});
        json_patch(
            &mut d,
            &json!([
                {"op": "remove", "path": "/metadata/finalizers/0"},
                {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
                {"op": "test", "path": "/metadata/labels/a", "value": "b"}
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"metadata": {"finalizers": ["y"], "labels": {"a": "b"}}})
        );
    }
}

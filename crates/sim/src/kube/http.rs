//! The Kubernetes REST surface: path parsing (`/api/v1/...`, `/apis/{group}/{version}/...`),
//! discovery documents, and the verbs on collections, objects and subresources.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::authz::{self, Authorizer};
use super::error::{ApiError, ApiResult, FieldError};
use super::faults::{self, FaultInjector};
use super::meta;
use super::patch::{self, PatchKind};
use super::resources::{self, PropagationPolicy, ResourceDef};
use super::selector::{FieldSelector, LabelSelector, Selectors};
use super::store::{DeleteOptions, DeleteOutcome, Store, WriteMode};
use super::table::{self, TableRequest};
use super::watch::{self, WatchParams};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiContext {
    pub store: Arc<Store>,
    pub faults: FaultInjector,
    pub authz: Authorizer,
    pub shutdown: CancellationToken,
}

/// The Kubernetes routes (with fault injection) plus the simulator's own `/sim/*` controls.
pub fn router(ctx: ApiContext) -> Router {
    let kube = Router::new()
        .route("/version", get(version))
        .route("/api", get(core_versions))
        .route("/apis", get(api_group_list))
        .route("/api/{*rest}", any(core_dispatch))
        .route("/apis/{*rest}", any(group_dispatch))
        .route("/openapi/{*rest}", any(no_such_resource))
        .with_state(ctx.clone())
        .layer(axum::middleware::from_fn_with_state(
            ctx.faults.clone(),
            faults::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            ctx.authz.clone(),
            authz::middleware,
        ));
    let sim = Router::new()
        .route("/sim/healthz", get(|| async { "ok\n" }))
        .route(
            "/sim/faults",
            axum::routing::post(faults::post_faults).delete(faults::delete_faults),
        )
        .with_state(ctx.faults.clone());
    kube.merge(sim)
}

async fn no_such_resource() -> ApiError {
    ApiError::NoSuchResource
}

async fn version(State(ctx): State<ApiContext>) -> Response {
    let version = ctx.store.version();
    axum::Json(json!({
        "major": version.major.to_string(),
        "minor": version.minor.to_string(),
        "gitVersion": format!("v{version}.0-sim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
    .into_response()
}

async fn core_versions(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": host }],
    }))
    .into_response()
}

fn api_group(group: &str) -> Value {
    let versions: Vec<Value> = resources::api_groups()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({ "groupVersion": format!("{g}/{v}"), "version": v }))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": versions, "preferredVersion": preferred })
}

async fn api_group_list() -> Response {
    let mut names: Vec<&str> = resources::api_groups()
        .into_iter()
        .map(|(g, _)| g)
        .collect();
    names.dedup();
    let groups: Vec<Value> = names.into_iter().map(api_group).collect();
    axum::Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }))
        .into_response()
}

fn resource_list(group: &str, version: &str) -> ApiResult<Value> {
    let defs: Vec<&ResourceDef> = resources::ALL
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return Err(ApiError::NoSuchResource);
    }
    let mut entries = Vec::new();
    for d in defs {
        entries.push(json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": d.verbs,
            "shortNames": d.short_names,
        }));
        if d.status_subresource {
            entries.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if d.group == "apps" {
            entries.push(json!({
                "name": format!("{}/scale", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if d.is("", "pods") {
            entries.push(json!({
                "name": "pods/log",
                "singularName": "",
                "namespaced": true,
                "kind": "Pod",
                "verbs": ["get"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": entries,
    }))
}

/// What a request path addresses.
enum Target {
    Discovery {
        group: String,
        version: String,
    },
    Group(String),
    Collection {
        def: &'static ResourceDef,
        ns: Option<String>,
    },
    Object {
        def: &'static ResourceDef,
        ns: String,
        name: String,
        sub: Option<String>,
    },
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let find = |plural: &str| resources::find(group, version, plural);
    match rest {
        [] => Ok(Target::Discovery {
            group: group.into(),
            version: version.into(),
        }),
        ["namespaces", ns, plural, tail @ ..]
            if find(plural).is_some_and(|d| d.namespaced) && tail.len() <= 2 =>
        {
            let def = find(plural).ok_or(ApiError::NoSuchResource)?;
            match tail {
                [] => Ok(Target::Collection {
                    def,
                    ns: Some(ns.to_string()),
                }),
                [name] => Ok(Target::Object {
                    def,
                    ns: ns.to_string(),
                    name: name.to_string(),
                    sub: None,
                }),
                [name, sub] => Ok(Target::Object {
                    def,
                    ns: ns.to_string(),
                    name: name.to_string(),
                    sub: Some(sub.to_string()),
                }),
                _ => Err(ApiError::NoSuchResource),
            }
        }
        [plural] => Ok(Target::Collection {
            def: find(plural).ok_or(ApiError::NoSuchResource)?,
            ns: None,
        }),
        [plural, name, sub @ ..] if sub.len() <= 1 => {
            let def = find(plural)
                .filter(|d| !d.namespaced)
                .ok_or(ApiError::NoSuchResource)?;
            Ok(Target::Object {
                def,
                ns: String::new(),
                name: name.to_string(),
                sub: sub.first().map(|s| s.to_string()),
            })
        }
        _ => Err(ApiError::NoSuchResource),
    }
}

struct Call {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

async fn read_call(req: Request) -> ApiResult<(Call, Uri)> {
    let (parts, body) = req.into_parts();
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?
        .0;
    // Bodies are small API objects; 3 MiB mirrors the real server's request size limit.
    let body = axum::body::to_bytes(body, 3 * 1024 * 1024)
        .await
        .map_err(|e| ApiError::BadRequest(format!("unable to read request body: {e}")))?;
    Ok((
        Call {
            method: parts.method,
            query,
            headers: parts.headers,
            body,
        },
        parts.uri,
    ))
}

async fn core_dispatch(State(ctx): State<ApiContext>, req: Request) -> Response {
    let result = async {
        let (call, uri) = read_call(req).await?;
        let path = uri.path().trim_start_matches("/api/").trim_end_matches('/');
        let segs: Vec<&str> = path.split('/').collect();
        match segs.as_slice() {
            ["v1", rest @ ..] => handle(&ctx, parse_target("", "v1", rest)?, call).await,
            _ => Err(ApiError::NoSuchResource),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn group_dispatch(State(ctx): State<ApiContext>, req: Request) -> Response {
    let result = async {
        let (call, uri) = read_call(req).await?;
        let path = uri
            .path()
            .trim_start_matches("/apis/")
            .trim_end_matches('/');
        let segs: Vec<&str> = path.split('/').collect();
        let target = match segs.as_slice() {
            [group] => Target::Group(group.to_string()),
            [group, version, rest @ ..] => parse_target(group, version, rest)?,
            _ => return Err(ApiError::NoSuchResource),
        };
        handle(&ctx, target, call).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn json_response(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

fn parse_body(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

fn options_invalid(kind: &str, causes: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        kind: kind.into(),
        group: "meta.k8s.io".into(),
        name: String::new(),
        causes,
    }
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> FieldError {
    let list = supported
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    FieldError {
        reason: "FieldValueNotSupported",
        field: field.into(),
        message: format!("Unsupported value: \"{value}\": supported values: {list}"),
    }
}

/// `dryRun` must be absent or `All`; anything else is rejected like the real server's
/// `ValidateDryRun` (422 on the options kind).
fn dry_run(values: &[&str], options_kind: &str) -> ApiResult<bool> {
    match values {
        [] => Ok(false),
        ["All"] => Ok(true),
        [other, ..] => Err(options_invalid(
            options_kind,
            vec![unsupported("dryRun", other, &["All"])],
        )),
    }
}

fn query_dry_run(call: &Call, options_kind: &str) -> ApiResult<bool> {
    let v: Vec<&str> = call
        .query
        .get("dryRun")
        .map(String::as_str)
        .into_iter()
        .collect();
    dry_run(&v, options_kind)
}

fn selectors(def: &ResourceDef, q: &HashMap<String, String>) -> ApiResult<Selectors> {
    Ok(Selectors {
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(def, q.get("fieldSelector").map_or("", String::as_str))?,
    })
}

/// The Table the request asks for (`kubectl get`), if any.
fn table_request(ctx: &ApiContext, call: &Call) -> ApiResult<Option<TableRequest>> {
    table::requested(
        &call.headers,
        call.query.get("includeObject").map(String::as_str),
        ctx.store.version(),
    )
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1"))
}

async fn handle(ctx: &ApiContext, target: Target, call: Call) -> ApiResult<Response> {
    match target {
        Target::Discovery { group, version } => {
            require_get(&call)?;
            Ok(json_response(
                StatusCode::OK,
                resource_list(&group, &version)?,
            ))
        }
        Target::Group(group) => {
            require_get(&call)?;
            if !resources::api_groups().iter().any(|(g, _)| *g == group) {
                return Err(ApiError::NoSuchResource);
            }
            let mut g = api_group(&group);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Ok(json_response(StatusCode::OK, g))
        }
        Target::Collection { def, .. } | Target::Object { def, .. } if !ctx.store.serves(def) => {
            Err(ApiError::NoSuchResource)
        }
        Target::Collection { def, ns } => collection(ctx, def, ns, call),
        Target::Object { def, ns, name, sub } => match sub.as_deref() {
            None => object(ctx, def, &ns, &name, call, WriteMode::Main),
            Some("status") if def.status_subresource => {
                object(ctx, def, &ns, &name, call, WriteMode::Status)
            }
            Some("scale") if def.group == "apps" => scale(ctx, def, &ns, &name, call),
            Some("log") if def.is("", "pods") => {
                require_get(&call)?;
                logs(ctx, &ns, &name, &call.query)
            }
            _ => Err(ApiError::NoSuchResource),
        },
    }
}

/// `metav1.FormatLabelSelector` of a workload's `spec.selector` (`a=b,c in (d,e)`).
fn format_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut parts: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            let mut labels: Vec<(&String, &Value)> = m.iter().collect();
            labels.sort_by(|a, b| a.0.cmp(b.0));
            labels
                .into_iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// The `autoscaling/v1` Scale of a Deployment, ReplicaSet or StatefulSet.
fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"],
            "namespace": m["namespace"],
            "uid": m["uid"],
            "resourceVersion": m["resourceVersion"],
            "creationTimestamp": m["creationTimestamp"],
        },
        "spec": { "replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0) },
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": format_selector(obj.pointer("/spec/selector")),
        },
    })
}

/// The `scale` subresource (GET, PUT and PATCH of an `autoscaling/v1` Scale), which reads and
/// writes the workload's `spec.replicas` (pkg/registry/apps/*/storage ScaleREST).
fn scale(
    ctx: &ApiContext,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    call: Call,
) -> ApiResult<Response> {
    let (dry, wanted) = match call.method {
        Method::GET => {
            let obj = ctx.store.get(def, ns, name)?;
            return Ok(json_response(StatusCode::OK, scale_of(&obj)));
        }
        Method::PUT => (
            query_dry_run(&call, "UpdateOptions")?,
            parse_body(&call.body)?,
        ),
        Method::PATCH => {
            let dry = query_dry_run(&call, "PatchOptions")?;
            let ct = call
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchKind::from_content_type(ct)?;
            let body = parse_body(&call.body)?;
            let mut current = scale_of(&ctx.store.get(def, ns, name)?);
            let explicit_rv = body.pointer("/metadata/resourceVersion").is_some();
            match kind {
                PatchKind::Json => patch::json_patch(&mut current, &body)?,
                _ if !body.is_object() => {
                    return Err(ApiError::BadRequest(
                        "merge patch body must be a JSON object".into(),
                    ));
                }
                _ => patch::merge_patch(&mut current, &body),
            }
            if !explicit_rv && let Some(m) = current["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            (dry, current)
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let replicas = wanted.pointer("/spec/replicas").unwrap_or(&Value::Null);
    let Some(n) = replicas.as_i64().filter(|n| *n >= 0) else {
        let detail = if replicas.is_i64() {
            "must be greater than or equal to 0"
        } else {
            "must be an integer"
        };
        return Err(ApiError::invalid(
            def,
            name,
            vec![FieldError::invalid("spec.replicas", replicas, detail)],
        ));
    };
    let rv = wanted
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        .map(str::to_string);
    let updated = ctx
        .store
        .update_with(def, ns, name, WriteMode::Main, dry, |cur| {
            cur["spec"]["replicas"] = json!(n);
            match &rv {
                Some(rv) => cur["metadata"]["resourceVersion"] = json!(rv),
                None => {
                    if let Some(m) = cur["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                }
            }
            Ok(())
        })?;
    Ok(json_response(StatusCode::OK, scale_of(&updated)))
}

fn require_get(call: &Call) -> ApiResult<()> {
    if call.method == Method::GET {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}

fn collection(
    ctx: &ApiContext,
    def: &'static ResourceDef,
    ns: Option<String>,
    call: Call,
) -> ApiResult<Response> {
    if !def.namespaced && ns.is_some() {
        return Err(ApiError::NoSuchResource);
    }
    match call.method {
        Method::GET if flag(&call.query, "watch") => {
            let q = &call.query;
            let from_rv = match q.get("resourceVersion").map(String::as_str) {
                None | Some("" | "0") => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::BadRequest(format!("invalid resource version: {rv}"))
                })?),
            };
            let timeout = match q.get("timeoutSeconds") {
                None => None,
                Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
                    ApiError::BadRequest(format!("invalid timeoutSeconds: {t}"))
                })?)),
            };
            let send_initial_events = flag(q, "sendInitialEvents");
            let params = WatchParams {
                table: table_request(ctx, &call)?,
                selectors: selectors(def, q)?,
                // With sendInitialEvents the stream starts from the current state.
                from_rv: if send_initial_events { None } else { from_rv },
                bookmarks: flag(q, "allowWatchBookmarks"),
                send_initial_events,
                timeout,
            };
            Ok(watch::serve(
                &ctx.store,
                ctx.faults.watch_epoch(),
                ctx.shutdown.clone(),
                def,
                ns,
                params,
            ))
        }
        Method::GET => {
            let sel = selectors(def, &call.query)?;
            let table = table_request(ctx, &call)?;
            let (items, rv) = ctx.store.list(def, ns.as_deref(), &sel);
            if let Some(table) = table {
                return Ok(json_response(
                    StatusCode::OK,
                    table.render(def, &items, &rv.to_string()),
                ));
            }
            // limit/continue are accepted and ignored: one page holding everything, with no
            // continue token, is a valid answer to a paginated list.
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "kind": format!("{}List", def.kind),
                    "apiVersion": def.api_version(),
                    "metadata": { "resourceVersion": rv.to_string() },
                    "items": items,
                }),
            ))
        }
        Method::POST => {
            let ns = match (def.namespaced, ns) {
                (true, Some(ns)) => ns,
                (true, None) => return Err(ApiError::MethodNotAllowed),
                (false, _) => String::new(),
            };
            let dry = query_dry_run(&call, "CreateOptions")?;
            let body = parse_body(&call.body)?;
            let created = ctx.store.create(def, &ns, body, dry)?;
            Ok(json_response(StatusCode::CREATED, created))
        }
        Method::DELETE => {
            let opts = delete_options(&call)?;
            let sel = selectors(def, &call.query)?;
            let (items, rv) = ctx.store.list(def, ns.as_deref(), &sel);
            let mut out = Vec::new();
            for item in items {
                let (Some(name), obj_ns) = (meta::name(&item), meta::namespace(&item)) else {
                    continue;
                };
                match ctx
                    .store
                    .delete(def, obj_ns.unwrap_or_default(), name, &opts)
                {
                    Ok(DeleteOutcome::Deleted(o) | DeleteOutcome::Pending(o)) => out.push(o),
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "kind": format!("{}List", def.kind),
                    "apiVersion": def.api_version(),
                    "metadata": { "resourceVersion": rv.to_string() },
                    "items": out,
                }),
            ))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn object(
    ctx: &ApiContext,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    call: Call,
    mode: WriteMode,
) -> ApiResult<Response> {
    match call.method {
        Method::GET => {
            let table = table_request(ctx, &call)?;
            let obj = ctx.store.get(def, ns, name)?;
            Ok(json_response(
                StatusCode::OK,
                match table {
                    Some(table) => {
                        let rv = meta::resource_version(&obj).unwrap_or_default().to_owned();
                        table.render(def, std::slice::from_ref(&obj), &rv)
                    }
                    None => obj,
                },
            ))
        }
        Method::PUT => {
            let dry = query_dry_run(&call, "UpdateOptions")?;
            let body = parse_body(&call.body)?;
            let updated = ctx.store.replace(def, ns, name, body, mode, dry)?;
            Ok(json_response(StatusCode::OK, updated))
        }
        Method::PATCH => {
            let dry = query_dry_run(&call, "PatchOptions")?;
            let ct = call
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchKind::from_content_type(ct)?;
            let body = parse_body(&call.body)?;
            if kind == PatchKind::Apply
                && mode == WriteMode::Main
                && ctx.store.try_get(def, ns, name).is_none()
            {
                // Server-side apply of a missing object creates it.
                let created = ctx.store.create(def, ns, body, dry)?;
                return Ok(json_response(StatusCode::CREATED, created));
            }
            let patched = ctx.store.update_with(def, ns, name, mode, dry, |cur| {
                match kind {
                    PatchKind::Json => patch::json_patch(cur, &body)?,
                    PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply => {
                        if !body.is_object() {
                            return Err(ApiError::BadRequest(
                                "merge patch body must be a JSON object".into(),
                            ));
                        }
                        // A patch without a resourceVersion must not trip the optimistic
                        // concurrency check: only an explicit one is a precondition.
                        let explicit_rv = body.pointer("/metadata/resourceVersion").is_some();
                        if kind == PatchKind::Strategic {
                            patch::strategic_merge_patch(cur, &body);
                        } else {
                            patch::merge_patch(cur, &body);
                        }
                        if !explicit_rv && let Some(m) = cur["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                    }
                }
                Ok(())
            })?;
            Ok(json_response(StatusCode::OK, patched))
        }
        Method::DELETE if mode == WriteMode::Main => {
            let opts = delete_options(&call)?;
            match ctx.store.delete(def, ns, name, &opts)? {
                DeleteOutcome::Pending(obj) => Ok(json_response(StatusCode::OK, obj)),
                DeleteOutcome::Deleted(obj) if def.return_deleted_object => {
                    Ok(json_response(StatusCode::OK, obj))
                }
                DeleteOutcome::Deleted(obj) => {
                    // Registry default (`finalizeDelete`): a success Status naming the object.
                    let mut details = json!({
                        "name": name,
                        "kind": def.plural,
                        "uid": meta::uid(&obj).unwrap_or_default(),
                    });
                    if !def.group.is_empty() {
                        details["group"] = json!(def.group);
                    }
                    Ok(json_response(
                        StatusCode::OK,
                        json!({
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Success",
                            "details": details,
                        }),
                    ))
                }
            }
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// DeleteOptions from the body (kube-rs sends them there, with `dryRun: ["All"]`) and/or the
/// query string (kubectl and curl users), query taking precedence.
fn delete_options(call: &Call) -> ApiResult<DeleteOptions> {
    let body = if call.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        parse_body(&call.body)?
    };
    let q = &call.query;
    let mut dry_values: Vec<&str> = match body.get("dryRun") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    };
    if let Some(v) = q.get("dryRun") {
        dry_values = vec![v.as_str()];
    }
    let dry_run = dry_run(&dry_values, "DeleteOptions")?;
    let grace_period_seconds = match q.get("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds: {g}")))?,
        ),
        None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
    };
    let policy_str = q
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| body.get("propagationPolicy").and_then(Value::as_str));
    let orphan_dependents = match q.get("orphanDependents") {
        Some(v) => Some(v == "true"),
        None => body.get("orphanDependents").and_then(Value::as_bool),
    };
    let propagation_policy = match (policy_str, orphan_dependents) {
        (Some(_), Some(_)) => {
            return Err(options_invalid(
                "DeleteOptions",
                vec![FieldError {
                    reason: "FieldValueInvalid",
                    field: "propagationPolicy".into(),
                    message: "Invalid value: \"\": orphanDependents and deletionPropagation cannot be both set".into(),
                }],
            ));
        }
        (Some(p), None) => Some(PropagationPolicy::parse(p).ok_or_else(|| {
            options_invalid(
                "DeleteOptions",
                vec![unsupported(
                    "propagationPolicy",
                    p,
                    &["Foreground", "Background", "Orphan"],
                )],
            )
        })?),
        (None, Some(true)) => Some(PropagationPolicy::Orphan),
        (None, Some(false)) => Some(PropagationPolicy::Background),
        (None, None) => None,
    };
    let pre = body.get("preconditions");
    Ok(DeleteOptions {
        grace_period_seconds,
        propagation_policy,
        precondition_uid: pre
            .and_then(|p| p.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: pre
            .and_then(|p| p.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

fn logs(
    ctx: &ApiContext,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let pod = ctx.store.get(&resources::PODS, ns, name)?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match q.get("container") {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::BadRequest(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    if pod.pointer("/status/phase").and_then(Value::as_str) == Some("Pending") {
        return Err(ApiError::BadRequest(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    let mut lines = ctx.store.logs(&pod);
    if let Some(t) = q.get("tailLines") {
        let n: usize = t
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("invalid tailLines: {t}")))?;
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

//! `/repopulations`: start runs, read them and their history, cancel and resume them.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    auth::{Principal, Role},
    problem::{
        ApiError, BodyProblems, JsonBody, PROBLEM, Problem, QueryParams, RunIdProblems, page_limit,
        parse_param,
    },
    state::SharedState,
};
use crate::{
    handlers,
    model::{EtcdMode, Service, State as RunState},
    run::{Run, RunList},
    runner::{Created, RunRequest, RunnerError},
    store::RunFilter,
};

const MAX_REASON: usize = 1024;
const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_BACKUP: usize = 255;
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// A request to repopulate services.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// Services to repopulate, or `["all"]` for every service of the CSM release in force (the
    /// schema's description is in [`services_schema`]).
    #[schema(schema_with = services_schema)]
    pub services: Vec<String>,
    /// Plan only: show every object that would be touched, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Why (e.g. which etcd cluster was rebuilt); kept in the history.
    #[schema(max_length = 1024)]
    pub reason: Option<String>,
    /// What to do with each service's etcd cluster before repopulating: `check` (the default:
    /// stop if it is unhealthy), `restore` (from `backup`, else the newest backup), `rebuild`
    /// (empty) or `auto` (leave a healthy cluster alone, else restore from a recent backup,
    /// else rebuild). All but `check` are destructive: a real run needs the `recover` role
    /// and `confirm`.
    #[serde(default)]
    pub etcd: EtcdMode,
    /// `restore` only: the backup to restore from (as `GET /etcd-clusters/{name}/backups`
    /// names it: one file name, no `/` or `\`); without it, the newest.
    #[schema(min_length = 1, max_length = 255)]
    pub backup: Option<String>,
    /// The etcd clusters the run may rebuild or restore, by name (e.g.
    /// `["cray-bss-bitnami-etcd"]`): a real run with `restore`, `rebuild` or `auto` must name
    /// exactly the clusters of its services (a 422 lists them); a dry run needs none. A
    /// `repair` replaces broken members (deleting their PVCs) only of the clusters it confirms
    /// (then exactly those of its services, and the `recover` role).
    #[serde(default)]
    pub confirm: Vec<String>,
    /// `restore` or `rebuild` only: accept throwing away what the live cluster holds beyond the
    /// backup (writes made after it), or, for a rebuild, all it holds. Without it, a run that
    /// would lose such data stops before it changes anything, saying how many revisions and
    /// keys; its dry run shows the same. `auto` never discards newer data.
    #[serde(default)]
    pub discard_newer: bool,
}

impl CreateRun {
    /// Whether the run may delete or replace etcd data: a real run with a destructive mode,
    /// or a real `repair` that confirms clusters (it may replace their broken members).
    pub fn is_destructive(&self) -> bool {
        self.etcd.may_delete(!self.confirm.is_empty()) && !self.dry_run
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
    /// Only runs in this state.
    #[param(value_type = Option<RunState>)]
    pub state: Option<String>,
    /// Only runs that include this service.
    #[param(value_type = Option<Service>)]
    pub service: Option<String>,
}

/// Start a repopulation run; it executes in the background.
#[utoipa::path(post, path = "/repopulations", tag = "repopulations", operation_id = "create_repopulation",
    request_body(content = CreateRun, content_type = "application/json", description = "What to repopulate (`services` is required; `[\"all\"]` means every service of the CSM release in force)"),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$",
        description = "Repeat a POST safely: the same key returns the same run (1 to 255 visible ASCII characters)")),
    responses(
        (status = 202, description = "Run accepted (or, with a known Idempotency-Key, the run it created)", body = Run,
            headers(("Location" = String, description = "URL of the run"))),
        (status = 400, description = "Malformed or empty JSON, or a malformed Idempotency-Key", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A service is already being repopulated; `active_run` names the run", body = Problem, content_type = PROBLEM),
        BodyProblems,
        (status = 422, description = "Unknown field, service or etcd mode, a field of the wrong type (`field` names it), service not supported, `backup` without `restore` or for services without an etcd cluster, a real restore/rebuild/auto run whose `confirm` is not exactly its etcd clusters (`confirm` in the problem lists them), or Idempotency-Key reused with another body", body = Problem, content_type = PROBLEM),
    ))]
pub async fn create_run(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRun>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    start_run(&state, body, Requester::Caller(&principal), idempotency_key).await
}

/// Who asks for a run, and so what allows a run that may rebuild or restore etcd clusters.
pub(super) enum Requester<'a> {
    /// An API caller: a real `restore`, `rebuild` or `auto` run needs the `recover` role and
    /// the clusters confirmed in the request.
    Caller(&'a Principal),
    /// A webhook (`webhook:generic`): such runs, real or dry, only on the etcd clusters that
    /// `[webhooks] recover_clusters` allows with the requested mode; that configuration
    /// confirms them.
    Webhook(&'static str),
}

/// Starts the run `request` asks for on behalf of `requester` (or finds the one
/// `idempotency_key` started): 202 with the run and its `Location`.
pub(super) async fn start_run(
    state: &SharedState,
    request: CreateRun,
    requester: Requester<'_>,
    idempotency_key: Option<String>,
) -> Result<Response, ApiError> {
    let services = match parse_services(&request.services)? {
        Some(services) => services,
        // Every service of the CSM release in force that this build supports.
        None => {
            let release = state.runner.release().await.map_err(RunnerError::from)?;
            handlers::implemented(release.profile())
        }
    };
    validate_reason(request.reason.as_deref())?;
    validate_etcd(&request, &services)?;
    let (requested_by, reason, confirm) = match requester {
        Requester::Caller(principal) => {
            if request.is_destructive() {
                principal.require_to(
                    Role::Recover,
                    &format!(
                        "start a real etcd {} run (it may rebuild or restore etcd clusters, or \
                         replace their members; the write role may start it as a dry run)",
                        request.etcd
                    ),
                )?;
            }
            (principal.name.clone(), request.reason, request.confirm)
        }
        Requester::Webhook(name) if request.etcd.is_destructive() => {
            let clusters = allowed_recovery(state, name, &services, &request).await?;
            let allowed = format!(
                "etcd {} on {} allowed by webhooks.recover_clusters",
                request.etcd,
                if clusters.is_empty() {
                    "no cluster".to_owned()
                } else {
                    clusters.join(", ")
                }
            );
            let reason = match request.reason {
                Some(reason) => format!("{reason} ({allowed})"),
                None => format!("{name}: {allowed}"),
            };
            (name.to_owned(), Some(reason), clusters)
        }
        Requester::Webhook(name) => (name.to_owned(), request.reason, request.confirm),
    };
    let created = state
        .runner
        .create(RunRequest {
            services,
            dry_run: request.dry_run,
            reason,
            requested_by,
            idempotency_key,
            etcd: request.etcd,
            backup: request.backup,
            confirm,
            discard_newer: request.discard_newer,
        })
        .await?;
    let run = match created {
        Created::New(run) | Created::Existing(run) => run,
    };
    let location = HeaderValue::from_str(&format!("/repopulations/{}", run.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(run),
    )
        .into_response())
}

/// The etcd clusters a run that `webhook` (`webhook:generic`) asks for may rebuild or restore
/// (those of its `services` on the release in force), if `webhooks.recover_clusters` allows
/// the requested mode on every one of them; that configuration confirms them, so the request
/// itself names none.
async fn allowed_recovery(
    state: &SharedState,
    webhook: &str,
    services: &[Service],
    request: &CreateRun,
) -> Result<Vec<String>, ApiError> {
    if !request.confirm.is_empty() {
        return Err(ApiError::InvalidBody {
            detail: format!(
                "{webhook} takes no confirm: webhooks.recover_clusters in the service's \
                 configuration names the etcd clusters webhook runs may rebuild or restore"
            ),
            field: Some("confirm".to_owned()),
        });
    }
    let clusters = state.runner.etcd_clusters(services).await?;
    let allowed = &state.webhooks.recover_clusters;
    let refused: Vec<String> = clusters
        .iter()
        .filter(|cluster| allowed.get(*cluster) != Some(&request.etcd))
        .map(|cluster| match allowed.get(cluster) {
            Some(mode) => format!("{cluster} (configured: {mode})"),
            None => format!("{cluster} (not listed)"),
        })
        .collect();
    if let Some(first) = clusters
        .iter()
        .find(|c| allowed.get(*c) != Some(&request.etcd))
    {
        return Err(ApiError::NotAllowed(format!(
            "{webhook} may not start etcd {mode} runs on {}: webhook runs rebuild or restore \
             only the clusters webhooks.recover_clusters lists with that mode, e.g. \
             recover_clusters = {{ \"{first}\" = \"{mode}\" }}",
            refused.join(", "),
            mode = request.etcd,
        )));
    }
    Ok(clusters)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = |detail: &str| ApiError::invalid("Idempotency-Key", detail);
    // Visible ASCII and spaces (a header value may also hold tabs, which a key may not).
    let key = value
        .to_str()
        .ok()
        .filter(|key| key.bytes().all(|b| (0x20..=0x7e).contains(&b)))
        .ok_or_else(|| invalid("Idempotency-Key must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(invalid("Idempotency-Key must be 1 to 255 characters"));
    }
    Ok(Some(key.to_owned()))
}

fn validate_reason(reason: Option<&str>) -> Result<(), ApiError> {
    if let Some(reason) = reason
        && reason.chars().count() > MAX_REASON
    {
        return Err(ApiError::InvalidBody {
            detail: format!("reason is longer than {MAX_REASON} characters"),
            field: Some("reason".to_owned()),
        });
    }
    Ok(())
}

/// `backup` only with `restore`, and a name of 1 to 255 visible characters that is one file name
/// (no `/`, `\`, `.` or `..`); `confirm` only with
/// a mode that may touch a cluster.
fn validate_etcd(request: &CreateRun, services: &[Service]) -> Result<(), ApiError> {
    let invalid = |field: &str, detail: String| ApiError::InvalidBody {
        detail,
        field: Some(field.to_owned()),
    };
    if request.discard_newer && !matches!(request.etcd, EtcdMode::Restore | EtcdMode::Rebuild) {
        return Err(invalid(
            "discard_newer",
            format!(
                "discard_newer accepts that a restore or rebuild throws away newer data: it needs \
                 \"etcd\": \"restore\" or \"rebuild\" (this request has \"etcd\": \"{}\"; \
                 auto never discards data a member holds)",
                request.etcd
            ),
        ));
    }
    if let Some(backup) = &request.backup {
        if request.etcd != EtcdMode::Restore {
            return Err(invalid(
                "backup",
                format!(
                    "backup names the backup a restore uses: it needs \"etcd\": \"restore\" \
                     (this request has \"etcd\": \"{}\"; auto picks a backup itself)",
                    request.etcd
                ),
            ));
        }
        if backup.is_empty()
            || backup.chars().count() > MAX_BACKUP
            || backup.chars().any(char::is_control)
        {
            return Err(invalid(
                "backup",
                format!(
                    "backup must be a backup's name, 1 to {MAX_BACKUP} characters without \
                     control characters"
                ),
            ));
        }
        // A backup's name is one file name (in the snapshotter directory, and under
        // `<service>/` in S3): never a path.
        if backup.contains(['/', '\\']) || backup == "." || backup == ".." {
            return Err(invalid(
                "backup",
                format!(
                    "backup {backup:?} is not a backup's name: a name is one file name, as \
                     GET /etcd-clusters/{{name}}/backups lists it (db-2025-01-01_00-00), without \
                     '/' or '\\' (list_backups' <service>/ prefix left out), and not '.' or '..'"
                ),
            ));
        }
        // MEDS and External DNS keep nothing in an etcd cluster of their own: a backup
        // would be silently ignored.
        if services.iter().all(|s| s.etcd_service().is_none()) {
            return Err(invalid(
                "backup",
                format!(
                    "backup {backup:?} restores an etcd cluster, and none of the services ({}) \
                     has one: leave backup out, or add the service whose cluster it is",
                    services
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if request.etcd == EtcdMode::Check && !request.confirm.is_empty() {
        return Err(invalid(
            "confirm",
            "confirm names the etcd clusters a restore, rebuild or auto run may touch; a check \
             run (the default etcd mode) touches none"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The word that stands for every service this build supports.
const ALL: &str = "all";

/// The services named (each once), or `None` for every supported one if `all` is among them.
fn parse_services(names: &[String]) -> Result<Option<Vec<Service>>, ApiError> {
    let invalid = |detail: &str| ApiError::InvalidBody {
        detail: detail.to_owned(),
        field: Some("services".to_owned()),
    };
    if names.is_empty() {
        return Err(invalid(
            "services must name at least one service, or be [\"all\"] for every supported one",
        ));
    }
    let (known, unknown): (Vec<_>, Vec<_>) = names
        .iter()
        .filter(|name| *name != ALL)
        .map(|name| name.parse::<Service>().map_err(|_| name.clone()))
        .partition(Result::is_ok);
    if !unknown.is_empty() {
        return Err(ApiError::UnknownServices(
            unknown.into_iter().filter_map(Result::err).collect(),
        ));
    }
    // "all" includes whatever else is named.
    if names.iter().any(|name| name == ALL) {
        return Ok(None);
    }
    let mut services: Vec<Service> = known.into_iter().filter_map(Result::ok).collect();
    services.sort_unstable();
    services.dedup();
    Ok(Some(services))
}

/// `services` in the OpenAPI document: the service names and `all`.
fn services_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let names = std::iter::once(ALL).chain(Service::ALL.map(Service::as_str));
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .description(Some(
            "Services to repopulate, or `[\"all\"]` for every service of the CSM release in force. \
             Required: a run changes the cluster, so a request says what it changes.",
        ))
        .build()
}

/// The run history, newest first: one summary per run (id, state, services and their states,
/// reason, who asked, times, one-line message).
#[utoipa::path(get, path = "/repopulations", tag = "repopulations", operation_id = "list_repopulations",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of run summaries, newest first", body = RunList),
        (status = 400, description = "Invalid limit, cursor, state or service", body = Problem, content_type = PROBLEM),
    ))]
pub async fn list_runs(
    State(state): State<SharedState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = query
        .cursor
        .as_deref()
        .map(|raw| {
            Uuid::parse_str(raw).map_err(|_| {
                ApiError::invalid(
                    "cursor",
                    format!("{raw:?} is not a cursor from next_cursor"),
                )
            })
        })
        .transpose()?;
    let state_filter = parse_param::<RunState>("state", query.state.as_deref())?;
    let service = parse_param::<Service>("service", query.service.as_deref())?;
    let page = state
        .store
        .history_page(&RunFilter {
            state: state_filter,
            service,
            before,
            limit,
        })
        .await?;
    Ok(json_response(page))
}

/// A 200 with JSON the store serialized.
fn json_response(body: bytes::Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

pub(super) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::InvalidId(raw.to_owned()))
}

/// A run with its service tasks and steps (and their earlier attempts, if it was resumed).
#[utoipa::path(get, path = "/repopulations/{id}", tag = "repopulations", operation_id = "get_repopulation",
    params(("id" = String, Path, format = Uuid, description = "Run id (a UUID)")),
    responses(
        (status = 200, description = "The run", body = Run),
        RunIdProblems,
    ))]
pub async fn get_run(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    state
        .store
        .run_json(id)
        .await?
        .map(json_response)
        .ok_or_else(|| ApiError::NotFound(format!("run {id} not found")))
}

/// Stop a running run at its next safe point; it ends `cancelled`. Cancelling a real `restore`,
/// `rebuild` or `auto` run needs the `recover` role, as starting and resuming one do.
#[utoipa::path(post, path = "/repopulations/{id}/cancel", tag = "repopulations", operation_id = "cancel_repopulation",
    params(("id" = String, Path, format = Uuid, description = "Run id (a UUID)")),
    responses(
        (status = 202, description = "Cancellation requested; the run as it is now", body = Run),
        RunIdProblems,
        (status = 409, description = "The run is not running", body = Problem, content_type = PROBLEM),
    ))]
pub async fn cancel_run(
    State(state): State<SharedState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let id = parse_id(&id)?;
    // Stopping a recovery midway decides what state its etcd cluster is left in.
    require_recover_for_real_recovery(&state, &principal, id, "cancel").await?;
    let run = state.runner.cancel(id).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// Give up on an interrupted or failed run: it ends `abandoned` and can never be resumed, and
/// no longer holds back a new recovery of its etcd clusters. Needs the `recover` role.
#[utoipa::path(post, path = "/repopulations/{id}/abandon", tag = "repopulations", operation_id = "abandon_repopulation",
    params(("id" = String, Path, format = Uuid, description = "Run id (a UUID)")),
    responses(
        (status = 200, description = "Abandoned; the run as it is now (its message says what its etcd clusters look like)", body = Run),
        RunIdProblems,
        (status = 409, description = "The run is not interrupted or failed", body = Problem, content_type = PROBLEM),
    ))]
pub async fn abandon_run(
    State(state): State<SharedState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let id = parse_id(&id)?;
    principal.require_to(
        Role::Recover,
        &format!("abandon run {id} (a new recovery of its etcd clusters may then start)"),
    )?;
    let run = state.runner.abandon(id, &principal.name).await?;
    Ok((StatusCode::OK, Json(run)))
}

/// Execute an interrupted or failed run's unfinished services again (a new attempt).
#[utoipa::path(post, path = "/repopulations/{id}/resume", tag = "repopulations", operation_id = "resume_repopulation",
    params(("id" = String, Path, format = Uuid, description = "Run id (a UUID)")),
    responses(
        (status = 202, description = "Resumed; the run as it is now", body = Run),
        RunIdProblems,
        (status = 409, description = "The run is not interrupted or failed, a service is busy, or the etcd cluster it recovers changed since its journal (`resume-stale`: abandon it)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Shutting down", body = Problem, content_type = PROBLEM),
    ))]
pub async fn resume_run(
    State(state): State<SharedState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let id = parse_id(&id)?;
    require_recover_for_real_recovery(&state, &principal, id, "resume").await?;
    let run = state.runner.resume(id).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// A real run with a destructive etcd mode may be resumed or cancelled (`verb`) only by a
/// caller with the `recover` role, as it may only be started by one: either decides what
/// becomes of an etcd cluster's data. (An unknown run is left to the runner's 404.)
async fn require_recover_for_real_recovery(
    state: &SharedState,
    principal: &Principal,
    id: Uuid,
    verb: &str,
) -> Result<(), ApiError> {
    if let Some(run) = state.store.get_run(id).await?
        && run.etcd.is_destructive()
        && !run.dry_run
    {
        principal.require_to(
            Role::Recover,
            &format!(
                "{verb} run {id}: it is a real etcd {} run, which may rebuild or restore etcd \
                 clusters",
                run.etcd
            ),
        )?;
    }
    Ok(())
}

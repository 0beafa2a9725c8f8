//! The local HTTP/JSON API of `skillbox serve`, and its client.
//!
//! It listens on a Unix socket (created `0600`: whoever can open it is the
//! operator) and, when asked, on a loopback TCP port where every request
//! must carry `Authorization: Bearer <token>` (or the dashboard's session
//! cookie, see `dashboard`). Every endpoint is a few lines over the
//! [`TaskService`] API; `host/openapi.json` documents them. The dashboard,
//! a static front end under `/ui/`, is served by the same listeners.

mod approvals;
mod audit;
pub mod client;
mod dashboard;
pub mod mcp;
mod metrics;
mod schedules;
mod tls_listener;

pub use tls_listener::TlsListener;

pub use approvals::{DecideBody, Verdict};
pub use dashboard::Access;
pub use schedules::ScheduleBody;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::policy::Grants;
use crate::store::{CleanupMode, NotifyMode, ParentRoute, StoreError, TaskFilter, TaskId};
use crate::tasks::{SpawnRequest, TaskService};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// An API error: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let (status, code) = match &e {
            Error::NotGranted(_) => (StatusCode::FORBIDDEN, "not-granted"),
            Error::Untrusted(_) => (StatusCode::FORBIDDEN, "untrusted"),
            Error::Locked(_) => (StatusCode::FORBIDDEN, "locked"),
            Error::NotPulled(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not-pulled"),
            Error::Manifest { .. }
            | Error::Policy { .. }
            | Error::Grant(_)
            | Error::DigestMismatch { .. }
            | Error::Unpinned { .. }
            | Error::Component { .. }
            | Error::Input(_)
            | Error::Io { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Error::Store(StoreError::NotFound(_) | StoreError::Missing(_)) => {
                (StatusCode::NOT_FOUND, "not-found")
            }
            Error::Store(StoreError::Conflict(_)) => (StatusCode::CONFLICT, "conflict"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        // Malformed JSON and JSON of the wrong shape are both mistakes in
        // the request itself: 400 (413 when it is too large).
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", e.body_text())
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", e.body_text())
    }
}

fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse()
        .map_err(|e: String| ApiError::new(StatusCode::NOT_FOUND, "not-found", e))
}

/// `POST /v1/tasks`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnBody {
    /// Absolute path of the skill (directory, manifest or component) on the
    /// daemon's machine.
    pub skill: PathBuf,
    /// The skill's input (any JSON; default `{}`).
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// Grants, in the policy-file shape.
    #[serde(default)]
    pub grants: Grants,
    /// Free-form label.
    #[serde(default)]
    pub label: Option<String>,
    /// The agent session that asked.
    #[serde(default)]
    pub parent_session: Option<String>,
    /// Where, in that session's messaging channel, the reply goes
    /// (`{"channel", "to", "account_id"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_route: Option<ParentRoute>,
    /// `keep` (default) or `delete`.
    #[serde(default)]
    pub cleanup: Option<CleanupMode>,
    /// `done-only` (default), `failures-only`, `state-changes` or `silent`.
    #[serde(default)]
    pub notify: Option<NotifyMode>,
    /// Relay sinks to notify, by name (default: the daemon's defaults).
    #[serde(default)]
    pub notify_to: Vec<String>,
    /// Accept a skill whose requests were not all granted.
    #[serde(default)]
    pub partial: bool,
    /// Accept a manifest without a pinned digest.
    #[serde(default)]
    pub allow_unpinned: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
    follow: Option<bool>,
}

type ApiResult<T> = Result<T, ApiError>;

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true, "version": env!("CARGO_PKG_VERSION") }))
}

/// The request a spawn body stands for (a skill on this machine).
fn spawn_request(b: SpawnBody) -> ApiResult<SpawnRequest> {
    let reference = b
        .skill
        .to_str()
        .is_some_and(crate::oci::Reference::is_reference);
    if !b.skill.is_absolute() && !reference {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "`skill` must be an absolute path or an oci:// reference pulled on this host",
        ));
    }
    Ok(SpawnRequest {
        input: b.input.unwrap_or_else(|| serde_json::json!({})).to_string(),
        grants: b.grants,
        label: b.label,
        parent_session: b.parent_session,
        parent_route: b.parent_route,
        cleanup: b.cleanup.unwrap_or(CleanupMode::Keep),
        notify: b.notify.unwrap_or(NotifyMode::DoneOnly),
        notify_to: b.notify_to,
        partial: b.partial,
        allow_unpinned: b.allow_unpinned,
        ..SpawnRequest::new(b.skill, "{}")
    })
}

/// Runs `f` (which may compile a component) off the I/O threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

async fn spawn(
    State(tasks): State<Arc<TaskService>>,
    headers: HeaderMap,
    body: Result<Json<SpawnBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body?;
    let request = spawn_request(b)?;
    // A client's W3C `traceparent`: the task's trace joins the client's.
    let span = tracing::info_span!("api.spawn");
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    crate::telemetry::continue_trace(&span, traceparent);
    // Spawning compiles the component (once).
    let t = tasks.clone();
    let task = blocking(move || span.in_scope(|| t.spawn(request))).await?;
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

/// A listing's filter from its query, checked.
fn task_filter(q: Result<Query<TaskFilter>, QueryRejection>) -> ApiResult<TaskFilter> {
    let Query(filter) = q?;
    if let Some(p) = &filter.id_prefix
        && (p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("{p:?} is not a task id or the start of one (letters and digits)"),
        ));
    }
    Ok(filter)
}

async fn list(
    State(tasks): State<Arc<TaskService>>,
    q: Result<Query<TaskFilter>, QueryRejection>,
) -> ApiResult<Response> {
    Ok(Json(tasks.list(&task_filter(q)?)?).into_response())
}

/// `GET /v1/events`: the newest tasks, then every change to any task, as
/// server-sent events (`task`, `ready`, `removed`).
async fn watch(
    State(tasks): State<Arc<TaskService>>,
    q: Result<Query<TaskFilter>, QueryRejection>,
) -> ApiResult<Response> {
    use crate::tasks::TaskChange;
    use futures::StreamExt;
    let stream = tasks.watch(task_filter(q)?).map(|item| {
        Ok::<_, std::convert::Infallible>(match item {
            Ok(TaskChange::Task(t)) => SseEvent::default()
                .event("task")
                .data(serde_json::to_string(&t).unwrap_or_default()),
            Ok(TaskChange::Ready) => SseEvent::default().event("ready").data("{}"),
            Ok(TaskChange::Removed(id)) => SseEvent::default()
                .event("removed")
                .data(serde_json::json!({ "id": id }).to_string()),
            Err(e) => SseEvent::default().event("error").data(e.to_string()),
        })
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn show(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(tasks.task(parse_id(&id)?)?).into_response())
}

async fn remove(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    tasks.remove(id)?;
    Ok(Json(serde_json::json!({ "removed": id })).into_response())
}

/// `POST /v1/tasks/prune`'s body.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    /// Only tasks that ended at least this long ago (default 0: every
    /// ended task).
    #[serde(default)]
    pub older_than_ms: u64,
}

/// What `POST /v1/tasks/prune` removed.
#[derive(Debug, Deserialize, Serialize)]
pub struct Pruned {
    /// How many tasks.
    pub pruned: u64,
}

async fn prune(
    State(tasks): State<Arc<TaskService>>,
    body: Result<Json<PruneBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body?;
    let pruned = tasks.prune(std::time::Duration::from_millis(b.older_than_ms))?;
    Ok(Json(Pruned { pruned }).into_response())
}

async fn cancel(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(tasks.cancel(parse_id(&id)?, "cancelled through the API")?).into_response())
}

async fn deliveries(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(tasks.deliveries(parse_id(&id)?)?).into_response())
}

async fn redeliver(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let requeued = tasks.redeliver(id)?;
    let deliveries = tasks.deliveries(id)?;
    Ok(Json(Redelivered {
        requeued,
        deliveries,
    })
    .into_response())
}

/// The answer of `POST /v1/tasks/{id}/redeliver`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Redelivered {
    /// How many failed notifications were queued again.
    pub requeued: usize,
    /// The task's notifications now.
    pub deliveries: Vec<crate::relay::Delivery>,
}

async fn notification(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match tasks.notification(parse_id(&id)?)? {
        Some(n) => Ok(Json(n).into_response()),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not-ended",
            "the task has not ended; its final notification does not exist yet",
        )),
    }
}

async fn wait(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    let limit = Duration::from_millis(q.timeout_ms.unwrap_or(30_000).min(300_000));
    let task = match tokio::time::timeout(limit, tasks.wait(id)).await {
        Ok(t) => t?,
        Err(_) => tasks.task(id)?,
    };
    Ok(Json(task).into_response())
}

async fn events(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let id = parse_id(&id)?;
    tasks.task(id)?;
    let resume_from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let after = resume_from.or(q.after).unwrap_or(0);
    if !q.follow.unwrap_or(true) {
        let events = tasks.events(id, after)?;
        return Ok(Json(events).into_response());
    }
    use futures::StreamExt;
    let stream = tasks.subscribe(id, after).map(|item| {
        Ok::<_, std::convert::Infallible>(match item {
            Ok(e) => SseEvent::default()
                .id(e.seq.to_string())
                .event(e.event.kind())
                .data(serde_json::to_string(&e).unwrap_or_default()),
            Err(e) => SseEvent::default().event("error").data(e.to_string()),
        })
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The API's routes over `tasks`, and the dashboard's; with a token in
/// `access`, every request must carry it (or the dashboard's cookie).
pub fn router(tasks: Arc<TaskService>, access: Access) -> Router {
    router_with_mcp(tasks, access, None)
}

/// [`router`], plus the MCP endpoint `/mcp` (streamable HTTP) offering
/// `mcp`'s skills when it is given; `stop` ends its open streams.
pub fn router_with_mcp(
    tasks: Arc<TaskService>,
    access: Access,
    mcp: Option<(
        Arc<crate::catalog::Catalog>,
        tokio_util::sync::CancellationToken,
    )>,
) -> Router {
    let mut r = Router::new();
    if let Some((catalog, stop)) = mcp {
        r = r.nest_service(
            "/mcp",
            mcp::http_service(mcp::McpServer::new(tasks.clone(), catalog), stop),
        );
    }
    let r = r
        .route("/v1/health", get(health))
        .route("/v1/tasks", post(spawn).get(list))
        .route("/v1/tasks/prune", post(prune))
        .route("/v1/tasks/{id}", get(show).delete(remove))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/v1/tasks/{id}/wait", get(wait))
        .route("/v1/tasks/{id}/events", get(events))
        .route("/v1/tasks/{id}/deliveries", get(deliveries))
        .route("/v1/tasks/{id}/redeliver", post(redeliver))
        .route("/v1/tasks/{id}/notification", get(notification))
        .route(
            "/v1/tasks/{id}/approvals",
            get(approvals::list).post(approvals::decide),
        )
        .route("/v1/schedules", post(schedules::add).get(schedules::list))
        .route(
            "/v1/schedules/{name}",
            get(schedules::show).delete(schedules::remove),
        )
        .route("/v1/schedules/{name}/pause", post(schedules::pause))
        .route("/v1/schedules/{name}/resume", post(schedules::resume))
        .route("/v1/schedules/{name}/run", post(schedules::run_now))
        .route("/v1/audit", get(audit::records))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/events", get(watch))
        .route("/metrics", get(metrics::scrape))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(tasks);
    let access = Arc::new(access);
    dashboard::routes(access.clone())
        .merge(r)
        .layer(axum::middleware::from_fn_with_state(
            access,
            dashboard::authenticate,
        ))
}

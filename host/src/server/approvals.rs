//! `/v1/tasks/{id}/approvals`: a task's requests for approval, and the
//! operator's decisions on them.
//!
//! Who decided is recorded as the client says it (`as`, e.g. `cli:alice`
//! or `openclaw:agent:main:chat-1`) together with how it reached the API:
//! the daemon's Unix socket (whoever may open it is the operator) or the
//! TCP listener's bearer token. A request without the token on TCP is
//! refused before it gets here.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult, parse_id};
use crate::caps::approval::Decision;
use crate::tasks::TaskService;

/// How a request on TCP proved itself, set by the token check: in the
/// words a decision's `by` uses ("the API token", "a dashboard session").
#[derive(Clone, Copy, Debug)]
pub(super) struct Via(pub(super) &'static str);

/// `POST /v1/tasks/{id}/approvals`'s body.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    /// `approve` or `deny`.
    pub decision: Verdict,
    /// The request's number; the task's only pending one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u32>,
    /// Also decide every later request of the same rule in this task.
    #[serde(default)]
    pub always_for_task: bool,
    /// A note for the skill (and the record), e.g. why it was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Who decides, as the client knows it (`cli:alice`,
    /// `openclaw:<session>`); recorded with how the request came in.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

crate::units::string_enum!(
    /// A decision's direction.
    Verdict {
        /// The call may go ahead.
        Approve = "approve",
        /// The call is refused.
        Deny = "deny",
    }
);

/// Longest `as` and `note` accepted.
const MAX_TEXT: usize = 512;

pub(super) async fn list(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(tasks.approvals(parse_id(&id)?)?).into_response())
}

pub(super) async fn decide(
    State(tasks): State<Arc<TaskService>>,
    Path(id): Path<String>,
    via: Option<Extension<Via>>,
    body: Result<Json<DecideBody>, JsonRejection>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let Json(b) = body?;
    let too_long = |what: &str| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad-request",
            format!("`{what}` is longer than {MAX_TEXT} bytes"),
        )
    };
    if b.by.as_ref().is_some_and(|s| s.len() > MAX_TEXT) {
        return Err(too_long("as"));
    }
    if b.note.as_ref().is_some_and(|s| s.len() > MAX_TEXT) {
        return Err(too_long("note"));
    }
    let channel = via.map_or("the daemon's socket", |Extension(Via(c))| c);
    let by = match b.by.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(who) => format!("{who} (through {channel})"),
        None => format!("a client of {channel}"),
    };
    let decision = Decision {
        approved: b.decision == Verdict::Approve,
        always_for_task: b.always_for_task,
        by,
        note: b.note,
        at_ms: 0,
    };
    Ok(Json(tasks.decide(id, b.request, decision)?).into_response())
}

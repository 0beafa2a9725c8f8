//! `/v1/schedules`: schedules kept in the daemon's store, a few lines each
//! over [`Schedules`].

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiResult, SpawnBody, blocking, spawn_request};
use crate::schedule::Missed;
use crate::store::schedule::Overlap;
use crate::tasks::TaskService;
use crate::tasks::schedules::{ScheduleRequest, Schedules};

/// `POST /v1/schedules`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Unique name: letters, digits, `-`, `_`, `.` (its tasks' label).
    pub name: String,
    /// Cron expression: five fields, or six with seconds first.
    pub cron: String,
    /// Time zone of the expression (tz database name; default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// `skip` (default) or `run-once`: slots missed while no host ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<Missed>,
    /// `allow` (default), `skip` or `queue`: a slot while the previous
    /// task still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// The task each slot creates, as `POST /v1/tasks` takes it (no label).
    pub task: SpawnBody,
}

fn schedules(tasks: Arc<TaskService>) -> Schedules {
    Schedules::new(tasks)
}

pub(super) async fn add(
    State(tasks): State<Arc<TaskService>>,
    body: Result<Json<ScheduleBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body?;
    let request = ScheduleRequest {
        name: b.name,
        cron: b.cron,
        tz: b.tz.unwrap_or_else(|| "UTC".into()),
        missed: b.missed.unwrap_or(Missed::Skip),
        overlap: b.overlap.unwrap_or(Overlap::Allow),
        task: spawn_request(b.task)?,
    };
    // Checking the task compiles its component (once).
    let s = blocking(move || schedules(tasks).add(request)).await?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

pub(super) async fn list(State(tasks): State<Arc<TaskService>>) -> ApiResult<Response> {
    Ok(Json(schedules(tasks).list()?).into_response())
}

pub(super) async fn show(
    State(tasks): State<Arc<TaskService>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(schedules(tasks).show(&name)?).into_response())
}

pub(super) async fn remove(
    State(tasks): State<Arc<TaskService>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    schedules(tasks).remove(&name)?;
    Ok(Json(serde_json::json!({ "removed": name })).into_response())
}

pub(super) async fn pause(
    State(tasks): State<Arc<TaskService>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(schedules(tasks).pause(&name)?).into_response())
}

pub(super) async fn resume(
    State(tasks): State<Arc<TaskService>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(schedules(tasks).resume(&name)?).into_response())
}

pub(super) async fn run_now(
    State(tasks): State<Arc<TaskService>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let task = schedules(tasks).run_now(&name)?;
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

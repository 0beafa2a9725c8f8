//! `GET /metrics`: the process's metrics for a Prometheus server, in the
//! OpenMetrics text format, behind the API's authentication (a scrape
//! config gives the token as `authorization: credentials`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::{ApiResult, blocking};
use crate::metrics::{StateLabel, metrics};
use crate::store::{TaskState, now_ms};
use crate::tasks::TaskService;

/// Every state, so that one with no task left reads 0.
const STATES: [TaskState; 8] = [
    TaskState::Queued,
    TaskState::Running,
    TaskState::AwaitingApproval,
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::TimedOut,
    TaskState::Cancelled,
    TaskState::Interrupted,
];

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) async fn scrape(State(tasks): State<Arc<TaskService>>) -> ApiResult<Response> {
    let counts = blocking(move || Ok(tasks.store().counts()?)).await?;
    let m = metrics();
    let count = |s: TaskState| {
        counts
            .by_state
            .iter()
            .find(|(state, _)| *state == s)
            .map_or(0, |(_, n)| *n)
    };
    for s in STATES {
        m.tasks
            .get_or_create(&StateLabel { state: s.as_str() })
            .set(count(s) as i64);
    }
    m.queue_depth
        .set((count(TaskState::Queued) + count(TaskState::Interrupted)) as i64);
    m.queue_age.set(
        counts
            .oldest_waiting_ms
            .map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0),
    );
    Ok(([(CONTENT_TYPE, OPENMETRICS)], m.encode()).into_response())
}

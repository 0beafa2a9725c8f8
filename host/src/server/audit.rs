//! `/v1/audit`: the store's audit trail, and its verification.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::{ApiResult, blocking};
use crate::store::audit::{AuditFilter, verify_store};
use crate::tasks::TaskService;

/// Most records one read returns.
const MAX_PAGE: u32 = 5000;

pub(super) async fn records(
    State(tasks): State<Arc<TaskService>>,
    q: Result<Query<AuditFilter>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(mut filter) = q?;
    filter.limit = Some(filter.limit.unwrap_or(1000).min(MAX_PAGE));
    let records = tasks
        .store()
        .audit(&filter)
        .map_err(crate::error::Error::from)?;
    Ok(Json(records).into_response())
}

pub(super) async fn verify(State(tasks): State<Arc<TaskService>>) -> ApiResult<Response> {
    let verified = blocking(move || Ok(verify_store(&**tasks.store())?)).await?;
    Ok(Json(verified).into_response())
}

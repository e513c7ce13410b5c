//! `GET /nimbus/2026-11-25/functions/{FunctionName}/logs` — nimbus'
//! extension: the tail of a function's log (`nimbus logs`). Signed like
//! every other request; answers `text/plain`.

use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// Default and largest amount of log returned, in bytes.
const LOG_TAIL_DEFAULT_BYTES: u64 = 64 * 1024;
const LOG_TAIL_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Returns the last `?bytes=` (default 64 KiB) of the function's log.
pub async fn tail(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = super::function_ref(&label, None)?;
    let bytes = query
        .get("bytes")
        .and_then(|b| b.parse::<u64>().ok())
        .unwrap_or(LOG_TAIL_DEFAULT_BYTES)
        .min(LOG_TAIL_MAX_BYTES);
    let (worker, tenant, name) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    let text = super::blocking(move || {
        if worker.store.get(&tenant, &name)?.is_none() {
            return Ok(None);
        }
        worker
            .logs
            .tail(&tenant, &name, bytes)
            .map(Some)
            .map_err(ApiError::internal)
    })
    .await?
    .ok_or_else(|| platform.function_not_found(&caller, &function))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

//! nimbus' extensions for the async path, signed like every other request:
//!
//! - `GET /nimbus/2026-11-25/invocations/{InvocationId}` — one async
//!   invocation's state (queued, running, retrying, succeeded, failed,
//!   dead-lettered), its attempts with their fencing epochs and outcomes,
//!   and timestamps (`nimbus invocation get`);
//! - `GET /nimbus/2026-11-25/async-backlog` — the caller's unfinished async
//!   invocations, in all and per function; and the server's counts of stale
//!   endings refused and damaged records quarantined.

use super::blocking;
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use nimbus_control::model;
use nimbus_journal::State as InvocationState;
use serde_json::{Value, json};
use std::sync::Arc;

/// A journal time (ms since the Unix epoch) as Lambda writes times.
fn time_text(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    model::lambda_timestamp(at)
}

/// `GET /nimbus/2026-11-25/invocations/{InvocationId}`.
pub async fn get(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (journal, tenant, wanted) = (
        platform.journal.clone(),
        caller.account_id.clone(),
        id.clone(),
    );
    let status = blocking(move || {
        journal
            .status(&tenant, &wanted)
            .map_err(ApiError::internal)
    })
    .await?
    .ok_or_else(|| {
        ApiError::not_found(format!(
            "No asynchronous invocation {id:?} is known in this account (finished ones are kept {} hours)",
            crate::dispatch::FINISHED_KEPT.as_secs() / 3600
        ))
    })?;
    let history: Vec<Value> = status
        .history
        .iter()
        .map(|a| {
            let mut attempt = json!({
                "Epoch": a.epoch,
                "StartedAt": time_text(a.started_at_ms),
            });
            if let Some(t) = a.ended_at_ms {
                attempt["EndedAt"] = time_text(t).into();
            }
            if let Some(o) = &a.outcome {
                attempt["Outcome"] = o.as_str().into();
            }
            if let Some(e) = &a.error {
                attempt["Error"] = e.as_str().into();
            }
            attempt
        })
        .collect();
    let mut answer = json!({
        "InvocationId": status.id,
        "FunctionName": status.function,
        "FunctionArn": platform.arn(&caller).qualified_arn(&status.function, &status.qualifier),
        "Qualifier": status.qualifier,
        "ExecutedVersion": status.version,
        "State": status.state.as_str(),
        "Attempts": status.attempts,
        "AcceptedAt": time_text(status.accepted_at_ms),
        "UpdatedAt": time_text(status.updated_at_ms),
        "History": history,
    });
    if matches!(
        status.state,
        InvocationState::Queued | InvocationState::Retrying
    ) {
        answer["NextAttemptAt"] = time_text(status.due_at_ms).into();
    }
    if let Some(e) = status.last_error {
        answer["LastError"] = e.into();
    }
    if let Some(c) = status.condition {
        answer["Condition"] = c.into();
    }
    Ok(axum::Json(answer).into_response())
}

/// `GET /nimbus/2026-11-25/async-backlog`.
pub async fn backlog(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let (journal, tenant) = (platform.journal.clone(), caller.account_id.clone());
    let per_function =
        blocking(move || journal.backlog(&tenant).map_err(ApiError::internal)).await?;
    let total: u64 = per_function.iter().map(|(_, n)| n).sum();
    let functions: Vec<Value> = per_function
        .into_iter()
        .map(|(name, n)| json!({ "FunctionName": name, "Unfinished": n }))
        .collect();
    // Since the server started, over every account: endings refused by
    // fencing (a stale attempt's late result), and damaged records moved
    // aside.
    let journal = &platform.journal;
    Ok(axum::Json(json!({
        "Unfinished": total,
        "Limit": platform.asynchronous.backlog_per_tenant,
        "Functions": functions,
        "StaleEndingsRefused": journal.stale_endings(),
        "QuarantinedRecords": journal.quarantined(),
    }))
    .into_response())
}

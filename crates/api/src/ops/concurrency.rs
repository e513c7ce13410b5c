//! PutFunctionConcurrency, GetFunctionConcurrency, DeleteFunctionConcurrency:
//! a function's reserved concurrency (see `nimbus_scheduler::concurrency`).

use super::{blocking, function_ref, parse_json};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_control::StoreError;
use nimbus_scheduler::ReserveError;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutInput {
    reserved_concurrent_executions: Option<i64>,
}

/// The function a concurrency operation names, which must be unqualified.
fn function_name(label: &str) -> Result<String, ApiError> {
    let function = function_ref(label, None)?;
    if function.qualifier.is_some() {
        return Err(ApiError::invalid_parameter(
            "Reserved concurrency is set on a function, not on one of its versions or aliases",
        ));
    }
    Ok(function.name)
}

/// Sets or removes the reservation, saving it first; errors as Lambda's.
async fn reserve(
    platform: &Arc<Platform>,
    caller: &Caller,
    name: String,
    reserved: Option<u32>,
) -> Result<(), ApiError> {
    let (worker, tenant, function) = (platform.clone(), caller.account_id.clone(), name.clone());
    let outcome = blocking(move || {
        Ok(worker
            .concurrency
            .reserve(&tenant, &function, reserved, || {
                worker
                    .store
                    .set_reserved_concurrency(&tenant, &function, reserved)
            }))
    })
    .await?;
    match outcome {
        Ok(()) => Ok(()),
        Err(e @ ReserveError::BelowUnreservedMinimum { .. }) => {
            Err(ApiError::invalid_parameter(e.to_string()))
        }
        Err(ReserveError::Persist(StoreError::NotFound(_))) => Err(platform.function_not_found(
            caller,
            &nimbus_control::validate::FunctionRef {
                name,
                qualifier: None,
            },
        )),
        Err(ReserveError::Persist(e)) => Err(e.into()),
    }
}

/// `PUT /2017-10-31/functions/{FunctionName}/concurrency`.
pub async fn put(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = function_name(&label)?;
    let input: PutInput = parse_json(&body)?;
    let reserved = match input.reserved_concurrent_executions {
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "1 validation error detected: Value null at 'reservedConcurrentExecutions' \
                 failed to satisfy constraint: Member must not be null",
            ));
        }
        Some(n) => u32::try_from(n).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                format!(
                    "1 validation error detected: Value '{n}' at 'reservedConcurrentExecutions' \
                     failed to satisfy constraint: Member must have value greater than or equal to 0"
                ),
            )
        })?,
    };
    let provisioned: u64 = platform
        .provisioned_of(&caller.account_id, &name)
        .await?
        .iter()
        .map(|c| u64::from(c.requested))
        .sum();
    if u64::from(reserved) < provisioned {
        return Err(ApiError::invalid_parameter(format!(
            "ReservedConcurrentExecutions ({reserved}) must not be less than the function's \
             provisioned concurrency ({provisioned})"
        )));
    }
    reserve(&platform, &caller, name, Some(reserved)).await?;
    Ok(axum::Json(json!({ "ReservedConcurrentExecutions": reserved })).into_response())
}

/// `GET /2019-09-30/functions/{FunctionName}/concurrency`: `{}` when the
/// function has no reservation.
pub async fn get(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
) -> Result<Response, ApiError> {
    let name = function_name(&label)?;
    let (worker, tenant, function) = (platform.clone(), caller.account_id.clone(), name.clone());
    let exists = blocking(move || Ok(worker.store.get(&tenant, &function)?.is_some())).await?;
    if !exists {
        return Err(platform.function_not_found(
            &caller,
            &nimbus_control::validate::FunctionRef {
                name,
                qualifier: None,
            },
        ));
    }
    let body = match platform.concurrency.reserved(&caller.account_id, &name) {
        Some(r) => json!({ "ReservedConcurrentExecutions": r }),
        None => json!({}),
    };
    Ok(axum::Json(body).into_response())
}

/// `DELETE /2017-10-31/functions/{FunctionName}/concurrency`.
pub async fn delete(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
) -> Result<Response, ApiError> {
    let name = function_name(&label)?;
    reserve(&platform, &caller, name, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

//! GetAccountSettings.

use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use nimbus_control::package::UNZIPPED_SIZE_MAX_BYTES;
use serde_json::json;
use std::sync::Arc;

/// Lambda's default total code storage per account (75 GB).
const TOTAL_CODE_SIZE_MAX_BYTES: u64 = 80_530_636_800;
/// Lambda's largest zipped package (50 MB).
const CODE_SIZE_ZIPPED_MAX_BYTES: u64 = 52_428_800;

/// `GET /2016-08-19/account-settings`.
pub async fn get_account_settings(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let account = platform.concurrency.limits().account;
    let unreserved = platform.concurrency.unreserved(&caller.account_id);
    let (count, total) = super::blocking(move || {
        let records = platform
            .store
            .list(&caller.account_id, None, usize::MAX >> 1)?;
        Ok((
            records.len(),
            records.iter().map(|r| r.code_size).sum::<u64>(),
        ))
    })
    .await?;
    Ok(axum::Json(json!({
        "AccountLimit": {
            "TotalCodeSize": TOTAL_CODE_SIZE_MAX_BYTES,
            "CodeSizeUnzipped": UNZIPPED_SIZE_MAX_BYTES,
            "CodeSizeZipped": CODE_SIZE_ZIPPED_MAX_BYTES,
            "ConcurrentExecutions": account,
            "UnreservedConcurrentExecutions": unreserved,
        },
        "AccountUsage": { "TotalCodeSize": total, "FunctionCount": count },
    }))
    .into_response())
}

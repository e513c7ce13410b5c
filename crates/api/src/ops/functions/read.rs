//! GetFunction and GetFunctionConfiguration, of `$LATEST`, a version or an
//! alias.

use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ops::function_ref;
use crate::ops::resolve::{Target, read_target};
use crate::shapes::function_configuration;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

async fn configuration(
    platform: &Arc<Platform>,
    caller: &Caller,
    label: &str,
    query: &HashMap<String, String>,
) -> Result<(Target, Value), ApiError> {
    let function = function_ref(label, query.get("Qualifier").map(String::as_str))?;
    let (target, shown) = read_target(platform, caller, &function).await?;
    let body = function_configuration(&target.view(), &platform.arn(caller), shown.as_deref());
    Ok((target, body))
}

/// `GET /2015-03-31/functions/{FunctionName}`.
pub async fn get(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (target, configuration) = configuration(&platform, &caller, &label, &query).await?;
    let (sha, tags) = match &target {
        Target::Latest(r) => (r.code_sha256_hex.clone(), Some(r.tags.clone())),
        Target::Version(v) => (v.code_sha256_hex.clone(), None),
    };
    let mut body = json!({
        "Configuration": configuration,
        "Code": { "RepositoryType": "S3", "Location": format!("nimbus://artifacts/{sha}") },
    });
    if let Some(tags) = tags.filter(|t| !t.is_empty()) {
        body["Tags"] = json!(tags);
    }
    let name = body["Configuration"]["FunctionName"]
        .as_str()
        .unwrap_or_default();
    if let Some(reserved) = platform.concurrency.reserved(&caller.account_id, name) {
        body["Concurrency"] = json!({ "ReservedConcurrentExecutions": reserved });
    }
    Ok(axum::Json(body).into_response())
}

/// `GET /2015-03-31/functions/{FunctionName}/configuration`.
pub async fn get_configuration(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (_, body) = configuration(&platform, &caller, &label, &query).await?;
    Ok(axum::Json(body).into_response())
}

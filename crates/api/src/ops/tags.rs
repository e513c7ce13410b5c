//! TagResource, UntagResource and ListTags on functions.

use super::functions::update::update;
use super::{blocking, parse_json, sigv4_decode};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_control::validate;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most tags a function may carry (Lambda's limit).
const TAGS_PER_FUNCTION_MAX: usize = 50;

/// The function a tag `Resource` ARN names; only unqualified function ARNs
/// carry tags.
fn function_of(resource: &str) -> Result<String, ApiError> {
    if !resource.starts_with("arn:") {
        return Err(ApiError::invalid_parameter(format!(
            "Resource {resource:?} is not a function ARN"
        )));
    }
    let function = validate::function_ref(resource)?;
    if function.qualifier.is_some() {
        return Err(ApiError::invalid_parameter(
            "Tags on function aliases and versions are not supported. Please specify a function ARN.",
        ));
    }
    Ok(function.name)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagInput {
    tags: BTreeMap<String, String>,
}

/// `POST /2017-03-31/tags/{Resource}`.
pub async fn tag(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(resource): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = function_of(&resource)?;
    let input: TagInput = parse_json(&body)?;
    update(
        &platform,
        &caller,
        &name,
        None,
        move |_, record| {
            record.tags.extend(input.tags.clone());
            if record.tags.len() > TAGS_PER_FUNCTION_MAX {
                return Err(ApiError::invalid_parameter(format!(
                    "A function may carry at most {TAGS_PER_FUNCTION_MAX} tags"
                )));
            }
            Ok(())
        },
        false,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /2017-03-31/tags/{Resource}?tagKeys=…&tagKeys=…`.
pub async fn untag(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let name = function_of(&resource)?;
    let keys: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "tagKeys")
        .map(|(_, v)| sigv4_decode(v))
        .collect();
    update(
        &platform,
        &caller,
        &name,
        None,
        move |_, record| {
            for key in &keys {
                record.tags.remove(key);
            }
            Ok(())
        },
        false,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /2017-03-31/tags/{Resource}`.
pub async fn list(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(resource): Path<String>,
) -> Result<Response, ApiError> {
    let name = function_of(&resource)?;
    let (worker, tenant, n) = (platform.clone(), caller.account_id.clone(), name.clone());
    let record = blocking(move || Ok(worker.store.get(&tenant, &n)?))
        .await?
        .ok_or_else(|| {
            platform.function_not_found(
                &caller,
                &validate::FunctionRef {
                    name,
                    qualifier: None,
                },
            )
        })?;
    Ok(axum::Json(json!({ "Tags": record.tags })).into_response())
}

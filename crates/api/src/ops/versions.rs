//! PublishVersion and ListVersionsByFunction.
//!
//! A version is an immutable copy of `$LATEST`'s code and configuration,
//! committed together with the function record that counts it (one
//! transaction, compare-and-set on the record's revision).

use super::functions::max_items;
use super::{blocking, parse_json};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::shapes::{ConfigView, function_configuration};
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_control::validate::{self, FunctionRef};
use nimbus_control::{StoreError, VersionRecord, model};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Publish retries when another writer changes `$LATEST` in between.
const PUBLISH_RETRIES_MAX: usize = 16;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishVersionInput {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

/// Publishes `$LATEST` as a new version — or returns the latest version if
/// neither code nor configuration changed since, as Lambda does.
pub async fn publish(
    platform: &Arc<Platform>,
    caller: &Caller,
    name: &str,
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
) -> Result<VersionRecord, ApiError> {
    let (worker, tenant, name_owned) = (
        platform.clone(),
        caller.account_id.clone(),
        name.to_string(),
    );
    let not_found = platform.function_not_found(
        caller,
        &FunctionRef {
            name: name.to_string(),
            qualifier: None,
        },
    );
    blocking(move || {
        let store = &worker.store;
        for _ in 0..PUBLISH_RETRIES_MAX {
            let current = store.get(&tenant, &name_owned)?.ok_or_else(|| not_found.clone())?;
            if revision_id.as_ref().is_some_and(|r| *r != current.revision_id) {
                return Err(ApiError::stale_revision());
            }
            let sha = current.code_sha256_base64();
            if let Some(wanted) = code_sha256.as_ref().filter(|w| **w != sha) {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailedException",
                    format!("CodeSHA256 ({wanted}) is different from current CodeSHA256 in $LATEST ({sha}). Please try again with the current CodeSHA256."),
                ));
            }
            if current.last_version > 0
                && let Some(latest) = store.get_version(&tenant, &name_owned, current.last_version)?
            {
                let mut unchanged = latest.config.clone();
                unchanged.description = current.config.description.clone();
                if latest.code_sha256_hex == current.code_sha256_hex && unchanged == current.config {
                    return Ok(latest);
                }
            }
            let mut config = current.config.clone();
            if let Some(d) = &description {
                config.description = d.clone();
            }
            let version = VersionRecord {
                version: current.last_version + 1,
                config,
                code_sha256_hex: current.code_sha256_hex.clone(),
                code_size: current.code_size,
                revision_id: model::new_revision_id(),
                last_modified: model::lambda_timestamp(time::OffsetDateTime::now_utc()),
            };
            let mut next = current.clone();
            next.last_version = version.version;
            next.revision = current.revision + 1;
            next.revision_id = model::new_revision_id();
            match store.publish_version(&tenant, &next, current.revision, &version) {
                Ok(()) => {
                    worker.install(&tenant, next)?;
                    worker.install_version(&tenant, &version)?;
                    return Ok(version);
                }
                Err(StoreError::StaleRevision { .. }) if revision_id.is_none() => continue,
                Err(StoreError::NotFound(_)) => return Err(not_found),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "ResourceConflictException",
            "The function is being updated by other requests; retry publishing",
        ))
    })
    .await
}

/// `POST /2015-03-31/functions/{FunctionName}/versions`.
pub async fn publish_version(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: PublishVersionInput = parse_json(&body)?;
    let function = validate::function_ref(&label)?;
    if let Some(d) = &input.description {
        validate::description(d)?;
    }
    let version = publish(
        &platform,
        &caller,
        &function.name,
        input.code_sha256,
        input.description,
        input.revision_id,
    )
    .await?;
    let body = function_configuration(&ConfigView::version(&version), &platform.arn(&caller), None);
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /2015-03-31/functions/{FunctionName}/versions`: `$LATEST` first,
/// then the versions in order. The marker is the last version number shown
/// (`0` stands for `$LATEST`).
pub async fn list_versions(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = validate::function_ref(&label)?;
    let max_items = max_items(&query)?;
    let after: Option<u64> = match query.get("Marker").filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => Some(m.parse().map_err(|_| {
            ApiError::invalid_parameter(format!("Marker {m:?} is not one this API gave"))
        })?),
    };
    let (worker, tenant, name) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    let found = blocking(move || {
        let Some(latest) = worker.store.get(&tenant, &name)? else {
            return Ok(None);
        };
        let room = if after.is_none() {
            max_items - 1
        } else {
            max_items
        };
        let versions = worker
            .store
            .list_versions(&tenant, &name, after, room + 1)?;
        Ok(Some((latest, versions)))
    })
    .await?;
    let (latest, mut versions) =
        found.ok_or_else(|| platform.function_not_found(&caller, &function))?;
    let arn = platform.arn(&caller);
    let mut shown = Vec::new();
    let mut last_marker = after.unwrap_or(0);
    if after.is_none() {
        shown.push(function_configuration(
            &ConfigView::latest(&latest),
            &arn,
            None,
        ));
    }
    let room = max_items - shown.len();
    let more = versions.len() > room;
    versions.truncate(room);
    for v in &versions {
        shown.push(function_configuration(&ConfigView::version(v), &arn, None));
        last_marker = v.version;
    }
    let mut body = json!({ "Versions": shown });
    if more {
        body["NextMarker"] = json!(last_marker.to_string());
    }
    Ok(axum::Json(body).into_response())
}

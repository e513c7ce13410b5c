//! CreateFunction, ListFunctions, DeleteFunction here; reads in [`read`],
//! updates in [`update`].
//!
//! Every write follows one path: validate, store the code (content-addressed,
//! durable), prepare it (so bad code fails here, never at invoke), commit the
//! record by compare-and-set on its revision, then install the snapshot.

pub mod read;
pub mod update;

use super::resolve::{Qualifier, qualifier};
use super::versions::publish;
use super::{blocking, function_ref, parse_json};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::shapes::{ConfigView, function_configuration};
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use nimbus_control::model::{
    self, EPHEMERAL_STORAGE_DEFAULT_MB, MEMORY_SIZE_DEFAULT_MB, TIMEOUT_DEFAULT_S,
};
use nimbus_control::validate;
use nimbus_control::{FunctionConfig, FunctionRecord, Runtime, StoreError};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Largest page a List operation returns.
pub const LIST_MAX_ITEMS_MAX: usize = 10_000;
/// Page size when `MaxItems` is absent.
pub const LIST_MAX_ITEMS_DEFAULT: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CodeInput {
    zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    s3_bucket: Option<String>,
    image_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnvironmentInput {
    variables: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EphemeralStorageInput {
    size: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeadLetterInput {
    target_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateFunctionInput {
    function_name: String,
    runtime: Option<String>,
    role: String,
    handler: Option<String>,
    code: CodeInput,
    description: Option<String>,
    timeout: Option<i64>,
    memory_size: Option<i64>,
    environment: Option<EnvironmentInput>,
    ephemeral_storage: Option<EphemeralStorageInput>,
    dead_letter_config: Option<DeadLetterInput>,
    package_type: Option<String>,
    publish: Option<bool>,
    tags: Option<BTreeMap<String, String>>,
}

fn decode_zip(code: &CodeInput) -> Result<Vec<u8>, ApiError> {
    if code.s3_bucket.is_some() || code.image_uri.is_some() {
        return Err(ApiError::invalid_parameter(
            "Only Code.ZipFile is supported: this server has no S3 or container registry to fetch code from",
        ));
    }
    let zip = code
        .zip_file
        .as_deref()
        .ok_or_else(|| ApiError::invalid_parameter("Code.ZipFile is required"))?;
    base64::engine::general_purpose::STANDARD
        .decode(zip)
        .map_err(|e| ApiError::invalid_content(format!("Code.ZipFile is not valid base64: {e}")))
}

fn now() -> String {
    model::lambda_timestamp(time::OffsetDateTime::now_utc())
}

fn plain_name(label: &str) -> Result<String, ApiError> {
    let function = validate::function_ref(label)?;
    if function.qualifier.is_some() {
        return Err(ApiError::invalid_parameter(format!(
            "FunctionName {label:?} must not carry a qualifier for this operation"
        )));
    }
    Ok(function.name)
}

/// `MaxItems` of a List operation.
pub fn max_items(query: &HashMap<String, String>) -> Result<usize, ApiError> {
    max_items_within(query, LIST_MAX_ITEMS_DEFAULT, LIST_MAX_ITEMS_MAX)
}

/// A list operation's `MaxItems`: `default` when absent, else 1 to `max`.
pub fn max_items_within(
    query: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match query.get("MaxItems") {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                format!(
                    "1 validation error detected: Value '{text}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and {max}"
                ),
            )),
        },
    }
}

/// `POST /2015-03-31/functions`.
pub async fn create(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: CreateFunctionInput = parse_json(&body)?;
    drop(body);
    let name = plain_name(&input.function_name)?;
    if input.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(ApiError::invalid_parameter(
            "PackageType Image is not supported: deploy a zip or .wasm",
        ));
    }
    let runtime = input.runtime.as_deref().ok_or_else(|| {
        ApiError::invalid_parameter(
            "The Runtime parameter is required for functions defined as .zip file archives.",
        )
    })?;
    let runtime = Runtime::parse(runtime).map_err(ApiError::invalid_parameter)?;
    let environment = input
        .environment
        .and_then(|e| e.variables)
        .unwrap_or_default();
    validate::environment(&environment)?;
    let description = input.description.unwrap_or_default();
    validate::description(&description)?;
    let config = FunctionConfig {
        name,
        runtime,
        role: input.role,
        handler: input.handler.filter(|h| !h.is_empty()),
        description,
        timeout_s: validate::timeout(input.timeout.unwrap_or(TIMEOUT_DEFAULT_S.into()))?,
        memory_size_mb: validate::memory_size(
            input.memory_size.unwrap_or(MEMORY_SIZE_DEFAULT_MB.into()),
        )?,
        ephemeral_storage_mb: validate::ephemeral_storage(
            input
                .ephemeral_storage
                .map_or(EPHEMERAL_STORAGE_DEFAULT_MB.into(), |e| e.size),
        )?,
        environment,
        dead_letter_target: input
            .dead_letter_config
            .and_then(|d| d.target_arn)
            .map(|arn| super::dead_letter_target(&arn))
            .transpose()?
            .flatten(),
    };
    let package = decode_zip(&input.code)?;
    let tags = input.tags.unwrap_or_default();
    let tenant = caller.account_id.clone();
    let worker = platform.clone();
    let record = blocking(move || {
        if worker.store.get(&tenant, &config.name)?.is_some() {
            return Err(exists(&config.name));
        }
        let record = FunctionRecord {
            revision: 1,
            revision_id: model::new_revision_id(),
            code_sha256_hex: nimbus_control::artifacts::sha256_hex(&package),
            code_size: package.len() as u64,
            last_modified: now(),
            last_version: 0,
            tags,
            config,
        };
        check_code(&worker, &package, &record)?;
        worker.artifacts.put(&package).map_err(ApiError::internal)?;
        match worker.store.create(&tenant, &record) {
            Err(StoreError::Exists(name)) => return Err(exists(&name)),
            other => other?,
        }
        worker.install(&tenant, record.clone())?;
        Ok(record)
    })
    .await?;
    let arn = platform.arn(&caller);
    let body = if input.publish.unwrap_or(false) {
        let version = publish(&platform, &caller, &record.config.name, None, None, None).await?;
        function_configuration(&ConfigView::version(&version), &arn, None)
    } else {
        function_configuration(&ConfigView::latest(&record), &arn, None)
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

fn exists(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "ResourceConflictException",
        format!("Function already exist: {name}"),
    )
}

/// Extracts and prepares the code a record names, so bad code is refused
/// at deploy time.
fn check_code(
    platform: &Platform,
    package: &[u8],
    record: &FunctionRecord,
) -> Result<(), ApiError> {
    let c = &record.config;
    platform.code_for(
        c.runtime,
        &record.code_sha256_hex,
        Some(package),
        c.handler.as_deref(),
    )?;
    Ok(())
}

/// `GET /2015-03-31/functions`.
pub async fn list(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let max_items = max_items(&query)?;
    let marker = query.get("Marker").cloned().filter(|m| !m.is_empty());
    let (worker, tenant) = (platform.clone(), caller.account_id.clone());
    let mut records = blocking(move || {
        Ok(worker
            .store
            .list(&tenant, marker.as_deref(), max_items + 1)?)
    })
    .await?;
    let more = records.len() > max_items;
    records.truncate(max_items);
    let arn = platform.arn(&caller);
    let functions: Vec<_> = records
        .iter()
        .map(|r| function_configuration(&ConfigView::latest(r), &arn, None))
        .collect();
    let mut body = json!({ "Functions": functions });
    if more && let Some(last) = records.last() {
        body["NextMarker"] = json!(last.config.name);
    }
    Ok(axum::Json(body).into_response())
}

/// `DELETE /2015-03-31/functions/{FunctionName}`: the whole function, or
/// one version of it with `Qualifier`.
pub async fn delete(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = function_ref(&label, query.get("Qualifier").map(String::as_str))?;
    let version = match qualifier(function.qualifier.as_deref())? {
        Qualifier::Latest if function.qualifier.is_some() => {
            return Err(ApiError::invalid_parameter(
                "$LATEST version cannot be deleted without deleting the function.",
            ));
        }
        Qualifier::Latest => None,
        Qualifier::Version(n) => Some(n),
        Qualifier::Alias(_) => {
            return Err(ApiError::invalid_parameter(
                "Deletion of aliases is not supported through DeleteFunction; use DeleteAlias",
            ));
        }
    };
    let (worker, tenant, name) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    let deleted = blocking(move || {
        let outcome = match version {
            // With the function goes its reservation, in the same step
            // as reservations change, so none outlives it.
            None => worker
                .concurrency
                .reserve(&tenant, &name, None, || worker.store.delete(&tenant, &name))
                .map_err(|e| match e {
                    nimbus_scheduler::ReserveError::Persist(e) => e,
                    other => StoreError::Engine(other.to_string()),
                }),
            Some(n) => worker.store.delete_version(&tenant, &name, n),
        };
        match outcome {
            Ok(()) => {
                // Its event-invoke configurations went with it in the store.
                worker
                    .event_configs
                    .reload(worker.store.as_ref(), &tenant, &name)?;
                match version {
                    None => {
                        worker.snapshots.remove_function(&tenant, &name);
                        worker.logs.remove(&tenant, &name);
                        // Its idle sandboxes can never serve again.
                        if let Ok(pool) = &worker.containers {
                            pool.deprovision(&tenant, &name, None);
                        }
                        worker.retire_sandboxes(&tenant, &name);
                        worker.placement.forget(&tenant, &name);
                    }
                    Some(n) => {
                        let version = n.to_string();
                        worker.snapshots.remove_version(&tenant, &name, &version);
                        // Its provisioned concurrency goes with it.
                        worker.store.delete_provisioned(&tenant, &name, &version)?;
                        if let Ok(pool) = &worker.containers {
                            pool.deprovision(&tenant, &name, Some(&version));
                        }
                    }
                }
                Ok(true)
            }
            Err(StoreError::NotFound(_) | StoreError::VersionNotFound { .. }) => Ok(false),
            Err(StoreError::VersionInUse { alias, .. }) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "ResourceConflictException",
                format!(
                    "Unable to delete version because the following aliases reference it: [{alias}]"
                ),
            )),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    if !deleted {
        return Err(platform.function_not_found(&caller, &function));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

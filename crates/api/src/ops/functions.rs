//! CreateFunction, GetFunction, GetFunctionConfiguration, ListFunctions,
//! UpdateFunctionCode, UpdateFunctionConfiguration, DeleteFunction.
//!
//! Every write follows one path: validate, store the code (content-addressed,
//! durable), prepare it (so bad code fails here, never at invoke), commit the
//! record by compare-and-set on its revision, then install the snapshot.

use super::{blocking, function_ref, parse_json};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::shapes::function_configuration;
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

/// Largest page ListFunctions returns.
const LIST_MAX_ITEMS_MAX: usize = 10_000;
/// Page size when `MaxItems` is absent.
const LIST_MAX_ITEMS_DEFAULT: usize = 50;
/// Read-modify-write retries of an update without a `RevisionId`, when
/// another writer keeps winning the compare-and-set.
const UPDATE_RETRIES_MAX: usize = 16;

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
    package_type: Option<String>,
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
    };
    let package = decode_zip(&input.code)?;
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
    let body = function_configuration(&record, &platform.arn(&caller));
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
    let wasm = nimbus_control::package::wasm_code(package, record.config.handler.as_deref())?;
    platform.wasm.prepare(&wasm)?;
    Ok(())
}

async fn load(
    platform: &Arc<Platform>,
    caller: &Caller,
    label: &str,
    qualifier: Option<&str>,
) -> Result<FunctionRecord, ApiError> {
    let function = function_ref(label, qualifier)?;
    if function
        .qualifier
        .as_deref()
        .is_some_and(|q| q != "$LATEST")
    {
        return Err(platform.function_not_found(caller, &function));
    }
    let (worker, tenant, name) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    blocking(move || Ok(worker.store.get(&tenant, &name)?))
        .await?
        .ok_or_else(|| platform.function_not_found(caller, &function))
}

/// `GET /2015-03-31/functions/{FunctionName}`.
pub async fn get(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let record = load(
        &platform,
        &caller,
        &label,
        query.get("Qualifier").map(String::as_str),
    )
    .await?;
    let location = format!("nimbus://artifacts/{}", record.code_sha256_hex);
    Ok(axum::Json(json!({
        "Configuration": function_configuration(&record, &platform.arn(&caller)),
        "Code": { "RepositoryType": "S3", "Location": location },
    }))
    .into_response())
}

/// `GET /2015-03-31/functions/{FunctionName}/configuration`.
pub async fn get_configuration(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let record = load(
        &platform,
        &caller,
        &label,
        query.get("Qualifier").map(String::as_str),
    )
    .await?;
    Ok(axum::Json(function_configuration(&record, &platform.arn(&caller))).into_response())
}

/// `GET /2015-03-31/functions`.
pub async fn list(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let max_items = match query.get("MaxItems") {
        None => LIST_MAX_ITEMS_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=LIST_MAX_ITEMS_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ValidationException",
                    format!(
                        "1 validation error detected: Value '{text}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and {LIST_MAX_ITEMS_MAX}"
                    ),
                ));
            }
        },
    };
    let marker = query.get("Marker").cloned().filter(|m| !m.is_empty());
    let (worker, tenant) = (platform.clone(), caller.account_id.clone());
    let mut records = blocking(move || {
        Ok(worker
            .store
            .list(&tenant, marker.as_deref(), max_items + 1)?)
    })
    .await?;
    let next_marker = (records.len() > max_items).then(|| {
        records.truncate(max_items);
        records.last().map(|r| r.config.name.clone())
    });
    let arn = platform.arn(&caller);
    let functions: Vec<_> = records
        .iter()
        .map(|r| function_configuration(r, &arn))
        .collect();
    let mut body = json!({ "Functions": functions });
    if let Some(Some(marker)) = next_marker {
        body["NextMarker"] = json!(marker);
    }
    Ok(axum::Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateCodeInput {
    zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    s3_bucket: Option<String>,
    image_uri: Option<String>,
    revision_id: Option<String>,
    dry_run: Option<bool>,
}

/// `PUT /2015-03-31/functions/{FunctionName}/code`.
pub async fn update_code(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: UpdateCodeInput = parse_json(&body)?;
    drop(body);
    let name = plain_name(&label)?;
    let code = CodeInput {
        zip_file: input.zip_file,
        s3_bucket: input.s3_bucket,
        image_uri: input.image_uri,
    };
    let package = Arc::new(decode_zip(&code)?);
    let dry_run = input.dry_run.unwrap_or(false);
    let record = update(
        &platform,
        &caller,
        &name,
        input.revision_id,
        move |platform, record| {
            record.code_sha256_hex = nimbus_control::artifacts::sha256_hex(&package);
            record.code_size = package.len() as u64;
            check_code(platform, &package, record)?;
            if !dry_run {
                platform
                    .artifacts
                    .put(&package)
                    .map_err(ApiError::internal)?;
            }
            Ok(())
        },
        dry_run,
    )
    .await?;
    Ok(axum::Json(function_configuration(&record, &platform.arn(&caller))).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateConfigurationInput {
    role: Option<String>,
    handler: Option<String>,
    description: Option<String>,
    timeout: Option<i64>,
    memory_size: Option<i64>,
    environment: Option<EnvironmentInput>,
    runtime: Option<String>,
    ephemeral_storage: Option<EphemeralStorageInput>,
    revision_id: Option<String>,
}

/// `PUT /2015-03-31/functions/{FunctionName}/configuration`.
pub async fn update_configuration(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: UpdateConfigurationInput = parse_json(&body)?;
    let name = plain_name(&label)?;
    let timeout = input.timeout.map(validate::timeout).transpose()?;
    let memory = input.memory_size.map(validate::memory_size).transpose()?;
    let storage = input
        .ephemeral_storage
        .map(|e| validate::ephemeral_storage(e.size))
        .transpose()?;
    let runtime = input
        .runtime
        .as_deref()
        .map(Runtime::parse)
        .transpose()
        .map_err(ApiError::invalid_parameter)?;
    let environment = input.environment.map(|e| e.variables.unwrap_or_default());
    if let Some(vars) = &environment {
        validate::environment(vars)?;
    }
    if let Some(d) = &input.description {
        validate::description(d)?;
    }
    let (role, handler, description) = (input.role, input.handler, input.description);
    let record = update(
        &platform,
        &caller,
        &name,
        input.revision_id,
        move |platform, record| {
            let c = &mut record.config;
            let handler_changed = handler
                .as_ref()
                .is_some_and(|h| c.handler.as_deref() != Some(h.as_str()));
            if let Some(v) = &role {
                c.role = v.clone();
            }
            if let Some(v) = &handler {
                c.handler = Some(v.clone()).filter(|h| !h.is_empty());
            }
            if let Some(v) = &description {
                c.description = v.clone();
            }
            if let Some(v) = timeout {
                c.timeout_s = v;
            }
            if let Some(v) = memory {
                c.memory_size_mb = v;
            }
            if let Some(v) = storage {
                c.ephemeral_storage_mb = v;
            }
            if let Some(v) = runtime {
                c.runtime = v;
            }
            if let Some(v) = &environment {
                c.environment = v.clone();
            }
            if handler_changed {
                let package = platform
                    .artifacts
                    .get(&record.code_sha256_hex)
                    .map_err(ApiError::internal)?;
                check_code(platform, &package, record)?;
            }
            Ok(())
        },
        false,
    )
    .await?;
    Ok(axum::Json(function_configuration(&record, &platform.arn(&caller))).into_response())
}

/// Read-modify-write of a record by compare-and-set: with a `RevisionId`
/// the caller's view must still be current (else 412); without one, a lost
/// race is retried on the fresh record, so no update is silently dropped.
async fn update(
    platform: &Arc<Platform>,
    caller: &Caller,
    name: &str,
    revision_id: Option<String>,
    change: impl Fn(&Platform, &mut FunctionRecord) -> Result<(), ApiError> + Send + 'static,
    dry_run: bool,
) -> Result<FunctionRecord, ApiError> {
    let (worker, tenant, name_owned) = (
        platform.clone(),
        caller.account_id.clone(),
        name.to_string(),
    );
    let not_found = platform.function_not_found(
        caller,
        &validate::FunctionRef {
            name: name.to_string(),
            qualifier: None,
        },
    );
    blocking(move || {
        for _ in 0..UPDATE_RETRIES_MAX {
            let current = worker
                .store
                .get(&tenant, &name_owned)?
                .ok_or_else(|| not_found.clone())?;
            if revision_id
                .as_ref()
                .is_some_and(|r| *r != current.revision_id)
            {
                return Err(ApiError::stale_revision());
            }
            let mut next = current.clone();
            change(&worker, &mut next)?;
            next.revision = current.revision + 1;
            next.revision_id = model::new_revision_id();
            next.last_modified = now();
            if dry_run {
                return Ok(next);
            }
            match worker.store.update(&tenant, &next, current.revision) {
                Ok(()) => {
                    worker.install(&tenant, next.clone())?;
                    return Ok(next);
                }
                Err(StoreError::StaleRevision { .. }) if revision_id.is_none() => continue,
                Err(StoreError::NotFound(_)) => return Err(not_found),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "ResourceConflictException",
            "The function is being updated by other requests; retry the update",
        ))
    })
    .await
}

/// `DELETE /2015-03-31/functions/{FunctionName}`.
pub async fn delete(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = function_ref(&label, query.get("Qualifier").map(String::as_str))?;
    match function.qualifier.as_deref() {
        None => {}
        Some("$LATEST") => {
            return Err(ApiError::invalid_parameter(
                "$LATEST version cannot be deleted without deleting the function.",
            ));
        }
        Some(_) => return Err(platform.function_not_found(&caller, &function)),
    }
    let (worker, tenant, name) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    let deleted = blocking(move || match worker.store.delete(&tenant, &name) {
        Ok(()) => {
            worker.snapshots.remove(&tenant, &name);
            worker.logs.remove(&tenant, &name);
            Ok(true)
        }
        Err(StoreError::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    })
    .await?;
    if !deleted {
        return Err(platform.function_not_found(&caller, &function));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

//! UpdateFunctionCode and UpdateFunctionConfiguration, and the
//! compare-and-set loop every change to a function record goes through.

use super::{
    CodeInput, DeadLetterInput, EnvironmentInput, EphemeralStorageInput, check_code, decode_zip,
    now, plain_name,
};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ops::versions::publish;
use crate::ops::{blocking, parse_json};
use crate::shapes::{ConfigView, function_configuration};
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_control::validate::{self, FunctionRef};
use nimbus_control::{FunctionRecord, Runtime, StoreError, model};
use serde::Deserialize;
use std::sync::Arc;

/// Read-modify-write retries of an update without a `RevisionId`, when
/// another writer keeps winning the compare-and-set.
const UPDATE_RETRIES_MAX: usize = 16;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateCodeInput {
    zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    s3_bucket: Option<String>,
    image_uri: Option<String>,
    revision_id: Option<String>,
    dry_run: Option<bool>,
    publish: Option<bool>,
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
    let change = move |platform: &Platform, record: &mut FunctionRecord| {
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
    };
    let record = update(
        &platform,
        &caller,
        &name,
        input.revision_id,
        change,
        dry_run,
    )
    .await?;
    let arn = platform.arn(&caller);
    let body = if input.publish.unwrap_or(false) && !dry_run {
        let version = publish(&platform, &caller, &name, None, None, None).await?;
        function_configuration(&ConfigView::version(&version), &arn, None)
    } else {
        function_configuration(&ConfigView::latest(&record), &arn, None)
    };
    Ok(axum::Json(body).into_response())
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
    dead_letter_config: Option<DeadLetterInput>,
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
    // An empty TargetArn removes the dead-letter queue.
    let dead_letter = input
        .dead_letter_config
        .map(|d| super::super::dead_letter_target(d.target_arn.as_deref().unwrap_or("")))
        .transpose()?;
    let (role, handler, description) = (input.role, input.handler, input.description);
    let change = move |platform: &Platform, record: &mut FunctionRecord| {
        let c = &mut record.config;
        let handler_changed = handler
            .as_ref()
            .is_some_and(|h| c.handler.as_deref() != Some(h.as_str()));
        let runtime_changed = runtime.is_some_and(|r| r != c.runtime);
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
        if let Some(v) = &dead_letter {
            c.dead_letter_target = v.clone();
        }
        if handler_changed || runtime_changed {
            let package = platform
                .artifacts
                .get(&record.code_sha256_hex)
                .map_err(ApiError::internal)?;
            check_code(platform, &package, record)?;
        }
        Ok(())
    };
    let record = update(&platform, &caller, &name, input.revision_id, change, false).await?;
    Ok(axum::Json(function_configuration(
        &ConfigView::latest(&record),
        &platform.arn(&caller),
        None,
    ))
    .into_response())
}

/// Read-modify-write of a function record by compare-and-set: with a
/// `RevisionId` the caller's view must still be current (else 412); without
/// one, a lost race is retried on the fresh record, so no update is silently
/// dropped. On success the new `$LATEST` snapshot is installed.
pub async fn update(
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
        &FunctionRef {
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

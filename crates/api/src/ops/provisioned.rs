//! PutProvisionedConcurrencyConfig, GetProvisionedConcurrencyConfig,
//! DeleteProvisionedConcurrencyConfig, ListProvisionedConcurrencyConfigs.
//!
//! Provisioned concurrency keeps instances of a published version (or of
//! the version an alias routes to) initialised ahead and never recycled
//! while it is configured. A container function's are sandboxes started
//! and pinned in the pool; a wasm function's instance is made from its
//! compiled module in microseconds per invocation, so its configuration is
//! ready as soon as the version is. `$LATEST` is refused, as AWS refuses it
//! (Decision 15).

use super::resolve::{Qualifier, qualifier};
use super::{blocking, function_ref, parse_json};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_control::validate::FunctionRef;
use nimbus_control::{ProvisionedRecord, StoreError, model};
use nimbus_worker::Code;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutInput {
    provisioned_concurrent_executions: Option<i64>,
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// The function and the qualifier (a version number or an alias) a request
/// names.
fn target(label: &str, query: &HashMap<String, String>) -> Result<(String, String), ApiError> {
    let function = function_ref(label, query.get("Qualifier").map(String::as_str))?;
    let Some(text) = function.qualifier.clone() else {
        return Err(validation(
            "1 validation error detected: Value null at 'qualifier' failed to satisfy \
             constraint: Member must not be null",
        ));
    };
    if let Qualifier::Latest = qualifier(Some(&text))? {
        return Err(ApiError::invalid_parameter(
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
        ));
    }
    Ok((function.name, text))
}

fn not_found_config() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ProvisionedConcurrencyConfigNotFoundException",
        "No Provisioned Concurrency Config found for this function",
    )
}

impl Platform {
    /// The version a qualifier names now: the version itself, or the one an
    /// alias sends the rest of its traffic to.
    fn provisioned_version(&self, tenant: &str, function: &str, qualifier: &str) -> Option<String> {
        if qualifier.parse::<u64>().is_ok() {
            self.snapshots
                .get(tenant, function, qualifier)
                .map(|s| s.version.clone())
        } else {
            self.snapshots
                .alias(tenant, function, qualifier)
                .map(|route| route.primary.clone())
        }
    }

    /// Makes the pool keep what a function's configurations ask for: per
    /// version, the sum of the configurations that name it (directly or
    /// through an alias); versions no configuration names any more are let
    /// go. At start-up, and after every change of a configuration or of an
    /// alias.
    pub(crate) fn apply_provisioned(
        &self,
        tenant: &str,
        function: &str,
        configs: &[ProvisionedRecord],
    ) {
        let Ok(pool) = &self.containers else {
            return;
        };
        let mut wanted: HashMap<String, usize> = HashMap::new();
        for config in configs.iter().filter(|c| c.function == function) {
            if let Some(version) = self.provisioned_version(tenant, function, &config.qualifier) {
                *wanted.entry(version).or_default() += config.requested as usize;
            }
        }
        for version in pool.provisioned_versions(tenant, function) {
            if !wanted.contains_key(&version) {
                pool.deprovision(tenant, function, Some(&version));
            }
        }
        for (version, requested) in wanted {
            let Some(snapshot) = self.snapshots.get(tenant, function, &version) else {
                continue;
            };
            if let Code::Process(dir) = &snapshot.code {
                let dir = dir.clone();
                pool.provision(snapshot, dir, requested);
            }
        }
    }

    /// [`Platform::apply_provisioned`] with the function's configurations
    /// read from the store.
    pub(crate) async fn reprovision(
        self: &Arc<Self>,
        tenant: &str,
        function: &str,
    ) -> Result<(), ApiError> {
        let configs = self.provisioned_of(tenant, function).await?;
        self.apply_provisioned(tenant, function, &configs);
        Ok(())
    }

    /// The configuration as Lambda shows it: counts, status and reason.
    fn provisioned_view(&self, tenant: &str, config: &ProvisionedRecord) -> Value {
        let requested = config.requested as usize;
        let version = self.provisioned_version(tenant, &config.function, &config.qualifier);
        let snapshot = version
            .as_deref()
            .and_then(|v| self.snapshots.get(tenant, &config.function, v));
        let (allocated, failure) = match (&snapshot, &self.containers) {
            // A version's sandboxes serve every configuration that names it.
            (Some(s), Ok(pool)) if matches!(s.code, Code::Process(_)) => {
                match pool.provision_status(tenant, &config.function, &s.version) {
                    Some(status) => (status.allocated.min(requested), status.failure),
                    None => (0, None),
                }
            }
            (Some(_), _) => (requested, None),
            (None, _) => (0, Some("the version it names is gone".to_string())),
        };
        let status = match (&failure, allocated >= requested) {
            (_, true) => "READY",
            (Some(_), false) => "FAILED",
            (None, false) => "IN_PROGRESS",
        };
        let mut view = json!({
            "RequestedProvisionedConcurrentExecutions": config.requested,
            "AllocatedProvisionedConcurrentExecutions": allocated,
            "AvailableProvisionedConcurrentExecutions": allocated,
            "Status": status,
            "LastModified": config.last_modified,
        });
        if let (Some(reason), "FAILED") = (failure, status) {
            view["StatusReason"] = reason.into();
        }
        view
    }

    /// Every configuration of one function.
    pub(crate) async fn provisioned_of(
        self: &Arc<Self>,
        tenant: &str,
        function: &str,
    ) -> Result<Vec<ProvisionedRecord>, ApiError> {
        let (worker, tenant, function) = (self.clone(), tenant.to_string(), function.to_string());
        blocking(move || Ok(worker.store.provisioned_of(&tenant, &function)?)).await
    }
}

/// `PUT /2019-09-30/functions/{FunctionName}/provisioned-concurrency?Qualifier=…`.
pub async fn put(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (function, qualifier) = target(&label, &query)?;
    let input: PutInput = parse_json(&body)?;
    let requested = match input.provisioned_concurrent_executions {
        None => {
            return Err(validation(
                "1 validation error detected: Value null at 'provisionedConcurrentExecutions' \
                 failed to satisfy constraint: Member must not be null",
            ));
        }
        Some(n) if n >= 1 && n <= i64::from(u32::MAX) => n as u32,
        Some(n) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{n}' at 'provisionedConcurrentExecutions' \
                 failed to satisfy constraint: Member must have value greater than or equal to 1"
            )));
        }
    };
    let tenant = caller.account_id.clone();
    let named = FunctionRef {
        name: function.clone(),
        qualifier: Some(qualifier.clone()),
    };
    if platform
        .provisioned_version(&tenant, &function, &qualifier)
        .is_none()
    {
        return Err(platform.function_not_found(&caller, &named));
    }
    // Provisioned instances come out of the function's reservation, or
    // out of the account's unreserved concurrency, leaving its minimum;
    // a container function's must also fit the host.
    let others: u64 = platform
        .provisioned_of(&tenant, &function)
        .await?
        .iter()
        .filter(|r| r.qualifier != qualifier)
        .map(|r| u64::from(r.requested))
        .sum();
    let total = others + u64::from(requested);
    match platform.concurrency.reserved(&tenant, &function) {
        Some(reserved) if total > u64::from(reserved) => {
            return Err(ApiError::invalid_parameter(format!(
                "Requested Provisioned Concurrency should not be greater than the \
                 reservedConcurrentExecution for function ({reserved})"
            )));
        }
        Some(_) => {}
        None => {
            let limits = platform.concurrency.limits();
            let available = platform
                .concurrency
                .unreserved(&tenant)
                .saturating_sub(limits.unreserved_min);
            if total > u64::from(available) {
                return Err(ApiError::invalid_parameter(format!(
                    "Specified ConcurrentExecutions for function is greater than account's \
                     unreserved concurrency less its minimum of [{}]: at most {available}",
                    limits.unreserved_min
                )));
            }
        }
    }
    let is_process = platform
        .provisioned_version(&tenant, &function, &qualifier)
        .and_then(|v| platform.snapshots.get(&tenant, &function, &v))
        .is_some_and(|s| matches!(s.code, Code::Process(_)));
    if let (true, Ok(pool)) = (is_process, &platform.containers) {
        let host = pool.capacity().sandboxes as u64;
        if total > host {
            return Err(ApiError::invalid_parameter(format!(
                "Requested Provisioned Concurrency ({total} for the function) is more than this \
                 host's {host} sandboxes"
            )));
        }
    }
    let config = ProvisionedRecord {
        function,
        qualifier,
        requested,
        last_modified: model::lambda_timestamp(time::OffsetDateTime::now_utc()),
    };
    let (worker, saved, owner) = (platform.clone(), config.clone(), tenant.clone());
    blocking(move || match worker.store.put_provisioned(&owner, &saved) {
        Err(StoreError::NotFound(_)) => Err(worker.function_not_found(&caller, &named)),
        other => Ok(other?),
    })
    .await?;
    platform.reprovision(&tenant, &config.function).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(platform.provisioned_view(&tenant, &config)),
    )
        .into_response())
}

/// `GET /2019-09-30/functions/{FunctionName}/provisioned-concurrency?Qualifier=…`;
/// with `?List=ALL` (the same route) it is ListProvisionedConcurrencyConfigs.
pub async fn get(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if query.get("List").is_some_and(|l| l == "ALL") {
        return list(State(platform), Extension(caller), Path(label)).await;
    }
    let (function, qualifier) = target(&label, &query)?;
    let tenant = &caller.account_id;
    let configs = platform.provisioned_of(tenant, &function).await?;
    let config = configs
        .iter()
        .find(|r| r.qualifier == qualifier)
        .ok_or_else(not_found_config)?;
    Ok(axum::Json(platform.provisioned_view(tenant, config)).into_response())
}

/// `DELETE /2019-09-30/functions/{FunctionName}/provisioned-concurrency?Qualifier=…`.
pub async fn delete(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (function, qualifier) = target(&label, &query)?;
    let tenant = caller.account_id.clone();
    let (worker, owner, name, q) = (
        platform.clone(),
        tenant.clone(),
        function.clone(),
        qualifier.clone(),
    );
    let removed = blocking(move || Ok(worker.store.delete_provisioned(&owner, &name, &q)?)).await?;
    if !removed {
        return Err(not_found_config());
    }
    platform.reprovision(&tenant, &function).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /2019-09-30/functions/{FunctionName}/provisioned-concurrency?List=ALL`.
pub async fn list(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
) -> Result<Response, ApiError> {
    let function = function_ref(&label, None)?;
    let tenant = &caller.account_id;
    let (worker, owner, name) = (platform.clone(), tenant.clone(), function.name.clone());
    let exists = blocking(move || Ok(worker.store.get(&owner, &name)?.is_some())).await?;
    if !exists {
        return Err(platform.function_not_found(&caller, &function));
    }
    let configs: Vec<Value> = platform
        .provisioned_of(tenant, &function.name)
        .await?
        .iter()
        .map(|config| {
            let mut view = platform.provisioned_view(tenant, config);
            view["FunctionArn"] = platform
                .arn(&caller)
                .qualified_arn(&config.function, &config.qualifier)
                .into();
            view
        })
        .collect();
    Ok(axum::Json(json!({ "ProvisionedConcurrencyConfigs": configs })).into_response())
}

//! PutFunctionEventInvokeConfig, UpdateFunctionEventInvokeConfig,
//! GetFunctionEventInvokeConfig, DeleteFunctionEventInvokeConfig,
//! ListFunctionEventInvokeConfigs: how asynchronous invocations of a
//! function, version or alias are retried, and where their records go.
//!
//! The configuration that applies to an async invocation is the one of the
//! qualifier it was invoked with (`$LATEST` when unqualified), read by the
//! dispatcher from [`EventConfigs`], the platform's copy of the store's.

use super::functions::max_items_within;
use super::resolve::{Qualifier, qualifier};
use super::{Deliverable, blocking, function_ref, parse_json};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_control::validate::FunctionRef;
use nimbus_control::{EventInvokeConfig, FunctionStore, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most configurations one ListFunctionEventInvokeConfigs page holds.
const LIST_MAX_ITEMS: usize = 50;

/// Each tenant's functions' configurations, looked up without allocating
/// (the dispatcher asks for every attempt).
type ByTenant = HashMap<String, HashMap<String, Arc<[EventInvokeConfig]>>>;

/// The platform's copy of every function's event-invoke configurations,
/// replaced from the store whenever one of that function's changes.
#[derive(Default)]
pub struct EventConfigs {
    held: Mutex<ByTenant>,
}

impl EventConfigs {
    /// Loads every stored configuration.
    pub fn load(store: &dyn FunctionStore) -> Result<EventConfigs, StoreError> {
        let mut loaded: HashMap<String, HashMap<String, Vec<EventInvokeConfig>>> = HashMap::new();
        for (tenant, config) in store.all_event_invoke_configs()? {
            loaded
                .entry(tenant)
                .or_default()
                .entry(config.function.clone())
                .or_default()
                .push(config);
        }
        let held = loaded
            .into_iter()
            .map(|(tenant, functions)| {
                let functions = functions.into_iter().map(|(f, c)| (f, c.into())).collect();
                (tenant, functions)
            })
            .collect();
        Ok(EventConfigs {
            held: Mutex::new(held),
        })
    }

    /// The configuration in force for `qualifier` (the default if none).
    pub fn get(&self, tenant: &str, function: &str, qualifier: &str) -> EventInvokeConfig {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(tenant)
            .and_then(|functions| functions.get(function))
            .and_then(|configs| configs.iter().find(|c| c.qualifier == qualifier))
            .cloned()
            .unwrap_or_else(|| EventInvokeConfig::default_for(function, qualifier))
    }

    /// Re-reads one function's configurations from the store. Blocking.
    pub fn reload(
        &self,
        store: &dyn FunctionStore,
        tenant: &str,
        function: &str,
    ) -> Result<(), StoreError> {
        let configs = store.event_invoke_configs_of(tenant, function)?;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if configs.is_empty() {
            if let Some(functions) = held.get_mut(tenant) {
                functions.remove(function);
                if functions.is_empty() {
                    held.remove(tenant);
                }
            }
        } else {
            held.entry(tenant.to_string())
                .or_default()
                .insert(function.to_string(), configs.into());
        }
        Ok(())
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Input {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationInput>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DestinationInput {
    on_success: Option<OneDestination>,
    on_failure: Option<OneDestination>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct OneDestination {
    destination: Option<String>,
}

fn validation(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// Checks a value against the model's range, with Lambda's message.
fn in_range(value: i64, member: &str, min: i64, max: i64) -> Result<u32, ApiError> {
    if value < min {
        return Err(validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
             constraint: Member must have value greater than or equal to {min}"
        )));
    }
    if value > max {
        return Err(validation(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
             constraint: Member must have value less than or equal to {max}"
        )));
    }
    Ok(value as u32)
}

/// A destination: one of the built-in queues or a function; an empty one
/// is none.
fn destination(arn: Option<String>, which: &str) -> Result<Option<String>, ApiError> {
    let what = format!("{which} destination");
    super::delivery_target(
        &arn.unwrap_or_default(),
        &what,
        Deliverable::QueueOrFunction,
    )
}

/// Applies `input` onto `config`: every member given replaces the held one.
fn apply(config: &mut EventInvokeConfig, input: Input) -> Result<(), ApiError> {
    if let Some(n) = input.maximum_retry_attempts {
        config.maximum_retry_attempts = Some(in_range(n, "maximumRetryAttempts", 0, 2)?);
    }
    if let Some(n) = input.maximum_event_age_in_seconds {
        config.maximum_event_age_s = Some(in_range(n, "maximumEventAgeInSeconds", 60, 21_600)?);
    }
    if let Some(d) = input.destination_config {
        if let Some(s) = d.on_success {
            config.on_success = destination(s.destination, "OnSuccess")?;
        }
        if let Some(f) = d.on_failure {
            config.on_failure = destination(f.destination, "OnFailure")?;
        }
    }
    Ok(())
}

/// The function and the qualifier a request names (`$LATEST` when none).
fn target(label: &str, query: &HashMap<String, String>) -> Result<(FunctionRef, String), ApiError> {
    let function = function_ref(label, query.get("Qualifier").map(String::as_str))?;
    let shown = match qualifier(function.qualifier.as_deref())? {
        Qualifier::Latest => "$LATEST".to_string(),
        Qualifier::Version(n) => n.to_string(),
        Qualifier::Alias(a) => a,
    };
    Ok((function, shown))
}

fn no_config(platform: &Platform, caller: &Caller, function: &str, qualifier: &str) -> ApiError {
    ApiError::not_found(format!(
        "The function {} doesn't have an EventInvokeConfig",
        platform.arn(caller).qualified_arn(function, qualifier)
    ))
}

impl Platform {
    /// The configuration as Lambda shows it.
    fn event_invoke_view(&self, caller: &Caller, config: &EventInvokeConfig) -> Value {
        let mut view = json!({
            "LastModified": config.last_modified,
            "FunctionArn": self.arn(caller).qualified_arn(&config.function, &config.qualifier),
            "DestinationConfig": {
                "OnSuccess": config.on_success.as_ref().map_or(json!({}), |d| json!({ "Destination": d })),
                "OnFailure": config.on_failure.as_ref().map_or(json!({}), |d| json!({ "Destination": d })),
            },
        });
        if let Some(n) = config.maximum_retry_attempts {
            view["MaximumRetryAttempts"] = n.into();
        }
        if let Some(n) = config.maximum_event_age_s {
            view["MaximumEventAgeInSeconds"] = n.into();
        }
        view
    }

    /// Whether the function, version or alias exists. Blocking.
    fn qualifier_exists(
        &self,
        tenant: &str,
        function: &str,
        qualifier: &str,
    ) -> Result<bool, StoreError> {
        Ok(match qualifier.parse::<u64>() {
            _ if qualifier == "$LATEST" => self.store.get(tenant, function)?.is_some(),
            Ok(n) => self.store.get_version(tenant, function, n)?.is_some(),
            Err(_) => self.store.get_alias(tenant, function, qualifier)?.is_some(),
        })
    }
}

/// Writes `input` over the held configuration (`merge`) or over none.
async fn write(
    platform: Arc<Platform>,
    caller: Caller,
    label: String,
    query: HashMap<String, String>,
    body: Bytes,
    merge: bool,
) -> Result<Response, ApiError> {
    let (function, shown) = target(&label, &query)?;
    let input: Input = parse_json(&body)?;
    let mut config = if merge {
        platform
            .event_configs
            .get(&caller.account_id, &function.name, &shown)
    } else {
        EventInvokeConfig::default_for(&function.name, &shown)
    };
    apply(&mut config, input)?;
    config.last_modified = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0);
    let (worker, tenant, saved) = (platform.clone(), caller.account_id.clone(), config.clone());
    let written = blocking(move || {
        if !worker.qualifier_exists(&tenant, &saved.function, &saved.qualifier)? {
            return Ok(false);
        }
        match worker.store.put_event_invoke_config(&tenant, &saved) {
            Ok(()) => {}
            Err(StoreError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        worker
            .event_configs
            .reload(worker.store.as_ref(), &tenant, &saved.function)?;
        Ok(true)
    })
    .await?;
    if !written {
        return Err(platform.function_not_found(&caller, &function));
    }
    Ok(axum::Json(platform.event_invoke_view(&caller, &config)).into_response())
}

/// `PUT /2019-09-25/functions/{FunctionName}/event-invoke-config`: replaces
/// the configuration; members left out are removed.
pub async fn put(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(platform, caller, label, query, body, false).await
}

/// `POST /2019-09-25/functions/{FunctionName}/event-invoke-config`: changes
/// the members given and keeps the rest.
pub async fn update(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(platform, caller, label, query, body, true).await
}

/// The stored configurations of a function, after checking it exists.
async fn stored(
    platform: &Arc<Platform>,
    caller: &Caller,
    function: &FunctionRef,
) -> Result<Vec<EventInvokeConfig>, ApiError> {
    let (worker, tenant, name) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    let found = blocking(move || {
        if worker.store.get(&tenant, &name)?.is_none() {
            return Ok(None);
        }
        Ok(Some(worker.store.event_invoke_configs_of(&tenant, &name)?))
    })
    .await?;
    found.ok_or_else(|| {
        platform.function_not_found(
            caller,
            &FunctionRef {
                name: function.name.clone(),
                qualifier: None,
            },
        )
    })
}

/// `GET /2019-09-25/functions/{FunctionName}/event-invoke-config`.
pub async fn get(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (function, shown) = target(&label, &query)?;
    let config = stored(&platform, &caller, &function)
        .await?
        .into_iter()
        .find(|c| c.qualifier == shown)
        .ok_or_else(|| no_config(&platform, &caller, &function.name, &shown))?;
    Ok(axum::Json(platform.event_invoke_view(&caller, &config)).into_response())
}

/// `DELETE /2019-09-25/functions/{FunctionName}/event-invoke-config`.
pub async fn delete(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (function, shown) = target(&label, &query)?;
    let (worker, tenant, name, q) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
        shown.clone(),
    );
    let removed = blocking(move || {
        let removed = worker
            .store
            .delete_event_invoke_config(&tenant, &name, &q)?;
        worker
            .event_configs
            .reload(worker.store.as_ref(), &tenant, &name)?;
        Ok(removed)
    })
    .await?;
    if !removed {
        return Err(no_config(&platform, &caller, &function.name, &shown));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /2019-09-25/functions/{FunctionName}/event-invoke-config/list`.
pub async fn list(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = function_ref(&label, None)?;
    if function.qualifier.is_some() {
        return Err(ApiError::invalid_parameter(
            "ListFunctionEventInvokeConfigs takes a function, not one of its versions or aliases",
        ));
    }
    let max_items = max_items_within(&query, LIST_MAX_ITEMS, LIST_MAX_ITEMS)?;
    let configs = stored(&platform, &caller, &function).await?;
    // The marker is the last qualifier of the previous page.
    let after = query.get("Marker").filter(|m| !m.is_empty());
    let rest: Vec<&EventInvokeConfig> = configs
        .iter()
        .filter(|c| after.is_none_or(|m| c.qualifier.as_str() > m.as_str()))
        .collect();
    let page: Vec<Value> = rest
        .iter()
        .take(max_items)
        .map(|c| platform.event_invoke_view(&caller, c))
        .collect();
    let mut answer = json!({ "FunctionEventInvokeConfigs": page });
    if rest.len() > max_items {
        answer["NextMarker"] = rest[max_items - 1].qualifier.clone().into();
    }
    Ok(axum::Json(answer).into_response())
}

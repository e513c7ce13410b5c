//! CreateAlias, GetAlias, UpdateAlias, DeleteAlias, ListAliases.
//!
//! An alias routes to one version, or splits its traffic with a second
//! (`RoutingConfig.AdditionalVersionWeights`). The store checks, in the same
//! transaction as the write, that the versions exist; the new route is then
//! installed on the worker, ordered by the alias' revision.

use super::functions::max_items;
use super::resolve::{Qualifier, alias_name, qualifier};
use super::{blocking, parse_json};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::shapes::alias_configuration;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_control::validate::{self, FunctionRef};
use nimbus_control::{AliasRecord, StoreError, model};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoutingInput {
    additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasInput {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingInput>,
    revision_id: Option<String>,
}

fn version_name(text: &str) -> Result<String, ApiError> {
    match qualifier(Some(text))? {
        Qualifier::Latest => Ok("$LATEST".into()),
        Qualifier::Version(n) => Ok(n.to_string()),
        Qualifier::Alias(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            format!(
                "1 validation error detected: Value '{text}' at 'functionVersion' failed to satisfy constraint: Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)"
            ),
        )),
    }
}

/// Checks a routing configuration against the primary version.
fn routing(primary: &str, input: Option<RoutingInput>) -> Result<Option<(String, f64)>, ApiError> {
    let weights = input
        .and_then(|r| r.additional_version_weights)
        .unwrap_or_default();
    let mut entries = weights.into_iter();
    let Some((version, weight)) = entries.next() else {
        return Ok(None);
    };
    if entries.next().is_some() {
        return Err(ApiError::invalid_parameter(
            "RoutingConfig may name only one additional version",
        ));
    }
    if !(0.0..=1.0).contains(&weight) || weight.is_nan() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            format!(
                "1 validation error detected: Value '{weight}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Member must have value between 0.0 and 1.0"
            ),
        ));
    }
    let version = version_name(&version)?;
    if version == "$LATEST" || primary == "$LATEST" {
        return Err(ApiError::invalid_parameter(
            "$LATEST is not supported for an alias pointing to more than 1 version",
        ));
    }
    if version == primary {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid function version {version}: the additional version must differ from the alias' primary version"
        )));
    }
    Ok(Some((version, weight)))
}

fn store_error(
    platform: &Platform,
    caller: &Caller,
    function: &str,
    alias: &str,
    e: StoreError,
) -> ApiError {
    match e {
        StoreError::NotFound(_) => platform.function_not_found(
            caller,
            &FunctionRef {
                name: function.into(),
                qualifier: None,
            },
        ),
        StoreError::VersionNotFound { version, .. } => ApiError::not_found(format!(
            "Function not found: {}",
            platform.arn(caller).qualified_arn(function, &version)
        )),
        StoreError::AliasExists(_) => ApiError::new(
            StatusCode::CONFLICT,
            "ResourceConflictException",
            format!(
                "Alias already exists: {}",
                platform.arn(caller).qualified_arn(function, alias)
            ),
        ),
        StoreError::AliasNotFound(_) => alias_not_found(platform, caller, function, alias),
        StoreError::StaleAlias(_) => ApiError::stale_revision(),
        other => other.into(),
    }
}

fn alias_not_found(platform: &Platform, caller: &Caller, function: &str, alias: &str) -> ApiError {
    ApiError::not_found(format!(
        "Alias not found: {}",
        platform.arn(caller).qualified_arn(function, alias)
    ))
}

/// `POST /2015-03-31/functions/{FunctionName}/aliases`.
pub async fn create(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: AliasInput = parse_json(&body)?;
    let function = validate::function_ref(&label)?.name;
    let name = input
        .name
        .ok_or_else(|| ApiError::invalid_parameter("Name is required"))?;
    alias_name(&name)?;
    let primary = version_name(
        &input
            .function_version
            .ok_or_else(|| ApiError::invalid_parameter("FunctionVersion is required"))?,
    )?;
    let description = input.description.unwrap_or_default();
    validate::description(&description)?;
    let alias = AliasRecord {
        name: name.clone(),
        additional_version: routing(&primary, input.routing_config)?,
        function_version: primary,
        description,
        revision: 1,
        revision_id: model::new_revision_id(),
    };
    let (worker, who, f) = (platform.clone(), caller.clone(), function.clone());
    let stored = alias.clone();
    blocking(move || {
        let tenant = &who.account_id;
        worker
            .store
            .create_alias(tenant, &f, &stored)
            .map_err(|e| store_error(&worker, &who, &f, &stored.name, e))?;
        worker.install_alias(tenant, &f, &stored);
        Ok(())
    })
    .await?;
    let body = alias_configuration(&function, &alias, &platform.arn(&caller));
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /2015-03-31/functions/{FunctionName}/aliases/{Name}`.
pub async fn get(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path((label, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let function = validate::function_ref(&label)?.name;
    let (worker, tenant, f, a) = (
        platform.clone(),
        caller.account_id.clone(),
        function.clone(),
        name.clone(),
    );
    let alias = blocking(move || Ok(worker.store.get_alias(&tenant, &f, &a)?))
        .await?
        .ok_or_else(|| alias_not_found(&platform, &caller, &function, &name))?;
    Ok(axum::Json(alias_configuration(
        &function,
        &alias,
        &platform.arn(&caller),
    ))
    .into_response())
}

/// `PUT /2015-03-31/functions/{FunctionName}/aliases/{Name}`.
pub async fn update(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path((label, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: AliasInput = parse_json(&body)?;
    let function = validate::function_ref(&label)?.name;
    let primary = input
        .function_version
        .as_deref()
        .map(version_name)
        .transpose()?;
    if let Some(d) = &input.description {
        validate::description(d)?;
    }
    let (worker, who, f, a) = (
        platform.clone(),
        caller.clone(),
        function.clone(),
        name.clone(),
    );
    let routing_input = input.routing_config;
    let (description, revision_id) = (input.description, input.revision_id);
    let alias = blocking(move || {
        let tenant = &who.account_id;
        let fail = |e| store_error(&worker, &who, &f, &a, e);
        let current = worker
            .store
            .get_alias(tenant, &f, &a)?
            .ok_or_else(|| fail(StoreError::AliasNotFound(a.clone())))?;
        if revision_id
            .as_ref()
            .is_some_and(|r| *r != current.revision_id)
        {
            return Err(ApiError::stale_revision());
        }
        let mut next = current.clone();
        if let Some(p) = primary {
            next.function_version = p;
        }
        if let Some(d) = description {
            next.description = d;
        }
        // Without a new RoutingConfig the old split stays, checked against
        // the (possibly new) primary version.
        let kept = next.additional_version.clone().map(|(v, w)| RoutingInput {
            additional_version_weights: Some(BTreeMap::from([(v, w)])),
        });
        next.additional_version = routing(&next.function_version, routing_input.or(kept))?;
        next.revision = current.revision + 1;
        next.revision_id = model::new_revision_id();
        worker
            .store
            .update_alias(tenant, &f, &next, current.revision)
            .map_err(fail)?;
        worker.install_alias(tenant, &f, &next);
        Ok(next)
    })
    .await?;
    // Provisioned concurrency on the alias follows it to its new version.
    platform.reprovision(&caller.account_id, &function).await?;
    Ok(axum::Json(alias_configuration(
        &function,
        &alias,
        &platform.arn(&caller),
    ))
    .into_response())
}

/// `DELETE /2015-03-31/functions/{FunctionName}/aliases/{Name}`.
pub async fn delete(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path((label, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let function = validate::function_ref(&label)?.name;
    let (worker, who, f, a) = (
        platform.clone(),
        caller.clone(),
        function.clone(),
        name.clone(),
    );
    blocking(move || {
        let tenant = &who.account_id;
        match worker.store.delete_alias(tenant, &f, &a) {
            // Deleting an absent alias succeeds, as Lambda's does.
            Ok(()) | Err(StoreError::AliasNotFound(_)) => {
                worker.snapshots.remove_alias(tenant, &f, &a);
                // Its provisioned concurrency goes with it.
                worker.store.delete_provisioned(tenant, &f, &a)?;
                worker
                    .event_configs
                    .reload(worker.store.as_ref(), tenant, &f)?;
                Ok(())
            }
            Err(e) => Err(store_error(&worker, &who, &f, &a, e)),
        }
    })
    .await?;
    platform.reprovision(&caller.account_id, &function).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /2015-03-31/functions/{FunctionName}/aliases`.
pub async fn list(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = validate::function_ref(&label)?;
    let max_items = max_items(&query)?;
    let marker = query.get("Marker").cloned().filter(|m| !m.is_empty());
    let only = query
        .get("FunctionVersion")
        .map(|v| version_name(v))
        .transpose()?;
    let (worker, tenant, f) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    let found = blocking(move || {
        if worker.store.get(&tenant, &f)?.is_none() {
            return Ok(None);
        }
        Ok(Some(worker.store.list_aliases(
            &tenant,
            &f,
            marker.as_deref(),
            usize::MAX >> 1,
        )?))
    })
    .await?;
    let mut aliases = found.ok_or_else(|| platform.function_not_found(&caller, &function))?;
    if let Some(v) = only {
        aliases.retain(|a| {
            a.function_version == v || a.additional_version.as_ref().is_some_and(|(x, _)| *x == v)
        });
    }
    let more = aliases.len() > max_items;
    aliases.truncate(max_items);
    let arn = platform.arn(&caller);
    let shown: Vec<_> = aliases
        .iter()
        .map(|a| alias_configuration(&function.name, a, &arn))
        .collect();
    let mut body = json!({ "Aliases": shown });
    if more && let Some(last) = aliases.last() {
        body["NextMarker"] = json!(last.name);
    }
    Ok(axum::Json(body).into_response())
}

//! The route table: every operation of the Lambda API at the method and
//! path its botocore model gives, so any AWS client's request finds its
//! handler — or, for operations not built yet, a clear "not implemented"
//! answer rather than a confusing 404.

use crate::Platform;
use crate::auth::authenticate;
use crate::error::ApiError;
use crate::ops::functions::{read, update};
use crate::ops::{
    account, aliases, concurrency, event_invoke, functions, invocations, invoke, logs, provisioned,
    tags, versions,
};
use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{MethodFilter, MethodRouter, on};
use std::collections::HashSet;
use std::sync::Arc;

/// Every operation of Lambda's API model (2015-03-31): method, request URI
/// (with any distinguishing query), operation name.
pub const OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/2014-11-13/functions/{FunctionName}/invoke-async",
        "InvokeAsync",
    ),
    (
        "GET",
        "/2015-03-31/event-source-mappings",
        "ListEventSourceMappings",
    ),
    (
        "POST",
        "/2015-03-31/event-source-mappings",
        "CreateEventSourceMapping",
    ),
    (
        "DELETE",
        "/2015-03-31/event-source-mappings/{UUID}",
        "DeleteEventSourceMapping",
    ),
    (
        "GET",
        "/2015-03-31/event-source-mappings/{UUID}",
        "GetEventSourceMapping",
    ),
    (
        "PUT",
        "/2015-03-31/event-source-mappings/{UUID}",
        "UpdateEventSourceMapping",
    ),
    ("GET", "/2015-03-31/functions", "ListFunctions"),
    ("POST", "/2015-03-31/functions", "CreateFunction"),
    (
        "DELETE",
        "/2015-03-31/functions/{FunctionName}",
        "DeleteFunction",
    ),
    ("GET", "/2015-03-31/functions/{FunctionName}", "GetFunction"),
    (
        "GET",
        "/2015-03-31/functions/{FunctionName}/aliases",
        "ListAliases",
    ),
    (
        "POST",
        "/2015-03-31/functions/{FunctionName}/aliases",
        "CreateAlias",
    ),
    (
        "DELETE",
        "/2015-03-31/functions/{FunctionName}/aliases/{Name}",
        "DeleteAlias",
    ),
    (
        "GET",
        "/2015-03-31/functions/{FunctionName}/aliases/{Name}",
        "GetAlias",
    ),
    (
        "PUT",
        "/2015-03-31/functions/{FunctionName}/aliases/{Name}",
        "UpdateAlias",
    ),
    (
        "PUT",
        "/2015-03-31/functions/{FunctionName}/code",
        "UpdateFunctionCode",
    ),
    (
        "GET",
        "/2015-03-31/functions/{FunctionName}/configuration",
        "GetFunctionConfiguration",
    ),
    (
        "PUT",
        "/2015-03-31/functions/{FunctionName}/configuration",
        "UpdateFunctionConfiguration",
    ),
    (
        "POST",
        "/2015-03-31/functions/{FunctionName}/invocations",
        "Invoke",
    ),
    (
        "GET",
        "/2015-03-31/functions/{FunctionName}/policy",
        "GetPolicy",
    ),
    (
        "POST",
        "/2015-03-31/functions/{FunctionName}/policy",
        "AddPermission",
    ),
    (
        "DELETE",
        "/2015-03-31/functions/{FunctionName}/policy/{StatementId}",
        "RemovePermission",
    ),
    (
        "GET",
        "/2015-03-31/functions/{FunctionName}/versions",
        "ListVersionsByFunction",
    ),
    (
        "POST",
        "/2015-03-31/functions/{FunctionName}/versions",
        "PublishVersion",
    ),
    ("GET", "/2016-08-19/account-settings", "GetAccountSettings"),
    ("DELETE", "/2017-03-31/tags/{Resource}", "UntagResource"),
    ("GET", "/2017-03-31/tags/{Resource}", "ListTags"),
    ("POST", "/2017-03-31/tags/{Resource}", "TagResource"),
    (
        "DELETE",
        "/2017-10-31/functions/{FunctionName}/concurrency",
        "DeleteFunctionConcurrency",
    ),
    (
        "PUT",
        "/2017-10-31/functions/{FunctionName}/concurrency",
        "PutFunctionConcurrency",
    ),
    ("GET", "/2018-10-31/layers", "ListLayers"),
    (
        "GET",
        "/2018-10-31/layers/{LayerName}/versions",
        "ListLayerVersions",
    ),
    (
        "POST",
        "/2018-10-31/layers/{LayerName}/versions",
        "PublishLayerVersion",
    ),
    (
        "DELETE",
        "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}",
        "DeleteLayerVersion",
    ),
    (
        "GET",
        "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}",
        "GetLayerVersion",
    ),
    (
        "GET",
        "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy",
        "GetLayerVersionPolicy",
    ),
    (
        "POST",
        "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy",
        "AddLayerVersionPermission",
    ),
    (
        "DELETE",
        "/2018-10-31/layers/{LayerName}/versions/{VersionNumber}/policy/{StatementId}",
        "RemoveLayerVersionPermission",
    ),
    (
        "GET",
        "/2018-10-31/layers?find=LayerVersion",
        "GetLayerVersionByArn",
    ),
    (
        "DELETE",
        "/2019-09-25/functions/{FunctionName}/event-invoke-config",
        "DeleteFunctionEventInvokeConfig",
    ),
    (
        "GET",
        "/2019-09-25/functions/{FunctionName}/event-invoke-config",
        "GetFunctionEventInvokeConfig",
    ),
    (
        "POST",
        "/2019-09-25/functions/{FunctionName}/event-invoke-config",
        "UpdateFunctionEventInvokeConfig",
    ),
    (
        "PUT",
        "/2019-09-25/functions/{FunctionName}/event-invoke-config",
        "PutFunctionEventInvokeConfig",
    ),
    (
        "GET",
        "/2019-09-25/functions/{FunctionName}/event-invoke-config/list",
        "ListFunctionEventInvokeConfigs",
    ),
    (
        "GET",
        "/2019-09-30/functions/{FunctionName}/concurrency",
        "GetFunctionConcurrency",
    ),
    (
        "DELETE",
        "/2019-09-30/functions/{FunctionName}/provisioned-concurrency",
        "DeleteProvisionedConcurrencyConfig",
    ),
    (
        "GET",
        "/2019-09-30/functions/{FunctionName}/provisioned-concurrency",
        "GetProvisionedConcurrencyConfig",
    ),
    (
        "PUT",
        "/2019-09-30/functions/{FunctionName}/provisioned-concurrency",
        "PutProvisionedConcurrencyConfig",
    ),
    (
        "GET",
        "/2019-09-30/functions/{FunctionName}/provisioned-concurrency?List=ALL",
        "ListProvisionedConcurrencyConfigs",
    ),
    (
        "GET",
        "/2020-04-22/code-signing-configs",
        "ListCodeSigningConfigs",
    ),
    (
        "POST",
        "/2020-04-22/code-signing-configs",
        "CreateCodeSigningConfig",
    ),
    (
        "DELETE",
        "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}",
        "DeleteCodeSigningConfig",
    ),
    (
        "GET",
        "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}",
        "GetCodeSigningConfig",
    ),
    (
        "PUT",
        "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}",
        "UpdateCodeSigningConfig",
    ),
    (
        "GET",
        "/2020-04-22/code-signing-configs/{CodeSigningConfigArn}/functions",
        "ListFunctionsByCodeSigningConfig",
    ),
    (
        "DELETE",
        "/2020-06-30/functions/{FunctionName}/code-signing-config",
        "DeleteFunctionCodeSigningConfig",
    ),
    (
        "GET",
        "/2020-06-30/functions/{FunctionName}/code-signing-config",
        "GetFunctionCodeSigningConfig",
    ),
    (
        "PUT",
        "/2020-06-30/functions/{FunctionName}/code-signing-config",
        "PutFunctionCodeSigningConfig",
    ),
    (
        "GET",
        "/2021-07-20/functions/{FunctionName}/runtime-management-config",
        "GetRuntimeManagementConfig",
    ),
    (
        "PUT",
        "/2021-07-20/functions/{FunctionName}/runtime-management-config",
        "PutRuntimeManagementConfig",
    ),
    (
        "DELETE",
        "/2021-10-31/functions/{FunctionName}/url",
        "DeleteFunctionUrlConfig",
    ),
    (
        "GET",
        "/2021-10-31/functions/{FunctionName}/url",
        "GetFunctionUrlConfig",
    ),
    (
        "POST",
        "/2021-10-31/functions/{FunctionName}/url",
        "CreateFunctionUrlConfig",
    ),
    (
        "PUT",
        "/2021-10-31/functions/{FunctionName}/url",
        "UpdateFunctionUrlConfig",
    ),
    (
        "GET",
        "/2021-10-31/functions/{FunctionName}/urls",
        "ListFunctionUrlConfigs",
    ),
    (
        "POST",
        "/2021-11-15/functions/{FunctionName}/response-streaming-invocations",
        "InvokeWithResponseStream",
    ),
    (
        "GET",
        "/2024-08-31/functions/{FunctionName}/recursion-config",
        "GetFunctionRecursionConfig",
    ),
    (
        "PUT",
        "/2024-08-31/functions/{FunctionName}/recursion-config",
        "PutFunctionRecursionConfig",
    ),
    (
        "GET",
        "/2025-11-30/capacity-providers",
        "ListCapacityProviders",
    ),
    (
        "POST",
        "/2025-11-30/capacity-providers",
        "CreateCapacityProvider",
    ),
    (
        "DELETE",
        "/2025-11-30/capacity-providers/{CapacityProviderName}",
        "DeleteCapacityProvider",
    ),
    (
        "GET",
        "/2025-11-30/capacity-providers/{CapacityProviderName}",
        "GetCapacityProvider",
    ),
    (
        "PUT",
        "/2025-11-30/capacity-providers/{CapacityProviderName}",
        "UpdateCapacityProvider",
    ),
    (
        "GET",
        "/2025-11-30/capacity-providers/{CapacityProviderName}/function-versions",
        "ListFunctionVersionsByCapacityProvider",
    ),
    (
        "GET",
        "/2025-11-30/functions/{FunctionName}/function-scaling-config",
        "GetFunctionScalingConfig",
    ),
    (
        "PUT",
        "/2025-11-30/functions/{FunctionName}/function-scaling-config",
        "PutFunctionScalingConfig",
    ),
    (
        "POST",
        "/2025-12-01/durable-execution-callbacks/{CallbackId}/fail",
        "SendDurableExecutionCallbackFailure",
    ),
    (
        "POST",
        "/2025-12-01/durable-execution-callbacks/{CallbackId}/heartbeat",
        "SendDurableExecutionCallbackHeartbeat",
    ),
    (
        "POST",
        "/2025-12-01/durable-execution-callbacks/{CallbackId}/succeed",
        "SendDurableExecutionCallbackSuccess",
    ),
    (
        "GET",
        "/2025-12-01/durable-executions/{DurableExecutionArn}",
        "GetDurableExecution",
    ),
    (
        "POST",
        "/2025-12-01/durable-executions/{DurableExecutionArn}/checkpoint",
        "CheckpointDurableExecution",
    ),
    (
        "GET",
        "/2025-12-01/durable-executions/{DurableExecutionArn}/history",
        "GetDurableExecutionHistory",
    ),
    (
        "GET",
        "/2025-12-01/durable-executions/{DurableExecutionArn}/state",
        "GetDurableExecutionState",
    ),
    (
        "POST",
        "/2025-12-01/durable-executions/{DurableExecutionArn}/stop",
        "StopDurableExecution",
    ),
    (
        "GET",
        "/2025-12-01/functions/{FunctionName}/durable-executions",
        "ListDurableExecutionsByFunction",
    ),
];

/// nimbus' own extensions, signed like the rest.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/nimbus/2026-11-25/functions/{FunctionName}/logs",
        "GetFunctionLogs",
    ),
    (
        "GET",
        "/nimbus/2026-11-25/invocations/{InvocationId}",
        "GetInvocation",
    ),
    ("GET", "/nimbus/2026-11-25/async-backlog", "GetAsyncBacklog"),
];

fn handler(operation: &str, filter: MethodFilter) -> MethodRouter<Arc<Platform>> {
    match operation {
        "CreateFunction" => on(filter, functions::create),
        "ListFunctions" => on(filter, functions::list),
        "GetFunction" => on(filter, read::get),
        "DeleteFunction" => on(filter, functions::delete),
        "GetFunctionConfiguration" => on(filter, read::get_configuration),
        "UpdateFunctionConfiguration" => on(filter, update::update_configuration),
        "UpdateFunctionCode" => on(filter, update::update_code),
        "PublishVersion" => on(filter, versions::publish_version),
        "ListVersionsByFunction" => on(filter, versions::list_versions),
        "CreateAlias" => on(filter, aliases::create),
        "GetAlias" => on(filter, aliases::get),
        "UpdateAlias" => on(filter, aliases::update),
        "DeleteAlias" => on(filter, aliases::delete),
        "ListAliases" => on(filter, aliases::list),
        "TagResource" => on(filter, tags::tag),
        "UntagResource" => on(filter, tags::untag),
        "ListTags" => on(filter, tags::list),
        "Invoke" => on(filter, invoke::invoke),
        "InvokeAsync" => on(filter, invoke::invoke_async),
        "GetAccountSettings" => on(filter, account::get_account_settings),
        "PutFunctionConcurrency" => on(filter, concurrency::put),
        "GetFunctionConcurrency" => on(filter, concurrency::get),
        "DeleteFunctionConcurrency" => on(filter, concurrency::delete),
        "PutProvisionedConcurrencyConfig" => on(filter, provisioned::put),
        "GetProvisionedConcurrencyConfig" => on(filter, provisioned::get),
        "DeleteProvisionedConcurrencyConfig" => on(filter, provisioned::delete),
        "ListProvisionedConcurrencyConfigs" => on(filter, provisioned::list),
        "PutFunctionEventInvokeConfig" => on(filter, event_invoke::put),
        "UpdateFunctionEventInvokeConfig" => on(filter, event_invoke::update),
        "GetFunctionEventInvokeConfig" => on(filter, event_invoke::get),
        "DeleteFunctionEventInvokeConfig" => on(filter, event_invoke::delete),
        "ListFunctionEventInvokeConfigs" => on(filter, event_invoke::list),
        "GetFunctionLogs" => on(filter, logs::tail),
        "GetInvocation" => on(filter, invocations::get),
        "GetAsyncBacklog" => on(filter, invocations::backlog),
        other => {
            let name = other.to_string();
            on(filter, move || not_implemented(name))
        }
    }
}

async fn not_implemented(operation: String) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplementedException",
        format!("{operation} is not offered by this nimbus server yet"),
    )
}

async fn unknown_operation(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!("No operation is served at {method} {}", uri.path()),
    )
}

fn method_filter(method: &str) -> MethodFilter {
    match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        "PATCH" => MethodFilter::PATCH,
        other => panic!("operation table names unknown method {other}"),
    }
}

/// The API router, with admission (size limits and SigV4) on every route.
pub fn router(platform: Arc<Platform>) -> Router {
    let mut router: Router<Arc<Platform>> = Router::new();
    let mut seen = HashSet::new();
    for &(method, uri, operation) in OPERATIONS.iter().chain(EXTENSIONS) {
        // Operations told apart only by their query (`?List=ALL`) share a
        // route; the first in the table holds it.
        let path = uri.split('?').next().unwrap_or(uri).trim_end_matches('/');
        if !seen.insert((method, path)) {
            continue;
        }
        let route = handler(operation, method_filter(method));
        // Older models spell some paths with a trailing slash; serve both.
        router = router
            .route(path, route.clone())
            .route(&format!("{path}/"), route);
    }
    // The built-in queues speak SQS's JSON protocol: every operation is a
    // POST to / naming itself in X-Amz-Target.
    router = router.route("/", axum::routing::post(crate::ops::sqs::dispatch));
    router
        .fallback(unknown_operation)
        .method_not_allowed_fallback(unknown_operation)
        .layer(axum::middleware::from_fn_with_state(
            platform.clone(),
            authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(platform)
}

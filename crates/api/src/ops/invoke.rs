//! Invoke: run a function and answer with its result, as Lambda does — a
//! function's own failure is HTTP 200 with `X-Amz-Function-Error`.

use super::function_ref;
use super::resolve::{Qualifier, qualifier};
use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use nimbus_container::{InvokeRequest, InvokeResult};
use nimbus_control::validate::FunctionRef;
use nimbus_journal::{AcceptError, Accepted, NewInvocation};
use nimbus_worker::Code;
use nimbus_worker::container::{ContainerError, Tier};
use nimbus_worker::snapshot::LATEST;
use nimbus_worker::{FunctionSnapshot, Invocation, Outcome};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How much of the log `LogType=Tail` returns (Lambda's 4 KB).
const LOG_TAIL_BYTES: usize = 4 * 1024;

enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

fn invocation_type(headers: &HeaderMap) -> Result<InvocationType, ApiError> {
    match headers
        .get("x-amz-invocation-type")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None | Some("RequestResponse") => Ok(InvocationType::RequestResponse),
        Some("Event") => Ok(InvocationType::Event),
        Some("DryRun") => Ok(InvocationType::DryRun),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            ),
        )),
    }
}

/// `POST /2015-03-31/functions/{FunctionName}/invocations`.
pub async fn invoke(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    Path(label): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<Response, ApiError> {
    let function = function_ref(&label, query.get("Qualifier").map(String::as_str))?;
    let kind = invocation_type(&headers)?;
    let tail = match headers
        .get("x-amz-log-type")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "LogType {other:?} is not one of None, Tail"
            )));
        }
    };
    let version = route(&platform, &caller, &function)?;
    let (snapshot, pulled) = snapshot(&platform, &caller, &function, &version).await?;
    if snapshot.version != version {
        // Invariant: an invocation runs exactly the version it was routed to.
        return Err(ApiError::internal(format!(
            "routed to version {version} but the worker holds {}",
            snapshot.version
        )));
    }
    if let InvocationType::DryRun = kind {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "Could not parse request body into json: the payload is not valid JSON",
        ));
    }
    if let InvocationType::Event = kind {
        let shown = function.qualifier.as_deref().unwrap_or(LATEST);
        return accept(&platform, &caller, &headers, &snapshot, shown, payload).await;
    }
    // Held until the invocation is done: its worker's load, and the
    // function's concurrency.
    let placed = platform.placement.place(&caller.account_id, &snapshot.name);
    debug_assert_eq!(placed.worker, 0, "one worker, this process's");
    let _running = platform
        .concurrency
        .admit(&caller.account_id, &snapshot.name)
        .map_err(|t| ApiError::throttled(t.reason(), t.to_string()))?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let (result, log, tier) = execute(&platform, &caller, &snapshot, &request_id, payload).await?;
    // A wasm function whose snapshot had to be pulled (and its code loaded
    // or compiled) is a cold start; otherwise its InstancePre was in memory.
    let tier = tier.unwrap_or(if pulled { Tier::Cold } else { Tier::Hot });
    let tail_text = tail.then(|| {
        base64::engine::general_purpose::STANDARD
            .encode(&log[log.len().saturating_sub(LOG_TAIL_BYTES)..])
    });
    platform
        .logs
        .append(&caller.account_id, &snapshot.name, log);
    let mut response = match result {
        Ok(body) => (StatusCode::OK, body).into_response(),
        Err(error_body) => {
            let mut response = (
                StatusCode::OK,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                error_body,
            )
                .into_response();
            response.headers_mut().insert(
                "X-Amz-Function-Error",
                HeaderValue::from_static("Unhandled"),
            );
            response
        }
    };
    let h = response.headers_mut();
    h.insert(
        "X-Amz-Executed-Version",
        HeaderValue::from_str(&snapshot.version).map_err(ApiError::internal)?,
    );
    h.insert(
        "x-amzn-RequestId",
        HeaderValue::from_str(&request_id).map_err(ApiError::internal)?,
    );
    // nimbus' extension: which tier served the invocation (Decision 6).
    h.insert("X-Nimbus-Tier", HeaderValue::from_static(tier.as_str()));
    if let Some(text) = tail_text {
        h.insert(
            "X-Amz-Log-Result",
            HeaderValue::from_str(&text).map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

/// `POST /2014-11-13/functions/{FunctionName}/invoke-async`: Lambda's
/// deprecated InvokeAsync, an `Event` invoke by another name (202, no body).
pub async fn invoke_async(
    platform: State<Arc<Platform>>,
    caller: Extension<Caller>,
    label: Path<String>,
    mut headers: HeaderMap,
    payload: Bytes,
) -> Result<Response, ApiError> {
    headers.insert("x-amz-invocation-type", HeaderValue::from_static("Event"));
    let query = Query(HashMap::new());
    invoke(platform, caller, label, query, headers, payload).await
}

/// nimbus' extension: a key that makes a repeated async request a no-op.
const IDEMPOTENCY_HEADER: &str = "x-nimbus-idempotency-key";

/// Longest idempotency key.
const IDEMPOTENCY_KEY_MAX_CHARS: usize = 256;

/// An async invocation: stored durably, then answered 202 with its id; the
/// dispatcher runs it.
async fn accept(
    platform: &Platform,
    caller: &Caller,
    headers: &HeaderMap,
    snapshot: &FunctionSnapshot,
    qualifier: &str,
    payload: Bytes,
) -> Result<Response, ApiError> {
    let key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(value) => {
            let key = value.to_str().unwrap_or("");
            let printable = key.bytes().all(|b| b.is_ascii_graphic());
            if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_CHARS || !printable {
                return Err(ApiError::invalid_parameter(format!(
                    "X-Nimbus-Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters without spaces"
                )));
            }
            Some(key.to_string())
        }
    };
    let invocation = NewInvocation {
        tenant: caller.account_id.clone(),
        function: snapshot.name.clone(),
        qualifier: qualifier.to_string(),
        version: snapshot.version.clone(),
        payload: payload.to_vec(),
        idempotency_key: key,
    };
    let accepted = platform
        .journal
        .accept(invocation, crate::dispatch::now_ms())
        .await
        .map_err(|e| match e {
            AcceptError::Backlog { .. } => ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    format!("Rate Exceeded: {e}"),
                )
            },
            AcceptError::Store(why) => ApiError::internal(why),
        })?;
    let mut response = StatusCode::ACCEPTED.into_response();
    let h = response.headers_mut();
    h.insert(
        "x-amzn-RequestId",
        HeaderValue::from_str(accepted.id()).map_err(ApiError::internal)?,
    );
    if let Accepted::Repeat { .. } = accepted {
        h.insert(
            "X-Nimbus-Idempotent-Replay",
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// What an execution gave: the response (or a function error's body), the
/// invocation's log, and for containers the tier that served it.
type Executed = (Result<Bytes, Bytes>, Vec<u8>, Option<Tier>);

/// Runs the invocation in the snapshot's sandbox — the one place the
/// executor is chosen.
pub(crate) async fn execute(
    platform: &Platform,
    caller: &Caller,
    snapshot: &Arc<FunctionSnapshot>,
    request_id: &str,
    payload: Bytes,
) -> Result<Executed, ApiError> {
    let c = &snapshot.config;
    let timeout = Duration::from_secs(c.timeout_s.into());
    match &snapshot.code {
        Code::Wasm(prepared) => {
            let invocation = Invocation {
                request_id: request_id.to_string(),
                payload,
                environment: snapshot.environment.clone(),
                memory_limit_bytes: (c.memory_size_mb as usize) << 20,
                timeout,
            };
            let outcome = platform.wasm.run(prepared, &invocation).await;
            let log = log_text(request_id, snapshot, &outcome);
            let result = outcome
                .result
                .map_err(|e| error_body(&e.error_type, &e.message));
            Ok((result, log, None))
        }
        Code::Process(code_dir) => {
            let pool = platform
                .containers
                .as_ref()
                .map_err(|why| ApiError::internal(why.clone()))?;
            let request = InvokeRequest {
                request_id: request_id.to_string(),
                payload,
                timeout,
                invoked_function_arn: platform
                    .arn(caller)
                    .qualified_arn(&snapshot.name, &snapshot.version),
                trace_id: None,
                client_context: None,
                cognito_identity: None,
            };
            match pool.invoke(snapshot, code_dir, request).await {
                Ok(done) => {
                    let o = &done.outcome;
                    let log = o.lambda_log(
                        request_id,
                        &snapshot.version,
                        c.memory_size_mb,
                        done.init_duration,
                    );
                    let result = match done.outcome.result {
                        InvokeResult::Response(body) => Ok(body),
                        InvokeResult::FunctionError(e) => Err(e.body),
                    };
                    Ok((result, log, Some(done.tier)))
                }
                Err(ContainerError::Init(kind, message, init_log, tier)) => {
                    let mut log = format!(
                        "INIT_REPORT RequestId: {request_id} Status: error\tError Type: {kind}\n"
                    )
                    .into_bytes();
                    log.extend_from_slice(&init_log);
                    Ok((Err(error_body(&kind, &message)), log, Some(tier)))
                }
                Err(ContainerError::Capacity(..)) => Err(ApiError::throttled(
                    "ConcurrentInvocationLimitExceeded",
                    "Rate Exceeded: every sandbox of this host is busy",
                )),
                Err(ContainerError::TooFast(too_fast)) => {
                    Err(ApiError::throttled(too_fast.reason(), too_fast.to_string()))
                }
                Err(ContainerError::Shed(shed)) => Err(ApiError::throttled(
                    "ConcurrentInvocationLimitExceeded",
                    format!("Rate Exceeded: {shed}"),
                )),
                Err(e) => Err(ApiError::internal(e)),
            }
        }
    }
}

fn error_body(error_type: &str, message: &str) -> Bytes {
    serde_json::to_vec(&serde_json::json!({ "errorMessage": message, "errorType": error_type }))
        .unwrap_or_default()
        .into()
}

/// The exact version this invocation runs: the one named, or for an alias
/// a draw between its versions by their weights.
fn route(platform: &Platform, caller: &Caller, function: &FunctionRef) -> Result<String, ApiError> {
    Ok(match qualifier(function.qualifier.as_deref())? {
        Qualifier::Latest => LATEST.to_string(),
        Qualifier::Version(n) => n.to_string(),
        Qualifier::Alias(alias) => platform
            .snapshots
            .alias(&caller.account_id, &function.name, &alias)
            .ok_or_else(|| platform.function_not_found(caller, function))?
            .pick(fastrand::f64())
            .to_string(),
    })
}

/// The worker's snapshot of version `version` of `name`, pulled from the
/// store on a miss.
pub(crate) async fn snapshot_of(
    platform: &Arc<Platform>,
    caller: &Caller,
    name: &str,
    version: &str,
) -> Result<Arc<FunctionSnapshot>, ApiError> {
    let function = FunctionRef {
        name: name.to_string(),
        qualifier: Some(version.to_string()),
    };
    Ok(snapshot(platform, caller, &function, version).await?.0)
}

/// The worker's snapshot of one version, pulled from the store on a miss
/// (e.g. a version whose code could not be prepared at start-up); `true`
/// when it was pulled.
async fn snapshot(
    platform: &Arc<Platform>,
    caller: &Caller,
    function: &FunctionRef,
    version: &str,
) -> Result<(Arc<FunctionSnapshot>, bool), ApiError> {
    if let Some(held) = platform
        .snapshots
        .get(&caller.account_id, &function.name, version)
    {
        return Ok((held, false));
    }
    let (worker, tenant, name) = (
        platform.clone(),
        caller.account_id.clone(),
        function.name.clone(),
    );
    let number: Option<u64> = version.parse().ok();
    let pulled = super::blocking(move || match number {
        None => match worker.store.get(&tenant, &name)? {
            None => Ok(None),
            Some(record) => worker.install(&tenant, record).map(Some),
        },
        Some(n) => match worker.store.get_version(&tenant, &name, n)? {
            None => Ok(None),
            Some(record) => worker.install_version(&tenant, &record).map(Some),
        },
    })
    .await?;
    pulled
        .map(|snapshot| (snapshot, true))
        .ok_or_else(|| platform.function_not_found(caller, function))
}

/// The invocation's log as Lambda frames it.
fn log_text(request_id: &str, snapshot: &FunctionSnapshot, outcome: &Outcome) -> Vec<u8> {
    let mut log = format!(
        "START RequestId: {request_id} Version: {}\n",
        snapshot.version
    )
    .into_bytes();
    log.extend_from_slice(&outcome.log);
    if !outcome.log.is_empty() && !outcome.log.ends_with(b"\n") {
        log.push(b'\n');
    }
    if let Err(e) = &outcome.result {
        log.extend_from_slice(format!("{}: {}\n", e.error_type, e.message).as_bytes());
    }
    let ms = outcome.duration.as_secs_f64() * 1000.0;
    log.extend_from_slice(
        format!(
            "END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t\n",
            ms.ceil().max(1.0) as u64,
            snapshot.config.memory_size_mb,
            outcome.max_memory_bytes.div_ceil(1 << 20),
        )
        .as_bytes(),
    );
    log
}

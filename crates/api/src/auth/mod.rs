//! Admission of a request: its body within the operation's size limit, then
//! its SigV4 signature checked against the caller's secret.
//!
//! The body is read here, once, because the signature covers its hash; the
//! handler gets it back as bytes. Size is checked before any hashing, so an
//! oversize upload costs no more than reading it.

pub mod sigv4;

use crate::Platform;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest CreateFunction / UpdateFunctionCode body: 50 MiB of zip, base64'd.
pub const CODE_BODY_MAX_BYTES: usize = 69_905_067;
/// Largest synchronous invoke payload (Lambda's 6 MB).
pub const INVOKE_SYNC_PAYLOAD_MAX_BYTES: usize = 6_291_456;
/// Largest asynchronous invoke payload (Lambda's 1 MB).
pub const INVOKE_ASYNC_PAYLOAD_MAX_BYTES: usize = 1_048_576;
/// Largest body of an SQS request: a message may hold 1 MiB, and the JSON
/// escapes botocore writes (`\\uXXXX` for every non-ASCII character) can
/// triple it; attributes and the envelope fit in the rest.
pub const SQS_BODY_MAX_BYTES: usize = 6_291_456;
/// Largest body of any other operation.
pub const OTHER_BODY_MAX_BYTES: usize = 6_291_456;
/// How much of an oversize body is read and discarded so the client sees the
/// 413 instead of a reset connection; beyond this the connection is closed.
const OVERSIZE_DRAIN_MAX_BYTES: usize = 256 << 20;
/// Largest difference between a request's `X-Amz-Date` and our clock (AWS's).
const CLOCK_SKEW_MAX_S: i64 = 5 * 60;

/// A tenant's access key pair.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The access key id (`AKIA…`).
    pub access_key_id: String,
    /// The secret the signature is made with.
    pub secret_access_key: String,
    /// The tenant (account id) the keys belong to.
    pub account_id: String,
}

/// Every known access key.
pub struct Keys {
    by_id: HashMap<String, Credentials>,
}

impl Keys {
    /// Keys holding only the root tenant's pair.
    pub fn new(root: Credentials) -> Keys {
        Keys {
            by_id: HashMap::from([(root.access_key_id.clone(), root)]),
        }
    }
}

/// Who made a request; handlers scope everything by `account_id`.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The tenant.
    pub account_id: String,
}

struct Limit {
    max_bytes: usize,
    code: &'static str,
    operation: &'static str,
}

fn limit_for(method: &Method, path: &str, headers: &axum::http::HeaderMap) -> Limit {
    let path = path.trim_end_matches('/');
    if *method == Method::POST && path.ends_with("/invocations") {
        let event = headers
            .get("x-amz-invocation-type")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Event"));
        let max_bytes = if event {
            INVOKE_ASYNC_PAYLOAD_MAX_BYTES
        } else {
            INVOKE_SYNC_PAYLOAD_MAX_BYTES
        };
        return Limit {
            max_bytes,
            code: "RequestTooLargeException",
            operation: "InvokeFunction",
        };
    }
    if *method == Method::POST && path.ends_with("/invoke-async") {
        return Limit {
            max_bytes: INVOKE_ASYNC_PAYLOAD_MAX_BYTES,
            code: "RequestTooLargeException",
            operation: "InvokeAsync",
        };
    }
    if *method == Method::POST && path == "/2015-03-31/functions" {
        return Limit {
            max_bytes: CODE_BODY_MAX_BYTES,
            code: "RequestEntityTooLargeException",
            operation: "CreateFunction",
        };
    }
    if *method == Method::PUT && path.ends_with("/code") {
        return Limit {
            max_bytes: CODE_BODY_MAX_BYTES,
            code: "RequestEntityTooLargeException",
            operation: "UpdateFunctionCode",
        };
    }
    if *method == Method::POST && path.is_empty() {
        return Limit {
            max_bytes: SQS_BODY_MAX_BYTES,
            code: "RequestEntityTooLargeException",
            operation: "SQS",
        };
    }
    Limit {
        max_bytes: OTHER_BODY_MAX_BYTES,
        code: "RequestEntityTooLargeException",
        operation: "this",
    }
}

/// Reads the body up to `max`; `Ok(None)` if it is longer (the excess is
/// drained up to [`OVERSIZE_DRAIN_MAX_BYTES`]).
async fn read_body(body: Body, max: usize) -> Result<Option<Bytes>, ApiError> {
    let mut body = body;
    let mut kept: Vec<u8> = Vec::new();
    let mut seen: usize = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::invalid_content(format!("The request body could not be read: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= max {
            kept.extend_from_slice(&data);
        } else if seen > OVERSIZE_DRAIN_MAX_BYTES {
            break;
        }
    }
    Ok((seen <= max).then(|| kept.into()))
}

fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

/// The middleware: size limit, then signature; passes the buffered body and
/// the [`Caller`] on to the handler.
pub async fn authenticate(
    State(platform): State<Arc<Platform>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let limit = limit_for(&parts.method, parts.uri.path(), &parts.headers);
    // An SQS client reads errors only in SQS's shape.
    let sqs = crate::ops::sqs::is_sqs_request(parts.uri.path(), &parts.headers);
    let answer = |e: ApiError| {
        if sqs {
            crate::ops::sqs::SqsError::from(e).into_response()
        } else {
            e.into_response()
        }
    };
    let too_large = || {
        answer(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            limit.code,
            format!(
                "Request must be smaller than {} bytes for the {} operation",
                limit.max_bytes, limit.operation
            ),
        ))
    };
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > OVERSIZE_DRAIN_MAX_BYTES as u64) {
        return too_large();
    }
    let bytes = match read_body(body, limit.max_bytes).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return too_large(),
        Err(e) => return answer(e),
    };
    let caller = match check_signature(&platform, &parts, &bytes) {
        Ok(caller) => caller,
        Err(e) => return answer(e),
    };
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn check_signature(
    platform: &Platform,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            forbidden(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )
        })?;
    let auth = sigv4::Authorization::parse(header)
        .map_err(|e| forbidden("IncompleteSignatureException", e.to_string()))?;
    let credentials = platform.keys.by_id.get(&auth.access_key).ok_or_else(|| {
        forbidden(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    })?;
    if auth.region != platform.region {
        return Err(forbidden(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid region, not '{}'; this endpoint serves {}.",
                auth.region, platform.region
            ),
        ));
    }
    let amz_date = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            forbidden(
                "IncompleteSignatureException",
                "The request has no X-Amz-Date header.",
            )
        })?;
    check_clock(amz_date)?;
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let payload_hash = match parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD".to_string(),
        _ => sigv4::payload_hash(body),
    };
    let request = sigv4::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        payload_hash: &payload_hash,
    };
    if !sigv4::verify(&credentials.secret_access_key, &auth, amz_date, &request) {
        return Err(forbidden(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(Caller {
        account_id: credentials.account_id.clone(),
    })
}

fn check_clock(amz_date: &str) -> Result<(), ApiError> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let signed_at = time::PrimitiveDateTime::parse(amz_date, &format)
        .map_err(|_| {
            forbidden(
                "IncompleteSignatureException",
                format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"),
            )
        })?
        .assume_utc();
    let now = time::OffsetDateTime::now_utc();
    if (now - signed_at).whole_seconds().abs() > CLOCK_SKEW_MAX_S {
        return Err(forbidden(
            "InvalidSignatureException",
            format!(
                "Signature expired: {amz_date} is not within 5 minutes of the server's time {}",
                now.unix_timestamp()
            ),
        ));
    }
    Ok(())
}

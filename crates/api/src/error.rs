//! Errors as AWS sends them: the error name in `x-amzn-ErrorType`, a JSON
//! body with `Type` and `message`, and the status code the model gives.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_control::package::PackageError;
use nimbus_control::store::StoreError;
use nimbus_control::validate::Invalid;
use nimbus_worker::PrepareError;

/// An error answered to an API caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// AWS error name, e.g. `ResourceNotFoundException`.
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
    /// Seconds a throttled caller should wait (`Retry-After`).
    pub retry_after_s: Option<u64>,
    /// Why a throttled caller was refused (Lambda's `Reason` member).
    pub reason: Option<&'static str>,
}

impl ApiError {
    /// An error with the given status, name and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
            reason: None,
        }
    }

    /// 429 `TooManyRequestsException` with Lambda's `Reason`, to be retried
    /// after a second.
    pub fn throttled(reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after_s: Some(1),
            reason: Some(reason),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                message,
            )
        }
    }

    /// 404 `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// 400 `InvalidParameterValueException`.
    pub fn invalid_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    /// 400 `InvalidRequestContentException`.
    pub fn invalid_content(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }

    /// 412 `PreconditionFailedException` for a stale `RevisionId`.
    pub fn stale_revision() -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        )
    }

    /// 500 `ServiceException`: the platform failed, not the caller.
    pub fn internal(what: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %what, "service error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            format!("The service failed: {what}"),
        )
    }

    fn is_server(&self) -> bool {
        self.status.is_server_error()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "Type": if self.is_server() { "Service" } else { "User" },
            "message": self.message,
        });
        if let Some(reason) = self.reason {
            body["Reason"] = reason.into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert("x-amzn-ErrorType", HeaderValue::from_static(self.code));
        if let Some(s) = self.retry_after_s {
            headers.insert("Retry-After", HeaderValue::from(s));
        }
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        match e {
            Invalid::Constraint { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                e.to_string(),
            ),
            Invalid::Parameter(m) => ApiError::invalid_parameter(m),
        }
    }
}

impl From<PackageError> for ApiError {
    fn from(e: PackageError) -> ApiError {
        ApiError::invalid_parameter(e.to_string())
    }
}

impl From<PrepareError> for ApiError {
    fn from(e: PrepareError) -> ApiError {
        match e {
            PrepareError::Cache(..) => ApiError::internal(e),
            user => ApiError::invalid_parameter(user.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::StaleRevision { .. } => ApiError::stale_revision(),
            other => ApiError::internal(other),
        }
    }
}

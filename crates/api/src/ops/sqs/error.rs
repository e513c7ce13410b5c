//! SQS's errors on the JSON protocol: HTTP 400 (a few 403), a body
//! `{"__type": "com.amazonaws.sqs#<Shape>", "message": …}`, and the header
//! `x-amzn-query-error: <QueryCode>;Sender`. The service is
//! awsQueryCompatible: botocore reports the header's code as
//! `Error.Code` (`AWS.SimpleQueueService.NonExistentQueue`, as SQS always
//! answered) and picks the exception class by the `__type` shape.

use crate::error::ApiError;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_queues::QueueError;

/// An error answered to an SQS client.
#[derive(Debug)]
pub struct SqsError {
    status: StatusCode,
    /// The model's exception shape (or the protocol's error name).
    shape: &'static str,
    /// The code SQS's query protocol gave it, which clients report.
    query_code: &'static str,
    message: String,
}

impl SqsError {
    /// A sender's error: 400, the shape, the query code, the message.
    pub fn new(
        shape: &'static str,
        query_code: &'static str,
        message: impl Into<String>,
    ) -> SqsError {
        SqsError {
            status: StatusCode::BAD_REQUEST,
            shape,
            query_code,
            message: message.into(),
        }
    }

    /// A parameter out of range or of the wrong type.
    pub fn invalid_parameter(message: impl Into<String>) -> SqsError {
        SqsError::new("InvalidParameterValue", "InvalidParameterValue", message)
    }

    /// A required parameter is missing.
    pub fn missing(parameter: &str) -> SqsError {
        SqsError::new(
            "MissingParameter",
            "MissingParameter",
            format!("The request must contain the parameter {parameter}."),
        )
    }

    /// A QueueUrl that names no queue this endpoint serves.
    pub fn invalid_address(url: &str) -> SqsError {
        SqsError::new(
            "InvalidAddress",
            "InvalidAddress",
            format!(
                "The address {url} is not valid for this endpoint (expected http://HOST/ACCOUNT/QUEUE)."
            ),
        )
    }

    /// The entry of a batch answer's `Failed` list for this error.
    pub fn batch_entry(&self, id: &str) -> serde_json::Value {
        serde_json::json!({
            "Id": id,
            "SenderFault": !self.status.is_server_error(),
            "Code": self.query_code,
            "Message": self.message,
        })
    }

    fn with_status(self, status: StatusCode) -> SqsError {
        SqsError { status, ..self }
    }

    fn internal(what: impl std::fmt::Display) -> SqsError {
        tracing::error!(error = %what, "queue service error");
        SqsError::new(
            "InternalError",
            "InternalError",
            format!("The service failed: {what}"),
        )
        .with_status(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<QueueError> for SqsError {
    fn from(e: QueueError) -> SqsError {
        let message = e.to_string();
        let (shape, query_code) = match e {
            QueueError::QueueDoesNotExist(_) => (
                "QueueDoesNotExist",
                "AWS.SimpleQueueService.NonExistentQueue",
            ),
            QueueError::QueueNameExists { .. } => ("QueueNameExists", "QueueAlreadyExists"),
            QueueError::InvalidAttributeName(_) => ("InvalidAttributeName", "InvalidAttributeName"),
            QueueError::InvalidAttributeValue { .. } => {
                ("InvalidAttributeValue", "InvalidAttributeValue")
            }
            QueueError::InvalidParameterValue(_) => {
                ("InvalidParameterValue", "InvalidParameterValue")
            }
            QueueError::MissingParameter(_) => ("MissingParameter", "MissingParameter"),
            QueueError::InvalidMessageContents(_) => {
                ("InvalidMessageContents", "InvalidMessageContents")
            }
            QueueError::ReceiptHandleIsInvalid(_) => {
                ("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid")
            }
            QueueError::MessageNotInflight => (
                "MessageNotInflight",
                "AWS.SimpleQueueService.MessageNotInflight",
            ),
            QueueError::PurgeQueueInProgress(_) => {
                let e = SqsError::new(
                    "PurgeQueueInProgress",
                    "AWS.SimpleQueueService.PurgeQueueInProgress",
                    message,
                );
                return e.with_status(StatusCode::FORBIDDEN);
            }
            QueueError::OverLimit(_) => {
                return SqsError::new("OverLimit", "OverLimit", message)
                    .with_status(StatusCode::FORBIDDEN);
            }
            QueueError::UnsupportedOperation(_) => (
                "UnsupportedOperation",
                "AWS.SimpleQueueService.UnsupportedOperation",
            ),
            QueueError::Engine(_) => return SqsError::internal(message),
        };
        SqsError::new(shape, query_code, message)
    }
}

/// Admission errors (size, signature) in SQS's shape, so an SQS client
/// reads them; the codes are the ones SQS's query protocol used.
impl From<ApiError> for SqsError {
    fn from(e: ApiError) -> SqsError {
        let query_code = match e.code {
            "UnrecognizedClientException" => "InvalidClientTokenId",
            "InvalidSignatureException" => "SignatureDoesNotMatch",
            "IncompleteSignatureException" => "IncompleteSignature",
            "MissingAuthenticationTokenException" => "MissingAuthenticationToken",
            "RequestEntityTooLargeException" => "RequestEntityTooLarge",
            other => other,
        };
        SqsError {
            status: e.status,
            shape: e.code,
            query_code,
            message: e.message,
        }
    }
}

impl IntoResponse for SqsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{}", self.shape),
            "message": self.message,
        });
        let fault = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        let mut response = (self.status, super::json_body(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(&format!("{};{fault}", self.query_code)) {
            response.headers_mut().insert("x-amzn-query-error", value);
        }
        response
    }
}

//! The built-in queues over Amazon SQS's JSON protocol: `POST /` with
//! `X-Amz-Target: AmazonSQS.<Operation>` and a JSON body, answered in
//! JSON. One dispatch on the target; queue operations in [`queues`],
//! message operations in [`messages`].

mod batch;
mod error;
mod messages;
mod queues;

use crate::Platform;
use crate::auth::Caller;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
pub use error::SqsError;
use nimbus_queues::Queues;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The target prefix SQS's model gives.
const TARGET_PREFIX: &str = "AmazonSQS.";

/// Whether a request is meant for the queues (so admission errors are
/// answered in SQS's shape).
pub fn is_sqs_request(path: &str, headers: &HeaderMap) -> bool {
    path == "/"
        && headers
            .get("x-amz-target")
            .is_some_and(|t| t.as_bytes().starts_with(TARGET_PREFIX.as_bytes()))
}

/// What one request's handler needs: the queues, who asks, and how to
/// spell queue URLs and ARNs for them.
pub struct Sqs {
    queues: Arc<Queues>,
    tenant: String,
    region: String,
    /// `http://HOST` as the client addressed us, the base of queue URLs.
    base_url: String,
}

impl Sqs {
    fn url(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.base_url, self.tenant)
    }

    /// The queue name a QueueUrl names: its last two path segments are the
    /// account and the name. Another account's queue does not exist here.
    fn queue_name(&self, url: Option<&str>) -> Result<String, SqsError> {
        let url = url.ok_or_else(|| SqsError::missing("QueueUrl"))?;
        let path = match url.split_once("://") {
            Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
            None => url,
        };
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let [.., account, name] = segments.as_slice() else {
            return Err(SqsError::invalid_address(url));
        };
        if *account != self.tenant {
            return Err(nimbus_queues::QueueError::QueueDoesNotExist(url.to_string()).into());
        }
        Ok(name.to_string())
    }
}

/// `POST /`: the SQS operation the target names.
pub async fn dispatch(
    State(platform): State<Arc<Platform>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix(TARGET_PREFIX) else {
        return SqsError::new(
            "UnknownOperationException",
            "InvalidAction",
            format!("No operation is served at POST / for target {target:?}: SQS requests name one as X-Amz-Target: AmazonSQS.<Operation>."),
        )
        .into_response();
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let sqs = Sqs {
        queues: platform.queues.clone(),
        tenant: caller.account_id,
        region: platform.region.clone(),
        base_url: format!("http://{host}"),
    };
    let answer = match operation {
        "CreateQueue" => queues::create(sqs, &body).await,
        "GetQueueUrl" => queues::get_url(sqs, &body).await,
        "DeleteQueue" => queues::delete(sqs, &body).await,
        "ListQueues" => queues::list(sqs, &body).await,
        "GetQueueAttributes" => queues::get_attributes(sqs, &body).await,
        "SetQueueAttributes" => queues::set_attributes(sqs, &body).await,
        "PurgeQueue" => queues::purge(sqs, &body).await,
        "SendMessage" => messages::send(sqs, &body).await,
        "SendMessageBatch" => batch::send_batch(sqs, &body).await,
        "ReceiveMessage" => messages::receive(sqs, &body).await,
        "DeleteMessage" => messages::delete(sqs, &body).await,
        "DeleteMessageBatch" => batch::delete_batch(sqs, &body).await,
        "ChangeMessageVisibility" => messages::change_visibility(sqs, &body).await,
        "ChangeMessageVisibilityBatch" => batch::change_visibility_batch(sqs, &body).await,
        "AddPermission"
        | "RemovePermission"
        | "TagQueue"
        | "UntagQueue"
        | "ListQueueTags"
        | "ListDeadLetterSourceQueues"
        | "StartMessageMoveTask"
        | "CancelMessageMoveTask"
        | "ListMessageMoveTasks" => Err(SqsError::new(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            format!("{operation} is not offered by nimbus queues."),
        )),
        other => Err(SqsError::new(
            "UnknownOperationException",
            "InvalidAction",
            format!("The action {other} is not valid for this endpoint."),
        )),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// A JSON answer with SQS's content type.
pub fn json_body(value: serde_json::Value) -> Response {
    let mut response = axum::Json(value).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

/// Parses a request body, naming the member that did not fit.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, SqsError> {
    super::parse_body(body).map_err(|why| {
        SqsError::new(
            "SerializationException",
            "InvalidParameterValue",
            format!("The request body is not valid JSON for this operation: {why}"),
        )
    })
}

/// A whole number the model calls an Integer, range-checked into `u32`.
fn in_range(name: &str, value: Option<i64>, min: u32, max: u32) -> Result<Option<u32>, SqsError> {
    match value {
        None => Ok(None),
        Some(v) if v >= i64::from(min) && v <= i64::from(max) => Ok(Some(v as u32)),
        Some(v) => Err(SqsError::invalid_parameter(format!(
            "Value {v} for parameter {name} is invalid. Reason: Must be between {min} and {max}, if provided."
        ))),
    }
}

//! One module per operation family of the Lambda API.

pub mod account;
pub mod aliases;
pub mod concurrency;
pub mod event_invoke;
pub mod functions;
pub mod invocations;
pub mod invoke;
pub mod logs;
pub mod provisioned;
pub mod resolve;
pub mod sqs;
pub mod tags;
pub mod versions;

use crate::error::ApiError;
use crate::shapes::ArnContext;
use crate::{Platform, auth::Caller};
use nimbus_control::validate::{self, FunctionRef};
use serde::de::DeserializeOwned;

/// Parses a JSON request body (an empty one is `{}`); on failure, what did
/// not fit: `"member PATH: why"`, or just why when it is the whole body.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("member {path}: {inner}")
        }
    })
}

/// Parses a Lambda API request body, naming the member that did not fit.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_body(body).map_err(|why| {
        ApiError::invalid_content(format!("Could not parse request body into json: {why}"))
    })
}

/// Parses the `{FunctionName}` label of a path, with an optional `Qualifier`
/// from the query.
pub fn function_ref(label: &str, qualifier: Option<&str>) -> Result<FunctionRef, ApiError> {
    let mut function = validate::function_ref(label)?;
    if let Some(q) = qualifier.filter(|q| !q.is_empty()) {
        if function.qualifier.as_deref().is_some_and(|held| held != q) {
            return Err(ApiError::invalid_parameter(format!(
                "The qualifier {q:?} conflicts with the one in the function name {label:?}"
            )));
        }
        function.qualifier = Some(q.to_string());
    }
    Ok(function)
}

impl Platform {
    pub(crate) fn arn<'a>(&'a self, caller: &'a Caller) -> ArnContext<'a> {
        ArnContext {
            region: &self.region,
            account: &caller.account_id,
        }
    }

    fn function_not_found(&self, caller: &Caller, function: &FunctionRef) -> ApiError {
        let mut arn = self.arn(caller).function_arn(&function.name);
        if let Some(q) = &function.qualifier {
            arn = format!("{arn}:{q}");
        }
        ApiError::not_found(format!("Function not found: {arn}"))
    }
}

/// Where an async event or its record can be delivered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Deliverable {
    /// One of the built-in queues only (a dead-letter queue).
    Queue,
    /// A built-in queue or a function (a destination).
    QueueOrFunction,
}

/// Checks a delivery target's ARN: `None` for an empty one (none).
pub fn delivery_target(
    arn: &str,
    what: &str,
    accepts: Deliverable,
) -> Result<Option<String>, ApiError> {
    if arn.is_empty() {
        return Ok(None);
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = match parts.as_slice() {
        ["arn", _, "sqs", _, account, name] => !account.is_empty() && !name.is_empty(),
        ["arn", _, "lambda", _, account, rest] => {
            accepts == Deliverable::QueueOrFunction
                && !account.is_empty()
                && rest
                    .strip_prefix("function:")
                    .is_some_and(|f| validate::function_ref(f).is_ok())
        }
        _ => false,
    };
    if !ok {
        let can = match accepts {
            Deliverable::Queue => "one of its queues (arn:aws:sqs:REGION:ACCOUNT:QUEUE)",
            Deliverable::QueueOrFunction => {
                "one of its queues (arn:aws:sqs:REGION:ACCOUNT:QUEUE) or a function \
                 (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
            }
        };
        return Err(ApiError::invalid_parameter(format!(
            "The {what} {arn:?} is not one this server can deliver to: name {can}"
        )));
    }
    Ok(Some(arn.to_string()))
}

/// Checks `DeadLetterConfig.TargetArn`.
pub fn dead_letter_target(arn: &str) -> Result<Option<String>, ApiError> {
    delivery_target(arn, "dead-letter queue", Deliverable::Queue)
}

/// Decodes a percent-encoded query value (`+` is a space, as forms have it).
pub fn sigv4_decode(value: &str) -> String {
    let spaced = value.replace('+', " ");
    String::from_utf8_lossy(&crate::auth::sigv4::percent_decode(&spaced)).into_owned()
}

/// Runs blocking work (SQLite, disk, compilation) off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}

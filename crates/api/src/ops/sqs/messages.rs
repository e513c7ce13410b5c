//! SendMessage, ReceiveMessage, DeleteMessage, ChangeMessageVisibility.

use super::{Sqs, SqsError, in_range, json_body, parse};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use nimbus_queues::{
    DELAY_MAX_S, DeleteOutcome, MessageAttribute, NewMessage, RECEIVE_BATCH_MAX, ReceiveOptions,
    ReceivedMessage, VISIBILITY_TIMEOUT_MAX_S, WAIT_TIME_MAX_S, md5_of_attributes,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct AttributeValue {
    data_type: Option<String>,
    pub(super) string_value: Option<String>,
    pub(super) binary_value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SendEntry {
    #[serde(default)]
    pub(super) id: String,
    pub(super) message_body: Option<String>,
    delay_seconds: Option<i64>,
    #[serde(default)]
    pub(super) message_attributes: BTreeMap<String, AttributeValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageRequest {
    queue_url: Option<String>,
    #[serde(flatten)]
    message: SendEntry,
}

impl SendEntry {
    pub(super) fn to_message(&self) -> Result<NewMessage, SqsError> {
        let body = self
            .message_body
            .clone()
            .ok_or_else(|| SqsError::missing("MessageBody"))?;
        let delay_s = in_range("DelaySeconds", self.delay_seconds, 0, DELAY_MAX_S)?;
        let mut attributes = BTreeMap::new();
        for (name, value) in &self.message_attributes {
            let data_type = value.data_type.clone().ok_or_else(|| {
                SqsError::invalid_parameter(format!(
                    "The message attribute {name:?} must contain a DataType."
                ))
            })?;
            let binary_value = match &value.binary_value {
                None => None,
                Some(b) => Some(STANDARD.decode(b).map_err(|_| {
                    SqsError::invalid_parameter(format!(
                        "The BinaryValue of message attribute {name:?} is not base64."
                    ))
                })?),
            };
            let attribute = MessageAttribute {
                data_type,
                string_value: value.string_value.clone(),
                binary_value,
            };
            attributes.insert(name.clone(), attribute);
        }
        Ok(NewMessage {
            body,
            delay_s,
            attributes,
        })
    }
}

pub(super) fn sent_json(sent: &nimbus_queues::SentMessage) -> Value {
    let mut out = json!({
        "MessageId": sent.message_id,
        "MD5OfMessageBody": sent.md5_of_body,
    });
    if let Some(md5) = &sent.md5_of_attributes {
        out["MD5OfMessageAttributes"] = json!(md5);
    }
    out
}

pub async fn send(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: SendMessageRequest = parse(body)?;
    let queue = sqs.queue_name(request.queue_url.as_deref())?;
    let message = request.message.to_message()?;
    let (tenant, name) = (sqs.tenant.clone(), queue.clone());
    let sent = sqs
        .queues
        .call(move |conn, now| nimbus_queues::send_message(conn, &tenant, &name, &message, now))
        .await?;
    sqs.queues.ring(&sqs.tenant, &queue);
    Ok(json_body(sent_json(&sent)))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveMessageRequest {
    queue_url: Option<String>,
    #[serde(default)]
    attribute_names: Vec<String>,
    #[serde(default)]
    message_system_attribute_names: Vec<String>,
    #[serde(default)]
    message_attribute_names: Vec<String>,
    max_number_of_messages: Option<i64>,
    visibility_timeout: Option<i64>,
    wait_time_seconds: Option<i64>,
}

pub async fn receive(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: ReceiveMessageRequest = parse(body)?;
    let queue = sqs.queue_name(request.queue_url.as_deref())?;
    let max = in_range(
        "MaxNumberOfMessages",
        request.max_number_of_messages,
        1,
        RECEIVE_BATCH_MAX,
    )?;
    let options = ReceiveOptions {
        max_messages: max.unwrap_or(1),
        visibility_timeout_s: in_range(
            "VisibilityTimeout",
            request.visibility_timeout,
            0,
            VISIBILITY_TIMEOUT_MAX_S,
        )?,
    };
    let wait_s = match in_range(
        "WaitTimeSeconds",
        request.wait_time_seconds,
        0,
        WAIT_TIME_MAX_S,
    )? {
        Some(wait) => wait,
        None => {
            let (tenant, name) = (sqs.tenant.clone(), queue.clone());
            let found = sqs
                .queues
                .call(move |conn, _| nimbus_queues::get_queue(conn, &tenant, &name))
                .await?;
            found.settings.receive_wait_s
        }
    };
    let messages = sqs
        .queues
        .receive_waiting(
            &sqs.tenant,
            &queue,
            options,
            Duration::from_secs(u64::from(wait_s)),
        )
        .await?;
    if messages.is_empty() {
        return Ok(json_body(json!({})));
    }
    let system: Vec<&str> = request
        .attribute_names
        .iter()
        .chain(&request.message_system_attribute_names)
        .map(String::as_str)
        .collect();
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| message_json(m, &system, &request.message_attribute_names))
        .collect();
    Ok(json_body(json!({ "Messages": messages })))
}

/// The system attributes nimbus has, by name.
fn system_attributes(m: &ReceivedMessage) -> [(&'static str, String); 4] {
    [
        ("SenderId", m.sender.clone()),
        ("SentTimestamp", m.sent_ms.to_string()),
        ("ApproximateReceiveCount", m.receive_count.to_string()),
        (
            "ApproximateFirstReceiveTimestamp",
            m.first_receive_ms.to_string(),
        ),
    ]
}

/// Whether a MessageAttributeNames entry asks for `name`: `All`, `.*`, an
/// exact name, or a prefix ending in `.*`.
fn asks_for(pattern: &str, name: &str) -> bool {
    match pattern {
        "All" | ".*" => true,
        p => match p.strip_suffix(".*") {
            Some(prefix) => name.starts_with(prefix) && name[prefix.len()..].starts_with('.'),
            None => p == name,
        },
    }
}

fn message_json(m: &ReceivedMessage, system: &[&str], wanted: &[String]) -> Value {
    let mut out = json!({
        "MessageId": m.message_id,
        "ReceiptHandle": m.receipt_handle,
        "MD5OfBody": m.md5_of_body,
        "Body": m.body,
    });
    let all = system.contains(&"All");
    let attributes: Map<String, Value> = system_attributes(m)
        .into_iter()
        .filter(|(name, _)| all || system.contains(name))
        .map(|(name, value)| (name.to_string(), Value::String(value)))
        .collect();
    if !attributes.is_empty() {
        out["Attributes"] = Value::Object(attributes);
    }
    let chosen: BTreeMap<String, MessageAttribute> = m
        .attributes
        .iter()
        .filter(|(name, _)| wanted.iter().any(|p| asks_for(p, name)))
        .map(|(n, a)| (n.clone(), a.clone()))
        .collect();
    if let Some(md5) = md5_of_attributes(&chosen) {
        out["MD5OfMessageAttributes"] = json!(md5);
        let values: Map<String, Value> = chosen
            .iter()
            .map(|(name, a)| {
                let mut value = json!({ "DataType": a.data_type });
                if let Some(s) = &a.string_value {
                    value["StringValue"] = json!(s);
                }
                if let Some(b) = &a.binary_value {
                    value["BinaryValue"] = json!(STANDARD.encode(b));
                }
                (name.clone(), value)
            })
            .collect();
        out["MessageAttributes"] = Value::Object(values);
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct HandleEntry {
    #[serde(default)]
    pub(super) id: String,
    receipt_handle: Option<String>,
    visibility_timeout: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HandleRequest {
    queue_url: Option<String>,
    #[serde(flatten)]
    entry: HandleEntry,
}

impl HandleEntry {
    pub(super) fn handle(&self) -> Result<String, SqsError> {
        self.receipt_handle
            .clone()
            .ok_or_else(|| SqsError::missing("ReceiptHandle"))
    }

    pub(super) fn timeout(&self) -> Result<(String, u32), SqsError> {
        let timeout = in_range(
            "VisibilityTimeout",
            self.visibility_timeout,
            0,
            VISIBILITY_TIMEOUT_MAX_S,
        )?;
        Ok((
            self.handle()?,
            timeout.ok_or_else(|| SqsError::missing("VisibilityTimeout"))?,
        ))
    }
}

pub async fn delete(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: HandleRequest = parse(body)?;
    let queue = sqs.queue_name(request.queue_url.as_deref())?;
    let handle = request.entry.handle()?;
    let tenant = sqs.tenant.clone();
    let outcome = sqs
        .queues
        .call(move |conn, _| nimbus_queues::delete_message(conn, &tenant, &queue, &handle))
        .await?;
    if outcome == DeleteOutcome::Stale {
        tracing::debug!(
            "DeleteMessage with a stale receipt handle: the newer receive keeps the message"
        );
    }
    Ok(json_body(json!({})))
}

pub async fn change_visibility(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: HandleRequest = parse(body)?;
    let queue = sqs.queue_name(request.queue_url.as_deref())?;
    let (handle, timeout) = request.entry.timeout()?;
    let tenant = sqs.tenant.clone();
    sqs.queues
        .call(move |conn, now| {
            nimbus_queues::change_visibility(conn, &tenant, &queue, &handle, timeout, now)
        })
        .await?;
    Ok(json_body(json!({})))
}

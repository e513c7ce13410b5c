//! CreateQueue, GetQueueUrl, DeleteQueue, ListQueues, GetQueueAttributes,
//! SetQueueAttributes, PurgeQueue.

use super::{Sqs, SqsError, in_range, json_body, parse};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nimbus_queues::{LIST_PAGE_MAX, QueueSettings, QueueStats, queue_arn};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateQueueRequest {
    queue_name: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

pub async fn create(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: CreateQueueRequest = parse(body)?;
    let name = request
        .queue_name
        .ok_or_else(|| SqsError::missing("QueueName"))?;
    let attributes: Vec<(String, String)> = request.attributes.into_iter().collect();
    let (tenant, queue) = (sqs.tenant.clone(), name.clone());
    sqs.queues
        .call(move |conn, now| nimbus_queues::create_queue(conn, &tenant, &queue, &attributes, now))
        .await?;
    Ok(json_body(json!({ "QueueUrl": sqs.url(&name) })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueUrlRequest {
    queue_name: Option<String>,
    #[serde(rename = "QueueOwnerAWSAccountId")]
    owner: Option<String>,
}

pub async fn get_url(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: GetQueueUrlRequest = parse(body)?;
    let name = request
        .queue_name
        .ok_or_else(|| SqsError::missing("QueueName"))?;
    if request
        .owner
        .as_ref()
        .is_some_and(|owner| *owner != sqs.tenant)
    {
        return Err(nimbus_queues::QueueError::QueueDoesNotExist(name).into());
    }
    let (tenant, queue) = (sqs.tenant.clone(), name.clone());
    sqs.queues
        .call(move |conn, _| nimbus_queues::get_queue(conn, &tenant, &queue))
        .await?;
    Ok(json_body(json!({ "QueueUrl": sqs.url(&name) })))
}

/// The one member most queue operations have.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueRequest {
    queue_url: Option<String>,
}

pub async fn delete(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: QueueRequest = parse(body)?;
    let (tenant, queue) = (
        sqs.tenant.clone(),
        sqs.queue_name(request.queue_url.as_deref())?,
    );
    sqs.queues
        .call(move |conn, _| nimbus_queues::delete_queue(conn, &tenant, &queue))
        .await?;
    Ok(json_body(json!({})))
}

pub async fn purge(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: QueueRequest = parse(body)?;
    let (tenant, queue) = (
        sqs.tenant.clone(),
        sqs.queue_name(request.queue_url.as_deref())?,
    );
    sqs.queues
        .call(move |conn, now| nimbus_queues::purge_queue(conn, &tenant, &queue, now))
        .await?;
    Ok(json_body(json!({})))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListQueuesRequest {
    queue_name_prefix: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

/// ListQueues: without MaxResults, up to 1,000 names and no token (as SQS);
/// with it, pages and a NextToken while more remain.
pub async fn list(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: ListQueuesRequest = parse(body)?;
    let max = in_range("MaxResults", request.max_results, 1, LIST_PAGE_MAX as u32)?;
    let after = match request.next_token.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => Some(
            URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|name| String::from_utf8(name).ok())
                .ok_or_else(|| {
                    SqsError::invalid_parameter(format!("Invalid NextToken {token:?}."))
                })?,
        ),
    };
    let limit = max.map_or(LIST_PAGE_MAX, |m| m as usize);
    let prefix = request.queue_name_prefix.unwrap_or_default();
    let tenant = sqs.tenant.clone();
    let mut names = sqs
        .queues
        .call(move |conn, _| {
            nimbus_queues::list_queues(conn, &tenant, &prefix, after.as_deref(), limit + 1)
        })
        .await?;
    let more = names.len() > limit;
    names.truncate(limit);
    let mut answer = Map::new();
    if !names.is_empty() {
        let urls: Vec<String> = names.iter().map(|n| sqs.url(n)).collect();
        answer.insert("QueueUrls".into(), json!(urls));
    }
    if let (true, Some(_), Some(last)) = (more, max, names.last()) {
        answer.insert("NextToken".into(), json!(URL_SAFE_NO_PAD.encode(last)));
    }
    Ok(json_body(Value::Object(answer)))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetQueueAttributesRequest {
    queue_url: Option<String>,
    #[serde(default)]
    attribute_names: Vec<String>,
}

/// Every attribute name SQS's model knows for GetQueueAttributes; the ones
/// nimbus has no value for (Policy, FIFO and KMS settings…) are omitted
/// from the answer, as SQS omits unset ones.
const QUEUE_ATTRIBUTE_NAMES: &[&str] = &[
    "All",
    "Policy",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "ApproximateNumberOfMessagesDelayed",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "RedriveAllowPolicy",
    "SqsManagedSseEnabled",
];

pub async fn get_attributes(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: GetQueueAttributesRequest = parse(body)?;
    if let Some(unknown) = request
        .attribute_names
        .iter()
        .find(|n| !QUEUE_ATTRIBUTE_NAMES.contains(&n.as_str()))
    {
        return Err(nimbus_queues::QueueError::InvalidAttributeName(format!(
            "Unknown Attribute {unknown}."
        ))
        .into());
    }
    let (tenant, queue) = (
        sqs.tenant.clone(),
        sqs.queue_name(request.queue_url.as_deref())?,
    );
    let stats = sqs
        .queues
        .call(move |conn, now| nimbus_queues::queue_stats(conn, &tenant, &queue, now))
        .await?;
    let all = request.attribute_names.iter().any(|n| n == "All");
    let mut attributes = Map::new();
    for (name, value) in attribute_values(&sqs, &stats) {
        if all || request.attribute_names.iter().any(|n| n == name) {
            attributes.insert(name.to_string(), Value::String(value));
        }
    }
    if attributes.is_empty() {
        return Ok(json_body(json!({})));
    }
    Ok(json_body(json!({ "Attributes": attributes })))
}

/// Every attribute nimbus has a value for, as SQS prints them (strings;
/// timestamps in seconds).
fn attribute_values(sqs: &Sqs, stats: &QueueStats) -> Vec<(&'static str, String)> {
    let queue = &stats.queue;
    let mut values: Vec<(&'static str, String)> = QueueSettings::names()
        .filter_map(|name| queue.settings.value_of(name).map(|v| (name, v)))
        .collect();
    values.extend([
        ("ApproximateNumberOfMessages", stats.available.to_string()),
        (
            "ApproximateNumberOfMessagesNotVisible",
            stats.in_flight.to_string(),
        ),
        (
            "ApproximateNumberOfMessagesDelayed",
            stats.delayed.to_string(),
        ),
        ("CreatedTimestamp", (queue.created_ms / 1_000).to_string()),
        (
            "LastModifiedTimestamp",
            (queue.modified_ms / 1_000).to_string(),
        ),
        ("QueueArn", queue_arn(&sqs.region, &sqs.tenant, &queue.name)),
    ]);
    values
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetQueueAttributesRequest {
    queue_url: Option<String>,
    attributes: Option<BTreeMap<String, String>>,
}

pub async fn set_attributes(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: SetQueueAttributesRequest = parse(body)?;
    let (tenant, queue) = (
        sqs.tenant.clone(),
        sqs.queue_name(request.queue_url.as_deref())?,
    );
    let attributes: Vec<(String, String)> = request
        .attributes
        .ok_or_else(|| SqsError::missing("Attributes"))?
        .into_iter()
        .collect();
    sqs.queues
        .call(move |conn, now| {
            nimbus_queues::set_queue_attributes(conn, &tenant, &queue, &attributes, now)
        })
        .await?;
    Ok(json_body(json!({})))
}

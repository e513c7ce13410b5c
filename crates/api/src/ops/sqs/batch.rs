//! SendMessageBatch, DeleteMessageBatch, ChangeMessageVisibilityBatch: up
//! to 10 entries, each succeeding or failing on its own, in one commit.

use super::messages::{HandleEntry, SendEntry, sent_json};
use super::{Sqs, SqsError, json_body, parse};
use axum::response::Response;
use nimbus_queues::QueueError;
use nimbus_queues::rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Most entries in one batch request (SQS's).
const BATCH_ENTRIES_MAX: usize = 10;
/// Largest total of bodies and attributes in one SendMessageBatch (SQS's).
const BATCH_PAYLOAD_MAX_BYTES: usize = 1_048_576;
/// Longest batch entry id, in characters (SQS's).
const BATCH_ID_MAX_CHARS: usize = 80;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchRequest<E> {
    queue_url: Option<String>,
    entries: Option<Vec<E>>,
}

/// SQS's checks of a batch as a whole: 1 to 10 entries, ids valid and
/// distinct.
fn check_batch<'a>(
    entries: &Option<Vec<impl Sized>>,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), SqsError> {
    let count = entries.as_ref().map_or(0, Vec::len);
    if count == 0 {
        return Err(SqsError::new(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "There should be at least one entry in the request.",
        ));
    }
    if count > BATCH_ENTRIES_MAX {
        return Err(SqsError::new(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!(
                "Maximum number of entries per request are {BATCH_ENTRIES_MAX}. You have sent {count}."
            ),
        ));
    }
    let mut seen = HashSet::new();
    for id in ids {
        let valid = !id.is_empty()
            && id.len() <= BATCH_ID_MAX_CHARS
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(SqsError::new(
                "InvalidBatchEntryId",
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                format!(
                    "A batch entry id can only contain alphanumeric characters, hyphens and underscores, 1 to 80 long: {id:?} does not."
                ),
            ));
        }
        if !seen.insert(id) {
            return Err(SqsError::new(
                "BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                format!("Id {id} repeated."),
            ));
        }
    }
    Ok(())
}

/// Runs one operation per entry in one transaction (one commit for the
/// batch); an entry's own error fails that entry only, a missing queue or
/// the store's failure fails the batch.
async fn run_batch<T: Send + 'static>(
    sqs: &Sqs,
    queue: String,
    entries: Vec<(String, Result<T, SqsError>)>,
    each: impl Fn(&Connection, &str, &str, u64, T) -> Result<Value, QueueError> + Send + 'static,
) -> Result<Response, SqsError> {
    let tenant = sqs.tenant.clone();
    let results = sqs
        .queues
        .call(move |conn, now| {
            nimbus_queues::atomically(conn, |conn| {
                nimbus_queues::get_queue(conn, &tenant, &queue)?;
                let mut out = Vec::new();
                for (id, entry) in entries {
                    let result = match entry.map(|e| each(conn, &tenant, &queue, now, e)) {
                        Ok(Err(QueueError::Engine(e))) => return Err(QueueError::Engine(e)),
                        Ok(Err(e)) => Err(SqsError::from(e)),
                        Ok(Ok(value)) => Ok(value),
                        Err(e) => Err(e),
                    };
                    out.push((id, result));
                }
                Ok(out)
            })
        })
        .await?;
    let (mut successful, mut failed) = (Vec::new(), Vec::new());
    for (id, result) in results {
        match result {
            Ok(mut value) => {
                value["Id"] = json!(id);
                successful.push(value);
            }
            Err(e) => failed.push(e.batch_entry(&id)),
        }
    }
    Ok(json_body(
        json!({ "Successful": successful, "Failed": failed }),
    ))
}

pub async fn send_batch(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let request: BatchRequest<SendEntry> = parse(body)?;
    let queue = sqs.queue_name(request.queue_url.as_deref())?;
    check_batch(
        &request.entries,
        request.entries.iter().flatten().map(|e| e.id.as_str()),
    )?;
    let entries = request.entries.unwrap_or_default();
    let total: usize = entries
        .iter()
        .map(|e| {
            let attributes: usize = e
                .message_attributes
                .iter()
                .map(|(n, v)| {
                    n.len()
                        + v.string_value.as_ref().map_or(0, String::len)
                        + v.binary_value.as_ref().map_or(0, |b| b.len() / 4 * 3)
                })
                .sum();
            e.message_body.as_ref().map_or(0, String::len) + attributes
        })
        .sum();
    if total > BATCH_PAYLOAD_MAX_BYTES {
        return Err(SqsError::new(
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            format!(
                "Batch requests cannot be longer than {BATCH_PAYLOAD_MAX_BYTES} bytes; this one is {total}."
            ),
        ));
    }
    let entries: Vec<_> = entries
        .into_iter()
        .map(|e| (e.id.clone(), e.to_message()))
        .collect();
    let name = queue.clone();
    let answer = run_batch(&sqs, queue, entries, |conn, tenant, queue, now, message| {
        let sent = nimbus_queues::send_message(conn, tenant, queue, &message, now)?;
        Ok(sent_json(&sent))
    })
    .await?;
    sqs.queues.ring(&sqs.tenant, &name);
    Ok(answer)
}

/// A checked batch of receipt-handle entries: the queue, and each entry's
/// id with what `each` makes of it.
fn handle_batch<T>(
    sqs: &Sqs,
    body: &[u8],
    each: impl Fn(&HandleEntry) -> T,
) -> Result<(String, Vec<(String, T)>), SqsError> {
    let request: BatchRequest<HandleEntry> = parse(body)?;
    let queue = sqs.queue_name(request.queue_url.as_deref())?;
    check_batch(
        &request.entries,
        request.entries.iter().flatten().map(|e| e.id.as_str()),
    )?;
    let entries = request
        .entries
        .unwrap_or_default()
        .iter()
        .map(|e| (e.id.clone(), each(e)))
        .collect();
    Ok((queue, entries))
}

pub async fn delete_batch(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let (queue, entries) = handle_batch(&sqs, body, HandleEntry::handle)?;
    run_batch(&sqs, queue, entries, |conn, tenant, queue, _, handle| {
        nimbus_queues::delete_message(conn, tenant, queue, &handle)?;
        Ok(json!({}))
    })
    .await
}

pub async fn change_visibility_batch(sqs: Sqs, body: &[u8]) -> Result<Response, SqsError> {
    let (queue, entries) = handle_batch(&sqs, body, HandleEntry::timeout)?;
    run_batch(
        &sqs,
        queue,
        entries,
        |conn, tenant, queue, now, (handle, timeout)| {
            nimbus_queues::change_visibility(conn, tenant, queue, &handle, timeout, now)?;
            Ok(json!({}))
        },
    )
    .await
}

//! Messages: send, receive, delete, change visibility, and expiry.

use crate::digest::{md5_of_attributes, md5_of_body};
use crate::queues::{QueueInfo, get_queue, oldest_kept_ms};
use crate::receipt::Receipt;
use crate::schema::atomically;
use crate::{
    DELAY_MAX_S, IN_FLIGHT_MAX, MESSAGE_ATTRIBUTES_MAX, QueueError, RECEIVE_BATCH_MAX,
    VISIBILITY_TIMEOUT_MAX_S,
};
use rusqlite::{Connection, params};
use std::collections::BTreeMap;

mod attributes;
mod claims;

pub use attributes::MessageAttribute;
pub use claims::{DeleteOutcome, change_visibility, delete_message};

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    /// The body, as given.
    pub body: String,
    /// Seconds before its first delivery; the queue's `DelaySeconds` when
    /// `None`.
    pub delay_s: Option<u32>,
    /// Message attributes, by name.
    pub attributes: BTreeMap<String, MessageAttribute>,
}

/// What a send stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The message's id (a UUID).
    pub message_id: String,
    /// Hex MD5 of the body.
    pub md5_of_body: String,
    /// Hex MD5 of the attributes, when there are any.
    pub md5_of_attributes: Option<String>,
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// How many messages at most (1 to 10).
    pub max_messages: u32,
    /// The visibility timeout for these receives; the queue's when `None`.
    pub visibility_timeout_s: Option<u32>,
}

impl Default for ReceiveOptions {
    fn default() -> ReceiveOptions {
        ReceiveOptions {
            max_messages: 1,
            visibility_timeout_s: None,
        }
    }
}

/// One message as a receive hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message's id.
    pub message_id: String,
    /// The handle that deletes this receive of it.
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// Hex MD5 of the body.
    pub md5_of_body: String,
    /// All its message attributes (the API picks the ones asked for).
    pub attributes: BTreeMap<String, MessageAttribute>,
    /// The account that sent it (`SenderId`).
    pub sender: String,
    /// When it was sent, ms since the epoch (`SentTimestamp`).
    pub sent_ms: u64,
    /// How many times it has been received, this one included.
    pub receive_count: u32,
    /// When it was first received, ms since the epoch.
    pub first_receive_ms: u64,
}

/// Sends a message with only a body: what the async path needs to put a
/// record into a queue, inside its own transaction if `conn` is in one.
pub fn send(
    conn: &Connection,
    tenant: &str,
    queue: &str,
    body: &str,
    delay_s: Option<u32>,
    now_ms: u64,
) -> Result<SentMessage, QueueError> {
    let message = NewMessage {
        body: body.to_string(),
        delay_s,
        attributes: BTreeMap::new(),
    };
    send_message(conn, tenant, queue, &message, now_ms)
}

/// Sends a message.
pub fn send_message(
    conn: &Connection,
    tenant: &str,
    queue: &str,
    message: &NewMessage,
    now_ms: u64,
) -> Result<SentMessage, QueueError> {
    let queue = get_queue(conn, tenant, queue)?;
    check_body(&message.body)?;
    let delay_s = message.delay_s.unwrap_or(queue.settings.delay_s);
    if delay_s > DELAY_MAX_S {
        return Err(QueueError::InvalidParameterValue(format!(
            "Value {delay_s} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= {DELAY_MAX_S}."
        )));
    }
    if message.attributes.len() > MESSAGE_ATTRIBUTES_MAX {
        return Err(QueueError::InvalidParameterValue(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MESSAGE_ATTRIBUTES_MAX}].",
            message.attributes.len()
        )));
    }
    let mut size = message.body.len();
    for (name, attribute) in &message.attributes {
        size += attribute.check(name)?;
    }
    let max = queue.settings.max_message_bytes as usize;
    if size > max {
        return Err(QueueError::InvalidParameterValue(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {max} bytes (this one is {size}, body and attributes)."
        )));
    }
    let message_id = uuid::Uuid::new_v4().to_string();
    let attributes = attributes::to_column(&message.attributes);
    conn.prepare_cached(
        "INSERT INTO queue_messages (queue_id, message_id, body, attributes, sender, sent_ms, visible_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        queue.id,
        message_id,
        message.body,
        attributes,
        tenant,
        now_ms,
        now_ms + u64::from(delay_s) * 1_000,
    ])?;
    Ok(SentMessage {
        message_id,
        md5_of_body: md5_of_body(&message.body),
        md5_of_attributes: md5_of_attributes(&message.attributes),
    })
}

/// SQS accepts only these characters (XML's): #x9, #xA, #xD, #x20 to
/// #xD7FF, #xE000 to #xFFFD, #x10000 to #x10FFFF.
fn check_body(body: &str) -> Result<(), QueueError> {
    if body.is_empty() {
        return Err(QueueError::MissingParameter("MessageBody"));
    }
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}'
    };
    if let Some(bad) = body.chars().find(|&c| !allowed(c)) {
        return Err(QueueError::InvalidMessageContents(format!(
            "{:#x} is not allowed.",
            u32::from(bad)
        )));
    }
    Ok(())
}

/// Receives up to `max_messages` available messages, oldest first, and
/// hides them for the visibility timeout. Expired messages are deleted
/// first and never delivered.
pub fn receive(
    conn: &Connection,
    tenant: &str,
    queue: &str,
    options: &ReceiveOptions,
    now_ms: u64,
) -> Result<Vec<ReceivedMessage>, QueueError> {
    if !(1..=RECEIVE_BATCH_MAX).contains(&options.max_messages) {
        return Err(QueueError::InvalidParameterValue(format!(
            "Value {} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and {RECEIVE_BATCH_MAX}, if provided.",
            options.max_messages
        )));
    }
    check_visibility_timeout(options.visibility_timeout_s)?;
    atomically(conn, |conn| {
        let queue = get_queue(conn, tenant, queue)?;
        delete_expired(conn, &queue, now_ms)?;
        check_in_flight(conn, &queue, now_ms)?;
        let timeout_s = options
            .visibility_timeout_s
            .unwrap_or(queue.settings.visibility_timeout_s);
        let visible_ms = now_ms + u64::from(timeout_s) * 1_000;
        let mut select = conn.prepare_cached(
            "SELECT seq, message_id, body, attributes, sender, sent_ms, receive_count, first_receive_ms
             FROM queue_messages WHERE queue_id = ?1 AND visible_ms <= ?2
             ORDER BY seq LIMIT ?3",
        )?;
        let rows = select.query_map(params![queue.id, now_ms, options.max_messages], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u64>(5)?,
                r.get::<_, u32>(6)?,
                r.get::<_, Option<u64>>(7)?,
            ))
        })?;
        // Read first, then write: updating rows under an open scan of the
        // same index would depend on SQLite's cursor behaviour.
        let rows: Vec<_> = rows.collect::<Result<_, _>>()?;
        let mut update = conn.prepare_cached(
            "UPDATE queue_messages SET visible_ms = ?2, receive_count = ?3, receipt = ?4,
                 received_ms = ?5, first_receive_ms = COALESCE(first_receive_ms, ?5)
             WHERE seq = ?1",
        )?;
        let mut received = Vec::new();
        for (seq, message_id, body, attributes, sender, sent_ms, count, first) in rows {
            let receipt = Receipt {
                seq,
                receive_count: count + 1,
                token: Receipt::new_token(),
            };
            update.execute(params![
                seq,
                visible_ms,
                receipt.receive_count,
                receipt.token,
                now_ms
            ])?;
            received.push(ReceivedMessage {
                message_id,
                receipt_handle: receipt.encode(),
                md5_of_body: md5_of_body(&body),
                body,
                attributes: attributes::from_column(attributes.as_deref())?,
                sender,
                sent_ms,
                receive_count: receipt.receive_count,
                first_receive_ms: first.unwrap_or(now_ms),
            });
        }
        Ok(received)
    })
}

pub(crate) fn check_visibility_timeout(timeout_s: Option<u32>) -> Result<(), QueueError> {
    match timeout_s {
        Some(t) if t > VISIBILITY_TIMEOUT_MAX_S => Err(QueueError::InvalidParameterValue(format!(
            "Value {t} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and {VISIBILITY_TIMEOUT_MAX_S}, if provided."
        ))),
        _ => Ok(()),
    }
}

fn delete_expired(conn: &Connection, queue: &QueueInfo, now_ms: u64) -> Result<usize, QueueError> {
    Ok(conn
        .prepare_cached("DELETE FROM queue_messages WHERE queue_id = ?1 AND sent_ms <= ?2")?
        .execute(params![queue.id, oldest_kept_ms(queue, now_ms)])?)
}

fn check_in_flight(conn: &Connection, queue: &QueueInfo, now_ms: u64) -> Result<(), QueueError> {
    let in_flight: u64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM queue_messages
             WHERE queue_id = ?1 AND visible_ms > ?2 AND receive_count > 0",
        )?
        .query_row(params![queue.id, now_ms], |r| r.get(0))?;
    if in_flight >= IN_FLIGHT_MAX {
        return Err(QueueError::OverLimit(queue.name.clone()));
    }
    Ok(())
}

/// Deletes every message past its queue's retention period, in every queue;
/// returns how many. The platform runs this now and then; receives also
/// delete their queue's expired messages before they look.
pub fn sweep_expired(conn: &Connection, now_ms: u64) -> Result<usize, QueueError> {
    Ok(conn.execute(
        "DELETE FROM queue_messages WHERE seq IN (
             SELECT m.seq FROM queue_messages m JOIN queues q ON q.id = m.queue_id
             WHERE m.sent_ms <= ?1 - q.retention * 1000)",
        [now_ms],
    )?)
}

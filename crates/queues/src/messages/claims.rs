//! What a receipt handle can do: delete its message or change its
//! visibility, only while it is the latest receive's.

use super::check_visibility_timeout;
use crate::queues::{QueueInfo, get_queue};
use crate::receipt::Receipt;
use crate::schema::atomically;
use crate::{QueueError, VISIBILITY_TIMEOUT_MAX_S};
use rusqlite::{Connection, OptionalExtension, params};

/// What became of a DeleteMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The message was deleted.
    Deleted,
    /// The handle is from an older receive: the message was received again
    /// since, and the newer receive's claim stands (SQS answers success
    /// and keeps the message).
    Stale,
    /// The message is already gone (deleted, purged or expired).
    Gone,
}

/// The message row a handle names, in this queue: its receive count and
/// latest token, and when it becomes visible and was last received.
struct Claim {
    receive_count: u32,
    token: Option<String>,
    visible_ms: u64,
    received_ms: Option<u64>,
}

fn claim(
    conn: &Connection,
    queue: &QueueInfo,
    receipt: &Receipt,
) -> Result<Option<Claim>, QueueError> {
    Ok(conn
        .prepare_cached(
            "SELECT receive_count, receipt, visible_ms, received_ms FROM queue_messages
             WHERE seq = ?1 AND queue_id = ?2",
        )?
        .query_row(params![receipt.seq, queue.id], |r| {
            Ok(Claim {
                receive_count: r.get(0)?,
                token: r.get(1)?,
                visible_ms: r.get(2)?,
                received_ms: r.get(3)?,
            })
        })
        .optional()?)
}

/// Whether `claim` is the receive `receipt` came from; a handle with the
/// current count but another token was never issued: it is invalid.
fn is_current(claim: &Claim, receipt: &Receipt, handle: &str) -> Result<bool, QueueError> {
    if claim.receive_count != receipt.receive_count {
        return Ok(false);
    }
    if claim.token.as_deref() != Some(receipt.token.as_str()) {
        return Err(QueueError::ReceiptHandleIsInvalid(handle.to_string()));
    }
    Ok(true)
}

/// Deletes the message a receipt handle names, if the handle is from its
/// latest receive. A stale handle deletes nothing and is not an error: SQS
/// documents that an old handle "will succeed, but the message might not
/// be deleted", and deleting would drop a message another consumer now holds.
pub fn delete_message(
    conn: &Connection,
    tenant: &str,
    queue: &str,
    receipt_handle: &str,
) -> Result<DeleteOutcome, QueueError> {
    atomically(conn, |conn| {
        let queue = get_queue(conn, tenant, queue)?;
        let receipt = Receipt::parse(receipt_handle)?;
        let Some(claim) = claim(conn, &queue, &receipt)? else {
            return Ok(DeleteOutcome::Gone);
        };
        if !is_current(&claim, &receipt, receipt_handle)? {
            return Ok(DeleteOutcome::Stale);
        }
        conn.prepare_cached("DELETE FROM queue_messages WHERE seq = ?1")?
            .execute([receipt.seq])?;
        Ok(DeleteOutcome::Deleted)
    })
}

/// Sets how long the message a handle names stays invisible, counted from
/// `now_ms`; 0 makes it visible at once. Only the latest receive's handle
/// may, only while the message is in flight, and never beyond 12 hours
/// after that receive.
pub fn change_visibility(
    conn: &Connection,
    tenant: &str,
    queue: &str,
    receipt_handle: &str,
    timeout_s: u32,
    now_ms: u64,
) -> Result<(), QueueError> {
    check_visibility_timeout(Some(timeout_s))?;
    atomically(conn, |conn| {
        let queue = get_queue(conn, tenant, queue)?;
        let receipt = Receipt::parse(receipt_handle)?;
        let gone = || {
            QueueError::InvalidParameterValue(format!(
                "Value {receipt_handle} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change (the handle is not from its latest receive)."
            ))
        };
        let claim = claim(conn, &queue, &receipt)?.ok_or_else(gone)?;
        if !is_current(&claim, &receipt, receipt_handle)? {
            return Err(gone());
        }
        if claim.visible_ms <= now_ms {
            return Err(QueueError::MessageNotInflight);
        }
        let visible_ms = now_ms + u64::from(timeout_s) * 1_000;
        let limit_ms =
            claim.received_ms.unwrap_or(now_ms) + u64::from(VISIBILITY_TIMEOUT_MAX_S) * 1_000;
        if visible_ms > limit_ms {
            return Err(QueueError::InvalidParameterValue(format!(
                "Value {timeout_s} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [{VISIBILITY_TIMEOUT_MAX_S} seconds]."
            )));
        }
        conn.prepare_cached("UPDATE queue_messages SET visible_ms = ?2 WHERE seq = ?1")?
            .execute(params![receipt.seq, visible_ms])?;
        Ok(())
    })
}

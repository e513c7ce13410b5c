//! Queues themselves: create, look up, list, change, purge, delete.

use crate::schema::atomically;
use crate::settings::{QueueSettings, validate_queue_name};
use crate::{PURGE_INTERVAL_MS, QueueError};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// A queue as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The row id; never reused, so a queue deleted and made again is a
    /// new queue.
    pub id: i64,
    /// The owning tenant (account id).
    pub tenant: String,
    /// The queue's name.
    pub name: String,
    /// Its settable attributes.
    pub settings: QueueSettings,
    /// When it was created, ms since the epoch.
    pub created_ms: u64,
    /// When its attributes last changed, ms since the epoch.
    pub modified_ms: u64,
}

/// A queue with its message counts at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue.
    pub queue: QueueInfo,
    /// Messages a receive could take now (`ApproximateNumberOfMessages`).
    pub available: u64,
    /// Messages received and not yet deleted nor visible again.
    pub in_flight: u64,
    /// Messages whose delay has not passed yet.
    pub delayed: u64,
}

const QUEUE_COLUMNS: &str = "id, tenant, name, visibility_timeout, retention, delay, \
     receive_wait, max_message_bytes, created_ms, modified_ms";

fn queue_from_row(row: &Row) -> rusqlite::Result<QueueInfo> {
    Ok(QueueInfo {
        id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        settings: QueueSettings {
            visibility_timeout_s: row.get(3)?,
            retention_s: row.get(4)?,
            delay_s: row.get(5)?,
            receive_wait_s: row.get(6)?,
            max_message_bytes: row.get(7)?,
        },
        created_ms: row.get(8)?,
        modified_ms: row.get(9)?,
    })
}

/// The queue's ARN.
pub fn queue_arn(region: &str, tenant: &str, name: &str) -> String {
    format!("arn:aws:sqs:{region}:{tenant}:{name}")
}

/// Creates a queue, or returns the existing one of that name when every
/// attribute given has the value it already holds (SQS's idempotence);
/// `QueueNameExists` when one differs.
pub fn create_queue(
    conn: &Connection,
    tenant: &str,
    name: &str,
    attributes: &[(String, String)],
    now_ms: u64,
) -> Result<QueueInfo, QueueError> {
    validate_queue_name(name)?;
    let mut settings = QueueSettings::default();
    for (key, value) in attributes {
        settings.apply(key, value)?;
    }
    atomically(conn, |conn| {
        if let Some(existing) = find_queue(conn, tenant, name)? {
            for (key, _) in attributes {
                if existing.settings.value_of(key) != settings.value_of(key) {
                    return Err(QueueError::QueueNameExists {
                        queue: name.to_string(),
                        attribute: key.clone(),
                    });
                }
            }
            return Ok(existing);
        }
        conn.execute(
            "INSERT INTO queues (tenant, name, visibility_timeout, retention, delay,
                 receive_wait, max_message_bytes, created_ms, modified_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![
                tenant,
                name,
                settings.visibility_timeout_s,
                settings.retention_s,
                settings.delay_s,
                settings.receive_wait_s,
                settings.max_message_bytes,
                now_ms,
            ],
        )?;
        Ok(QueueInfo {
            id: conn.last_insert_rowid(),
            tenant: tenant.to_string(),
            name: name.to_string(),
            settings,
            created_ms: now_ms,
            modified_ms: now_ms,
        })
    })
}

fn find_queue(
    conn: &Connection,
    tenant: &str,
    name: &str,
) -> Result<Option<QueueInfo>, QueueError> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE tenant = ?1 AND name = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![tenant, name], queue_from_row)
        .optional()?)
}

/// The tenant's queue of that name, or `QueueDoesNotExist`.
pub fn get_queue(conn: &Connection, tenant: &str, name: &str) -> Result<QueueInfo, QueueError> {
    find_queue(conn, tenant, name)?.ok_or_else(|| QueueError::QueueDoesNotExist(name.to_string()))
}

/// The tenant's queue an ARN (`arn:aws:sqs:REGION:ACCOUNT:NAME`) names. An
/// ARN of another account names no queue of this tenant's.
pub fn queue_by_arn(conn: &Connection, tenant: &str, arn: &str) -> Result<QueueInfo, QueueError> {
    let parts: Vec<&str> = arn.split(':').collect();
    let ["arn", _partition, "sqs", _region, account, name] = parts.as_slice() else {
        return Err(QueueError::InvalidParameterValue(format!(
            "{arn:?} is not a queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)."
        )));
    };
    if *account != tenant {
        return Err(QueueError::QueueDoesNotExist(arn.to_string()));
    }
    get_queue(conn, tenant, name)
}

/// Deletes a queue and every message in it.
pub fn delete_queue(conn: &Connection, tenant: &str, name: &str) -> Result<(), QueueError> {
    atomically(conn, |conn| {
        let queue = get_queue(conn, tenant, name)?;
        conn.execute("DELETE FROM queue_messages WHERE queue_id = ?1", [queue.id])?;
        conn.execute("DELETE FROM queues WHERE id = ?1", [queue.id])?;
        Ok(())
    })
}

/// Up to `limit` of the tenant's queue names in name order, those starting
/// with `prefix`, after `after` (the last name of the previous page).
pub fn list_queues(
    conn: &Connection,
    tenant: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, QueueError> {
    // Prefix matched in Rust, not with LIKE, whose `_` is a wildcard and
    // whose case rules differ from SQS's.
    let mut statement = conn.prepare_cached(
        "SELECT name FROM queues WHERE tenant = ?1 AND name >= ?2 AND name > ?3 ORDER BY name",
    )?;
    let rows = statement.query_map(params![tenant, prefix, after.unwrap_or("")], |r| {
        r.get::<_, String>(0)
    })?;
    let mut names = Vec::new();
    for name in rows {
        let name = name?;
        if !name.starts_with(prefix) || names.len() == limit {
            break;
        }
        names.push(name);
    }
    Ok(names)
}

/// Changes attributes of a queue; all are checked before any is applied.
pub fn set_queue_attributes(
    conn: &Connection,
    tenant: &str,
    name: &str,
    attributes: &[(String, String)],
    now_ms: u64,
) -> Result<QueueInfo, QueueError> {
    atomically(conn, |conn| {
        let mut queue = get_queue(conn, tenant, name)?;
        for (key, value) in attributes {
            queue.settings.apply(key, value)?;
        }
        let s = queue.settings;
        conn.execute(
            "UPDATE queues SET visibility_timeout = ?2, retention = ?3, delay = ?4,
                 receive_wait = ?5, max_message_bytes = ?6, modified_ms = ?7
             WHERE id = ?1",
            params![
                queue.id,
                s.visibility_timeout_s,
                s.retention_s,
                s.delay_s,
                s.receive_wait_s,
                s.max_message_bytes,
                now_ms
            ],
        )?;
        queue.modified_ms = now_ms;
        Ok(queue)
    })
}

/// The queue with its message counts at `now_ms`. Expired messages are not
/// counted (they are gone, even if not yet swept).
pub fn queue_stats(
    conn: &Connection,
    tenant: &str,
    name: &str,
    now_ms: u64,
) -> Result<QueueStats, QueueError> {
    let queue = get_queue(conn, tenant, name)?;
    let oldest_kept = oldest_kept_ms(&queue, now_ms);
    let (available, in_flight, delayed) = conn
        .prepare_cached(
            "SELECT
                 COALESCE(SUM(visible_ms <= ?2), 0),
                 COALESCE(SUM(visible_ms > ?2 AND receive_count > 0), 0),
                 COALESCE(SUM(visible_ms > ?2 AND receive_count = 0), 0)
             FROM queue_messages WHERE queue_id = ?1 AND sent_ms > ?3",
        )?
        .query_row(params![queue.id, now_ms, oldest_kept], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(QueueStats {
        queue,
        available,
        in_flight,
        delayed,
    })
}

/// Messages sent at or before this instant are past the queue's retention.
/// Signed: early in the epoch (tests) it is negative, and nothing expired.
pub(crate) fn oldest_kept_ms(queue: &QueueInfo, now_ms: u64) -> i64 {
    now_ms as i64 - i64::from(queue.settings.retention_s) * 1_000
}

/// Deletes every message in the queue. One purge per queue per 60 s, as
/// SQS has it.
pub fn purge_queue(
    conn: &Connection,
    tenant: &str,
    name: &str,
    now_ms: u64,
) -> Result<(), QueueError> {
    atomically(conn, |conn| {
        let queue = get_queue(conn, tenant, name)?;
        let last: Option<u64> = conn.query_row(
            "SELECT purged_ms FROM queues WHERE id = ?1",
            [queue.id],
            |r| r.get(0),
        )?;
        if last.is_some_and(|last| now_ms < last.saturating_add(PURGE_INTERVAL_MS)) {
            return Err(QueueError::PurgeQueueInProgress(name.to_string()));
        }
        conn.execute("DELETE FROM queue_messages WHERE queue_id = ?1", [queue.id])?;
        conn.execute(
            "UPDATE queues SET purged_ms = ?2 WHERE id = ?1",
            params![queue.id, now_ms],
        )?;
        Ok(())
    })
}

//! The queues' tables. They live in whatever SQLite file the caller opens
//! (the platform's `async.db`, shared with the async path's journal), so
//! their names carry the `queue` prefix.

use crate::QueueError;
use rusqlite::Connection;

/// Creates the queue tables if they are missing. Idempotent.
pub fn create_schema(conn: &Connection) -> Result<(), QueueError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS queues (
            id                 INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant             TEXT    NOT NULL,
            name               TEXT    NOT NULL,
            visibility_timeout INTEGER NOT NULL,
            retention          INTEGER NOT NULL,
            delay              INTEGER NOT NULL,
            receive_wait       INTEGER NOT NULL,
            max_message_bytes  INTEGER NOT NULL,
            created_ms         INTEGER NOT NULL,
            modified_ms        INTEGER NOT NULL,
            purged_ms          INTEGER,
            UNIQUE (tenant, name)
        );
        -- seq orders messages by arrival and is never reused (AUTOINCREMENT),
        -- so a receipt handle can never come to name another message.
        CREATE TABLE IF NOT EXISTS queue_messages (
            seq              INTEGER PRIMARY KEY AUTOINCREMENT,
            queue_id         INTEGER NOT NULL,
            message_id       TEXT    NOT NULL,
            body             TEXT    NOT NULL,
            attributes       TEXT,
            sender           TEXT    NOT NULL,
            sent_ms          INTEGER NOT NULL,
            visible_ms       INTEGER NOT NULL,
            receive_count    INTEGER NOT NULL DEFAULT 0,
            first_receive_ms INTEGER,
            received_ms      INTEGER,
            receipt          TEXT
        );
        CREATE INDEX IF NOT EXISTS queue_messages_visible
            ON queue_messages (queue_id, visible_ms, seq);
        CREATE INDEX IF NOT EXISTS queue_messages_sent
            ON queue_messages (queue_id, sent_ms);",
    )?;
    Ok(())
}

/// Runs `work` in one transaction: the caller's, when `conn` is already in
/// one (the async path enqueuing inside its own), else a new immediate one
/// (which takes the write lock first, so a read-then-write cannot fail
/// halfway on a busy snapshot) that commits when `work` succeeds.
pub fn atomically<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, QueueError>,
) -> Result<T, QueueError> {
    if !conn.is_autocommit() {
        return work(conn);
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let out = work(&tx)?;
    tx.commit()?;
    Ok(out)
}

//! The journal's tables, and reading a row back with its checksums checked.

use crate::record::{Dispatch, NewInvocation, State, fact_sum};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Creates the tables if they are missing.
pub(crate) fn create(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS journal_meta (
            key   TEXT    PRIMARY KEY,
            value INTEGER NOT NULL
        );
        -- One row per accepted invocation: the fact (under fact_sum) and
        -- its dispatch state (under state_sum).
        CREATE TABLE IF NOT EXISTS invocations (
            seq             INTEGER PRIMARY KEY,
            id              TEXT    NOT NULL UNIQUE,
            tenant          TEXT    NOT NULL,
            function        TEXT    NOT NULL,
            qualifier       TEXT    NOT NULL,
            version         TEXT    NOT NULL,
            payload         BLOB    NOT NULL,
            idempotency_key TEXT,
            accepted_at_ms  INTEGER NOT NULL,
            fact_sum        INTEGER NOT NULL,
            state           TEXT    NOT NULL,
            epoch           INTEGER NOT NULL,
            attempts        INTEGER NOT NULL,
            due_at_ms       INTEGER NOT NULL,
            lease_until_ms  INTEGER NOT NULL,
            updated_at_ms   INTEGER NOT NULL,
            last_error      TEXT,
            condition       TEXT,
            state_sum       INTEGER NOT NULL
        );
        -- The partial indexes' predicates are plain comparisons, never an
        -- IN list: SQLite evaluates an IN list through a temporary b-tree,
        -- built and freed for the old and the new row of every UPDATE.
        -- Queries name the same predicates (WAITING, UNFINISHED), or the
        -- indexes go unused.
        DROP INDEX IF EXISTS invocations_by_function;
        CREATE INDEX IF NOT EXISTS invocations_due ON invocations (due_at_ms)
            WHERE (state = 'queued' OR state = 'retrying');
        DROP INDEX IF EXISTS invocations_waiting;
        CREATE INDEX IF NOT EXISTS invocations_leased ON invocations (lease_until_ms)
            WHERE state = 'running';
        CREATE INDEX IF NOT EXISTS invocations_unfinished ON invocations (tenant, function)
            WHERE state <> 'succeeded' AND state <> 'failed' AND state <> 'dead-lettered';
        -- One row per claim: who held the invocation under which epoch, and
        -- how that attempt ended (or that its late ending was refused).
        CREATE TABLE IF NOT EXISTS attempts (
            seq           INTEGER NOT NULL,
            epoch         INTEGER NOT NULL,
            started_at_ms INTEGER NOT NULL,
            ended_at_ms   INTEGER,
            outcome       TEXT,
            error         TEXT,
            PRIMARY KEY (seq, epoch)
        );
        CREATE TABLE IF NOT EXISTS idempotency (
            tenant         TEXT    NOT NULL,
            function       TEXT    NOT NULL,
            key            TEXT    NOT NULL,
            id             TEXT    NOT NULL,
            accepted_at_ms INTEGER NOT NULL,
            PRIMARY KEY (tenant, function, key)
        );
        -- Records whose checksums failed: kept for inspection, never run.
        CREATE TABLE IF NOT EXISTS quarantine (
            seq         INTEGER PRIMARY KEY,
            id          TEXT,
            tenant      TEXT,
            function    TEXT,
            payload     BLOB,
            reason      TEXT    NOT NULL,
            found_at_ms INTEGER NOT NULL
        );",
    )
}

/// The invocations waiting for an attempt (the `invocations_due` index's
/// predicate, verbatim).
pub(crate) const WAITING: &str = "(state = 'queued' OR state = 'retrying')";

/// The invocations not finished (the `invocations_unfinished` index's
/// predicate, verbatim).
pub(crate) const UNFINISHED: &str =
    "state <> 'succeeded' AND state <> 'failed' AND state <> 'dead-lettered'";

/// The columns [`read_row`] expects, in order.
pub(crate) const COLUMNS: &str = "seq, id, tenant, function, qualifier, version, payload, \
     idempotency_key, accepted_at_ms, fact_sum, state, epoch, attempts, due_at_ms, \
     lease_until_ms, updated_at_ms, last_error, condition, state_sum";

/// A stored invocation, checked.
pub(crate) struct Stored {
    pub seq: u64,
    pub id: String,
    pub accepted_at_ms: i64,
    pub invocation: NewInvocation,
    pub dispatch: Dispatch,
}

/// A row as read: checked, or damaged with the reason.
pub(crate) enum Checked {
    Sound(Stored),
    Damaged {
        seq: u64,
        id: Option<String>,
        tenant: Option<String>,
        function: Option<String>,
        payload: Option<Vec<u8>>,
        reason: String,
    },
}

/// Reads one row (selected with [`COLUMNS`]) and checks both sums.
pub(crate) fn read_row(row: &Row<'_>) -> rusqlite::Result<Checked> {
    let seq: i64 = row.get(0)?;
    let seq = seq as u64;
    let text = |i: usize| row.get::<_, Option<String>>(i).ok().flatten();
    let damaged = |reason: String| Checked::Damaged {
        seq,
        id: text(1),
        tenant: text(2),
        function: text(3),
        payload: row.get::<_, Option<Vec<u8>>>(6).ok().flatten(),
        reason,
    };
    // A flipped bit can also change a value's type: every read is checked.
    let fields = (|| -> rusqlite::Result<(String, i64, NewInvocation, i64)> {
        Ok((
            row.get(1)?,
            row.get(8)?,
            NewInvocation {
                tenant: row.get(2)?,
                function: row.get(3)?,
                qualifier: row.get(4)?,
                version: row.get(5)?,
                payload: row.get(6)?,
                idempotency_key: row.get(7)?,
            },
            row.get(9)?,
        ))
    })();
    let (id, accepted_at_ms, invocation, stored_fact_sum) = match fields {
        Ok(f) => f,
        Err(e) => return Ok(damaged(format!("the invocation does not read back: {e}"))),
    };
    if fact_sum(seq, &id, accepted_at_ms, &invocation) != stored_fact_sum {
        return Ok(damaged(
            "the invocation's checksum does not match its contents".into(),
        ));
    }
    let dispatch = (|| -> rusqlite::Result<(Option<State>, String, Dispatch, i64)> {
        let state_name: String = row.get(10)?;
        let attempts: i64 = row.get(12)?;
        let epoch: i64 = row.get(11)?;
        Ok((
            State::parse(&state_name),
            state_name,
            Dispatch {
                state: State::Queued,
                epoch: epoch as u64,
                attempts: attempts as u32,
                due_at_ms: row.get(13)?,
                lease_until_ms: row.get(14)?,
                updated_at_ms: row.get(15)?,
                last_error: row.get(16)?,
                condition: row.get(17)?,
            },
            row.get(18)?,
        ))
    })();
    let (state, state_name, mut dispatch, stored_state_sum) = match dispatch {
        Ok(d) => d,
        Err(e) => {
            return Ok(damaged(format!(
                "the dispatch state does not read back: {e}"
            )));
        }
    };
    let Some(state) = state else {
        return Ok(damaged(format!("unknown state {state_name:?}")));
    };
    dispatch.state = state;
    if dispatch.sum(seq) != stored_state_sum {
        return Ok(damaged(
            "the dispatch state's checksum does not match its contents".into(),
        ));
    }
    Ok(Checked::Sound(Stored {
        seq,
        id,
        accepted_at_ms,
        invocation,
        dispatch,
    }))
}

/// Reads the invocation `seq`, checked; `None` if there is none.
pub(crate) fn get(conn: &Connection, seq: u64) -> rusqlite::Result<Option<Checked>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM invocations WHERE seq = ?1"))?
        .query_row([seq as i64], read_row)
        .optional()
}

/// Moves a damaged record out of the way: it is kept in `quarantine`, and
/// never dispatched.
pub(crate) fn quarantine(
    conn: &Connection,
    damaged: &Checked,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let Checked::Damaged {
        seq,
        id,
        tenant,
        function,
        payload,
        reason,
    } = damaged
    else {
        return Ok(());
    };
    tracing::error!(seq, id = ?id, tenant = ?tenant, function = ?function, %reason, "damaged async invocation quarantined");
    conn.execute(
        "INSERT OR REPLACE INTO quarantine (seq, id, tenant, function, payload, reason, found_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![*seq as i64, id, tenant, function, payload, reason, now_ms],
    )?;
    conn.execute("DELETE FROM invocations WHERE seq = ?1", [*seq as i64])?;
    Ok(())
}

/// Writes a dispatch state with its checksum.
pub(crate) fn put_dispatch(conn: &Connection, seq: u64, d: &Dispatch) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE invocations SET state = ?2, epoch = ?3, attempts = ?4, due_at_ms = ?5,
             lease_until_ms = ?6, updated_at_ms = ?7, last_error = ?8, condition = ?9,
             state_sum = ?10
         WHERE seq = ?1",
    )?
    .execute(params![
        seq as i64,
        d.state.as_str(),
        d.epoch as i64,
        i64::from(d.attempts),
        d.due_at_ms,
        d.lease_until_ms,
        d.updated_at_ms,
        d.last_error,
        d.condition,
        d.sum(seq),
    ])?;
    Ok(())
}

/// The highest sequence number ever committed (0 for none).
pub(crate) fn max_seq(conn: &Connection) -> rusqlite::Result<u64> {
    let held: Option<i64> = conn
        .query_row(
            "SELECT value FROM journal_meta WHERE key = 'max_seq'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(held.unwrap_or(0) as u64)
}

/// Records the highest committed sequence number, in the same transaction
/// as the invocations it counts.
pub(crate) fn set_max_seq(conn: &Connection, seq: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO journal_meta (key, value) VALUES ('max_seq', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([seq as i64])?;
    Ok(())
}

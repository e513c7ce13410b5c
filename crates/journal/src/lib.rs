//! The async path's durable invocation log.
//!
//! An async invocation is accepted only once it is committed: SQLite in WAL
//! mode with `synchronous=FULL`, written by one thread that batches every
//! concurrent change into one transaction (group commit), so durability
//! costs one fsync per batch, not per request.
//!
//! - Every record carries two checksums — one over the immutable fact (the
//!   event and where it goes), one over its dispatch state — checked
//!   whenever it is read; a damaged record is reported and quarantined,
//!   never skipped silently and never run.
//! - A high-water mark outside SQLite ([`watermark`]) tells at start-up
//!   whether acknowledged work was lost.
//! - An idempotency key maps to at most one invocation per function within
//!   its window.
//! - An attempt owns its invocation through a lease and a fencing epoch:
//!   only an ending that carries the current epoch is recorded; a stale
//!   one is refused and counted.
//!
//! Time is the caller's (`now_ms` on every call), so tests replay hours in
//! no time.
#![deny(missing_docs)]

mod record;
mod schema;
mod watermark;
mod writer;

pub use record::{
    Accepted, AttemptRecord, Claimed, Completion, Delivery, Ending, NewInvocation, State, Status,
};

use rusqlite::{Connection, params};
use schema::Checked;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot};
use watermark::Watermark;
use writer::{Op, Writer};

/// How long a connection waits for SQLite's lock, in ms.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// How often the checkpointer copies the write-ahead log into the main
/// file (the writer never does: see [`checkpoints`]).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// How long an idempotency key holds, as nimbus documents it: 24 hours.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// What the journal is configured with.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// Unfinished invocations a tenant may have; beyond, accepts are refused.
    pub backlog_per_tenant: u64,
    /// How long an idempotency key maps to its first invocation, in ms.
    pub idempotency_window_ms: i64,
    /// Open a store found damaged anyway: quarantine damaged records and
    /// accept the store's own high-water mark.
    pub repair: bool,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            backlog_per_tenant: 100_000,
            idempotency_window_ms: IDEMPOTENCY_WINDOW_MS,
            repair: false,
        }
    }
}

/// Why the journal cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite or the disk failed.
    #[error("async journal store: {0}")]
    Store(String),
    /// Acknowledged invocations are missing: the store ends below the mark.
    #[error(
        "the async journal {path} has lost acknowledged invocations: it ends at sequence number {held}, but {mark} were acknowledged (the store file or its write-ahead log was damaged or replaced); restore it, or start with --repair-journal to run from what is left"
    )]
    Lost {
        /// The store file.
        path: PathBuf,
        /// The highest sequence number it holds.
        held: u64,
        /// The highest one acknowledged.
        mark: u64,
    },
    /// Records or the mark do not check out.
    #[error(
        "the async journal {path} is damaged: {details}; restore it, or start with --repair-journal to quarantine what is damaged and run from the rest"
    )]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What is damaged.
        details: String,
    },
    /// The writer thread is gone.
    #[error("the async journal's writer has stopped")]
    Closed,
}

/// Why an accept was refused. Nothing was stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcceptError {
    /// The tenant's backlog is full.
    #[error("the account has {limit} asynchronous invocations waiting, its limit")]
    Backlog {
        /// The bound.
        limit: u64,
    },
    /// The store failed; the invocation was not accepted.
    #[error("the invocation could not be stored: {0}")]
    Store(String),
}

fn store(e: rusqlite::Error) -> JournalError {
    JournalError::Store(e.to_string())
}

/// What the writer and the handles share.
pub(crate) struct Shared {
    config: JournalConfig,
    /// Woken after a commit that accepted invocations.
    accepted: Notify,
    /// Late endings refused by fencing.
    stale: AtomicU64,
    /// Damaged records moved aside.
    quarantined: AtomicU64,
    /// Transactions committed.
    batches: AtomicU64,
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Invocations not yet finished.
    pub unfinished: u64,
    /// Attempts that were running when the previous server stopped: their
    /// leases were ended, so they run again under a new epoch.
    pub interrupted: u64,
    /// Damaged records quarantined (only with `repair`).
    pub quarantined: u64,
}

/// An invocation that may be claimed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Its sequence number.
    pub seq: u64,
    /// The tenant.
    pub tenant: String,
    /// The function.
    pub function: String,
    /// The version it runs.
    pub version: String,
    /// The qualifier it was invoked with (its event-invoke configuration's).
    pub qualifier: String,
    /// When it was accepted, in ms since the Unix epoch.
    pub accepted_at_ms: i64,
    /// It is due because an attempt's lease ended (not because it waited).
    pub leased: bool,
}

/// The durable invocation log. Cheap to share behind an `Arc`.
pub struct Journal {
    path: PathBuf,
    ops: std::sync::mpsc::Sender<Op>,
    read: Mutex<Connection>,
    shared: Arc<Shared>,
}

fn connect(path: &Path) -> Result<Connection, JournalError> {
    let conn = Connection::open(path).map_err(store)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(store)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(store)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(store)?;
    Ok(conn)
}

impl Journal {
    /// Opens (creating) the journal in the SQLite file `path`, with its
    /// high-water mark beside it, and checks it: every record's checksums,
    /// the store's integrity, and the mark. The caller must hold the data
    /// directory exclusively: attempts still marked running belonged to a
    /// previous server, and their leases are ended here.
    pub fn open(
        path: &Path,
        config: JournalConfig,
        now_ms: i64,
    ) -> Result<(Journal, Recovery), JournalError> {
        let mut conn = connect(path)?;
        schema::create(&conn).map_err(store)?;
        // Dead letters and destination records go into the built-in queues
        // in the same transactions.
        nimbus_queues::create_schema(&conn).map_err(|e| JournalError::Store(e.to_string()))?;
        let damaged = |details: String| JournalError::Damaged {
            path: path.to_path_buf(),
            details,
        };
        let integrity: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| damaged(e.to_string()))?;
        if integrity != "ok" {
            return Err(damaged(format!(
                "SQLite's integrity check says: {integrity}"
            )));
        }
        let mark_path = watermark_path(path);
        let (watermark, mark) = Watermark::open(&mark_path)
            .map_err(|e| JournalError::Store(format!("open {}: {e}", mark_path.display())))?;
        let held = schema::max_seq(&conn).map_err(store)?;
        match mark {
            watermark::Read::Absent | watermark::Read::Mark(_) if config.repair => {}
            watermark::Read::Absent if held > 0 => {
                return Err(damaged(format!(
                    "its high-water mark {} is missing",
                    mark_path.display()
                )));
            }
            watermark::Read::Absent => {}
            watermark::Read::Mark(mark) if mark > held => {
                return Err(JournalError::Lost {
                    path: path.to_path_buf(),
                    held,
                    mark,
                });
            }
            watermark::Read::Mark(_) => {}
            watermark::Read::Damaged(why) if !config.repair => return Err(damaged(why)),
            watermark::Read::Damaged(why) => {
                tracing::warn!(%why, "replacing the async journal's damaged high-water mark (repair)");
            }
        }
        let mut recovery = Recovery::default();
        let tx = conn.transaction().map_err(store)?;
        let mut bad = Vec::new();
        let mut interrupted = Vec::new();
        {
            let mut rows = tx
                .prepare(&format!("SELECT {} FROM invocations", schema::COLUMNS))
                .map_err(store)?;
            let mut rows = rows.query([]).map_err(store)?;
            while let Some(row) = rows.next().map_err(store)? {
                match schema::read_row(row).map_err(store)? {
                    Checked::Sound(s) => {
                        if !s.dispatch.state.is_terminal() {
                            recovery.unfinished += 1;
                        }
                        if s.dispatch.state == State::Running {
                            interrupted.push((s.seq, s.dispatch));
                        }
                    }
                    damaged => bad.push(damaged),
                }
            }
        }
        if !bad.is_empty() {
            if !config.repair {
                let listed: Vec<String> = bad
                    .iter()
                    .take(5)
                    .map(|b| match b {
                        Checked::Damaged {
                            seq, id, reason, ..
                        } => format!("record {seq} ({}): {reason}", id.as_deref().unwrap_or("?")),
                        Checked::Sound(_) => String::new(),
                    })
                    .collect();
                return Err(damaged(format!(
                    "{} damaged record(s): {}",
                    bad.len(),
                    listed.join("; ")
                )));
            }
            for b in &bad {
                schema::quarantine(&tx, b, now_ms).map_err(store)?;
            }
            recovery.quarantined = bad.len() as u64;
        }
        for (seq, mut d) in interrupted {
            d.lease_until_ms = 0;
            schema::put_dispatch(&tx, seq, &d).map_err(store)?;
            tx.execute(
                "UPDATE attempts SET outcome = 'lost', error = 'the server stopped during the attempt'
                 WHERE seq = ?1 AND epoch = ?2 AND outcome IS NULL",
                params![seq as i64, d.epoch as i64],
            )
            .map_err(store)?;
            recovery.interrupted += 1;
        }
        tx.commit().map_err(store)?;
        watermark
            .set(held)
            .map_err(|e| JournalError::Store(format!("write {}: {e}", mark_path.display())))?;
        let mut backlog = std::collections::HashMap::new();
        {
            let mut q = conn
                .prepare(&format!(
                    "SELECT tenant, COUNT(*) FROM invocations WHERE {} GROUP BY tenant",
                    schema::UNFINISHED
                ))
                .map_err(store)?;
            let rows = q
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(store)?;
            for row in rows {
                let (tenant, n) = row.map_err(store)?;
                backlog.insert(tenant, n as u64);
            }
        }
        let shared = Arc::new(Shared {
            config,
            accepted: Notify::new(),
            stale: AtomicU64::new(0),
            quarantined: AtomicU64::new(recovery.quarantined),
            batches: AtomicU64::new(0),
        });
        let read = connect(path)?;
        // Checkpoints run on a thread of their own, so a commit never waits
        // for the log to be copied into the main file.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(store)?;
        let checkpointer = connect(path)?;
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || checkpoints(&checkpointer, &weak))
            .map_err(|e| JournalError::Store(format!("start the checkpoint thread: {e}")))?;
        let (ops, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            conn,
            watermark,
            next_seq: held + 1,
            backlog,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| JournalError::Store(format!("start the writer thread: {e}")))?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                ops,
                read: Mutex::new(read),
                shared,
            },
            recovery,
        ))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn ask<T>(&self, op: impl FnOnce(oneshot::Sender<T>) -> Op) -> Result<T, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.ops.send(op(tx)).map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)
    }

    /// Stores an invocation durably (its batch is committed and fsync'd
    /// before this returns), or finds the first one with its idempotency key.
    pub async fn accept(
        &self,
        invocation: NewInvocation,
        now_ms: i64,
    ) -> Result<Accepted, AcceptError> {
        self.ask(|reply| Op::Accept {
            invocation,
            now_ms,
            reply,
        })
        .await
        .map_err(|e| AcceptError::Store(e.to_string()))?
    }

    /// Claims the invocations picked (sequence number and lease length in
    /// ms each) that are still due, each under a new epoch.
    pub async fn claim(
        &self,
        picks: Vec<(u64, i64)>,
        now_ms: i64,
    ) -> Result<Vec<Claimed>, JournalError> {
        self.ask(|reply| Op::Claim {
            picks,
            now_ms,
            reply,
        })
        .await?
    }

    /// Records how the attempt `epoch` of `seq` ended — if that epoch still
    /// owns it.
    pub async fn end(
        &self,
        seq: u64,
        epoch: u64,
        ending: Ending,
        now_ms: i64,
    ) -> Result<Completion, JournalError> {
        self.ask(|reply| Op::End {
            seq,
            epoch,
            ending,
            now_ms,
            reply,
        })
        .await?
    }

    /// Puts off waiting invocations that cannot run now (their function is
    /// at its concurrency limit) without an attempt: each (sequence number,
    /// new due time, why) that is still waiting and due is moved; how many
    /// were.
    pub async fn defer(
        &self,
        picks: Vec<(u64, i64, String)>,
        now_ms: i64,
    ) -> Result<u64, JournalError> {
        self.ask(|reply| Op::Defer {
            picks,
            now_ms,
            reply,
        })
        .await?
    }

    /// Deletes finished invocations last changed before `before_ms`, and
    /// idempotency keys older than their window; how many invocations went.
    pub async fn purge(&self, before_ms: i64, now_ms: i64) -> Result<u64, JournalError> {
        let idempotency_before_ms = now_ms - self.shared.config.idempotency_window_ms;
        self.ask(|reply| Op::Purge {
            before_ms,
            idempotency_before_ms,
            reply,
        })
        .await?
    }

    /// Up to `limit` invocations that may be claimed at `now_ms`: waiting
    /// and due, or running under an ended lease; the longest due first.
    /// Blocking.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Due>, JournalError> {
        let conn = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let mut q = conn
            .prepare_cached(&format!(
                "SELECT seq, tenant, function, version, due_at_ms, accepted_at_ms, 0, qualifier
                     FROM invocations WHERE {} AND due_at_ms <= ?1
                 UNION ALL
                 SELECT seq, tenant, function, version, lease_until_ms, accepted_at_ms, 1, qualifier
                     FROM invocations WHERE state = 'running' AND lease_until_ms <= ?1
                 ORDER BY 5 LIMIT ?2",
                schema::WAITING
            ))
            .map_err(store)?;
        let rows = q
            .query_map(params![now_ms, limit as i64], |r| {
                Ok(Due {
                    seq: r.get::<_, i64>(0)? as u64,
                    tenant: r.get(1)?,
                    function: r.get(2)?,
                    version: r.get(3)?,
                    qualifier: r.get(7)?,
                    accepted_at_ms: r.get(5)?,
                    leased: r.get::<_, i64>(6)? == 1,
                })
            })
            .map_err(store)?;
        rows.collect::<Result<_, _>>().map_err(store)
    }

    /// When the next invocation falls due (a wait ends or a lease does),
    /// if any is waiting. Blocking.
    pub fn next_due_ms(&self) -> Result<Option<i64>, JournalError> {
        let conn = self.read.lock().unwrap_or_else(|p| p.into_inner());
        conn.prepare_cached(&format!(
            "SELECT MIN(t) FROM (
                 SELECT MIN(due_at_ms) AS t FROM invocations WHERE {}
                 UNION ALL
                 SELECT MIN(lease_until_ms) FROM invocations WHERE state = 'running')",
            schema::WAITING
        ))
        .map_err(store)?
        .query_row([], |r| r.get(0))
        .map_err(store)
    }

    /// One invocation's status with its attempts, if `tenant` has it.
    /// Blocking.
    pub fn status(&self, tenant: &str, id: &str) -> Result<Option<Status>, JournalError> {
        let conn = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let checked = conn
            .prepare_cached(&format!(
                "SELECT {} FROM invocations WHERE id = ?1 AND tenant = ?2",
                schema::COLUMNS
            ))
            .map_err(store)?
            .query_row(params![id, tenant], schema::read_row);
        let stored = match checked {
            Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
            Err(e) => return Err(store(e)),
            Ok(Checked::Sound(s)) => s,
            Ok(Checked::Damaged { seq, reason, .. }) => {
                return Err(JournalError::Damaged {
                    path: self.path.clone(),
                    details: format!("record {seq} ({id}): {reason}"),
                });
            }
        };
        let mut q = conn
            .prepare_cached(
                "SELECT epoch, started_at_ms, ended_at_ms, outcome, error FROM attempts
                 WHERE seq = ?1 ORDER BY epoch",
            )
            .map_err(store)?;
        let history = q
            .query_map([stored.seq as i64], |r| {
                Ok(AttemptRecord {
                    epoch: r.get::<_, i64>(0)? as u64,
                    started_at_ms: r.get(1)?,
                    ended_at_ms: r.get(2)?,
                    outcome: r.get(3)?,
                    error: r.get(4)?,
                })
            })
            .map_err(store)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(store)?;
        let d = stored.dispatch;
        Ok(Some(Status {
            id: stored.id,
            function: stored.invocation.function,
            qualifier: stored.invocation.qualifier,
            version: stored.invocation.version,
            state: d.state,
            attempts: d.attempts,
            accepted_at_ms: stored.accepted_at_ms,
            updated_at_ms: d.updated_at_ms,
            due_at_ms: d.due_at_ms,
            last_error: d.last_error,
            condition: d.condition,
            history,
        }))
    }

    /// A tenant's unfinished invocations per function. Blocking.
    pub fn backlog(&self, tenant: &str) -> Result<Vec<(String, u64)>, JournalError> {
        let conn = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let mut q = conn
            .prepare_cached(&format!(
                "SELECT function, COUNT(*) FROM invocations
                 WHERE tenant = ?1 AND {}
                 GROUP BY function ORDER BY function",
                schema::UNFINISHED
            ))
            .map_err(store)?;
        let rows = q
            .query_map([tenant], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(store)?;
        rows.collect::<Result<_, _>>().map_err(store)
    }

    /// Resolves when a commit has accepted new invocations (or at once if
    /// one did since the last wait).
    pub async fn accepted(&self) {
        self.shared.accepted.notified().await;
    }

    /// Late endings refused by fencing since the journal opened.
    pub fn stale_endings(&self) -> u64 {
        self.shared.stale.load(Ordering::Relaxed)
    }

    /// Damaged records quarantined since the journal opened.
    pub fn quarantined(&self) -> u64 {
        self.shared.quarantined.load(Ordering::Relaxed)
    }

    /// Transactions committed since the journal opened.
    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::Relaxed)
    }
}

/// Copies the write-ahead log into the main file every
/// [`CHECKPOINT_EVERY`] (passive: it never waits for, nor blocks, the
/// writer), until the journal is gone.
fn checkpoints(conn: &Connection, journal: &std::sync::Weak<Shared>) {
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if journal.strong_count() == 0 {
            return;
        }
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
        if let Err(e) = done {
            tracing::warn!(error = %e, "async journal checkpoint failed; the next one retries");
        }
    }
}

/// Where the high-water mark of the journal at `path` lives.
pub fn watermark_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".mark");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests;

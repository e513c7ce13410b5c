//! The one writer: a thread that applies every change in batches, one
//! transaction (and so one fsync) per batch — group commit. Callers wait
//! for their batch's commit; while one batch is being made durable, the
//! next gathers.

use crate::record::{
    Accepted, Claimed, Completion, Delivery, Dispatch, Ending, NewInvocation, State, fact_sum,
};
use crate::schema::{self, Checked};
use crate::watermark::Watermark;
use crate::{AcceptError, JournalError, Shared};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use tokio::sync::oneshot;

/// The most changes one transaction takes; more wait for the next.
const BATCH_MAX: usize = 1024;

/// A change asked of the writer, with where its answer goes.
pub(crate) enum Op {
    Accept {
        invocation: NewInvocation,
        now_ms: i64,
        reply: oneshot::Sender<Result<Accepted, AcceptError>>,
    },
    Claim {
        /// (sequence number, lease in ms) of each invocation wanted.
        picks: Vec<(u64, i64)>,
        now_ms: i64,
        reply: oneshot::Sender<Result<Vec<Claimed>, JournalError>>,
    },
    End {
        seq: u64,
        epoch: u64,
        ending: Ending,
        now_ms: i64,
        reply: oneshot::Sender<Result<Completion, JournalError>>,
    },
    Defer {
        /// (sequence number, new due time, why) of each.
        picks: Vec<(u64, i64, String)>,
        now_ms: i64,
        reply: oneshot::Sender<Result<u64, JournalError>>,
    },
    Purge {
        before_ms: i64,
        idempotency_before_ms: i64,
        reply: oneshot::Sender<Result<u64, JournalError>>,
    },
}

/// An answer held until its batch commits.
enum Answer {
    Accept(
        oneshot::Sender<Result<Accepted, AcceptError>>,
        Result<Accepted, AcceptError>,
    ),
    Claim(
        oneshot::Sender<Result<Vec<Claimed>, JournalError>>,
        Vec<Claimed>,
    ),
    End(
        oneshot::Sender<Result<Completion, JournalError>>,
        Completion,
    ),
    /// A count: of invocations deferred or purged.
    Count(oneshot::Sender<Result<u64, JournalError>>, u64),
}

impl Op {
    /// The answer of a change the batch never applied, to be failed.
    fn unanswered(self) -> Answer {
        match self {
            Op::Accept { reply, .. } => {
                Answer::Accept(reply, Ok(Accepted::New { id: String::new() }))
            }
            Op::Claim { reply, .. } => Answer::Claim(reply, Vec::new()),
            Op::End { reply, .. } => Answer::End(reply, Completion::Stale),
            Op::Defer { reply, .. } | Op::Purge { reply, .. } => Answer::Count(reply, 0),
        }
    }
}

impl Answer {
    fn send(self) {
        // A caller that went away no longer needs its answer; what was
        // committed stays committed.
        match self {
            Answer::Accept(tx, r) => drop(tx.send(r)),
            Answer::Claim(tx, r) => drop(tx.send(Ok(r))),
            Answer::End(tx, r) => drop(tx.send(Ok(r))),
            Answer::Count(tx, r) => drop(tx.send(Ok(r))),
        }
    }

    fn fail(self, why: &str) {
        match self {
            Answer::Accept(tx, _) => drop(tx.send(Err(AcceptError::Store(why.to_string())))),
            Answer::Claim(tx, _) => drop(tx.send(Err(JournalError::Store(why.to_string())))),
            Answer::End(tx, _) => drop(tx.send(Err(JournalError::Store(why.to_string())))),
            Answer::Count(tx, _) => drop(tx.send(Err(JournalError::Store(why.to_string())))),
        }
    }
}

/// The writer's own state, beside its connection.
pub(crate) struct Writer {
    pub conn: Connection,
    pub watermark: Watermark,
    /// The next sequence number to hand out.
    pub next_seq: u64,
    /// Unfinished invocations per tenant (the backlog bound's count).
    pub backlog: HashMap<String, u64>,
    pub shared: Arc<Shared>,
}

/// What a change may consult and stage beyond its rows.
struct Context<'a> {
    backlog: &'a HashMap<String, u64>,
    first_seq: u64,
    staged: &'a mut Staged,
    shared: &'a Shared,
}

/// What one batch changed beyond its rows, applied only once it commits.
#[derive(Default)]
struct Staged {
    backlog: HashMap<String, i64>,
    accepted: bool,
    stale: u64,
    quarantined: u64,
    next_seq: Option<u64>,
}

impl Writer {
    /// Runs until every [`crate::Journal`] handle is gone.
    pub(crate) fn run(mut self, ops: Receiver<Op>) {
        while let Ok(first) = ops.recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH_MAX {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Op>) {
        let mut staged = Staged::default();
        let mut answers = Vec::with_capacity(batch.len());
        let mut failed: Option<rusqlite::Error> = None;
        // IMMEDIATE: the write lock is taken (or waited for) up front. A
        // deferred transaction that read first could not be upgraded once
        // another connection to the file (the queues') has written since.
        match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Err(e) => {
                failed = Some(e);
                answers.extend(batch.into_iter().map(Op::unanswered));
            }
            Ok(tx) => {
                for op in batch {
                    if failed.is_some() {
                        answers.push(op.unanswered());
                        continue;
                    }
                    let first_seq = self.next_seq;
                    match apply(&tx, op, &self.backlog, first_seq, &mut staged, &self.shared) {
                        Ok(answer) => answers.push(answer),
                        Err((e, answer)) => {
                            failed = Some(e);
                            answers.push(answer);
                        }
                    }
                }
                if failed.is_none() {
                    let committed = staged
                        .next_seq
                        .map_or(Ok(()), |next| schema::set_max_seq(&tx, next - 1))
                        .and_then(|()| tx.commit());
                    failed = committed.err();
                }
                // Dropped uncommitted, the transaction rolls back.
            }
        }
        if let Some(e) = failed {
            let why = format!("the async journal could not commit: {e}");
            tracing::error!(error = %why);
            for answer in answers {
                answer.fail(&why);
            }
            return;
        }
        if let Some(next) = staged.next_seq {
            self.next_seq = next;
            // Before anyone hears of the commit: see watermark.rs.
            if let Err(e) = self.watermark.set(next - 1) {
                tracing::error!(error = %e, "cannot write the async journal's high-water mark");
            }
        }
        for (tenant, delta) in staged.backlog {
            let held = self.backlog.entry(tenant).or_default();
            *held = held.saturating_add_signed(delta);
        }
        let shared = &self.shared;
        shared.stale.fetch_add(staged.stale, Ordering::Relaxed);
        shared
            .quarantined
            .fetch_add(staged.quarantined, Ordering::Relaxed);
        shared.batches.fetch_add(1, Ordering::Relaxed);
        for answer in answers {
            answer.send();
        }
        if staged.accepted {
            shared.accepted.notify_one();
        }
    }
}

/// Applies one change inside the batch's transaction. A logical refusal
/// (backlog full, a stale epoch) is an answer; only a store failure is an
/// error, and it fails the whole batch (the change's answer comes with it,
/// to be failed).
fn apply(
    conn: &Connection,
    op: Op,
    backlog: &HashMap<String, u64>,
    first_seq: u64,
    staged: &mut Staged,
    shared: &Shared,
) -> Result<Answer, (rusqlite::Error, Answer)> {
    match op {
        Op::Accept {
            invocation,
            now_ms,
            reply,
        } => {
            let seq = staged.next_seq.unwrap_or(first_seq);
            match accept(conn, invocation, now_ms, seq, backlog, staged, shared) {
                Ok(answer) => Ok(Answer::Accept(reply, answer)),
                Err(e) => Err((
                    e,
                    Answer::Accept(reply, Ok(Accepted::New { id: String::new() })),
                )),
            }
        }
        Op::Claim {
            picks,
            now_ms,
            reply,
        } => {
            let mut claimed = Vec::with_capacity(picks.len());
            for (seq, lease_ms) in picks {
                match claim(conn, seq, lease_ms, now_ms, staged) {
                    Ok(Some(c)) => claimed.push(c),
                    Ok(None) => {}
                    Err(e) => return Err((e, Answer::Claim(reply, Vec::new()))),
                }
            }
            Ok(Answer::Claim(reply, claimed))
        }
        Op::End {
            seq,
            epoch,
            ending,
            now_ms,
            reply,
        } => {
            let mut ctx = Context {
                backlog,
                first_seq,
                staged,
                shared,
            };
            match end(conn, seq, epoch, &ending, now_ms, &mut ctx) {
                Ok(done) => Ok(Answer::End(reply, done)),
                Err(e) => Err((e, Answer::End(reply, Completion::Stale))),
            }
        }
        Op::Defer {
            picks,
            now_ms,
            reply,
        } => {
            let mut moved = 0;
            for (seq, due_at_ms, why) in picks {
                match defer(conn, seq, due_at_ms, why, now_ms, staged) {
                    Ok(true) => moved += 1,
                    Ok(false) => {}
                    Err(e) => return Err((e, Answer::Count(reply, 0))),
                }
            }
            Ok(Answer::Count(reply, moved))
        }
        Op::Purge {
            before_ms,
            idempotency_before_ms,
            reply,
        } => match purge(conn, before_ms, idempotency_before_ms) {
            Ok(purged) => Ok(Answer::Count(reply, purged)),
            Err(e) => Err((e, Answer::Count(reply, 0))),
        },
    }
}

/// Moves a waiting, due invocation's due time without an attempt; `false`
/// when it is not waiting and due any more.
fn defer(
    conn: &Connection,
    seq: u64,
    due_at_ms: i64,
    why: String,
    now_ms: i64,
    staged: &mut Staged,
) -> rusqlite::Result<bool> {
    let stored = match schema::get(conn, seq)? {
        None => return Ok(false),
        Some(Checked::Sound(s)) => s,
        Some(damaged) => {
            quarantine(conn, &damaged, now_ms, staged)?;
            return Ok(false);
        }
    };
    let d = &stored.dispatch;
    if !matches!(d.state, State::Queued | State::Retrying) || d.due_at_ms > now_ms {
        return Ok(false);
    }
    let next = Dispatch {
        due_at_ms,
        updated_at_ms: now_ms,
        last_error: Some(why),
        ..d.clone()
    };
    schema::put_dispatch(conn, seq, &next)?;
    Ok(true)
}

/// Deletes finished invocations (with their attempts) last changed before
/// `before_ms`, and idempotency keys older than `idempotency_before_ms`.
fn purge(conn: &Connection, before_ms: i64, idempotency_before_ms: i64) -> rusqlite::Result<u64> {
    conn.execute(
        "DELETE FROM attempts WHERE seq IN (SELECT seq FROM invocations
             WHERE (state = 'succeeded' OR state = 'failed' OR state = 'dead-lettered') AND updated_at_ms < ?1)",
        [before_ms],
    )?;
    let purged = conn.execute(
        "DELETE FROM invocations
         WHERE (state = 'succeeded' OR state = 'failed' OR state = 'dead-lettered') AND updated_at_ms < ?1",
        [before_ms],
    )?;
    conn.execute(
        "DELETE FROM idempotency WHERE accepted_at_ms < ?1",
        [idempotency_before_ms],
    )?;
    Ok(purged as u64)
}

fn accept(
    conn: &Connection,
    invocation: NewInvocation,
    now_ms: i64,
    seq: u64,
    backlog: &HashMap<String, u64>,
    staged: &mut Staged,
    shared: &Shared,
) -> rusqlite::Result<Result<Accepted, AcceptError>> {
    if let Some(key) = &invocation.idempotency_key {
        let seen: Option<(String, i64)> = conn
            .prepare_cached(
                "SELECT id, accepted_at_ms FROM idempotency
                 WHERE tenant = ?1 AND function = ?2 AND key = ?3",
            )?
            .query_row(params![invocation.tenant, invocation.function, key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((id, at)) = seen
            && at > now_ms - shared.config.idempotency_window_ms
        {
            return Ok(Ok(Accepted::Repeat { id }));
        }
    }
    let limit = shared.config.backlog_per_tenant;
    if !room(backlog, staged, &invocation.tenant, limit) {
        return Ok(Err(AcceptError::Backlog { limit }));
    }
    let id = insert(conn, invocation, now_ms, seq, staged)?;
    Ok(Ok(Accepted::New { id }))
}

/// Whether `tenant` may have one more unfinished invocation.
fn room(backlog: &HashMap<String, u64>, staged: &Staged, tenant: &str, limit: u64) -> bool {
    let held = backlog.get(tenant).copied().unwrap_or(0) as i64
        + staged.backlog.get(tenant).copied().unwrap_or(0);
    held < limit as i64
}

/// Stores a new invocation under `seq`, queued and due now; its id.
fn insert(
    conn: &Connection,
    invocation: NewInvocation,
    now_ms: i64,
    seq: u64,
    staged: &mut Staged,
) -> rusqlite::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let dispatch = Dispatch {
        state: State::Queued,
        epoch: 0,
        attempts: 0,
        due_at_ms: now_ms,
        lease_until_ms: 0,
        updated_at_ms: now_ms,
        last_error: None,
        condition: None,
    };
    conn.prepare_cached(
        "INSERT INTO invocations (seq, id, tenant, function, qualifier, version, payload,
             idempotency_key, accepted_at_ms, fact_sum, state, epoch, attempts, due_at_ms,
             lease_until_ms, updated_at_ms, last_error, condition, state_sum)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, 0, ?9, 0, ?9, NULL, NULL, ?12)",
    )?
    .execute(params![
        seq as i64,
        id,
        invocation.tenant,
        invocation.function,
        invocation.qualifier,
        invocation.version,
        invocation.payload,
        invocation.idempotency_key,
        now_ms,
        fact_sum(seq, &id, now_ms, &invocation),
        State::Queued.as_str(),
        dispatch.sum(seq),
    ])?;
    if let Some(key) = &invocation.idempotency_key {
        conn.prepare_cached(
            "INSERT INTO idempotency (tenant, function, key, id, accepted_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, function, key)
             DO UPDATE SET id = excluded.id, accepted_at_ms = excluded.accepted_at_ms",
        )?
        .execute(params![
            invocation.tenant,
            invocation.function,
            key,
            id,
            now_ms
        ])?;
    }
    *staged.backlog.entry(invocation.tenant).or_default() += 1;
    staged.next_seq = Some(seq + 1);
    staged.accepted = true;
    Ok(id)
}

/// Hands one delivery on, inside the batch's transaction: `Err` with why
/// when it cannot be made (the queue is gone, the message too large, the
/// backlog full) — the ending is still recorded.
fn deliver(
    conn: &Connection,
    delivery: &Delivery,
    now_ms: i64,
    ctx: &mut Context<'_>,
) -> rusqlite::Result<Result<(), String>> {
    Ok(match delivery {
        Delivery::Queue {
            arn,
            body,
            attributes,
        } => {
            let tenant = arn.split(':').nth(4).unwrap_or_default();
            let message = nimbus_queues::NewMessage {
                body: body.clone(),
                delay_s: None,
                attributes: attributes
                    .iter()
                    .map(|(name, data_type, value)| {
                        let attribute = nimbus_queues::MessageAttribute {
                            data_type: data_type.clone(),
                            string_value: Some(value.clone()),
                            binary_value: None,
                        };
                        (name.clone(), attribute)
                    })
                    .collect(),
            };
            nimbus_queues::queue_by_arn(conn, tenant, arn)
                .and_then(|q| {
                    nimbus_queues::send_message(conn, tenant, &q.name, &message, now_ms as u64)
                })
                .map(drop)
                .map_err(|e| format!("{arn}: {e}"))
        }
        Delivery::Invoke(invocation) => {
            let limit = ctx.shared.config.backlog_per_tenant;
            if room(ctx.backlog, ctx.staged, &invocation.tenant, limit) {
                let seq = ctx.staged.next_seq.unwrap_or(ctx.first_seq);
                insert(conn, invocation.clone(), now_ms, seq, ctx.staged)?;
                Ok(())
            } else {
                Err(format!(
                    "function {}: the account's async backlog is full ({limit})",
                    invocation.function
                ))
            }
        }
    })
}

/// Claims `seq` under a new epoch if it is due: waiting and due, or
/// running under a lease that has ended. `None` when it is not (another
/// claim took it, it ended, or it is damaged and was quarantined).
fn claim(
    conn: &Connection,
    seq: u64,
    lease_ms: i64,
    now_ms: i64,
    staged: &mut Staged,
) -> rusqlite::Result<Option<Claimed>> {
    let stored = match schema::get(conn, seq)? {
        None => return Ok(None),
        Some(Checked::Sound(s)) => s,
        Some(damaged) => {
            quarantine(conn, &damaged, now_ms, staged)?;
            return Ok(None);
        }
    };
    let d = &stored.dispatch;
    let due = match d.state {
        State::Queued | State::Retrying => d.due_at_ms <= now_ms,
        State::Running => d.lease_until_ms <= now_ms,
        _ => false,
    };
    if !due {
        return Ok(None);
    }
    if d.state == State::Running {
        // The owner of the lost lease may still report: its ending will
        // find a newer epoch and be refused.
        conn.prepare_cached(
            "UPDATE attempts SET outcome = 'lost', error = 'the lease ended before the attempt did'
             WHERE seq = ?1 AND epoch = ?2 AND outcome IS NULL",
        )?
        .execute(params![seq as i64, d.epoch as i64])?;
    }
    let next = Dispatch {
        state: State::Running,
        epoch: d.epoch + 1,
        attempts: d.attempts + 1,
        due_at_ms: d.due_at_ms,
        lease_until_ms: now_ms + lease_ms,
        updated_at_ms: now_ms,
        last_error: d.last_error.clone(),
        condition: None,
    };
    schema::put_dispatch(conn, seq, &next)?;
    conn.prepare_cached("INSERT INTO attempts (seq, epoch, started_at_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![seq as i64, next.epoch as i64, now_ms])?;
    Ok(Some(Claimed {
        seq,
        id: stored.id,
        epoch: next.epoch,
        attempt: next.attempts,
        accepted_at_ms: stored.accepted_at_ms,
        invocation: stored.invocation,
    }))
}

/// Records an attempt's ending if its epoch still owns the invocation.
fn end(
    conn: &Connection,
    seq: u64,
    epoch: u64,
    ending: &Ending,
    now_ms: i64,
    ctx: &mut Context<'_>,
) -> rusqlite::Result<Completion> {
    let mut error = match ending {
        Ending::Succeeded { .. } => None,
        Ending::Retry { error, .. } | Ending::Failed { error, .. } => Some(error.clone()),
        Ending::Throttled { reason, .. } => Some(reason.clone()),
    };
    let stored = match schema::get(conn, seq)? {
        Some(Checked::Sound(s)) => Some(s),
        Some(damaged) => {
            quarantine(conn, &damaged, now_ms, ctx.staged)?;
            None
        }
        None => None,
    };
    let owner = stored
        .as_ref()
        .filter(|s| s.dispatch.state == State::Running && s.dispatch.epoch == epoch);
    let Some(stored) = owner else {
        // Fencing: a stale owner's result changes nothing but its own
        // attempt's record, and is counted.
        conn.prepare_cached(
            "UPDATE attempts SET ended_at_ms = ?3, outcome = 'stale', error = ?4
             WHERE seq = ?1 AND epoch = ?2",
        )?
        .execute(params![seq as i64, epoch as i64, now_ms, error])?;
        ctx.staged.stale += 1;
        return Ok(Completion::Stale);
    };
    let mut delivered = 0;
    for delivery in ending.deliveries() {
        match deliver(conn, delivery, now_ms, ctx)? {
            Ok(()) => delivered += 1,
            Err(why) => {
                tracing::warn!(seq, %why, "an async invocation's record could not be delivered");
                let note = format!("not delivered to {why}");
                error = Some(match error {
                    Some(e) => format!("{e}; {note}"),
                    None => note,
                });
            }
        }
    }
    let d = &stored.dispatch;
    let mut next = Dispatch {
        state: ending.state(delivered),
        epoch: d.epoch,
        attempts: d.attempts,
        due_at_ms: d.due_at_ms,
        lease_until_ms: 0,
        updated_at_ms: now_ms,
        last_error: error.clone().or(d.last_error.clone()),
        condition: None,
    };
    match ending {
        Ending::Succeeded { .. } => {}
        Ending::Retry { due_at_ms, .. } => next.due_at_ms = *due_at_ms,
        Ending::Throttled { due_at_ms, .. } => {
            next.due_at_ms = *due_at_ms;
            // It never ran: it does not use up a retry.
            next.attempts = d.attempts.saturating_sub(1);
        }
        Ending::Failed { condition, .. } => next.condition = Some(condition.clone()),
    }
    schema::put_dispatch(conn, seq, &next)?;
    conn.prepare_cached(
        "UPDATE attempts SET ended_at_ms = ?3, outcome = ?4, error = ?5
         WHERE seq = ?1 AND epoch = ?2",
    )?
    .execute(params![
        seq as i64,
        epoch as i64,
        now_ms,
        ending.outcome(),
        error
    ])?;
    if next.state.is_terminal() {
        *ctx.staged
            .backlog
            .entry(stored.invocation.tenant.clone())
            .or_default() -= 1;
    }
    Ok(Completion::Accepted)
}

fn quarantine(
    conn: &Connection,
    damaged: &Checked,
    now_ms: i64,
    staged: &mut Staged,
) -> rusqlite::Result<()> {
    schema::quarantine(conn, damaged, now_ms)?;
    staged.quarantined += 1;
    Ok(())
}

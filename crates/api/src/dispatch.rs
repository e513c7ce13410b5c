//! The async path's dispatcher: claims due invocations from the journal,
//! each under a lease and a fencing epoch, runs them exactly as Invoke runs
//! a synchronous one, and reports each attempt's ending back — a retry
//! after a backoff, a throttle that does not count, or a final failure.
//!
//! Lambda's retry policy: `MaximumRetryAttempts` retries after a function
//! error (default 2), with exponential backoff and jitter from a base
//! (Lambda waits about one, then two minutes: the base is 60 s unless the
//! platform is told otherwise); an event older than
//! `MaximumEventAgeInSeconds` is not attempted again. A throttled attempt
//! is retried without using up a retry, until the event expires.

use crate::Platform;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ops::invoke;
use axum::http::StatusCode;
use bytes::Bytes;
use nimbus_control::EventInvokeConfig;
use nimbus_journal::{Claimed, Completion, Delivery, Ending, Journal, NewInvocation};
use nimbus_scheduler::Permit;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Attempts running at once; the rest wait in the journal (the scheduler's
/// concurrency limits still apply to each).
const IN_FLIGHT_MAX: usize = 256;

/// How long the dispatcher sleeps at most before it looks at the journal
/// again (a wait ends sooner when an invocation is accepted, falls due or
/// an attempt ends).
const IDLE_LOOK_MS: i64 = 1_000;

/// Added to a function's timeout to make an attempt's lease: the owner
/// has this long to report after the function's own deadline.
const LEASE_GRACE: Duration = Duration::from_secs(30);

/// A lease for a function whose snapshot is not at hand.
const LEASE_UNKNOWN_FUNCTION: Duration = Duration::from_secs(15 * 60);

/// How often finished invocations older than [`FINISHED_KEPT`] are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// How long a finished invocation's status stays readable.
pub const FINISHED_KEPT: Duration = Duration::from_secs(24 * 3600);

/// How the async path is configured.
#[derive(Clone, Debug)]
pub struct AsyncConfig {
    /// Unfinished async invocations a tenant may have.
    pub backlog_per_tenant: u64,
    /// The first retry's delay; each next one doubles it (with jitter).
    pub retry_base: Duration,
    /// A fixed lease for every attempt, instead of the function's timeout
    /// plus a grace.
    pub lease: Option<Duration>,
    /// Run from a damaged journal: quarantine what is damaged.
    pub repair: bool,
}

impl Default for AsyncConfig {
    fn default() -> AsyncConfig {
        AsyncConfig {
            backlog_per_tenant: 100_000,
            retry_base: Duration::from_secs(60),
            lease: None,
            repair: false,
        }
    }
}

/// Milliseconds since the Unix epoch, the journal's clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Starts the dispatcher and the purge of old records; both end when the
/// platform is dropped.
pub(crate) fn start(platform: &Arc<Platform>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let journal = platform.journal.clone();
    runtime.spawn(dispatch(Arc::downgrade(platform), journal.clone()));
    let weak = Arc::downgrade(&journal);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        loop {
            tick.tick().await;
            let Some(journal) = weak.upgrade() else {
                return;
            };
            let now = now_ms();
            let before = now - FINISHED_KEPT.as_millis() as i64;
            if let Err(e) = journal.purge(before, now).await {
                tracing::warn!(error = %e, "cannot purge finished async invocations");
            }
        }
    });
}

async fn dispatch(platform: Weak<Platform>, journal: Arc<Journal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let ended = Arc::new(Notify::new());
    loop {
        let now = now_ms();
        let free = slots.available_permits();
        let due = if free == 0 {
            Vec::new()
        } else {
            let j = journal.clone();
            match tokio::task::spawn_blocking(move || j.due(now, free)).await {
                Ok(Ok(due)) => due,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read due async invocations");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            }
        };
        if !due.is_empty() {
            let Some(p) = platform.upgrade() else { return };
            // Admission comes before the claim: an invocation whose function
            // is at its concurrency limit waits in the journal (one write,
            // no attempt) instead of being claimed only to be throttled.
            let mut picks = Vec::with_capacity(due.len());
            let mut permits = HashMap::with_capacity(due.len());
            let mut deferred = Vec::new();
            for d in &due {
                match p.concurrency.admit(&d.tenant, &d.function) {
                    Ok(permit) => {
                        permits.insert(d.seq, permit);
                        picks.push((d.seq, p.lease_for(&d.tenant, &d.function, &d.version)));
                    }
                    // A lost lease is claimed anyway: its attempt is what
                    // ends the old owner's.
                    Err(_) if d.leased => {
                        picks.push((d.seq, p.lease_for(&d.tenant, &d.function, &d.version)));
                    }
                    Err(t) => {
                        let config = p.event_configs.get(&d.tenant, &d.function, &d.qualifier);
                        let base = p.asynchronous.retry_base;
                        match put_off(&config, d.accepted_at_ms, now, base) {
                            Some(due_at_ms) => {
                                deferred.push((d.seq, due_at_ms, format!("{}: {t}", t.reason())));
                            }
                            // Too old to wait longer: its attempt ends it
                            // (EventAgeExceeded) without running.
                            None => {
                                picks.push((d.seq, p.lease_for(&d.tenant, &d.function, &d.version)))
                            }
                        }
                    }
                }
            }
            if !deferred.is_empty()
                && let Err(e) = journal.defer(deferred, now).await
            {
                tracing::error!(error = %e, "cannot put off throttled async invocations");
            }
            if picks.is_empty() {
                continue;
            }
            match journal.claim(picks, now).await {
                Ok(claimed) => {
                    for attempt in claimed {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            // Cannot happen: no more were claimed than were free.
                            break;
                        };
                        let permit = permits.remove(&attempt.seq);
                        let (p, ended) = (p.clone(), ended.clone());
                        tokio::spawn(async move {
                            run_attempt(&p, attempt, permit).await;
                            drop(slot);
                            ended.notify_one();
                        });
                    }
                    continue;
                }
                Err(e) => tracing::error!(error = %e, "cannot claim async invocations"),
            }
        }
        if platform.strong_count() == 0 {
            return;
        }
        let j = journal.clone();
        let next = tokio::task::spawn_blocking(move || j.next_due_ms())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let wait = next.map_or(IDLE_LOOK_MS, |t| (t - now_ms()).clamp(1, IDLE_LOOK_MS));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            () = journal.accepted() => {}
            () = ended.notified(), if free == 0 => {}
        }
    }
}

impl Platform {
    /// How long an attempt of this function may hold its invocation.
    fn lease_for(&self, tenant: &str, function: &str, version: &str) -> i64 {
        let lease = self.asynchronous.lease.unwrap_or_else(|| {
            self.snapshots
                .get(tenant, function, version)
                .map_or(LEASE_UNKNOWN_FUNCTION, |s| {
                    Duration::from_secs(s.config.timeout_s.into()) + LEASE_GRACE
                })
        });
        lease.as_millis() as i64
    }
}

/// The delay before retry `attempt` (the first retry follows attempt 1):
/// the base doubled per attempt, with ±25% jitter.
fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let doubled = base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    doubled.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// The delay after a throttle: half the event's age, at least a sixtieth of
/// the retry base (a second by default) and at most five times the base,
/// with jitter — so it grows with the wait as Lambda's does.
fn throttle_delay(base: Duration, age: Duration) -> Duration {
    let (floor, ceiling) = (base / 60, base * 5);
    (age / 2)
        .clamp(floor, ceiling.max(floor))
        .mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// What running an attempt gave.
#[derive(Debug)]
enum Ran {
    /// The function answered with this body.
    Answered(Bytes),
    /// The function failed: its error as text, and Lambda's error body.
    FunctionError(String, Bytes),
    /// It could not run now (a limit); why.
    Throttled(String),
    /// The function or its version is gone; why.
    Gone(String),
    /// It could not run (the platform failed); why.
    Broken(String),
}

/// What becomes of an attempt.
#[derive(Debug, PartialEq)]
enum Verdict {
    Succeeded(Bytes),
    Retry {
        due_at_ms: i64,
        error: String,
    },
    Throttled {
        due_at_ms: i64,
        reason: String,
    },
    Failed {
        condition: &'static str,
        error: String,
        /// The function's error body, when it ran.
        response: Option<Bytes>,
    },
}

/// When an invocation that cannot run now (its function is at its
/// concurrency limit) is due again: after the throttle delay, but no later
/// than just past its maximum age, so it is failed then rather than kept.
/// `None` when it is past its maximum age already.
fn put_off(
    config: &EventInvokeConfig,
    accepted_at_ms: i64,
    now_ms: i64,
    base: Duration,
) -> Option<i64> {
    let expires_at_ms = accepted_at_ms + i64::from(config.maximum_event_age_s()) * 1000;
    if now_ms > expires_at_ms {
        return None;
    }
    let age = Duration::from_millis((now_ms - accepted_at_ms).max(0) as u64);
    let wait = throttle_delay(base, age).as_millis() as i64;
    Some((now_ms + wait).min(expires_at_ms + 1))
}

/// Whether an attempt may run at `now_ms` at all: not when the event is
/// older than its maximum age, nor when earlier attempts (that lost their
/// leases mid-run) used up the retries.
fn before_running(config: &EventInvokeConfig, claimed: &Claimed, now_ms: i64) -> Option<Verdict> {
    let age_ms = now_ms - claimed.accepted_at_ms;
    let max_age_s = config.maximum_event_age_s();
    if age_ms > i64::from(max_age_s) * 1000 {
        return Some(Verdict::Failed {
            condition: "EventAgeExceeded",
            error: format!(
                "the event waited {:.0} s, longer than its MaximumEventAgeInSeconds of {max_age_s}",
                age_ms as f64 / 1000.0
            ),
            response: None,
        });
    }
    if claimed.attempt > config.retries() + 1 {
        return Some(Verdict::Failed {
            condition: "RetriesExhausted",
            error: format!(
                "{} attempts were made (MaximumRetryAttempts {})",
                claimed.attempt - 1,
                config.retries()
            ),
            response: None,
        });
    }
    None
}

/// What becomes of an attempt that ran (or tried to) and ended at `now_ms`.
fn after_running(
    config: &EventInvokeConfig,
    claimed: &Claimed,
    now_ms: i64,
    base: Duration,
    ran: Ran,
) -> Verdict {
    let (error, response) = match ran {
        Ran::Answered(body) => return Verdict::Succeeded(body),
        Ran::Throttled(reason) => {
            let age = Duration::from_millis((now_ms - claimed.accepted_at_ms).max(0) as u64);
            return Verdict::Throttled {
                due_at_ms: now_ms + throttle_delay(base, age).as_millis() as i64,
                reason,
            };
        }
        Ran::Gone(why) => {
            // Nothing can run it again.
            return Verdict::Failed {
                condition: "RetriesExhausted",
                error: why,
                response: None,
            };
        }
        Ran::FunctionError(error, body) => (error, Some(body)),
        Ran::Broken(why) => (why, None),
    };
    if claimed.attempt > config.retries() {
        return Verdict::Failed {
            condition: "RetriesExhausted",
            error,
            response,
        };
    }
    Verdict::Retry {
        due_at_ms: now_ms + retry_delay(base, claimed.attempt).as_millis() as i64,
        error,
    }
}

/// Runs one claimed attempt (admitted already when `permit` is given) and
/// reports how it ended.
async fn run_attempt(platform: &Arc<Platform>, claimed: Claimed, permit: Option<Permit>) {
    let inv = &claimed.invocation;
    let config = platform
        .event_configs
        .get(&inv.tenant, &inv.function, &inv.qualifier);
    let verdict = match before_running(&config, &claimed, now_ms()) {
        Some(refused) => refused,
        None => {
            let ran = run(platform, &claimed, permit).await;
            let base = platform.asynchronous.retry_base;
            after_running(&config, &claimed, now_ms(), base, ran)
        }
    };
    let ending = platform.ending(&config, &claimed, verdict);
    let (seq, epoch, id) = (claimed.seq, claimed.epoch, claimed.id.clone());
    match platform.journal.end(seq, epoch, ending, now_ms()).await {
        Ok(Completion::Accepted) => {}
        Ok(Completion::Stale) => {
            tracing::warn!(%id, epoch, "an async attempt ended after its lease was taken over; its result was refused");
        }
        Err(e) => {
            // The lease will end and the invocation run again.
            tracing::error!(%id, error = %e, "cannot record the end of an async attempt");
        }
    }
}

/// Runs the invocation exactly as a synchronous Invoke would.
async fn run(platform: &Arc<Platform>, claimed: &Claimed, permit: Option<Permit>) -> Ran {
    let inv = &claimed.invocation;
    let caller = Caller {
        account_id: inv.tenant.clone(),
    };
    let executed = async {
        let snapshot = invoke::snapshot_of(platform, &caller, &inv.function, &inv.version).await?;
        let _running = match permit {
            Some(held) => held,
            None => platform
                .concurrency
                .admit(&inv.tenant, &inv.function)
                .map_err(|t| ApiError::throttled(t.reason(), t.to_string()))?,
        };
        let payload = Bytes::from(inv.payload.clone());
        invoke::execute(platform, &caller, &snapshot, &claimed.id, payload).await
    };
    match executed.await {
        Ok((result, log, _tier)) => {
            platform.logs.append(&inv.tenant, &inv.function, log);
            match result {
                Ok(body) => Ran::Answered(body),
                Err(body) => Ran::FunctionError(error_text(&body), body),
            }
        }
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            Ran::Throttled(format!("{}: {}", e.reason.unwrap_or(e.code), e.message))
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            Ran::Gone(format!("{}: {}", e.code, e.message))
        }
        Err(e) => Ran::Broken(format!("{}: {}", e.code, e.message)),
    }
}

/// A function error's body (`{"errorMessage", "errorType"}`) as one line.
fn error_text(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match (field("errorType"), field("errorMessage")) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

/// A JSON document as a value: parsed, or as a string when it is not JSON.
fn json_of(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| String::from_utf8_lossy(bytes).into())
}

impl Platform {
    /// The journal's ending for a verdict, with what it hands on: the
    /// dead-letter queue and the failure destination take a failed event,
    /// the success destination a success's record.
    fn ending(&self, config: &EventInvokeConfig, claimed: &Claimed, verdict: Verdict) -> Ending {
        match verdict {
            Verdict::Succeeded(body) => Ending::Succeeded {
                deliveries: config
                    .on_success
                    .iter()
                    .filter_map(|to| self.destination(to, claimed, "Success", None, Some(&body)))
                    .collect(),
            },
            Verdict::Retry { due_at_ms, error } => Ending::Retry { due_at_ms, error },
            Verdict::Throttled { due_at_ms, reason } => Ending::Throttled { due_at_ms, reason },
            Verdict::Failed {
                condition,
                error,
                response,
            } => {
                let mut deliveries = Vec::new();
                let inv = &claimed.invocation;
                let dead_letter = self
                    .snapshots
                    .get(&inv.tenant, &inv.function, &inv.version)
                    .and_then(|s| s.config.dead_letter_target.clone());
                if let Some(arn) = dead_letter {
                    // Lambda's dead letter: the event, with why it failed.
                    let function_arn = self
                        .arn(&Caller {
                            account_id: inv.tenant.clone(),
                        })
                        .qualified_arn(&inv.function, &inv.qualifier);
                    deliveries.push(Delivery::Queue {
                        arn,
                        body: String::from_utf8_lossy(&inv.payload).into_owned(),
                        attributes: vec![
                            ("RequestID".into(), "String".into(), claimed.id.clone()),
                            ("ErrorCode".into(), "Number".into(), "200".into()),
                            ("ErrorMessage".into(), "String".into(), error.clone()),
                            // nimbus' own, for `nimbus dlq redrive`.
                            (REDRIVE_ATTRIBUTE.into(), "String".into(), function_arn),
                        ],
                    });
                }
                if let Some(to) = &config.on_failure {
                    deliveries.extend(self.destination(
                        to,
                        claimed,
                        condition,
                        Some(&error),
                        response.as_deref(),
                    ));
                }
                Ending::Failed {
                    condition: condition.to_string(),
                    error,
                    deliveries,
                }
            }
        }
    }

    /// A record in Lambda's destination format, for a queue or a function.
    fn destination(
        &self,
        to: &str,
        claimed: &Claimed,
        condition: &str,
        error: Option<&str>,
        response: Option<&[u8]>,
    ) -> Option<Delivery> {
        let inv = &claimed.invocation;
        let caller = Caller {
            account_id: inv.tenant.clone(),
        };
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut record = json!({
            "version": "1.0",
            "timestamp": timestamp,
            "requestContext": {
                "requestId": claimed.id,
                "functionArn": self.arn(&caller).qualified_arn(&inv.function, &inv.qualifier),
                "condition": condition,
                "approximateInvokeCount": claimed.attempt,
            },
            "requestPayload": json_of(&inv.payload),
        });
        if let Some(body) = response {
            let mut context = json!({ "statusCode": 200, "executedVersion": inv.version });
            if error.is_some() {
                context["functionError"] = "Unhandled".into();
            }
            record["responseContext"] = context;
            record["responsePayload"] = json_of(body);
        }
        let body = record.to_string();
        if to.split(':').nth(2) == Some("sqs") {
            return Some(Delivery::Queue {
                arn: to.to_string(),
                body,
                attributes: Vec::new(),
            });
        }
        // A function: `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`,
        // of the same account (nimbus delivers within a tenant only).
        let mut parts = to.splitn(8, ':').skip(4);
        let (account, _, name, qualifier) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next());
        if account != inv.tenant {
            tracing::warn!(
                destination = to,
                "a destination in another account is not delivered to"
            );
            return None;
        }
        let qualifier = qualifier.unwrap_or(nimbus_worker::snapshot::LATEST);
        let version = match qualifier.parse::<u64>() {
            Ok(_) => qualifier.to_string(),
            Err(_) if qualifier == nimbus_worker::snapshot::LATEST => qualifier.to_string(),
            Err(_) => self
                .snapshots
                .alias(&inv.tenant, name, qualifier)?
                .pick(fastrand::f64())
                .to_string(),
        };
        Some(Delivery::Invoke(NewInvocation {
            tenant: inv.tenant.clone(),
            function: name.to_string(),
            qualifier: qualifier.to_string(),
            version,
            payload: body.into_bytes(),
            idempotency_key: None,
        }))
    }
}

/// The message attribute of a dead letter naming the function (and
/// qualifier) that failed, so `nimbus dlq redrive` can send it back.
pub const REDRIVE_ATTRIBUTE: &str = "nimbus.FunctionArn";

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const BASE: Duration = Duration::from_secs(60);

    fn claimed(attempt: u32) -> Claimed {
        Claimed {
            seq: 1,
            id: "id".into(),
            epoch: u64::from(attempt),
            attempt,
            accepted_at_ms: T0,
            invocation: NewInvocation {
                tenant: "111122223333".into(),
                function: "f".into(),
                qualifier: "$LATEST".into(),
                version: "$LATEST".into(),
                payload: b"{}".to_vec(),
                idempotency_key: None,
            },
        }
    }

    fn config(retries: Option<u32>, max_age_s: Option<u32>) -> EventInvokeConfig {
        EventInvokeConfig {
            maximum_retry_attempts: retries,
            maximum_event_age_s: max_age_s,
            ..EventInvokeConfig::default_for("f", "$LATEST")
        }
    }

    fn failed() -> Ran {
        Ran::FunctionError("Unhandled: boom".into(), Bytes::from_static(b"{}"))
    }

    #[test]
    fn a_throttled_event_is_put_off_until_at_most_just_past_its_maximum_age() {
        let c = config(None, Some(60));
        let soon = put_off(&c, T0, T0, BASE).unwrap();
        assert!((T0 + 750..=T0 + 1_250).contains(&soon), "{}", soon - T0);
        // Half its age (25 s) would run past the 60 s limit: due just after it.
        assert_eq!(put_off(&c, T0, T0 + 50_000, BASE), Some(T0 + 60_001));
        assert_eq!(
            put_off(&c, T0, T0 + 60_001, BASE),
            None,
            "expired: failed, not kept"
        );
        let expired = before_running(&c, &claimed(1), T0 + 60_001);
        assert!(
            matches!(
                expired,
                Some(Verdict::Failed {
                    condition: "EventAgeExceeded",
                    ..
                })
            ),
            "{expired:?}"
        );
    }

    #[test]
    fn an_event_older_than_its_maximum_age_is_not_attempted() {
        let c = config(None, Some(60));
        assert_eq!(before_running(&c, &claimed(2), T0 + 60_000), None);
        let late = before_running(&c, &claimed(2), T0 + 60_001);
        assert!(
            matches!(
                late,
                Some(Verdict::Failed {
                    condition: "EventAgeExceeded",
                    ..
                })
            ),
            "{late:?}"
        );
        // Lambda's default: six hours.
        let d = config(None, None);
        assert_eq!(before_running(&d, &claimed(1), T0 + 6 * 3_600_000), None);
        assert!(before_running(&d, &claimed(1), T0 + 6 * 3_600_000 + 1).is_some());
    }

    #[test]
    fn a_function_error_is_retried_with_backoff_until_the_retries_run_out() {
        let c = config(None, None);
        let now = T0 + 10;
        for attempt in 1..=2 {
            match after_running(&c, &claimed(attempt), now, BASE, failed()) {
                Verdict::Retry { due_at_ms, error } => {
                    let wait = (due_at_ms - now) as f64 / 1000.0;
                    let expected = 60.0 * f64::from(1 << (attempt - 1));
                    assert!(wait >= expected * 0.75 && wait <= expected * 1.25, "{wait}");
                    assert_eq!(error, "Unhandled: boom");
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
        }
        let last = after_running(&c, &claimed(3), now, BASE, failed());
        assert!(
            matches!(
                &last,
                Verdict::Failed {
                    condition: "RetriesExhausted",
                    response: Some(_),
                    ..
                }
            ),
            "{last:?}"
        );
        let none = config(Some(0), None);
        assert!(matches!(
            after_running(&none, &claimed(1), now, BASE, failed()),
            Verdict::Failed { .. }
        ));
    }

    #[test]
    fn throttles_wait_without_using_up_retries_and_attempts_lost_mid_run_do_count() {
        let c = config(Some(0), None);
        let throttled = after_running(&c, &claimed(1), T0, BASE, Ran::Throttled("x".into()));
        assert!(
            matches!(throttled, Verdict::Throttled { .. }),
            "{throttled:?}"
        );
        // The first attempt lost its lease mid-run: the second may not run
        // when no retries are allowed.
        let refused = before_running(&c, &claimed(2), T0 + 1);
        assert!(
            matches!(
                refused,
                Some(Verdict::Failed {
                    condition: "RetriesExhausted",
                    ..
                })
            ),
            "{refused:?}"
        );
        let gone = after_running(
            &config(None, None),
            &claimed(1),
            T0,
            BASE,
            Ran::Gone("no".into()),
        );
        assert!(
            matches!(gone, Verdict::Failed { .. }),
            "a deleted function is not retried"
        );
        let ok = after_running(
            &c,
            &claimed(1),
            T0,
            BASE,
            Ran::Answered(Bytes::from_static(b"1")),
        );
        assert_eq!(ok, Verdict::Succeeded(Bytes::from_static(b"1")));
    }

    #[test]
    fn retries_back_off_exponentially_within_their_jitter() {
        let base = Duration::from_secs(60);
        for _ in 0..100 {
            let first = retry_delay(base, 1);
            assert!(first >= Duration::from_secs(45) && first <= Duration::from_secs(75));
            let second = retry_delay(base, 2);
            assert!(second >= Duration::from_secs(90) && second <= Duration::from_secs(150));
        }
    }

    #[test]
    fn throttle_delays_grow_with_the_wait_between_their_bounds() {
        let base = Duration::from_secs(60);
        for _ in 0..100 {
            let young = throttle_delay(base, Duration::ZERO);
            assert!(young >= Duration::from_millis(750) && young <= Duration::from_millis(1250));
            let older = throttle_delay(base, Duration::from_secs(60));
            assert!(
                older >= Duration::from_millis(22_500) && older <= Duration::from_millis(37_500)
            );
            let old = throttle_delay(base, Duration::from_secs(6 * 3600));
            assert!(
                old <= Duration::from_secs(375),
                "capped at five times the base"
            );
        }
    }
}

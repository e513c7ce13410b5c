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
use nimbus_journal::{Claimed, Completion, Ending, Journal};
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
            let picks = due
                .iter()
                .map(|d| (d.seq, p.lease_for(&d.tenant, &d.function, &d.version)))
                .collect();
            match journal.claim(picks, now).await {
                Ok(claimed) => {
                    for attempt in claimed {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            // Cannot happen: no more were claimed than were free.
                            break;
                        };
                        let (p, ended) = (p.clone(), ended.clone());
                        tokio::spawn(async move {
                            run_attempt(&p, attempt).await;
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

/// Runs one claimed attempt and reports how it ended.
async fn run_attempt(platform: &Arc<Platform>, claimed: Claimed) {
    let ending = attempt(platform, &claimed).await;
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

async fn attempt(platform: &Arc<Platform>, claimed: &Claimed) -> Ending {
    let inv = &claimed.invocation;
    let config = platform
        .event_configs
        .get(&inv.tenant, &inv.function, &inv.qualifier);
    let now = now_ms();
    let age = Duration::from_millis((now - claimed.accepted_at_ms).max(0) as u64);
    let base = platform.asynchronous.retry_base;
    let failed = |condition: &str, error: String| Ending::Failed {
        condition: condition.to_string(),
        error,
        dead_lettered: false,
    };
    if age > Duration::from_secs(config.maximum_event_age_s().into()) {
        return failed(
            "EventAgeExceeded",
            format!(
                "the event waited {:.0} s, longer than its MaximumEventAgeInSeconds of {}",
                age.as_secs_f64(),
                config.maximum_event_age_s()
            ),
        );
    }
    if claimed.attempt > config.retries() + 1 {
        // Earlier attempts lost their leases mid-run; they count.
        return failed(
            "RetriesExhausted",
            format!(
                "{} attempts were made (MaximumRetryAttempts {})",
                claimed.attempt - 1,
                config.retries()
            ),
        );
    }
    let caller = Caller {
        account_id: inv.tenant.clone(),
    };
    let outcome = run(platform, &caller, claimed).await;
    let error = match outcome {
        Ok(Ok(())) => return Ending::Succeeded,
        Ok(Err(function_error)) => function_error,
        Err(e) if e.status == axum::http::StatusCode::TOO_MANY_REQUESTS => {
            let due_at_ms = now_ms() + throttle_delay(base, age).as_millis() as i64;
            return Ending::Throttled {
                due_at_ms,
                reason: format!("{}: {}", e.reason.unwrap_or(e.code), e.message),
            };
        }
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
            // The function (or the version) is gone: nothing can run it.
            return failed("RetriesExhausted", format!("{}: {}", e.code, e.message));
        }
        Err(e) => format!("{}: {}", e.code, e.message),
    };
    if claimed.attempt > config.retries() {
        return failed("RetriesExhausted", error);
    }
    Ending::Retry {
        due_at_ms: now_ms() + retry_delay(base, claimed.attempt).as_millis() as i64,
        error,
    }
}

/// Runs the invocation: `Ok(Ok)` when the function answered, `Ok(Err)`
/// with the function's error, `Err` when it could not run.
async fn run(
    platform: &Arc<Platform>,
    caller: &Caller,
    claimed: &Claimed,
) -> Result<Result<(), String>, ApiError> {
    let inv = &claimed.invocation;
    let snapshot = invoke::snapshot_of(platform, caller, &inv.function, &inv.version).await?;
    let _running = platform
        .concurrency
        .admit(&inv.tenant, &inv.function)
        .map_err(|t| ApiError::throttled(t.reason(), t.to_string()))?;
    let payload = bytes::Bytes::from(inv.payload.clone());
    let (result, log, _tier) =
        invoke::execute(platform, caller, &snapshot, &claimed.id, payload).await?;
    platform.logs.append(&inv.tenant, &inv.function, log);
    Ok(result.map(drop).map_err(|body| {
        // Lambda's error body: {"errorMessage", "errorType"}.
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let field = |k: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        match (field("errorType"), field("errorMessage")) {
            (Some(t), Some(m)) => format!("{t}: {m}"),
            _ => String::from_utf8_lossy(&body).into_owned(),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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

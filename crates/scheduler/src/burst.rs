//! The burst scaling limit: how fast one function may add execution
//! environments, as Lambda limits it (1,000 every 10 seconds by default).
//!
//! Each function has a bucket of `per_window` tokens that refills at
//! `per_window` per `window`, continuously; every new environment (a start
//! an invocation had to wait for) takes one. Time is the caller's: the
//! pool passes its clock, the tests theirs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// A function's scaling went faster than its limit allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "Rate Exceeded: the function adds at most {per_window} execution environments every {}s",
    window.as_secs()
)]
pub struct TooFast {
    /// Environments per window.
    pub per_window: u32,
    /// The window.
    pub window: Duration,
}

impl TooFast {
    /// The `Reason` of the 429 it becomes.
    pub fn reason(self) -> &'static str {
        "FunctionInvocationRateLimitExceeded"
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

/// Buckets by (tenant, function).
#[derive(Debug)]
pub struct BurstLimit {
    per_window: u32,
    window: Duration,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl BurstLimit {
    /// Lambda's default: 1,000 environments per 10 s.
    pub const DEFAULT_PER_WINDOW: u32 = 1_000;
    /// Lambda's window.
    pub const WINDOW: Duration = Duration::from_secs(10);
    /// Buckets kept before full ones (functions idle for a window) are let go.
    const BUCKETS_MAX: usize = 100_000;

    /// `per_window` new environments per `window` for each function.
    pub fn new(per_window: u32, window: Duration) -> BurstLimit {
        BurstLimit {
            per_window,
            window,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token for one new environment of the function at `now`.
    pub fn take(&self, tenant: &str, function: &str, now: Duration) -> Result<(), TooFast> {
        let capacity = f64::from(self.per_window);
        let rate = capacity / self.window.as_secs_f64();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= Self::BUCKETS_MAX {
            let window = self.window;
            buckets.retain(|_, b| now.saturating_sub(b.at) < window);
        }
        let bucket = buckets
            .entry((tenant.to_string(), function.to_string()))
            .or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
        let elapsed = now.saturating_sub(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(TooFast {
                per_window: self.per_window,
                window: self.window,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(f64) -> Duration = Duration::from_secs_f64;

    #[test]
    fn a_function_adds_at_most_its_limit_per_window_and_refills_steadily() {
        let limit = BurstLimit::new(1_000, BurstLimit::WINDOW);
        for _ in 0..1_000 {
            limit.take("t", "f", S(5.0)).unwrap();
        }
        let refused = limit.take("t", "f", S(5.0)).unwrap_err();
        assert_eq!(refused.reason(), "FunctionInvocationRateLimitExceeded");
        // 100 a second come back.
        for _ in 0..50 {
            limit.take("t", "f", S(5.5)).unwrap();
        }
        assert!(limit.take("t", "f", S(5.5)).is_err());
        // Never more than a window's worth, however long it waited.
        let mut taken = 0;
        while limit.take("t", "f", S(500.0)).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 1_000);
        // Other functions have buckets of their own.
        assert!(limit.take("t", "g", S(500.0)).is_ok());
        assert!(limit.take("u", "f", S(500.0)).is_ok());
    }

    #[test]
    fn a_clock_that_goes_back_gives_nothing() {
        let limit = BurstLimit::new(2, Duration::from_secs(10));
        limit.take("t", "f", S(100.0)).unwrap();
        limit.take("t", "f", S(100.0)).unwrap();
        assert!(limit.take("t", "f", S(50.0)).is_err());
        assert!(limit.take("t", "f", S(105.0)).is_ok());
    }
}

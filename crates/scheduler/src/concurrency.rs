//! Concurrency limits, as Lambda applies them to synchronous invocations.
//!
//! Each tenant (an account) may run [`ConcurrencyLimits::account`]
//! invocations at once. A function with *reserved* concurrency `r` runs up
//! to `r` at once from its own reservation, whatever the others do (`0`
//! throttles it entirely); every other function of the tenant shares what
//! is left, the *unreserved* pool, which reservations may never shrink
//! below [`ConcurrencyLimits::unreserved_min`]. An invocation over its
//! limit is refused at once with the reason Lambda gives
//! ([`Throttle::reason`]), never queued.
//!
//! The hot path takes two read locks and one compare-and-swap; changes of
//! reservation, which are rare, take the tenant's write lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The limits every tenant gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencyLimits {
    /// Invocations a tenant may run at once (Lambda's default: 1,000).
    pub account: u32,
    /// What reservations must leave to the functions without one (Lambda: 100).
    pub unreserved_min: u32,
}

impl ConcurrencyLimits {
    /// Lambda's defaults.
    pub const DEFAULT: ConcurrencyLimits = ConcurrencyLimits {
        account: 1_000,
        unreserved_min: 100,
    };
}

impl Default for ConcurrencyLimits {
    fn default() -> ConcurrencyLimits {
        ConcurrencyLimits::DEFAULT
    }
}

/// Why an invocation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Throttle {
    /// The function runs its reserved concurrency already (or has none).
    #[error("Rate Exceeded: the function's reserved concurrency of {limit} is in use")]
    Reserved {
        /// The function's reserved concurrency.
        limit: u32,
    },
    /// The tenant's unreserved pool is in use.
    #[error("Rate Exceeded: the account's unreserved concurrency of {limit} is in use")]
    Account {
        /// The unreserved concurrency at the time.
        limit: u32,
    },
}

impl Throttle {
    /// The `Reason` Lambda puts in its `TooManyRequestsException`.
    pub fn reason(self) -> &'static str {
        match self {
            Throttle::Reserved { .. } => "ReservedFunctionConcurrentInvocationLimitExceeded",
            Throttle::Account { .. } => "ConcurrentInvocationLimitExceeded",
        }
    }
}

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError<E> {
    /// It would leave the unreserved pool below its minimum.
    #[error(
        "Specified ReservedConcurrentExecutions for function decreases account's \
         UnreservedConcurrentExecution below its minimum value of [{minimum}]."
    )]
    BelowUnreservedMinimum {
        /// The minimum.
        minimum: u32,
    },
    /// Saving it failed; nothing changed.
    #[error(transparent)]
    Persist(E),
}

/// One running invocation's hold on its concurrency; released when dropped.
#[derive(Debug)]
pub struct Permit {
    counter: Arc<AtomicU32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A function's reservation and what runs of it.
#[derive(Debug, Default)]
struct FunctionGate {
    /// Reserved concurrency, if any.
    reserved: Option<u32>,
    /// Invocations running on the reservation.
    running: Arc<AtomicU32>,
}

/// One tenant's state.
#[derive(Debug)]
struct TenantGate {
    /// Functions with a reservation, by name.
    reserved: RwLock<HashMap<String, FunctionGate>>,
    /// The account limit less every reservation.
    unreserved_limit: AtomicU32,
    /// Invocations running on the unreserved pool.
    unreserved_running: Arc<AtomicU32>,
    /// Serialises changes of reservation (check, persist, apply).
    changing: Mutex<()>,
}

/// Admission by concurrency for every tenant of the platform.
#[derive(Debug)]
pub struct Concurrency {
    limits: ConcurrencyLimits,
    tenants: RwLock<HashMap<String, Arc<TenantGate>>>,
}

impl Concurrency {
    /// No reservations yet.
    pub fn new(limits: ConcurrencyLimits) -> Concurrency {
        Concurrency {
            limits,
            tenants: RwLock::default(),
        }
    }

    /// The limits every tenant gets.
    pub fn limits(&self) -> ConcurrencyLimits {
        self.limits
    }

    fn tenant(&self, tenant: &str) -> Arc<TenantGate> {
        if let Some(gate) = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            return gate.clone();
        }
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(TenantGate {
                    reserved: RwLock::default(),
                    unreserved_limit: AtomicU32::new(self.limits.account),
                    unreserved_running: Arc::default(),
                    changing: Mutex::new(()),
                })
            })
            .clone()
    }

    /// Admits one invocation of `function`, or says why not. The permit
    /// holds its place until dropped.
    pub fn admit(&self, tenant: &str, function: &str) -> Result<Permit, Throttle> {
        let gate = self.tenant(tenant);
        let (counter, limit, throttle) = {
            let reserved = gate.reserved.read().unwrap_or_else(|p| p.into_inner());
            match reserved.get(function) {
                Some(f) => {
                    let limit = f.reserved.unwrap_or(0);
                    (f.running.clone(), limit, Throttle::Reserved { limit })
                }
                None => {
                    let limit = gate.unreserved_limit.load(Ordering::Acquire);
                    (
                        gate.unreserved_running.clone(),
                        limit,
                        Throttle::Account { limit },
                    )
                }
            }
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map(|_| Permit { counter })
            .map_err(|_| throttle)
    }

    /// The reserved concurrency of `function`, if it has one.
    pub fn reserved(&self, tenant: &str, function: &str) -> Option<u32> {
        self.tenant(tenant)
            .reserved
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(function)
            .and_then(|f| f.reserved)
    }

    /// The account limit less every reservation of `tenant`.
    pub fn unreserved(&self, tenant: &str) -> u32 {
        self.tenant(tenant).unreserved_limit.load(Ordering::Acquire)
    }

    /// Sets (`Some`) or removes (`None`) the reservation of `function`:
    /// checks it against the unreserved minimum, runs `persist`, and only
    /// then applies it. Changes of one tenant's reservations run one at a
    /// time. Invocations already running keep their permits; from now on
    /// the function is admitted against its new limit.
    pub fn reserve<E>(
        &self,
        tenant: &str,
        function: &str,
        reserved: Option<u32>,
        persist: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), ReserveError<E>> {
        let gate = self.tenant(tenant);
        let _changing = gate.changing.lock().unwrap_or_else(|p| p.into_inner());
        let others: u64 = gate
            .reserved
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(name, _)| name.as_str() != function)
            .map(|(_, f)| u64::from(f.reserved.unwrap_or(0)))
            .sum();
        let total = others + u64::from(reserved.unwrap_or(0));
        let unreserved = u64::from(self.limits.account).saturating_sub(total);
        if reserved.is_some() && unreserved < u64::from(self.limits.unreserved_min) {
            return Err(ReserveError::BelowUnreservedMinimum {
                minimum: self.limits.unreserved_min,
            });
        }
        persist().map_err(ReserveError::Persist)?;
        let mut map = gate.reserved.write().unwrap_or_else(|p| p.into_inner());
        match reserved {
            Some(r) => {
                map.entry(function.to_string()).or_default().reserved = Some(r);
            }
            None => {
                map.remove(function);
            }
        }
        gate.unreserved_limit
            .store(unreserved as u32, Ordering::Release);
        Ok(())
    }

    /// Restores a reservation read back from the store at start-up, without
    /// the minimum's check (it was checked when it was made).
    pub fn restore(&self, tenant: &str, function: &str, reserved: u32) {
        let gate = self.tenant(tenant);
        let mut map = gate.reserved.write().unwrap_or_else(|p| p.into_inner());
        map.entry(function.to_string()).or_default().reserved = Some(reserved);
        let total: u64 = map
            .values()
            .map(|f| u64::from(f.reserved.unwrap_or(0)))
            .sum();
        let unreserved = u64::from(self.limits.account).saturating_sub(total);
        gate.unreserved_limit
            .store(unreserved as u32, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConcurrencyLimits = ConcurrencyLimits {
        account: 110,
        unreserved_min: 100,
    };

    fn ok() -> Result<(), std::io::Error> {
        Ok(())
    }

    #[test]
    fn a_reserved_function_never_exceeds_its_reservation() {
        let c = Concurrency::new(LIMITS);
        c.reserve("t", "f", Some(3), ok).unwrap();
        let held: Vec<Permit> = (0..3).map(|_| c.admit("t", "f").unwrap()).collect();
        let refused = c.admit("t", "f").unwrap_err();
        assert_eq!(refused, Throttle::Reserved { limit: 3 });
        assert_eq!(
            refused.reason(),
            "ReservedFunctionConcurrentInvocationLimitExceeded"
        );
        drop(held);
        let again: Vec<Permit> = (0..3).map(|_| c.admit("t", "f").unwrap()).collect();
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn zero_reserved_throttles_every_invocation() {
        let c = Concurrency::new(LIMITS);
        c.reserve("t", "f", Some(0), ok).unwrap();
        assert_eq!(
            c.admit("t", "f").unwrap_err(),
            Throttle::Reserved { limit: 0 }
        );
        c.reserve("t", "f", None, ok).unwrap();
        assert!(
            c.admit("t", "f").is_ok(),
            "deleting the reservation lifts it"
        );
    }

    #[test]
    fn unreserved_functions_share_what_reservations_leave() {
        let c = Concurrency::new(LIMITS);
        c.reserve("t", "reserved", Some(10), ok).unwrap();
        assert_eq!(c.unreserved("t"), 100);
        let held: Vec<Permit> = (0..100)
            .map(|i| c.admit("t", if i % 2 == 0 { "a" } else { "b" }).unwrap())
            .collect();
        let refused = c.admit("t", "c").unwrap_err();
        assert_eq!(refused, Throttle::Account { limit: 100 });
        assert_eq!(refused.reason(), "ConcurrentInvocationLimitExceeded");
        // The reservation is the reserved function's own, pool or no pool.
        let reserved: Vec<Permit> = (0..10).map(|_| c.admit("t", "reserved").unwrap()).collect();
        assert_eq!((held.len(), reserved.len()), (100, 10));
        // Another tenant has a pool of its own.
        assert!(c.admit("other", "a").is_ok());
    }

    #[test]
    fn reservations_never_push_the_unreserved_pool_below_its_minimum() {
        let c = Concurrency::new(LIMITS);
        c.reserve("t", "f", Some(6), ok).unwrap();
        let refused = c.reserve("t", "g", Some(5), ok).unwrap_err();
        assert!(matches!(
            refused,
            ReserveError::BelowUnreservedMinimum { minimum: 100 }
        ));
        assert!(
            refused
                .to_string()
                .contains("below its minimum value of [100]")
        );
        assert_eq!(
            c.reserved("t", "g"),
            None,
            "a refused reservation changes nothing"
        );
        // Changing a function's own reservation counts it once.
        c.reserve("t", "f", Some(10), ok).unwrap();
        assert_eq!(c.unreserved("t"), 100);
    }

    #[test]
    fn a_failed_save_changes_nothing() {
        let c = Concurrency::new(LIMITS);
        let failed = c.reserve("t", "f", Some(0), || {
            Err(std::io::Error::other("disk full"))
        });
        assert!(matches!(failed, Err(ReserveError::Persist(e)) if e.to_string() == "disk full"));
        assert_eq!(c.reserved("t", "f"), None);
        assert!(c.admit("t", "f").is_ok());
    }

    #[test]
    fn permits_taken_before_a_change_are_released_to_the_pool_they_came_from() {
        let c = Concurrency::new(LIMITS);
        let unreserved = c.admit("t", "f").unwrap();
        c.reserve("t", "f", Some(1), ok).unwrap();
        let reserved = c.admit("t", "f").unwrap();
        assert!(c.admit("t", "f").is_err());
        drop(unreserved);
        assert!(
            c.admit("t", "f").is_err(),
            "the old permit freed the pool, not the reservation"
        );
        drop(reserved);
        assert!(c.admit("t", "f").is_ok());
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_limit() {
        let c = Arc::new(Concurrency::new(LIMITS));
        c.reserve("t", "f", Some(4), ok).unwrap();
        let peak = Arc::new(AtomicU32::new(0));
        let running = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, peak, running) = (c.clone(), peak.clone(), running.clone());
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        if let Ok(permit) = c.admit("t", "f") {
                            let now = running.fetch_add(1, Ordering::AcqRel) + 1;
                            peak.fetch_max(now, Ordering::AcqRel);
                            running.fetch_sub(1, Ordering::AcqRel);
                            drop(permit);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 4);
    }

    #[test]
    fn restored_reservations_count_against_the_pool() {
        let c = Concurrency::new(LIMITS);
        c.restore("t", "f", 7);
        assert_eq!(c.reserved("t", "f"), Some(7));
        assert_eq!(c.unreserved("t"), 103);
    }
}

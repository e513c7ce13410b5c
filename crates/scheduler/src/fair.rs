//! Fair sharing of a host's instance slots among tenants.
//!
//! A host runs at most `capacity` invocations at once. A tenant alone on it
//! may use every slot. Once others are *active* — holding a slot, or having
//! asked for one within the last [`ACTIVE_TURNOVERS`] × `capacity` slots
//! taken or given back (that many turnovers of the host: longer than a
//! refused caller's `Retry-After` while the host is busy) — a tenant may always use its *fair share*, the slots but
//! the headroom divided among the active tenants, and beyond it only while
//! more than `headroom` slots stay free. So a flooding tenant fills the
//! host up to the headroom and no further, and a tenant below its share
//! always finds a slot at once: the flood is shed (a fast 429 with
//! `Retry-After`), never the others, and nobody waits in a queue. A
//! newcomer on a host the flood had filled alone is refused once at most
//! per slot turnover: its refusal makes it active, and the flood may not
//! take back the slots that free up.
//!
//! Shares are weighted: a tenant of weight 3 beside one of weight 1 has a
//! fair share three times as large (every tenant weighs 1 unless told).
//!
//! The decision takes one lock and no clock; `tests` replays the brief's
//! fairness scenario (Decision 14) in injected time.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::weights::Weights;

/// How many turnovers of the host's slots a tenant stays active after its
/// last request.
pub const ACTIVE_TURNOVERS: u64 = 32;

/// Why a slot was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Shed {
    /// Every slot is in use.
    #[error("every one of the host's {capacity} instance slots is busy")]
    Full {
        /// The host's slots.
        capacity: usize,
    },
    /// The tenant holds its fair share and only the headroom is free.
    #[error(
        "the account holds its fair share ({share}) of the host's instance slots while \
         others wait for them"
    )]
    OverShare {
        /// The tenant's fair share at the time.
        share: usize,
    },
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_tenant: HashMap<String, usize>,
    /// A logical clock: one tick per slot taken or given back (refusals do
    /// not count, so a storm of them cannot age a waiting tenant out).
    tick: u64,
    /// The tick of each tenant's last request or release.
    last_seen: HashMap<String, u64>,
    weights: Weights,
}

impl Held {
    fn weight(&self, tenant: &str) -> u64 {
        u64::from(self.weights.of(tenant))
    }

    /// Notes that `tenant` asked or gave back at `now` (allocating only
    /// for a tenant not seen before).
    fn seen(&mut self, tenant: &str, now: u64) {
        match self.last_seen.get_mut(tenant) {
            Some(seen) => *seen = now,
            None => {
                self.last_seen.insert(tenant.to_string(), now);
            }
        }
    }
}

/// The slots of one host and who holds them.
#[derive(Debug)]
pub struct FairShare {
    capacity: usize,
    headroom: usize,
    held: Mutex<Held>,
}

impl FairShare {
    /// `capacity` slots, of which a tenant over its fair share leaves
    /// `headroom` free (clamped below `capacity`).
    pub fn new(capacity: usize, headroom: usize) -> FairShare {
        FairShare {
            capacity,
            headroom: headroom.min(capacity.saturating_sub(1)),
            held: Mutex::default(),
        }
    }

    /// Sets `tenant`'s weight (at least 1; 1 is everyone's default).
    pub fn set_weight(&self, tenant: &str, weight: u32) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.weights.set(tenant, weight);
    }

    /// The headroom for `capacity` slots: an eighth, at least one.
    pub fn default_headroom(capacity: usize) -> usize {
        (capacity / 8).max(1)
    }

    /// Takes a slot for `tenant`, or says why not. Give it back with
    /// [`FairShare::release`].
    pub fn acquire(&self, tenant: &str) -> Result<(), Shed> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = held.tick;
        held.seen(tenant, now);
        let window = ACTIVE_TURNOVERS * self.capacity as u64;
        if held.last_seen.len() > 4 * (held.by_tenant.len() + 16) {
            let Held {
                last_seen,
                by_tenant,
                ..
            } = &mut *held;
            last_seen.retain(|t, seen| now - *seen <= window || by_tenant.contains_key(t));
        }
        if held.total >= self.capacity {
            return Err(Shed::Full {
                capacity: self.capacity,
            });
        }
        let others: u64 = held
            .last_seen
            .iter()
            .filter(|(t, seen)| {
                t.as_str() != tenant && (now - **seen <= window || held.by_tenant.contains_key(*t))
            })
            .map(|(t, _)| held.weight(t))
            .sum();
        let own = held.by_tenant.get(tenant).copied().unwrap_or(0);
        let weight = held.weight(tenant);
        let sharable = (self.capacity - self.headroom) as u64;
        let share = ((sharable * weight / (others + weight)) as usize).max(1);
        let free = self.capacity - held.total;
        if others > 0 && own >= share && free <= self.headroom {
            return Err(Shed::OverShare { share });
        }
        held.total += 1;
        held.tick += 1;
        *held.by_tenant.entry(tenant.to_string()).or_default() += 1;
        Ok(())
    }

    /// Gives back a slot `tenant` acquired.
    pub fn release(&self, tenant: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.tick += 1;
        let now = held.tick;
        held.seen(tenant, now);
        if let Some(n) = held.by_tenant.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                held.by_tenant.remove(tenant);
            }
            held.total -= 1;
        }
    }

    /// Slots `tenant` holds now.
    pub fn held_by(&self, tenant: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.by_tenant.get(tenant).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    //! Decision 14's scenario, replayed in injected time: capacity N slots;
    //! every call lasts 100 ms; tenant A keeps 10×N invocations outstanding
    //! (each one answered is followed at once by another; each one refused
    //! is sent again after 10 ms, ignoring `Retry-After`), tenant B keeps
    //! 0.1×N (and, refused, waits the second `Retry-After` asks for).
    //! B must keep ≥ 99% success, and its queueing delay's p99 within 2× of
    //! its p99 alone. An invocation's queueing delay runs from its first
    //! send to its admission, through every refusal and re-send between.

    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const N: usize = 100;
    const CALL_MS: u64 = 100;
    /// What a refused flooding client waits before sending again.
    const FLOOD_RETRY_MS: u64 = 10;
    /// What a refused well-behaved client waits: `Retry-After`, a second.
    const RETRY_AFTER_MS: u64 = 1_000;
    const RUN_MS: u64 = 60_000;
    /// The tenant that floods.
    const FLOODING: u8 = 0;

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
    enum Event {
        /// A client (tenant, index) sends an invocation.
        Send(u8, usize),
        /// The invocation of that client ends.
        Done(u8, usize),
    }

    /// Per tenant: (invocations sent, refused, queueing delays in ms).
    #[derive(Default)]
    struct Outcome {
        sent: u64,
        refused: u64,
        delays_ms: Vec<u64>,
    }

    /// Runs the clients of `tenants` (tenant id, clients, first-send jitter
    /// seed) against one host; returns each tenant's outcome. Time is a
    /// counter of milliseconds; nothing sleeps.
    fn replay(tenants: &[(u8, usize)], seed: u64) -> HashMap<u8, Outcome> {
        replay_weighted(tenants, &[], seed)
    }

    /// [`replay`] with tenants weighted: (tenant, weight).
    fn replay_weighted(
        tenants: &[(u8, usize)],
        weights: &[(u8, u32)],
        seed: u64,
    ) -> HashMap<u8, Outcome> {
        let host = FairShare::new(N, FairShare::default_headroom(N));
        for &(tenant, weight) in weights {
            host.set_weight(&tenant.to_string(), weight);
        }
        let mut queue = BinaryHeap::new();
        let mut rng = crate::replay::Rng(seed);
        for &(tenant, clients) in tenants {
            for client in 0..clients {
                queue.push(Reverse((rng.next() % CALL_MS, Event::Send(tenant, client))));
            }
        }
        let mut outcomes: HashMap<u8, Outcome> = HashMap::new();
        let mut first_sent: HashMap<(u8, usize), u64> = HashMap::new();
        while let Some(Reverse((now, event))) = queue.pop() {
            if now > RUN_MS {
                break;
            }
            match event {
                Event::Send(tenant, client) => {
                    let outcome = outcomes.entry(tenant).or_default();
                    outcome.sent += 1;
                    let since = *first_sent.entry((tenant, client)).or_insert(now);
                    match host.acquire(&tenant.to_string()) {
                        Ok(()) => {
                            first_sent.remove(&(tenant, client));
                            outcome.delays_ms.push(now - since);
                            queue.push(Reverse((now + CALL_MS, Event::Done(tenant, client))));
                        }
                        Err(_) => {
                            outcome.refused += 1;
                            let wait = if tenant == FLOODING {
                                FLOOD_RETRY_MS
                            } else {
                                RETRY_AFTER_MS
                            };
                            queue.push(Reverse((now + wait, Event::Send(tenant, client))));
                        }
                    }
                }
                Event::Done(tenant, client) => {
                    host.release(&tenant.to_string());
                    queue.push(Reverse((now, Event::Send(tenant, client))));
                }
            }
        }
        outcomes
    }

    fn p99(delays: &mut [u64]) -> u64 {
        delays.sort_unstable();
        delays[(delays.len() * 99 / 100).min(delays.len() - 1)]
    }

    #[test]
    fn a_flooding_tenant_does_not_starve_a_steady_one() {
        const A: u8 = FLOODING;
        const B: u8 = 1;
        let mut alone = replay(&[(B, N / 10)], 42);
        let mut shared = replay(&[(A, 10 * N), (B, N / 10)], 42);
        let mut b = shared.remove(&B).unwrap();
        let success = 1.0 - b.refused as f64 / b.sent as f64;
        assert!(success >= 0.99, "B's success {success:.4} < 0.99");
        let (b_p99, alone_p99) = (
            p99(&mut b.delays_ms),
            p99(&mut alone.get_mut(&B).unwrap().delays_ms),
        );
        assert!(
            b_p99 <= 2 * alone_p99,
            "B's queueing p99 {b_p99} ms > 2 × {alone_p99} ms alone"
        );
        // The host stays busy: A uses what B leaves but the headroom.
        let a = &shared[&A];
        let a_calls = a.sent - a.refused;
        let b_calls = b.sent - b.refused;
        let slot_ms = (a_calls + b_calls) * CALL_MS;
        let utilisation = slot_ms as f64 / (N as u64 * RUN_MS) as f64;
        eprintln!(
            "B: {} sent, {} refused ({:.3}% success), queueing p99 {b_p99} ms (alone {alone_p99} ms); \
             A: {} sent, {} refused; host utilisation {:.1}%",
            b.sent,
            b.refused,
            success * 100.0,
            a.sent,
            a.refused,
            utilisation * 100.0
        );
        assert!(utilisation > 0.85, "utilisation {utilisation:.3}");
        assert!(a.refused > 0, "A, flooding, is the one shed");
    }

    #[test]
    fn two_flooding_tenants_share_the_host_by_their_weights() {
        // Both flood (twice the host each, re-sending 10 ms after a
        // refusal); A weighs 3, B 1.
        const A: u8 = FLOODING;
        const B: u8 = 2;
        let run = |weights: &[(u8, u32)]| {
            let out = replay_weighted(&[(A, 2 * N), (B, 2 * N)], weights, 7);
            let calls = |t: u8| (out[&t].sent - out[&t].refused) as f64;
            calls(A) / calls(B)
        };
        let even = run(&[]);
        let weighted = run(&[(A, 3)]);
        eprintln!("slot-time A:B, equal weights {even:.2}, weights 3:1 {weighted:.2}");
        assert!((0.8..1.25).contains(&even), "equal weights: {even:.2}");
        assert!((2.4..3.6).contains(&weighted), "weights 3:1: {weighted:.2}");
    }

    #[test]
    fn a_heavier_tenants_share_is_larger() {
        let host = FairShare::new(10, 2);
        host.set_weight("a", 3);
        host.acquire("b").unwrap();
        host.release("b");
        // a's share is 8 × 3/4 = 6, b's 8 × 1/4 = 2.
        for _ in 0..8 {
            host.acquire("a").unwrap();
        }
        assert_eq!(host.acquire("a"), Err(Shed::OverShare { share: 6 }));
        host.set_weight("a", 1);
        assert_eq!(host.acquire("a"), Err(Shed::OverShare { share: 4 }));
    }

    #[test]
    fn alone_a_tenant_gets_every_slot_until_another_comes() {
        let host = FairShare::new(8, 1);
        for _ in 0..8 {
            host.acquire("a").unwrap();
        }
        assert_eq!(host.acquire("a"), Err(Shed::Full { capacity: 8 }));
        // A newcomer finds the host full once; from then on it is active,
        // and the slots a frees go to it, not back to a.
        assert_eq!(host.acquire("b"), Err(Shed::Full { capacity: 8 }));
        host.release("a");
        assert_eq!(host.acquire("a"), Err(Shed::OverShare { share: 3 }));
        host.acquire("b").unwrap();
        host.release("a");
        host.acquire("b").unwrap();
        assert_eq!((host.held_by("a"), host.held_by("b")), (6, 2));
    }

    #[test]
    fn a_tenant_under_its_share_always_gets_a_free_slot() {
        let host = FairShare::new(10, 2);
        host.acquire("b").unwrap();
        host.release("b");
        // b was here a moment ago: a may take its share (4) and what is
        // free beyond the headroom, no more.
        for _ in 0..8 {
            host.acquire("a").unwrap();
        }
        assert!(matches!(host.acquire("a"), Err(Shed::OverShare { .. })));
        host.acquire("b").unwrap();
        host.acquire("b").unwrap();
        assert_eq!(host.acquire("c"), Err(Shed::Full { capacity: 10 }));
        for _ in 0..4 {
            host.release("a");
        }
        // Three tenants: a share is 8 / 3 = 2. c is under it; b is not, but
        // more than the headroom is free; a is over it, and only the
        // headroom is left.
        host.acquire("c").unwrap();
        host.acquire("b").unwrap();
        assert_eq!(host.acquire("a"), Err(Shed::OverShare { share: 2 }));
    }
}

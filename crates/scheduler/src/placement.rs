//! Placement: which worker runs an invocation.
//!
//! Functions are sharded by a hash of (tenant, function) with jump
//! consistent hashing (Lamping and Veach), so each shard owns its
//! functions' placement state and no lock is global: a decision takes one
//! shard's read lock. Within a shard, a function's invocations go by the
//! power of two choices on load — two candidate workers, the less loaded
//! wins — drawn from the workers that already hold the function's code
//! when there are any, so its code is pulled and compiled on as few
//! workers as possible. Today every worker is this process's; the
//! interfaces take worker ids so that shards and workers can live on other
//! nodes later.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A worker's index in the placement.
pub type WorkerId = usize;

/// Most workers one function's code is kept on before placement spreads
/// it no further (two choices need two).
const HOLDERS_MAX: usize = 4;

/// How much busier than another worker a function's holder may be before
/// the function's code is spread to that worker too.
const SPREAD_MARGIN: u32 = 8;

/// The workers that hold a function's code.
type Holders = Vec<WorkerId>;

/// One shard: the functions it owns and where their code is.
#[derive(Debug, Default)]
struct Shard {
    holders: RwLock<HashMap<u64, Holders>>,
}

/// Where invocations run.
#[derive(Debug)]
pub struct Placement {
    shards: Vec<Shard>,
    /// In-flight invocations per worker.
    loads: Vec<AtomicU32>,
    /// Seeds the choices; deterministic for a fixed seed.
    draws: AtomicU64,
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
}

/// An invocation's place: the worker, held (its load counted) until dropped.
#[derive(Debug)]
pub struct Placed<'a> {
    /// The worker chosen.
    pub worker: WorkerId,
    load: &'a AtomicU32,
}

impl Drop for Placed<'_> {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Jump consistent hash: the bucket in `0..buckets` of `key`; growing
/// `buckets` by one moves only a `1/buckets` share of the keys.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

impl Placement {
    /// `shards` shards over `workers` workers (both at least one); `seed`
    /// fixes the sequence of choices.
    pub fn new(shards: u32, workers: usize, seed: u64) -> Placement {
        Placement {
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            loads: (0..workers.max(1)).map(|_| AtomicU32::new(0)).collect(),
            draws: AtomicU64::new(seed | 1),
            hasher: Default::default(),
        }
    }

    /// The hash a function is placed by.
    pub fn function_hash(&self, tenant: &str, function: &str) -> u64 {
        self.hasher.hash_one((tenant, function))
    }

    /// The shard that owns a function.
    pub fn shard_of(&self, function_hash: u64) -> usize {
        jump_hash(function_hash, self.shards.len() as u32) as usize
    }

    /// A pseudo-random number (xorshift on a shared counter: no lock).
    fn draw(&self) -> u64 {
        let mut x = self
            .draws
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// The less loaded of two draws among `count` candidates, the `i`th of
    /// which is `candidate(i)`.
    fn two_choices(&self, count: usize, candidate: impl Fn(usize) -> WorkerId) -> WorkerId {
        let r = self.draw();
        let a = candidate((r as usize) % count);
        let b = candidate(((r >> 32) as usize) % count);
        let load = |w: WorkerId| self.loads[w].load(Ordering::Relaxed);
        if load(b) < load(a) { b } else { a }
    }

    /// A function's hash and the shard that owns it.
    fn locate(&self, tenant: &str, function: &str) -> (u64, &Shard) {
        let key = self.function_hash(tenant, function);
        (key, &self.shards[self.shard_of(key)])
    }

    /// Places one invocation of the function: on a worker that holds its
    /// code (the less loaded of two); when none does yet, or the one chosen
    /// is more than [`SPREAD_MARGIN`] busier than a worker drawn at random,
    /// on the less loaded of two of all workers, which then holds it too
    /// (up to [`HOLDERS_MAX`] holders).
    pub fn place(&self, tenant: &str, function: &str) -> Placed<'_> {
        let (key, shard) = self.locate(tenant, function);
        let worker = {
            let holders = shard.holders.read().unwrap_or_else(|p| p.into_inner());
            holders.get(&key).and_then(|held| {
                let chosen = self.two_choices(held.len(), |i| held[i]);
                let other = (self.draw() as usize) % self.loads.len();
                let crowded = self.loads[chosen].load(Ordering::Relaxed)
                    > self.loads[other].load(Ordering::Relaxed) + SPREAD_MARGIN;
                (!crowded || held.len() >= HOLDERS_MAX).then_some(chosen)
            })
        };
        let worker = match worker {
            Some(w) => w,
            None => self.place_new(shard, key),
        };
        self.loads[worker].fetch_add(1, Ordering::AcqRel);
        Placed {
            worker,
            load: &self.loads[worker],
        }
    }

    /// A first placement: two choices among all workers; the winner
    /// becomes a holder of the function's code.
    fn place_new(&self, shard: &Shard, key: u64) -> WorkerId {
        let chosen = self.two_choices(self.loads.len(), |i| i);
        let mut holders = shard.holders.write().unwrap_or_else(|p| p.into_inner());
        let held = holders.entry(key).or_default();
        if !held.contains(&chosen) && held.len() < HOLDERS_MAX {
            held.push(chosen);
        }
        chosen
    }

    /// Forgets where a function's code is (it was deleted).
    pub fn forget(&self, tenant: &str, function: &str) {
        let (key, shard) = self.locate(tenant, function);
        shard
            .holders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// In-flight invocations on `worker`.
    pub fn load(&self, worker: WorkerId) -> u32 {
        self.loads[worker].load(Ordering::Acquire)
    }

    /// The workers holding a function's code.
    pub fn holders(&self, tenant: &str, function: &str) -> Vec<WorkerId> {
        let (key, shard) = self.locate(tenant, function);
        shard
            .holders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_moves_only_a_share_of_keys_when_a_bucket_is_added() {
        let keys: Vec<u64> = (0..10_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let moved = keys
            .iter()
            .filter(|k| jump_hash(**k, 10) != jump_hash(**k, 11))
            .count();
        // Ideally 1/11 of them (909); allow the hash's variance.
        assert!((700..1_100).contains(&moved), "{moved} moved");
        for k in &keys {
            assert!(jump_hash(*k, 11) < 11);
            let (before, after) = (jump_hash(*k, 10), jump_hash(*k, 11));
            assert!(
                before == after || after == 10,
                "a key moves only to the new bucket"
            );
        }
        let mut counts = [0usize; 8];
        for k in &keys {
            counts[jump_hash(*k, 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|c| (1_000..1_500).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_function_stays_on_the_workers_that_hold_its_code() {
        let placement = Placement::new(16, 8, 42);
        let first = placement.place("t", "f").worker;
        assert_eq!(placement.holders("t", "f"), [first]);
        for _ in 0..1_000 {
            assert_eq!(placement.place("t", "f").worker, first);
        }
        placement.forget("t", "f");
        assert!(placement.holders("t", "f").is_empty());
    }

    #[test]
    fn two_choices_prefer_the_less_loaded_worker() {
        let placement = Placement::new(4, 2, 7);
        // Load worker 0 heavily; new functions then land on worker 1
        // whenever the two draws differ.
        let held: Vec<Placed<'_>> = (0..100)
            .map(|_| Placed {
                worker: 0,
                load: {
                    placement.loads[0].fetch_add(1, Ordering::AcqRel);
                    &placement.loads[0]
                },
            })
            .collect();
        let on_one = (0..200)
            .filter(|i| placement.place("t", &format!("f{i}")).worker == 1)
            .count();
        assert!(
            on_one > 80,
            "{on_one} of 200 new functions went to the idle worker"
        );
        drop(held);
        assert_eq!(
            placement.load(0),
            0,
            "loads are released with their placements"
        );
    }

    #[test]
    fn a_busy_function_spreads_to_more_workers_but_not_without_bound() {
        let placement = Placement::new(4, 8, 3);
        let held: Vec<Placed<'_>> = (0..400).map(|_| placement.place("t", "hot")).collect();
        let holders = placement.holders("t", "hot");
        assert!(
            holders.len() > 1 && holders.len() <= HOLDERS_MAX,
            "{holders:?}"
        );
        let on_holders: u32 = holders.iter().map(|w| placement.load(*w)).sum();
        assert_eq!(on_holders, 400, "every invocation ran where the code is");
        drop(held);
    }

    #[test]
    fn many_functions_spread_over_the_workers() {
        let placement = Placement::new(64, 4, 1);
        let held: Vec<Placed<'_>> = (0..4_000)
            .map(|i| placement.place("t", &format!("f{i}")))
            .collect();
        let loads: Vec<u32> = (0..4).map(|w| placement.load(w)).collect();
        assert!(loads.iter().all(|l| (900..1_100).contains(l)), "{loads:?}");
        drop(held);
        assert!((0..4).all(|w| placement.load(w) == 0));
    }
}

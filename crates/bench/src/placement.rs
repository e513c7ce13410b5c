//! Placement decisions per second on one core: `Placement::place`, the call
//! every Invoke makes (Decision 14), with its hash, shard lookup, two
//! choices and load accounting, on functions already placed (warm
//! routing), over one function and over 1,000, for one worker (as
//! `nimbus up` runs today) and for eight.

use nimbus_scheduler::Placement;
use std::time::{Duration, Instant};

/// Shards, as the platform has them.
const SHARDS: u32 = 64;

/// One series.
pub struct Series {
    /// What was placed where.
    pub label: String,
    /// Decisions made.
    pub decisions: u64,
    /// How long they took.
    pub took: Duration,
}

impl Series {
    /// Decisions per second.
    pub fn per_second(&self) -> f64 {
        self.decisions as f64 / self.took.as_secs_f64()
    }
}

/// Measures `decisions` placements per series, on this thread.
pub fn measure(decisions: u64) -> Vec<Series> {
    let mut series = Vec::new();
    for workers in [1usize, 8] {
        for functions in [1usize, 1_000] {
            let placement = Placement::new(SHARDS, workers, 42);
            let names: Vec<String> = (0..functions).map(|i| format!("function-{i}")).collect();
            // Placed once each first: the series is warm routing.
            for name in &names {
                drop(placement.place("123456789012", name));
            }
            let started = Instant::now();
            for i in 0..decisions {
                let name = &names[(i as usize) % names.len()];
                let placed = placement.place("123456789012", name);
                std::hint::black_box(placed.worker);
            }
            series.push(Series {
                label: format!(
                    "{functions} function{} on {workers} worker{}",
                    if functions == 1 { "" } else { "s" },
                    if workers == 1 { "" } else { "s" }
                ),
                decisions,
                took: started.elapsed(),
            });
        }
    }
    series
}

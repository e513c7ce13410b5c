//! Percentiles of measured durations.

use std::time::Duration;

/// The distribution of a set of measured durations.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// How many were measured.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples`, which must not be empty.
    pub fn of(mut samples: Vec<Duration>) -> Summary {
        assert!(!samples.is_empty(), "a summary of no samples");
        samples.sort_unstable();
        Summary {
            count: samples.len(),
            p50: percentile(&samples, 500),
            p99: percentile(&samples, 990),
            p999: percentile(&samples, 999),
            max: samples[samples.len() - 1],
        }
    }
}

/// The nearest-rank percentile of `sorted`: the smallest value with at
/// least `per_mille` thousandths of the samples at or below it. Integer
/// arithmetic, because in floating point 99.9% of 1,000 rounds up to 1,000.
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    let rank = (per_mille * sorted.len()).div_ceil(1_000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let s = Summary::of(samples.into_iter().rev().collect());
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, Duration::from_micros(500));
        assert_eq!(s.p99, Duration::from_micros(990));
        assert_eq!(s.p999, Duration::from_micros(999));
        assert_eq!(s.max, Duration::from_micros(1000));
        let one = Summary::of(vec![Duration::from_micros(7)]);
        assert_eq!((one.p50, one.p999), (one.max, one.max));
    }
}

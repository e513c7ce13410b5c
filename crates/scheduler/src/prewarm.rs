//! Predictive pre-warming: how many instances of a function to keep ready.
//!
//! Per function, a [`Forecast`] keeps a per-minute count of arrivals for
//! the last week and the mean duration of its invocations. Ahead of each
//! minute it predicts the arrival rate of the next [`HORIZON_MINUTES`]:
//! the exponentially smoothed recent rate, or — when larger — the rate at
//! the same time of day yesterday or a week ago (the seasonality that
//! makes a daily peak predictable). Expected concurrency is rate × mean
//! duration; the target is the number of instances that Poisson arrivals
//! at that concurrency times (1 + margin) — 0.2, or 0.5 for a spiky
//! function (per-minute counts with a coefficient of variation over
//! [`SPIKY_CV`] in the last hour) — exceed only with probability
//! [`POISSON_TAIL`]: a function invoked now and then wants none kept, a
//! busy one a few above its mean. The pool pre-warms up to the
//! target and lets idle instances above it go only after
//! [`SCALE_DOWN_AFTER_S`] (hysteresis). Time is whatever the caller says
//! it is: the tests replay a week in a second.

use std::collections::VecDeque;

/// Minutes of history kept: a week.
pub const HISTORY_MINUTES: usize = 7 * 24 * 60;
/// How far ahead the forecast looks, in minutes.
pub const HORIZON_MINUTES: usize = 3;
/// Weight of the newest minute in the smoothed rate.
pub const SMOOTHING: f64 = 0.3;
/// Margin over the expected concurrency.
pub const MARGIN: f64 = 0.2;
/// Margin of a spiky function.
pub const MARGIN_SPIKY: f64 = 0.5;
/// Coefficient of variation of per-minute arrivals (last hour) above which
/// a function is spiky.
pub const SPIKY_CV: f64 = 0.5;
/// The chance the target may leave an arrival without a ready instance.
pub const POISSON_TAIL: f64 = 0.001;
/// Seconds an idle instance above the target stays before it goes.
pub const SCALE_DOWN_AFTER_S: u64 = 120;

/// What one function's traffic has looked like, and what it will.
#[derive(Debug, Clone)]
pub struct Forecast {
    /// Arrivals per minute, oldest first; the last is the minute now
    /// running.
    minutes: VecDeque<u32>,
    /// The minute (since the epoch of the caller's clock) the last entry
    /// counts; `None` until the clock is first read.
    current_minute: Option<u64>,
    /// Smoothed arrivals per minute over completed minutes.
    smoothed: f64,
    /// Smoothed invocation duration, in seconds.
    mean_duration_s: f64,
}

impl Default for Forecast {
    fn default() -> Forecast {
        Forecast::new()
    }
}

impl Forecast {
    /// No history yet.
    pub fn new() -> Forecast {
        Forecast {
            minutes: VecDeque::from([0]),
            current_minute: None,
            smoothed: 0.0,
            mean_duration_s: 0.0,
        }
    }

    /// Moves the clock to `now_s`, closing the minutes that ended.
    fn advance(&mut self, now_s: u64) {
        let minute = now_s / 60;
        let Some(mut current) = self.current_minute else {
            // The first reading starts the history.
            self.current_minute = Some(minute);
            return;
        };
        let kept = HISTORY_MINUTES + HORIZON_MINUTES + 1;
        if minute.saturating_sub(current) > kept as u64 {
            // Quiet for longer than the history: it is all zeros now, and
            // the smoothed rate has decayed to nothing.
            self.minutes.clear();
            self.minutes.extend(std::iter::repeat_n(0, kept));
            self.smoothed = 0.0;
            self.current_minute = Some(minute);
            return;
        }
        while current < minute {
            let closed = f64::from(*self.minutes.back().unwrap_or(&0));
            self.smoothed = SMOOTHING * closed + (1.0 - SMOOTHING) * self.smoothed;
            self.minutes.push_back(0);
            if self.minutes.len() > kept {
                self.minutes.pop_front();
            }
            current += 1;
        }
        self.current_minute = Some(current);
    }

    /// Records an arrival at `now_s` (seconds on the caller's clock).
    pub fn arrival(&mut self, now_s: u64) {
        self.advance(now_s);
        if let Some(last) = self.minutes.back_mut() {
            *last += 1;
        }
    }

    /// Records how long an invocation ran.
    pub fn duration(&mut self, seconds: f64) {
        self.mean_duration_s = if self.mean_duration_s == 0.0 {
            seconds
        } else {
            SMOOTHING * seconds + (1.0 - SMOOTHING) * self.mean_duration_s
        };
    }

    /// Arrivals counted `ago` minutes before the current one, if kept.
    fn minutes_ago(&self, ago: usize) -> Option<u32> {
        let last = self.minutes.len().checked_sub(1)?;
        last.checked_sub(ago).map(|i| self.minutes[i])
    }

    /// The most arrivals per minute seen `days` days ago, over the
    /// horizon ahead of that time of day.
    fn seasonal(&self, days: usize) -> Option<f64> {
        let back = days * 24 * 60;
        (0..=HORIZON_MINUTES)
            .filter_map(|ahead| back.checked_sub(ahead).and_then(|a| self.minutes_ago(a)))
            .max()
            .map(f64::from)
            .filter(|_| self.minutes.len() > back)
    }

    /// Whether the last hour's per-minute arrivals vary more than
    /// [`SPIKY_CV`] of their mean.
    fn spiky(&self) -> bool {
        let hour: Vec<f64> = (1..=60)
            .filter_map(|ago| self.minutes_ago(ago))
            .map(f64::from)
            .collect();
        if hour.len() < 10 {
            return false;
        }
        let mean = hour.iter().sum::<f64>() / hour.len() as f64;
        if mean <= 0.0 {
            return false;
        }
        let variance = hour.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / hour.len() as f64;
        variance.sqrt() / mean > SPIKY_CV
    }

    /// How many instances to keep (busy or ready) at `now_s`.
    pub fn target(&mut self, now_s: u64) -> usize {
        self.advance(now_s);
        let per_minute = [
            Some(self.smoothed),
            self.minutes_ago(0).map(f64::from),
            self.seasonal(1),
            self.seasonal(7),
        ]
        .into_iter()
        .flatten()
        .fold(0.0, f64::max);
        let expected = per_minute / 60.0 * self.mean_duration_s;
        if expected <= 0.0 {
            return 0;
        }
        let margin = if self.spiky() { MARGIN_SPIKY } else { MARGIN };
        poisson_quantile(expected * (1.0 + margin), 1.0 - POISSON_TAIL)
    }
}

/// The least `k` with P(N ≤ k) ≥ `p` for N ~ Poisson(`mean`); past a mean
/// of 100, the normal approximation.
fn poisson_quantile(mean: f64, p: f64) -> usize {
    if mean > 100.0 {
        // z for p = 0.999 is 3.09.
        return (mean + 3.09 * mean.sqrt()).ceil() as usize;
    }
    let (mut k, mut pmf) = (0usize, (-mean).exp());
    let mut cdf = pmf;
    while cdf < p {
        k += 1;
        pmf *= mean / k as f64;
        cdf += pmf;
    }
    k
}

#[cfg(test)]
mod tests {
    //! Decision 14's pre-warming scenario: a 7-day trace — a diurnal
    //! sinusoid with 10:1 peak to trough, Poisson arrivals, bursts of 5× for
    //! 2 minutes twice a day, seed 42 — replayed in injected time against a
    //! reactive baseline that keeps idle instances 10 minutes, and against
    //! the forecast. Pre-warming must cut the cold-start ratio to ≤ 1/5 of
    //! the baseline's for ≤ 1.5× its idle instance-seconds.

    use super::*;

    const DAY_S: u64 = 24 * 3600;
    const DAYS: u64 = 7;
    /// Mean arrivals per second, and the diurnal swing: (1 + a)/(1 − a) = 10.
    const MEAN_RATE: f64 = 2.0;
    const SWING: f64 = 9.0 / 11.0;
    /// Every invocation runs this long.
    const DURATION_S: f64 = 5.0;
    /// The bursts: start (seconds into the day), length, factor.
    const BURSTS: [(u64, u64); 2] = [(9 * 3600 + 30 * 60, 120), (17 * 3600 + 5 * 60, 120)];
    const BURST_FACTOR: f64 = 5.0;
    /// The baseline's keep-alive.
    const BASELINE_IDLE_S: f64 = 600.0;

    use crate::replay::Rng;

    fn rate(t: f64) -> f64 {
        let day = t % DAY_S as f64;
        let diurnal =
            MEAN_RATE * (1.0 + SWING * (2.0 * std::f64::consts::PI * (day / DAY_S as f64)).sin());
        let bursting = BURSTS
            .iter()
            .any(|(start, len)| day >= *start as f64 && day < (*start + *len) as f64);
        if bursting {
            diurnal * BURST_FACTOR
        } else {
            diurnal
        }
    }

    /// Arrival times over the week: a Poisson process of rate `rate(t)`,
    /// by thinning one of the peak rate.
    fn trace(seed: u64) -> Vec<f64> {
        let peak = MEAN_RATE * (1.0 + SWING) * BURST_FACTOR;
        let mut rng = Rng(seed);
        let (mut t, mut arrivals) = (0.0, Vec::new());
        loop {
            t += -(1.0 - rng.uniform()).ln() / peak;
            if t >= (DAYS * DAY_S) as f64 {
                return arrivals;
            }
            if rng.uniform() < rate(t) / peak {
                arrivals.push(t);
            }
        }
    }

    #[derive(Debug)]
    struct Run {
        invocations: u64,
        cold: u64,
        idle_instance_s: f64,
    }

    impl Run {
        fn cold_ratio(&self) -> f64 {
            self.cold as f64 / self.invocations as f64
        }
    }

    /// Replays `arrivals`; with `forecast`, the pool is brought to its
    /// target every 10 s and idle instances above it go after the
    /// hysteresis; without, idle instances go after the baseline's
    /// keep-alive.
    fn replay(arrivals: &[f64], mut forecast: Option<Forecast>) -> Run {
        // Each instance: when it is free again, and when it became idle.
        let mut busy_until: Vec<f64> = Vec::new();
        let mut idle_since: Vec<f64> = Vec::new();
        let (mut cold, mut idle_s) = (0u64, 0.0);
        let mut next_tick = 0.0;
        // Moves instances whose call ended into the idle list, in order.
        fn settle(busy: &mut Vec<f64>, idle: &mut Vec<f64>, now: f64) {
            busy.retain(|end| {
                if *end <= now {
                    idle.push(*end);
                    false
                } else {
                    true
                }
            });
        }
        let end = (DAYS * DAY_S) as f64;
        for &at in arrivals.iter().chain(std::iter::once(&end)) {
            // The pool's own clock: every 10 s before this arrival.
            while next_tick <= at {
                settle(&mut busy_until, &mut idle_since, next_tick);
                match &mut forecast {
                    None => idle_since.retain(|since| {
                        let expired = next_tick - since >= BASELINE_IDLE_S;
                        if expired {
                            idle_s += next_tick - since;
                        }
                        !expired
                    }),
                    Some(f) => {
                        let target = f.target(next_tick as u64);
                        let alive = busy_until.len() + idle_since.len();
                        if alive < target {
                            idle_since.extend(std::iter::repeat_n(next_tick, target - alive));
                        }
                        // Above the target, the longest idle go first, and
                        // only after the hysteresis.
                        let mut surplus =
                            (busy_until.len() + idle_since.len()).saturating_sub(target);
                        idle_since.sort_by(|a, b| a.total_cmp(b));
                        idle_since.retain(|since| {
                            let goes =
                                surplus > 0 && next_tick - since >= SCALE_DOWN_AFTER_S as f64;
                            if goes {
                                surplus -= 1;
                                idle_s += next_tick - since;
                            }
                            !goes
                        });
                    }
                }
                next_tick += 10.0;
            }
            if at >= end {
                break;
            }
            settle(&mut busy_until, &mut idle_since, at);
            if let Some(f) = &mut forecast {
                f.arrival(at as u64);
                f.duration(DURATION_S);
            }
            // The most recently idle instance serves (its cache is warmest).
            match idle_since
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, since)| (i, *since))
            {
                Some((i, since)) => {
                    idle_s += at - since;
                    idle_since.swap_remove(i);
                }
                None => cold += 1,
            }
            busy_until.push(at + DURATION_S);
        }
        settle(&mut busy_until, &mut idle_since, end);
        idle_s += idle_since.iter().map(|since| end - since).sum::<f64>();
        Run {
            invocations: arrivals.len() as u64,
            cold,
            idle_instance_s: idle_s,
        }
    }

    #[test]
    fn pre_warming_cuts_cold_starts_to_a_fifth_for_at_most_half_again_the_idle_cost() {
        let arrivals = trace(42);
        let baseline = replay(&arrivals, None);
        let prewarmed = replay(&arrivals, Some(Forecast::new()));
        let ratio = prewarmed.cold_ratio() / baseline.cold_ratio();
        let cost = prewarmed.idle_instance_s / baseline.idle_instance_s;
        eprintln!(
            "{} invocations; baseline: {} cold ({:.3}%), {:.0} idle instance-s; pre-warmed: \
             {} cold ({:.3}%), {:.0} idle instance-s; cold-start ratio {:.3} of the baseline's \
             for {:.3}× its idle instance-seconds",
            baseline.invocations,
            baseline.cold,
            baseline.cold_ratio() * 100.0,
            baseline.idle_instance_s,
            prewarmed.cold,
            prewarmed.cold_ratio() * 100.0,
            prewarmed.idle_instance_s,
            ratio,
            cost
        );
        assert!(
            ratio <= 0.2,
            "cold-start ratio {ratio:.3} of the baseline's > 1/5"
        );
        assert!(
            cost <= 1.5,
            "idle instance-seconds {cost:.3}× the baseline's > 1.5"
        );
    }

    #[test]
    fn the_forecast_sees_yesterdays_peak_coming() {
        let mut f = Forecast::new();
        f.duration(1.0);
        // Yesterday: one arrival a second, and 600 a minute from 12:00 to 12:05.
        for s in 0..DAY_S {
            let minute = s / 60;
            let n = if (720..725).contains(&minute) { 10 } else { 1 };
            for _ in 0..n {
                f.arrival(s);
            }
        }
        let before = f.target(DAY_S + 11 * 3600 + 50 * 60);
        let ahead = f.target(DAY_S + 11 * 3600 + 58 * 60);
        assert!(
            ahead > 3 * before,
            "{before} at 11:50, {ahead} two minutes before the peak"
        );
    }

    #[test]
    fn poisson_quantiles_are_right() {
        assert_eq!(poisson_quantile(0.0002, 0.999), 0);
        assert_eq!(poisson_quantile(1.0, 0.999), 5);
        assert_eq!(poisson_quantile(10.0, 0.999), 21);
        assert_eq!(poisson_quantile(400.0, 0.999), 462);
    }

    #[test]
    fn a_forecast_started_late_in_the_epoch_or_idle_for_weeks_costs_nothing_to_bring_up_to_date() {
        let now = 1_796_000_000;
        let mut f = Forecast::new();
        f.duration(10.0);
        for _ in 0..60 {
            f.arrival(now);
        }
        // The history starts at the first reading, not at the clock's epoch.
        assert_eq!(f.minutes.len(), 1);
        assert!(f.target(now + 30) > 0);
        // Four weeks later: nothing of that minute is left, and the
        // history was reset rather than walked through minute by minute.
        assert_eq!(f.target(now + 28 * DAY_S), 0);
        assert_eq!(f.minutes.len(), HISTORY_MINUTES + HORIZON_MINUTES + 1);
        assert!(f.minutes.iter().all(|m| *m == 0));
    }

    #[test]
    fn no_traffic_wants_no_instances() {
        let mut f = Forecast::new();
        assert_eq!(f.target(0), 0);
        assert_eq!(f.target(DAY_S), 0);
    }
}

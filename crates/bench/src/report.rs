//! The report: one markdown document with the machine, the load, the
//! figures side by side with the baseline, and each target met or not.

use crate::containers::ContainerFigures;
use crate::http::{Layout, LoadPair};
use crate::sandbox::SandboxFigures;
use crate::stats::Summary;
use crate::wrk::LoadResult;
use std::fmt::Write as _;
use std::time::Duration;

/// Brief's target: median latency nimbus adds over the bare server, µs.
const ADDED_P50_TARGET_US: i64 = 30;
/// Brief's target: 99th-percentile latency nimbus adds, µs.
const ADDED_P99_TARGET_US: i64 = 150;
/// Brief's target: a new wasm instance from precompiled code, p99.
const SANDBOX_P99_TARGET: Duration = Duration::from_micros(50);

/// Brief's target: native cold start to first response, p50 and p99.
const NATIVE_COLD_TARGET: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_millis(30));
/// Brief's target: Python cold start to first response, p50.
const PYTHON_COLD_P50_TARGET: Duration = Duration::from_millis(80);
/// Issue's target: warm container invoke overhead over the bare server, p50.
const WARM_ADDED_P50_TARGET: Duration = Duration::from_micros(100);
/// Issue's target: sandbox cold starts per second on 2 cores.
const COLD_STARTS_PER_S_TARGET: f64 = 100.0;
/// AWS's published init durations, for comparison: Rust and Python.
const AWS_INIT_MS: [(&str, u32); 2] = [("provided", 13), ("python", 71)];

/// Where the figures were taken.
pub struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    load_average: String,
}

impl Machine {
    /// This machine, now.
    pub fn here() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            load_average: load_average(),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The 1, 5 and 15 minute load averages: a loaded machine skews every figure.
fn load_average() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything one run measured.
pub struct Report {
    /// Where.
    pub machine: Machine,
    /// The command line that produced it.
    pub command: String,
    /// The load generator.
    pub wrk_version: String,
    /// Its threads.
    pub wrk_threads: u32,
    /// How many times the load sequence ran.
    pub rounds: u32,
    /// Measured time per load run.
    pub duration: Duration,
    /// Warm-up per load run.
    pub warmup: Duration,
    /// The event sent.
    pub payload: &'static str,
    /// The load runs, in the order they ran.
    pub loads: Vec<LoadPair>,
    /// The in-process sandbox runs.
    pub sandbox: SandboxFigures,
}

/// Picks one server's result out of a pair.
type Side = fn(&LoadPair) -> &LoadResult;

impl Report {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.write(&mut md)
            .expect("writing to a String cannot fail");
        md
    }

    fn write(&self, md: &mut String) -> std::fmt::Result {
        self.write_setting(md)?;
        self.write_http(md)?;
        self.write_comparison(md)?;
        self.write_sandbox(md)?;
        self.write_targets(md)
    }

    fn write_setting(&self, md: &mut String) -> std::fmt::Result {
        write_header(md, "nimbus-bench", &self.machine, &self.command)?;
        writeln!(
            md,
            "- load: {} with {} thread(s) on 127.0.0.1, keep-alive, one request in flight per \
             connection; POST of the {}-byte event `{}`, echoed back; {} s warm-up, then {} s \
             measured, per run; {} round(s), figures are medians over rounds\n",
            self.wrk_version,
            self.wrk_threads,
            self.payload.len(),
            self.payload,
            self.warmup.as_secs(),
            self.duration.as_secs(),
            self.rounds
        )
    }

    fn write_http(&self, md: &mut String) -> std::fmt::Result {
        writeln!(
            md,
            "### Warm synchronous invoke over HTTP (max: the worst round's)\n"
        )?;
        writeln!(
            md,
            "| layout | connections | server | requests/s | p50 | p90 | p99 | p99.9 | max |"
        )?;
        writeln!(md, "|---|---:|---|---:|---:|---:|---:|---:|---:|")?;
        for (layout, c) in self.groups() {
            let pairs = self.pairs(layout, c);
            for (server, side) in [("bare axum", bare_of as Side), ("nimbus", nimbus_of)] {
                let runs: Vec<&LoadResult> = pairs.iter().map(|p| side(p)).collect();
                let figure = |f: fn(&LoadResult) -> u64| {
                    median(runs.iter().map(|r| f(r) as f64)).round() as u64
                };
                writeln!(
                    md,
                    "| {} | {c} | {server} | {} | {} µs | {} µs | {} µs | {} µs | {} µs |",
                    layout.name(),
                    thousands(median(runs.iter().map(|r| r.requests_per_s())).round() as u64),
                    figure(|r| r.p50_us),
                    figure(|r| r.p90_us),
                    figure(|r| r.p99_us),
                    figure(|r| r.p999_us),
                    runs.iter().map(|r| r.max_us).max().unwrap_or(0)
                )?;
            }
        }
        Ok(())
    }

    fn write_comparison(&self, md: &mut String) -> std::fmt::Result {
        writeln!(
            md,
            "\n### nimbus beside the baseline (each round in brackets)\n"
        )?;
        writeln!(
            md,
            "| layout | connections | requests/s, nimbus ÷ bare | added p50 | added p99 |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|")?;
        for (layout, c) in self.groups() {
            let pairs = self.pairs(layout, c);
            let ratios: Vec<f64> = pairs
                .iter()
                .map(|p| p.nimbus.requests_per_s() / p.bare.requests_per_s())
                .collect();
            writeln!(
                md,
                "| {} | {c} | {:.2} ({}) | {} µs ({}) | {} µs ({}) |",
                layout.name(),
                median(ratios.iter().copied()),
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                signed(median_added(&pairs, |r| r.p50_us)),
                by_round(&pairs, |r| r.p50_us),
                signed(median_added(&pairs, |r| r.p99_us)),
                by_round(&pairs, |r| r.p99_us),
            )?;
        }
        Ok(())
    }

    fn write_sandbox(&self, md: &mut String) -> std::fmt::Result {
        let s = &self.sandbox;
        writeln!(
            md,
            "\n### wasm sandbox in process (fresh instance per run; {} runs after {} warm-up)\n",
            thousands(s.echo.count as u64),
            thousands(s.echo.count as u64 / 10)
        )?;
        writeln!(md, "| guest | p50 | p99 | p99.9 | max |")?;
        writeln!(md, "|---|---:|---:|---:|---:|")?;
        for (guest, f) in [
            ("echo of the event", &s.echo),
            ("empty `_start` (set-up, instantiate, teardown)", &s.empty),
            (
                "echo, another thread of the process busy on the other core",
                &s.echo_busy_neighbour,
            ),
        ] {
            writeln!(
                md,
                "| {guest} | {} | {} | {} | {} |",
                micros(f.p50),
                micros(f.p99),
                micros(f.p999),
                micros(f.max)
            )?;
        }
        Ok(())
    }

    fn write_targets(&self, md: &mut String) -> std::fmt::Result {
        writeln!(md, "\n### Targets\n")?;
        writeln!(md, "| target | layout | measured | met |")?;
        writeln!(md, "|---|---|---:|---|")?;
        // The latency targets are read off the latency run: the first
        // connection count of each layout.
        let mut layouts_seen = Vec::new();
        for (layout, c) in self.groups() {
            if layouts_seen.contains(&layout) {
                continue;
            }
            layouts_seen.push(layout);
            let pairs = self.pairs(layout, c);
            for (what, target, figure) in [
                (
                    "p50",
                    ADDED_P50_TARGET_US,
                    (|r| r.p50_us) as fn(&LoadResult) -> u64,
                ),
                ("p99", ADDED_P99_TARGET_US, |r| r.p99_us),
            ] {
                let added = median_added(&pairs, figure);
                writeln!(
                    md,
                    "| added latency {what} ≤ {target} µs, {c} connection(s) | {} | {} µs | {} |",
                    layout.name(),
                    signed(added),
                    yes_no(added <= target)
                )?;
            }
        }
        let s = &self.sandbox;
        for (what, figure) in [
            ("alone", &s.echo),
            ("with a busy neighbour thread", &s.echo_busy_neighbour),
        ] {
            writeln!(
                md,
                "| wasm new instance + run p99 ≤ {} | in process, {what} | {} | {} |",
                micros(SANDBOX_P99_TARGET),
                micros(figure.p99),
                yes_no(figure.p99 <= SANDBOX_P99_TARGET)
            )?;
        }
        Ok(())
    }

    /// The (layout, connections) groups measured, in the order they ran.
    fn groups(&self) -> Vec<(Layout, u32)> {
        let mut groups = Vec::new();
        for pair in &self.loads {
            if !groups.contains(&(pair.layout, pair.connections)) {
                groups.push((pair.layout, pair.connections));
            }
        }
        groups
    }

    /// Every round's pair of one group.
    fn pairs(&self, layout: Layout, connections: u32) -> Vec<&LoadPair> {
        self.loads
            .iter()
            .filter(|p| p.layout == layout && p.connections == connections)
            .collect()
    }
}

/// A report's title, and where and how it was taken.
/// A report's title and where and how it was taken.
pub fn header(title: &str, m: &Machine, command: &str) -> String {
    let mut md = String::new();
    write_header(&mut md, title, m, command).expect("writing to a String cannot fail");
    md
}

fn write_header(md: &mut String, title: &str, m: &Machine, command: &str) -> std::fmt::Result {
    writeln!(md, "## {title}\n")?;
    writeln!(
        md,
        "- machine: {}, {} cores, Linux {}",
        m.cpu, m.cores, m.kernel
    )?;
    writeln!(
        md,
        "- load average at start: {}; at end: {}",
        m.load_average,
        load_average()
    )?;
    writeln!(md, "- command: `{command}`")
}

/// The container run's report.
pub fn containers_markdown(machine: &Machine, command: &str, f: &ContainerFigures) -> String {
    let mut md = String::new();
    write_containers(&mut md, machine, command, f).expect("writing to a String cannot fail");
    md
}

fn write_containers(
    md: &mut String,
    m: &Machine,
    command: &str,
    f: &ContainerFigures,
) -> std::fmt::Result {
    write_header(md, "nimbus-bench containers", m, command)?;
    writeln!(
        md,
        "- start: deploy a new function, then time its first invoke from request to last \
         byte (the function's own init from its REPORT line's Init Duration); a warm start \
         claims a sandbox the server built ahead (for python, with the runtime client already \
         running), a cold one is asked of a second server with no warm pool \
         (--warm-sandboxes 0) and builds it from nothing; 150 ms between starts (untimed) let \
         the pool refill; hot: one hot sandbox, sequential invokes, with three baselines \
         asked by the same client: the bare axum echo (one process, one round trip), the bare \
         Runtime API relay (a bare axum server handing each POST to the same function run \
         as a plain process: the protocol's own second round trip, nothing of the platform), \
         and the same relay without hand-offs between tasks (each request's own task drives \
         the runtime's connection: the floor for a Runtime API server)\n"
    )?;
    writeln!(
        md,
        "| runtime | what | runs | p50 | p99 | max | AWS's published init |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|")?;
    let row = |md: &mut String, label: &str, what: &str, s: &Summary, aws: &str| {
        writeln!(
            md,
            "| {label} | {what} | {} | {} | {} | {} | {aws} |",
            s.count,
            millis(s.p50),
            millis(s.p99),
            millis(s.max)
        )
    };
    for r in &f.runtimes {
        let aws = AWS_INIT_MS
            .iter()
            .find(|(prefix, _)| r.label.starts_with(prefix))
            .map_or(String::new(), |(_, ms)| format!("≈ {ms} ms"));
        let start = format!("start, request to last byte ({})", r.tiers);
        row(md, &r.label, &start, &r.cold, "")?;
        row(md, &r.label, "· function's own init", &r.init, &aws)?;
        row(md, &r.label, "· platform's share", &r.platform, "")?;
        row(md, &r.label, "hot invoke", &r.warm, "")?;
    }
    let mut relayed = Vec::new();
    for r in &f.runtimes {
        let runtime = r.label.split(" — ").next().unwrap_or(&r.label);
        if !relayed.contains(&runtime) {
            relayed.push(runtime);
            row(
                md,
                runtime,
                "bare Runtime API relay, unsandboxed",
                &r.relay,
                "",
            )?;
            row(
                md,
                runtime,
                "the same, no hand-off between tasks (--direct)",
                &r.direct,
                "",
            )?;
        }
    }
    row(md, "bare axum", "the same client's POST", &f.bare, "")?;
    writeln!(
        md,
        "\nStarts sustained by {} clients for {} s, each invoke finding no hot sandbox ({} \
         functions in turn, more than the host keeps hot); the pool's refills run on the same \
         cores in the same minute:\n",
        f.clients,
        f.rate_duration.as_secs(),
        f.rates.first().map_or(0, |r| r.functions),
    )?;
    writeln!(md, "| run | starts | by tier | starts/s |")?;
    writeln!(md, "|---|---:|---|---:|")?;
    for r in &f.rates {
        writeln!(
            md,
            "| {} | {} | {} | **{:.1}** |",
            r.label, r.starts, r.tiers, r.per_second
        )?;
    }
    writeln!(md)?;
    writeln!(md, "### Targets\n")?;
    writeln!(md, "| target | measured | met |")?;
    writeln!(md, "|---|---:|---|")?;
    for r in &f.runtimes {
        if r.label.starts_with("provided") {
            let (p50, p99) = NATIVE_COLD_TARGET;
            writeln!(
                md,
                "| {}: native cold start p50 ≤ {} | {} | {} |",
                r.label,
                millis(p50),
                millis(r.cold.p50),
                yes_no(r.cold.p50 <= p50)
            )?;
            writeln!(
                md,
                "| {}: native cold start p99 ≤ {} | {} | {} |",
                r.label,
                millis(p99),
                millis(r.cold.p99),
                yes_no(r.cold.p99 <= p99)
            )?;
        } else {
            writeln!(
                md,
                "| {}: cold start p50 ≤ {} | {} | {} |",
                r.label,
                millis(PYTHON_COLD_P50_TARGET),
                millis(r.cold.p50),
                yes_no(r.cold.p50 <= PYTHON_COLD_P50_TARGET)
            )?;
        }
        let baselines = [
            ("the bare echo", f.bare.p50),
            ("the bare relay", r.relay.p50),
            ("the relay without hand-offs", r.direct.p50),
        ];
        for (baseline, p50) in baselines {
            let added = r.warm.p50.saturating_sub(p50);
            writeln!(
                md,
                "| {}: hot invoke added p50 over {baseline} ≤ {} | {} | {} |",
                r.label,
                micros(WARM_ADDED_P50_TARGET),
                micros(added),
                yes_no(added <= WARM_ADDED_P50_TARGET)
            )?;
        }
    }
    for r in &f.rates {
        writeln!(
            md,
            "| {}: starts per second ≥ {COLD_STARTS_PER_S_TARGET:.0} | {:.1} | {} |",
            r.label,
            r.per_second,
            yes_no(r.per_second >= COLD_STARTS_PER_S_TARGET)
        )?;
    }
    Ok(())
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn bare_of(pair: &LoadPair) -> &LoadResult {
    &pair.bare
}

fn nimbus_of(pair: &LoadPair) -> &LoadResult {
    &pair.nimbus
}

/// nimbus' figure minus the baseline's in one round, µs.
fn added(pair: &LoadPair, figure: fn(&LoadResult) -> u64) -> i64 {
    figure(&pair.nimbus) as i64 - figure(&pair.bare) as i64
}

/// The median over rounds of [`added`], µs.
fn median_added(pairs: &[&LoadPair], figure: fn(&LoadResult) -> u64) -> i64 {
    median(pairs.iter().map(|p| added(p, figure) as f64)).round() as i64
}

/// Each round's [`added`], for the reader to see the spread.
fn by_round(pairs: &[&LoadPair], figure: fn(&LoadResult) -> u64) -> String {
    pairs
        .iter()
        .map(|p| signed(added(p, figure)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The median; of an even count, the mean of the middle two.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn signed(us: i64) -> String {
    format!("{us:+}")
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

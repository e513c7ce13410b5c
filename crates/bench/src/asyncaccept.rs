//! Async accepts, durably committed: `Event` invokes against a real
//! `nimbus up`, each answered 202 only after its batch of the journal is
//! committed and fsync'd (group commit), with 1, 16 and 64 concurrent
//! clients; beside them, in the same run, the sync latency of the disk the
//! data directory is on — the physical limit, and the ceiling of one sync
//! per request.
//!
//! To measure accepts rather than executions, the function has a reserved
//! concurrency of 0: the dispatcher finds each accepted invocation at its
//! function's limit and puts it off in the journal without an attempt (the
//! delay grows with the retry base, an hour here, so once is all a run
//! sees): each invocation costs the journal one accept and one deferral
//! during its run, and no function runs.

use crate::api::Api;
use crate::disk::{self, DiskFigures};
use crate::eventload::{self, Seen, Window};
use crate::process::Server;
use crate::stats::Summary;
use crate::{ACCESS_KEY_ID, FUNCTION_NAME, PAYLOAD, REGION, SECRET_ACCESS_KEY, guest};
use anyhow::{Context as _, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The status of an accepted `Event` invoke.
const ACCEPTED: u16 = 202;
/// The backlog bound the server is started with: far more than a run
/// accepts, so no accept is refused for it.
const BACKLOG_MAX: &str = "1000000000";
/// The retry base the server is started with (the most it allows, an
/// hour): an invocation put off at its function's limit then waits at least
/// 45 s.
const RETRY_BASE_MS: &str = "3600000";
/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 per second on
/// every Linux architecture this runs on.
const TICKS_PER_S: u64 = 100;
/// The system calls counted on the server during a run.
const SYNC_EVENTS: [&str; 2] = ["syscalls:sys_enter_fdatasync", "syscalls:sys_enter_fsync"];

/// What to run.
pub struct Plan {
    /// Concurrent clients of each run, in order.
    pub clients: Vec<u32>,
    /// Load before the window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Syncs measured per kind, before and after the load runs.
    pub sync_samples: u32,
    /// Where the data directories (and the sync scratch files) are made.
    pub dir: PathBuf,
}

/// Everything the run measured.
pub struct Figures {
    /// The filesystem under `Plan::dir`.
    pub filesystem: String,
    /// The disk before the load runs.
    pub disk_before: DiskFigures,
    /// The disk after them.
    pub disk_after: DiskFigures,
    /// One per client count.
    pub runs: Vec<Run>,
}

/// One client count's run, on a server of its own.
pub struct Run {
    /// Concurrent clients.
    pub clients: u32,
    /// The measured window.
    pub duration: Duration,
    /// Latency of the requests sent and answered in the window.
    pub latency: Summary,
    /// What the load saw, warm-up included.
    pub seen: Seen,
    /// CPU the server used in the window.
    pub server_cpu: Duration,
    /// CPU this process (the load) used in the window.
    pub client_cpu: Duration,
    /// fdatasync and fsync calls of the server in the window, if `perf`
    /// could count them.
    pub syncs: Option<(u64, u64)>,
    /// From the journal after the run: invocations accepted and attempts
    /// started in the window, and invocations attempted more than once in
    /// the server's life.
    pub journal: Option<(u64, u64, u64)>,
}

impl Run {
    /// Accepts answered in the window, per second.
    pub fn accepts_per_s(&self) -> f64 {
        self.latency.count as f64 / self.duration.as_secs_f64()
    }

    /// Whether every answer, warm-up included, was a 202.
    pub fn all_accepted(&self) -> bool {
        self.seen.statuses.keys().all(|&s| s == ACCEPTED)
    }
}

/// Runs `plan` against `nimbus_bin`; every server is killed before this
/// returns.
pub fn measure(plan: &Plan, nimbus_bin: &Path) -> anyhow::Result<Figures> {
    let filesystem = disk::filesystem_of(&plan.dir);
    eprintln!(
        "disk: {} syncs of each kind on {filesystem}",
        plan.sync_samples
    );
    let disk_before = disk::measure(&plan.dir, plan.sync_samples)?;
    let mut runs = Vec::new();
    for &clients in &plan.clients {
        eprintln!(
            "{clients} client(s): {:?} warm-up, {:?} measured",
            plan.warmup, plan.duration
        );
        runs.push(run(plan, nimbus_bin, clients)?);
    }
    eprintln!("disk: again, after the load runs");
    let disk_after = disk::measure(&plan.dir, plan.sync_samples)?;
    Ok(Figures {
        filesystem,
        disk_before,
        disk_after,
        runs,
    })
}

/// One client count on a fresh server and data directory.
fn run(plan: &Plan, nimbus_bin: &Path, clients: u32) -> anyhow::Result<Run> {
    let scratch = tempfile::tempdir_in(&plan.dir)
        .with_context(|| format!("create a scratch directory in {}", plan.dir.display()))?;
    let tag = format!("async-{clients}");
    let keys = (ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    let flags = [
        "--async-backlog-max",
        BACKLOG_MAX,
        "--async-retry-base-ms",
        RETRY_BASE_MS,
    ];
    let server =
        Server::start_nimbus(nimbus_bin, scratch.path(), &tag, keys, REGION, None, &flags)?;
    let api = Api::new(server.address, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
    api.create_function(FUNCTION_NAME, &guest::echo_wasm()?)?;
    api.put(
        &format!("/2017-10-31/functions/{FUNCTION_NAME}/concurrency"),
        br#"{"ReservedConcurrentExecutions":0}"#,
    )?;
    // Signed right before the run: a signature is good for 5 minutes.
    let path = format!("/2015-03-31/functions/{FUNCTION_NAME}/invocations");
    let mut headers = api.signed_headers("POST", &path, PAYLOAD.as_bytes())?;
    headers.push(("x-amz-invocation-type".into(), "Event".into()));
    let request = eventload::request_bytes(&path, &headers, PAYLOAD.as_bytes());

    let now = Instant::now();
    let window = Window {
        start: now + plan.warmup,
        end: now + plan.warmup + plan.duration,
    };
    let load = eventload::spawn(server.address, request, clients, ACCEPTED, window);
    std::thread::sleep(window.start.saturating_duration_since(Instant::now()));
    let wall_start = unix_ms();
    let cpu_start = (cpu_of(server.pid())?, cpu_of(std::process::id())?);
    let counter = SyncCounter::start(server.pid(), plan.duration, scratch.path());
    std::thread::sleep(window.end.saturating_duration_since(Instant::now()));
    let cpu_end = (cpu_of(server.pid())?, cpu_of(std::process::id())?);
    let wall_end = unix_ms();
    let seen = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let syncs = counter.and_then(SyncCounter::finish);
    drop(server);
    ensure!(
        !seen.latencies.is_empty(),
        "no request was answered in the window; the first answer that was not a 202: {}",
        seen.first_unexpected.as_deref().unwrap_or("none")
    );
    let db = scratch
        .path()
        .join(format!("nimbus-{tag}"))
        .join("async.db");
    let journal = match journal_counts(&db, wall_start, wall_end) {
        Ok(counts) => Some(counts),
        Err(e) => {
            eprintln!("cannot read {}: {e:#}", db.display());
            None
        }
    };
    Ok(Run {
        clients,
        duration: plan.duration,
        latency: Summary::of(seen.latencies.clone()),
        seen,
        server_cpu: cpu_end.0.saturating_sub(cpu_start.0),
        client_cpu: cpu_end.1.saturating_sub(cpu_start.1),
        syncs,
        journal,
    })
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// User plus system CPU time of process `pid`, all threads.
fn cpu_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields are counted
    // after its closing one. utime and stime are fields 14 and 15 of the
    // line, so the 12th and 13th after the name.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat has no field {}", i + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / TICKS_PER_S))
}

/// `perf stat` counting the server's sync calls for one window.
struct SyncCounter {
    child: std::process::Child,
    output: PathBuf,
}

impl SyncCounter {
    /// Starts counting, or `None` (with a warning) if `perf` cannot.
    fn start(pid: u32, duration: Duration, scratch: &Path) -> Option<SyncCounter> {
        let output = scratch.join("perf-stat.csv");
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-o"])
            .arg(&output)
            .arg("-e")
            .arg(SYNC_EVENTS.join(","))
            .arg("-p")
            .arg(pid.to_string())
            .arg("--")
            .args(["sleep", &format!("{:.3}", duration.as_secs_f64())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(SyncCounter { child, output }),
            Err(e) => {
                eprintln!("perf cannot count the server's syncs ({e}); leaving them out");
                None
            }
        }
    }

    /// Waits for the count: (fdatasync, fsync).
    fn finish(mut self) -> Option<(u64, u64)> {
        let ok = self.child.wait().is_ok_and(|s| s.success());
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        let count = |event: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.split(',').nth(2) == Some(event))?;
            let value = line.split(',').next()?;
            // A thread that never ran is "<not counted>": none.
            Some(value.parse().unwrap_or(0))
        };
        match (ok, count(SYNC_EVENTS[0]), count(SYNC_EVENTS[1])) {
            (true, Some(data), Some(all)) => Some((data, all)),
            _ => {
                eprintln!("perf could not count the server's syncs: {text}");
                None
            }
        }
    }
}

/// From the journal of a stopped server: invocations accepted in
/// `[from_ms, to_ms)`, those of them put off at their function's limit
/// (waiting, with the reason recorded), and attempts started in the window.
fn journal_counts(db: &Path, from_ms: i64, to_ms: i64) -> anyhow::Result<(u64, u64, u64)> {
    let conn = rusqlite::Connection::open(db)?;
    let in_window = |sql: &str| -> anyhow::Result<u64> {
        let n: i64 = conn.query_row(sql, [from_ms, to_ms], |r| r.get(0))?;
        Ok(n as u64)
    };
    Ok((
        in_window(
            "SELECT COUNT(*) FROM invocations WHERE accepted_at_ms >= ?1 AND accepted_at_ms < ?2",
        )?,
        in_window(
            "SELECT COUNT(*) FROM invocations WHERE accepted_at_ms >= ?1 AND accepted_at_ms < ?2
             AND state = 'queued' AND last_error IS NOT NULL",
        )?,
        in_window(
            "SELECT COUNT(*) FROM attempts WHERE started_at_ms >= ?1 AND started_at_ms < ?2",
        )?,
    ))
}

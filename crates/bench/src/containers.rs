//! Container sandboxes through the API, as a client sees them: cold starts
//! and warm invokes of a `provided.al2023` function built with AWS's
//! `lambda_runtime` crate and of a `python3.x` handler.
//!
//! A *cold start* is an invoke that finds no hot sandbox, timed from the
//! request to the last byte of its answer (Decision 16). Each one deploys a
//! new function, invokes it once with `LogType=Tail`, and deletes it; the
//! REPORT line's `Init Duration` (the function's own init, from exec to its
//! first `/next`) splits the time into the function's share and the
//! platform's. On a server with its warm pool such a start claims one of
//! its warm sandboxes (for python, one whose runtime client already runs);
//! on a second server started with `--warm-sandboxes 0` it builds one from
//! nothing, so both tiers are measured (the tier each start got is counted
//! from `X-Nimbus-Tier`). A *hot invoke* reuses one hot sandbox; the bare
//! axum server, asked by the same client in the same run, is its baseline.

use crate::api::Api;
use crate::process::Server;
use crate::stats::Summary;
use crate::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use anyhow::{Context as _, ensure};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The event every invocation sends.
const EVENT: &str = r#"{"bench":true}"#;
/// Lambda's default `/tmp` size: the warm pool's.
const DEFAULT_TMP_MB: u32 = 512;
/// The pause between two timed starts (not timed), long enough for the
/// server to rebuild the warm sandbox the last one took — a python one
/// starts its interpreter, tens of milliseconds — so each start measures
/// the tier it asks for. The sustained rate run has no pause.
const REFILL_PAUSE: Duration = Duration::from_millis(150);

/// One runtime's figures.
pub struct RuntimeFigures {
    /// `provided.al2023 (lambda_runtime)`, `python3.11`, …, and the tier.
    pub label: String,
    /// How many starts each tier served.
    pub tiers: String,
    /// Invoke that found no hot sandbox, request to last byte.
    pub cold: Summary,
    /// The function's own init (`Init Duration`).
    pub init: Summary,
    /// The platform's share of each cold start: cold minus init.
    pub platform: Summary,
    /// Invokes on a hot sandbox.
    pub warm: Summary,
    /// The same runtime, unsandboxed, behind the bare Runtime API relay.
    pub relay: Summary,
    /// The same again, the relay driving the runtime's connection from
    /// each request's own task.
    pub direct: Summary,
}

/// Everything this part measured.
pub struct ContainerFigures {
    /// Per runtime.
    pub runtimes: Vec<RuntimeFigures>,
    /// The bare axum server asked by the same client: the warm baseline.
    pub bare: Summary,
    /// Sustained start rates: warm claims, and starts from nothing.
    pub rates: Vec<RateFigures>,
    /// The clients of the rate run.
    pub clients: u32,
    /// Its length.
    pub rate_duration: Duration,
}

/// What to measure.
pub struct Plan {
    /// Cold starts per runtime.
    pub cold_runs: u32,
    /// Warm invokes per runtime.
    pub warm_runs: u32,
    /// Concurrent clients of the cold-start rate run.
    pub clients: u32,
    /// Length of the rate run.
    pub rate_duration: Duration,
}

/// A function package to deploy.
struct Package {
    label: String,
    runtime: String,
    handler: &'static str,
    zip: Vec<u8>,
    /// How the relay baseline runs the same function as a plain process.
    local: Local,
}

/// A function as a plain child process of the relay baseline.
struct Local {
    command: Vec<String>,
    env: Vec<(String, String)>,
}

/// Runs `plan` against a fresh `nimbus up`; it and the baseline are killed
/// before this returns.
pub fn measure(plan: &Plan, nimbus_bin: &Path, scratch: &Path) -> anyhow::Result<ContainerFigures> {
    let packages = [rust_package(scratch)?, python_package()?];
    let keys = (ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    let nimbus = Server::start_nimbus(nimbus_bin, scratch, "containers", keys, REGION, None, &[])?;
    // The same server with no warm pool: every start is built from nothing.
    let no_pool = ["--warm-sandboxes", "0"];
    let nimbus_cold = Server::start_nimbus(
        nimbus_bin,
        scratch,
        "containers-cold",
        keys,
        REGION,
        None,
        &no_pool,
    )?;
    let bare = Server::start_hello(scratch, "containers", None)?;
    let api = Api::new(nimbus.address, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION);
    let api_cold = Api::new(
        nimbus_cold.address,
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        REGION,
    );
    let mut relays = Vec::new();
    for package in &packages {
        eprintln!(
            "{}: {} invokes through each bare relay",
            package.label, plan.warm_runs
        );
        relays.push((
            relay_invokes(scratch, package, plan.warm_runs, false)?,
            relay_invokes(scratch, package, plan.warm_runs, true)?,
        ));
    }
    let mut runtimes = Vec::new();
    let runs = [(0, &api, "warm"), (0, &api_cold, "cold"), (1, &api, "warm")];
    for (index, api, tier) in runs {
        let package = &packages[index];
        eprintln!("{}, {tier}: {} starts", package.label, plan.cold_runs);
        let starts = cold_starts(api, package, plan.cold_runs, DEFAULT_TMP_MB)?;
        let platform = starts
            .cold
            .iter()
            .zip(&starts.init)
            .map(|(c, i)| c.saturating_sub(*i))
            .collect();
        eprintln!("{}: {} hot invokes", package.label, plan.warm_runs);
        let warm = warm_invokes(api, package, plan.warm_runs)?;
        runtimes.push(RuntimeFigures {
            label: format!("{} — {tier} start", package.label),
            tiers: starts.tiers,
            cold: Summary::of(starts.cold),
            init: Summary::of(starts.init),
            platform: Summary::of(platform),
            warm,
            relay: relays[index].0,
            direct: relays[index].1,
        });
    }
    let bare = bare_invokes(bare.address, plan.warm_runs)?;
    eprintln!(
        "cold-start rate: {} clients for {:?}",
        plan.clients, plan.rate_duration
    );
    let rates = vec![
        rate(
            &api,
            &packages[0],
            plan,
            "warm pool of 2: claims, with the pool's refills running alongside",
        )?,
        rate(
            &api_cold,
            &packages[0],
            plan,
            "no warm pool (--warm-sandboxes 0): every start built from nothing",
        )?,
    ];
    Ok(ContainerFigures {
        runtimes,
        bare,
        rates,
        clients: plan.clients,
        rate_duration: plan.rate_duration,
    })
}

/// What a series of starts measured.
struct Starts {
    /// Request to last byte.
    cold: Vec<Duration>,
    /// The function's own init.
    init: Vec<Duration>,
    /// How many each tier served, e.g. `200 warm`.
    tiers: String,
}

/// `runs` starts of `package` with `/tmp` of `tmp_mb`.
fn cold_starts(api: &Api, package: &Package, runs: u32, tmp_mb: u32) -> anyhow::Result<Starts> {
    let mut cold = Vec::with_capacity(runs as usize);
    let mut init = Vec::with_capacity(runs as usize);
    let mut tiers = std::collections::BTreeMap::<String, u32>::new();
    // One start untimed: a runtime's first start is what makes the server
    // keep warm sandboxes with that runtime already running.
    let runtime = package.runtime.replace('.', "-");
    one_cold_start(
        api,
        package,
        &format!("bench-first-{tmp_mb}-{runtime}"),
        tmp_mb,
    )?;
    for i in 0..runs {
        let name = format!(
            "bench-start-{tmp_mb}-{}-{i}",
            package.runtime.replace('.', "-")
        );
        std::thread::sleep(REFILL_PAUSE);
        let (took, function_init, tier) = one_cold_start(api, package, &name, tmp_mb)?;
        cold.push(took);
        init.push(function_init);
        *tiers.entry(tier).or_default() += 1;
    }
    let tiers = tiers
        .iter()
        .map(|(tier, n)| format!("{n} {tier}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Starts { cold, init, tiers })
}

fn one_cold_start(
    api: &Api,
    package: &Package,
    name: &str,
    tmp_mb: u32,
) -> anyhow::Result<(Duration, Duration, String)> {
    api.create_zip_function(
        name,
        &package.runtime,
        package.handler,
        &package.zip,
        tmp_mb,
    )?;
    let started = Instant::now();
    let answer = api.invoke_tail(name, EVENT.as_bytes())?;
    let took = started.elapsed();
    api.delete_function(name)?;
    // Both guests answer `{"echo": <event>, …}`.
    let echoed = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("echo").cloned());
    ensure!(
        echoed == serde_json::from_str(EVENT).ok(),
        "{name} answered {:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let init = init_duration(&answer.log)
        .with_context(|| format!("{name}: no Init Duration in its log:\n{}", answer.log))?;
    Ok((took, init, answer.tier))
}

/// `Init Duration: 12.34 ms` from a REPORT line.
fn init_duration(log: &str) -> Option<Duration> {
    let rest = log.split("Init Duration: ").nth(1)?;
    let ms: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(ms / 1_000.0))
}

fn warm_invokes(api: &Api, package: &Package, runs: u32) -> anyhow::Result<Summary> {
    let name = format!("bench-warm-{}", package.runtime.replace('.', "-"));
    api.create_zip_function(
        &name,
        &package.runtime,
        package.handler,
        &package.zip,
        DEFAULT_TMP_MB,
    )?;
    let path = format!("/2015-03-31/functions/{name}/invocations");
    // The first invoke starts the sandbox; a tenth more warm it up.
    for _ in 0..=runs / 10 {
        api.post(&path, EVENT.as_bytes())?;
    }
    let mut samples = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let started = Instant::now();
        api.post(&path, EVENT.as_bytes())?;
        samples.push(started.elapsed());
    }
    api.delete_function(&name)?;
    Ok(Summary::of(samples))
}

fn bare_invokes(address: std::net::SocketAddr, runs: u32) -> anyhow::Result<Summary> {
    let path = "/2015-03-31/functions/bare/invocations";
    let client = crate::api::Unsigned::new(address);
    for _ in 0..=runs / 10 {
        client.post(path, EVENT.as_bytes())?;
    }
    let mut samples = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let started = Instant::now();
        client.post(path, EVENT.as_bytes())?;
        samples.push(started.elapsed());
    }
    Ok(Summary::of(samples))
}

/// Invokes of `package` run as a plain process behind the bare relay,
/// asked by the same client as the bare echo.
fn relay_invokes(
    scratch: &Path,
    package: &Package,
    runs: u32,
    direct: bool,
) -> anyhow::Result<Summary> {
    let relay = Server::start_relay(
        scratch,
        &package.runtime,
        &package.local.env,
        &package.local.command,
        direct,
    )?;
    bare_invokes(relay.address, runs)
}

/// A sustained run of starts (Decision 16).
pub struct RateFigures {
    /// Which server: with its warm pool, or without one.
    pub label: String,
    /// Starts completed (invokes that found no hot sandbox).
    pub starts: u64,
    /// How many each tier served, e.g. `5400 warm, 12 cold`.
    pub tiers: String,
    /// Starts per second over the whole run.
    pub per_second: f64,
    /// Functions deployed for it.
    pub functions: usize,
}

/// Functions a rate run cycles through: more than the host keeps hot, so
/// every invoke finds its function's sandbox evicted and starts one.
const RATE_FUNCTIONS: usize = nimbus_worker::container::Capacity::DEFAULT.sandboxes + 32;

/// Starts sustained by `plan.clients` clients for `plan.rate_duration`.
/// The functions are deployed before the clock starts; the clients then
/// invoke them in turn, so each invoke evicts the longest-idle sandbox and
/// starts its function anew. On a server with a warm pool a start claims a
/// warm sandbox when one is ready, and the pool's refills run in the same
/// minute on the same cores: they are part of the rate; on a server
/// without one every start is built from nothing.
fn rate(api: &Api, package: &Package, plan: &Plan, label: &str) -> anyhow::Result<RateFigures> {
    let names: Vec<String> = (0..RATE_FUNCTIONS)
        .map(|i| format!("bench-rate-{i}"))
        .collect();
    for name in &names {
        api.create_zip_function(
            name,
            &package.runtime,
            package.handler,
            &package.zip,
            DEFAULT_TMP_MB,
        )?;
    }
    let started = Instant::now();
    let deadline = started + plan.rate_duration;
    let clients = plan.clients as usize;
    let names = &names;
    let tiers = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                scope.spawn(move || -> anyhow::Result<Vec<String>> {
                    let mut tiers = Vec::new();
                    let mut next = client;
                    while Instant::now() < deadline {
                        let name = &names[next % names.len()];
                        let answer = api.invoke(name, EVENT.as_bytes())?;
                        ensure!(
                            answer.body.starts_with(b"{"),
                            "{name} answered {:?}",
                            String::from_utf8_lossy(&answer.body)
                        );
                        tiers.push(answer.tier);
                        next += clients;
                    }
                    Ok(tiers)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
            .collect::<anyhow::Result<Vec<Vec<String>>>>()
    })?;
    let elapsed = started.elapsed();
    for name in names {
        api.delete_function(name)?;
    }
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for tier in tiers.into_iter().flatten() {
        *counts.entry(tier).or_default() += 1;
    }
    let starts: u64 = counts
        .iter()
        .filter(|(tier, _)| tier.as_str() != "hot")
        .map(|(_, n)| n)
        .sum();
    Ok(RateFigures {
        label: label.to_string(),
        starts,
        tiers: counts
            .iter()
            .map(|(tier, n)| format!("{n} {tier}"))
            .collect::<Vec<_>>()
            .join(", "),
        per_second: starts as f64 / elapsed.as_secs_f64(),
        functions: names.len(),
    })
}

/// The repository's test guests.
fn guests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/guests")
}

/// `tests/guests/lambda-rust`, built with cargo (into `$CARGO_TARGET_DIR`
/// when set, so the end-to-end tests' build is reused), zipped as
/// `bootstrap`.
fn rust_package(scratch: &Path) -> anyhow::Result<Package> {
    let manifest = guests_dir().join("lambda-rust/Cargo.toml");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("e2e-guests"),
        None => scratch.join("guest-target"),
    };
    eprintln!("building {}", manifest.display());
    let status = std::process::Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .context("run cargo to build the lambda_runtime function")?;
    ensure!(status.success(), "building {} failed", manifest.display());
    let binary = std::fs::read(target.join("release/bootstrap")).context("read the bootstrap")?;
    Ok(Package {
        label: "provided.al2023 (Rust, lambda_runtime)".into(),
        runtime: "provided.al2023".into(),
        handler: "bootstrap",
        zip: crate::api::zip_of(&[("bootstrap", &binary, 0o755)])?,
        local: Local {
            command: vec![target.join("release/bootstrap").display().to_string()],
            env: Vec::new(),
        },
    })
}

/// `tests/guests/python/echo_function.py` (the Rust guest's answer, no log
/// lines) for the host's python3.
fn python_package() -> anyhow::Result<Package> {
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys; print('python%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .context("run /usr/bin/python3 to learn its version")?;
    ensure!(out.status.success(), "/usr/bin/python3 failed");
    let runtime = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let guests = guests_dir().join("python");
    let source = std::fs::read(guests.join("echo_function.py")).context("read the python guest")?;
    // nimbus' own runtime client, as the server embeds it.
    let runtime_client =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/runtimes/python/bootstrap.py");
    Ok(Package {
        label: format!("{runtime} (nimbus runtime client)"),
        runtime,
        handler: "echo_function.lambda_handler",
        zip: crate::api::zip_of(&[("echo_function.py", &source, 0o644)])?,
        local: Local {
            command: vec![
                "/usr/bin/python3".into(),
                runtime_client.display().to_string(),
            ],
            env: vec![
                ("_HANDLER".into(), "echo_function.lambda_handler".into()),
                ("LAMBDA_TASK_ROOT".into(), guests.display().to_string()),
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_duration_is_read_from_the_report_line() {
        let log = "START RequestId: x Version: $LATEST\nEND RequestId: x\nREPORT RequestId: x\t\
                   Duration: 1.20 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\t\
                   Max Memory Used: 9 MB\tInit Duration: 12.50 ms\t\n";
        assert_eq!(init_duration(log), Some(Duration::from_micros(12_500)));
        assert_eq!(init_duration("REPORT RequestId: x\tDuration: 1 ms"), None);
    }
}

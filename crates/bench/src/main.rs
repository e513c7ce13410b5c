//! `nimbus-bench`: the figures of docs/PERFORMANCE.md, in one run.
//!
//! It measures three things and prints them side by side:
//!
//! 1. a warm synchronous invoke over HTTP — a real `nimbus up` process
//!    running an echo function, driven by `wrk` over loopback;
//! 2. the same load, from the same `wrk`, against a bare axum server that
//!    only echoes the body (`nimbus-bench hello`, a separate process too), so
//!    the difference is what nimbus adds: SigV4, routing, the sandbox, logs;
//! 3. the wasm sandbox in process: a fresh instance from precompiled code,
//!    run to completion, through `nimbus_worker::WasmRuntime`.
//!
//! Everything it starts listens on 127.0.0.1 only and is killed when the run
//! ends, successfully or not.

mod api;
mod asyncaccept;
mod asyncreport;
mod containers;
mod disk;
mod eventload;
mod guest;
mod hello;
mod http;
mod placement;
mod process;
mod relay;
mod report;
mod sandbox;
mod spread;
mod stats;
mod wrk;

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use report::Report;
use std::path::PathBuf;
use std::time::Duration;

/// Longest measured load run. A load run replays one signed request, and the
/// server accepts a signature for 5 minutes; warm-up plus run must fit.
const LOAD_DURATION_MAX_S: u64 = 120;
/// Longest warm-up before each load run.
const WARMUP_DURATION_MAX_S: u64 = 60;
/// Most connections a load run may open.
const CONNECTIONS_MAX: u32 = 1_024;
/// Most rounds of load runs.
const ROUNDS_MAX: u32 = 20;
/// Most cold starts or warm invokes per runtime in the container run.
const CONTAINER_RUNS_MAX: u32 = 100_000;
/// Most syncs measured per kind in the async-accept run.
const SYNC_SAMPLES_MAX: u32 = 100_000;
/// Most in-process sandbox runs measured per guest.
const SANDBOX_RUNS_MAX: u32 = 1_000_000;
/// Root keys handed to the `nimbus` under test; it listens on loopback only
/// and its data directory is deleted at the end, so they guard nothing.
const ACCESS_KEY_ID: &str = "AKIANIMBUSBENCH00000";
/// The secret of [`ACCESS_KEY_ID`].
const SECRET_ACCESS_KEY: &str = "nimbus-bench-secret-key-for-loopback-only";
/// The region the server is started with and requests are signed for.
const REGION: &str = "us-east-1";
/// The function the HTTP runs invoke.
const FUNCTION_NAME: &str = "bench-echo";
/// The event every invocation sends (and the echo sends back).
const PAYLOAD: &str = r#"{"hello":"world"}"#;

#[derive(Parser)]
#[command(
    name = "nimbus-bench",
    about = "Measure nimbus' warm invoke against a bare axum server, and the wasm sandbox in process",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the bare axum baseline: every POST is answered with its body.
    Hello {
        /// Address to listen on (port 0 picks a free one; the banner says which).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Serve the bare Runtime API relay: every POST is handed to the runtime
    /// `command` (a plain child process) and answered with its response.
    Relay {
        /// Address to listen on for clients (port 0 picks a free one; the banner says which).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// NAME=VALUE set in the runtime's environment.
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Drive the runtime's one connection from each client request's
        /// own task (no hand-off between tasks).
        #[arg(long)]
        direct: bool,
        /// The runtime and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Measure container sandboxes through the API: cold starts and warm
    /// invokes of a provided.al2023 function built with `lambda_runtime`
    /// and of a python3.x handler.
    Containers(ContainerArgs),
    /// Measure placement decisions per second on one core (the call every
    /// Invoke makes), in process.
    Placement {
        /// Decisions per series.
        #[arg(long, default_value_t = 5_000_000)]
        decisions: u64,
    },
    /// Measure warm invokes spread over 1, 100 and 1,000 wasm functions.
    Spread {
        /// The `nimbus` binary under test (as for the main run).
        #[arg(long)]
        nimbus: Option<PathBuf>,
        /// wrk connections.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX as i64))]
        connections: u32,
        /// Measured seconds per count.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=LOAD_DURATION_MAX_S))]
        duration_s: u64,
    },
    /// Measure async accepts (Event invokes committed to the journal before
    /// their 202) with 1, 16 and 64 clients, beside the disk's sync latency.
    Async(AsyncArgs),
}

/// What the async-accept run measures.
#[derive(clap::Args)]
struct AsyncArgs {
    /// The `nimbus` binary under test (as for the main run).
    #[arg(long)]
    nimbus: Option<PathBuf>,
    /// Concurrent clients of each run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64", value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX as i64))]
    clients: Vec<u32>,
    /// Measured seconds per client count.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=LOAD_DURATION_MAX_S))]
    duration_s: u64,
    /// Seconds of load, not measured, before each measured run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=WARMUP_DURATION_MAX_S))]
    warmup_s: u64,
    /// Syncs of the disk measured per kind, before and after the runs.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u32).range(1..=SYNC_SAMPLES_MAX as i64))]
    sync_samples: u32,
    /// Where the servers' data directories are made: its filesystem is the
    /// one measured [default: the current directory, as `nimbus up`'s
    /// default data directory `./.nimbus` would be].
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Also write the report, as markdown, to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// What the container run measures.
#[derive(clap::Args)]
struct ContainerArgs {
    /// The `nimbus` binary under test (as for the main run).
    #[arg(long)]
    nimbus: Option<PathBuf>,
    /// Cold starts per runtime.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=CONTAINER_RUNS_MAX as i64))]
    cold_runs: u32,
    /// Warm invokes per runtime.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=CONTAINER_RUNS_MAX as i64))]
    warm_runs: u32,
    /// Concurrent clients of the cold-start rate run.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX as i64))]
    clients: u32,
    /// Seconds of the cold-start rate run.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=LOAD_DURATION_MAX_S))]
    rate_s: u64,
    /// Threads of every server's async runtime — nimbus, the relay and the
    /// echo alike (default: one per core).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    worker_threads: Option<usize>,
    /// Also write the report, as markdown, to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// What one benchmark run measures, and for how long.
#[derive(clap::Args)]
struct RunArgs {
    /// The `nimbus` binary under test, a release build [default:
    /// $CARGO_TARGET_DIR/release/nimbus, else `nimbus` beside this binary].
    #[arg(long)]
    nimbus: Option<PathBuf>,
    /// Measured seconds of each load run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=LOAD_DURATION_MAX_S))]
    duration_s: u64,
    /// Seconds of load, not measured, before each measured run.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=WARMUP_DURATION_MAX_S))]
    warmup_s: u64,
    /// Connections of the latency run (1: no request ever queues).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX as i64))]
    latency_connections: u32,
    /// Connections of the throughput run.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX as i64))]
    throughput_connections: u32,
    /// `wrk` threads; one leaves the other core to the server under test.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=CONNECTIONS_MAX as i64))]
    wrk_threads: u32,
    /// The CPU of the one-core layout [default: the last].
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// Times the whole HTTP sequence is repeated; the report gives medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=ROUNDS_MAX as i64))]
    rounds: u32,
    /// Measured in-process sandbox runs per guest (after a tenth as many
    /// warm-up runs).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=SANDBOX_RUNS_MAX as i64))]
    sandbox_runs: u32,
    /// Also write the report, as markdown, to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// `NAME=VALUE`, split.
fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Hello { listen }) => hello::serve(&listen),
        Some(Command::Relay {
            listen,
            env,
            command,
            direct,
        }) => relay::serve(&listen, &env, &command, direct),
        Some(Command::Containers(args)) => run_containers(args),
        Some(Command::Placement { decisions }) => run_placement(decisions),
        Some(Command::Spread {
            nimbus,
            connections,
            duration_s,
        }) => run_spread(nimbus, connections, duration_s),
        Some(Command::Async(args)) => run_async(args),
        None => run(cli.run),
    };
    if let Err(e) = result {
        eprintln!("nimbus-bench: {e:#}");
        std::process::exit(1);
    }
}

/// The whole benchmark. The servers are dropped — and so killed — on every
/// path out of this function, including `?`.
fn run(args: RunArgs) -> anyhow::Result<()> {
    let nimbus_bin = nimbus_binary(args.nimbus.clone())?;
    let wrk_version = wrk::version()?;
    let pin_cpu = match args.pin_cpu {
        Some(cpu) => cpu,
        None => std::thread::available_parallelism().map_or(0, |n| n.get() - 1),
    };
    ensure!(
        std::path::Path::new(&format!("/sys/devices/system/cpu/cpu{pin_cpu}")).exists(),
        "--pin-cpu {pin_cpu}: this machine has no such CPU"
    );
    let machine = report::Machine::here();
    let command = std::env::args().collect::<Vec<_>>().join(" ");

    // The sandbox first, while nothing else of ours is running.
    eprintln!("sandbox: {} runs per guest, in process", args.sandbox_runs);
    let sandbox = sandbox::measure(args.sandbox_runs)?;

    let scratch = tempfile::tempdir().context("create a scratch directory")?;
    let plan = http::Plan {
        rounds: args.rounds,
        connections: [args.latency_connections, args.throughput_connections],
        wrk_threads: args.wrk_threads,
        warmup: Duration::from_secs(args.warmup_s),
        duration: Duration::from_secs(args.duration_s),
        layouts: vec![http::Layout::Spread, http::Layout::OneCore(pin_cpu)],
    };
    let loads = http::measure(&plan, &nimbus_bin, scratch.path())?;

    let report = Report {
        machine,
        command,
        wrk_version,
        wrk_threads: args.wrk_threads,
        rounds: args.rounds,
        duration: plan.duration,
        warmup: plan.warmup,
        payload: PAYLOAD,
        loads,
        sandbox,
    };
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The container part: its own servers, its own report.
fn run_containers(args: ContainerArgs) -> anyhow::Result<()> {
    if let Some(threads) = args.worker_threads {
        // Read by every tokio runtime the servers build with its default
        // thread count (nimbus' own `--worker-threads` included).
        // SAFETY: no other thread of this process exists yet.
        unsafe { std::env::set_var("TOKIO_WORKER_THREADS", threads.to_string()) };
    }
    let nimbus_bin = nimbus_binary(args.nimbus.clone())?;
    let machine = report::Machine::here();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let scratch = tempfile::tempdir().context("create a scratch directory")?;
    let plan = containers::Plan {
        cold_runs: args.cold_runs,
        warm_runs: args.warm_runs,
        clients: args.clients,
        rate_duration: Duration::from_secs(args.rate_s),
    };
    let figures = containers::measure(&plan, &nimbus_bin, scratch.path())?;
    let text = report::containers_markdown(&machine, &command, &figures);
    println!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The `nimbus` binary: as given, else the release build in
/// `$CARGO_TARGET_DIR`, else the one built beside this binary.
fn nimbus_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir).join("release").join("nimbus"),
            None => std::env::current_exe()
                .context("locate this binary")?
                .with_file_name("nimbus"),
        },
    };
    if !path.is_file() {
        bail!(
            "no nimbus binary at {}: build it with `cargo build --release -p nimbus`, or pass --nimbus PATH",
            path.display()
        );
    }
    if path.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "warning: {} looks like a debug build; its figures mean little",
            path.display()
        );
    }
    Ok(path)
}

/// Placement decisions per second, printed as a markdown table.
fn run_placement(decisions: u64) -> anyhow::Result<()> {
    let machine = report::Machine::here();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let series = placement::measure(decisions);
    print!(
        "{}",
        report::header("nimbus-bench placement", &machine, &command)
    );
    println!("- one thread; warm routing (every function placed once before the clock starts)\n");
    println!("| placing | decisions | per second | target ≥ 1,000,000 |");
    println!("|---|---:|---:|---|");
    for s in &series {
        let rate = s.per_second();
        println!(
            "| {} | {} | {:.0} | {} |",
            s.label,
            s.decisions,
            rate,
            if rate >= 1_000_000.0 {
                "met"
            } else {
                "**missed**"
            }
        );
    }
    Ok(())
}

/// Warm invokes spread over many functions, printed as markdown.
fn run_spread(nimbus: Option<PathBuf>, connections: u32, duration_s: u64) -> anyhow::Result<()> {
    wrk::version()?;
    let nimbus_bin = nimbus_binary(nimbus)?;
    let machine = report::Machine::here();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let scratch = tempfile::tempdir().context("create a scratch directory")?;
    let load = spread::load(connections, Duration::from_secs(duration_s));
    let rows = spread::measure(&nimbus_bin, scratch.path(), &load)?;
    println!("{}", spread::markdown(&machine, &command, &load, &rows));
    Ok(())
}

/// Async accepts beside the disk's sync latency, printed as markdown.
fn run_async(args: AsyncArgs) -> anyhow::Result<()> {
    ensure!(!args.clients.is_empty(), "--clients names no client count");
    ensure!(
        args.dir.is_dir(),
        "--dir {}: no such directory",
        args.dir.display()
    );
    let nimbus_bin = nimbus_binary(args.nimbus)?;
    let machine = report::Machine::here();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let plan = asyncaccept::Plan {
        clients: args.clients,
        warmup: Duration::from_secs(args.warmup_s),
        duration: Duration::from_secs(args.duration_s),
        sync_samples: args.sync_samples,
        dir: std::fs::canonicalize(&args.dir)
            .with_context(|| format!("resolve {}", args.dir.display()))?,
    };
    let figures = asyncaccept::measure(&plan, &nimbus_bin)?;
    let text = asyncreport::markdown(&machine, &command, &plan, &figures);
    println!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

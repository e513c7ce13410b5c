//! `nimbus`: the one binary. `nimbus up` runs the platform; the other
//! subcommands are clients of its API, signed like any AWS tool's requests.

mod asynchronous;
mod client;
mod commands;
mod credentials;
mod up;

use clap::{Parser, Subcommand};
use nimbus_api::{Capacity, ConcurrencyLimits};
use std::path::PathBuf;

/// Default API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = ".nimbus";
/// Default region.
pub const DEFAULT_REGION: &str = "us-east-1";

#[derive(Parser)]
#[command(
    name = "nimbus",
    version,
    about = "A self-hosted, Lambda-compatible serverless platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server lives and keeps its data.
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, env = "NIMBUS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Directory of the embedded store, code and logs.
    #[arg(long, env = "NIMBUS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Region in ARNs, and the one clients sign for.
    #[arg(long, env = "NIMBUS_REGION", default_value = DEFAULT_REGION)]
    pub region: String,
}

/// What `nimbus up` takes beyond where the server lives.
#[derive(clap::Args, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Most function sandboxes (containers) kept at once; a start on a full
    /// host evicts the longest-idle one.
    #[arg(long, env = "NIMBUS_SANDBOXES_MAX", default_value_t = Capacity::DEFAULT.sandboxes,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub sandboxes_max: usize,
    /// Most memory, in MB, the function sandboxes' MemorySize may add up to
    /// (default: three quarters of this machine's memory).
    #[arg(long, env = "NIMBUS_SANDBOX_MEMORY_MB", default_value_t = default_sandbox_memory_mb(),
          value_parser = clap::value_parser!(u64).range(128..))]
    pub sandbox_memory_mb: u64,
    /// Seconds a hot sandbox may stay idle before it is shut down.
    #[arg(long, env = "NIMBUS_IDLE_RECYCLE_S", default_value_t = Capacity::DEFAULT.idle_recycle.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_recycle_s: u64,
    /// Seconds between two pre-warming passes, which start the sandboxes
    /// each function's forecast asks for (0: no pre-warming).
    #[arg(long, env = "NIMBUS_PREWARM_INTERVAL_S",
          default_value_t = Capacity::DEFAULT.prewarm_every.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub prewarm_interval_s: u64,
    /// New sandboxes one function may add every 10 seconds when its
    /// invocations find none ready (Lambda's burst scaling limit).
    #[arg(long, env = "NIMBUS_BURST_LIMIT",
          default_value_t = Capacity::DEFAULT.burst_per_10s,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub burst_limit: u32,
    /// Invocations each account may run at once (Lambda's default: 1,000);
    /// reservations must leave 100 of them unreserved.
    #[arg(long, env = "NIMBUS_ACCOUNT_CONCURRENCY",
          default_value_t = ConcurrencyLimits::DEFAULT.account,
          value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub account_concurrency: u32,
    /// Threads of the server's async runtime (default: one per core). Wasm
    /// invocations run on these threads and use as many cores as they are
    /// given; a hot container invoke runs on one task from its request to
    /// its answer (see docs/PERFORMANCE.md §2).
    #[arg(long, env = "NIMBUS_WORKER_THREADS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub worker_threads: Option<usize>,
    /// Warm sandboxes (no code yet) kept ready on top of those.
    #[arg(long, env = "NIMBUS_WARM_SANDBOXES", default_value_t = Capacity::DEFAULT.warm,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=64))]
    pub warm_sandboxes: usize,
    /// Unfinished asynchronous invocations each account may have; beyond
    /// it, `Event` invokes get 429 and nothing is stored.
    #[arg(long, env = "NIMBUS_ASYNC_BACKLOG_MAX", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub async_backlog_max: u64,
    /// Delay before an async invocation's first retry, in ms; each next
    /// retry waits twice as long (Lambda: about a minute, then two).
    #[arg(long, env = "NIMBUS_ASYNC_RETRY_BASE_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub async_retry_base_ms: u64,
    /// A fixed lease for every async attempt, in ms (default: the
    /// function's timeout plus 30 s). An attempt that outlives its lease is
    /// run again, and its late result refused.
    #[arg(long, env = "NIMBUS_ASYNC_LEASE_MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub async_lease_ms: Option<u64>,
    /// Weigh an account in fair sharing, `ACCOUNT=WEIGHT` (repeatable; in
    /// the environment, comma-separated): when the host's sandboxes run
    /// short, its share of them, and of the starts let through, is WEIGHT
    /// times an account of weight 1's (every account weighs 1 unless told).
    #[arg(long = "tenant-weight", env = "NIMBUS_TENANT_WEIGHTS", value_delimiter = ',',
          value_name = "ACCOUNT=WEIGHT", value_parser = tenant_weight)]
    pub tenant_weights: Vec<(String, u32)>,
    /// Start even though the async journal is damaged: quarantine the
    /// damaged records, accept what is left, and run from it.
    #[arg(long)]
    pub repair_journal: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform on this machine.
    Up(UpArgs),
    /// Print `export` lines that point the AWS tools at this platform.
    Env(ServerArgs),
    /// Create a function, or update its code and configuration.
    Deploy(commands::DeployArgs),
    /// Invoke a function and print its response.
    Invoke(commands::InvokeArgs),
    /// List functions.
    Ls,
    /// Delete a function.
    Rm {
        /// The function's name.
        name: String,
    },
    /// Asynchronous invocations: `get ID` shows one's state and attempts.
    #[command(subcommand)]
    Invocation(asynchronous::InvocationCommand),
    /// Dead-letter queues: `redrive QUEUE` sends their events back.
    #[command(subcommand)]
    Dlq(asynchronous::DlqCommand),
    /// Print the tail of a function's log.
    Logs {
        /// The function's name.
        name: String,
        /// How many bytes of the log's end to print.
        #[arg(long, default_value_t = 65_536)]
        bytes: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Env(args) => up::print_env(&args),
        Command::Deploy(args) => commands::deploy(args),
        Command::Invoke(args) => commands::invoke(args),
        Command::Ls => commands::ls(),
        Command::Rm { name } => commands::rm(&name),
        Command::Logs { name, bytes } => commands::logs(&name, bytes),
        Command::Invocation(c) => asynchronous::invocation(c),
        Command::Dlq(c) => asynchronous::dlq(c),
    };
    if let Err(e) = result {
        eprintln!("nimbus: {e:#}");
        std::process::exit(1);
    }
}

/// Parses `ACCOUNT=WEIGHT`: a 12-digit account id and a weight of 1 to 1,000.
fn tenant_weight(text: &str) -> Result<(String, u32), String> {
    let (account, weight) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not ACCOUNT=WEIGHT"))?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{account:?} is not a 12-digit account id"));
    }
    match weight.parse::<u32>() {
        Ok(w @ 1..=1_000) => Ok((account.to_string(), w)),
        _ => Err(format!(
            "weight {weight:?} is not a whole number from 1 to 1000"
        )),
    }
}

/// Three quarters of this machine's memory, in MB (from `/proc/meminfo`),
/// or the built-in default where that cannot be read.
fn default_sandbox_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024 * 3 / 4)
        })
        .unwrap_or(Capacity::DEFAULT.memory_mb)
}

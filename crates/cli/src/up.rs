//! `nimbus up` and `nimbus env`.

use crate::credentials;
use crate::{ServerArgs, UpArgs};
use anyhow::Context as _;
use nimbus_api::{AsyncConfig, Capacity, ConcurrencyLimits, Platform, PlatformConfig};

/// Runs the platform until SIGINT or SIGTERM, then drains in-flight requests.
pub fn run(up: UpArgs) -> anyhow::Result<()> {
    let capacity = Capacity {
        sandboxes: up.sandboxes_max,
        memory_mb: up.sandbox_memory_mb,
        idle_recycle: std::time::Duration::from_secs(up.idle_recycle_s),
        prewarm_every: std::time::Duration::from_secs(up.prewarm_interval_s),
        burst_per_10s: up.burst_limit,
        warm: up.warm_sandboxes,
    };
    let concurrency = ConcurrencyLimits {
        account: up.account_concurrency,
        ..ConcurrencyLimits::DEFAULT
    };
    let asynchronous = AsyncConfig {
        backlog_per_tenant: up.async_backlog_max,
        retry_base: std::time::Duration::from_millis(up.async_retry_base_ms),
        lease: up.async_lease_ms.map(std::time::Duration::from_millis),
        repair: up.repair_journal,
    };
    let tenant_weights = up.tenant_weights;
    let worker_threads = up.worker_threads;
    let args = up.server;
    // NIMBUS_LOG takes tracing's filter syntax, e.g. `debug` or
    // `nimbus_worker=debug` (each sandbox start, with where its time went).
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIMBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let root = credentials::root(&args.data_dir)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = builder.build().context("start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        let platform = Platform::open(PlatformConfig {
            data_dir: args.data_dir.clone(),
            region: args.region.clone(),
            root: root.clone(),
            capacity,
            concurrency,
            asynchronous,
            tenant_weights,
        })
        .with_context(|| format!("open data directory {}", args.data_dir.display()))?;
        // One write, whose failure (say, stdout closed by `| head -1`) is not
        // fatal: the banner is for people, the server is what matters.
        let banner = format!(
            "nimbus is up: http://{address}\n  data dir       {}\n  region         {}\n  access key id  {}\n  secret key     {}\npoint the AWS tools here with:  eval \"$(nimbus env)\"\n",
            args.data_dir.display(),
            args.region,
            root.access_key_id,
            root.secret_access_key
        );
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(banner.as_bytes()).and_then(|()| stdout.flush());
        nimbus_api::serve(listener, platform, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Prints the environment the AWS tools (and `nimbus`' own client
/// subcommands) need to talk to this platform.
pub fn print_env(args: &ServerArgs) -> anyhow::Result<()> {
    let root = credentials::root(&args.data_dir)?;
    println!("export AWS_ENDPOINT_URL=http://{}", args.listen);
    println!("export AWS_ACCESS_KEY_ID={}", root.access_key_id);
    println!("export AWS_SECRET_ACCESS_KEY={}", root.secret_access_key);
    println!("export AWS_REGION={}", args.region);
    println!("export AWS_DEFAULT_REGION={}", args.region);
    Ok(())
}

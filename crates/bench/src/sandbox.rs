//! The wasm sandbox in process: what one invocation costs the worker, with
//! no HTTP, no authentication and no scheduling around it.
//!
//! Each run is `WasmRuntime::run` on code prepared once — a fresh WASI
//! context and store, an instance from the pooling allocator, `_start`, and
//! teardown — timed from the call to the outcome. The worker does not expose
//! instantiation on its own, so the empty guest stands in for it: its run is
//! set-up, instantiation and teardown with a call that returns at once.

use crate::guest;
use crate::stats::Summary;
use anyhow::{Context as _, ensure};
use nimbus_worker::{Invocation, Prepared, WasmRuntime};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The memory limit of the function the server runs (Lambda's default).
const MEMORY_LIMIT_BYTES: usize = 128 << 20;
/// The timeout of the function the server runs (Lambda's default); no run
/// here comes near it.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Warm-up runs per measured run: a tenth, so the pool's slots, the
/// allocator and the caches have settled before anything is timed.
const WARMUP_DIVISOR: u32 = 10;

/// The in-process figures.
pub struct SandboxFigures {
    /// Runs of the echo guest with the HTTP payload.
    pub echo: Summary,
    /// Runs of the empty guest: the sandbox's fixed cost.
    pub empty: Summary,
    /// Runs of the echo guest while another thread of this process keeps
    /// the other core busy, as the server's other threads do under load.
    pub echo_busy_neighbour: Summary,
}

/// Measures `runs` runs of each guest after `runs / 10` warm-up runs.
pub fn measure(runs: u32) -> anyhow::Result<SandboxFigures> {
    let cache = tempfile::tempdir().context("create a compiled-code cache")?;
    let wasm = WasmRuntime::new(cache.path()).context("start the wasm engine")?;
    let echo = wasm.prepare(&guest::echo_wasm()?)?;
    let empty = wasm.prepare(&guest::empty_wasm()?)?;
    // One thread, as a request handler runs on one worker thread; timing
    // happens inside the runtime so `block_on` itself is not measured.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let payload = crate::PAYLOAD.as_bytes();
    let echo_alone = runtime.block_on(time_runs(&wasm, &echo, payload, runs))?;
    let empty = runtime.block_on(time_runs(&wasm, &empty, b"", runs))?;
    let echo_busy_neighbour = {
        let _neighbour = BusyNeighbour::start();
        runtime.block_on(time_runs(&wasm, &echo, payload, runs))?
    };
    Ok(SandboxFigures {
        echo: echo_alone,
        empty,
        echo_busy_neighbour,
    })
}

/// A thread that spins until dropped. While it runs on another core, any
/// change this process makes to its page tables — the pooling allocator's
/// `madvise` when an instance's memory is returned — must interrupt that
/// core to flush its TLB, as it must in the server, whose other worker and
/// log threads are running.
struct BusyNeighbour {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusyNeighbour {
    fn start() -> BusyNeighbour {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        BusyNeighbour {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BusyNeighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn time_runs(
    wasm: &WasmRuntime,
    code: &Prepared,
    payload: &[u8],
    runs: u32,
) -> anyhow::Result<Summary> {
    let template = invocation(payload);
    let mut samples = Vec::with_capacity(runs as usize);
    for i in 0..runs / WARMUP_DIVISOR + runs {
        // Built outside the timed span: the server builds its invocation
        // before calling the sandbox too.
        let invocation = template.clone();
        let started = Instant::now();
        let outcome = wasm.run(code, &invocation).await;
        let took = started.elapsed();
        let body = outcome
            .result
            .map_err(|e| anyhow::anyhow!("{}: {}", e.error_type, e.message))?;
        ensure!(body.as_ref() == payload, "the guest answered {body:?}");
        if i >= runs / WARMUP_DIVISOR {
            samples.push(took);
        }
    }
    Ok(Summary::of(samples))
}

/// An invocation as the server builds it, with the variables Lambda
/// reserves, so the WASI context costs what it costs there.
fn invocation(payload: &[u8]) -> Invocation {
    let environment = [
        ("AWS_LAMBDA_FUNCTION_NAME", crate::FUNCTION_NAME),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench-echo"),
        ("AWS_REGION", crate::REGION),
        ("AWS_DEFAULT_REGION", crate::REGION),
        ("AWS_EXECUTION_ENV", "nimbus_wasm"),
        ("_HANDLER", ""),
        ("TZ", ":UTC"),
    ];
    Invocation {
        request_id: "00000000-0000-4000-8000-000000000000".into(),
        payload: payload.to_vec().into(),
        environment: environment
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        memory_limit_bytes: MEMORY_LIMIT_BYTES,
        timeout: TIMEOUT,
    }
}

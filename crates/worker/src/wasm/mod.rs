//! The `wasm` sandbox: WebAssembly through an embedded wasmtime.
//!
//! Code is validated and compiled once, ahead of any invocation
//! ([`WasmRuntime::prepare`]); the compiled artifact is cached on disk (keyed
//! by the code's SHA-256 and the engine's compatibility hash) and in memory
//! as an `InstancePre`, so an invocation only instantiates: a fresh instance
//! from the pooling allocator, which shares nothing with the previous one.
//!
//! Two guest shapes run as WASI commands — the event on stdin, the result on
//! stdout, the log on stderr: preview 1 core modules exporting `_start`, and
//! components exporting `wasi:cli/run`.

mod capture;
mod limits;

use crate::invocation::{
    FunctionError, Invocation, LOG_BYTES_PER_INVOCATION_MAX, Outcome, RESPONSE_MAX_BYTES,
};
use capture::Capture;
use limits::Limits;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Period of the epoch ticker. A running guest yields to the async runtime
/// once per tick, which is also the granularity of timeouts.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Most instances alive at once; the pooling allocator reserves a slot each.
const INSTANCES_MAX: u32 = 1_000;
/// Most core instances a component may hold (a wasi:cli component built by
/// today's toolchains has a handful: the program, adapters and shims).
const CORE_INSTANCES_PER_COMPONENT_MAX: u32 = 16;
/// Largest linear memory a guest may declare; wasm32 cannot address more.
const LINEAR_MEMORY_MAX_BYTES: usize = 4 << 30;
/// Bytes of each linear memory reset with `memset` rather than `madvise`
/// when an instance ends (only the pages actually touched, found with
/// `PAGEMAP_SCAN` where the kernel has it). An `madvise` that unmaps pages
/// interrupts every other core running the process to flush its TLB, so
/// under load it taxes every thread of the server, not only this one.
const LINEAR_MEMORY_KEEP_RESIDENT_BYTES: usize = 2 << 20;
/// The same for tables.
const TABLE_KEEP_RESIDENT_BYTES: usize = 64 << 10;
/// Decommits gathered into one batch, for what must still be decommitted:
/// one TLB shootdown per batch instead of one per instance.
const DECOMMIT_BATCH: usize = 16;
/// Most prepared functions kept in memory; the least recently used go first.
const PREPARED_CACHE_MAX: usize = 1_024;

/// Why code could not be prepared. Every variant but `Cache` is the user's
/// error and is reported at deploy time.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The binary is not valid WebAssembly, or does not compile.
    #[error("The WebAssembly binary does not validate: {0}")]
    Invalid(String),
    /// The binary is valid but cannot run as a WASI command here.
    #[error("The WebAssembly binary cannot run as a function: {0}")]
    NotACommand(String),
    /// The compiled-code cache could not be written.
    #[error("compiled-code cache {0}: {1}")]
    Cache(PathBuf, std::io::Error),
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration.
    #[error("configure wasmtime: {0}")]
    Configure(String),
    /// The compiled-code cache directory could not be created.
    #[error("create compiled-code cache {0}: {1}")]
    CacheDir(PathBuf, std::io::Error),
}

/// Code ready to instantiate.
pub struct Prepared {
    kind: Kind,
    /// Hex SHA-256 of the WebAssembly binary.
    pub wasm_sha256_hex: String,
}

enum Kind {
    Module(InstancePre<ModuleState>),
    Component(CommandPre<ComponentState>),
}

impl Prepared {
    /// Whether the code is a component (else a core module).
    pub fn is_component(&self) -> bool {
        matches!(self.kind, Kind::Component(_))
    }
}

struct ModuleState {
    wasi: WasiP1Ctx,
    limits: Limits,
}

struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: Limits,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// The embedded wasmtime and its caches.
pub struct WasmRuntime {
    engine: Engine,
    module_linker: Linker<ModuleState>,
    component_linker: wasmtime::component::Linker<ComponentState>,
    cache_dir: PathBuf,
    /// Hex of the engine's compatibility hash: compiled code from another
    /// wasmtime build or configuration is never loaded.
    compat: String,
    prepared: Mutex<PreparedCache>,
    ticker_stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct PreparedCache {
    entries: HashMap<String, (Arc<Prepared>, u64)>,
    clock: u64,
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn is_component(wasm: &[u8]) -> bool {
    // Bytes 4..8 are the version and layer: 1,0,0,0 for a core module,
    // layer 1 for a component.
    wasm.len() >= 8 && wasm[6..8] == [1, 0]
}

impl WasmRuntime {
    /// Starts an engine whose compiled code is cached under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<WasmRuntime, EngineError> {
        std::fs::create_dir_all(cache_dir)
            .map_err(|e| EngineError::CacheDir(cache_dir.to_path_buf(), e))?;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(INSTANCES_MAX * 2)
            .total_component_instances(INSTANCES_MAX)
            .total_memories(INSTANCES_MAX * 2)
            .total_tables(INSTANCES_MAX * 2)
            .total_stacks(INSTANCES_MAX)
            .max_memory_size(LINEAR_MEMORY_MAX_BYTES)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT_MAX)
            .max_memories_per_component(CORE_INSTANCES_PER_COMPONENT_MAX)
            .max_tables_per_component(CORE_INSTANCES_PER_COMPONENT_MAX)
            .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT_BYTES)
            .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(DECOMMIT_BATCH);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| EngineError::Configure(e.to_string()))?;

        let mut module_linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |s: &mut ModuleState| {
            &mut s.wasi
        })
        .map_err(|e| EngineError::Configure(e.to_string()))?;
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(|e| EngineError::Configure(e.to_string()))?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.weak(), ticker_stop.clone());
        Ok(WasmRuntime {
            engine,
            module_linker,
            component_linker,
            cache_dir: cache_dir.to_path_buf(),
            compat,
            prepared: Mutex::default(),
            ticker_stop,
        })
    }

    /// Validates and compiles `wasm` (or loads its compiled form from the
    /// cache) and links it. Blocking and CPU-heavy on a miss: call it off the
    /// async runtime's threads.
    pub fn prepare(&self, wasm: &[u8]) -> Result<Arc<Prepared>, PrepareError> {
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(wasm));
        if let Some(hit) = self.cached(&sha) {
            return Ok(hit);
        }
        let component = is_component(wasm);
        let path = self.cache_dir.join(format!(
            "{sha}-{}.{}",
            self.compat,
            if component {
                "cwasm-component"
            } else {
                "cwasm"
            }
        ));
        let kind = if component {
            let code = self.load_or_compile(
                &path,
                wasm,
                |e, b| Component::new(e, b).map(|c| (c.serialize(), c)),
                |e, p| {
                    // SAFETY: the file was written by `serialize` of this same
                    // engine build (its name carries the compatibility hash) into
                    // the platform's private data directory.
                    unsafe { Component::deserialize_file(e, p) }
                },
            )?;
            let pre = self
                .component_linker
                .instantiate_pre(&code)
                .map_err(|e| PrepareError::NotACommand(format!("{e:#}")))?;
            let pre = CommandPre::new(pre).map_err(|e| {
                PrepareError::NotACommand(format!(
                    "the component does not export wasi:cli/run: {e:#}"
                ))
            })?;
            Kind::Component(pre)
        } else {
            let code = self.load_or_compile(
                &path,
                wasm,
                |e, b| Module::new(e, b).map(|m| (m.serialize(), m)),
                |e, p| {
                    // SAFETY: as for components above.
                    unsafe { Module::deserialize_file(e, p) }
                },
            )?;
            let has_start = code
                .get_export("_start")
                .and_then(|e| e.func().cloned())
                .is_some_and(|f| f.params().len() == 0 && f.results().len() == 0);
            if !has_start {
                return Err(PrepareError::NotACommand(
                    "the module exports no `_start` function; runtime wasm runs WASI commands"
                        .into(),
                ));
            }
            let pre = self
                .module_linker
                .instantiate_pre(&code)
                .map_err(|e| PrepareError::NotACommand(format!("{e:#}")))?;
            Kind::Module(pre)
        };
        let prepared = Arc::new(Prepared {
            kind,
            wasm_sha256_hex: sha.clone(),
        });
        self.remember(sha, prepared.clone());
        Ok(prepared)
    }

    fn load_or_compile<T>(
        &self,
        path: &Path,
        wasm: &[u8],
        compile: impl Fn(&Engine, &[u8]) -> wasmtime::Result<(wasmtime::Result<Vec<u8>>, T)>,
        load: impl Fn(&Engine, &Path) -> wasmtime::Result<T>,
    ) -> Result<T, PrepareError> {
        if path.exists() {
            match load(&self.engine, path) {
                Ok(code) => return Ok(code),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compiled code unreadable; compiling again")
                }
            }
        }
        let (serialized, code) =
            compile(&self.engine, wasm).map_err(|e| PrepareError::Invalid(format!("{e:#}")))?;
        if let Ok(bytes) = serialized {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| PrepareError::Cache(path.to_path_buf(), e))?;
        }
        Ok(code)
    }

    fn cached(&self, sha: &str) -> Option<Arc<Prepared>> {
        let mut cache = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        cache.clock += 1;
        let now = cache.clock;
        cache.entries.get_mut(sha).map(|(p, used)| {
            *used = now;
            p.clone()
        })
    }

    fn remember(&self, sha: String, prepared: Arc<Prepared>) {
        let mut cache = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
        if cache.entries.len() >= PREPARED_CACHE_MAX {
            let oldest = cache
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                cache.entries.remove(&oldest);
            }
        }
        cache.clock += 1;
        let now = cache.clock;
        cache.entries.insert(sha, (prepared, now));
    }

    /// Runs one invocation in a fresh instance.
    pub async fn run(&self, prepared: &Prepared, invocation: &Invocation) -> Outcome {
        let started = Instant::now();
        let stdout = Capture::new(RESPONSE_MAX_BYTES);
        let stderr = Capture::new(LOG_BYTES_PER_INVOCATION_MAX);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdin(MemoryInputPipe::new(invocation.payload.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .envs(&invocation.environment[..])
            .args(&["function"]);
        let limits = Limits::new(invocation.memory_limit_bytes);
        let run = async {
            match &prepared.kind {
                Kind::Module(pre) => {
                    let state = ModuleState {
                        wasi: wasi.build_p1(),
                        limits,
                    };
                    let mut store = new_store(&self.engine, state, |s| &mut s.limits);
                    let result = run_module(pre, &mut store).await;
                    (
                        result,
                        store.data().limits.out_of_memory,
                        store.data().limits.peak_bytes,
                    )
                }
                Kind::Component(pre) => {
                    let state = ComponentState {
                        ctx: wasi.build(),
                        table: ResourceTable::new(),
                        limits,
                    };
                    let mut store = new_store(&self.engine, state, |s| &mut s.limits);
                    let result = run_component(pre, &mut store).await;
                    (
                        result,
                        store.data().limits.out_of_memory,
                        store.data().limits.peak_bytes,
                    )
                }
            }
        };
        let timed = tokio::time::timeout(invocation.timeout, run).await;
        let duration = started.elapsed();
        let (log, _) = stderr.take();
        let (result, max_memory_bytes) = match timed {
            Err(_elapsed) => (Err(timed_out(invocation)), invocation.memory_limit_bytes),
            Ok((result, out_of_memory, peak)) => {
                let result = match result {
                    Ok(()) => {
                        let (body, overflowed) = stdout.take();
                        if overflowed {
                            Err(FunctionError {
                                error_type: "Function.ResponseSizeTooLarge".into(),
                                message: format!(
                                    "Response payload size exceeded maximum allowed payload size ({RESPONSE_MAX_BYTES} bytes)."
                                ),
                            })
                        } else {
                            Ok(body.into())
                        }
                    }
                    Err(_) if out_of_memory => Err(FunctionError {
                        error_type: "Runtime.OutOfMemory".into(),
                        message: format!(
                            "RequestId: {} Error: Runtime exited with error: the function exceeded its memory limit of {} MB",
                            invocation.request_id,
                            invocation.memory_limit_bytes >> 20
                        ),
                    }),
                    Err(failure) => Err(failure.into_error(&invocation.request_id)),
                };
                (result, peak)
            }
        };
        Outcome {
            result,
            log: log.into(),
            duration,
            init_duration: Duration::ZERO,
            max_memory_bytes,
        }
    }
}

/// How a guest run ended badly.
enum Failure {
    Exit(i32),
    Trap(String),
}

impl Failure {
    fn into_error(self, request_id: &str) -> FunctionError {
        match self {
            Failure::Exit(code) => FunctionError {
                error_type: "Runtime.ExitError".into(),
                message: format!(
                    "RequestId: {request_id} Error: Runtime exited with error: exit status {code}"
                ),
            },
            Failure::Trap(what) => FunctionError {
                error_type: "Runtime.WasmTrap".into(),
                message: format!("RequestId: {request_id} Error: wasm trap: {what}"),
            },
        }
    }
}

fn classify(error: wasmtime::Error) -> Failure {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Failure::Exit(exit.0);
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => Failure::Trap(trap.to_string()),
        None => Failure::Trap(format!("{error:#}")),
    }
}

fn timed_out(invocation: &Invocation) -> FunctionError {
    FunctionError {
        error_type: "Sandbox.Timedout".into(),
        message: format!(
            "RequestId: {} Error: Task timed out after {:.2} seconds",
            invocation.request_id,
            invocation.timeout.as_secs_f64()
        ),
    }
}

fn new_store<T: 'static>(engine: &Engine, state: T, limits: fn(&mut T) -> &mut Limits) -> Store<T> {
    let mut store = Store::new(engine, state);
    store.limiter(move |s| limits(s) as &mut dyn wasmtime::ResourceLimiter);
    // Yield to the async runtime every tick: the invocation's timeout can
    // then fire, and a spinning guest never holds a runtime thread for long.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

async fn run_module(
    pre: &InstancePre<ModuleState>,
    store: &mut Store<ModuleState>,
) -> Result<(), Failure> {
    let instance = pre.instantiate_async(&mut *store).await.map_err(classify)?;
    let start = instance
        .get_typed_func::<(), ()>(&mut *store, "_start")
        .map_err(classify)?;
    match start.call_async(&mut *store, ()).await {
        Ok(()) => Ok(()),
        Err(e) => match classify(e) {
            Failure::Exit(0) => Ok(()),
            other => Err(other),
        },
    }
}

async fn run_component(
    pre: &CommandPre<ComponentState>,
    store: &mut Store<ComponentState>,
) -> Result<(), Failure> {
    let command = pre.instantiate_async(&mut *store).await.map_err(classify)?;
    match command.wasi_cli_run().call_run(&mut *store).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) => Err(Failure::Exit(1)),
        Err(e) => match classify(e) {
            Failure::Exit(0) => Ok(()),
            other => Err(other),
        },
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the runtime drops.
fn spawn_epoch_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("nimbus-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .expect("spawning the epoch thread at start-up");
}

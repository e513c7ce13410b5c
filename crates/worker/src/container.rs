//! The container executor: sandboxes in three tiers (Decision 6).
//!
//! A sandbox whose function waits in `/next` after an invocation is *hot*
//! and serves the next invocation of the same version and revision. A miss
//! claims a *warm* sandbox — namespaces, cgroups, root, `/tmp` disk and
//! Runtime API built ahead, no code — from a pool of [`Capacity::warm`]
//! per `/tmp` size (Lambda's default, and the few sizes most recently
//! asked for) that is refilled in the background; with none at hand it
//! builds one from nothing (*cold*). Idle
//! sandboxes are recycled after [`IDLE_RECYCLE`], the host never holds more
//! than [`Capacity::sandboxes`] function sandboxes (the warm pool has its
//! own [`Capacity::warm`] on top: a host full of idle sandboxes still starts
//! from the warm tier, evicting the longest idle), and a sandbox that was
//! killed (timeout, out of memory, crash) is never reused.
//!
//! `provided.*` sandboxes exec the package's `bootstrap`. `python3.x`
//! sandboxes run the host's `python3.x` on the platform's runtime client
//! (`runtimes/python/bootstrap.py`, mounted read-only at `/var/runtime`), or
//! on AWS's `awslambdaric` when the package brings it. For each `python3.x`
//! this host has started, the warm tier also keeps sandboxes whose runtime
//! client is already running and waits for its function (Decision 6): a
//! claim mounts the code, hands over the environment, and the function's
//! init is only the import of its module.

use crate::snapshot::FunctionSnapshot;
use nimbus_container::{
    HostConfig, InvokeOutcome, InvokeRequest, Preloaded, Sandbox, SandboxConfig, StartError,
    WarmSandbox,
};
use nimbus_control::Runtime;
use nimbus_scheduler::prewarm::Forecast;
use nimbus_scheduler::{BurstLimit, FairShare, StartGate, TooFast};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How many sandboxes one host keeps, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Most function sandboxes (hot or busy) alive at once; a start on a
    /// full host evicts the longest-idle one.
    pub sandboxes: usize,
    /// Most memory, in MB, the function sandboxes' limits (their functions'
    /// MemorySize) may add up to; a start that does not fit evicts the
    /// longest-idle sandboxes until it does.
    pub memory_mb: u64,
    /// Idle time after which a hot sandbox is shut down (Lambda keeps them
    /// minutes; so do we), unless its function's forecast wants it kept.
    pub idle_recycle: Duration,
    /// How often pre-warming brings the pool up to the forecasts
    /// (`Duration::ZERO`: never).
    pub prewarm_every: Duration,
    /// New sandboxes one function may add per 10 s when invocations find
    /// none hot (Lambda's burst scaling limit).
    pub burst_per_10s: u32,
    /// Warm sandboxes kept ready, on top of those. Each holds a sparse
    /// `/tmp` image, a few cgroups and a waiting process that shares the
    /// server's pages until it execs (copy-on-write).
    pub warm: usize,
}

impl Capacity {
    /// What `nimbus up` keeps unless told otherwise.
    pub const DEFAULT: Capacity = Capacity {
        sandboxes: 64,
        memory_mb: 16 * 1024,
        idle_recycle: Duration::from_secs(10 * 60),
        prewarm_every: Duration::from_secs(10),
        burst_per_10s: BurstLimit::DEFAULT_PER_WINDOW,
        warm: 2,
    };
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity::DEFAULT
    }
}
/// The `/tmp` size the warm pool always has: Lambda's default
/// `EphemeralStorage` (and the only one of preloaded runtimes).
const WARM_EPHEMERAL_STORAGE_MB: u32 = nimbus_container::limits::EPHEMERAL_STORAGE_MB_DEFAULT;
/// Other `/tmp` sizes the warm pool keeps sandboxes of: those most
/// recently started from nothing. A warm sandbox's `/tmp` disk is made at
/// its size, so each size is a pool of its own.
const OTHER_TMP_SIZES_WARM_MAX: usize = 3;
/// nimbus' runtime client for `python3.x`, written under the data directory
/// at start-up and mounted read-only at `/var/runtime` in python sandboxes.
const PYTHON_RUNTIME_CLIENT: &str = include_str!("../runtimes/python/bootstrap.py");
/// Where a python sandbox finds the runtime client.
const PYTHON_RUNTIME_CLIENT_PATH: &str = "/var/runtime/bootstrap.py";

/// The interpreter of `python3.<minor>`: the host's, which the sandbox sees
/// through its read-only bind of `/usr`.
pub fn python_interpreter(minor: u8) -> PathBuf {
    PathBuf::from(format!("/usr/bin/python3.{minor}"))
}

/// Whether this host can run `runtime` in a sandbox; if not, why, in words
/// for the deployer.
pub fn check_runtime(runtime: Runtime) -> Result<(), String> {
    let Runtime::Python(minor) = runtime else {
        return Ok(());
    };
    if python_interpreter(minor).is_file() {
        return Ok(());
    }
    let served: Vec<String> = (0..=20u8)
        .filter(|m| python_interpreter(*m).is_file())
        .map(|m| format!("python3.{m}"))
        .collect();
    Err(format!(
        "Runtime {} needs {}, which this host does not have; it serves {}",
        runtime.as_str(),
        python_interpreter(minor).display(),
        if served.is_empty() {
            "no python3.x runtime".to_string()
        } else {
            served.join(", ")
        }
    ))
}

/// (tenant, function, version, revision): a sandbox only ever serves the
/// exact configuration it was started with.
type PoolKey = (String, String, String, u64);

struct Idle {
    sandbox: Sandbox,
    since: Instant,
    /// Kept for provisioned concurrency: never recycled or evicted.
    pinned: bool,
}

/// Provisioned concurrency of one function version: sandboxes started
/// ahead and kept (pinned) while it is configured.
#[derive(Debug, Default)]
struct Provision {
    /// Which provision this is: a start begun for an earlier one (since
    /// removed and set again) must not count toward this one.
    generation: u64,
    /// How many are wanted.
    requested: usize,
    /// How many pinned sandboxes are alive.
    allocated: usize,
    /// How many are being started.
    starting: usize,
    /// Why the last start failed, if it did.
    failure: Option<String>,
}

/// Pre-warming of one function version: its forecast, and what the pool
/// holds of it beyond the idle list.
struct Prewarm {
    forecast: Forecast,
    snapshot: Arc<FunctionSnapshot>,
    code_dir: PathBuf,
    /// The forecast's last target: idle sandboxes up to it are kept from
    /// idle recycling.
    target: usize,
    /// Sandboxes busy now.
    busy: usize,
    /// Sandboxes being started for the target.
    starting: usize,
}

/// Sandbox starts (claims and builds) run at once; more wait their turn,
/// fairly among tenants.
const STARTS_AT_ONCE: usize = 8;

/// Most sandboxes one pre-warming tick starts for one function.
const PREWARM_STARTS_PER_TICK: usize = 4;

/// What a provisioned-concurrency configuration has, as Lambda reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionStatus {
    /// Instances wanted.
    pub requested: usize,
    /// Instances started and kept.
    pub allocated: usize,
    /// Why a start failed, if one did.
    pub failure: Option<String>,
}

/// What the function sandboxes alive hold of the host.
#[derive(Debug, Default)]
struct Usage {
    sandboxes: usize,
    memory_mb: u64,
}

/// Why an invocation could not get a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The tenant holds its fair share of the host's busy sandboxes while
    /// others need them, or every one is busy.
    #[error("{0}")]
    Shed(nimbus_scheduler::Shed),
    /// The function adds sandboxes faster than its burst limit.
    #[error("{0}")]
    TooFast(TooFast),
    /// The host's sandboxes or memory are all held by busy sandboxes.
    #[error("every sandbox of this host is busy (it keeps at most {0} sandboxes and {1} MB)")]
    Capacity(usize, u64),
    /// The function's own init failed: Lambda's error type and message, the
    /// init log, and the tier the start came from.
    #[error("{0}: {1}")]
    Init(String, String, Vec<u8>, Tier),
    /// The platform could not build the sandbox.
    #[error("the sandbox could not start: {0}")]
    Start(StartError),
    /// The sandbox failed in a way that is not the function's.
    #[error("the sandbox failed: {0}")]
    Invoke(String),
}

/// Where an invocation's sandbox came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The function's own sandbox, waiting in `/next`.
    Hot,
    /// A warm sandbox claimed for the function.
    Warm,
    /// A sandbox built from nothing.
    Cold,
}

impl Tier {
    /// The tier's name, as the `X-Nimbus-Tier` header gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }
}

/// What a container invocation produced, and where its sandbox came from.
pub struct ContainerOutcome {
    /// The function's answer, log and measurements.
    pub outcome: InvokeOutcome,
    /// `Some(init)` when this invocation started the function.
    pub init_duration: Option<Duration>,
    /// The tier that served it.
    pub tier: Tier,
}

/// Hot sandboxes, by function version.
pub struct ContainerPool {
    host: HostConfig,
    capacity: Capacity,
    region: String,
    /// The host directory mounted at `/var/runtime` in python sandboxes.
    python_runtime_dir: PathBuf,
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    /// Provisioned concurrency, by function version.
    provisioned: Mutex<HashMap<PoolKey, Provision>>,
    /// Forecasts of every version invoked, and their pre-warming.
    prewarm: Mutex<HashMap<PoolKey, Prewarm>>,
    /// How fast each function may add sandboxes, on the pool's clock.
    burst: BurstLimit,
    /// The starts running, and those waiting their tenant's turn.
    starts: StartGate,
    clock: Instant,
    /// Warm sandboxes by `/tmp` size in MB.
    warm: Shelves<u32, WarmSandbox>,
    /// The `/tmp` sizes other than Lambda's default that the pool keeps,
    /// most recently wanted last.
    other_tmp_sizes: Mutex<Vec<u32>>,
    /// Warm sandboxes with a `python3.<minor>` runtime client running, by
    /// minor version.
    preloaded: Shelves<u8, Preloaded>,
    /// The `python3.<minor>` runtimes started since boot: those whose
    /// preloaded sandboxes the pool keeps.
    python_wanted: Mutex<HashSet<u8>>,
    /// Cleared when this host turns out unable to mount code into a
    /// running sandbox (the mount API of Linux 5.12+): no more preloading.
    preloading_works: std::sync::atomic::AtomicBool,
    /// What the function sandboxes alive (hot or busy; warm ones are not
    /// counted) hold of the host.
    usage: Mutex<Usage>,
    /// Busy sandboxes by tenant, shared fairly: a flooding tenant is shed
    /// before it can take the last slots from the others.
    share: FairShare,
    /// The same rule among functions (of any tenant): the cap on one
    /// function's share of the host while others need sandboxes.
    function_share: FairShare,
    next_id: AtomicU64,
    /// Prefix of this pool's sandbox ids, different on every start, so a
    /// sandbox is never mistaken for one of a predecessor's.
    boot: String,
}

impl ContainerPool {
    /// A pool whose sandboxes keep their state under `state_dir` and are
    /// tagged `tag` (so a restart on the same data dir sweeps only its own).
    /// Sweeps what a killed predecessor with the same tag left behind, and
    /// writes the managed runtimes' clients under `runtimes_dir`.
    pub fn open(
        state_dir: &Path,
        runtimes_dir: &Path,
        tag: &str,
        region: &str,
        capacity: Capacity,
    ) -> Result<ContainerPool, String> {
        let host = HostConfig::new(state_dir, tag);
        let report = nimbus_container::sweep(&host).map_err(|e| e.to_string())?;
        tracing::info!(?report, "swept sandboxes left by a previous run");
        let python_runtime_dir = runtimes_dir.join("python");
        write_world_readable(&python_runtime_dir, "bootstrap.py", PYTHON_RUNTIME_CLIENT)
            .map_err(|e| format!("write {}: {e}", python_runtime_dir.display()))?;
        Ok(ContainerPool {
            host,
            capacity,
            region: region.to_string(),
            python_runtime_dir,
            idle: Mutex::default(),
            warm: Shelves::default(),
            provisioned: Mutex::default(),
            prewarm: Mutex::default(),
            burst: BurstLimit::new(capacity.burst_per_10s, BurstLimit::WINDOW),
            starts: StartGate::new(STARTS_AT_ONCE),
            clock: Instant::now(),
            other_tmp_sizes: Mutex::default(),
            preloaded: Shelves::default(),
            python_wanted: Mutex::default(),
            preloading_works: std::sync::atomic::AtomicBool::new(true),
            usage: Mutex::default(),
            share: FairShare::new(
                capacity.sandboxes,
                FairShare::default_headroom(capacity.sandboxes),
            ),
            function_share: FairShare::new(
                capacity.sandboxes,
                FairShare::default_headroom(capacity.sandboxes),
            ),
            next_id: AtomicU64::new(1),
            boot: boot_prefix(),
        })
    }

    fn key(snapshot: &FunctionSnapshot) -> PoolKey {
        (
            snapshot.tenant.clone(),
            snapshot.name.clone(),
            snapshot.version.clone(),
            snapshot.revision,
        )
    }

    /// A hot sandbox of `key`, and whether it is pinned.
    fn take_idle(&self, key: &PoolKey) -> Option<(Sandbox, bool)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        let taken = list.pop().map(|i| (i.sandbox, i.pinned));
        if list.is_empty() {
            idle.remove(key);
        }
        taken
    }

    /// Keeps `requested` sandboxes of the snapshot's version started and
    /// pinned (Lambda's provisioned concurrency): starts what is missing in
    /// the background; beyond `requested`, pinned sandboxes become ordinary
    /// idle ones. Needs a tokio runtime.
    pub fn provision(
        self: &Arc<Self>,
        snapshot: Arc<FunctionSnapshot>,
        code_dir: PathBuf,
        requested: usize,
    ) {
        let key = Self::key(&snapshot);
        let surplus = {
            let mut provisioned = self.provisioned.lock().unwrap_or_else(|p| p.into_inner());
            let p = provisioned.entry(key.clone()).or_insert_with(|| Provision {
                generation: self.next_id.fetch_add(1, Ordering::Relaxed),
                ..Provision::default()
            });
            p.requested = requested;
            p.failure = None;
            p.allocated.saturating_sub(requested)
        };
        if surplus > 0 {
            self.unpin(&key, surplus);
        }
        self.top_up(&key, &snapshot, &code_dir);
    }

    /// Stops keeping the sandboxes of the function's `version` (`None`:
    /// of every version): they become ordinary idle ones, recycled in time.
    pub fn deprovision(&self, tenant: &str, name: &str, version: Option<&str>) {
        let keys: Vec<PoolKey> = {
            let mut provisioned = self.provisioned.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<PoolKey> = provisioned
                .keys()
                .filter(|k| k.0 == tenant && k.1 == name && version.is_none_or(|v| k.2 == v))
                .cloned()
                .collect();
            for key in &keys {
                provisioned.remove(key);
            }
            keys
        };
        for key in keys {
            self.unpin(&key, usize::MAX);
        }
    }

    /// The versions of a function that have provisioned concurrency.
    pub fn provisioned_versions(&self, tenant: &str, name: &str) -> Vec<String> {
        let provisioned = self.provisioned.lock().unwrap_or_else(|p| p.into_inner());
        provisioned
            .keys()
            .filter(|k| k.0 == tenant && k.1 == name)
            .map(|k| k.2.clone())
            .collect()
    }

    /// How many sandboxes and how much memory this host keeps.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// What the version's provisioned concurrency has, if it has one.
    pub fn provision_status(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Option<ProvisionStatus> {
        let provisioned = self.provisioned.lock().unwrap_or_else(|p| p.into_inner());
        provisioned
            .iter()
            .find(|(k, _)| k.0 == tenant && k.1 == name && k.2 == version)
            .map(|(_, p)| ProvisionStatus {
                requested: p.requested,
                allocated: p.allocated.min(p.requested),
                failure: p.failure.clone(),
            })
    }

    /// Unpins up to `count` idle sandboxes of `key`.
    fn unpin(&self, key: &PoolKey, count: usize) {
        let mut unpinned = 0;
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for entry in idle.get_mut(key).into_iter().flatten() {
                if unpinned < count && entry.pinned {
                    entry.pinned = false;
                    entry.since = Instant::now();
                    unpinned += 1;
                }
            }
        }
        let mut provisioned = self.provisioned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = provisioned.get_mut(key) {
            p.allocated = p.allocated.saturating_sub(unpinned);
        }
    }

    /// Starts the sandboxes `key`'s provision is missing.
    fn top_up(self: &Arc<Self>, key: &PoolKey, snapshot: &Arc<FunctionSnapshot>, code_dir: &Path) {
        let (missing, generation) = {
            let mut provisioned = self.provisioned.lock().unwrap_or_else(|p| p.into_inner());
            let Some(p) = provisioned.get_mut(key) else {
                return;
            };
            let missing = p.requested.saturating_sub(p.allocated + p.starting);
            p.starting += missing;
            (missing, p.generation)
        };
        for _ in 0..missing {
            let (pool, key, snapshot, code_dir) = (
                self.clone(),
                key.clone(),
                snapshot.clone(),
                code_dir.to_path_buf(),
            );
            tokio::spawn(async move {
                let started = pool.start(&snapshot, &code_dir).await;
                let wanted = match pool
                    .provisioned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&key)
                {
                    Some(p) if p.generation == generation => {
                        p.starting -= 1;
                        match &started {
                            Ok(_) if p.allocated < p.requested => {
                                p.allocated += 1;
                                true
                            }
                            Ok(_) => false,
                            Err(e) => {
                                p.failure = Some(e.to_string());
                                false
                            }
                        }
                    }
                    _ => false,
                };
                // Unwanted, its provision changed or went (the function
                // may be gone): nobody may be served by it.
                if let Ok((sandbox, _)) = started {
                    pool.keep_or_shut(key, sandbox, wanted.then_some(true))
                        .await;
                }
            });
        }
    }

    /// Puts a sandbox started ahead into the idle pool (`Some(pinned)`), or
    /// shuts it down and gives back its room (`None`: nobody wants it).
    async fn keep_or_shut(&self, key: PoolKey, sandbox: Sandbox, keep: Option<bool>) {
        match keep {
            Some(pinned) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.entry(key).or_default().push(Idle {
                    sandbox,
                    since: Instant::now(),
                    pinned,
                });
            }
            None => {
                self.release(sandbox.memory_mb());
                sandbox.shutdown().await;
            }
        }
    }

    /// The longest-idle sandbox of any function, taken out of the pool.
    fn take_longest_idle(&self) -> Option<(PoolKey, Idle)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let (oldest, at) = idle
            .iter()
            .flat_map(|(k, list)| {
                list.iter()
                    .enumerate()
                    .filter(|(_, i)| !i.pinned)
                    .map(move |(at, i)| (k, at, i.since))
            })
            .min_by_key(|(_, _, since)| *since)
            .map(|(k, at, _)| (k.clone(), at))?;
        let list = idle.get_mut(&oldest)?;
        let victim = list.remove(at);
        if list.is_empty() {
            idle.remove(&oldest);
        }
        Some((oldest, victim))
    }

    /// Claims room for a new sandbox of `memory_mb`, evicting the
    /// longest-idle sandboxes of any function until it fits (unless
    /// `may_evict` is false). If even evicting every idle one would not make
    /// room, none is evicted.
    fn claim_slot(&self, memory_mb: u32, may_evict: bool) -> Result<(), ContainerError> {
        let needed = u64::from(memory_mb);
        let mut victims = Vec::new();
        let fits = {
            let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            let (mut sandboxes, mut memory) = (usage.sandboxes, usage.memory_mb);
            let fits = loop {
                if sandboxes < self.capacity.sandboxes && memory + needed <= self.capacity.memory_mb
                {
                    break true;
                }
                let victim = if may_evict {
                    self.take_longest_idle()
                } else {
                    None
                };
                match victim {
                    Some(victim) => {
                        sandboxes -= 1;
                        memory -= u64::from(victim.1.sandbox.memory_mb());
                        victims.push(victim);
                    }
                    None => break false,
                }
            };
            if fits {
                usage.sandboxes = sandboxes + 1;
                usage.memory_mb = memory + needed;
            }
            fits
        };
        if !fits {
            // Back where they were, oldest first, as if never touched.
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for (key, entry) in victims.into_iter().rev() {
                let list = idle.entry(key).or_default();
                let at = list.partition_point(|i| i.since <= entry.since);
                list.insert(at, entry);
            }
            return Err(ContainerError::Capacity(
                self.capacity.sandboxes,
                self.capacity.memory_mb,
            ));
        }
        for (_, victim) in victims {
            // Torn down beside the start, not before it: the victim is
            // already out of the pool, and its teardown (kill, wait,
            // unmount, remove) is no part of the new function's start.
            tokio::spawn(victim.sandbox.shutdown());
        }
        Ok(())
    }

    /// Gives back what a sandbox of `memory_mb` held.
    fn release(&self, memory_mb: u32) {
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.sandboxes -= 1;
        usage.memory_mb -= u64::from(memory_mb);
    }

    /// Starts building warm sandboxes until the pool holds
    /// [`Capacity::warm`] of each `/tmp` size it keeps. Needs a tokio
    /// runtime.
    pub fn refill(self: &Arc<Self>) {
        let mut sizes = vec![WARM_EPHEMERAL_STORAGE_MB];
        sizes.extend(
            self.other_tmp_sizes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter(),
        );
        for size in sizes {
            for _ in 0..self.warm.book(size, self.capacity.warm) {
                let pool = self.clone();
                tokio::spawn(async move {
                    let id = pool.new_id("w");
                    // Only the id, host settings and /tmp size matter until a claim.
                    let mut template =
                        SandboxConfig::provided(id, pool.host.clone(), &pool.host.state_dir);
                    template.ephemeral_storage_mb = size;
                    let built = WarmSandbox::start(&template).await.inspect_err(
                        |e| tracing::warn!(error = %e, "a warm sandbox could not be built"),
                    );
                    // Decided under the shelves' lock, which `take_warm`
                    // holds when it drops a size's sandboxes.
                    let still_wanted = || {
                        size == WARM_EPHEMERAL_STORAGE_MB
                            || pool
                                .other_tmp_sizes
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .contains(&size)
                    };
                    // Its size was dropped from the pool while it was built.
                    if let Some(unwanted) = pool.warm.finish(size, built.ok(), still_wanted) {
                        unwanted.discard().await;
                    }
                });
            }
        }
    }

    /// A warm sandbox with `/tmp` of `size_mb`, if one is ready. A size
    /// other than the default becomes one the pool keeps (the oldest such
    /// size is dropped, and its sandboxes torn down, beyond
    /// [`OTHER_TMP_SIZES_WARM_MAX`]); the pool then refills.
    fn take_warm(self: &Arc<Self>, size_mb: u32) -> Option<WarmSandbox> {
        let mut dropped = None;
        if size_mb != WARM_EPHEMERAL_STORAGE_MB {
            let mut sizes = self
                .other_tmp_sizes
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            sizes.retain(|s| *s != size_mb);
            sizes.push(size_mb);
            if sizes.len() > OTHER_TMP_SIZES_WARM_MAX {
                dropped = Some(sizes.remove(0));
            }
        }
        let (taken, _) = self.warm.take_where(size_mb, |_| true);
        let unwanted = dropped.map_or_else(Vec::new, |size| self.warm.take_all(size));
        if !unwanted.is_empty() {
            tokio::spawn(async move {
                for sandbox in unwanted {
                    sandbox.discard().await;
                }
            });
        }
        self.refill();
        taken
    }

    /// Starts building preloaded sandboxes until each wanted `python3.x`
    /// has [`Capacity::warm`] of them. Needs a tokio runtime.
    fn refill_preloaded(self: &Arc<Self>) {
        let wanted: Vec<u8> = self
            .python_wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        for minor in wanted {
            for _ in 0..self.preloaded.book(minor, self.capacity.warm) {
                let pool = self.clone();
                tokio::spawn(async move {
                    let id = pool.new_id("p");
                    let mut config = SandboxConfig::provided(id, pool.host.clone(), "");
                    config.ephemeral_storage_mb = WARM_EPHEMERAL_STORAGE_MB;
                    pool.python_runtime(&mut config, minor);
                    let built = match WarmSandbox::start(&config).await {
                        Ok(warm) => warm.preload(&config).await,
                        Err(e) => Err(e),
                    }
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "a warm python3.{minor} sandbox could not be built")
                    });
                    pool.preloaded.finish(minor, built.ok(), || true);
                });
            }
        }
    }

    /// A fresh sandbox id: `<boot><kind><n>`.
    fn new_id(&self, kind: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}{kind}{n}", self.boot)
    }

    /// Weighs `tenant` in the host's fair sharing: its share of the busy
    /// sandboxes and its starts per turn are `weight` times a tenant of
    /// weight 1's.
    pub fn set_tenant_weight(&self, tenant: &str, weight: u32) {
        self.share.set_weight(tenant, weight);
        self.starts.set_weight(tenant, weight);
    }

    /// How long a hot sandbox may stay idle.
    pub fn idle_recycle(&self) -> Duration {
        self.capacity.idle_recycle
    }

    /// Warm sandboxes ready now, of every `/tmp` size.
    pub fn warm_count(&self) -> usize {
        self.warm.ready()
    }

    /// A sandbox for the snapshot's function: a claimed warm one, else one
    /// built from nothing. Room is made by evicting idle sandboxes.
    async fn start(
        self: &Arc<Self>,
        snapshot: &FunctionSnapshot,
        code_dir: &Path,
    ) -> Result<(Sandbox, Tier), ContainerError> {
        self.start_with(snapshot, code_dir, true).await
    }

    /// [`ContainerPool::start`], evicting only if `may_evict`: a guess of
    /// the forecast's never displaces a sandbox already there.
    async fn start_with(
        self: &Arc<Self>,
        snapshot: &FunctionSnapshot,
        code_dir: &Path,
        may_evict: bool,
    ) -> Result<(Sandbox, Tier), ContainerError> {
        // Builds are the host's heaviest work: a few at once, the rest
        // queued fairly among tenants.
        let _turn = self.starts.enter(&snapshot.tenant).await;
        let mut config = self.sandbox_config(snapshot, code_dir);
        let memory_mb = config.memory_mb;
        self.claim_slot(memory_mb, may_evict)?;
        if let Some(preloaded) = self.take_preloaded(snapshot, &config) {
            match preloaded.assign(&config).await {
                Ok(sandbox) => return Ok((sandbox, Tier::Warm)),
                Err(e) if e.function_error().is_some() => {
                    self.release(memory_mb);
                    return Err(Self::start_error(e, Tier::Warm));
                }
                // The platform's failure, not the function's: start it
                // another way, and stop preloading if this host cannot
                // mount code into a running sandbox at all.
                Err(e) => {
                    tracing::warn!(error = %e, "a preloaded runtime could not take its function");
                    if matches!(&e, StartError::Setup { source, .. }
                        if source.kind() == std::io::ErrorKind::Unsupported)
                    {
                        self.preloading_works.store(false, Ordering::Release);
                    }
                }
            }
        }
        let (started, tier) = match self.take_warm(config.ephemeral_storage_mb) {
            Some(warm) => (warm.claim(&config).await, Tier::Warm),
            None => {
                config.id = self.new_id("s");
                (Sandbox::start(config).await, Tier::Cold)
            }
        };
        match started {
            Ok(sandbox) => Ok((sandbox, tier)),
            Err(e) => {
                self.release(memory_mb);
                Err(Self::start_error(e, tier))
            }
        }
    }

    fn start_error(e: StartError, tier: Tier) -> ContainerError {
        match e.function_error() {
            Some((kind, message, log)) => ContainerError::Init(
                kind.to_string(),
                message.to_string(),
                log.as_bytes().to_vec(),
                tier,
            ),
            None => ContainerError::Start(e),
        }
    }

    /// A sandbox whose runtime client already runs, for a `python3.x`
    /// function that can use one; marks the runtime wanted either way, so
    /// the pool keeps such sandboxes from now on.
    fn take_preloaded(
        self: &Arc<Self>,
        snapshot: &FunctionSnapshot,
        config: &SandboxConfig,
    ) -> Option<Preloaded> {
        let Runtime::Python(minor) = snapshot.config.runtime else {
            return None;
        };
        // The runtime started with the platform's client, Lambda's /tmp and
        // an environment of its own: a function that differs in any of them
        // starts its interpreter itself.
        let usable = config.runtime_dir.is_some()
            && config.command.get(1).map(String::as_str) == Some(PYTHON_RUNTIME_CLIENT_PATH)
            && config.ephemeral_storage_mb == WARM_EPHEMERAL_STORAGE_MB
            && !snapshot
                .config
                .environment
                .keys()
                .any(|k| read_at_interpreter_start(k));
        if !usable || !self.preloading_works.load(Ordering::Acquire) {
            return None;
        }
        self.python_wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(minor);
        // One whose runtime died while it waited is of no use.
        let (taken, dead) = self.preloaded.take_where(minor, Preloaded::is_alive);
        if !dead.is_empty() {
            tokio::spawn(async move {
                for sandbox in dead {
                    sandbox.discard().await;
                }
            });
        }
        // Also after builds failed: the pool tops itself up on every start.
        self.refill_preloaded();
        taken
    }

    /// Makes `config` run the platform's runtime client on `python3.<minor>`.
    fn python_runtime(&self, config: &mut SandboxConfig, minor: u8) {
        config.command = vec![
            python_interpreter(minor).display().to_string(),
            PYTHON_RUNTIME_CLIENT_PATH.into(),
        ];
        config.runtime_dir = Some(self.python_runtime_dir.clone());
        // Lambda's defaults, which the function's own variables may
        // override: modules come from the code, and the read-only code
        // directory gets no bytecode cache written into it.
        config.environment.extend([
            ("PYTHONPATH".to_string(), "/var/task".to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
        ]);
    }

    /// The sandbox configuration of the snapshot's function (its id is set
    /// for a cold start; a warm sandbox keeps its own).
    fn sandbox_config(&self, snapshot: &FunctionSnapshot, code_dir: &Path) -> SandboxConfig {
        let mut config = SandboxConfig::provided("claimed", self.host.clone(), code_dir);
        let c = &snapshot.config;
        if let Runtime::Python(minor) = c.runtime {
            self.python_runtime(&mut config, minor);
            // A package that brings AWS's runtime interface client runs on
            // it, as it would in a container image built on it.
            if code_dir.join("awslambdaric").join("__init__.py").is_file() {
                let handler = c.handler.clone().unwrap_or_default();
                config.command.truncate(1);
                config
                    .command
                    .extend(["-m".into(), "awslambdaric".into(), handler]);
            }
        }
        config.function_name = c.name.clone();
        config.function_version = snapshot.version.clone();
        config.handler = c.handler.clone().unwrap_or_default();
        config.region = self.region.clone();
        config.memory_mb = c.memory_size_mb;
        config.ephemeral_storage_mb = c.ephemeral_storage_mb;
        config
            .environment
            .extend(c.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        config
    }

    /// Runs one invocation on a hot sandbox of the snapshot's version, or a
    /// new one.
    pub async fn invoke(
        self: &Arc<Self>,
        snapshot: &Arc<FunctionSnapshot>,
        code_dir: &Path,
        request: InvokeRequest,
    ) -> Result<ContainerOutcome, ContainerError> {
        // A caller who goes away (its future dropped) leaves the invocation
        // to finish and its sandbox, slot and share to be returned, as
        // Lambda lets an invocation run on when its client disconnects.
        let (pool, snapshot, code_dir) = (self.clone(), snapshot.clone(), code_dir.to_path_buf());
        RunsToTheEnd::new(async move {
            // A function's share first, then its tenant's.
            let function = format!("{}/{}", snapshot.tenant, snapshot.name);
            pool.function_share
                .acquire(&function)
                .map_err(ContainerError::Shed)?;
            if let Err(shed) = pool.share.acquire(&snapshot.tenant) {
                pool.function_share.release(&function);
                return Err(ContainerError::Shed(shed));
            }
            let result = pool
                .invoke_holding_a_share(&snapshot, &code_dir, request)
                .await;
            pool.share.release(&snapshot.tenant);
            pool.function_share.release(&function);
            result
        })
        .await
    }

    async fn invoke_holding_a_share(
        self: &Arc<Self>,
        snapshot: &Arc<FunctionSnapshot>,
        code_dir: &Path,
        request: InvokeRequest,
    ) -> Result<ContainerOutcome, ContainerError> {
        let key = Self::key(snapshot);
        {
            let mut prewarm = self.prewarm.lock().unwrap_or_else(|p| p.into_inner());
            let entry = prewarm.entry(key.clone()).or_insert_with(|| Prewarm {
                forecast: Forecast::new(),
                snapshot: snapshot.clone(),
                code_dir: code_dir.to_path_buf(),
                target: 0,
                busy: 0,
                starting: 0,
            });
            entry.forecast.arrival(unix_seconds());
            entry.busy += 1;
        }
        let result = self
            .invoke_on_a_sandbox(&key, snapshot, code_dir, request)
            .await;
        if let Some(entry) = self
            .prewarm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&key)
        {
            entry.busy = entry.busy.saturating_sub(1);
            // The function's own running time: a start is not what the
            // forecast's instances will spend.
            if let Ok(done) = &result {
                entry.forecast.duration(done.outcome.duration.as_secs_f64());
            }
        }
        result
    }

    async fn invoke_on_a_sandbox(
        self: &Arc<Self>,
        key: &PoolKey,
        snapshot: &Arc<FunctionSnapshot>,
        code_dir: &Path,
        request: InvokeRequest,
    ) -> Result<ContainerOutcome, ContainerError> {
        let key = key.clone();
        let (mut sandbox, init_duration, tier, pinned) = match self.take_idle(&key) {
            Some((hot, pinned)) => (hot, None, Tier::Hot, pinned),
            None => {
                self.burst
                    .take(&key.0, &key.1, self.clock.elapsed())
                    .map_err(ContainerError::TooFast)?;
                let (started, tier) = self.start(snapshot, code_dir).await?;
                let init = started.init_duration();
                let t = started.start_timings();
                tracing::debug!(
                    sandbox = started.id(),
                    tier = tier.as_str(),
                    setup_us = started.setup_duration().as_micros() as u64,
                    cgroups_us = t.cgroups.as_micros() as u64,
                    tmp_disk_us = t.tmp_disk.as_micros() as u64,
                    clone_to_ready_us = t.clone_to_ready.as_micros() as u64,
                    claim_to_exec_us = t.claim_to_exec.as_micros() as u64,
                    init_us = init.as_micros() as u64,
                    "sandbox started"
                );
                (started, Some(init), tier, false)
            }
        };
        let result = sandbox.invoke(request).await;
        let reusable = matches!(&result, Ok(o) if !o.sandbox_lost) && sandbox.is_alive();
        // A pinned sandbox stays pinned while its version is provisioned,
        // and no more of them than it asks for.
        let pinned = pinned && {
            let mut provisioned = self.provisioned.lock().unwrap_or_else(|p| p.into_inner());
            match provisioned.get_mut(&key) {
                Some(p) if p.allocated > p.requested => {
                    p.allocated -= 1;
                    false
                }
                Some(_) => true,
                None => false,
            }
        };
        if reusable {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.entry(key).or_default().push(Idle {
                sandbox,
                since: Instant::now(),
                pinned,
            });
        } else {
            self.release(sandbox.memory_mb());
            sandbox.shutdown().await;
            if pinned {
                // Provisioned concurrency replaces what it lost.
                if let Some(p) = self
                    .provisioned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&key)
                {
                    p.allocated = p.allocated.saturating_sub(1);
                }
                self.top_up(&key, snapshot, code_dir);
            }
        }
        match result {
            Ok(outcome) => Ok(ContainerOutcome {
                outcome,
                init_duration,
                tier,
            }),
            Err(e) => Err(ContainerError::Invoke(e.to_string())),
        }
    }

    /// Pre-warming: brings every forecast up to date, and starts (a few
    /// per tick) the sandboxes a version's target asks for beyond what is
    /// busy, idle or starting — in free room only, never evicting. Call it every few seconds. Needs a tokio
    /// runtime.
    pub fn prewarm_tick(self: &Arc<Self>) {
        let now = unix_seconds();
        let wanted: Vec<(PoolKey, Arc<FunctionSnapshot>, PathBuf, usize)> = {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut prewarm = self.prewarm.lock().unwrap_or_else(|p| p.into_inner());
            prewarm
                .iter_mut()
                .filter_map(|(key, p)| {
                    p.target = p.forecast.target(now);
                    let held = idle.get(key).map_or(0, Vec::len) + p.busy + p.starting;
                    let missing = p.target.saturating_sub(held).min(PREWARM_STARTS_PER_TICK);
                    p.starting += missing;
                    (missing > 0)
                        .then(|| (key.clone(), p.snapshot.clone(), p.code_dir.clone(), missing))
                })
                .collect()
        };
        for (key, snapshot, code_dir, missing) in wanted {
            for _ in 0..missing {
                let (pool, key, snapshot, code_dir) = (
                    self.clone(),
                    key.clone(),
                    snapshot.clone(),
                    code_dir.clone(),
                );
                tokio::spawn(async move {
                    let started = pool.start_with(&snapshot, &code_dir, false).await;
                    let still = {
                        let mut prewarm = pool.prewarm.lock().unwrap_or_else(|p| p.into_inner());
                        match prewarm.get_mut(&key) {
                            Some(p) => {
                                p.starting = p.starting.saturating_sub(1);
                                true
                            }
                            // The function was retired meanwhile.
                            None => false,
                        }
                    };
                    match started {
                        Ok((sandbox, _)) => {
                            pool.keep_or_shut(key, sandbox, still.then_some(false))
                                .await;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "a pre-warmed sandbox could not start")
                        }
                    }
                });
            }
        }
    }

    /// Shuts down idle sandboxes that are older than `max_idle`, or that
    /// belong to `(tenant, function)` when `retire` names it (the function
    /// changed or was deleted); pinned ones (provisioned) stay.
    pub async fn recycle(&self, max_idle: Duration, retire: Option<(&str, &str)>) {
        let now = Instant::now();
        let targets: HashMap<PoolKey, usize> = {
            let mut prewarm = self.prewarm.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, f)) = retire {
                prewarm.retain(|key, _| !(key.0 == t && key.1 == f));
            }
            prewarm
                .iter()
                .map(|(key, p)| (key.clone(), p.target.saturating_sub(p.busy)))
                .collect()
        };
        let doomed: Vec<Sandbox> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut doomed = Vec::new();
            idle.retain(|key, list| {
                let retired = retire.is_some_and(|(t, f)| key.0 == t && key.1 == f);
                // The forecast's target keeps the most recently used of
                // them, however long idle (pre-warming's hysteresis).
                let mut keep = targets.get(key).copied().unwrap_or(0);
                let mut kept = Vec::new();
                for entry in list.drain(..).rev() {
                    let expired = now.duration_since(entry.since) > max_idle;
                    let wanted = !entry.pinned && !retired && keep > 0;
                    if wanted {
                        keep -= 1;
                    }
                    if entry.pinned || !(retired || expired) || wanted {
                        kept.push(entry);
                    } else {
                        doomed.push(entry.sandbox);
                    }
                }
                kept.reverse();
                *list = kept;
                !list.is_empty()
            });
            doomed
        };
        for sandbox in doomed {
            self.release(sandbox.memory_mb());
            sandbox.shutdown().await;
        }
    }
}

impl Drop for ContainerPool {
    /// The last of this server on the host: the sandboxes it keeps are torn
    /// down (each by its own drop), then the sweep removes whatever else
    /// carries its tag — the cgroup groups above all — so a data directory
    /// that is never used again leaves nothing behind.
    fn drop(&mut self) {
        drop(std::mem::take(
            self.idle.get_mut().unwrap_or_else(|p| p.into_inner()),
        ));
        self.warm.clear();
        self.preloaded.clear();
        match nimbus_container::sweep(&self.host) {
            Ok(report) => tracing::debug!(?report, "removed this server's sandboxes"),
            Err(e) => tracing::warn!(error = %e, "could not remove all of this server's sandboxes"),
        }
    }
}

/// A future run in its caller's task that, if the caller goes away before
/// it is done, is finished on a task of its own. An invocation so runs to
/// its end without a hand-off between tasks in the common case, where a
/// task of its own from the start would cost two (one to start it, one to
/// wake the caller with its result).
struct RunsToTheEnd<T: Send + 'static>(Option<Pin<Box<dyn Future<Output = T> + Send>>>);

impl<T: Send + 'static> RunsToTheEnd<T> {
    fn new(work: impl Future<Output = T> + Send + 'static) -> RunsToTheEnd<T> {
        RunsToTheEnd(Some(Box::pin(work)))
    }
}

impl<T: Send + 'static> Future for RunsToTheEnd<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Polled again after its end: there is nothing more to give.
        let Some(work) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let done = std::task::ready!(work.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(done)
    }
}

impl<T: Send + 'static> Drop for RunsToTheEnd<T> {
    fn drop(&mut self) {
        // Outside a runtime (the server shutting down) there is nothing
        // left to finish it on; the sandbox then sees it abandoned.
        if let (Some(rest), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                rest.await;
            });
        }
    }
}

/// Sandboxes built ahead, by kind (a `/tmp` size, a python version): those
/// ready, and how many are being built, under one lock.
struct Shelves<K, T> {
    shelves: Mutex<HashMap<K, (Vec<T>, usize)>>,
}

impl<K, T> Default for Shelves<K, T> {
    fn default() -> Self {
        Shelves {
            shelves: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq, T> Shelves<K, T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Vec<T>, usize)>> {
        self.shelves.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops every ready one.
    fn clear(&mut self) {
        drop(std::mem::take(
            self.shelves.get_mut().unwrap_or_else(|p| p.into_inner()),
        ));
    }

    /// Books the builds `key` lacks of `target`, ready or being built;
    /// returns how many to build. Each must end in [`Shelves::finish`].
    fn book(&self, key: K, target: usize) -> usize {
        let mut shelves = self.lock();
        let (ready, building) = shelves.entry(key).or_default();
        let missing = target.saturating_sub(ready.len() + *building);
        *building += missing;
        missing
    }

    /// Ends a booked build: shelves what was built if `wanted` (asked under
    /// the lock) says so, else hands it back.
    fn finish(&self, key: K, built: Option<T>, wanted: impl FnOnce() -> bool) -> Option<T> {
        let mut shelves = self.lock();
        let (ready, building) = shelves.entry(key).or_default();
        *building = building.saturating_sub(1);
        match built {
            Some(item) if wanted() => {
                ready.push(item);
                None
            }
            other => other,
        }
    }

    /// The newest ready one of `key` that is `usable`, and those found
    /// unusable on the way (taken off too).
    fn take_where(&self, key: K, usable: impl Fn(&T) -> bool) -> (Option<T>, Vec<T>) {
        let mut shelves = self.lock();
        let mut unusable = Vec::new();
        let Some((ready, _)) = shelves.get_mut(&key) else {
            return (None, unusable);
        };
        while let Some(candidate) = ready.pop() {
            if usable(&candidate) {
                return (Some(candidate), unusable);
            }
            unusable.push(candidate);
        }
        (None, unusable)
    }

    /// Every ready one of `key`.
    fn take_all(&self, key: K) -> Vec<T> {
        self.lock()
            .get_mut(&key)
            .map(|(ready, _)| std::mem::take(ready))
            .unwrap_or_default()
    }

    /// How many are ready, of every kind.
    fn ready(&self) -> usize {
        self.lock().values().map(|(ready, _)| ready.len()).sum()
    }
}

/// Whether an environment variable takes effect only when the interpreter
/// or the dynamic loader starts (so a runtime started ahead would miss it).
fn read_at_interpreter_start(name: &str) -> bool {
    name.starts_with("PYTHON")
        || name.starts_with("LD_")
        || name.starts_with("LC_")
        || name == "LANG"
}

/// Six hex digits from the clock: distinct across restarts of one server.
fn boot_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:06x}", (nanos as u64) & 0xff_ffff)
}

/// Writes `name` under `dir` (made if missing) through a rename, so a
/// sandbox never sees it half-written; both readable by the sandbox's
/// unprivileged user.
fn write_world_readable(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let staging = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&staging, contents)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&staging, dir.join(name))
}

/// Seconds since the epoch: the forecasts' clock.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

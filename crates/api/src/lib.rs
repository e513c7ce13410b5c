//! The front door: the AWS Lambda REST API over HTTP.
//!
//! A request passes [`auth`] (body size limits, then SigV4), is routed by
//! [`routes`] to one handler in [`ops`] per operation family, and is
//! answered in AWS's wire format ([`shapes`], [`error`]). Handlers change
//! state only through the control plane's store, then install the new
//! snapshot on the worker, which invocations run from.
#![deny(missing_docs)]

pub mod auth;
mod dispatch;
pub mod error;
mod ops;
pub mod routes;
pub mod shapes;

use nimbus_control::{
    AliasRecord, ArtifactStore, FunctionConfig, FunctionRecord, FunctionStore, SqliteStore,
    VersionRecord,
};
use nimbus_control::{ProvisionedRecord, Runtime};
pub use nimbus_scheduler::ConcurrencyLimits;
use nimbus_scheduler::{Concurrency, Placement};
pub use nimbus_worker::container::Capacity;
use nimbus_worker::container::ContainerPool;
use nimbus_worker::logs::LogBook;
use nimbus_worker::snapshot::{AliasRoute, LATEST};
use nimbus_worker::{Code, FunctionSnapshot, Snapshots, WasmRuntime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use auth::Credentials;
pub use dispatch::AsyncConfig;
pub use error::ApiError;
use nimbus_journal::{Journal, JournalConfig, Recovery};

/// Why the platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("create data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    /// The store did not open.
    #[error("open store: {0}")]
    Store(#[from] nimbus_control::StoreError),
    /// The artifact directory did not open.
    #[error("open artifacts: {0}")]
    Artifacts(#[from] nimbus_control::artifacts::ArtifactError),
    /// The wasm engine did not start.
    #[error("start wasm engine: {0}")]
    Engine(#[from] nimbus_worker::wasm::EngineError),
    /// Another server holds the data directory.
    #[error("data directory {0} is in use by another nimbus (lock {1})")]
    Locked(PathBuf, String),
    /// The async journal did not open, or is damaged.
    #[error("{0}")]
    Journal(#[from] nimbus_journal::JournalError),
    /// The log directory did not open.
    #[error("open logs {0}: {1}")]
    Logs(PathBuf, std::io::Error),
    /// The queues' store did not open.
    #[error("open queues: {0}")]
    Queues(#[from] nimbus_queues::QueueError),
}

/// What `nimbus up` configures.
pub struct PlatformConfig {
    /// Where everything durable lives.
    pub data_dir: PathBuf,
    /// The region in ARNs and the one clients sign for.
    pub region: String,
    /// The first tenant's keys.
    pub root: Credentials,
    /// How many sandboxes this host keeps.
    pub capacity: Capacity,
    /// Every tenant's concurrency limits.
    pub concurrency: ConcurrencyLimits,
    /// The async path's bounds and retry timing.
    pub asynchronous: AsyncConfig,
    /// Tenants weighted in fair sharing, (account id, weight); every other
    /// tenant weighs 1.
    pub tenant_weights: Vec<(String, u32)>,
}

/// Everything a request handler reaches.
pub struct Platform {
    store: Arc<dyn FunctionStore>,
    artifacts: ArtifactStore,
    wasm: WasmRuntime,
    snapshots: Snapshots,
    logs: LogBook,
    keys: auth::Keys,
    region: String,
    /// Admission by concurrency: account limits and reservations.
    concurrency: Concurrency,
    /// The async path's durable invocation log.
    journal: Arc<Journal>,
    /// How async invocations are retried and bounded.
    asynchronous: AsyncConfig,
    /// Every function's event-invoke configurations (retries, event age,
    /// destinations), as stored.
    event_configs: ops::event_invoke::EventConfigs,
    /// Which worker runs an invocation (one, this process's, today).
    placement: Placement,
    /// The container executor, or why this host cannot run containers
    /// (process runtimes are then refused at deploy with that reason).
    containers: Result<Arc<ContainerPool>, String>,
    /// Where unpacked `provided.*` packages live, one directory per SHA-256.
    code_dir: PathBuf,
    /// The built-in queues (SQS API), in `async.db` beside the async path's
    /// journal, so it can enqueue in its own transactions.
    queues: Arc<nimbus_queues::Queues>,
    /// An exclusive lock on the data directory, held while the platform
    /// runs: two servers must never share one (nor sweep each other's
    /// sandboxes).
    _lock: std::fs::File,
}

impl Platform {
    /// Opens the data directory and loads every stored function.
    pub fn open(config: PlatformConfig) -> Result<Arc<Platform>, OpenError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| OpenError::DataDir(dir.clone(), e))?;
        let lock = lock_data_dir(dir)?;
        let containers = open_containers(dir, &config.region, config.capacity);
        if let Ok(pool) = &containers {
            for (tenant, weight) in &config.tenant_weights {
                pool.set_tenant_weight(tenant, *weight);
            }
        }
        if let Err(why) = &containers {
            tracing::warn!(reason = %why, "process runtimes (provided.*, python3.x) are unavailable on this host");
        }
        let store = SqliteStore::open(&dir.join("store.db"))?;
        let event_configs = ops::event_invoke::EventConfigs::load(&store)?;
        let (journal, recovery) = Journal::open(
            &dir.join("async.db"),
            JournalConfig {
                backlog_per_tenant: config.asynchronous.backlog_per_tenant,
                repair: config.asynchronous.repair,
                ..JournalConfig::default()
            },
            dispatch::now_ms(),
        )?;
        if recovery != Recovery::default() {
            tracing::info!(
                unfinished = recovery.unfinished,
                interrupted = recovery.interrupted,
                quarantined = recovery.quarantined,
                "async journal recovered"
            );
        }
        let platform = Platform {
            store: Arc::new(store),
            event_configs,
            journal: Arc::new(journal),
            asynchronous: config.asynchronous,
            artifacts: ArtifactStore::open(&dir.join("artifacts"))?,
            wasm: WasmRuntime::new(&dir.join("compiled"))?,
            snapshots: Snapshots::default(),
            logs: LogBook::open(&dir.join("logs"))
                .map_err(|e| OpenError::Logs(dir.join("logs"), e))?,
            keys: auth::Keys::new(config.root),
            region: config.region,
            concurrency: Concurrency::new(config.concurrency),
            placement: Placement::new(PLACEMENT_SHARDS, 1, boot_seed()),
            containers,
            code_dir: dir.join("code"),
            queues: open_queues(dir)?,
            _lock: lock,
        };
        platform.load_snapshots()?;
        let platform = Arc::new(platform);
        dispatch::start(&platform);
        Ok(platform)
    }

    /// Prepares every stored function version and loads every alias route,
    /// so the first invocation finds them hot. A version whose code cannot be
    /// prepared is reported and left to be retried (and reported to the
    /// caller) at its first invocation.
    fn load_snapshots(&self) -> Result<(), OpenError> {
        for (tenant, name, reserved) in self.store.all_reserved_concurrency()? {
            self.concurrency.restore(&tenant, &name, reserved);
        }
        // After the versions and aliases below are installed.
        let provisioned = self.store.all_provisioned()?;
        for (tenant, record) in self.store.all()? {
            if let Err(e) = self.install(&tenant, record.clone()) {
                tracing::error!(function = %record.config.name, error = %e.message, "cannot prepare stored function");
            }
        }
        for (tenant, name, version) in self.store.all_versions()? {
            if let Err(e) = self.install_version(&tenant, &version) {
                tracing::error!(function = %name, version = version.version, error = %e.message, "cannot prepare stored version");
            }
        }
        for (tenant, name, alias) in self.store.all_aliases()? {
            self.install_alias(&tenant, &name, &alias);
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            let functions: std::collections::BTreeSet<(&str, &str)> = provisioned
                .iter()
                .map(|(tenant, c)| (tenant.as_str(), c.function.as_str()))
                .collect();
            for (tenant, function) in functions {
                let own: Vec<ProvisionedRecord> = provisioned
                    .iter()
                    .filter(|(t, c)| t == tenant && c.function == function)
                    .map(|(_, c)| c.clone())
                    .collect();
                self.apply_provisioned(tenant, function, &own);
            }
        }
        Ok(())
    }

    /// Makes a package runnable for its runtime: compiled wasm, or for a
    /// process runtime the package unpacked (once per SHA-256) where the
    /// sandbox mounts it. Blocking. `package` is read from the artifacts
    /// when not given.
    fn code_for(
        &self,
        runtime: Runtime,
        code_sha256_hex: &str,
        package: Option<&[u8]>,
        handler: Option<&str>,
    ) -> Result<Code, ApiError> {
        let read;
        let package = match package {
            Some(p) => p,
            None => {
                read = self
                    .artifacts
                    .get(code_sha256_hex)
                    .map_err(ApiError::internal)?;
                &read
            }
        };
        if !runtime.is_process() {
            let wasm = nimbus_control::package::wasm_code(package, handler)?;
            return Ok(Code::Wasm(self.wasm.prepare(&wasm)?));
        }
        if let Err(why) = &self.containers {
            return Err(ApiError::invalid_parameter(format!(
                "Runtime {} runs in the container sandbox, which this host cannot provide: {why}",
                runtime.as_str()
            )));
        }
        nimbus_worker::container::check_runtime(runtime).map_err(ApiError::invalid_parameter)?;
        let target = self.code_dir.join(code_sha256_hex);
        // The same package may have been unpacked for a runtime that needs
        // no bootstrap: the check is the runtime's, not the unpacking's.
        if target.exists() && runtime.needs_bootstrap() && !target.join("bootstrap").is_file() {
            return Err(nimbus_control::package::PackageError::NoBootstrap.into());
        }
        if !target.exists() {
            let staging = self.code_dir.join(format!(
                ".{code_sha256_hex}.{}",
                uuid::Uuid::new_v4().simple()
            ));
            let unpacked = nimbus_control::package::unpack_to(
                package,
                runtime.as_str(),
                runtime.needs_bootstrap(),
                &staging,
            );
            if let Err(e) = unpacked {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e.into());
            }
            if let Err(e) = std::fs::rename(&staging, &target) {
                let _ = std::fs::remove_dir_all(&staging);
                // Another deploy of the same package may have won the rename.
                if !target.exists() {
                    return Err(ApiError::internal(format!(
                        "unpack into {}: {e}",
                        target.display()
                    )));
                }
            }
        }
        Ok(Code::Process(target))
    }

    /// Builds the `$LATEST` snapshot of `record` (reading and preparing its
    /// code) and installs it on the worker. Blocking: call off the async threads.
    fn install(
        &self,
        tenant: &str,
        record: FunctionRecord,
    ) -> Result<Arc<FunctionSnapshot>, ApiError> {
        let code = self.code_for(
            record.config.runtime,
            &record.code_sha256_hex,
            None,
            record.config.handler.as_deref(),
        )?;
        self.retire_sandboxes(tenant, &record.config.name);
        Ok(self.snapshots.install(FunctionSnapshot {
            tenant: tenant.to_string(),
            name: record.config.name.clone(),
            version: LATEST.to_string(),
            revision: record.revision,
            environment: self.environment(&record.config, LATEST),
            config: record.config,
            code_sha256_hex: record.code_sha256_hex,
            code,
        }))
    }

    /// Installs the snapshot of a published version. Blocking.
    fn install_version(
        &self,
        tenant: &str,
        version: &VersionRecord,
    ) -> Result<Arc<FunctionSnapshot>, ApiError> {
        let code = self.code_for(
            version.config.runtime,
            &version.code_sha256_hex,
            None,
            version.config.handler.as_deref(),
        )?;
        Ok(self.snapshots.install(FunctionSnapshot {
            tenant: tenant.to_string(),
            name: version.config.name.clone(),
            version: version.version.to_string(),
            revision: 0,
            environment: self.environment(&version.config, &version.version.to_string()),
            config: version.config.clone(),
            code_sha256_hex: version.code_sha256_hex.clone(),
            code,
        }))
    }

    /// The function's variables plus the ones Lambda reserves (the
    /// reserved names cannot be set by a user: validation refuses them).
    fn environment(&self, c: &FunctionConfig, version: &str) -> Arc<[(String, String)]> {
        let reserved = [
            ("AWS_LAMBDA_FUNCTION_NAME", c.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", version.to_string()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                c.memory_size_mb.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", c.name),
            ),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_EXECUTION_ENV", "nimbus_wasm".to_string()),
            ("_HANDLER", c.handler.clone().unwrap_or_default()),
            ("TZ", ":UTC".to_string()),
        ];
        let own: Vec<(String, String)> = c
            .environment
            .iter()
            .filter(|(k, _)| !reserved.iter().any(|(r, _)| r == k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        own.into_iter()
            .chain(reserved.into_iter().map(|(k, v)| (k.to_string(), v)))
            .collect()
    }

    /// Installs an alias' route on the worker.
    fn install_alias(&self, tenant: &str, function: &str, alias: &AliasRecord) {
        let route = AliasRoute {
            revision: alias.revision,
            primary: alias.function_version.clone(),
            additional: alias.additional_version.clone(),
        };
        self.snapshots
            .install_alias(tenant, function, &alias.name, route);
    }

    /// Shuts down the idle sandboxes of a function whose `$LATEST` changed
    /// or that was deleted; they could never serve again.
    pub(crate) fn retire_sandboxes(&self, tenant: &str, function: &str) {
        let (Ok(pool), Ok(runtime)) = (&self.containers, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (pool, tenant, function) = (pool.clone(), tenant.to_string(), function.to_string());
        runtime.spawn(async move {
            pool.recycle(pool.idle_recycle(), Some((&tenant, &function)))
                .await;
        });
    }

    /// The region this platform speaks for.
    pub fn region(&self) -> &str {
        &self.region
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    platform: Arc<Platform>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, routes::router(platform))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The data directory's store file, for tools that inspect it.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("store.db")
}

/// Takes the data directory's exclusive lock, or fails if a live server has it.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, OpenError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| OpenError::DataDir(path.clone(), e))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if taken != 0 {
        return Err(OpenError::Locked(
            dir.to_path_buf(),
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(file)
}

/// The container executor for this data directory: its sandboxes are tagged
/// with a hash of the directory's path, and what a killed predecessor on the
/// same directory left is swept (never another server's). Also starts the
/// idle-recycling task.
fn open_containers(
    dir: &Path,
    region: &str,
    capacity: Capacity,
) -> Result<Arc<ContainerPool>, String> {
    use sha2::{Digest, Sha256};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the server does not run as root, which building namespaces, cgroups and /tmp disks needs".into());
    }
    let canonical = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    let tag = hex::encode(&Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..6]);
    let pool = Arc::new(ContainerPool::open(
        &dir.join("sandboxes"),
        &dir.join("runtimes"),
        &tag,
        region,
        capacity,
    )?);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let _entered = runtime.enter();
        pool.refill();
        let weak = Arc::downgrade(&pool);
        runtime.spawn(async move {
            // A tenth of the idle time, so a sandbox goes at most 10% late.
            let period = (capacity.idle_recycle / 10).max(Duration::from_millis(100));
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.recycle(pool.idle_recycle(), None).await;
            }
        });
        if !capacity.prewarm_every.is_zero() {
            let weak = Arc::downgrade(&pool);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(capacity.prewarm_every);
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { return };
                    pool.prewarm_tick();
                }
            });
        }
    }
    Ok(pool)
}

/// Shards of the placement state (functions are spread over them by hash).
const PLACEMENT_SHARDS: u32 = 64;

/// A seed for the placement's choices, different on every start.
fn boot_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How often expired queue messages are swept (receives also drop their
/// queue's expired messages before they look, so this only bounds how long
/// an unread queue holds them).
const QUEUE_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The built-in queues in `async.db`, and their retention sweep.
fn open_queues(dir: &Path) -> Result<Arc<nimbus_queues::Queues>, OpenError> {
    let queues = Arc::new(nimbus_queues::Queues::open(&dir.join("async.db"))?);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&queues);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(QUEUE_SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(queues) = weak.upgrade() else { return };
                match queues.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(messages = n, "expired queue messages swept"),
                    Err(e) => tracing::warn!(error = %e, "queue retention sweep failed"),
                }
            }
        });
    }
    Ok(queues)
}

//! The front door: the AWS Lambda REST API over HTTP.
//!
//! A request passes [`auth`] (body size limits, then SigV4), is routed by
//! [`routes`] to one handler in [`ops`] per operation family, and is
//! answered in AWS's wire format ([`shapes`], [`error`]). Handlers change
//! state only through the control plane's store, then install the new
//! snapshot on the worker, which invocations run from.
#![deny(missing_docs)]

pub mod auth;
pub mod error;
mod ops;
pub mod routes;
pub mod shapes;

use nimbus_control::{ArtifactStore, FunctionRecord, FunctionStore, SqliteStore};
use nimbus_worker::logs::LogBook;
use nimbus_worker::{FunctionSnapshot, Snapshots, WasmRuntime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use auth::Credentials;
pub use error::ApiError;

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
    /// The log directory did not open.
    #[error("open logs {0}: {1}")]
    Logs(PathBuf, std::io::Error),
}

/// What `nimbus up` configures.
pub struct PlatformConfig {
    /// Where everything durable lives.
    pub data_dir: PathBuf,
    /// The region in ARNs and the one clients sign for.
    pub region: String,
    /// The first tenant's keys.
    pub root: Credentials,
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
}

impl Platform {
    /// Opens the data directory and loads every stored function.
    pub fn open(config: PlatformConfig) -> Result<Arc<Platform>, OpenError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| OpenError::DataDir(dir.clone(), e))?;
        let store = SqliteStore::open(&dir.join("store.db"))?;
        let platform = Platform {
            store: Arc::new(store),
            artifacts: ArtifactStore::open(&dir.join("artifacts"))?,
            wasm: WasmRuntime::new(&dir.join("compiled"))?,
            snapshots: Snapshots::default(),
            logs: LogBook::open(&dir.join("logs"))
                .map_err(|e| OpenError::Logs(dir.join("logs"), e))?,
            keys: auth::Keys::new(config.root),
            region: config.region,
        };
        platform.load_snapshots()?;
        Ok(Arc::new(platform))
    }

    /// Prepares every stored function so the first invocation finds it hot.
    /// A function whose code cannot be prepared is reported and left to be
    /// retried (and reported to the caller) at its first invocation.
    fn load_snapshots(&self) -> Result<(), OpenError> {
        for (tenant, record) in self.store.all()? {
            if let Err(e) = self.install(&tenant, record.clone()) {
                tracing::error!(function = %record.config.name, error = %e.message, "cannot prepare stored function");
            }
        }
        Ok(())
    }

    /// Builds the snapshot of `record` (reading and preparing its code) and
    /// installs it on the worker. Blocking: call off the async threads.
    fn install(
        &self,
        tenant: &str,
        record: FunctionRecord,
    ) -> Result<Arc<FunctionSnapshot>, ApiError> {
        let package = self
            .artifacts
            .get(&record.code_sha256_hex)
            .map_err(ApiError::internal)?;
        let wasm = nimbus_control::package::wasm_code(&package, record.config.handler.as_deref())?;
        let code = self.wasm.prepare(&wasm)?;
        self.snapshots.install(FunctionSnapshot {
            tenant: tenant.to_string(),
            record: record.clone(),
            code,
        });
        self.snapshots
            .get(tenant, &record.config.name)
            .ok_or_else(|| ApiError::internal("snapshot vanished while installing"))
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

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

use nimbus_control::{
    AliasRecord, ArtifactStore, FunctionConfig, FunctionRecord, FunctionStore, SqliteStore,
    VersionRecord,
};
use nimbus_worker::logs::LogBook;
use nimbus_worker::snapshot::{AliasRoute, LATEST};
use nimbus_worker::{FunctionSnapshot, Prepared, Snapshots, WasmRuntime};
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

    /// Prepares every stored function version and loads every alias route,
    /// so the first invocation finds them hot. A version whose code cannot be
    /// prepared is reported and left to be retried (and reported to the
    /// caller) at its first invocation.
    fn load_snapshots(&self) -> Result<(), OpenError> {
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
        Ok(())
    }

    fn prepare(
        &self,
        code_sha256_hex: &str,
        handler: Option<&str>,
    ) -> Result<Arc<Prepared>, ApiError> {
        let package = self
            .artifacts
            .get(code_sha256_hex)
            .map_err(ApiError::internal)?;
        let wasm = nimbus_control::package::wasm_code(&package, handler)?;
        Ok(self.wasm.prepare(&wasm)?)
    }

    /// Builds the `$LATEST` snapshot of `record` (reading and preparing its
    /// code) and installs it on the worker. Blocking: call off the async threads.
    fn install(
        &self,
        tenant: &str,
        record: FunctionRecord,
    ) -> Result<Arc<FunctionSnapshot>, ApiError> {
        let code = self.prepare(&record.code_sha256_hex, record.config.handler.as_deref())?;
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
        let code = self.prepare(&version.code_sha256_hex, version.config.handler.as_deref())?;
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

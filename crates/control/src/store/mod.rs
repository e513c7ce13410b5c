//! The durable store of function records.
//!
//! [`FunctionStore`] is the seam between the control plane and its storage
//! engine: the embedded [`SqliteStore`] serves one machine, and a PostgreSQL
//! backend can implement the same trait for a cluster. Every overwrite is a
//! compare-and-set on the record's revision, so two writers can never lose
//! each other's update silently.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::model::{AliasRecord, EventInvokeConfig, FunctionRecord, VersionRecord};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record with that name exists already.
    #[error("function {0} already exists")]
    Exists(String),
    /// The record is gone.
    #[error("function {0} does not exist")]
    NotFound(String),
    /// The record changed since the caller read it.
    #[error("function {name} is at another revision than {expected}")]
    StaleRevision {
        /// The function's name.
        name: String,
        /// The revision the caller expected.
        expected: u64,
    },
    /// The version does not exist.
    #[error("version {version} of function {name} does not exist")]
    VersionNotFound {
        /// The function's name.
        name: String,
        /// The version asked for.
        version: String,
    },
    /// A version cannot be deleted while an alias routes to it.
    #[error("version {version} of function {name} is in use by alias {alias}")]
    VersionInUse {
        /// The function's name.
        name: String,
        /// The version.
        version: u64,
        /// An alias that routes to it.
        alias: String,
    },
    /// An alias with that name exists already.
    #[error("alias {0} already exists")]
    AliasExists(String),
    /// The alias does not exist.
    #[error("alias {0} does not exist")]
    AliasNotFound(String),
    /// The alias changed since the caller read it.
    #[error("alias {0} is at another revision than expected")]
    StaleAlias(String),
    /// The storage engine failed.
    #[error("store engine: {0}")]
    Engine(String),
    /// A stored record does not decode.
    #[error("stored record of {name} is damaged: {reason}")]
    Damaged {
        /// The function's name.
        name: String,
        /// What did not decode.
        reason: String,
    },
}

/// Durable storage of function records, scoped by tenant (the account id).
pub trait FunctionStore: Send + Sync {
    /// Inserts a new record; fails with [`StoreError::Exists`] if the name is taken.
    fn create(&self, tenant: &str, record: &FunctionRecord) -> Result<(), StoreError>;

    /// Reads one record.
    fn get(&self, tenant: &str, name: &str) -> Result<Option<FunctionRecord>, StoreError>;

    /// Lists up to `limit` records in name order, starting after `after`.
    fn list(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FunctionRecord>, StoreError>;

    /// Lists every record of every tenant, for loading snapshots at start-up.
    fn all(&self) -> Result<Vec<(String, FunctionRecord)>, StoreError>;

    /// Replaces a record if its stored revision is still `expected_revision`.
    fn update(
        &self,
        tenant: &str,
        record: &FunctionRecord,
        expected_revision: u64,
    ) -> Result<(), StoreError>;

    /// Removes a record with its versions and aliases; fails with
    /// [`StoreError::NotFound`] if absent.
    fn delete(&self, tenant: &str, name: &str) -> Result<(), StoreError>;

    /// Commits a new version and the function record that counts it, both or
    /// neither, if the function is still at `expected_revision`.
    fn publish_version(
        &self,
        tenant: &str,
        function: &FunctionRecord,
        expected_revision: u64,
        version: &VersionRecord,
    ) -> Result<(), StoreError>;

    /// Reads one version.
    fn get_version(
        &self,
        tenant: &str,
        name: &str,
        version: u64,
    ) -> Result<Option<VersionRecord>, StoreError>;

    /// Lists up to `limit` versions in ascending order, after `after`.
    fn list_versions(
        &self,
        tenant: &str,
        name: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, StoreError>;

    /// Every version of every function, for loading snapshots at start-up.
    fn all_versions(&self) -> Result<Vec<(String, String, VersionRecord)>, StoreError>;

    /// Removes a version unless an alias routes to it.
    fn delete_version(&self, tenant: &str, name: &str, version: u64) -> Result<(), StoreError>;

    /// Creates an alias; every version it routes to must exist.
    fn create_alias(
        &self,
        tenant: &str,
        function: &str,
        alias: &AliasRecord,
    ) -> Result<(), StoreError>;

    /// Reads one alias.
    fn get_alias(
        &self,
        tenant: &str,
        function: &str,
        alias: &str,
    ) -> Result<Option<AliasRecord>, StoreError>;

    /// Lists up to `limit` aliases in name order, after `after`.
    fn list_aliases(
        &self,
        tenant: &str,
        function: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AliasRecord>, StoreError>;

    /// Replaces an alias if it is still at `expected_revision`; every
    /// version it routes to must exist.
    fn update_alias(
        &self,
        tenant: &str,
        function: &str,
        alias: &AliasRecord,
        expected_revision: u64,
    ) -> Result<(), StoreError>;

    /// Every alias of every function, for loading routes at start-up.
    fn all_aliases(&self) -> Result<Vec<(String, String, AliasRecord)>, StoreError>;

    /// Removes an alias; fails with [`StoreError::AliasNotFound`] if absent.
    fn delete_alias(&self, tenant: &str, function: &str, alias: &str) -> Result<(), StoreError>;

    /// Sets (`Some`) or removes (`None`) a function's reserved concurrency;
    /// fails with [`StoreError::NotFound`] if the function is absent. It is
    /// the function's, not a version's, and changes no revision (hot
    /// instances stay). Deleting the function deletes it.
    fn set_reserved_concurrency(
        &self,
        tenant: &str,
        name: &str,
        reserved: Option<u32>,
    ) -> Result<(), StoreError>;

    /// Every reservation, as (tenant, function, reserved concurrency), for
    /// loading them at start-up.
    fn all_reserved_concurrency(&self) -> Result<Vec<(String, String, u32)>, StoreError>;

    /// Sets the provisioned concurrency of a version or alias of a function;
    /// fails with [`StoreError::NotFound`] if the function is absent.
    /// Deleting the function deletes it.
    fn put_provisioned(&self, tenant: &str, config: &ProvisionedRecord) -> Result<(), StoreError>;

    /// Removes a provisioned-concurrency configuration; `false` if there was none.
    fn delete_provisioned(
        &self,
        tenant: &str,
        function: &str,
        qualifier: &str,
    ) -> Result<bool, StoreError>;

    /// Every provisioned-concurrency configuration, as (tenant, record), by
    /// function and qualifier.
    fn all_provisioned(&self) -> Result<Vec<(String, ProvisionedRecord)>, StoreError>;

    /// One function's provisioned-concurrency configurations, by qualifier.
    fn provisioned_of(
        &self,
        tenant: &str,
        function: &str,
    ) -> Result<Vec<ProvisionedRecord>, StoreError>;

    /// Sets the event-invoke configuration of a function, version or alias
    /// (replacing any); fails with [`StoreError::NotFound`] if the function
    /// is absent. Deleting the function deletes it.
    fn put_event_invoke_config(
        &self,
        tenant: &str,
        config: &EventInvokeConfig,
    ) -> Result<(), StoreError>;

    /// Removes an event-invoke configuration; `false` if there was none.
    fn delete_event_invoke_config(
        &self,
        tenant: &str,
        function: &str,
        qualifier: &str,
    ) -> Result<bool, StoreError>;

    /// One function's event-invoke configurations, by qualifier.
    fn event_invoke_configs_of(
        &self,
        tenant: &str,
        function: &str,
    ) -> Result<Vec<EventInvokeConfig>, StoreError>;

    /// Every event-invoke configuration, as (tenant, record), for loading
    /// them at start-up.
    fn all_event_invoke_configs(&self) -> Result<Vec<(String, EventInvokeConfig)>, StoreError>;
}

/// A provisioned-concurrency configuration: instances of one version (or
/// alias) kept initialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionedRecord {
    /// The function's name.
    pub function: String,
    /// The version number or alias name.
    pub qualifier: String,
    /// `ProvisionedConcurrentExecutions`.
    pub requested: u32,
    /// When it was last set, as Lambda formats times.
    pub last_modified: String,
}

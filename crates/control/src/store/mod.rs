//! The durable store of function records.
//!
//! [`FunctionStore`] is the seam between the control plane and its storage
//! engine: the embedded [`SqliteStore`] serves one machine, and a PostgreSQL
//! backend can implement the same trait for a cluster. Every overwrite is a
//! compare-and-set on the record's revision, so two writers can never lose
//! each other's update silently.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::model::FunctionRecord;

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

    /// Removes a record; fails with [`StoreError::NotFound`] if absent.
    fn delete(&self, tenant: &str, name: &str) -> Result<(), StoreError>;
}

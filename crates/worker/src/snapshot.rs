//! The worker's local, versioned view of function configuration.
//!
//! The control plane's store is the truth; a snapshot is a cache of one
//! record at one revision, with its code prepared. Installing never moves a
//! function backwards: a snapshot older than the one held is ignored, so
//! updates that race on their way here cannot reorder.

use crate::wasm::Prepared;
use nimbus_control::FunctionRecord;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One function at one revision, ready to run.
pub struct FunctionSnapshot {
    /// The owning tenant (account id).
    pub tenant: String,
    /// The record this snapshot was taken from.
    pub record: FunctionRecord,
    /// The function's code, compiled and linked.
    pub code: Arc<Prepared>,
}

/// Every function this worker can run, keyed by tenant and name.
#[derive(Default)]
pub struct Snapshots {
    /// Read on every invocation, written on every deploy: a read-mostly lock.
    functions: RwLock<HashMap<(String, String), Arc<FunctionSnapshot>>>,
}

impl Snapshots {
    /// Installs `snapshot` unless a newer revision is already held.
    /// Returns whether it was installed.
    pub fn install(&self, snapshot: FunctionSnapshot) -> bool {
        let key = (snapshot.tenant.clone(), snapshot.record.config.name.clone());
        let mut functions = self.functions.write().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = functions.get(&key)
            && held.record.revision >= snapshot.record.revision
        {
            return false;
        }
        functions.insert(key, Arc::new(snapshot));
        true
    }

    /// Forgets a function.
    pub fn remove(&self, tenant: &str, name: &str) {
        let mut functions = self.functions.write().unwrap_or_else(|p| p.into_inner());
        functions.remove(&(tenant.to_string(), name.to_string()));
    }

    /// The snapshot held for a function.
    pub fn get(&self, tenant: &str, name: &str) -> Option<Arc<FunctionSnapshot>> {
        let functions = self.functions.read().unwrap_or_else(|p| p.into_inner());
        functions
            .get(&(tenant.to_string(), name.to_string()))
            .cloned()
    }
}

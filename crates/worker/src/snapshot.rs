//! The worker's local, versioned view of function configuration.
//!
//! The control plane's store is the truth; a snapshot is a cache of one
//! function version — `$LATEST` at some revision, or an immutable published
//! version — with its code prepared. An invocation names the exact version
//! it was routed to and runs from that version's snapshot, so it can never
//! run another version's code or configuration.
//!
//! Installing never moves a snapshot backwards: one older than the revision
//! held is ignored, so updates that race on their way here cannot reorder.
//! Alias routes are held the same way, ordered by the alias' revision.

use crate::wasm::Prepared;

use nimbus_control::FunctionConfig;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The version name of the mutable head of a function.
pub const LATEST: &str = "$LATEST";

/// One function version, ready to run.
pub struct FunctionSnapshot {
    /// The owning tenant (account id).
    pub tenant: String,
    /// The function's name.
    pub name: String,
    /// `$LATEST` or a version number.
    pub version: String,
    /// The record's revision (published versions never change: 0).
    pub revision: u64,
    /// The configuration this version runs with.
    pub config: FunctionConfig,
    /// Hex SHA-256 of the package the code came from.
    pub code_sha256_hex: String,
    /// The environment an invocation of this version sees.
    pub environment: Arc<[(String, String)]>,
    /// The function's code, ready for its sandbox.
    pub code: Code,
}

/// Code ready to run, by sandbox kind.
#[derive(Clone)]
pub enum Code {
    /// A WebAssembly module or component, compiled and linked.
    Wasm(Arc<Prepared>),
    /// An unpacked package for a container sandbox (mounted at `/var/task`).
    Process(std::path::PathBuf),
}

/// Where an alias sends invocations.
#[derive(Clone, Debug, PartialEq)]
pub struct AliasRoute {
    /// The alias' revision.
    pub revision: u64,
    /// The version that gets the rest of the traffic.
    pub primary: String,
    /// A second version and its share (0.0–1.0) of invocations.
    pub additional: Option<(String, f64)>,
}

impl AliasRoute {
    /// The version an invocation goes to, given a uniform draw in [0, 1).
    pub fn pick(&self, draw: f64) -> &str {
        match &self.additional {
            Some((version, weight)) if draw < *weight => version,
            _ => &self.primary,
        }
    }
}

type Key = (String, String, String);

fn key(tenant: &str, name: &str, qualifier: &str) -> Key {
    (tenant.to_string(), name.to_string(), qualifier.to_string())
}

/// Every function version and alias this worker can run.
#[derive(Default)]
pub struct Snapshots {
    /// Read on every invocation, written on every deploy: read-mostly locks.
    versions: RwLock<HashMap<Key, Arc<FunctionSnapshot>>>,
    aliases: RwLock<HashMap<Key, Arc<AliasRoute>>>,
}

impl Snapshots {
    /// Installs `snapshot` unless a newer revision of that version is held.
    /// Returns the snapshot held afterwards.
    pub fn install(&self, snapshot: FunctionSnapshot) -> Arc<FunctionSnapshot> {
        let k = key(&snapshot.tenant, &snapshot.name, &snapshot.version);
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = versions.get(&k)
            && held.revision >= snapshot.revision
            && snapshot.version == LATEST
        {
            return held.clone();
        }
        let snapshot = Arc::new(snapshot);
        versions.insert(k, snapshot.clone());
        snapshot
    }

    /// The snapshot of one version.
    pub fn get(&self, tenant: &str, name: &str, version: &str) -> Option<Arc<FunctionSnapshot>> {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        versions.get(&key(tenant, name, version)).cloned()
    }

    /// Forgets one version.
    pub fn remove_version(&self, tenant: &str, name: &str, version: &str) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        versions.remove(&key(tenant, name, version));
    }

    /// Forgets a function: every version and alias of it.
    pub fn remove_function(&self, tenant: &str, name: &str) {
        let matches = |k: &Key| k.0 == tenant && k.1 == name;
        self.versions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !matches(k));
        self.aliases
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !matches(k));
    }

    /// Installs an alias' route unless a newer revision is held.
    pub fn install_alias(&self, tenant: &str, name: &str, alias: &str, route: AliasRoute) -> bool {
        let mut aliases = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        let k = key(tenant, name, alias);
        if aliases
            .get(&k)
            .is_some_and(|held| held.revision >= route.revision)
        {
            return false;
        }
        aliases.insert(k, Arc::new(route));
        true
    }

    /// The route of an alias.
    pub fn alias(&self, tenant: &str, name: &str, alias: &str) -> Option<Arc<AliasRoute>> {
        let aliases = self.aliases.read().unwrap_or_else(|p| p.into_inner());
        aliases.get(&key(tenant, name, alias)).cloned()
    }

    /// Forgets an alias.
    pub fn remove_alias(&self, tenant: &str, name: &str, alias: &str) {
        let mut aliases = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        aliases.remove(&key(tenant, name, alias));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_routes_split_by_weight_and_never_go_back() {
        let route = AliasRoute {
            revision: 2,
            primary: "3".into(),
            additional: Some(("4".into(), 0.1)),
        };
        assert_eq!(route.pick(0.05), "4");
        assert_eq!(route.pick(0.1), "3");
        assert_eq!(route.pick(0.99), "3");
        let snapshots = Snapshots::default();
        assert!(snapshots.install_alias("t", "f", "live", route.clone()));
        let older = AliasRoute {
            revision: 1,
            primary: "1".into(),
            additional: None,
        };
        assert!(!snapshots.install_alias("t", "f", "live", older));
        assert_eq!(snapshots.alias("t", "f", "live").unwrap().primary, "3");
        snapshots.remove_function("t", "f");
        assert!(snapshots.alias("t", "f", "live").is_none());
    }
}

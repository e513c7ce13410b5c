//! The control plane: the source of truth for functions and their code.
//!
//! It owns the data model ([`model`]), its validation rules ([`validate`]),
//! the durable store behind the [`store::FunctionStore`] trait, and the
//! content-addressed [`artifacts`] that hold uploaded code packages. Nothing
//! here knows about HTTP or sandboxes: the front door turns requests into
//! calls on this crate, and workers read snapshots of what it holds.
#![deny(missing_docs)]

pub mod artifacts;
pub mod model;
pub mod package;
pub mod store;
pub mod validate;

pub use artifacts::ArtifactStore;
pub use model::{
    AliasRecord, EventInvokeConfig, FunctionConfig, FunctionRecord, Runtime, VersionRecord,
};
pub use store::{FunctionStore, ProvisionedRecord, SqliteStore, StoreError};

//! The worker: runs invocations in sandboxes, from snapshots of function
//! configuration.
//!
//! The front door (and later the scheduler) hands a worker an
//! [`Invocation`] naming the exact function revision it was routed to; the
//! worker runs it from its [`snapshot::Snapshots`] — a local, versioned view
//! of the control plane — in a fresh sandbox, and returns an [`Outcome`].
//! Sandboxes today are WebAssembly instances ([`wasm`]).
#![deny(missing_docs)]

pub mod invocation;
pub mod logs;
pub mod snapshot;
pub mod wasm;

pub use invocation::{FunctionError, Invocation, Outcome};
pub use snapshot::{FunctionSnapshot, Snapshots};
pub use wasm::{PrepareError, Prepared, WasmRuntime};

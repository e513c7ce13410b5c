//! The worker: runs invocations in sandboxes, from snapshots of function
//! configuration.
//!
//! The front door (and later the scheduler) hands a worker an
//! [`Invocation`] naming the exact function revision it was routed to; the
//! worker runs it from its [`snapshot::Snapshots`] — a local, versioned view
//! of the control plane — in a fresh sandbox, and returns an [`Outcome`].
//! Sandboxes are WebAssembly instances ([`wasm`]) or Linux containers
//! speaking the Lambda Runtime API ([`container`]).
#![deny(missing_docs)]

pub mod container;
pub mod invocation;
pub mod logs;
pub mod snapshot;
pub mod wasm;

pub use invocation::{FunctionError, Invocation, Outcome};
pub use snapshot::{Code, FunctionSnapshot, Snapshots};
pub use wasm::{PrepareError, Prepared, WasmRuntime};

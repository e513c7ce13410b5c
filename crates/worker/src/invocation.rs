//! What a worker is asked to run, and what it answers.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Largest response a synchronous invocation may return, in bytes (Lambda's 6 MB).
pub const RESPONSE_MAX_BYTES: usize = 6 * 1024 * 1024;
/// Most log bytes kept from one invocation; the rest is counted and dropped.
pub const LOG_BYTES_PER_INVOCATION_MAX: usize = 1024 * 1024;

/// One execution request for a sandbox.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Lambda's request id.
    pub request_id: String,
    /// The event, handed to the function on stdin.
    pub payload: Bytes,
    /// Environment variables: the function's own and Lambda's reserved ones
    /// (built once per snapshot and shared by its invocations).
    pub environment: Arc<[(String, String)]>,
    /// Bound on the guest's memory, in bytes.
    pub memory_limit_bytes: usize,
    /// Wall-clock bound on the invocation.
    pub timeout: Duration,
}

/// A failure of the function itself (not of the platform): Lambda reports
/// these with HTTP 200 and `X-Amz-Function-Error: Unhandled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// Lambda's `errorType`, e.g. `Sandbox.Timedout`.
    pub error_type: String,
    /// Lambda's `errorMessage`.
    pub message: String,
}

/// What happened to an invocation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The response payload, or the function's error.
    pub result: Result<Bytes, FunctionError>,
    /// What the function wrote to stderr (its log), at most
    /// [`LOG_BYTES_PER_INVOCATION_MAX`].
    pub log: Bytes,
    /// Wall-clock time from instantiation to completion.
    pub duration: Duration,
    /// Time to create the instance (the platform's share of a cold start).
    pub init_duration: Duration,
    /// Peak linear memory of the instance, in bytes.
    pub max_memory_bytes: usize,
}

//! Errors of the sandbox's lifecycle, each naming the step that failed.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup::CgroupError;
use crate::netns::ListenerError;
use crate::tmpdisk::TmpDiskError;

/// Why a sandbox did not start. The variants up to `Setup` are the
/// platform's failures; the last three are the function's own init failing,
/// which the caller reports as Lambda does (see [`StartError::function_error`]).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot describe a sandbox.
    #[error("invalid sandbox configuration: {0}")]
    InvalidConfig(String),
    /// The per-sandbox state directory could not be made.
    #[error("creating sandbox state {0}: {1}")]
    CreateStateDir(PathBuf, io::Error),
    /// A cgroup file or directory could not be opened for the child.
    #[error("opening cgroup {0} for the sandbox: {1}")]
    OpenCgroup(PathBuf, io::Error),
    /// A host path the root is built from could not be inspected.
    #[error("inspecting host path {0}: {1}")]
    InspectHost(PathBuf, io::Error),
    /// The cgroups could not be made or limited.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The `/tmp` disk could not be made.
    #[error(transparent)]
    TmpDisk(#[from] TmpDiskError),
    /// The seccomp filter did not compile.
    #[error("compiling the seccomp filter: {0}")]
    Seccomp(String),
    /// A pipe to the child could not be made or used.
    #[error("pipe to the sandbox: {0}")]
    Pipe(io::Error),
    /// The owner thread could not be spawned or died.
    #[error("sandbox owner thread: {0}")]
    OwnerThread(io::Error),
    /// `clone` failed.
    #[error("clone into new namespaces: {0}")]
    Clone(io::Error),
    /// The Runtime API could not listen inside the sandbox.
    #[error(transparent)]
    RuntimeApi(#[from] ListenerError),
    /// A step of the child's setup failed.
    #[error("sandbox setup failed to {step} ({path}): {source}", path = path.display())]
    Setup {
        /// The step.
        step: &'static str,
        /// The path it acted on, when it had one.
        path: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The function did not reach its first `/next` in time.
    #[error("init timed out after {0:?}")]
    InitTimedOut(Duration, String),
    /// The runtime reported an init error through `/runtime/init/error`.
    #[error("init error {error_type}: {error_message}")]
    InitError {
        /// Lambda's `errorType`.
        error_type: String,
        /// Lambda's `errorMessage`.
        error_message: String,
        /// What the function logged during init.
        log: String,
    },
    /// The function's process ended during init.
    #[error("Runtime exited with error: {status}")]
    RuntimeExited {
        /// Lambda's wording of the exit ("exit status 1", "signal: killed").
        status: String,
        /// What the function logged during init.
        log: String,
    },
}

impl StartError {
    /// For failures of the function's own init, Lambda's error:
    /// `(errorType, errorMessage, log)`; `None` for the platform's failures.
    pub fn function_error(&self) -> Option<(String, String, &str)> {
        match self {
            StartError::InitTimedOut(after, log) => Some((
                "Sandbox.Timedout".to_owned(),
                format!("Init timed out after {:.2} seconds", after.as_secs_f64()),
                log,
            )),
            StartError::InitError {
                error_type,
                error_message,
                log,
            } => Some((error_type.clone(), error_message.clone(), log)),
            StartError::RuntimeExited { status, log } => Some((
                "Runtime.ExitError".to_owned(),
                format!("Runtime exited with error: {status}"),
                log,
            )),
            _ => None,
        }
    }
}

/// Why an invocation could not be run at all (a function's failures are
/// not errors here but [`crate::InvokeResult::FunctionError`]).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The sandbox was killed earlier (timeout, OOM, crash) or shut down.
    #[error("the sandbox is gone: {0}")]
    SandboxGone(String),
}

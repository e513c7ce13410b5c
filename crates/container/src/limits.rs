//! Named limits of a sandbox, each with its unit and the reason for its value.

use std::time::Duration;

/// The port of the Runtime API inside the sandbox's network namespace: the
/// address Lambda gives its runtimes (`AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001`).
pub const RUNTIME_API_PORT: u16 = 9001;

/// Largest response or error body a runtime may post: Lambda's synchronous
/// payload limit (6 MB); a larger body gets 413 as on Lambda.
pub const RESPONSE_BYTES_MAX: usize = 6 * 1024 * 1024;

/// Largest `/init/error` body kept: it only carries an error message.
pub const INIT_ERROR_BYTES_MAX: usize = 64 * 1024;

/// How long a function may take from exec to its first `/next`: Lambda's
/// init phase is limited to 10 seconds.
pub const INIT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Processes and threads a sandbox may hold at once (Lambda's limit is 1,024):
/// a fork bomb stops here instead of exhausting the host's pid space.
pub const PIDS_MAX_DEFAULT: u32 = 1024;

/// Memory, in MB, that buys one full vCPU of CPU weight, as on Lambda.
pub const MEMORY_MB_PER_VCPU: u64 = 1769;

/// `cpu.shares` (cgroup v1) of one full CPU: the kernel's default weight.
pub const CPU_SHARES_PER_VCPU: u64 = 1024;

/// `cpu.weight` (cgroup v2) of one full CPU: the kernel's default weight.
pub const CPU_WEIGHT_PER_VCPU: u64 = 100;

/// Log bytes kept per invocation (the tail is kept): `LogType=Tail` needs
/// only 4 KB, this bounds what a chatty function can make the host hold.
pub const LOG_BYTES_MAX: usize = 1024 * 1024;

/// Connections the Runtime API serves at once for one sandbox: a runtime
/// needs one or two; more is a misbehaving function.
pub const RUNTIME_API_CONNECTIONS_MAX: usize = 16;

/// How long teardown waits for a killed sandbox's cgroups to empty before
/// it reports them as left behind.
pub const TEARDOWN_WAIT_MAX: Duration = Duration::from_secs(5);

/// Attempts to claim a free loop device when others race for the same one.
pub const LOOP_CLAIM_ATTEMPTS_MAX: u32 = 16;

/// The uid and gid the function sees inside its user namespace: Lambda runs
/// functions as `sbx_user1051`, uid 993.
pub const SANDBOX_INNER_ID: u32 = 993;

/// The unprivileged host uid and gid sandboxes run as unless configured.
pub const SANDBOX_HOST_ID_DEFAULT: u32 = 199_993;

/// Size of `/tmp` when the function does not set `EphemeralStorage` (Lambda: 512 MB).
pub const EPHEMERAL_STORAGE_MB_DEFAULT: u32 = 512;

/// Largest claim message (code path, runtime path, command, environment):
/// below a pipe's 64 KiB buffer, so the host's one write never blocks.
/// Lambda caps a function's environment at 4 KB.
pub const CLAIM_MESSAGE_MAX_BYTES: usize = 60 * 1024;

/// Most arguments of a sandbox's command.
pub const CLAIM_ARGS_MAX: usize = 64;

/// Most environment variables of a sandbox (Lambda's own and the function's).
pub const CLAIM_ENV_VARS_MAX: usize = 2_048;

//! Container sandboxes for process runtimes (`provided.*`, `python3.x`):
//! Linux namespaces, cgroups, seccomp, and the AWS Lambda Runtime API.
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nimbus_container::{HostConfig, InvokeRequest, Sandbox, SandboxConfig};
//! let host = HostConfig::new("/var/lib/nimbus/sandboxes", "a1b2c3");
//! nimbus_container::sweep(&host)?; // once, at start-up, under the data dir's lock
//! let mut sandbox = Sandbox::start(SandboxConfig::provided("fn-1-0", host, "/code/fn-1")).await?;
//! let outcome = sandbox
//!     .invoke(InvokeRequest {
//!         request_id: "8476a536-e9f4-11e8-9739-2dfe598c3fcd".into(),
//!         payload: "{}".into(),
//!         timeout: std::time::Duration::from_secs(3),
//!         invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
//!         trace_id: None,
//!         client_context: None,
//!         cognito_identity: None,
//!     })
//!     .await?;
//! if outcome.sandbox_lost { /* timeout, OOM or crash: start a new one */ }
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Code map
//!
//! - [`WarmSandbox`] (`sandbox.rs`): a sandbox built up to its function —
//!   everything but the code — and its claim by one function.
//! - [`Sandbox`] (`sandbox.rs`): the lifecycle — start (a warm sandbox
//!   claimed at once) until the first `/next`, invoke, kill on timeout /
//!   out of memory / crash, teardown.
//! - `launch.rs`: the host side of a start, on the sandbox's *owner* thread:
//!   cgroups, `/tmp` disk, the plan, `clone`, the Runtime API's listener.
//! - `child.rs`: the child's setup between `clone` and `execve`, one linear
//!   routine with the reason for every step's place.
//! - `root.rs`: what the sandbox's root holds and the mount steps building it;
//!   `clone.rs`: `clone` / `clone3(CLONE_INTO_CGROUP)` and reaping.
//! - `runtime_api.rs`: the Runtime API of one sandbox, driven by the
//!   invocation itself where it can; `runtime_api/wire.rs`: its HTTP/1.1.
//! - `netns.rs`: opening its listener inside the sandbox's network namespace.
//! - `cgroup.rs`, `tmpdisk.rs`, [`seccomp`] (the allow-list as data),
//!   [`limits`] (every limit, named, with its unit), [`sweep()`] (start-up).
//!
//! # Setup order, and why
//!
//! 1. **Host side** (owner thread, as root): create the cgroups under
//!    `<controller mount>/nimbus-<tag>/<id>` on whichever hierarchy holds each
//!    controller (v1 here, v2 elsewhere) and write the limits; make the
//!    `/tmp` disk (a sparse copy of an ext4 image of EphemeralStorage size,
//!    no journal, `root_owner` = the sandbox's host id, formatted once per
//!    size in `<state_dir>/.templates`) and bind it to a loop device with
//!    autoclear; prepare every path, argument and the seccomp BPF as C data.
//! 2. **`clone`** with new pid, mount, ipc, uts and net namespaces (or
//!    `clone3(CLONE_INTO_CGROUP)` when every controller is on cgroup v2).
//! 3. **Child** (`child::run`), still host root in fresh namespaces: reset
//!    signals; close every descriptor copied from the server but its own
//!    (other sandboxes' pipes among them: they must see EOF and hang-ups);
//!    stdio to the log pipe, the rest close-on-exec;
//!    join the cgroups (v1) before anything is allocated; hostname; make all
//!    mounts private, then build the root on a 1 MB tmpfs: read-only binds of
//!    `/usr` (and `/bin`, `/lib*`, `/sbin` as the host's symlinks or binds),
//!    a few `/etc` entries (loader cache, TLS roots, localtime) plus written
//!    `passwd`/`group`/`hosts`, the ext4 disk at `/tmp`, a fresh `/proc`,
//!    `/dev/{null,zero,full,random,urandom}`. The sandbox is now *warm*: it
//!    reports ready and waits on the claim pipe. The **claim** (the host
//!    writes the function's memory and pids limits to the cgroups, then
//!    sends code path, runtime path, command and environment, and closes
//!    the pipe) binds the code read-only at `/var/task` (and a managed
//!    runtime's client at `/var/runtime`); then `pivot_root` and detach the
//!    old root; remount `/` read-only. `Sandbox::start` claims at once; the
//!    worker keeps a few warm sandboxes ready (Decision 6).
//! 4. **Credentials**: drop groups, `setresgid`/`setresuid` to the
//!    unprivileged host id (all capabilities gone), then `unshare` a user
//!    namespace *from inside*, mapping that one id to 993 (Lambda's
//!    `sbx_user1051`). Ordering: ext4 from a loop device can only be mounted
//!    by host root, so the user namespace comes after the mounts — and being
//!    created last, it owns no mount, pid or net namespace, so even the
//!    capabilities it hands out grant nothing; they are dropped anyway
//!    (bounding, ambient, permitted, effective, inheritable).
//! 5. **Runtime API**: meanwhile the owner thread `setns`es into the child's
//!    network namespace, brings `lo` up, binds `127.0.0.1:9001` and returns
//!    home; the listener is served by the host's tokio runtime. The child
//!    waits for that on the *go* pipe, so the first connect finds it. The
//!    namespace has only `lo`: there is no other route in or out.
//! 6. **Last**: parent-death signal (after the last credential change, which
//!    would reset it) and the parent check (the go pipe's hang-up: `getppid`
//!    is 0 across a pid namespace); `no_new_privs`; the seccomp filters (the
//!    allow-list, then `clone3` → `ENOSYS`); `execve` of the bootstrap with
//!    Lambda's environment. The report pipe is close-on-exec: EOF means the
//!    exec happened, otherwise it carries the failed step, its index and errno.
//!
//! # What each piece is for
//!
//! | piece | for |
//! |---|---|
//! | pid namespace | the function sees only its own processes; killing its init (the bootstrap, pid 1) kills all of them |
//! | mount namespace + `pivot_root` | only the listed host paths exist; nothing propagates back to the host; mounts vanish with the sandbox |
//! | net namespace | only `lo` with the Runtime API; the host's loopback (the platform's API) is unreachable |
//! | ipc, uts namespaces | no shared SysV IPC with the host; its own hostname |
//! | user namespace | the function is uid 993 inside, an unprivileged id outside, with no capability anywhere |
//! | memory cgroup | MemorySize; an OOM kill is detected (`oom_kill` counter) and reported as out of memory |
//! | cpu cgroup | `cpu.shares` / `cpu.weight` ∝ MemorySize, 1,769 MB = one CPU's weight (a weight, not a quota) |
//! | pids cgroup | a fork bomb stops at [`limits::PIDS_MAX_DEFAULT`] |
//! | `/tmp` loop disk | EphemeralStorage on disk, never charged to MemorySize (Decision 8) |
//! | seccomp, `no_new_privs` | no mount, ptrace, namespaces, bpf, keyrings, modules, … even if a kernel bug gave a capability back |
//!
//! # Where a cold start goes
//!
//! Measured by `tests/cold_start.rs` (`cargo test -p nimbus-container
//! --release --test cold_start -- --ignored --nocapture`), 50 starts per run,
//! on this 2-core machine shared with other builds (load average ≈ 4),
//! kernel 6.x, cgroup v1, 512 MB `/tmp`:
//!
//! | step | p50 | p99 |
//! |---|---|---|
//! | `Sandbox::start` to first `/next`, std-only Rust bootstrap | 3.9 ms (3.9–9.5) | 23 ms (23–47) |
//! | · cgroups (3 v1 hierarchies, limits) | 0.2 ms | 0.6–2 ms |
//! | · `/tmp` disk: sparse copy of a formatted template, loop device | 0.8 ms (0.8–1.0) | 4.5–9 ms |
//! | · `clone` to `execve` (namespaces, ~30 mounts, listener) | 2.3 ms (2.3–3.0) | 14–42 ms |
//! | · function's own init (exec to first `/next`) | 1.0 ms (0.5–1.3) | 1.7–11 ms |
//! | teardown (kill, reap, rmdir cgroups, remove image) | 1.3 ms (1.3–2.7) | 9–36 ms |
//! | warm invoke (event in, response out; two HTTP calls) | 0.08 ms (0.08–0.17) | 0.32 ms |
//! | python3 stdlib runtime: start to first `/next` | 50 ms | 67–150 ms |
//! | · of which python's own init | 32–35 ms | 37–110 ms |
//!
//! The first figure is the last run; the brackets the range over the runs.
//! Formatting with `mkfs.ext4` per sandbox cost 2.7–3.1 ms p50; the
//! template copy brought the disk under 1 ms. Mounting `/tmp` without
//! barriers took teardown from ~2.4 to ~1.3 ms and removed multi-second
//! exits while the host's disk was busy (see `root::TMP_MOUNT_OPTIONS`).
//! The p99s are mostly the shared cores' noise. Warm sandboxes (built up to
//! the claim ahead of the request) now take the cgroups, the disk and
//! `clone` plus the mounts off the request's path; through the API a native
//! start from a warm sandbox takes 5.2 ms p50 where one from nothing takes
//! 8.4 ms (`docs/PERFORMANCE.md`).
//!
//! # What the caller must provide
//!
//! - Root (cgroups, loop devices, mounts, `setns`), user namespaces, and
//!   `mkfs.ext4` (e2fsprogs) on the host.
//! - A code directory readable by the sandbox: the function runs as an
//!   unprivileged host id ([`HostConfig::host_id`]) and sees host files as
//!   owned by `nobody`, so code needs `o+r` (directories and `bootstrap`
//!   `o+rx`), i.e. the zip's Unix modes kept on extraction.
//! - A tokio runtime with the `net` and `time` drivers; prefer
//!   [`Sandbox::shutdown`] to dropping (the drop waits for teardown on the
//!   calling thread).
//!
//! # Invariants and boundaries
//!
//! - The process between `clone` and `execve` makes system calls only:
//!   it is a copy of a multi-threaded process (no allocation, no locks).
//! - Each sandbox's first process is a child of its owner thread, which
//!   lives exactly until it has reaped it: the parent-death signal then
//!   fires only when the sandbox is being torn down or the server died.
//! - A sandbox runs one invocation at a time (`invoke` takes `&mut self`);
//!   its Runtime API accepts a result only for the current request id.
//! - After a timeout, an out-of-memory kill or a crash the sandbox is dead
//!   ([`InvokeOutcome::sandbox_lost`]); it is never reused.
//! - Teardown leaves no process, mount, loop device, cgroup or file; what a
//!   SIGKILLed server leaves (cgroup dirs, state dirs) is removed by [`sweep()`].
#![deny(missing_docs)]

mod cgroup;
mod child;
mod clone;
mod code_mount;
mod config;
mod error;
mod launch;
pub mod limits;
mod netns;
mod root;
mod runtime_api;
mod sandbox;
pub mod seccomp;
mod sweep;
mod tmpdisk;

pub use cgroup::{CgroupError, CgroupLayout, Hierarchy, Version};
pub use code_mount::CodeMountError;
pub use config::{HostConfig, SandboxConfig};
pub use error::{InvokeError, StartError};
pub use launch::{ExitStatus, StartTimings};
pub use netns::ListenerError;
pub use runtime_api::FunctionError;
pub use sandbox::{
    HANDOFF_FD_VARIABLE, InvokeOutcome, InvokeRequest, InvokeResult, Preloaded, Sandbox,
    WarmSandbox,
};
pub use sweep::{SweepError, SweepReport, sweep};
pub use tmpdisk::TmpDiskError;

//! The lifecycle of one sandbox: start (init until the first `/next`),
//! invoke, and teardown that leaves nothing behind.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, watch};

use crate::SandboxConfig;
use crate::cgroup::{CgroupLimits, SandboxCgroup};
use crate::error::{InvokeError, StartError};
use crate::launch::{self, ExitStatus, Launched, StartTimings};
use crate::limits;
use crate::runtime_api::{Event, FunctionError, Reply, RuntimeApi};
use crate::tmpdisk::TmpDisk;

/// One invocation handed to a sandbox.
#[derive(Clone, Debug)]
pub struct InvokeRequest {
    /// The request id (`Lambda-Runtime-Aws-Request-Id`).
    pub request_id: String,
    /// The event, as the caller sent it.
    pub payload: Bytes,
    /// The function's Timeout: the sandbox is killed when it runs out.
    pub timeout: Duration,
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    pub invoked_function_arn: String,
    /// `Lambda-Runtime-Trace-Id`.
    pub trace_id: Option<String>,
    /// `Lambda-Runtime-Client-Context`, when the caller sent one.
    pub client_context: Option<String>,
    /// `Lambda-Runtime-Cognito-Identity`, when the caller sent one.
    pub cognito_identity: Option<String>,
}

/// What the function answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvokeResult {
    /// The body posted to `/response`.
    Response(Bytes),
    /// A function error: posted to `/error`, or the platform's timeout,
    /// out-of-memory or crash error.
    FunctionError(FunctionError),
}

/// The outcome of one invocation.
#[derive(Clone, Debug)]
pub struct InvokeOutcome {
    /// The response or the function error.
    pub result: InvokeResult,
    /// What the function wrote to stdout and stderr during the invocation
    /// (the last [`limits::LOG_BYTES_MAX`] bytes).
    pub log: Vec<u8>,
    /// From queueing the event to the result.
    pub duration: Duration,
    /// Peak memory of the sandbox so far, in bytes.
    pub max_memory_used_bytes: u64,
    /// The sandbox was killed (timeout, out of memory, crash): discard it.
    pub sandbox_lost: bool,
}

impl InvokeOutcome {
    /// The invocation's log as Lambda writes it: `START`, what the function
    /// wrote, `END`, and the `REPORT` line (with `Init Duration` on a cold
    /// start). `LogType=Tail` returns its last 4 KB.
    pub fn lambda_log(
        &self,
        request_id: &str,
        version: &str,
        memory_mb: u32,
        init_duration: Option<Duration>,
    ) -> Vec<u8> {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let billed_ms = self.duration.as_micros().div_ceil(1000).max(1);
        let mut log = format!("START RequestId: {request_id} Version: {version}\n").into_bytes();
        log.extend_from_slice(&self.log);
        if !self.log.is_empty() && !self.log.ends_with(b"\n") {
            log.push(b'\n');
        }
        let mut report = format!(
            "END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {:.2} ms\t\
             Billed Duration: {billed_ms} ms\tMemory Size: {memory_mb} MB\t\
             Max Memory Used: {} MB\t",
            ms(self.duration),
            self.max_memory_used_bytes.div_ceil(1024 * 1024),
        );
        if let Some(init) = init_duration {
            report += &format!("Init Duration: {:.2} ms\t", ms(init));
        }
        if let InvokeResult::FunctionError(e) = &self.result {
            if e.error_type == "Sandbox.Timedout" {
                report += "Status: timeout";
            } else if e.error_type == "Runtime.OutOfMemory" {
                report += "Status: error\tError Type: Runtime.OutOfMemory";
            }
        }
        log.extend_from_slice(report.trim_end_matches('\t').as_bytes());
        log.push(b'\n');
        log
    }
}

/// A running sandbox whose function waits in `/next`.
pub struct Sandbox {
    id: String,
    pid: libc::pid_t,
    api: RuntimeApi,
    server: tokio::task::JoinHandle<()>,
    exited: watch::Receiver<Option<ExitStatus>>,
    log: pipe::Receiver,
    owner: Option<std::thread::JoinHandle<()>>,
    cgroup: Option<SandboxCgroup>,
    tmp: Option<TmpDisk>,
    state_dir: PathBuf,
    memory_mb: u32,
    setup_duration: Duration,
    timings: StartTimings,
    init_duration: Duration,
    init_log: Vec<u8>,
    /// Why the sandbox can no longer serve, once it cannot.
    gone: Option<String>,
    /// An invocation has been handed to the function and not yet finished.
    /// Still set when `invoke` starts means the previous call was cancelled
    /// midway (its future dropped): the function may still be working on that
    /// event, so the sandbox cannot be trusted with another.
    in_flight: bool,
    /// The cgroup's out-of-memory kill count when last read: a failed
    /// invocation that raised it was killed for memory.
    oom_kills_seen: u64,
}

/// A sandbox built up to its function (Decision 6's *warm* tier): cgroups,
/// `/tmp` disk, namespaces, the root's mounts and the Runtime API endpoint,
/// with no code. [`WarmSandbox::claim`] mounts a function's code, applies its
/// limits and execs its bootstrap; dropping it unclaimed tears it down.
pub struct WarmSandbox {
    id: String,
    /// The number of the sandbox's handoff descriptor, in the sandbox.
    handoff_fd: std::os::fd::RawFd,
    state_dir: PathBuf,
    ephemeral_storage_mb: u32,
    claims: Option<std::sync::mpsc::SyncSender<launch::Claim>>,
    started: Option<oneshot::Receiver<Result<Launched, StartError>>>,
    exited: watch::Receiver<Option<ExitStatus>>,
    log: Option<pipe::Receiver>,
    owner: Option<std::thread::JoinHandle<()>>,
    warmed_in: Duration,
}

impl WarmSandbox {
    /// Builds everything of a sandbox that does not depend on the function.
    /// Of `config` it uses the id, the host settings, `EphemeralStorage`
    /// (the `/tmp` disk is made now) and the memory and pids limits until
    /// the claim sets the function's.
    pub async fn start(config: &SandboxConfig) -> Result<WarmSandbox, StartError> {
        let started_at = Instant::now();
        if config.id.is_empty()
            || !config
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(StartError::InvalidConfig(format!(
                "sandbox id {:?} is not [A-Za-z0-9_-]+",
                config.id
            )));
        }
        let state_dir = config.host.state_dir.join(&config.id);
        let (log_read, log_write) = log_pipe().map_err(StartError::Pipe)?;
        let log = pipe::Receiver::from_owned_fd(log_read).map_err(StartError::Pipe)?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let (started_tx, started_rx) = oneshot::channel();
        let (claims_tx, claims_rx) = std::sync::mpsc::sync_channel(1);
        let (exited_tx, exited) = watch::channel(None);
        let channels = launch::OwnerChannels {
            ready: ready_tx,
            claims: claims_rx,
            started: started_tx,
            exited: exited_tx,
        };
        let owned = config.clone();
        let owner = std::thread::Builder::new()
            .name(format!("sandbox-{}", config.id))
            .spawn(move || launch::own(owned, log_write, channels))
            .map_err(StartError::OwnerThread)?;
        let failed = |owner: std::thread::JoinHandle<()>, e: StartError| {
            let _ = owner.join();
            let _ = std::fs::remove_dir_all(&state_dir);
            Err(e)
        };
        let handoff_fd = match ready_rx.await {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => return failed(owner, e),
            Err(_) => {
                return failed(
                    owner,
                    StartError::OwnerThread(std::io::Error::other("the owner thread died")),
                );
            }
        };
        Ok(WarmSandbox {
            id: config.id.clone(),
            handoff_fd,
            state_dir,
            ephemeral_storage_mb: config.ephemeral_storage_mb,
            claims: Some(claims_tx),
            started: Some(started_rx),
            exited,
            log: Some(log),
            owner: Some(owner),
            warmed_in: started_at.elapsed(),
        })
    }

    /// The sandbox's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The size of its `/tmp` disk: only a function with this
    /// `EphemeralStorage` can claim it.
    pub fn ephemeral_storage_mb(&self) -> u32 {
        self.ephemeral_storage_mb
    }

    /// How long it took to build.
    pub fn warmed_in(&self) -> Duration {
        self.warmed_in
    }

    /// Makes it `config`'s function's: mounts the code (and runtime client),
    /// applies the memory and pids limits, execs the command with Lambda's
    /// environment, and waits for the first `/next`. The id and host
    /// settings of `config` are not used: the sandbox keeps its own.
    pub async fn claim(self, config: &SandboxConfig) -> Result<Sandbox, StartError> {
        self.claim_since(config, Instant::now()).await
    }

    async fn claim_since(
        self,
        config: &SandboxConfig,
        since: Instant,
    ) -> Result<Sandbox, StartError> {
        let (mut sandbox, exec_at, _handoff) = self.launch(config, since, false).await?;
        match sandbox.wait_for_init(exec_at, config.init_timeout).await {
            Ok(()) => Ok(sandbox),
            Err(e) => {
                sandbox.shutdown().await;
                Err(e)
            }
        }
    }

    /// Starts a managed runtime before its function (Decision 6's warm tier
    /// for `python3.x`): execs `config`'s command with its runtime directory
    /// but no code — `/var/task` stays empty — and with the handoff socket
    /// (its number in `_NIMBUS_HANDOFF_FD`), on which the runtime says `r`
    /// once it is up and then reads its function (see
    /// [`Preloaded::assign`]). Only the command, runtime directory and
    /// `/tmp` size of `config` matter; the environment is Lambda's defaults.
    pub async fn preload(self, config: &SandboxConfig) -> Result<Preloaded, StartError> {
        let since = Instant::now();
        let (sandbox, exec_at, handoff) = self.launch(config, since, true).await?;
        let handoff = handoff
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(handoff));
        let mut handoff = match handoff {
            Ok(h) => h,
            Err(e) => {
                sandbox.shutdown().await;
                return Err(StartError::Pipe(e));
            }
        };
        let mut sandbox = sandbox;
        let ready = sandbox
            .wait_for(exec_at, config.init_timeout, async {
                let mut byte = [0u8; 1];
                match handoff.read_exact(&mut byte).await {
                    Ok(_) if &byte == b"r" => Ok(()),
                    _ => Err(()),
                }
            })
            .await;
        match ready {
            Ok(()) => Ok(Preloaded {
                sandbox,
                handoff,
                since,
            }),
            Err(e) => {
                sandbox.shutdown().await;
                Err(e)
            }
        }
    }

    /// Hands the sandbox to its owner thread with the claim and waits for
    /// the exec; the Runtime API is served from then on. With `preload`,
    /// no code is mounted and the handoff socket stays open in the sandbox.
    async fn launch(
        mut self,
        config: &SandboxConfig,
        since: Instant,
        preload: bool,
    ) -> Result<(Sandbox, Instant, std::os::unix::net::UnixStream), StartError> {
        if config.ephemeral_storage_mb != self.ephemeral_storage_mb {
            return Err(StartError::InvalidConfig(format!(
                "a function with {} MB of /tmp cannot claim a sandbox of {} MB",
                config.ephemeral_storage_mb, self.ephemeral_storage_mb
            )));
        }
        // The function's environment names this sandbox (its log stream).
        let own = SandboxConfig {
            id: self.id.clone(),
            ..config.clone()
        };
        let mut env: Vec<String> = if preload {
            // The function is not known yet: only what every function
            // shares; the rest comes with the handoff.
            own.runtime_environment()
        } else {
            own.lambda_environment()
        }
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
        if preload {
            env.push(format!("{HANDOFF_FD_VARIABLE}={}", self.handoff_fd));
        }
        let message = crate::child::claim_message(
            (!preload).then_some(config.code_dir.as_path()),
            config.runtime_dir.as_deref(),
            preload,
            &config.command,
            &env,
        )
        .map_err(StartError::InvalidConfig)?;
        let claim = launch::Claim {
            message,
            limits: CgroupLimits {
                memory_mb: config.memory_mb,
                pids_max: config.pids_max,
            },
            code_dir: config.code_dir.clone(),
            program: config.command[0].clone(),
        };
        let (Some(claims), Some(started), Some(log), Some(owner)) = (
            self.claims.take(),
            self.started.take(),
            self.log.take(),
            self.owner.take(),
        ) else {
            return Err(StartError::InvalidConfig(
                "the sandbox was claimed already".into(),
            ));
        };
        let state_dir = std::mem::take(&mut self.state_dir);
        let cleanup_dir = state_dir.clone();
        let failed = |owner: std::thread::JoinHandle<()>, e: StartError| async move {
            let _ = tokio::task::spawn_blocking(move || owner.join()).await;
            let _ = std::fs::remove_dir_all(&cleanup_dir);
            Err(e)
        };
        // The owner thread waits on the other end; the channel holds one.
        if claims.send(claim).is_err() {
            let e = StartError::OwnerThread(std::io::Error::other("the owner thread died"));
            return failed(owner, e).await;
        }
        let launched = match started.await {
            Ok(Ok(launched)) => launched,
            Ok(Err(e)) => return failed(owner, e).await,
            Err(_) => {
                let e = StartError::OwnerThread(std::io::Error::other("the owner thread died"));
                return failed(owner, e).await;
            }
        };
        let mut tmp = launched.tmp;
        // The child has mounted /tmp: the mount now holds the loop device.
        tmp.release_device();
        let mut api = RuntimeApi::new();
        let server = match tokio::net::TcpListener::from_std(launched.listener) {
            Ok(listener) => api.spawn_server(listener),
            Err(e) => tokio::spawn(async move { drop(e) }),
        };
        let sandbox = Sandbox {
            id: std::mem::take(&mut self.id),
            pid: launched.pid,
            api,
            server,
            exited: self.exited.clone(),
            log,
            owner: Some(owner),
            cgroup: Some(launched.cgroup),
            tmp: Some(tmp),
            state_dir,
            memory_mb: config.memory_mb,
            setup_duration: launched.exec_at.duration_since(since),
            timings: launched.timings,
            init_duration: Duration::ZERO,
            init_log: Vec::new(),
            gone: None,
            in_flight: false,
            oom_kills_seen: 0,
        };
        Ok((sandbox, launched.exec_at, launched.handoff))
    }

    /// Tears it down unclaimed, off the async threads.
    pub async fn discard(mut self) {
        let owner = self.owner.take();
        drop(self.claims.take());
        if let Some(owner) = owner {
            let _ = tokio::task::spawn_blocking(move || owner.join()).await;
        }
    }
}

impl Drop for WarmSandbox {
    fn drop(&mut self) {
        // Hanging up the claim channel makes the owner thread kill the child
        // and remove the host side; it ends when that is done.
        drop(self.claims.take());
        if let Some(owner) = self.owner.take() {
            let _ = owner.join();
        }
    }
}

/// The variable naming the handoff descriptor to a preloaded runtime.
pub const HANDOFF_FD_VARIABLE: &str = "_NIMBUS_HANDOFF_FD";

/// A managed runtime started ahead in a warm sandbox, waiting for its
/// function on the handoff socket (see [`WarmSandbox::preload`]).
pub struct Preloaded {
    sandbox: Sandbox,
    handoff: tokio::net::UnixStream,
    since: Instant,
}

impl Preloaded {
    /// The sandbox's id.
    pub fn id(&self) -> &str {
        &self.sandbox.id
    }

    /// Makes it `config`'s function's: applies the function's memory and
    /// pids limits, mounts its code read-only at `/var/task` from outside
    /// (see `code_mount`), and writes the function's environment to the
    /// runtime as one JSON object, `{"environment": {"KEY": "value", …}}`,
    /// followed by EOF. The function's init (its Init Duration) runs from
    /// there to its first `/next`. `config`'s command and runtime directory
    /// are those the runtime was started with (the caller's to match).
    pub async fn assign(self, config: &SandboxConfig) -> Result<Sandbox, StartError> {
        let Preloaded {
            mut sandbox,
            mut handoff,
            since,
        } = self;
        let assigned_at = Instant::now();
        let result = async {
            if let Some(cgroup) = &sandbox.cgroup {
                cgroup.set_limits(CgroupLimits {
                    memory_mb: config.memory_mb,
                    pids_max: config.pids_max,
                })?;
            }
            sandbox.memory_mb = config.memory_mb;
            // Its pid names it only while it lives (the owner thread reaps
            // it at once when it dies, and the number may be reused).
            if let Some(status) = *sandbox.exited.borrow() {
                return Err(StartError::RuntimeExited {
                    status: status.to_string(),
                    log: String::new(),
                });
            }
            let (pid, code_dir) = (sandbox.pid, config.code_dir.clone());
            tokio::task::spawn_blocking(move || crate::code_mount::mount_code(pid, &code_dir))
                .await
                .map_err(|e| StartError::OwnerThread(std::io::Error::other(e)))?
                .map_err(|e| StartError::Setup {
                    step: e.step,
                    path: config.code_dir.clone(),
                    source: e.source,
                })?;
            let own = SandboxConfig {
                id: sandbox.id.clone(),
                ..config.clone()
            };
            let environment: serde_json::Map<String, serde_json::Value> = own
                .lambda_environment()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let message = serde_json::json!({ "environment": environment }).to_string();
            handoff
                .write_all(message.as_bytes())
                .await
                .and(handoff.shutdown().await)
                .map_err(StartError::Pipe)?;
            sandbox
                .wait_for_init(assigned_at, config.init_timeout)
                .await
        }
        .await;
        match result {
            Ok(()) => {
                sandbox.setup_duration = assigned_at.duration_since(since);
                Ok(sandbox)
            }
            Err(e) => {
                sandbox.shutdown().await;
                Err(e)
            }
        }
    }

    /// Tears it down unassigned.
    pub async fn discard(self) {
        self.sandbox.shutdown().await;
    }

    /// Whether its runtime still runs.
    pub fn is_alive(&self) -> bool {
        self.sandbox.is_alive()
    }
}

/// Bytes read from the log pipe at a time.
const LOG_CHUNK_BYTES: usize = 8 * 1024;

/// Appends to a log buffer, keeping its tail within the limit.
fn append_log(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(bytes);
    if buffer.len() > limits::LOG_BYTES_MAX {
        let excess = buffer.len() - limits::LOG_BYTES_MAX;
        buffer.drain(..excess);
    }
}

impl Sandbox {
    /// Builds a sandbox, execs its bootstrap and waits for the first `/next`:
    /// a warm sandbox claimed at once.
    pub async fn start(config: SandboxConfig) -> Result<Sandbox, StartError> {
        let started_at = Instant::now();
        let warm = WarmSandbox::start(&config).await?;
        warm.claim_since(&config, started_at).await
    }

    /// Waits for the function's init: from `since` (its exec, or its
    /// handoff) to its first `/next`.
    async fn wait_for_init(&mut self, since: Instant, timeout: Duration) -> Result<(), StartError> {
        let mut next_calls = self.api.next_calls();
        self.wait_for(since, timeout, async move {
            next_calls
                .wait_for(|n| *n > 0)
                .await
                .map(|_| ())
                .map_err(|_| ())
        })
        .await
    }

    /// Waits until `done` says the runtime got where it should (`Err(())`:
    /// it never will), collecting its log, and fails as Lambda reports a
    /// failed init if it posts an init error, exits, or runs out of
    /// `timeout` after `since` first. Sets the init duration and log.
    async fn wait_for(
        &mut self,
        since: Instant,
        timeout: Duration,
        done: impl std::future::Future<Output = Result<(), ()>>,
    ) -> Result<(), StartError> {
        let mut init_error = self.api.init_error();
        let deadline = tokio::time::Instant::from_std(since + timeout);
        let mut log = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut log_open = true;
        let mut done = std::pin::pin!(done);
        let result = loop {
            tokio::select! {
                reached = &mut done => match reached {
                    Ok(()) => break Ok(()),
                    Err(()) => break Err((None, Some(None))),
                },
                posted = init_error.wait_for(Option::is_some) => {
                    let posted = posted.ok().and_then(|p| p.clone()).unwrap_or_else(|| FunctionError::new("Runtime.Unknown", ""));
                    break Err((Some(posted), None));
                }
                status = self.exited.wait_for(Option::is_some) => {
                    let status = status.ok().and_then(|s| *s);
                    break Err((None, Some(status)));
                }
                _ = tokio::time::sleep_until(deadline) => break Err((None, None)),
                // At EOF (every writer gone) the branch is turned off, or it would spin.
                read = self.log.read(&mut chunk), if log_open => match read {
                    Ok(n @ 1..) => append_log(&mut log, &chunk[..n]),
                    _ => log_open = false,
                },
            }
        };
        self.init_duration = since.elapsed();
        let result = match result {
            // It gave up: its exit status says why, if it comes.
            Err((None, Some(None))) => {
                let status = tokio::time::timeout(
                    limits::TEARDOWN_WAIT_MAX,
                    self.exited.wait_for(Option::is_some),
                )
                .await;
                Err((
                    None,
                    Some(status.ok().and_then(|s| s.ok().and_then(|s| *s))),
                ))
            }
            other => other,
        };
        self.drain_log(&mut log, &mut chunk);
        let text = String::from_utf8_lossy(&log).into_owned();
        self.init_log = log;
        match result {
            Ok(()) => Ok(()),
            Err((Some(posted), _)) => Err(StartError::InitError {
                error_type: posted.error_type,
                error_message: posted.error_message,
                log: text,
            }),
            Err((None, Some(status))) => Err(StartError::RuntimeExited {
                status: status.map_or_else(
                    || "the runtime stopped before it was ready".to_owned(),
                    |s| s.to_string(),
                ),
                log: text,
            }),
            Err((None, None)) => Err(StartError::InitTimedOut(timeout, text)),
        }
    }

    /// Reads what is already in the log pipe without waiting.
    fn drain_log(&self, into: &mut Vec<u8>, chunk: &mut [u8]) {
        while let Ok(n @ 1..) = self.log.try_read(chunk) {
            append_log(into, &chunk[..n]);
        }
    }

    /// The sandbox's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host pid of the sandbox's first process (pid 1 inside).
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The platform's share of the cold start: from `start` to the exec of the bootstrap.
    pub fn setup_duration(&self) -> Duration {
        self.setup_duration
    }

    /// Where the platform's share of the start went.
    pub fn start_timings(&self) -> StartTimings {
        self.timings
    }

    /// The function's own init (Lambda's Init Duration): exec to first `/next`.
    pub fn init_duration(&self) -> Duration {
        self.init_duration
    }

    /// What the function logged during init.
    pub fn init_log(&self) -> &[u8] {
        &self.init_log
    }

    /// Its memory limit (the function's MemorySize), in MB.
    pub fn memory_mb(&self) -> u32 {
        self.memory_mb
    }

    /// Whether the sandbox can take another invocation.
    pub fn is_alive(&self) -> bool {
        self.gone.is_none() && !self.in_flight && self.exited.borrow().is_none()
    }

    /// Runs one invocation and waits for its result, the timeout, or the
    /// function's death. Kills the whole sandbox on timeout, out of memory or crash.
    ///
    /// Not cancel-safe by nature: a dropped call leaves the function working
    /// on an event nobody waits for, so the sandbox is then not alive and the
    /// next call kills it.
    pub async fn invoke(&mut self, request: InvokeRequest) -> Result<InvokeOutcome, InvokeError> {
        if let Some(reason) = &self.gone {
            return Err(InvokeError::SandboxGone(reason.clone()));
        }
        if let Some(status) = *self.exited.borrow() {
            return Err(InvokeError::SandboxGone(format!(
                "Runtime exited with error: {status}"
            )));
        }
        if self.in_flight {
            self.kill();
            let reason = "an earlier invocation was abandoned midway".to_owned();
            self.gone = Some(reason.clone());
            return Err(InvokeError::SandboxGone(reason));
        }
        self.in_flight = true;
        let started = Instant::now();
        let deadline_ms = (SystemTime::now() + request.timeout)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let request_id = request.request_id.clone();
        let reply = self.api.begin(Event {
            request_id: request.request_id,
            deadline_ms,
            invoked_function_arn: request.invoked_function_arn,
            trace_id: request.trace_id,
            client_context: request.client_context,
            cognito_identity: request.cognito_identity,
            payload: request.payload,
        });
        let mut reply = std::pin::pin!(reply.result());
        let deadline = tokio::time::Instant::from_std(started + request.timeout);
        let mut log = Vec::new();
        let mut chunk = vec![0u8; LOG_CHUNK_BYTES];
        let mut log_open = true;
        enum End {
            Reply(Reply),
            Exited(Option<ExitStatus>),
            TimedOut,
        }
        let end = loop {
            tokio::select! {
                r = &mut reply => match r {
                    Some(r) => break End::Reply(r),
                    None => break End::Exited(None),
                },
                status = self.exited.wait_for(Option::is_some) => break End::Exited(status.ok().and_then(|s| *s)),
                _ = tokio::time::sleep_until(deadline) => break End::TimedOut,
                // At EOF (every writer gone) the branch is turned off, or it would spin.
                read = self.log.read(&mut chunk), if log_open => match read {
                    Ok(n @ 1..) => append_log(&mut log, &chunk[..n]),
                    _ => log_open = false,
                },
            }
        };
        let duration = started.elapsed();
        self.in_flight = false;
        // Only a failure can be an out-of-memory kill: a response needs no
        // look at the cgroup's counter (a file read) on the hot path.
        let oom = !matches!(end, End::Reply(Reply::Response(_))) && {
            let kills = self.cgroup.as_ref().map_or(0, SandboxCgroup::oom_kills);
            std::mem::replace(&mut self.oom_kills_seen, kills) < kills
        };
        let prefix = format!("RequestId: {request_id} Error: ");
        let (result, lost) = match end {
            End::Reply(Reply::Response(body)) => (InvokeResult::Response(body), false),
            End::Reply(Reply::Error(_)) | End::Exited(_) if oom => {
                let message = format!(
                    "{prefix}Runtime exited with error: signal: killed (out of memory: the function used more than its MemorySize of {} MB)",
                    self.memory_mb
                );
                (
                    InvokeResult::FunctionError(FunctionError::new("Runtime.OutOfMemory", message)),
                    true,
                )
            }
            End::Reply(Reply::Error(e)) => (InvokeResult::FunctionError(e), false),
            End::Exited(status) => {
                let status = status.map_or("signal: killed".to_owned(), |s| s.to_string());
                let message = format!("{prefix}Runtime exited with error: {status}");
                (
                    InvokeResult::FunctionError(FunctionError::new("Runtime.ExitError", message)),
                    true,
                )
            }
            End::TimedOut => {
                let message = format!(
                    "{prefix}Task timed out after {:.2} seconds",
                    request.timeout.as_secs_f64()
                );
                (
                    InvokeResult::FunctionError(FunctionError::new("Sandbox.Timedout", message)),
                    true,
                )
            }
        };
        if lost {
            self.kill();
            // The pid namespace's init is dead: every other process is being
            // killed by the kernel; wait for it so the log pipe is complete.
            let _ = tokio::time::timeout(
                limits::TEARDOWN_WAIT_MAX,
                self.exited.wait_for(Option::is_some),
            )
            .await;
            self.gone = Some(match &result {
                InvokeResult::FunctionError(e) => e.error_message.clone(),
                InvokeResult::Response(_) => String::new(),
            });
        }
        self.drain_log(&mut log, &mut chunk);
        Ok(InvokeOutcome {
            result,
            log,
            duration,
            max_memory_used_bytes: self
                .cgroup
                .as_ref()
                .map_or(0, SandboxCgroup::max_memory_used_bytes),
            sandbox_lost: lost,
        })
    }

    /// SIGKILLs the sandbox's pid-namespace init: the kernel then kills
    /// every process of the namespace.
    fn kill(&self) {
        if self.exited.borrow().is_none() {
            // SAFETY: kill(2); the pid is our child until the owner reaps it,
            // and `exited` is set only after that.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }

    /// Kills the sandbox and removes everything it had on the host.
    pub async fn shutdown(mut self) {
        let teardown = self.take_teardown();
        let _ = tokio::task::spawn_blocking(move || teardown.run()).await;
    }

    fn take_teardown(&mut self) -> Teardown {
        self.kill();
        self.server.abort();
        self.gone.get_or_insert_with(|| "shut down".to_owned());
        Teardown {
            owner: self.owner.take(),
            cgroup: self.cgroup.take(),
            tmp: self.tmp.take(),
            state_dir: std::mem::take(&mut self.state_dir),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.owner.is_some() {
            self.take_teardown().run();
        }
    }
}

/// What is left to undo once the sandbox's init has been killed, in order.
struct Teardown {
    owner: Option<std::thread::JoinHandle<()>>,
    cgroup: Option<SandboxCgroup>,
    tmp: Option<TmpDisk>,
    state_dir: PathBuf,
}

impl Teardown {
    fn run(self) {
        // 1. The owner thread ends once it has reaped the killed init; with it
        //    gone, every process of the pid namespace is gone.
        if let Some(owner) = self.owner {
            let _ = owner.join();
        }
        // 2. cgroups: kill stragglers (none are expected), wait, remove.
        drop(self.cgroup);
        // 3. With the mount namespace gone, the /tmp loop device detached by
        //    itself (autoclear); the image file can go.
        drop(self.tmp);
        // 4. The staging directory the root was built on.
        if !self.state_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}

fn log_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned here. The read end is made
    // non-blocking for tokio; the write end stays blocking for the function.
    unsafe {
        let flags = libc::fcntl(fds[0], libc::F_GETFL);
        libc::fcntl(fds[0], libc::F_SETFL, flags | libc::O_NONBLOCK);
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_has_lambdas_start_end_and_report_lines() {
        let outcome = InvokeOutcome {
            result: InvokeResult::Response(Bytes::from_static(b"{}")),
            log: b"hello".to_vec(),
            duration: Duration::from_micros(1_234),
            max_memory_used_bytes: 30 * 1024 * 1024 + 1,
            sandbox_lost: false,
        };
        let log = String::from_utf8(outcome.lambda_log(
            "r-1",
            "$LATEST",
            128,
            Some(Duration::from_micros(5_670)),
        ))
        .unwrap();
        assert_eq!(
            log,
            "START RequestId: r-1 Version: $LATEST\nhello\nEND RequestId: r-1\n\
             REPORT RequestId: r-1\tDuration: 1.23 ms\tBilled Duration: 2 ms\t\
             Memory Size: 128 MB\tMax Memory Used: 31 MB\tInit Duration: 5.67 ms\n"
        );
    }
}

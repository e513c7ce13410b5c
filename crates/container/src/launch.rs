//! Host side of a sandbox's start: prepare, clone, open the Runtime API in
//! the child's network, release it, and own it until it exits.
//!
//! All of it runs on one thread per sandbox, the *owner*: the child's parent
//! for the kernel. The child's parent-death signal fires when this thread
//! ends, so it lives exactly as long as the sandbox (Decision 10): it ends
//! after `waitpid` has seen the child go.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use seccompiler::BpfProgram;
use tokio::sync::{oneshot, watch};

use crate::SandboxConfig;
use crate::cgroup::{CgroupLayout, CgroupLimits, SandboxCgroup};
use crate::child::{self, ChildPlan, ExecPointers, Step};
use crate::clone::{clone_into_cgroup, clone_plain, reap};
use crate::error::StartError;
use crate::limits;
use crate::root::{MountOp, cpath, cstring, root_ops};
use crate::tmpdisk::{TEMPLATES_DIR, TmpDisk};

/// What the owner thread hands back once the function is exec'd.
pub(crate) struct Launched {
    pub pid: libc::pid_t,
    pub listener: TcpListener,
    pub cgroup: SandboxCgroup,
    pub tmp: TmpDisk,
    /// The host's end of the handoff socket (used by a runtime started
    /// before its function; otherwise its other end is closed at exec).
    pub handoff: std::os::unix::net::UnixStream,
    /// When the bootstrap was exec'd: the function's own init starts here.
    pub exec_at: Instant,
    /// Where the platform's share of the start went.
    pub timings: StartTimings,
}

/// Where the platform's share of a cold start went, step by step.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartTimings {
    /// Creating the cgroups and writing their limits.
    pub cgroups: Duration,
    /// Making the `/tmp` disk: sparse image, mkfs, loop device.
    pub tmp_disk: Duration,
    /// From `clone` to the warm sandbox's ready report: namespaces, the
    /// root's mounts, and the Runtime API's listener.
    pub clone_to_ready: Duration,
    /// From the claim to the bootstrap's exec: the code's mount,
    /// pivot_root, credentials, seccomp.
    pub claim_to_exec: Duration,
}

/// How the sandbox's first process ended (a `waitpid` status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus(pub libc::c_int);

impl std::fmt::Display for ExitStatus {
    /// Lambda's wording: "exit status 1", "signal: killed".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.0;
        if libc::WIFEXITED(status) {
            write!(f, "exit status {}", libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            let name = match libc::WTERMSIG(status) {
                libc::SIGKILL => "killed".to_owned(),
                libc::SIGSEGV => "segmentation fault".to_owned(),
                libc::SIGABRT => "aborted".to_owned(),
                libc::SIGTERM => "terminated".to_owned(),
                n => format!("{n}"),
            };
            write!(f, "signal: {name}")
        } else {
            write!(f, "status {status}")
        }
    }
}

fn filters() -> Result<&'static [BpfProgram], StartError> {
    static FILTERS: OnceLock<Result<Vec<BpfProgram>, String>> = OnceLock::new();
    FILTERS
        .get_or_init(|| crate::seccomp::compile().map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| StartError::Seccomp(e.clone()))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Host-side preparation: state directory, cgroups, `/tmp` disk.
fn prepare(
    config: &SandboxConfig,
    timings: &mut StartTimings,
) -> Result<(PathBuf, SandboxCgroup, TmpDisk), StartError> {
    let started = Instant::now();
    let dir = config.host.state_dir.join(&config.id);
    fs::create_dir_all(dir.join("root")).map_err(|e| StartError::CreateStateDir(dir.clone(), e))?;
    let layout = CgroupLayout::discover()?;
    let cgroup = SandboxCgroup::create(
        &layout,
        &config.host.tag,
        &config.id,
        CgroupLimits {
            memory_mb: config.memory_mb,
            pids_max: config.pids_max,
        },
    )?;
    timings.cgroups = started.elapsed();
    let started = Instant::now();
    let tmp = TmpDisk::create(
        &dir.join("tmp.img"),
        config.ephemeral_storage_mb,
        config.host.host_id,
        &config.host.state_dir.join(TEMPLATES_DIR),
    )?;
    timings.tmp_disk = started.elapsed();
    Ok((dir, cgroup, tmp))
}

#[allow(clippy::too_many_arguments)]
fn plan(
    config: &SandboxConfig,
    dir: &Path,
    cgroup: &SandboxCgroup,
    tmp: &TmpDisk,
    log: OwnedFd,
    report: OwnedFd,
    go: OwnedFd,
    claim: OwnedFd,
    handoff: OwnedFd,
) -> Result<ChildPlan, StartError> {
    let mut cgroup_procs = Vec::new();
    for path in cgroup.procs_files() {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StartError::OpenCgroup(path.clone(), e))?;
        cgroup_procs.push(OwnedFd::from(file));
    }
    let stdin = OwnedFd::from(
        File::open("/dev/null").map_err(|e| StartError::InspectHost("/dev/null".into(), e))?,
    );
    let map = format!("{} {} 1\n", limits::SANDBOX_INNER_ID, config.host.host_id).into_bytes();
    let root = dir.join("root");
    let mut keep: Vec<_> = [&stdin, &log, &report, &go, &claim, &handoff]
        .into_iter()
        .chain(&cgroup_procs)
        .map(|fd| fd.as_raw_fd())
        .collect();
    keep.sort_unstable();
    Ok(ChildPlan {
        cgroup_procs,
        stdin,
        log,
        report,
        go,
        claim,
        handoff,
        keep,
        hostname: cstring("sandbox")?,
        root: cpath(&root)?,
        ops: root_ops(&root, &tmp.device)?,
        host_id: config.host.host_id,
        uid_map: map.clone(),
        gid_map: map,
        workdir: cstring("/var/task")?,
        task_target: cpath(&root.join("var/task"))?,
        runtime_target: cpath(&root.join("var/runtime"))?,
        filters: filters()?.to_vec(),
    })
}

/// What turns a warm sandbox into one function's sandbox.
pub(crate) struct Claim {
    /// The encoded message the child reads (see `child::claim_message`).
    pub message: Vec<u8>,
    /// The function's limits, written before the child goes on.
    pub limits: CgroupLimits,
    /// The code directory, for errors.
    pub code_dir: PathBuf,
    /// The program exec'd, for errors.
    pub program: String,
}

/// The owner thread's channels to the async side.
pub(crate) struct OwnerChannels {
    /// Told once the sandbox is warm, with the number of the sandbox's
    /// handoff descriptor (or why it is not warm).
    pub ready: oneshot::Sender<Result<std::os::fd::RawFd, StartError>>,
    /// The claim; a hang-up without one discards the warm sandbox.
    pub claims: std::sync::mpsc::Receiver<Claim>,
    /// Told once the claimed function is exec'd (or why it is not).
    pub started: oneshot::Sender<Result<Launched, StartError>>,
    /// Told how the sandbox's first process ended.
    pub exited: watch::Sender<Option<ExitStatus>>,
}

/// Body of the owner thread: warm the sandbox up, wait for its claim, exec
/// the function, report, then wait for its end.
pub(crate) fn own(config: SandboxConfig, log: OwnedFd, channels: OwnerChannels) {
    let warm = match warm_up(&config, log) {
        Ok(warm) => warm,
        Err(e) => {
            let _ = channels.ready.send(Err(e));
            return;
        }
    };
    if channels.ready.send(Ok(warm.handoff_fd)).is_err() {
        warm.abandon();
        return;
    }
    let Ok(claim) = channels.claims.recv() else {
        // Discarded unclaimed.
        warm.abandon();
        return;
    };
    let dir = warm.dir.clone();
    match warm.claim(claim) {
        Ok((launched, go)) => {
            let pid = launched.pid;
            if let Err(Ok(abandoned)) = channels.started.send(Ok(launched)) {
                // Nobody waits for this sandbox any more (the claim was
                // cancelled): kill it, reap it, then undo the host side in
                // the teardown's order.
                // SAFETY: pid is our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                reap(pid);
                drop(abandoned);
                let _ = fs::remove_dir_all(&dir);
                return;
            }
            let status = reap(pid);
            // The go pipe's write end is held until the child is gone: its
            // hang-up is the child's sign that the host died.
            drop(go);
            let _ = channels.exited.send(Some(status));
        }
        Err(e) => {
            let _ = channels.started.send(Err(e));
        }
    }
}

/// A sandbox whose child waits for its claim, as the owner thread holds it.
struct Warm {
    pid: libc::pid_t,
    dir: PathBuf,
    cgroup: SandboxCgroup,
    tmp: TmpDisk,
    listener: TcpListener,
    go: File,
    claim: File,
    report: File,
    handoff: std::os::unix::net::UnixStream,
    /// The number of the child's end of the handoff socket, in the child.
    handoff_fd: std::os::fd::RawFd,
    ops: Vec<MountOp>,
    timings: StartTimings,
}

/// Kills and reaps our child.
fn kill(pid: libc::pid_t) {
    // SAFETY: pid is our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

/// A failure record from the report pipe as the step and path it names.
fn setup_error(record: &[u8], ops: &[MountOp], claim: Option<&Claim>) -> StartError {
    let word = |i: usize| u32::from_ne_bytes(record[i..i + 4].try_into().unwrap_or_default());
    let step = Step::from_u32(word(0)).unwrap_or(Step::Exec);
    let index = word(4) as usize;
    let errno = io::Error::from_raw_os_error(word(8) as i32);
    let (what, path) = match (step, claim) {
        (Step::Mount, _) => ops
            .get(index)
            .map(|op| op.describe())
            .unwrap_or(("build the root", PathBuf::new())),
        (Step::MountCode, Some(c)) => ("mount the function's code", c.code_dir.clone()),
        (Step::Exec, Some(c)) => ("exec the bootstrap", PathBuf::from(&c.program)),
        (other, _) => (other.describe(), PathBuf::new()),
    };
    StartError::Setup {
        step: what,
        path,
        source: errno,
    }
}

/// Prepares the host side, clones the child, opens the Runtime API in its
/// network, and waits until the child has built its root and waits for
/// its claim.
fn warm_up(config: &SandboxConfig, log: OwnedFd) -> Result<Warm, StartError> {
    let mut timings = StartTimings::default();
    let (dir, cgroup, tmp) = prepare(config, &mut timings)?;
    let (report_read, report_write) = pipe().map_err(StartError::Pipe)?;
    let (go_read, go_write) = pipe().map_err(StartError::Pipe)?;
    let (claim_read, claim_write) = pipe().map_err(StartError::Pipe)?;
    let (handoff, handoff_child) =
        std::os::unix::net::UnixStream::pair().map_err(StartError::Pipe)?;
    let mut plan = plan(
        config,
        &dir,
        &cgroup,
        &tmp,
        log,
        report_write,
        go_read,
        claim_read,
        OwnedFd::from(handoff_child),
    )?;
    let mut pointers = ExecPointers::new(&plan);
    // The clone copies the descriptor table: the same number in the child.
    let handoff_fd = plan.handoff.as_raw_fd();
    // The child is pid 1 of new pid, mount, ipc, uts and network namespaces,
    // created by host root: the user namespace comes later, unprivileged,
    // from inside (see child::run, step 11).
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWNET;
    // Where every controller is on cgroup v2, the child is born in its
    // cgroup (clone3 with CLONE_INTO_CGROUP) and does not join it itself; on
    // v1, or a kernel without clone3, it joins before exec (Decision 7).
    let into_cgroup = match cgroup.single_v2_dir() {
        Some(dir) => Some(File::open(dir).map_err(|e| StartError::OpenCgroup(dir.to_owned(), e))?),
        None => None,
    };
    let cloned_at = Instant::now();
    let pid = match &into_cgroup {
        Some(dir) => {
            let joins = std::mem::take(&mut plan.cgroup_procs);
            // SAFETY: the child runs only child::run below.
            match unsafe { clone_into_cgroup(flags, dir) } {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::E2BIG)) => {
                    plan.cgroup_procs = joins;
                    // SAFETY: as above.
                    unsafe { clone_plain(flags) }
                }
                other => other,
            }
        }
        // SAFETY: the child runs only child::run below.
        None => unsafe { clone_plain(flags) },
    }
    .map_err(StartError::Clone)?;
    if pid == 0 {
        // SAFETY: we are the child of clone, with pointers made from this plan.
        unsafe { child::run(&plan, &mut pointers) }
    }
    let pid = pid as libc::pid_t;
    // The host keeps only its ends of the pipes: dropping the child's ends
    // now is what lets the report pipe read EOF at exec, the claim pipe EOF
    // after the message, and the log reach EOF when the sandbox dies.
    let mut plan = plan;
    let ops = std::mem::take(&mut plan.ops);
    drop(plan);
    let listener = match crate::netns::bind_runtime_api(pid) {
        Ok(l) => l,
        Err(e) => {
            kill(pid);
            return Err(e.into());
        }
    };
    let mut go = File::from(go_write);
    if let Err(e) = go.write_all(b"g") {
        kill(pid);
        return Err(StartError::Pipe(e));
    }
    let mut report = File::from(report_read);
    let mut record = [0u8; child::REPORT_BYTES];
    if let Err(e) = report.read_exact(&mut record) {
        kill(pid);
        return Err(StartError::Pipe(e));
    }
    if Step::from_u32(u32::from_ne_bytes([
        record[0], record[1], record[2], record[3],
    ])) != Some(Step::Ready)
    {
        reap(pid);
        return Err(setup_error(&record, &ops, None));
    }
    timings.clone_to_ready = cloned_at.elapsed();
    Ok(Warm {
        pid,
        dir,
        cgroup,
        tmp,
        listener,
        go,
        claim: File::from(claim_write),
        report,
        handoff,
        handoff_fd,
        ops,
        timings,
    })
}

impl Warm {
    /// Hands the child its function and waits for the exec.
    fn claim(mut self, claim: Claim) -> Result<(Launched, File), StartError> {
        let claimed_at = Instant::now();
        if let Err(e) = self.cgroup.set_limits(claim.limits) {
            self.abandon();
            return Err(e.into());
        }
        // One write below the pipe's capacity, then EOF: it never blocks.
        let written = self.claim.write_all(&claim.message);
        drop(self.claim);
        if let Err(e) = written {
            kill(self.pid);
            let _ = fs::remove_dir_all(&self.dir);
            return Err(StartError::Pipe(e));
        }
        let mut report = Vec::new();
        let _ = self.report.read_to_end(&mut report);
        let exec_at = Instant::now();
        self.timings.claim_to_exec = exec_at.duration_since(claimed_at);
        if report.len() >= child::REPORT_BYTES {
            reap(self.pid);
            return Err(setup_error(&report, &self.ops, Some(&claim)));
        }
        Ok((
            Launched {
                pid: self.pid,
                listener: self.listener,
                cgroup: self.cgroup,
                tmp: self.tmp,
                handoff: self.handoff,
                exec_at,
                timings: self.timings,
            },
            self.go,
        ))
    }

    /// Kills the unclaimed (or failed) sandbox and removes its host side.
    fn abandon(self) {
        kill(self.pid);
        drop(self.cgroup);
        drop(self.tmp);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

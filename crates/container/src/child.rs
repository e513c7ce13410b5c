//! The sandbox's setup, run by the cloned child between `clone` and `execve`.
//!
//! The child is a copy of a multi-threaded process: until it execs it may
//! only make system calls (no allocation, no locks another thread could have
//! held). So every path, map and argument is prepared by the host first, in
//! a [`ChildPlan`], and the child walks it with raw calls. A failed step is
//! written to the report pipe as `(step, index, errno)` for the host to turn
//! into a [`crate::StartError`] naming the step and its path.
//!
//! Credential changes go through `syscall(2)`, never libc's `setresuid`,
//! `setresgid` or `setgroups`: in a process libc believes multi-threaded,
//! those wrappers take a lock and signal every other thread so they change
//! credentials too — in the clone those threads do not exist, and the lock
//! may have been held by one of them at the moment of the clone: the child
//! would wait forever.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use seccompiler::BpfProgram;

use crate::limits;
use crate::root::{MountOp, bind_read_only, mount_op};

/// Steps of the child's setup, as reported through the pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    Stdio = 1,
    JoinCgroup,
    Hostname,
    PrivateMounts,
    Mount,
    Ready,
    Claim,
    MountCode,
    PivotRoot,
    RemountRootReadOnly,
    DropGroups,
    SetIds,
    Dumpable,
    NewUserNamespace,
    WriteIdMaps,
    DropCapabilities,
    Chdir,
    WaitForHost,
    ParentDeathSignal,
    HostGone,
    NoNewPrivs,
    Seccomp,
    Exec,
}

impl Step {
    pub(crate) fn from_u32(n: u32) -> Option<Step> {
        use Step::*;
        [
            Stdio,
            JoinCgroup,
            Hostname,
            PrivateMounts,
            Mount,
            Ready,
            Claim,
            MountCode,
            PivotRoot,
            RemountRootReadOnly,
            DropGroups,
            SetIds,
            Dumpable,
            NewUserNamespace,
            WriteIdMaps,
            DropCapabilities,
            Chdir,
            WaitForHost,
            ParentDeathSignal,
            HostGone,
            NoNewPrivs,
            Seccomp,
            Exec,
        ]
        .into_iter()
        .find(|s| *s as u32 == n)
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Step::Stdio => "connect stdio to the log pipe",
            Step::JoinCgroup => "join the sandbox's cgroups",
            Step::Hostname => "set the hostname",
            Step::PrivateMounts => "make mounts private",
            Step::Mount => "build the root",
            Step::Ready => "report the warm sandbox ready",
            Step::Claim => "read the claim (code, command, environment)",
            Step::MountCode => "mount the function's code",
            Step::PivotRoot => "pivot_root into the new root",
            Step::RemountRootReadOnly => "remount / read-only",
            Step::DropGroups => "drop supplementary groups",
            Step::SetIds => "switch to the unprivileged host id",
            Step::Dumpable => "mark the process dumpable",
            Step::NewUserNamespace => "create the user namespace",
            Step::WriteIdMaps => "write the uid/gid maps",
            Step::DropCapabilities => "drop capabilities",
            Step::Chdir => "chdir to /var/task",
            Step::WaitForHost => "wait for the Runtime API",
            Step::ParentDeathSignal => "set the parent-death signal",
            Step::HostGone => "check the host is alive",
            Step::NoNewPrivs => "set no_new_privs",
            Step::Seccomp => "install the seccomp filter",
            Step::Exec => "exec the bootstrap",
        }
    }
}

/// Everything the child needs, prepared by the host before `clone`.
pub(crate) struct ChildPlan {
    /// `cgroup.procs` of each of the sandbox's cgroups, open for writing.
    pub cgroup_procs: Vec<OwnedFd>,
    /// `/dev/null`, the function's stdin.
    pub stdin: OwnedFd,
    /// Write end of the log pipe: the function's stdout and stderr.
    pub log: OwnedFd,
    /// Write end of the report pipe (close-on-exec: EOF means exec succeeded).
    pub report: OwnedFd,
    /// Read end of the go pipe: a byte once the Runtime API listens; hang-up
    /// once the host is gone.
    pub go: OwnedFd,
    /// Read end of the claim pipe: the claim message, then EOF.
    pub claim: OwnedFd,
    /// The sandbox's end of the handoff socket: kept across exec only when
    /// the claim asks for it — a runtime started before its function's code
    /// (see `crate::Preloaded`) reads its function from it.
    pub handoff: OwnedFd,
    /// The descriptors above stdio the child keeps (its own, above),
    /// sorted. It closes every other one the clone copied from the server
    /// at once: among them the host's ends of its own pipes and the pipe
    /// ends of other sandboxes still waiting for their claim, which would
    /// otherwise never see EOF or a hang-up while this one lives.
    pub keep: Vec<std::os::fd::RawFd>,
    pub hostname: CString,
    /// The staging directory the root is built on.
    pub root: CString,
    pub ops: Vec<MountOp>,
    pub host_id: u32,
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub workdir: CString,
    /// Where the code is mounted, under the staging root (`var/task`).
    pub task_target: CString,
    /// Where a managed runtime's client is mounted (`var/runtime`).
    pub runtime_target: CString,
    pub filters: Vec<BpfProgram>,
}

/// Memory the child fills without allocating: the claim message it reads,
/// the argument and environment pointers it makes into it, and the seccomp
/// programs. Built by the host before clone, at full size.
pub(crate) struct ExecPointers {
    buffer: Vec<u8>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    filters: Vec<libc::sock_fprog>,
}

impl ExecPointers {
    pub(crate) fn new(plan: &ChildPlan) -> ExecPointers {
        ExecPointers {
            buffer: vec![0; limits::CLAIM_MESSAGE_MAX_BYTES],
            // One more than the maximum: the list ends with a null pointer.
            argv: vec![std::ptr::null(); limits::CLAIM_ARGS_MAX + 1],
            envp: vec![std::ptr::null(); limits::CLAIM_ENV_VARS_MAX + 1],
            filters: plan
                .filters
                .iter()
                .map(|f| libc::sock_fprog {
                    len: f.len() as u16,
                    filter: f.as_ptr() as *mut libc::sock_filter,
                })
                .collect(),
        }
    }
}

/// The claim message: what makes a warm sandbox one function's. NUL-ended
/// fields: the host path of the code (empty: none yet, it is mounted later
/// from outside), of the runtime client (empty for none), `h` to keep the
/// handoff socket across exec (else empty), the arguments (the first is the
/// program), an empty field, the `KEY=value` environment, an empty field.
pub(crate) fn claim_message(
    code_dir: Option<&std::path::Path>,
    runtime_dir: Option<&std::path::Path>,
    handoff: bool,
    argv: &[String],
    envp: &[String],
) -> Result<Vec<u8>, String> {
    use std::os::unix::ffi::OsStrExt;
    if argv.is_empty() || argv.len() > limits::CLAIM_ARGS_MAX {
        return Err(format!(
            "the command has {} arguments; 1 to {} are allowed",
            argv.len(),
            limits::CLAIM_ARGS_MAX
        ));
    }
    if envp.len() > limits::CLAIM_ENV_VARS_MAX {
        return Err(format!(
            "{} environment variables; at most {} are allowed",
            envp.len(),
            limits::CLAIM_ENV_VARS_MAX
        ));
    }
    let mut message = Vec::new();
    let mut field = |bytes: &[u8]| -> Result<(), String> {
        if bytes.contains(&0) {
            return Err(format!(
                "{:?} holds a NUL byte",
                String::from_utf8_lossy(bytes)
            ));
        }
        message.extend_from_slice(bytes);
        message.push(0);
        Ok(())
    };
    field(code_dir.map_or(&[][..], |d| d.as_os_str().as_bytes()))?;
    field(runtime_dir.map_or(&[][..], |d| d.as_os_str().as_bytes()))?;
    field(if handoff { b"h" } else { b"" })?;
    for arg in argv {
        if arg.is_empty() {
            return Err("an argument of the command is empty".to_owned());
        }
        field(arg.as_bytes())?;
    }
    field(b"")?;
    for var in envp {
        field(var.as_bytes())?;
    }
    field(b"")?;
    if message.len() > limits::CLAIM_MESSAGE_MAX_BYTES {
        return Err(format!(
            "code path, command and environment take {} bytes; at most {} are allowed",
            message.len(),
            limits::CLAIM_MESSAGE_MAX_BYTES
        ));
    }
    Ok(message)
}

/// A record on the report pipe: `(step, index, errno)`.
pub(crate) const REPORT_BYTES: usize = 12;

const PATH_SETGROUPS: &[u8] = b"/proc/self/setgroups\0";
const PATH_UID_MAP: &[u8] = b"/proc/self/uid_map\0";
const PATH_GID_MAP: &[u8] = b"/proc/self/gid_map\0";
const DOT: &[u8] = b".\0";
const SLASH: &[u8] = b"/\0";
const CAPABILITY_LAST: libc::c_ulong = 63;

/// Writes a `(step, index, errno)` record to the report pipe.
fn report(plan: &ChildPlan, step: Step, index: u32, errno: i32) -> libc::c_long {
    let mut record = [0u8; REPORT_BYTES];
    record[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    record[4..8].copy_from_slice(&index.to_ne_bytes());
    record[8..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write(2) of a stack buffer; async-signal-safe.
    unsafe {
        libc::write(
            plan.report.as_raw_fd(),
            record.as_ptr().cast(),
            record.len(),
        ) as libc::c_long
    }
}

/// Reports a failed step and exits. Only system calls: see the module docs.
fn fail(plan: &ChildPlan, step: Step, index: u32) -> ! {
    // SAFETY: errno location is thread-local and always valid; _exit is
    // async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        report(plan, step, index, errno);
        libc::_exit(126)
    }
}

fn check(plan: &ChildPlan, step: Step, index: u32, rc: libc::c_long) {
    if rc < 0 {
        fail(plan, step, index);
    }
}

fn write_file(path: &[u8], content: &[u8]) -> libc::c_long {
    // SAFETY: path is NUL-terminated; content outlives the call.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let n = libc::write(fd, content.as_ptr().cast(), content.len());
        libc::close(fd);
        if n as usize == content.len() { 0 } else { -1 }
    }
}

/// Runs the setup of a freshly cloned child and execs the bootstrap.
///
/// # Safety
/// Must be called only in the child of `clone`, with pointers made from
/// this same plan; it never returns.
pub(crate) unsafe fn run(plan: &ChildPlan, ptrs: &mut ExecPointers) -> ! {
    use libc::c_long as L;
    let null = std::ptr::null::<libc::c_char>();
    let ok = |step: Step, index: u32, rc: L| check(plan, step, index, rc);
    // SAFETY (whole block): raw system calls on prepared, NUL-terminated data.
    unsafe {
        // 1. Signals. Rust ignores SIGPIPE and the cloning thread may have
        //    signals blocked; both would survive exec into the function.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        // 2. Close every descriptor copied from the server but our own (see
        //    ChildPlan::keep), in the gaps between the kept ones.
        let mut from = 3u32;
        for &fd in &plan.keep {
            let fd = fd as u32;
            if fd > from {
                libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32);
            }
            from = from.max(fd + 1);
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32);

        //    Stdio: stdin from /dev/null, stdout and stderr into the log
        //    pipe. Then every inherited descriptor of the host (sockets of
        //    the API server, the store) becomes close-on-exec, so none
        //    reaches the function.
        ok(Step::Stdio, 0, libc::dup2(plan.stdin.as_raw_fd(), 0) as L);
        ok(Step::Stdio, 1, libc::dup2(plan.log.as_raw_fd(), 1) as L);
        ok(Step::Stdio, 2, libc::dup2(plan.log.as_raw_fd(), 2) as L);
        ok(
            Step::Stdio,
            3,
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ),
        );

        // 3. Join the cgroups first, before the setup allocates anything, so
        //    every page and process of the sandbox is charged and limited. On
        //    cgroup v1 this write ("0" = myself) is how the child enters its
        //    cgroups before exec (Decision 7).
        for (i, fd) in plan.cgroup_procs.iter().enumerate() {
            ok(
                Step::JoinCgroup,
                i as u32,
                libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) as L,
            );
        }

        // 4. The UTS namespace is ours: a hostname that says nothing of the host.
        ok(
            Step::Hostname,
            0,
            libc::sethostname(plan.hostname.as_ptr(), plan.hostname.as_bytes().len()) as L,
        );

        // 5. Make every mount private before making any: otherwise the mounts
        //    below would propagate back into the host's namespace.
        ok(
            Step::PrivateMounts,
            0,
            libc::mount(
                null,
                SLASH.as_ptr().cast(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) as L,
        );

        // 6. Build the root on the staging directory, still as host root (in
        //    the host's user namespace): mounting ext4 from a loop device
        //    needs that, and it leaves the function's own user namespace
        //    owning no mount namespace at all.
        for (i, op) in plan.ops.iter().enumerate() {
            ok(Step::Mount, i as u32, mount_op(op));
        }

        // 7. The sandbox is warm: everything but the function is ready. Say
        //    so, and wait for the claim that names the function; until then
        //    the sandbox holds no code. A host that goes away closes the
        //    claim pipe without a message, which ends the child here.
        ok(Step::Ready, 0, report(plan, Step::Ready, 0, 0));
        read_claim(plan, ptrs);

        // 8. The function's code (and a managed runtime's client) read-only,
        //    bound from the host paths the claim named, which are still
        //    reachable: pivot_root comes next. A runtime started before its
        //    function has no code yet: /var/task stays an empty mount point
        //    until the host mounts the code from outside.
        let buffer = ptrs.buffer.as_ptr().cast::<libc::c_char>();
        if *buffer != 0 {
            ok(
                Step::MountCode,
                0,
                bind_read_only(buffer, plan.task_target.as_ptr(), false),
            );
        }
        let runtime_dir = buffer.add(libc::strlen(buffer) + 1);
        if *runtime_dir != 0 {
            ok(
                Step::MountCode,
                1,
                bind_read_only(runtime_dir, plan.runtime_target.as_ptr(), false),
            );
        }
        //    The handoff socket survives exec only when the claim says so
        //    (step 2 made every descriptor close-on-exec).
        let handoff = runtime_dir.add(libc::strlen(runtime_dir) + 1);
        if *handoff != 0 {
            ok(
                Step::Claim,
                8,
                libc::fcntl(plan.handoff.as_raw_fd(), libc::F_SETFD, 0) as L,
            );
        }

        // 7. pivot_root into the new root and detach the old one, so no path
        //    of the host remains reachable. pivot_root(".", ".") stacks the old
        //    root on top of the new one; the detach then removes it.
        ok(Step::PivotRoot, 0, libc::chdir(plan.root.as_ptr()) as L);
        ok(
            Step::PivotRoot,
            1,
            libc::syscall(libc::SYS_pivot_root, DOT.as_ptr(), DOT.as_ptr()),
        );
        ok(
            Step::PivotRoot,
            2,
            libc::umount2(DOT.as_ptr().cast(), libc::MNT_DETACH) as L,
        );
        ok(Step::PivotRoot, 3, libc::chdir(SLASH.as_ptr().cast()) as L);

        // 8. The skeleton is complete (every mount point exists): freeze it.
        ok(
            Step::RemountRootReadOnly,
            0,
            libc::mount(
                null,
                SLASH.as_ptr().cast(),
                null,
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV,
                std::ptr::null(),
            ) as L,
        );

        // 9. Become the unprivileged host id: groups first, then gid, then
        //    uid (after setuid we could change neither). Losing uid 0 without
        //    PR_SET_KEEPCAPS clears every capability in the host namespace.
        let id = plan.host_id;
        ok(
            Step::DropGroups,
            0,
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()),
        );
        ok(
            Step::SetIds,
            0,
            libc::syscall(libc::SYS_setresgid, id, id, id),
        );
        ok(
            Step::SetIds,
            1,
            libc::syscall(libc::SYS_setresuid, id, id, id),
        );

        // 10. setuid made the process non-dumpable, which makes /proc/self
        //     root's; the process must own it to write its own id maps.
        ok(
            Step::Dumpable,
            0,
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) as L,
        );

        // 11. The user namespace: created unprivileged, it maps only our own
        //     host id (to uid 993 inside, as Lambda's sbx_user1051), owns no
        //     other namespace, and so grants nothing over mounts or network.
        ok(
            Step::NewUserNamespace,
            0,
            libc::unshare(libc::CLONE_NEWUSER) as L,
        );
        ok(Step::WriteIdMaps, 0, write_file(PATH_SETGROUPS, b"deny"));
        ok(
            Step::WriteIdMaps,
            1,
            write_file(PATH_UID_MAP, &plan.uid_map),
        );
        ok(
            Step::WriteIdMaps,
            2,
            write_file(PATH_GID_MAP, &plan.gid_map),
        );

        // 12. Drop every capability the new namespace handed us: the bounding
        //     set (needs CAP_SETPCAP, which we hold until here), the ambient
        //     set, then the permitted, effective and inheritable sets.
        for cap in 0..=CAPABILITY_LAST {
            let rc = libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            if rc < 0 && *libc::__errno_location() != libc::EINVAL {
                fail(plan, Step::DropCapabilities, cap as u32);
            }
        }
        ok(
            Step::DropCapabilities,
            100,
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ) as L,
        );
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        ok(
            Step::DropCapabilities,
            101,
            libc::syscall(libc::SYS_capset, &header, data.as_ptr()),
        );

        ok(Step::Chdir, 0, libc::chdir(plan.workdir.as_ptr()) as L);

        // 13. Wait until the host listens on 127.0.0.1:9001 in our network
        //     namespace, so the function's first connect finds the Runtime API.
        let mut byte = 0u8;
        if libc::read(plan.go.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) != 1 {
            fail(plan, Step::WaitForHost, 0);
        }

        // 14. Parent-death signal, after the last credential change (setuid,
        //     unshare and capset each reset it), then the check that the
        //     parent did not die before it was armed (Decision 10). getppid()
        //     says 0 here (the parent is outside our pid namespace), so the
        //     check is the go pipe: only the host holds its write end, and it
        //     hangs up when the host dies.
        ok(
            Step::ParentDeathSignal,
            0,
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) as L,
        );
        let mut poll = libc::pollfd {
            fd: plan.go.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut poll, 1, 0) != 0 {
            fail(plan, Step::HostGone, libc::getppid() as u32);
        }

        // 15. no_new_privs: exec can never gain privileges (setuid binaries,
        //     file capabilities), and unprivileged seccomp requires it.
        ok(
            Step::NoNewPrivs,
            0,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as L,
        );

        // 16. seccomp last: the setup above makes calls the allow-list denies.
        for (i, prog) in ptrs.filters.iter().enumerate() {
            ok(
                Step::Seccomp,
                i as u32,
                libc::syscall(
                    libc::SYS_seccomp,
                    1u32, /* SECCOMP_SET_MODE_FILTER */
                    0u32,
                    prog,
                ),
            );
        }

        // 17. Exec. The report pipe is close-on-exec: the host sees EOF.
        libc::execve(ptrs.argv[0], ptrs.argv.as_ptr(), ptrs.envp.as_ptr());
        fail(plan, Step::Exec, 0)
    }
}

/// Reads the claim message into the buffer until the host closes the pipe,
/// then points `argv` and `envp` at its fields (the lists stay ended by the
/// null pointers they were made with).
/// Only system calls and arithmetic on memory prepared before clone.
fn read_claim(plan: &ChildPlan, ptrs: &mut ExecPointers) {
    let capacity = ptrs.buffer.len();
    let buffer = ptrs.buffer.as_mut_ptr();
    let mut len = 0usize;
    loop {
        // SAFETY: read(2) into the prepared buffer, within its length.
        let n = unsafe {
            libc::read(
                plan.claim.as_raw_fd(),
                buffer.add(len).cast(),
                capacity - len,
            )
        };
        if n < 0 {
            // SAFETY: errno location is thread-local and always valid.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            fail(plan, Step::Claim, 0);
        }
        if n == 0 {
            break;
        }
        len += n as usize;
        if len == capacity {
            fail(plan, Step::Claim, 1);
        }
    }
    let bytes = &ptrs.buffer[..len];
    // No message: the host discarded the warm sandbox (or died).
    if len == 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    if bytes[len - 1] != 0 {
        fail(plan, Step::Claim, 2);
    }
    // Field starts: the code path, the runtime path, the handoff flag, then
    // the lists.
    let mut starts = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || bytes[i - 1] == 0)
        .map(|(i, _)| i)
        .skip(3);
    let base = ptrs.buffer.as_ptr().cast::<libc::c_char>();
    let mut fill = |list: &mut Vec<*const libc::c_char>, max: usize, index: u32| -> usize {
        for (count, start) in starts.by_ref().enumerate() {
            if bytes[start] == 0 {
                return count;
            }
            if count == max {
                fail(plan, Step::Claim, index);
            }
            // SAFETY: start is within the buffer.
            list[count] = unsafe { base.add(start) };
        }
        fail(plan, Step::Claim, index + 1)
    };
    if fill(&mut ptrs.argv, limits::CLAIM_ARGS_MAX, 3) == 0 {
        fail(plan, Step::Claim, 7);
    }
    fill(&mut ptrs.envp, limits::CLAIM_ENV_VARS_MAX, 5);
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

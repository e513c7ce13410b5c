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

use crate::root::{MountOp, mount_op};

/// Steps of the child's setup, as reported through the pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    Stdio = 1,
    JoinCgroup,
    Hostname,
    PrivateMounts,
    Mount,
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
    pub hostname: CString,
    /// The staging directory the root is built on.
    pub root: CString,
    pub ops: Vec<MountOp>,
    pub host_id: u32,
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub workdir: CString,
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub filters: Vec<BpfProgram>,
}

/// Prepared pointers into a plan, built by the host before clone.
pub(crate) struct ExecPointers {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    filters: Vec<libc::sock_fprog>,
}

impl ExecPointers {
    pub(crate) fn new(plan: &ChildPlan) -> ExecPointers {
        let nul_terminated = |v: &[CString]| {
            let mut p: Vec<*const libc::c_char> = v.iter().map(|s| s.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        ExecPointers {
            argv: nul_terminated(&plan.argv),
            envp: nul_terminated(&plan.envp),
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

const PATH_SETGROUPS: &[u8] = b"/proc/self/setgroups\0";
const PATH_UID_MAP: &[u8] = b"/proc/self/uid_map\0";
const PATH_GID_MAP: &[u8] = b"/proc/self/gid_map\0";
const DOT: &[u8] = b".\0";
const SLASH: &[u8] = b"/\0";
const CAPABILITY_LAST: libc::c_ulong = 63;

/// Reports a failed step and exits. Only system calls: see the module docs.
fn fail(plan: &ChildPlan, step: Step, index: u32) -> ! {
    // SAFETY: errno location is thread-local and always valid; write and
    // _exit are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let mut report = [0u8; 12];
        report[..4].copy_from_slice(&(step as u32).to_ne_bytes());
        report[4..8].copy_from_slice(&index.to_ne_bytes());
        report[8..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(
            plan.report.as_raw_fd(),
            report.as_ptr().cast(),
            report.len(),
        );
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
pub(crate) unsafe fn run(plan: &ChildPlan, ptrs: &ExecPointers) -> ! {
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

        // 2. Stdio: stdin from /dev/null, stdout and stderr into the log
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
        libc::execve(
            plan.program.as_ptr(),
            ptrs.argv.as_ptr(),
            ptrs.envp.as_ptr(),
        );
        fail(plan, Step::Exec, 0)
    }
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

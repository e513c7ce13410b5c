//! The seccomp allow-list of a sandboxed function, kept as data: one entry
//! per system call with the reason the function may make it.
//!
//! Everything not listed fails with `EPERM` — among others `mount`,
//! `umount2`, `pivot_root`, `chroot`, `ptrace`, `process_vm_readv/writev`,
//! `unshare`, `setns`, `bpf`, `perf_event_open`, `keyctl`, `add_key`,
//! `request_key`, `init_module`, `finit_module`, `delete_module`,
//! `kexec_load`, `reboot`, `swapon`, `acct`, `userfaultfd`, `io_uring_*`,
//! `open_by_handle_at`, `syslog` and `settimeofday`. `clone` is allowed only
//! without namespace flags, and `clone3` (whose flags seccomp cannot read)
//! fails with `ENOSYS` so that libc falls back to `clone`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// One allowed system call and why.
pub struct Allowed {
    /// Syscall number on this architecture.
    pub number: i64,
    /// Its name, for reading and for errors.
    pub name: &'static str,
    /// Why a function may make it.
    pub reason: &'static str,
}

macro_rules! allow {
    ($($name:ident: $reason:literal,)*) => {
        &[$(Allowed { number: libc::$name, name: stringify!($name), reason: $reason },)*]
    };
}

/// System calls a function may make, unconditionally.
pub const ALLOWED: &[Allowed] = allow! {
    SYS_read: "read files, pipes and sockets",
    SYS_write: "write files, pipes, sockets and the log",
    SYS_readv: "vectored reads (libc stdio)",
    SYS_writev: "vectored writes (libc stdio, HTTP clients)",
    SYS_pread64: "the dynamic loader reads ELF headers at offsets",
    SYS_pwrite64: "positioned writes (databases in /tmp)",
    SYS_preadv: "positioned vectored reads",
    SYS_pwritev: "positioned vectored writes",
    SYS_open: "open files (legacy entry point)",
    SYS_openat: "open files",
    SYS_close: "close descriptors",
    SYS_close_range: "runtimes close inherited descriptors before spawning",
    SYS_stat: "file metadata (legacy entry point)",
    SYS_fstat: "file metadata",
    SYS_lstat: "file metadata without following links",
    SYS_newfstatat: "file metadata relative to a directory",
    SYS_statx: "file metadata (Rust std, coreutils)",
    SYS_statfs: "filesystem metadata (Python, coreutils df)",
    SYS_fstatfs: "filesystem metadata of a descriptor",
    SYS_lseek: "seek in files",
    SYS_access: "check file access (shells, the loader)",
    SYS_faccessat: "check file access relative to a directory",
    SYS_faccessat2: "check file access with flags (glibc 2.33+)",
    SYS_readlink: "resolve symbolic links",
    SYS_readlinkat: "resolve symbolic links relative to a directory",
    SYS_getdents64: "list directories",
    SYS_getcwd: "current directory",
    SYS_chdir: "change directory",
    SYS_fchdir: "change directory by descriptor",
    SYS_mkdir: "make directories in /tmp",
    SYS_mkdirat: "make directories in /tmp",
    SYS_rmdir: "remove directories in /tmp",
    SYS_unlink: "remove files in /tmp",
    SYS_unlinkat: "remove files in /tmp",
    SYS_rename: "rename files in /tmp",
    SYS_renameat: "rename files in /tmp",
    SYS_renameat2: "rename files in /tmp",
    SYS_link: "hard links in /tmp",
    SYS_linkat: "hard links in /tmp",
    SYS_symlink: "symbolic links in /tmp",
    SYS_symlinkat: "symbolic links in /tmp",
    SYS_chmod: "file modes in /tmp",
    SYS_fchmod: "file modes in /tmp",
    SYS_fchmodat: "file modes in /tmp",
    SYS_chown: "file owners in /tmp (only to its own id)",
    SYS_fchown: "file owners in /tmp (only to its own id)",
    SYS_fchownat: "file owners in /tmp (only to its own id)",
    SYS_lchown: "file owners in /tmp (only to its own id)",
    SYS_umask: "file creation mask",
    SYS_truncate: "resize files in /tmp",
    SYS_ftruncate: "resize files in /tmp",
    SYS_fallocate: "reserve space in /tmp",
    SYS_fsync: "flush files",
    SYS_fdatasync: "flush file data",
    SYS_sync_file_range: "flush file ranges",
    SYS_utimensat: "file times",
    SYS_utimes: "file times (legacy entry point)",
    SYS_getxattr: "read extended attributes (ls, cp)",
    SYS_lgetxattr: "read extended attributes (ls, cp)",
    SYS_fgetxattr: "read extended attributes (ls, cp)",
    SYS_listxattr: "list extended attributes (ls, cp)",
    SYS_llistxattr: "list extended attributes (ls, cp)",
    SYS_flistxattr: "list extended attributes (ls, cp)",
    SYS_sync: "flush everything it wrote",
    SYS_syncfs: "flush /tmp",
    SYS_fadvise64: "read-ahead hints",
    SYS_copy_file_range: "copy files (coreutils cp, Python shutil)",
    SYS_sendfile: "copy between descriptors",
    SYS_splice: "move data between pipes",
    SYS_tee: "duplicate pipe data",
    SYS_flock: "advisory file locks",
    SYS_fcntl: "descriptor flags and locks",
    SYS_ioctl: "terminal and socket controls (FIONBIO, TCGETS)",
    SYS_dup: "duplicate descriptors",
    SYS_dup2: "duplicate descriptors (shell redirections)",
    SYS_dup3: "duplicate descriptors with flags",
    SYS_pipe: "pipes (shell pipelines)",
    SYS_pipe2: "pipes with flags",
    SYS_memfd_create: "anonymous files (JITs, runtimes)",
    SYS_mmap: "map memory and files",
    SYS_munmap: "unmap memory",
    SYS_mprotect: "memory protection (the loader, JITs)",
    SYS_mremap: "grow mappings (allocators)",
    SYS_madvise: "memory advice (allocators return memory)",
    SYS_mincore: "memory residency (some allocators)",
    SYS_msync: "flush mapped files",
    SYS_mlock: "lock memory (crypto libraries)",
    SYS_munlock: "unlock memory",
    SYS_brk: "grow the heap",
    SYS_membarrier: "memory barriers (runtimes)",
    SYS_execve: "exec the runtime and the programs a function runs",
    SYS_execveat: "exec by descriptor",
    SYS_fork: "create processes (legacy entry point)",
    SYS_vfork: "create processes (posix_spawn)",
    SYS_wait4: "wait for child processes",
    SYS_waitid: "wait for child processes",
    SYS_exit: "end a thread",
    SYS_exit_group: "end the process",
    SYS_kill: "signal its own processes (the pid namespace hides others)",
    SYS_tkill: "signal its own threads",
    SYS_tgkill: "signal its own threads",
    SYS_rt_sigaction: "install signal handlers",
    SYS_rt_sigprocmask: "block signals",
    SYS_rt_sigreturn: "return from signal handlers",
    SYS_rt_sigsuspend: "wait for signals",
    SYS_rt_sigtimedwait: "wait for signals",
    SYS_rt_sigpending: "pending signals",
    SYS_rt_sigqueueinfo: "queue signals to its own processes",
    SYS_sigaltstack: "signal stacks (Rust, Go)",
    SYS_pause: "wait for a signal",
    SYS_getpid: "process id",
    SYS_getppid: "parent process id",
    SYS_gettid: "thread id",
    SYS_getpgrp: "process group (shells)",
    SYS_getpgid: "process group (shells)",
    SYS_setpgid: "job control (shells)",
    SYS_getsid: "session id",
    SYS_setsid: "new session (daemonizing helpers)",
    SYS_getuid: "user id",
    SYS_geteuid: "effective user id",
    SYS_getgid: "group id",
    SYS_getegid: "effective group id",
    SYS_getresuid: "user ids",
    SYS_getresgid: "group ids",
    SYS_getgroups: "supplementary groups",
    SYS_capget: "read capabilities (all are dropped)",
    SYS_seccomp: "runtimes may restrict themselves further (a filter only adds restrictions); also installs this list's second filter",
    SYS_prctl: "thread names, no_new_privs (capabilities are already gone)",
    SYS_arch_prctl: "thread-local storage setup",
    SYS_set_tid_address: "thread start-up (libc)",
    SYS_set_robust_list: "thread start-up (libc)",
    SYS_get_robust_list: "robust futexes",
    SYS_rseq: "restartable sequences (glibc 2.35+)",
    SYS_futex: "locks and condition variables",
    SYS_futex_waitv: "waiting on several futexes",
    SYS_sched_yield: "yield the CPU",
    SYS_sched_getaffinity: "count usable CPUs (Rust, Python)",
    SYS_sched_setaffinity: "pin threads to its CPUs",
    SYS_sched_getparam: "scheduling parameters",
    SYS_sched_get_priority_max: "priority range (thread pools)",
    SYS_sched_get_priority_min: "priority range (thread pools)",
    SYS_getcpu: "current CPU (allocators, runtimes)",
    SYS_get_mempolicy: "NUMA policy queries (allocators)",
    SYS_sched_getscheduler: "scheduling policy",
    SYS_getpriority: "nice value",
    SYS_setpriority: "lower its own priority",
    SYS_getrlimit: "resource limits",
    SYS_setrlimit: "lower its own resource limits",
    SYS_prlimit64: "resource limits (libc start-up, Rust std)",
    SYS_getrusage: "resource usage",
    SYS_times: "process times",
    SYS_sysinfo: "memory and uptime (runtimes size their heaps)",
    SYS_uname: "kernel name and version",
    SYS_getrandom: "random numbers (hash seeds, TLS)",
    SYS_clock_gettime: "clocks",
    SYS_clock_getres: "clock resolution",
    SYS_clock_nanosleep: "sleep",
    SYS_gettimeofday: "wall clock",
    SYS_time: "wall clock",
    SYS_nanosleep: "sleep",
    SYS_alarm: "timers (shell scripts)",
    SYS_setitimer: "interval timers",
    SYS_getitimer: "interval timers",
    SYS_timer_create: "POSIX timers",
    SYS_timer_settime: "POSIX timers",
    SYS_timer_gettime: "POSIX timers",
    SYS_timer_delete: "POSIX timers",
    SYS_timerfd_create: "timers for event loops",
    SYS_timerfd_settime: "timers for event loops",
    SYS_timerfd_gettime: "timers for event loops",
    SYS_eventfd: "event loop wake-ups",
    SYS_eventfd2: "event loop wake-ups",
    SYS_signalfd4: "signals for event loops",
    SYS_epoll_create: "event loops",
    SYS_epoll_create1: "event loops",
    SYS_epoll_ctl: "event loops",
    SYS_epoll_wait: "event loops",
    SYS_epoll_pwait: "event loops",
    SYS_epoll_pwait2: "event loops",
    SYS_poll: "wait on descriptors",
    SYS_ppoll: "wait on descriptors",
    SYS_select: "wait on descriptors",
    SYS_pselect6: "wait on descriptors",
    SYS_inotify_init1: "file watching (some runtimes)",
    SYS_inotify_add_watch: "file watching",
    SYS_inotify_rm_watch: "file watching",
    SYS_connect: "reach the Runtime API (the only address in its network)",
    SYS_bind: "local sockets",
    SYS_listen: "local sockets",
    SYS_accept: "local sockets",
    SYS_accept4: "local sockets",
    SYS_getsockname: "socket addresses",
    SYS_getpeername: "socket addresses",
    SYS_setsockopt: "socket options (TCP_NODELAY)",
    SYS_getsockopt: "socket options and connect results",
    SYS_sendto: "send on sockets",
    SYS_recvfrom: "receive on sockets",
    SYS_sendmsg: "send on sockets",
    SYS_recvmsg: "receive on sockets",
    SYS_sendmmsg: "send on sockets (resolvers)",
    SYS_recvmmsg: "receive on sockets",
    SYS_shutdown: "close a socket direction",
    SYS_socketpair: "connected local sockets (runtimes, subprocesses)",
};

/// Socket domains a function may open; netlink and packet sockets are refused.
const SOCKET_DOMAINS: &[(u64, &str)] = &[
    (
        libc::AF_UNIX as u64,
        "local sockets between a function's own processes",
    ),
    (
        libc::AF_INET as u64,
        "TCP to the Runtime API at 127.0.0.1:9001",
    ),
    (
        libc::AF_INET6 as u64,
        "runtimes that probe for IPv6 support",
    ),
];

/// `clone` flags that create namespaces: a function may not make its own.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// A failure to compile the filters.
#[derive(Debug, thiserror::Error)]
#[error("compiling the seccomp filter: {0}")]
pub struct SeccompError(String);

fn arch() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
    #[cfg(target_arch = "x86_64")]
    return TargetArch::x86_64;
}

/// Compiles the filters a sandbox installs just before exec, in the order
/// they must be installed: the allow-list, then the `clone3` → `ENOSYS` filter
/// (installed last, so its answer wins over the allow-list's `EPERM`).
pub fn compile() -> Result<Vec<BpfProgram>, SeccompError> {
    let err = |e: seccompiler::BackendError| SeccompError(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|a| (a.number, Vec::new())).collect();
    let mut socket_rules = Vec::new();
    for (domain, _reason) in SOCKET_DOMAINS {
        let cond = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *domain)
            .map_err(err)?;
        socket_rules.push(SeccompRule::new(vec![cond]).map_err(err)?);
    }
    rules.insert(libc::SYS_socket, socket_rules);
    let no_namespaces = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
        0,
    )
    .map_err(err)?;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![no_namespaces]).map_err(err)?],
    );
    let allow_list = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch(),
    )
    .map_err(err)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )
    .map_err(err)?;
    Ok(vec![
        BpfProgram::try_from(allow_list).map_err(err)?,
        BpfProgram::try_from(clone3).map_err(err)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_call_has_a_reason_and_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for a in ALLOWED {
            assert!(!a.reason.is_empty(), "{} has no reason", a.name);
            assert!(seen.insert(a.number), "{} listed twice", a.name);
        }
        for denied in [
            libc::SYS_mount,
            libc::SYS_ptrace,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_init_module,
        ] {
            assert!(!seen.contains(&denied));
        }
    }

    #[test]
    fn filters_compile() {
        assert_eq!(compile().unwrap().len(), 2);
    }
}

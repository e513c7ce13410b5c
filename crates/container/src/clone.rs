//! Creating the sandbox's first process: `clone`, or `clone3` straight
//! into its cgroup where every controller is on cgroup v2 (Decision 7).

use std::fs::File;
use std::io;

use crate::launch::ExitStatus;

/// `clone` as fork, into new namespaces. Returns 0 in the child.
///
/// # Safety
/// The child is a copy of a multi-threaded process: it may only make system
/// calls on prepared data (see [`child`]) until it execs or exits.
pub(crate) unsafe fn clone_plain(flags: libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: clone without a new stack behaves as fork (caller's contract).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid as libc::pid_t)
    }
}

/// `struct clone_args` of `<linux/sched.h>` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3` as fork, into new namespaces and straight into the cgroup v2
/// directory `cgroup`. Returns 0 in the child.
///
/// # Safety
/// As [`clone_plain`].
pub(crate) unsafe fn clone_into_cgroup(
    flags: libc::c_int,
    cgroup: &File,
) -> io::Result<libc::pid_t> {
    use std::os::fd::AsRawFd;
    let args = CloneArgs {
        flags: flags as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args; a zero stack makes clone3 behave
    // as fork (caller's contract).
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args, std::mem::size_of::<CloneArgs>()) };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid as libc::pid_t)
    }
}

pub(crate) fn reap(pid: libc::pid_t) -> ExitStatus {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if rc == pid || (rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return ExitStatus(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    /// The clone3 path runs only where every controller is on v2; its
    /// plumbing is checked here on any v2 mount, with or without controllers.
    #[test]
    fn clone3_places_the_child_in_a_v2_cgroup() {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(mount) = info.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).unwrap().to_owned())
        }) else {
            eprintln!("SKIPPED: no cgroup v2 mount on this host");
            return;
        };
        let name = format!("nimbus-clone3-test-{}", std::process::id());
        let dir = Path::new(&mount).join(&name);
        if fs::create_dir(&dir).is_err() {
            eprintln!("SKIPPED: cannot create a cgroup under {mount}");
            return;
        }
        let fd = File::open(&dir).unwrap();
        // SAFETY: the child only calls pause and _exit.
        let pid = unsafe { clone_into_cgroup(0, &fd) }.unwrap();
        if pid == 0 {
            // SAFETY: async-signal-safe calls only.
            unsafe {
                libc::pause();
                libc::_exit(0)
            }
        }
        let membership = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reap(pid);
        fs::remove_dir(&dir).unwrap();
        assert!(
            membership.lines().any(|l| l == format!("0::/{name}")),
            "{membership}"
        );
    }
}

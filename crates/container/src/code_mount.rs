//! Mounting a function's code into a sandbox that is already running: the
//! last step of a claim for a runtime started before its function (see
//! [`crate::Preloaded`]).
//!
//! The sandbox's root was pivoted long ago, so no host path reaches it from
//! inside; the mount is made from outside instead, with the mount API
//! (`mount_setattr` is Linux 5.12+; where it is missing the pool stops
//! preloading):
//!
//! 1. `open_tree(OPEN_TREE_CLONE)` copies the code directory's mount into a
//!    detached tree, in the host's mount namespace;
//! 2. `mount_setattr` makes that tree read-only, nosuid and nodev *before*
//!    the sandbox can see it;
//! 3. a short-lived helper enters the sandbox's mount namespace (`setns`,
//!    which a multi-threaded process may not do, hence the helper: a
//!    `CLONE_VM | CLONE_VFORK` child, which copies no page tables and has
//!    its own filesystem context) and attaches the tree at `/var/task` with
//!    `move_mount`.
//!
//! The sandbox's mount namespace belongs to the host's user namespace (the
//! sandbox's own user namespace is made later, unprivileged, and owns
//! none), so only the host can do this, and the function can neither undo
//! nor change the mount.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `<linux/mount.h>`.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;
const MOUNT_ATTR_NOSUID: u64 = 2;
const MOUNT_ATTR_NODEV: u64 = 4;

/// `struct mount_attr` of `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Where the code goes, inside the sandbox.
const TARGET: &std::ffi::CStr = c"/var/task";
/// The helper's stack: it makes three system calls.
const HELPER_STACK_BYTES: usize = 64 * 1024;

/// Which of the helper's calls failed, in its exit status.
const STEP_SETNS: i32 = 1;
const STEP_MOVE_MOUNT: i32 = 2;

/// A failed step of mounting the code, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct CodeMountError {
    /// What was being done.
    pub step: &'static str,
    /// The system's answer.
    #[source]
    pub source: io::Error,
}

fn failed(step: &'static str) -> CodeMountError {
    CodeMountError {
        step,
        source: io::Error::last_os_error(),
    }
}

/// What the helper needs, prepared before it runs (it may not allocate).
struct HelperArgs {
    namespace: libc::c_int,
    tree: libc::c_int,
}

/// Mounts `code_dir` read-only at `/var/task` in the mount namespace of the
/// sandbox whose first process is `pid`. Blocks for about a millisecond.
pub(crate) fn mount_code(pid: libc::pid_t, code_dir: &Path) -> Result<(), CodeMountError> {
    let source = CString::new(code_dir.as_os_str().as_bytes()).map_err(|_| CodeMountError {
        step: "name the code directory",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // 1. A detached copy of the code directory's mount.
    // SAFETY: open_tree(2) on a NUL-terminated path; the result is a new fd.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(failed("copy the code directory's mount (open_tree)"));
    }
    // SAFETY: tree is a fresh descriptor owned here.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as libc::c_int) };
    // 2. Read-only before anyone in the sandbox can see it.
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) on our tree with a valid mount_attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(failed("make the code's mount read-only (mount_setattr)"));
    }
    let namespace = File::open(format!("/proc/{pid}/ns/mnt")).map_err(|source| CodeMountError {
        step: "open the sandbox's mount namespace",
        source,
    })?;
    // 3. The helper attaches it inside.
    let mut args = HelperArgs {
        namespace: namespace.as_raw_fd(),
        tree: tree.as_raw_fd(),
    };
    let mut stack = vec![0u8; HELPER_STACK_BYTES];
    // SAFETY: the stack grows down from its end (16-byte aligned); with
    // CLONE_VFORK this thread waits until the helper has exited, so `args`
    // and `stack` outlive it; the helper makes only system calls.
    let helper = unsafe {
        let top = stack.as_mut_ptr().add(HELPER_STACK_BYTES);
        let top = top.sub(top as usize % 16);
        libc::clone(
            attach,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut args as *mut HelperArgs).cast(),
        )
    };
    if helper < 0 {
        return Err(failed("start the mount helper (clone)"));
    }
    let status = crate::clone::reap(helper).0;
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(());
    }
    // The failed step and the errno, as `attach` encodes them.
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        0
    };
    let (step, errno) = (code >> 6, code & 0x3f);
    Err(CodeMountError {
        step: match step {
            STEP_SETNS => "enter the sandbox's mount namespace (setns)",
            STEP_MOVE_MOUNT => "attach the code at /var/task (move_mount)",
            _ => "run the mount helper",
        },
        source: io::Error::from_raw_os_error(errno),
    })
}

/// The helper: enter the sandbox's mount namespace, attach the tree. Its
/// exit code is 0, or the failed step in bits 6–7 and the errno (all the
/// ones these calls give are below 64) in bits 0–5.
extern "C" fn attach(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `args` points at the HelperArgs of mount_code, alive until we
    // exit; only system calls follow.
    unsafe {
        let args = &*args.cast::<HelperArgs>();
        let errno = || (*libc::__errno_location()).min(0x3f);
        if libc::setns(args.namespace, libc::CLONE_NEWNS) < 0 {
            libc::_exit(STEP_SETNS << 6 | errno());
        }
        let rc = libc::syscall(
            libc::SYS_move_mount,
            args.tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            TARGET.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        );
        if rc < 0 {
            libc::_exit(STEP_MOVE_MOUNT << 6 | errno());
        }
        libc::_exit(0)
    }
}

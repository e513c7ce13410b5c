//! The sandbox's root: which host paths it holds and how it is built.
//!
//! The host turns the layout into a list of [`MountOp`]s (with every path
//! as C data) before `clone`; the child executes them in order, as host
//! root in its own mount namespace, on a staging directory it then
//! `pivot_root`s into.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::StartError;

/// Host directories bound read-only into every sandbox (or recreated as the
/// same symbolic link on merged-/usr hosts): what a shell script, a
/// dynamically linked binary and python3 need to run.
const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"];

/// Pieces of the host's /etc a runtime reads: the loader's cache, time zone
/// data, name service switch and TLS roots. Nothing about the host's users.
const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "nsswitch.conf",
    "ssl",
    "ca-certificates",
    "alternatives",
    "mime.types",
];

/// Device nodes a runtime opens; bound from the host's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// /etc files written for the sandbox instead of taken from the host.
const ETC_PASSWD: &str =
    "root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:993:993::/tmp:/sbin/nologin\n";
const ETC_GROUP: &str = "root:x:0:\nsbx_user1051:x:993:\n";
const ETC_HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n";

/// One step of building the sandbox's root, in order.
pub(crate) enum MountOp {
    /// A small tmpfs as the skeleton of the new root (read-only after pivot).
    RootTmpfs { target: CString },
    /// A directory in the skeleton.
    MakeDir { path: CString },
    /// A symbolic link in the skeleton (merged-/usr hosts: `/bin -> usr/bin`).
    Symlink { target: CString, link: CString },
    /// A file in the skeleton with the given content.
    WriteFile { path: CString, content: Vec<u8> },
    /// A read-only bind mount of a host path; `devices` keeps device nodes usable.
    BindReadOnly {
        source: CString,
        target: CString,
        devices: bool,
    },
    /// The `/tmp` disk.
    Ext4 { device: CString, target: CString },
    /// A fresh `/proc` of the sandbox's pid namespace.
    Proc { target: CString },
}

impl MountOp {
    /// Name of the step and the path it acted on, for errors.
    pub(crate) fn describe(&self) -> (&'static str, PathBuf) {
        let path = |c: &CString| PathBuf::from(c.to_string_lossy().into_owned());
        match self {
            MountOp::RootTmpfs { target } => ("mount the root tmpfs", path(target)),
            MountOp::MakeDir { path: p } => ("make a mount point", path(p)),
            MountOp::Symlink { link, .. } => ("make a symbolic link", path(link)),
            MountOp::WriteFile { path: p, .. } => ("write a file", path(p)),
            MountOp::BindReadOnly { source, .. } => ("bind-mount read-only", path(source)),
            MountOp::Ext4 { device, .. } => ("mount the /tmp disk", path(device)),
            MountOp::Proc { target } => ("mount /proc", path(target)),
        }
    }
}

/// Mount options of the `/tmp` disk. The disk is thrown away with the
/// sandbox, so nothing in it needs to reach the host's disk:
/// - `noinit_itable`: the image is sparse, so its inode tables already read
///   as zeros; without it a kernel thread would write zeros over them after
///   every mount — megabytes of I/O per sandbox.
/// - `nobarrier`: no cache flushes, which the loop device turns into an
///   `fsync` of the image on the host; with them, a sandbox's exit (which
///   unmounts) waits for the host's disk, seconds when it is busy.
const TMP_MOUNT_OPTIONS: &std::ffi::CStr = c"noinit_itable,nobarrier";

pub(crate) fn cstring(path: impl AsRef<[u8]>) -> Result<CString, StartError> {
    CString::new(path.as_ref())
        .map_err(|_| StartError::InvalidConfig("a path or argument holds a NUL byte".to_owned()))
}

pub(crate) fn cpath(p: &Path) -> Result<CString, StartError> {
    cstring(p.as_os_str().as_bytes())
}

/// The steps that build the sandbox's root on `root`.
pub(crate) fn root_ops(root: &Path, tmp_device: &Path) -> Result<Vec<MountOp>, StartError> {
    let at = |rel: &str| cpath(&root.join(rel));
    let mut ops = vec![MountOp::RootTmpfs {
        target: cpath(root)?,
    }];
    for dir in SYSTEM_DIRS {
        let host = Path::new("/").join(dir);
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target =
                    fs::read_link(&host).map_err(|e| StartError::InspectHost(host.clone(), e))?;
                ops.push(MountOp::Symlink {
                    target: cpath(&target)?,
                    link: at(dir)?,
                });
            }
            Ok(meta) if meta.is_dir() => {
                ops.push(MountOp::MakeDir { path: at(dir)? });
                ops.push(MountOp::BindReadOnly {
                    source: cpath(&host)?,
                    target: at(dir)?,
                    devices: false,
                });
            }
            _ => {}
        }
    }
    ops.push(MountOp::MakeDir { path: at("etc")? });
    for entry in ETC_ENTRIES {
        let host = Path::new("/etc").join(entry);
        let rel = format!("etc/{entry}");
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target =
                    fs::read_link(&host).map_err(|e| StartError::InspectHost(host.clone(), e))?;
                ops.push(MountOp::Symlink {
                    target: cpath(&target)?,
                    link: at(&rel)?,
                });
            }
            Ok(meta) => {
                let point = if meta.is_dir() {
                    MountOp::MakeDir { path: at(&rel)? }
                } else {
                    MountOp::WriteFile {
                        path: at(&rel)?,
                        content: Vec::new(),
                    }
                };
                ops.push(point);
                ops.push(MountOp::BindReadOnly {
                    source: cpath(&host)?,
                    target: at(&rel)?,
                    devices: false,
                });
            }
            Err(_) => {}
        }
    }
    for (name, content) in [
        ("passwd", ETC_PASSWD),
        ("group", ETC_GROUP),
        ("hosts", ETC_HOSTS),
    ] {
        ops.push(MountOp::WriteFile {
            path: at(&format!("etc/{name}"))?,
            content: content.as_bytes().to_vec(),
        });
    }
    for dir in [
        "var",
        "var/task",
        // Inside the empty mount point, for a runtime started before its
        // code: the dynamic loader searches LD_LIBRARY_PATH's
        // /var/task/lib when the runtime starts and remembers a missing
        // directory for the life of the process, so it must exist then.
        "var/task/lib",
        "var/runtime",
        "opt",
        "opt/lib",
        "tmp",
        "proc",
        "dev",
    ] {
        ops.push(MountOp::MakeDir { path: at(dir)? });
    }
    // `var/task` and `var/runtime` are mounted at claim (child::run, step 8).
    ops.push(MountOp::Ext4 {
        device: cpath(tmp_device)?,
        target: at("tmp")?,
    });
    ops.push(MountOp::Proc {
        target: at("proc")?,
    });
    for dev in DEVICES {
        let rel = format!("dev/{dev}");
        ops.push(MountOp::WriteFile {
            path: at(&rel)?,
            content: Vec::new(),
        });
        ops.push(MountOp::BindReadOnly {
            source: cstring(format!("/dev/{dev}"))?,
            target: at(&rel)?,
            devices: true,
        });
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            target: cstring(target)?,
            link: at(&format!("dev/{link}"))?,
        });
    }
    Ok(ops)
}

/// Binds `source` at `target` read-only, nosuid, and nodev unless `devices`.
/// Returns the failing call's result. Only system calls: the child calls it.
///
/// # Safety
/// Both must be NUL-terminated strings.
pub(crate) unsafe fn bind_read_only(
    source: *const libc::c_char,
    target: *const libc::c_char,
    devices: bool,
) -> libc::c_long {
    let null = std::ptr::null::<libc::c_char>();
    let nodata = std::ptr::null::<libc::c_void>();
    // SAFETY: the caller passes NUL-terminated strings.
    unsafe {
        if libc::mount(source, target, null, libc::MS_BIND, nodata) < 0 {
            return -1;
        }
        // A bind mount takes the flags of its source; read-only (and
        // nosuid, nodev unless it is a device) takes a remount.
        let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID;
        if !devices {
            flags |= libc::MS_NODEV;
        }
        libc::mount(null, target, null, flags, nodata) as libc::c_long
    }
}

/// One root-building step. Returns the failing call's result.
pub(crate) unsafe fn mount_op(op: &MountOp) -> libc::c_long {
    let nodata = std::ptr::null::<libc::c_void>();
    // SAFETY: all strings are NUL-terminated and owned by the plan.
    unsafe {
        match op {
            MountOp::RootTmpfs { target } => libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=1m,mode=0755".as_ptr().cast(),
            ) as libc::c_long,
            MountOp::MakeDir { path } => libc::mkdir(path.as_ptr(), 0o755) as libc::c_long,
            MountOp::Symlink { target, link } => {
                libc::symlink(target.as_ptr(), link.as_ptr()) as libc::c_long
            }
            MountOp::WriteFile { path, content } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    return -1;
                }
                let n = libc::write(fd, content.as_ptr().cast(), content.len());
                libc::close(fd);
                if n < 0 { -1 } else { 0 }
            }
            MountOp::BindReadOnly {
                source,
                target,
                devices,
            } => bind_read_only(source.as_ptr(), target.as_ptr(), *devices),
            MountOp::Ext4 { device, target } => libc::mount(
                device.as_ptr(),
                target.as_ptr(),
                c"ext4".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                TMP_MOUNT_OPTIONS.as_ptr().cast(),
            ) as libc::c_long,
            MountOp::Proc { target } => libc::mount(
                c"proc".as_ptr(),
                target.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                nodata,
            ) as libc::c_long,
        }
    }
}

//! Start-up sweep: removes what sandboxes of a killed predecessor left.
//!
//! A predecessor that was SIGKILLed leaves no running sandbox process: each
//! sandbox's init has a parent-death signal, and the kernel kills the rest of
//! its pid namespace with it; its mounts and the `/tmp` loop device go with
//! the namespace. What does stay is on the host's filesystems: the cgroup
//! directories and the state directories (the `/tmp` images). They are
//! tagged with the predecessor's tag, so the sweep touches only those.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::HostConfig;
use crate::cgroup::{CgroupError, CgroupLayout};

/// A failure of the sweep, naming the step and its path.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The cgroups could not be found or removed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A leftover state directory could not be removed.
    #[error("removing sandbox state {0}: {1}")]
    RemoveState(PathBuf, io::Error),
}

/// What the sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Sandbox cgroup directories removed (one per hierarchy per sandbox).
    pub cgroups: usize,
    /// Sandbox state directories removed.
    pub state_dirs: usize,
}

/// Removes every sandbox cgroup tagged `host.tag` (killing any process
/// still in one) and every sandbox state directory under `host.state_dir`.
///
/// Call it once at start-up, while holding the data directory's lock and
/// before any sandbox of this instance starts: it would remove those too.
pub fn sweep(host: &HostConfig) -> Result<SweepReport, SweepError> {
    let mut report = SweepReport {
        cgroups: CgroupLayout::discover()?.sweep(&host.tag)?,
        state_dirs: 0,
    };
    let Ok(entries) = fs::read_dir(&host.state_dir) else {
        return Ok(report);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Dot-names are not sandboxes (the /tmp templates): they are kept.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path).map_err(|e| SweepError::RemoveState(path.clone(), e))?;
            report.state_dirs += 1;
        }
    }
    Ok(report)
}

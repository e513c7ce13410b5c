//! cgroup limits for one sandbox, on whichever hierarchy holds each controller.
//!
//! Hosts differ: this machine kind mounts the memory, cpu and pids controllers
//! on cgroup v1 (`/sys/fs/cgroup/<controller>`) and has a v2 mount without
//! controllers; a modern host has them all on one v2 hierarchy. So each
//! controller is looked up in `/proc/self/mountinfo` and used where it lives.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::limits;

/// A failure to find or use cgroups, naming the step and its path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/self/mountinfo` could not be read.
    #[error("reading /proc/self/mountinfo: {0}")]
    ReadMountinfo(io::Error),
    /// No hierarchy on this host holds the controller.
    #[error("the {0} cgroup controller is mounted nowhere (neither v1 nor v2)")]
    ControllerMissing(&'static str),
    /// A cgroup directory could not be created.
    #[error("creating cgroup {0}: {1}")]
    CreateDir(PathBuf, io::Error),
    /// A limit or control file could not be written.
    #[error("writing {0}: {1}")]
    WriteFile(PathBuf, io::Error),
    /// A cgroup still held processes after the sandbox was killed.
    #[error("removing cgroup {0}: {1}")]
    RemoveDir(PathBuf, io::Error),
}

/// cgroup version of a hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller (or group of controllers).
    V1,
    /// The unified hierarchy.
    V2,
}

/// Where one controller lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// Mount point of the hierarchy.
    pub mount: PathBuf,
    /// Its version.
    pub version: Version,
}

/// Where the memory, cpu and pids controllers are mounted on this host.
#[derive(Clone, Debug)]
pub struct CgroupLayout {
    /// Hierarchy of the memory controller.
    pub memory: Hierarchy,
    /// Hierarchy of the cpu controller.
    pub cpu: Hierarchy,
    /// Hierarchy of the pids controller.
    pub pids: Hierarchy,
}

impl CgroupLayout {
    /// Finds each controller in `/proc/self/mountinfo`, preferring a v1
    /// hierarchy that holds it, else a v2 one whose root offers it.
    pub fn discover() -> Result<CgroupLayout, CgroupError> {
        let info =
            fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::ReadMountinfo)?;
        let mut v1: Vec<(PathBuf, Vec<String>)> = Vec::new();
        let mut v2: Vec<PathBuf> = Vec::new();
        for line in info.lines() {
            // Fields: id parent major:minor root mount-point options [optional…] - type source super-options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or("");
            let super_options = right.nth(1).unwrap_or("");
            match fstype {
                "cgroup" => v1.push((
                    PathBuf::from(mount),
                    super_options.split(',').map(str::to_owned).collect(),
                )),
                "cgroup2" => v2.push(PathBuf::from(mount)),
                _ => {}
            }
        }
        let find = |name: &'static str| -> Result<Hierarchy, CgroupError> {
            if let Some((mount, _)) = v1.iter().find(|(_, opts)| opts.iter().any(|o| o == name)) {
                return Ok(Hierarchy {
                    mount: mount.clone(),
                    version: Version::V1,
                });
            }
            for mount in &v2 {
                let offered =
                    fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
                if offered.split_whitespace().any(|c| c == name) {
                    return Ok(Hierarchy {
                        mount: mount.clone(),
                        version: Version::V2,
                    });
                }
            }
            Err(CgroupError::ControllerMissing(name))
        };
        Ok(CgroupLayout {
            memory: find("memory")?,
            cpu: find("cpu")?,
            pids: find("pids")?,
        })
    }

    /// Whether every controller is on cgroup v2, so a child can be cloned
    /// straight into its cgroup (`clone3(CLONE_INTO_CGROUP)`).
    pub fn all_v2(&self) -> bool {
        [&self.memory, &self.cpu, &self.pids]
            .iter()
            .all(|h| h.version == Version::V2)
    }

    /// The directory holding every sandbox cgroup of one platform instance.
    fn group_dir(hierarchy: &Hierarchy, tag: &str) -> PathBuf {
        hierarchy.mount.join(format!("nimbus-{tag}"))
    }

    /// Kills whatever a predecessor with the same tag left in its cgroups
    /// and removes them and their group; returns how many sandbox cgroups
    /// were removed.
    pub fn sweep(&self, tag: &str) -> Result<usize, CgroupError> {
        let mut removed = 0;
        for hierarchy in self.hierarchies() {
            let group = Self::group_dir(&hierarchy, tag);
            let Ok(entries) = fs::read_dir(&group) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    kill_and_remove(&entry.path(), hierarchy.version)?;
                    removed += 1;
                }
            }
            // The group itself goes too, so a tag that is never used again
            // leaves nothing; this instance recreates it on its first sandbox.
            let _ = fs::remove_dir(&group);
        }
        Ok(removed)
    }

    /// The distinct hierarchies (cpu and memory may share one on v2).
    fn hierarchies(&self) -> Vec<Hierarchy> {
        let mut all: Vec<Hierarchy> = Vec::new();
        for h in [&self.memory, &self.cpu, &self.pids] {
            if !all.contains(h) {
                all.push(h.clone());
            }
        }
        all
    }
}

/// The limits a sandbox's cgroups enforce.
#[derive(Clone, Copy, Debug)]
pub struct CgroupLimits {
    /// MemorySize in MB.
    pub memory_mb: u32,
    /// Processes and threads at once.
    pub pids_max: u32,
}

/// The cgroups of one sandbox, one directory per distinct hierarchy.
#[derive(Debug)]
pub struct SandboxCgroup {
    dirs: Vec<(PathBuf, Version)>,
    memory: (PathBuf, Version),
    /// The layout the directories were made in, for later limit changes.
    layout: CgroupLayout,
    /// The peak-usage file, kept open: read once per invocation, a `pread`
    /// costs one system call where open, stat, read and close cost four.
    peak: Option<fs::File>,
}

impl SandboxCgroup {
    /// Creates the sandbox's cgroups under `nimbus-<tag>/<id>` and writes its limits.
    pub fn create(
        layout: &CgroupLayout,
        tag: &str,
        id: &str,
        limits_: CgroupLimits,
    ) -> Result<SandboxCgroup, CgroupError> {
        let mut cgroup = SandboxCgroup {
            dirs: Vec::new(),
            memory: (PathBuf::new(), layout.memory.version),
            layout: layout.clone(),
            peak: None,
        };
        for hierarchy in layout.hierarchies() {
            let group = CgroupLayout::group_dir(&hierarchy, tag);
            let dir = group.join(id);
            // The group may vanish between its creation and ours (a sweep or
            // the last sandbox of a tag removing it): then make it again.
            let mut attempt = 0;
            loop {
                attempt += 1;
                ensure_group(layout, &hierarchy, &group)?;
                match fs::create_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 3 => continue,
                    Err(e) => return Err(CgroupError::CreateDir(dir.clone(), e)),
                }
            }
            // Recorded before the limits are written, so a failure below still
            // removes the directory on drop.
            cgroup.dirs.push((dir.clone(), hierarchy.version));
            if hierarchy == layout.memory {
                cgroup.memory = (dir.clone(), hierarchy.version);
            }
        }
        cgroup.write_limits(layout, limits_)?;
        cgroup.peak = fs::File::open(cgroup.memory.0.join(peak_file(cgroup.memory.1))).ok();
        Ok(cgroup)
    }

    fn dir_of(&self, hierarchy: &Hierarchy, layout: &CgroupLayout) -> PathBuf {
        let index = layout
            .hierarchies()
            .iter()
            .position(|h| h == hierarchy)
            .unwrap_or(0);
        self.dirs[index].0.clone()
    }

    /// Writes new limits: a warm sandbox takes the claiming function's.
    pub fn set_limits(&self, limits_: CgroupLimits) -> Result<(), CgroupError> {
        self.write_limits(&self.layout, limits_)
    }

    fn write_limits(&self, layout: &CgroupLayout, l: CgroupLimits) -> Result<(), CgroupError> {
        let memory_bytes = u64::from(l.memory_mb) * 1024 * 1024;
        let mem = self.dir_of(&layout.memory, layout);
        let cpu = self.dir_of(&layout.cpu, layout);
        let pids = self.dir_of(&layout.pids, layout);
        let vcpu_fraction =
            |per_vcpu: u64| u64::from(l.memory_mb) * per_vcpu / limits::MEMORY_MB_PER_VCPU;
        match layout.memory.version {
            Version::V1 => {
                // Without a memsw limit a host with swap would page the
                // function out instead of stopping it at MemorySize. The
                // kernel keeps memory ≤ memsw at every step, so a raise
                // (a warm sandbox claimed by a bigger function) writes memsw
                // first, a cut writes memory first.
                let limit = mem.join("memory.limit_in_bytes");
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                let current: u64 = fs::read_to_string(&limit)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(u64::MAX);
                let value = memory_bytes.to_string();
                if memory_bytes > current {
                    write_if_present(&memsw, &value)?;
                    write(&limit, &value)?;
                } else {
                    write(&limit, &value)?;
                    write_if_present(&memsw, &value)?;
                }
            }
            Version::V2 => {
                write(&mem.join("memory.max"), &memory_bytes.to_string())?;
                write_if_present(&mem.join("memory.swap.max"), "0")?;
            }
        }
        match layout.cpu.version {
            // The kernel's minimum cpu.shares is 2 and cpu.weight is 1..=10000.
            Version::V1 => write(
                &cpu.join("cpu.shares"),
                &vcpu_fraction(limits::CPU_SHARES_PER_VCPU)
                    .max(2)
                    .to_string(),
            )?,
            Version::V2 => write(
                &cpu.join("cpu.weight"),
                &vcpu_fraction(limits::CPU_WEIGHT_PER_VCPU)
                    .clamp(1, 10_000)
                    .to_string(),
            )?,
        }
        write(&pids.join("pids.max"), &l.pids_max.to_string())?;
        Ok(())
    }

    /// The `cgroup.procs` files a process writes itself into to join every
    /// cgroup of the sandbox (on v1, one per hierarchy).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(dir, _)| dir.join("cgroup.procs"))
            .collect()
    }

    /// The sandbox's only cgroup when every controller is on one v2
    /// hierarchy: the target of `clone3(CLONE_INTO_CGROUP)`.
    pub fn single_v2_dir(&self) -> Option<&Path> {
        match self.dirs.as_slice() {
            [(dir, Version::V2)] => Some(dir),
            _ => None,
        }
    }

    /// How many times the kernel's OOM killer has killed a process in this sandbox.
    pub fn oom_kills(&self) -> u64 {
        let (dir, version) = &self.memory;
        let file = match version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|line| line.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most memory the sandbox used, in bytes (0 where the kernel does not say).
    pub fn max_memory_used_bytes(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let Some(file) = &self.peak else { return 0 };
        let mut buf = [0u8; 32];
        // The kernel renders the value afresh for every read from offset 0.
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills every process left in the sandbox's cgroups and removes them.
    pub fn destroy(&mut self) -> Result<(), CgroupError> {
        self.peak = None;
        let mut first_error = None;
        for (dir, version) in self.dirs.drain(..) {
            if let Err(e) = kill_and_remove(&dir, version) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

/// Creates the group directory of a tag if needed and, on v2, passes the
/// controllers down to it.
/// The file that holds the memory controller's peak usage.
fn peak_file(version: Version) -> &'static str {
    match version {
        Version::V1 => "memory.max_usage_in_bytes",
        Version::V2 => "memory.peak",
    }
}

fn ensure_group(
    layout: &CgroupLayout,
    hierarchy: &Hierarchy,
    group: &Path,
) -> Result<(), CgroupError> {
    match fs::create_dir(group) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(CgroupError::CreateDir(group.to_owned(), e)),
    }
    if hierarchy.version == Version::V2 {
        // v2 passes a controller to children only when every ancestor
        // enables it in cgroup.subtree_control.
        let wanted = controllers_on(layout, hierarchy);
        enable_controllers(&hierarchy.mount, &wanted)?;
        enable_controllers(group, &wanted)?;
    }
    Ok(())
}

/// Controllers of `layout` that live on `hierarchy`.
fn controllers_on(layout: &CgroupLayout, hierarchy: &Hierarchy) -> Vec<&'static str> {
    [
        ("memory", &layout.memory),
        ("cpu", &layout.cpu),
        ("pids", &layout.pids),
    ]
    .into_iter()
    .filter(|(_, h)| *h == hierarchy)
    .map(|(name, _)| name)
    .collect()
}

fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&dir.join("cgroup.subtree_control"), &missing.join(" "))
}

/// Kills every process in a sandbox cgroup, waits for it to empty, removes it.
fn kill_and_remove(dir: &Path, version: Version) -> Result<(), CgroupError> {
    let started = Instant::now();
    loop {
        if version == Version::V2 {
            let _ = fs::write(dir.join("cgroup.kill"), "1");
        }
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|p| p.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill(2) has no memory effects; a pid that has gone is ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if started.elapsed() >= limits::TEARDOWN_WAIT_MAX => {
                return Err(CgroupError::RemoveDir(dir.to_owned(), e));
            }
            // EBUSY until the killed processes have been reaped.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|e| CgroupError::WriteFile(path.to_owned(), e))
}

fn write_if_present(path: &Path, value: &str) -> Result<(), CgroupError> {
    if path.exists() {
        write(path, value)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_every_controller_on_this_host() {
        let layout = match CgroupLayout::discover() {
            Ok(layout) => layout,
            Err(e) if std::env::var("NIMBUS_REQUIRE_SANDBOX").as_deref() != Ok("1") => {
                eprintln!("SKIPPED: {e}");
                return;
            }
            Err(e) => panic!("NIMBUS_REQUIRE_SANDBOX=1 but {e}"),
        };
        assert!(layout.memory.mount.join("cgroup.procs").exists());
        assert!(layout.pids.mount.join("cgroup.procs").exists());
    }
}

//! Shared helpers of the sandbox tests: the capability check, the test
//! function, and the check that nothing is left behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nimbus_container::{CgroupLayout, HostConfig, Sandbox, SandboxConfig};

/// Whether this host can run sandboxes; `Err` says what is missing.
fn capability() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("sandboxes need root (cgroups, loop devices, namespaces)".into());
    }
    let max_userns =
        std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max_userns.trim().parse::<u64>().unwrap_or(0) == 0 {
        return Err("user namespaces are disabled (user.max_user_namespaces = 0)".into());
    }
    let layout = CgroupLayout::discover().map_err(|e| e.to_string())?;
    for mount in [&layout.memory.mount, &layout.cpu.mount, &layout.pids.mount] {
        let probe = mount.join(format!("nimbus-probe-{}", std::process::id()));
        std::fs::create_dir(&probe)
            .map_err(|e| format!("no cgroup write access at {}: {e}", mount.display()))?;
        let _ = std::fs::remove_dir(&probe);
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control for the /tmp disk".into());
    }
    Command::new("mkfs.ext4")
        .arg("-V")
        .output()
        .map_err(|e| format!("mkfs.ext4 not runnable: {e}"))?;
    Ok(())
}

/// Returns false (and says why) when the sandbox cannot run here; under
/// `NIMBUS_REQUIRE_SANDBOX=1` a missing capability fails the test instead.
pub fn sandbox_available() -> bool {
    // Probed once per test process: tests run in parallel, and their probes
    // would trip over each other's probe cgroup.
    static CAPABILITY: OnceLock<Result<(), String>> = OnceLock::new();
    match CAPABILITY.get_or_init(capability).clone() {
        Ok(()) => true,
        Err(reason) if std::env::var("NIMBUS_REQUIRE_SANDBOX").as_deref() == Ok("1") => {
            panic!("NIMBUS_REQUIRE_SANDBOX=1 but the sandbox cannot run here: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED: the sandbox cannot run here: {reason}");
            false
        }
    }
}

/// Where a test process keeps its files; a helper process started by a
/// test is told its parent's through the environment.
pub fn scratch() -> PathBuf {
    match std::env::var_os("NIMBUS_CONTAINER_TEST_SCRATCH") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("nimbus-container-tests-{}", std::process::id())),
    }
}

/// The cgroup tag of a test process (inherited by its helper processes).
pub fn tag() -> String {
    std::env::var("NIMBUS_CONTAINER_TEST_TAG")
        .unwrap_or_else(|_| format!("test{}", std::process::id()))
}

/// The test runtime, compiled once per test process with the host's rustc.
pub fn code_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        remove_stale_scratch();
        let dir = scratch().join("code");
        if dir.join("bootstrap").exists() {
            return dir;
        }
        std::fs::create_dir_all(&dir).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/testfn.rs");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let status = Command::new(rustc)
            .args(["--edition", "2024", "-O", "-o"])
            .arg(dir.join("bootstrap"))
            .arg(source)
            .status()
            .expect("rustc runs");
        assert!(status.success(), "the test runtime compiles");
        set_mode(&scratch(), 0o755);
        set_mode(&dir, 0o755);
        dir
    })
    .clone()
}

/// Removes the scratch directories of test processes that have ended.
fn remove_stale_scratch() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("nimbus-container-tests-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn host() -> HostConfig {
    HostConfig::new(scratch().join("state"), tag())
}

pub fn config(id: &str) -> SandboxConfig {
    let mut config = SandboxConfig::provided(id, host(), code_dir());
    config.function_name = "testfn".into();
    config.ephemeral_storage_mb = 64;
    config
}

/// What a sandbox had on the host, to check it is all gone afterwards.
pub struct Footprint {
    pid: libc::pid_t,
    cgroups: Vec<PathBuf>,
    state: PathBuf,
}

impl Footprint {
    pub fn of(sandbox: &Sandbox) -> Footprint {
        Footprint {
            pid: sandbox.pid(),
            ..Footprint::for_id(sandbox.id())
        }
    }

    /// The footprint of a sandbox by id, whose process is already gone.
    pub fn for_id(id: &str) -> Footprint {
        let layout = CgroupLayout::discover().unwrap();
        let tag = host().tag;
        let cgroups = [&layout.memory.mount, &layout.cpu.mount, &layout.pids.mount]
            .into_iter()
            .map(|m| m.join(format!("nimbus-{tag}")).join(id))
            .collect();
        // No process has pid 0 to find; kill(0, 0) would mean "my group".
        Footprint {
            pid: libc::pid_t::MAX,
            cgroups,
            state: host().state_dir.join(id),
        }
    }

    /// Asserts no process, cgroup, mount, loop device or file remains.
    pub fn assert_gone(&self) {
        let image = self.state.join("tmp.img");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut left = Vec::new();
            // SAFETY: kill with signal 0 only checks existence.
            if unsafe { libc::kill(self.pid, 0) } == 0 {
                left.push(format!("process {}", self.pid));
            }
            left.extend(
                self.cgroups
                    .iter()
                    .filter(|c| c.exists())
                    .map(|c| format!("cgroup {}", c.display())),
            );
            if self.state.exists() {
                left.push(format!("state dir {}", self.state.display()));
            }
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            if mounts.contains(self.state.to_str().unwrap()) {
                left.push("a mount under the state dir".into());
            }
            for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
                let backing = std::fs::read_to_string(entry.path().join("loop/backing_file"))
                    .unwrap_or_default();
                if backing.starts_with(image.to_str().unwrap()) {
                    left.push(format!("loop device {:?}", entry.file_name()));
                }
            }
            if left.is_empty() {
                // The tag's group directories go with the last sandbox of this
                // test process (removal fails harmlessly while others remain).
                for cgroup in &self.cgroups {
                    if let Some(group) = cgroup.parent() {
                        let _ = std::fs::remove_dir(group);
                    }
                }
                return;
            }
            assert!(Instant::now() < deadline, "left behind: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

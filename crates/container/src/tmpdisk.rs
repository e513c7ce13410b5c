//! `/tmp` as disk (Decision 8): a sparse ext4 image of EphemeralStorage size
//! (copied from a formatted template) on a loop device, mounted by the sandbox's setup inside its own mount
//! namespace. It is disk, not tmpfs, so it never counts against MemorySize.
//!
//! The loop device is configured with `LO_FLAGS_AUTOCLEAR`: once the host has
//! closed its descriptor and the sandbox's mount namespace is gone, the kernel
//! detaches it by itself, so a killed server leaves no loop device attached.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::limits;

/// A failure to make the `/tmp` disk, naming the step and its path.
#[derive(Debug, thiserror::Error)]
pub enum TmpDiskError {
    /// The image file could not be created or sized.
    #[error("creating /tmp image {0}: {1}")]
    CreateImage(PathBuf, io::Error),
    /// `mkfs.ext4` could not run or failed.
    #[error("formatting /tmp image {0}: {1}")]
    Format(PathBuf, String),
    /// `/dev/loop-control` could not be opened or gave no free device.
    #[error("claiming a loop device through /dev/loop-control: {0}")]
    ClaimLoop(io::Error),
    /// The loop device could not be bound to the image.
    #[error("configuring loop device {0}: {1}")]
    ConfigureLoop(PathBuf, io::Error),
}

/// Directory under the state directory holding the formatted templates;
/// sandbox ids cannot start with a dot, so it never meets one.
pub(crate) const TEMPLATES_DIR: &str = ".templates";

/// `ioctl` numbers of `<linux/loop.h>`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A formatted image attached to a loop device, ready to be mounted.
#[derive(Debug)]
pub struct TmpDisk {
    /// The image file on the host.
    pub image: PathBuf,
    /// The loop device the sandbox mounts (`/dev/loopN`).
    pub device: PathBuf,
    /// Held until the sandbox has mounted the device: with autoclear, the
    /// last close of an unmounted device detaches it.
    device_file: Option<File>,
}

impl TmpDisk {
    /// Makes an image of `size_mb` with `/` owned by `owner` — a sparse copy
    /// of a formatted template kept in `templates` — and attaches it to a
    /// free loop device.
    pub fn create(
        image: &Path,
        size_mb: u32,
        owner: u32,
        templates: &Path,
    ) -> Result<TmpDisk, TmpDiskError> {
        let template = template(templates, size_mb, owner)?;
        let source =
            File::open(&template).map_err(|e| TmpDiskError::CreateImage(template.clone(), e))?;
        let copy =
            File::create(image).map_err(|e| TmpDiskError::CreateImage(image.to_owned(), e))?;
        copy.set_len(u64::from(size_mb) * 1024 * 1024)
            .and_then(|()| copy_sparse(&source, &copy))
            .map_err(|e| TmpDiskError::CreateImage(image.to_owned(), e))?;
        drop(copy);
        let (device, device_file) = attach(image)?;
        Ok(TmpDisk {
            image: image.to_owned(),
            device,
            device_file: Some(device_file),
        })
    }

    /// Drops the host's hold on the loop device once the sandbox has mounted
    /// it; from then on it lives exactly as long as the mount.
    pub fn release_device(&mut self) {
        self.device_file = None;
    }
}

impl Drop for TmpDisk {
    fn drop(&mut self) {
        self.device_file = None;
        // The space is returned once the loop device lets go of the file.
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Formatted empty images by (size in MB, owner), made once per process:
/// copying a template's few hundred KB of metadata costs a fraction of
/// running `mkfs.ext4` for every sandbox.
static TEMPLATES: Mutex<BTreeMap<(u32, u32), PathBuf>> = Mutex::new(BTreeMap::new());

/// The template for `(size_mb, owner)`, formatted now if there is none yet
/// (or if a sweep removed it).
fn template(dir: &Path, size_mb: u32, owner: u32) -> Result<PathBuf, TmpDiskError> {
    let mut templates = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = templates.get(&(size_mb, owner)).filter(|p| p.exists()) {
        return Ok(path.clone());
    }
    std::fs::create_dir_all(dir).map_err(|e| TmpDiskError::CreateImage(dir.to_owned(), e))?;
    let path = dir.join(format!("ext4-{size_mb}mb-{owner}.img"));
    let partial = dir.join(format!("ext4-{size_mb}mb-{owner}.img.partial"));
    let file = File::create(&partial).map_err(|e| TmpDiskError::CreateImage(partial.clone(), e))?;
    file.set_len(u64::from(size_mb) * 1024 * 1024)
        .map_err(|e| TmpDiskError::CreateImage(partial.clone(), e))?;
    drop(file);
    // No journal: a disk lives as long as one sandbox and is thrown away
    // after; lazy init keeps the image sparse.
    let output = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-m", "0", "-O", "^has_journal"])
        .arg("-E")
        .arg(format!("lazy_itable_init=1,root_owner={owner}:{owner}"))
        .arg(&partial)
        .output()
        .map_err(|e| TmpDiskError::Format(partial.clone(), e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        return Err(TmpDiskError::Format(partial, stderr));
    }
    // Renamed into place only once complete, so a template is never half made.
    std::fs::rename(&partial, &path).map_err(|e| TmpDiskError::CreateImage(path.clone(), e))?;
    templates.insert((size_mb, owner), path.clone());
    Ok(path)
}

/// Copies the data of a sparse file into `to` (already of the same length),
/// leaving holes as holes.
fn copy_sparse(from: &File, to: &File) -> io::Result<()> {
    let (source, target) = (from.as_raw_fd(), to.as_raw_fd());
    let mut offset: libc::off_t = 0;
    loop {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(source, offset, libc::SEEK_DATA) };
        if data < 0 {
            let error = io::Error::last_os_error();
            // ENXIO: no data past `offset`.
            return if error.raw_os_error() == Some(libc::ENXIO) {
                Ok(())
            } else {
                Err(error)
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(source, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut from_offset, mut to_offset) = (data, data);
        while from_offset < hole {
            let left = (hole - from_offset) as usize;
            // SAFETY: both descriptors are ours; the offsets are valid locals.
            let n = unsafe {
                libc::copy_file_range(source, &mut from_offset, target, &mut to_offset, left, 0)
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        offset = hole;
    }
}

fn attach(image: &Path) -> Result<(PathBuf, File), TmpDiskError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| TmpDiskError::CreateImage(image.to_owned(), e))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(TmpDiskError::ClaimLoop)?;
    let mut last_error = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..limits::LOOP_CLAIM_ATTEMPTS_MAX {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(TmpDiskError::ClaimLoop(io::Error::last_os_error()));
        }
        let device = PathBuf::from(format!("/dev/loop{number}"));
        let device_file = match OpenOptions::new().read(true).write(true).open(&device) {
            Ok(f) => f,
            Err(e) => return Err(TmpDiskError::ConfigureLoop(device, e)),
        };
        // SAFETY: an all-zero loop_config is valid; fields are then set.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: config is a valid loop_config that outlives the call.
        let rc = unsafe { libc::ioctl(device_file.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if rc == 0 {
            return Ok((device, device_file));
        }
        last_error = io::Error::last_os_error();
        // EBUSY: another sandbox claimed the same free device first; ask again.
        if last_error.raw_os_error() != Some(libc::EBUSY) {
            return Err(TmpDiskError::ConfigureLoop(device, last_error));
        }
    }
    Err(TmpDiskError::ClaimLoop(last_error))
}

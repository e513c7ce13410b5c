//! Function logs: what each invocation wrote to stderr, framed by Lambda's
//! START / END / REPORT lines, appended to one file per function.
//!
//! Appends go through a bounded queue to a writer thread so an invocation
//! never waits on the disk; if the queue is full the entry is dropped and
//! counted rather than blocking the hot path.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Log entries waiting for the writer thread.
const LOG_QUEUE_MAX: usize = 4_096;
/// Size at which a function's log file is rotated (one old file is kept).
const LOG_FILE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// The log files of every function.
pub struct LogBook {
    dir: PathBuf,
    queue: SyncSender<(PathBuf, Vec<u8>)>,
    /// Entries dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

impl LogBook {
    /// Opens the log directory and starts its writer thread.
    pub fn open(dir: &Path) -> std::io::Result<LogBook> {
        fs::create_dir_all(dir)?;
        let (queue, entries) = sync_channel::<(PathBuf, Vec<u8>)>(LOG_QUEUE_MAX);
        std::thread::Builder::new()
            .name("nimbus-logs".into())
            .spawn(move || {
                for (path, bytes) in entries {
                    if let Err(e) = append(&path, &bytes) {
                        tracing::warn!(path = %path.display(), error = %e, "log append failed");
                    }
                }
            })?;
        Ok(LogBook {
            dir: dir.to_path_buf(),
            queue,
            dropped: AtomicU64::new(0),
        })
    }

    fn path(&self, tenant: &str, function: &str) -> PathBuf {
        // Tenants are account ids and function names are [A-Za-z0-9_-]:
        // neither can escape the directory.
        self.dir.join(format!("{tenant}.{function}.log"))
    }

    /// Queues `text` for the function's log.
    pub fn append(&self, tenant: &str, function: &str, text: Vec<u8>) {
        match self.queue.try_send((self.path(tenant, function), text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The last `max_bytes` of the function's log.
    pub fn tail(&self, tenant: &str, function: &str, max_bytes: u64) -> std::io::Result<Vec<u8>> {
        let mut file = match fs::File::open(self.path(tenant, function)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
        let mut out = Vec::new();
        file.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Removes a function's logs (when the function is deleted).
    pub fn remove(&self, tenant: &str, function: &str) {
        let path = self.path(tenant, function);
        let _ = fs::remove_file(path.with_extension("log.1"));
        let _ = fs::remove_file(path);
    }
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if fs::metadata(path).is_ok_and(|m| m.len() > LOG_FILE_MAX_BYTES) {
        fs::rename(path, path.with_extension("log.1"))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(bytes)
}

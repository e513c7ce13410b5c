//! Function logs: what each invocation wrote to stderr, framed by Lambda's
//! START / END / REPORT lines, appended to one file per function.
//!
//! Appends go through a bounded queue to a writer thread so an invocation
//! never waits on the disk; if the queue is full the entry is dropped and
//! counted rather than blocking the hot path. The writer keeps recently used
//! files open, so an append costs one `write`, not an open and a close.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Log entries waiting for the writer thread.
const LOG_QUEUE_MAX: usize = 4_096;
/// Size at which a function's log file is rotated (one old file is kept).
const LOG_FILE_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Log files the writer keeps open at once; the least recently used close.
const OPEN_LOG_FILES_MAX: usize = 256;

enum Entry {
    Append(PathBuf, Vec<u8>),
    /// Ordered with the appends, so a write queued before a delete cannot
    /// land in a re-created function's log.
    Remove(PathBuf),
}

/// The log files of every function.
pub struct LogBook {
    dir: PathBuf,
    queue: SyncSender<Entry>,
    /// Entries dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

impl LogBook {
    /// Opens the log directory and starts its writer thread.
    pub fn open(dir: &Path) -> std::io::Result<LogBook> {
        fs::create_dir_all(dir)?;
        let (queue, entries) = sync_channel::<Entry>(LOG_QUEUE_MAX);
        std::thread::Builder::new()
            .name("nimbus-logs".into())
            .spawn(move || write_entries(entries))?;
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
        let entry = Entry::Append(self.path(tenant, function), text);
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The last `max_bytes` of the function's log.
    pub fn tail(&self, tenant: &str, function: &str, max_bytes: u64) -> std::io::Result<Vec<u8>> {
        let mut file = match File::open(self.path(tenant, function)) {
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

    /// Removes a function's logs (when the function is deleted). Waits for
    /// room in the queue: a delete is rare and must not be lost.
    pub fn remove(&self, tenant: &str, function: &str) {
        let _ = self.queue.send(Entry::Remove(self.path(tenant, function)));
    }
}

/// An open log file and its size.
struct Open {
    file: File,
    len: u64,
    used: u64,
}

fn write_entries(entries: Receiver<Entry>) {
    let mut open: HashMap<PathBuf, Open> = HashMap::new();
    let mut clock: u64 = 0;
    for entry in entries {
        clock += 1;
        match entry {
            Entry::Remove(path) => {
                open.remove(&path);
                let _ = fs::remove_file(path.with_extension("log.1"));
                let _ = fs::remove_file(&path);
            }
            Entry::Append(path, bytes) => {
                if let Err(e) = append(&mut open, &path, &bytes, clock) {
                    open.remove(&path);
                    tracing::warn!(path = %path.display(), error = %e, "log append failed");
                }
            }
        }
    }
}

fn append(
    open: &mut HashMap<PathBuf, Open>,
    path: &Path,
    bytes: &[u8],
    clock: u64,
) -> std::io::Result<()> {
    if !open.contains_key(path) {
        if open.len() >= OPEN_LOG_FILES_MAX
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, o)| o.used)
                .map(|(p, _)| p.clone())
        {
            open.remove(&oldest);
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        open.insert(
            path.to_path_buf(),
            Open {
                file,
                len,
                used: clock,
            },
        );
    }
    let Some(log) = open.get_mut(path) else {
        return Ok(());
    };
    if log.len > LOG_FILE_MAX_BYTES {
        fs::rename(path, path.with_extension("log.1"))?;
        log.file = OpenOptions::new().create(true).append(true).open(path)?;
        log.len = 0;
    }
    log.file.write_all(bytes)?;
    log.len += bytes.len() as u64;
    log.used = clock;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(book: &LogBook, tenant: &str, function: &str, want: &[u8]) -> Vec<u8> {
        for _ in 0..200 {
            let text = book.tail(tenant, function, 1 << 20).unwrap();
            if text == want {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        book.tail(tenant, function, 1 << 20).unwrap()
    }

    #[test]
    fn appends_in_order_and_a_delete_is_not_undone_by_earlier_writes() {
        let dir = tempfile::tempdir().unwrap();
        let book = LogBook::open(dir.path()).unwrap();
        book.append("t", "f", b"one\n".to_vec());
        book.append("t", "f", b"two\n".to_vec());
        assert_eq!(settle(&book, "t", "f", b"one\ntwo\n"), b"one\ntwo\n");
        book.remove("t", "f");
        book.append("t", "f", b"new\n".to_vec());
        assert_eq!(settle(&book, "t", "f", b"new\n"), b"new\n");
        assert_eq!(book.tail("t", "f", 2).unwrap(), b"w\n");
    }
}

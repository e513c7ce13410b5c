//! Function logs: what each invocation wrote to stderr, framed by Lambda's
//! START / END / REPORT lines, appended to one file per function.
//!
//! Appends go to a bounded in-memory queue that a writer thread drains in
//! batches, so an invocation never waits on the disk, and under load the
//! writer is woken at most once per [`LOG_BATCH_INTERVAL`] rather than once
//! per invocation (a wake-up is a system call and a context switch on the
//! invoking core). If the queue is full the entry is dropped and counted
//! rather than blocking the hot path. Readers flush the queue first, so a
//! tail always shows every invocation that finished before it. The writer
//! keeps recently used files open, so an append costs one `write`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Log entries waiting for the writer.
const LOG_QUEUE_MAX: usize = 4_096;
/// How long the writer lets entries gather after a batch before it looks
/// again; it sleeps on the queue only when it finds it empty.
const LOG_BATCH_INTERVAL: Duration = Duration::from_millis(2);
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

/// Entries not yet written, and whether the writer sleeps on them.
#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    /// The writer waits on [`Shared::wake`] and must be woken by the next append.
    writer_idle: bool,
    /// The book was dropped: the writer drains what is left and exits.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The open files. Whoever writes holds this lock while it takes a batch
    /// from the queue and writes it, so batches reach the files in order.
    files: Mutex<Files>,
}

/// The log files of every function.
pub struct LogBook {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// Entries dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

impl LogBook {
    /// Opens the log directory and starts its writer thread.
    pub fn open(dir: &Path) -> std::io::Result<LogBook> {
        fs::create_dir_all(dir)?;
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            files: Mutex::default(),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("nimbus-logs".into())
            .spawn(move || write_batches(&writer))?;
        Ok(LogBook {
            dir: dir.to_path_buf(),
            shared,
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
        if !self.shared.push(entry, LOG_QUEUE_MAX) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The last `max_bytes` of the function's log, including every append
    /// made before this call.
    pub fn tail(&self, tenant: &str, function: &str, max_bytes: u64) -> std::io::Result<Vec<u8>> {
        self.shared.flush();
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

    /// Removes a function's logs (when the function is deleted). Never
    /// dropped for a full queue: a delete is rare and must not be lost.
    pub fn remove(&self, tenant: &str, function: &str) {
        self.shared
            .push(Entry::Remove(self.path(tenant, function)), usize::MAX);
    }
}

impl Drop for LogBook {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    /// Queues `entry` unless `limit` entries wait already; wakes the writer
    /// only if it sleeps.
    fn push(&self, entry: Entry, limit: usize) -> bool {
        let wake = {
            let mut queue = lock(&self.queue);
            if queue.entries.len() >= limit {
                return false;
            }
            queue.entries.push(entry);
            std::mem::take(&mut queue.writer_idle)
        };
        if wake {
            self.wake.notify_one();
        }
        true
    }

    /// Writes every queued entry now, on the calling thread.
    fn flush(&self) {
        let mut files = lock(&self.files);
        let batch = std::mem::take(&mut lock(&self.queue).entries);
        files.write(batch);
    }
}

/// Drains the queue in batches until the book is dropped.
fn write_batches(shared: &Shared) {
    loop {
        {
            let mut queue = lock(&shared.queue);
            while queue.entries.is_empty() {
                if queue.closed {
                    return;
                }
                queue.writer_idle = true;
                queue = shared.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        }
        shared.flush();
        std::thread::sleep(LOG_BATCH_INTERVAL);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// An open log file and its size.
struct Open {
    file: File,
    len: u64,
    used: u64,
}

/// The open log files, least recently used closed first.
#[derive(Default)]
struct Files {
    open: HashMap<PathBuf, Open>,
    clock: u64,
}

impl Files {
    fn write(&mut self, batch: Vec<Entry>) {
        let mut entries = batch.into_iter().peekable();
        while let Some(entry) = entries.next() {
            self.clock += 1;
            match entry {
                Entry::Remove(path) => {
                    self.open.remove(&path);
                    let _ = fs::remove_file(path.with_extension("log.1"));
                    let _ = fs::remove_file(&path);
                }
                Entry::Append(path, mut bytes) => {
                    // Appends to one file in a row go out in one write.
                    while let Some(Entry::Append(next, more)) = entries.peek() {
                        if *next != path {
                            break;
                        }
                        bytes.extend_from_slice(more);
                        entries.next();
                    }
                    if let Err(e) = append(&mut self.open, &path, &bytes, self.clock) {
                        self.open.remove(&path);
                        tracing::warn!(path = %path.display(), error = %e, "log append failed");
                    }
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

    #[test]
    fn appends_in_order_and_a_delete_is_not_undone_by_earlier_writes() {
        let dir = tempfile::tempdir().unwrap();
        let book = LogBook::open(dir.path()).unwrap();
        book.append("t", "f", b"one\n".to_vec());
        book.append("t", "f", b"two\n".to_vec());
        // A tail sees every append made before it, written or not.
        assert_eq!(book.tail("t", "f", 1 << 20).unwrap(), b"one\ntwo\n");
        book.remove("t", "f");
        book.append("t", "f", b"new\n".to_vec());
        assert_eq!(book.tail("t", "f", 1 << 20).unwrap(), b"new\n");
        assert_eq!(book.tail("t", "f", 2).unwrap(), b"w\n");
    }

    #[test]
    fn a_batch_keeps_each_files_order_when_its_appends_are_joined() {
        let dir = tempfile::tempdir().unwrap();
        let book = LogBook::open(dir.path()).unwrap();
        // Queued while the files are held, so they are written as one batch.
        let files = lock(&book.shared.files);
        for (function, text) in [
            ("f", "1\n"),
            ("f", "2\n"),
            ("g", "a\n"),
            ("f", "3\n"),
            ("g", "b\n"),
        ] {
            book.append("t", function, text.as_bytes().to_vec());
        }
        book.remove("t", "g");
        book.append("t", "g", b"c\n".to_vec());
        drop(files);
        book.shared.flush();
        assert_eq!(fs::read(book.path("t", "f")).unwrap(), b"1\n2\n3\n");
        assert_eq!(fs::read(book.path("t", "g")).unwrap(), b"c\n");
    }

    #[test]
    fn the_writer_drains_the_queue_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let book = LogBook::open(dir.path()).unwrap();
        for round in 0..3 {
            book.append("t", "f", format!("{round}\n").into_bytes());
            let path = book.path("t", "f");
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while fs::read(&path).unwrap_or_default().len() < 2 * (round + 1) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writer never wrote round {round}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // Let the writer fall idle, so the next append must wake it.
            std::thread::sleep(LOG_BATCH_INTERVAL * 3);
        }
        assert_eq!(fs::read(book.path("t", "f")).unwrap(), b"0\n1\n2\n");
    }

    #[test]
    fn a_full_queue_drops_and_counts_but_never_drops_a_remove() {
        let dir = tempfile::tempdir().unwrap();
        let book = LogBook::open(dir.path()).unwrap();
        // Hold the files so the writer cannot drain while the queue fills.
        let files = lock(&book.shared.files);
        for _ in 0..LOG_QUEUE_MAX + 10 {
            book.append("t", "f", b"x".to_vec());
        }
        book.remove("t", "g");
        assert!(book.dropped.load(Ordering::Relaxed) >= 10);
        assert_eq!(
            lock(&book.shared.queue).entries.len() as u64 + book.dropped.load(Ordering::Relaxed),
            LOG_QUEUE_MAX as u64 + 11
        );
        drop(files);
    }
}

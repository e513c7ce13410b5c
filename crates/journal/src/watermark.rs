//! The high-water mark of acknowledged sequence numbers, kept outside
//! SQLite.
//!
//! SQLite's WAL recovery drops a damaged frame and every frame after it,
//! and what survives still checks out: acknowledged invocations could
//! vanish without a trace inside the database. So after each commit, and
//! before any caller hears of it, the highest committed sequence number is
//! written here. At start-up a store whose own highest sequence number is
//! below the mark has lost acknowledged work.
//!
//! The mark is written after the database's fsync, so it never runs ahead
//! of what is durable; its own write is not fsync'd (a power cut can leave
//! it behind, which weakens detection for that window but never raises a
//! false alarm). SIGKILL cannot lose it: the page cache survives.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The file's layout: magic, the mark, and a CRC-32 of both.
const MAGIC: &[u8; 8] = b"NIMBUSWM";
const LEN: usize = 8 + 8 + 4;

/// The open mark file.
pub(crate) struct Watermark {
    file: File,
}

/// What the mark file held at start-up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// There was none (a new store).
    Absent,
    /// The mark.
    Mark(u64),
    /// The file does not check out.
    Damaged(String),
}

impl Watermark {
    /// Opens (creating) the mark file and reads what it held.
    pub(crate) fn open(path: &Path) -> io::Result<(Watermark, Read)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut &file, &mut buf)?;
        let read = if buf.is_empty() {
            Read::Absent
        } else if buf.len() != LEN || &buf[..8] != MAGIC {
            Read::Damaged(format!(
                "{} holds {} bytes that are not a mark",
                path.display(),
                buf.len()
            ))
        } else {
            let mark = u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default());
            let sum = u32::from_le_bytes(buf[16..20].try_into().unwrap_or_default());
            if crc32fast::hash(&buf[..16]) == sum {
                Read::Mark(mark)
            } else {
                Read::Damaged(format!("{}: checksum mismatch", path.display()))
            }
        };
        Ok((Watermark { file }, read))
    }

    /// Records `mark` as acknowledged.
    pub(crate) fn set(&self, mark: u64) -> io::Result<()> {
        let mut buf = [0u8; LEN];
        buf[..8].copy_from_slice(MAGIC);
        buf[8..16].copy_from_slice(&mark.to_le_bytes());
        let sum = crc32fast::hash(&buf[..16]);
        buf[16..20].copy_from_slice(&sum.to_le_bytes());
        // One write of 20 bytes within a page: no reader sees half of it
        // after a process crash.
        self.file.write_all_at(&buf, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_survives_reopening_and_damage_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wm");
        let (wm, read) = Watermark::open(&path).unwrap();
        assert_eq!(read, Read::Absent);
        wm.set(41).unwrap();
        wm.set(42).unwrap();
        drop(wm);
        let (_, read) = Watermark::open(&path).unwrap();
        assert_eq!(read, Read::Mark(42));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let (_, read) = Watermark::open(&path).unwrap();
        assert!(matches!(read, Read::Damaged(_)), "{read:?}");
    }
}

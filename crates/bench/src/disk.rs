//! The physical limit of a durable commit: how long the disk under a
//! directory takes to make 4 KiB durable. SQLite in WAL mode with
//! `synchronous=FULL` appends its frames to the log and syncs it once per
//! transaction, so one such sync is the least one durable commit can cost,
//! and one commit per request would cap accepts at one per sync.

use crate::stats::Summary;
use anyhow::Context as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The block written before each sync: one page, as SQLite writes a WAL
/// frame of its default page size.
const BLOCK_BYTES: usize = 4096;
/// Syncs before the measured ones, so the file's first blocks and the
/// journal of the filesystem are past their first-use costs.
const WARMUP_SYNCS: u32 = 100;
/// Most blocks appended to one file; then it starts again from empty, so
/// the file stays small whatever the sample count.
const FILE_BLOCKS_MAX: u32 = 4096;

/// Both kinds of sync, measured back to back.
pub struct DiskFigures {
    /// Append 4 KiB, then `fdatasync` (what SQLite calls on Linux).
    pub fdatasync: Summary,
    /// Append 4 KiB, then `fsync`.
    pub fsync: Summary,
}

/// Which call makes the block durable.
#[derive(Clone, Copy)]
enum Sync {
    Data,
    All,
}

/// Measures `samples` appends of 4 KiB each followed by `fdatasync`, then
/// as many followed by `fsync`, in a scratch file in `dir`.
pub fn measure(dir: &Path, samples: u32) -> anyhow::Result<DiskFigures> {
    Ok(DiskFigures {
        fdatasync: series(dir, samples, Sync::Data)?,
        fsync: series(dir, samples, Sync::All)?,
    })
}

fn series(dir: &Path, samples: u32, sync: Sync) -> anyhow::Result<Summary> {
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("create a scratch file in {}", dir.display()))?;
    let block = [0x5a_u8; BLOCK_BYTES];
    let mut times = Vec::with_capacity(samples as usize);
    for i in 0..WARMUP_SYNCS + samples {
        if i % FILE_BLOCKS_MAX == 0 {
            file.as_file()
                .set_len(0)
                .context("empty the scratch file")?;
            sync_file(file.as_file(), Sync::All)?;
            std::io::Seek::rewind(file.as_file_mut()).context("rewind the scratch file")?;
        }
        let start = Instant::now();
        file.write_all(&block).context("write the scratch file")?;
        sync_file(file.as_file(), sync)?;
        if i >= WARMUP_SYNCS {
            times.push(start.elapsed());
        }
    }
    Ok(Summary::of(times))
}

fn sync_file(file: &File, sync: Sync) -> anyhow::Result<()> {
    match sync {
        Sync::Data => file.sync_data().context("fdatasync the scratch file"),
        Sync::All => file.sync_all().context("fsync the scratch file"),
    }
}

/// The filesystem `path` lives on, from `/proc/self/mountinfo`: its type,
/// its source and where it is mounted, e.g. "ext4 on /dev/vda (mounted
/// at /)". The mount with the longest mount point that contains the path.
pub fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional…] - type source super
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(point), Some(kind), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        if path.starts_with(point) && best.as_ref().is_none_or(|(len, _)| point.len() >= *len) {
            best = Some((
                point.len(),
                format!("{kind} on {source} (mounted at {point})"),
            ));
        }
    }
    best.map_or_else(|| "an unknown filesystem".into(), |(_, text)| text)
}

/// Accepts per second if every one waited for a sync of its own, one after
/// another: the ceiling without group commit.
pub fn one_per_sync_ceiling(sync: Duration) -> f64 {
    1.0 / sync.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_are_measured_and_the_filesystem_named() {
        let dir = tempfile::tempdir().unwrap();
        let figures = measure(dir.path(), 20).unwrap();
        assert_eq!(figures.fdatasync.count, 20);
        assert_eq!(figures.fsync.count, 20);
        assert!(figures.fsync.p50 > Duration::ZERO);
        let fs = filesystem_of(dir.path());
        assert!(fs.contains(" on "), "{fs}");
    }

    #[test]
    fn the_ceiling_is_one_request_per_sync() {
        let ceiling = one_per_sync_ceiling(Duration::from_micros(200));
        assert!((ceiling - 5_000.0).abs() < 1e-6);
    }
}

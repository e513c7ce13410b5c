//! Content-addressed storage of uploaded code packages.
//!
//! A package is stored once under the hex SHA-256 of its bytes. A write is
//! made durable before it is visible: written to a temporary file, fsync'd,
//! renamed into place, and the directory fsync'd, so a crash leaves either
//! the whole package or nothing.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why an artifact could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Creating the artifact directory failed.
    #[error("create artifact directory {0}: {1}")]
    CreateDir(PathBuf, std::io::Error),
    /// Writing a package failed.
    #[error("write artifact {0}: {1}")]
    Write(PathBuf, std::io::Error),
    /// Reading a package failed.
    #[error("read artifact {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// A stored package no longer matches its address.
    #[error("artifact {0} is damaged: its bytes no longer hash to its name")]
    Damaged(String),
}

/// The directory of packages, one file per SHA-256.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    dir: PathBuf,
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ArtifactStore {
    /// Opens (creating if needed) the store under `dir`.
    pub fn open(dir: &Path) -> Result<ArtifactStore, ArtifactError> {
        fs::create_dir_all(dir).map_err(|e| ArtifactError::CreateDir(dir.to_path_buf(), e))?;
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, sha_hex: &str) -> PathBuf {
        self.dir.join(sha_hex)
    }

    /// Stores `bytes` durably and returns their hex SHA-256.
    pub fn put(&self, bytes: &[u8]) -> Result<String, ArtifactError> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha);
        if path.exists() {
            return Ok(sha);
        }
        let tmp = self
            .dir
            .join(format!(".{sha}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory entry is.
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ArtifactError::Write(path.clone(), e)
        })?;
        Ok(sha)
    }

    /// Reads a package back and checks it still hashes to its address.
    pub fn get(&self, sha_hex: &str) -> Result<Vec<u8>, ArtifactError> {
        let path = self.path(sha_hex);
        let bytes = fs::read(&path).map_err(|e| ArtifactError::Read(path, e))?;
        if sha256_hex(&bytes) != sha_hex {
            return Err(ArtifactError::Damaged(sha_hex.to_string()));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_content_addressed_and_verified_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let sha = store.put(b"package").unwrap();
        assert_eq!(sha, sha256_hex(b"package"));
        assert_eq!(store.put(b"package").unwrap(), sha);
        assert_eq!(store.get(&sha).unwrap(), b"package");
        fs::write(dir.path().join(&sha), b"tampered").unwrap();
        assert!(matches!(store.get(&sha), Err(ArtifactError::Damaged(_))));
    }
}

//! Topology binaries stored by content hash (hex SHA-256) in Nimbus's local directory.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A store of artifacts under one directory.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

/// An artifact that could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The disk failed.
    #[error("artifact store at {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes do not hash to the name they were stored under.
    #[error("artifact {expected} is corrupt: its bytes hash to {actual}")]
    HashMismatch {
        /// The hash asked for.
        expected: String,
        /// The hash of the bytes.
        actual: String,
    },
    /// A hash that is not 64 hex digits.
    #[error("`{0}` is not an artifact hash (64 hex digits)")]
    BadHash(String),
}

/// The hex SHA-256 of some bytes.
pub fn hash_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn check_hash(hash: &str) -> Result<(), ArtifactError> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ArtifactError::BadHash(hash.to_owned()))
    }
}

impl ArtifactStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ArtifactError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| ArtifactError::Io { path: dir.clone(), source })?;
        Ok(ArtifactStore { dir })
    }

    /// Where an artifact lives.
    pub fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    /// Whether an artifact is stored.
    pub fn contains(&self, hash: &str) -> bool {
        check_hash(hash).is_ok() && self.path(hash).is_file()
    }

    /// Stores bytes, returning their hash. Written to a temporary file and renamed, so a crash
    /// never leaves a partial artifact under a valid name.
    pub fn put(&self, bytes: &[u8]) -> Result<String, ArtifactError> {
        let hash = hash_of(bytes);
        self.put_as(&hash, bytes)?;
        Ok(hash)
    }

    /// Stores bytes under a hash they must match (a copy from another Nimbus).
    pub fn put_as(&self, hash: &str, bytes: &[u8]) -> Result<(), ArtifactError> {
        check_hash(hash)?;
        let actual = hash_of(bytes);
        if actual != hash {
            return Err(ArtifactError::HashMismatch { expected: hash.to_owned(), actual });
        }
        let path = self.path(hash);
        if path.is_file() {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".{hash}.{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|source| ArtifactError::Io { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &path).map_err(|source| ArtifactError::Io { path: path.clone(), source })
    }

    /// Reads an artifact back, checking its hash.
    pub fn get(&self, hash: &str) -> Result<Vec<u8>, ArtifactError> {
        check_hash(hash)?;
        let path = self.path(hash);
        let bytes = std::fs::read(&path).map_err(|source| ArtifactError::Io { path, source })?;
        let actual = hash_of(&bytes);
        if actual != hash {
            return Err(ArtifactError::HashMismatch { expected: hash.to_owned(), actual });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_hash_and_refuses_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let hash = store.put(b"binary").unwrap();
        assert_eq!(hash.len(), 64);
        assert!(store.contains(&hash));
        assert_eq!(store.get(&hash).unwrap(), b"binary");
        assert!(matches!(store.put_as(&hash, b"other"), Err(ArtifactError::HashMismatch { .. })));
        std::fs::write(store.path(&hash), b"tampered").unwrap();
        assert!(matches!(store.get(&hash), Err(ArtifactError::HashMismatch { .. })));
        assert!(matches!(store.get("../etc/passwd"), Err(ArtifactError::BadHash(_))));
    }
}

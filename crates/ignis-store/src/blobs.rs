//! Content-addressed blobs: the bytes of uploaded code, named by their SHA-256.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A directory of blobs, `<dir>/<first two hex digits>/<sha256>`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl BlobStore {
    /// Opens (creating) a blob directory.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(BlobStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.dir.join(&sha256[..2]).join(sha256))
    }

    /// Stores bytes durably (written, fsync'd, renamed into place) and returns their SHA-256.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha).expect("a digest is a valid name");
        if path.exists() {
            return Ok(sha);
        }
        let parent = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".{sha}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(parent)?.sync_all()?;
        Ok(sha)
    }

    /// Reads a blob.
    pub fn get(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        let path = self.path(sha256).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad blob name")
        })?;
        std::fs::read(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let b = BlobStore::open(dir.path()).unwrap();
        let a = b.put(b"hello").unwrap();
        assert_eq!(a, sha256_hex(b"hello"));
        assert_eq!(b.put(b"hello").unwrap(), a);
        assert_eq!(b.get(&a).unwrap(), b"hello");
        assert!(b.get("../../etc/passwd").is_err());
        assert!(b.get(&"0".repeat(64)).is_err());
    }
}

//! Content-addressed blobs: the bytes of uploaded code, named by their SHA-256.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A directory of blobs, `<dir>/<first two hex digits>/<sha256>`, and, in cluster mode, the
/// shared place every node's directory is filled from.
#[derive(Clone)]
pub struct BlobStore {
    dir: PathBuf,
    mirror: Option<Arc<dyn BlobMirror>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("dir", &self.dir)
            .field("mirrored", &self.mirror.is_some())
            .finish()
    }
}

/// Where blobs are shared between nodes (cluster mode: the JetStream object store). Every
/// blob put is uploaded there before `put` returns; a blob missing locally is downloaded.
pub trait BlobMirror: Send + Sync {
    /// Stores a blob under its SHA-256.
    fn upload(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// The blob with this SHA-256, if the mirror has it.
    fn download(&self, sha256: &str) -> std::io::Result<Option<Vec<u8>>>;
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
            mirror: None,
        })
    }

    /// The same directory, shared through `mirror`.
    pub fn mirrored(self, mirror: Arc<dyn BlobMirror>) -> Self {
        BlobStore {
            mirror: Some(mirror),
            ..self
        }
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.dir.join(&sha256[..2]).join(sha256))
    }

    /// Stores bytes durably (written, fsync'd, renamed into place) and returns their SHA-256.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = self.put_local(bytes)?;
        if let Some(mirror) = &self.mirror {
            mirror.upload(&sha, bytes)?;
        }
        Ok(sha)
    }

    fn put_local(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha).expect("a digest is a valid name");
        if path.exists() {
            return Ok(sha);
        }
        let parent = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(parent)?;
        // Unique per writer: two threads may store the same blob at once (cold starts of one
        // function fetching its code), each renaming its own file into place.
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = parent.join(format!(".{sha}.{}.{n}.tmp", std::process::id()));
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
        match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(bytes) = self
                    .mirror
                    .as_ref()
                    .map(|m| m.download(sha256))
                    .transpose()?
                else {
                    return Err(e);
                };
                let Some(bytes) = bytes else { return Err(e) };
                if sha256_hex(&bytes) != sha256 {
                    return Err(std::io::Error::other(format!(
                        "blob {sha256}: the shared copy does not match its digest"
                    )));
                }
                self.put_local(&bytes)?;
                Ok(bytes)
            }
            other => other,
        }
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

    #[test]
    fn a_mirrored_store_uploads_and_fills_itself() {
        #[derive(Default)]
        struct Shared(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);
        impl BlobMirror for Shared {
            fn upload(&self, sha: &str, bytes: &[u8]) -> std::io::Result<()> {
                self.0.lock().unwrap().insert(sha.into(), bytes.to_vec());
                Ok(())
            }
            fn download(&self, sha: &str) -> std::io::Result<Option<Vec<u8>>> {
                Ok(self.0.lock().unwrap().get(sha).cloned())
            }
        }
        let shared = Arc::new(Shared::default());
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let one = BlobStore::open(d1.path()).unwrap().mirrored(shared.clone());
        let two = BlobStore::open(d2.path()).unwrap().mirrored(shared.clone());
        let sha = one.put(b"code").unwrap();
        assert_eq!(two.get(&sha).unwrap(), b"code");
        // Now a local copy: found without the mirror.
        shared.0.lock().unwrap().clear();
        assert_eq!(two.get(&sha).unwrap(), b"code");
        assert!(two.get(&sha256_hex(b"other")).is_err());
        // A corrupt shared copy is refused.
        shared
            .0
            .lock()
            .unwrap()
            .insert(sha256_hex(b"x"), b"y".to_vec());
        assert!(two.get(&sha256_hex(b"x")).is_err());
    }

    #[test]
    fn concurrent_fills_of_one_blob_all_succeed() {
        struct Slow(Vec<u8>);
        impl BlobMirror for Slow {
            fn upload(&self, _: &str, _: &[u8]) -> std::io::Result<()> {
                Ok(())
            }
            fn download(&self, _: &str) -> std::io::Result<Option<Vec<u8>>> {
                std::thread::sleep(std::time::Duration::from_millis(20));
                Ok(Some(self.0.clone()))
            }
        }
        let code = vec![7u8; 1 << 20];
        let sha = sha256_hex(&code);
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path())
            .unwrap()
            .mirrored(Arc::new(Slow(code.clone())));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, sha) = (store.clone(), sha.clone());
                std::thread::spawn(move || store.get(&sha).map(|b| b.len()))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), code.len());
        }
    }
}

//! Object bodies: one file per object version, `<dir>/<namespace>/<random name>`, written to a
//! temporary file while its MD5 is computed, fsync'd, then renamed into place — so a body the
//! metadata points to is always whole, across `kill -9`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use md5::{Digest, Md5};

/// The directory of object bodies and, in cluster mode, the shared place every node's
/// directory is filled from.
#[derive(Clone)]
pub struct ObjectFiles {
    dir: PathBuf,
    mirror: Option<Arc<dyn BodyMirror>>,
}

impl std::fmt::Debug for ObjectFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFiles")
            .field("dir", &self.dir)
            .field("mirrored", &self.mirror.is_some())
            .finish()
    }
}

/// Where object bodies are shared between nodes (cluster mode: the JetStream object store).
/// A body is uploaded there before its object is recorded; a node that has no copy of a body
/// downloads it when it is read.
pub trait BodyMirror: Send + Sync {
    /// Stores the body `file` of `namespace`, read from `path`.
    fn upload(&self, namespace: &str, file: &str, path: &Path) -> std::io::Result<()>;
    /// Writes the body `file` of `namespace` to `dest`; false if the mirror does not have it.
    fn download(&self, namespace: &str, file: &str, dest: &Path) -> std::io::Result<bool>;
    /// Deletes a body (best effort).
    fn remove(&self, namespace: &str, file: &str);
    /// Deletes every body of a namespace (best effort).
    fn remove_namespace(&self, namespace: &str);
}

/// A body being written; dropped unfinished, its temporary file is removed.
pub struct ObjectWriter {
    mirror: Option<(Arc<dyn BodyMirror>, String)>,
    file: Option<std::fs::File>,
    tmp: PathBuf,
    dir: PathBuf,
    name: String,
    md5: Md5,
    size: u64,
}

/// A body written durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    /// Its file name (under its namespace's directory).
    pub file: String,
    /// Its size.
    pub size: u64,
    /// MD5 of its bytes.
    pub md5: [u8; 16],
}

impl ObjectFiles {
    /// Opens (creating) the directory, and removes the temporary files of uploads a crash
    /// cut short. Call before serving: an upload in progress has one.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for ns in std::fs::read_dir(dir)?.flatten() {
            let Ok(files) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        Ok(ObjectFiles {
            dir: dir.to_path_buf(),
            mirror: None,
        })
    }

    /// The same directory, shared through `mirror`.
    pub fn mirrored(self, mirror: Arc<dyn BodyMirror>) -> Self {
        ObjectFiles {
            mirror: Some(mirror),
            ..self
        }
    }

    /// Where a body is on this node, downloading it first from the mirror if this node has no
    /// copy (cluster mode). A body nobody has stays missing: opening the path fails with
    /// `NotFound`.
    pub fn local(&self, namespace: &str, file: &str) -> PathBuf {
        let path = self.path(namespace, file);
        let Some(mirror) = &self.mirror else {
            return path;
        };
        if path.exists() {
            return path;
        }
        let dir = self.namespace_dir(namespace);
        let fetched = std::fs::create_dir_all(&dir).and_then(|()| {
            static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = dir.join(format!(".{file}.{n}.fetch.tmp"));
            let found = mirror.download(namespace, file, &tmp)?;
            if found {
                std::fs::rename(&tmp, &path)?;
            } else {
                let _ = std::fs::remove_file(&tmp);
            }
            Ok(found)
        });
        if let Err(e) = fetched {
            tracing::warn!(namespace, file, "could not fetch an object body: {e}");
        }
        path
    }

    fn namespace_dir(&self, namespace: &str) -> PathBuf {
        // Namespace names are `[A-Za-z0-9_.-]`, never `.` or `..`: a plain directory name.
        self.dir.join(namespace)
    }

    /// Where a body is.
    pub fn path(&self, namespace: &str, file: &str) -> PathBuf {
        self.namespace_dir(namespace).join(file)
    }

    /// Starts writing a new body for `namespace`.
    pub fn writer(&self, namespace: &str) -> std::io::Result<ObjectWriter> {
        let dir = self.namespace_dir(namespace);
        std::fs::create_dir_all(&dir)?;
        let name = ignis_core::new_secret()?[..32].to_string();
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = std::fs::File::create(&tmp)?;
        Ok(ObjectWriter {
            mirror: self.mirror.clone().map(|m| (m, namespace.to_string())),
            file: Some(file),
            tmp,
            dir,
            name,
            md5: Md5::new(),
            size: 0,
        })
    }

    /// A new body with the bytes of `file` (a copied object): a hard link, since bodies never
    /// change once written, or a copy where the file system cannot link. `NotFound` if `file`
    /// is gone.
    pub fn duplicate(&self, namespace: &str, file: &str) -> std::io::Result<String> {
        let dir = self.namespace_dir(namespace);
        let name = ignis_core::new_secret()?[..32].to_string();
        let source = self.local(namespace, file);
        match std::fs::hard_link(&source, dir.join(&name)) {
            Ok(()) => {
                std::fs::File::open(&dir)?.sync_all()?;
                if let Some(mirror) = &self.mirror {
                    mirror.upload(namespace, &name, &dir.join(&name))?;
                }
                Ok(name)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e),
            Err(_) => {
                let mut from = std::fs::File::open(&source)?;
                let mut w = self.writer(namespace)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = std::io::Read::read(&mut from, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.write(&buf[..n])?;
                }
                Ok(w.finish()?.file)
            }
        }
    }

    /// Deletes a body (a missing one is not an error).
    pub fn remove(&self, namespace: &str, file: &str) {
        if let Err(e) = std::fs::remove_file(self.path(namespace, file))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(namespace, file, "could not delete an object body: {e}");
        }
        if let Some(mirror) = &self.mirror {
            mirror.remove(namespace, file);
        }
    }

    /// Deletes every body of a namespace.
    pub fn remove_namespace(&self, namespace: &str) -> std::io::Result<()> {
        if let Some(mirror) = &self.mirror {
            mirror.remove_namespace(namespace);
        }
        match std::fs::remove_dir_all(self.namespace_dir(namespace)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl ObjectWriter {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let f = self.file.as_mut().expect("not finished");
        f.write_all(bytes)?;
        self.md5.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the body durable and gives it its name.
    pub fn finish(mut self) -> std::io::Result<WrittenObject> {
        let f = self.file.take().expect("not finished");
        f.sync_all()?;
        drop(f);
        std::fs::rename(&self.tmp, self.dir.join(&self.name))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        if let Some((mirror, namespace)) = &self.mirror {
            mirror.upload(namespace, &self.name, &self.dir.join(&self.name))?;
        }
        Ok(WrittenObject {
            file: std::mem::take(&mut self.name),
            size: self.size,
            md5: self.md5.clone().finalize().into(),
        })
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let files = ObjectFiles::open(dir.path()).unwrap();
        let mut w = files.writer("team").unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        let done = w.finish().unwrap();
        assert_eq!(done.size, 11);
        assert_eq!(hex::encode(done.md5), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        let path = files.path("team", &done.file);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        // A duplicate outlives the original.
        let copy = files.duplicate("team", &done.file).unwrap();
        assert_ne!(copy, done.file);
        let err = files.duplicate("team", "missing").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        let mut w = files.writer("team").unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("team"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 2, "the unfinished body is gone");
        // A crash mid-upload leaves a temporary file: gone at the next open.
        let w = files.writer("team").unwrap();
        std::mem::forget(w);
        let count = || std::fs::read_dir(dir.path().join("team")).unwrap().count();
        assert_eq!(count(), 3);
        let files = ObjectFiles::open(dir.path()).unwrap();
        assert_eq!(count(), 2);
        files.remove("team", &done.file);
        assert!(!path.exists());
        let copy = files.path("team", &copy);
        assert_eq!(std::fs::read(copy).unwrap(), b"hello world");
        files.remove_namespace("team").unwrap();
        files.remove_namespace("team").unwrap();
    }
}

//! Packaging a function's code for upload: a single file as it is, a directory as a zip.
//!
//! The zip is built in memory, deterministically: entries sorted by path, fixed timestamps
//! (1980-01-01), so the same tree always gives the same bytes and the same SHA-256 — the
//! server stores code by content. Unix permissions are kept, so executables stay executable.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// Code ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeUpload {
    /// A single file, placed in the function's code directory under `filename`.
    File {
        /// The file's name (no directory part).
        filename: String,
        /// Its contents.
        bytes: Bytes,
    },
    /// A zip archive, unpacked into the function's code directory.
    Zip(Bytes),
}

impl CodeUpload {
    /// The bytes to upload.
    pub fn bytes(&self) -> &Bytes {
        match self {
            CodeUpload::File { bytes, .. } | CodeUpload::Zip(bytes) => bytes,
        }
    }
}

/// Deepest directory nesting followed, a guard against pathological trees.
const MAX_DEPTH: usize = 64;

/// Packages `path`: a file becomes [`CodeUpload::File`], a directory a [`CodeUpload::Zip`] of
/// everything under it.
///
/// In a directory, `.git` entries are skipped, as are symbolic links that lead outside the
/// directory (or nowhere) and special files (sockets, FIFOs, devices); links that stay inside
/// are followed. Paths in the zip are relative and use `/`.
pub fn package_code(path: &Path) -> io::Result<CodeUpload> {
    let meta = fs::metadata(path)?;
    if meta.is_file() {
        let filename = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid(format!("{} has no UTF-8 file name", path.display())))?
            .to_owned();
        return Ok(CodeUpload::File {
            filename,
            bytes: Bytes::from(fs::read(path)?),
        });
    }
    if !meta.is_dir() {
        return Err(invalid(format!(
            "{} is neither a file nor a directory",
            path.display()
        )));
    }
    let root = fs::canonicalize(path)?;
    let mut entries = BTreeMap::new();
    let mut ancestors = vec![root.clone()];
    collect(&root, &root, "", &mut ancestors, &mut entries)?;
    zip_entries(&entries).map(CodeUpload::Zip)
}

/// What goes into the zip at one path.
enum Entry {
    Dir { mode: u32 },
    File { source: PathBuf, mode: u32 },
}

/// Walks `dir` (whose canonical path is last in `ancestors`), adding entries under the zip
/// prefix `prefix` (empty or ending with `/`).
fn collect(
    root: &Path,
    dir: &Path,
    prefix: &str,
    ancestors: &mut Vec<PathBuf>,
    entries: &mut BTreeMap<String, Entry>,
) -> io::Result<()> {
    if ancestors.len() > MAX_DEPTH {
        return Err(invalid(format!(
            "{} is nested more than {MAX_DEPTH} directories deep",
            dir.display()
        )));
    }
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        if name == ".git" {
            continue;
        }
        let name = name.to_str().ok_or_else(|| {
            invalid(format!(
                "{} has a name that is not UTF-8",
                dirent.path().display()
            ))
        })?;
        let path = dirent.path();
        let mut meta = fs::symlink_metadata(&path)?;
        let mut real = path.clone();
        if meta.file_type().is_symlink() {
            // Follow only links that resolve inside the packaged directory.
            match fs::canonicalize(&path) {
                Ok(target) if target.starts_with(root) => {
                    meta = fs::metadata(&target)?;
                    real = target;
                }
                _ => continue,
            }
        }
        let rel = format!("{prefix}{name}");
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            let canonical = fs::canonicalize(&real)?;
            if ancestors.contains(&canonical) {
                // A link to a directory containing itself: following it would never end.
                continue;
            }
            let sub_prefix = format!("{rel}/");
            entries.insert(sub_prefix.clone(), Entry::Dir { mode });
            ancestors.push(canonical);
            let walked = collect(root, &real, &sub_prefix, ancestors, entries);
            ancestors.pop();
            walked?;
        } else if meta.is_file() {
            entries.insert(rel, Entry::File { source: real, mode });
        }
    }
    Ok(())
}

fn zip_entries(entries: &BTreeMap<String, Entry>) -> io::Result<Bytes> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let base = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default());
    for (name, entry) in entries {
        match entry {
            Entry::Dir { mode } => {
                zip.add_directory(name.as_str(), base.unix_permissions(*mode))?;
            }
            Entry::File { source, mode } => {
                let contents = fs::read(source)?;
                let options = base
                    .unix_permissions(*mode)
                    .large_file(contents.len() as u64 >= u32::MAX as u64);
                zip.start_file(name.as_str(), options)?;
                zip.write_all(&contents)?;
            }
        }
    }
    Ok(Bytes::from(zip.finish()?.into_inner()))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    fn read_zip(bytes: &[u8]) -> Vec<(String, Option<u32>, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut f = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                f.read_to_end(&mut data).unwrap();
                (f.name().to_owned(), f.unix_mode().map(|m| m & 0o777), data)
            })
            .collect()
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_file_is_uploaded_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.py");
        fs::write(&path, "def handler(e, c): return e\n").unwrap();
        let code = package_code(&path).unwrap();
        assert_eq!(
            code,
            CodeUpload::File {
                filename: "app.py".into(),
                bytes: Bytes::from_static(b"def handler(e, c): return e\n"),
            }
        );
    }

    #[test]
    fn a_directory_round_trips_through_zip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fn");
        fs::create_dir_all(root.join("lib/sub")).unwrap();
        fs::create_dir_all(root.join(".git/objects")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("app.py"), "print('hi')\n").unwrap();
        fs::write(root.join("lib/sub/util.py"), "X = 1\n").unwrap();
        fs::write(root.join(".git/HEAD"), "ref\n").unwrap();
        fs::write(root.join("run.sh"), "#!/bin/sh\necho ok\n").unwrap();
        set_mode(&root.join("run.sh"), 0o755);
        set_mode(&root.join("app.py"), 0o644);

        let CodeUpload::Zip(bytes) = package_code(&root).unwrap() else {
            panic!("a directory must become a zip");
        };
        let entries = read_zip(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "app.py",
                "empty/",
                "lib/",
                "lib/sub/",
                "lib/sub/util.py",
                "run.sh"
            ]
        );
        let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
        assert_eq!(get("run.sh").1, Some(0o755));
        assert_eq!(get("run.sh").2, b"#!/bin/sh\necho ok\n");
        assert_eq!(get("app.py").1, Some(0o644));
        assert_eq!(get("lib/sub/util.py").2, b"X = 1\n");

        // Same tree, same bytes.
        let CodeUpload::Zip(again) = package_code(&root).unwrap() else {
            unreachable!()
        };
        assert_eq!(bytes, again);
    }

    #[test]
    fn symlinks_are_followed_only_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fn");
        fs::create_dir_all(root.join("data")).unwrap();
        fs::write(root.join("data/a.txt"), "a").unwrap();
        fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        symlink("data/a.txt", root.join("inside.txt")).unwrap();
        symlink(dir.path().join("secret.txt"), root.join("outside.txt")).unwrap();
        symlink("/", root.join("rootfs")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        symlink(".", root.join("loop")).unwrap();
        symlink("data", root.join("alias")).unwrap();

        let CodeUpload::Zip(bytes) = package_code(&root).unwrap() else {
            panic!("a directory must become a zip");
        };
        let entries = read_zip(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["alias/", "alias/a.txt", "data/", "data/a.txt", "inside.txt"]
        );
        assert_eq!(entries[4].2, b"a");
    }

    #[test]
    fn missing_paths_are_errors() {
        let err = package_code(Path::new("/nonexistent/ignis/code")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}

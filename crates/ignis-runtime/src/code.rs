//! Uploaded code: checking a zip archive or single file at deploy time, and unpacking it into a
//! code directory for instances.
//!
//! Checks happen once, at deploy: paths that would escape the code directory (zip-slip),
//! archives that are corrupt, empty or too large, and a handler that names no file in the code.

use std::collections::BTreeSet;
use std::io::{Cursor, Read};
use std::path::{Component, Path, PathBuf};

use ignis_core::{CodeFormat, FunctionSpec, Runtime, SpecError};

/// Most entries in an archive.
pub const MAX_ENTRIES: usize = 20_000;
/// Largest compression ratio of an entry before it is taken for a zip bomb.
pub const MAX_RATIO: u64 = 200;

/// Why uploaded code was refused.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// No bytes, or an archive without files.
    #[error("the code is empty")]
    Empty,
    /// Not a readable zip archive.
    #[error("the zip archive is corrupt: {0}")]
    Corrupt(String),
    /// An entry whose path is absolute or climbs out with `..`.
    #[error("the zip archive has an unsafe path {0:?}")]
    UnsafePath(String),
    /// Too big once unpacked, too many entries, or compressed suspiciously well.
    #[error("the code is too large: {0}")]
    TooLarge(String),
    /// The handler does not name a file in the code.
    #[error("{0}")]
    Handler(SpecError),
    /// Writing the code directory failed.
    #[error("cannot unpack code: {0}")]
    Io(#[from] std::io::Error),
}

/// The files an upload contains, as relative `/`-separated paths.
#[derive(Debug, Clone, Default)]
pub struct CodeListing {
    /// Regular files.
    pub files: BTreeSet<String>,
    /// Total unpacked size.
    pub unpacked_bytes: u64,
}

fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Checks an upload and lists its files; more than `max_unpacked` bytes once unpacked is too
/// large.
pub fn inspect(
    format: CodeFormat,
    filename: Option<&str>,
    bytes: &[u8],
    max_unpacked: u64,
) -> Result<CodeListing, CodeError> {
    if bytes.is_empty() {
        return Err(CodeError::Empty);
    }
    match format {
        CodeFormat::File => {
            let name = filename.ok_or_else(|| {
                CodeError::Handler(SpecError::new(
                    "filename",
                    "a single-file upload needs a file name",
                ))
            })?;
            if name.contains('/') || safe_relative(name).is_none() {
                return Err(CodeError::UnsafePath(name.to_string()));
            }
            Ok(CodeListing {
                files: BTreeSet::from([name.to_string()]),
                unpacked_bytes: bytes.len() as u64,
            })
        }
        CodeFormat::Zip => inspect_zip(bytes, max_unpacked),
    }
}

fn open_zip(bytes: &[u8]) -> Result<zip::ZipArchive<Cursor<&[u8]>>, CodeError> {
    zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| CodeError::Corrupt(e.to_string()))
}

fn inspect_zip(bytes: &[u8], max_unpacked: u64) -> Result<CodeListing, CodeError> {
    let mut archive = open_zip(bytes)?;
    if archive.len() > MAX_ENTRIES {
        return Err(CodeError::TooLarge(format!(
            "{} entries, more than {MAX_ENTRIES}",
            archive.len()
        )));
    }
    let mut listing = CodeListing::default();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| CodeError::Corrupt(e.to_string()))?;
        let name = entry.name().to_string();
        let rel = safe_relative(&name).ok_or_else(|| CodeError::UnsafePath(name.clone()))?;
        if entry.is_symlink() {
            return Err(CodeError::UnsafePath(format!("{name} (symbolic link)")));
        }
        if entry.is_dir() {
            continue;
        }
        let size = entry.size();
        let packed = entry.compressed_size().max(1);
        if size > 1024 * 1024 && size / packed > MAX_RATIO {
            return Err(CodeError::TooLarge(format!(
                "{name:?} expands {}x, a likely zip bomb",
                size / packed
            )));
        }
        listing.unpacked_bytes += size;
        if listing.unpacked_bytes > max_unpacked {
            return Err(CodeError::TooLarge(format!(
                "more than {} MiB unpacked",
                max_unpacked / (1024 * 1024)
            )));
        }
        listing
            .files
            .insert(rel.to_string_lossy().replace('\\', "/"));
    }
    if listing.files.is_empty() {
        return Err(CodeError::Empty);
    }
    Ok(listing)
}

/// The executable a `lambda` function's code must have at its top, as on AWS Lambda.
pub const LAMBDA_BOOTSTRAP: &str = "bootstrap";

/// The file a single-file upload is stored as when the client names none: derived from the
/// handler (`app.handler` → `app.py` for python, `app.js` for node; the handler itself for exec).
pub fn default_filename(spec: &FunctionSpec) -> Option<String> {
    let (module, _) = spec.handler_parts();
    match spec.runtime {
        Runtime::Python if !module.contains('/') => {
            Some(format!("{}.py", module.replace('.', "/")))
        }
        Runtime::Node if !module.contains('/') => Some(format!("{module}.js")),
        Runtime::Exec | Runtime::Wasm
            if !spec.handler.is_empty() && !spec.handler.contains('/') =>
        {
            Some(spec.handler.clone())
        }
        Runtime::Lambda => Some(LAMBDA_BOOTSTRAP.to_string()),
        _ => None,
    }
    .filter(|f| !f.contains('/'))
}

/// Checks that the handler names a file of the upload. For exec with an empty handler and a
/// single file, returns the handler to use (the file).
pub fn check_handler(
    spec: &FunctionSpec,
    listing: &CodeListing,
) -> Result<Option<String>, SpecError> {
    let has = |p: &str| listing.files.contains(p);
    let (module, func) = spec.handler_parts();
    let candidates: Vec<String> = match spec.runtime {
        Runtime::Python => {
            let base = if module.contains('/') {
                module.to_string()
            } else {
                module.replace('.', "/")
            };
            vec![format!("{base}.py"), format!("{base}/__init__.py")]
        }
        Runtime::Node => ["js", "mjs", "cjs"]
            .iter()
            .map(|ext| format!("{module}.{ext}"))
            .collect(),
        Runtime::Exec | Runtime::Wasm => {
            if spec.handler.is_empty() {
                if listing.files.len() == 1 {
                    return Ok(listing.files.iter().next().cloned());
                }
                return Err(SpecError::new(
                    "handler",
                    format!(
                        "required for {} code with several files: the path of the {}",
                        spec.runtime,
                        if spec.runtime == Runtime::Exec {
                            "executable"
                        } else {
                            "module"
                        }
                    ),
                ));
            }
            vec![spec.handler.trim_start_matches("./").to_string()]
        }
        Runtime::Lambda => vec![LAMBDA_BOOTSTRAP.to_string()],
    };
    if candidates.iter().any(|c| has(c)) {
        return Ok(None);
    }
    let what = match spec.runtime {
        Runtime::Exec => format!("executable {:?}", spec.handler),
        Runtime::Lambda => "the executable of a lambda function".to_string(),
        Runtime::Wasm => format!("module {:?}", spec.handler),
        _ => format!("module of handler {:?} (function {func:?})", spec.handler),
    };
    Err(SpecError::new(
        "handler",
        format!(
            "{what} not found in the code: expected {}",
            candidates.join(" or ")
        ),
    ))
}

/// Name of the directory a version's code is unpacked into, under the code root. The same bytes
/// unpack differently with another file name (single files) or as an exec function (files get
/// the executable bit), so those are part of the name too.
pub fn dir_name(code: &ignis_core::CodeRef, executable: bool) -> String {
    let mut name = code.sha256.clone();
    if let (CodeFormat::File, Some(f)) = (code.format, &code.filename) {
        name.push('-');
        name.push_str(f);
    }
    if executable {
        name.push_str("-x");
    }
    name
}

/// Unpacks an upload into `dest`, atomically: into a sibling temporary directory first, then
/// renamed. `dest` existing already means another caller unpacked the same code: that is fine.
pub fn unpack(
    format: CodeFormat,
    filename: Option<&str>,
    executable: bool,
    bytes: &[u8],
    dest: &Path,
) -> Result<(), CodeError> {
    if dest.exists() {
        return Ok(());
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = tempdir_in(parent)?;
    let result = match format {
        CodeFormat::File => {
            let name = filename.ok_or(CodeError::Empty)?;
            let rel = safe_relative(name).ok_or_else(|| CodeError::UnsafePath(name.into()))?;
            let path = tmp.join(rel);
            std::fs::write(&path, bytes)?;
            set_mode(&path, if executable { 0o755 } else { 0o644 })
        }
        CodeFormat::Zip => unpack_zip(bytes, &tmp, executable),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    set_mode(&tmp, 0o755)?;
    match std::fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e.into())
        }
    }
}

fn tempdir_in(parent: &Path) -> std::io::Result<PathBuf> {
    for attempt in 0..100u32 {
        let name = format!(
            ".unpack-{}-{}-{attempt}",
            std::process::id(),
            ignis_core::now_ms()
        );
        let path = parent.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a temporary directory"))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), CodeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn unpack_zip(bytes: &[u8], dest: &Path, exec_runtime: bool) -> Result<(), CodeError> {
    let mut archive = open_zip(bytes)?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| CodeError::Corrupt(e.to_string()))?;
        let name = entry.name().to_string();
        let rel = safe_relative(&name).ok_or_else(|| CodeError::UnsafePath(name.clone()))?;
        let path = dest.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&path)?;
            continue;
        }
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        // [`inspect`] bounded the sizes the headers declare; an entry that expands past its
        // declared size is refused, whatever its data says, and it streams to the file.
        let declared = entry.size();
        let mut file = std::fs::File::create(&path)?;
        let written = std::io::copy(&mut (&mut entry).take(declared + 1), &mut file)
            .map_err(|e| CodeError::Corrupt(format!("{name}: {e}")))?;
        if written > declared {
            return Err(CodeError::TooLarge(format!(
                "{name:?} expands past the size its header declares"
            )));
        }
        let exec_bit = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        let mode = if exec_bit || (exec_runtime && entry.unix_mode().is_none()) {
            0o755
        } else {
            0o644
        };
        set_mode(&path, mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMIT: u64 = 250 << 20;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn lists_and_checks_handlers() {
        let z = zip_of(&[("app.py", b"def handler(e, c): pass"), ("lib/util.py", b"")]);
        let listing = inspect(CodeFormat::Zip, None, &z, LIMIT).unwrap();
        assert!(listing.files.contains("lib/util.py"));
        let spec = FunctionSpec::new(Runtime::Python, "app.handler");
        check_handler(&spec, &listing).unwrap();
        let spec = FunctionSpec::new(Runtime::Python, "lib.util.go");
        check_handler(&spec, &listing).unwrap();
        let spec = FunctionSpec::new(Runtime::Python, "missing.handler");
        let err = check_handler(&spec, &listing).unwrap_err();
        assert!(err.message.contains("missing.py"), "{}", err.message);
        let spec = FunctionSpec::new(Runtime::Node, "app.handler");
        assert!(check_handler(&spec, &listing).is_err());
    }

    #[test]
    fn refuses_bad_archives() {
        assert!(matches!(
            inspect(CodeFormat::Zip, None, b"", LIMIT),
            Err(CodeError::Empty)
        ));
        assert!(matches!(
            inspect(CodeFormat::Zip, None, b"not a zip at all", LIMIT),
            Err(CodeError::Corrupt(_))
        ));
        let slip = zip_of(&[("../../etc/evil", b"x")]);
        assert!(matches!(
            inspect(CodeFormat::Zip, None, &slip, LIMIT),
            Err(CodeError::UnsafePath(_))
        ));
        let abs = zip_of(&[("/etc/evil", b"x")]);
        assert!(matches!(
            inspect(CodeFormat::Zip, None, &abs, LIMIT),
            Err(CodeError::UnsafePath(_))
        ));
        let empty = zip_of(&[]);
        assert!(matches!(
            inspect(CodeFormat::Zip, None, &empty, LIMIT),
            Err(CodeError::Empty)
        ));
        let bomb = zip_of(&[("zeros", &vec![0u8; 8 * 1024 * 1024])]);
        assert!(matches!(
            inspect(CodeFormat::Zip, None, &bomb, LIMIT),
            Err(CodeError::TooLarge(_))
        ));
        assert!(matches!(
            inspect(CodeFormat::File, Some("../x.py"), b"x", LIMIT),
            Err(CodeError::UnsafePath(_))
        ));
    }

    #[test]
    fn an_entry_larger_than_its_header_says_is_refused_at_unpack() {
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("app.py", stored).unwrap();
        w.write_all(&[b'x'; 100]).unwrap();
        let mut z = w.finish().unwrap().into_inner();
        // The central directory now says 10 bytes unpacked.
        let cd = z.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        z[cd + 24..cd + 28].copy_from_slice(&10u32.to_le_bytes());
        let listing = inspect(CodeFormat::Zip, None, &z, LIMIT).unwrap();
        assert_eq!(listing.unpacked_bytes, 10);
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(CodeFormat::Zip, None, false, &z, &dir.path().join("c")).unwrap_err();
        assert!(matches!(err, CodeError::TooLarge(_)), "{err}");
        assert!(!dir.path().join("c").exists());
    }

    #[test]
    fn the_unpacked_limit_is_the_callers() {
        let z = zip_of(&[("a", &[1u8; 3000]), ("b", &[2u8; 3000])]);
        assert!(inspect(CodeFormat::Zip, None, &z, 6000).is_ok());
        assert!(matches!(
            inspect(CodeFormat::Zip, None, &z, 5999),
            Err(CodeError::TooLarge(_))
        ));
    }

    #[test]
    fn unpacks_with_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let z = zip_of(&[("bin/run", b"#!/bin/sh\necho hi\n")]);
        let dest = dir.path().join("code1");
        unpack(CodeFormat::Zip, None, true, &z, &dest).unwrap();
        let meta = std::fs::metadata(dest.join("bin/run")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        // Unpacking again is a no-op.
        unpack(CodeFormat::Zip, None, true, &z, &dest).unwrap();
        let dest = dir.path().join("code2");
        unpack(CodeFormat::File, Some("app.py"), false, b"print(1)", &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("app.py")).unwrap(), b"print(1)");
    }

    #[test]
    fn same_bytes_under_other_names_unpack_apart() {
        let code = |format, filename: Option<&str>| ignis_core::CodeRef {
            sha256: "ab".repeat(32),
            size: 1,
            format,
            filename: filename.map(str::to_string),
        };
        let a = dir_name(&code(CodeFormat::File, Some("a.py")), false);
        let b = dir_name(&code(CodeFormat::File, Some("b.py")), false);
        let z = dir_name(&code(CodeFormat::Zip, None), false);
        let zx = dir_name(&code(CodeFormat::Zip, None), true);
        assert_eq!(z, "ab".repeat(32));
        let all = [a, b, z, zx];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn default_filenames() {
        let s = FunctionSpec::new(Runtime::Python, "app.handler");
        assert_eq!(default_filename(&s).as_deref(), Some("app.py"));
        let s = FunctionSpec::new(Runtime::Node, "index.handler");
        assert_eq!(default_filename(&s).as_deref(), Some("index.js"));
        let s = FunctionSpec::new(Runtime::Exec, "run.sh");
        assert_eq!(default_filename(&s).as_deref(), Some("run.sh"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn entry_name() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(vec![
                    "app.py",
                    "lib/util.py",
                    "../evil",
                    "/etc/passwd",
                    "a/../../b",
                    "./x",
                    "dir/",
                    "a\\..\\b",
                    "\u{e9}t\u{e9}.py",
                    "",
                    ".",
                    "a//b",
                ])
                .prop_map(String::from),
                proptest::collection::vec(any::<char>(), 1..12).prop_map(String::from_iter),
            ]
        }

        fn archive() -> impl Strategy<Value = Vec<u8>> {
            let entries = proptest::collection::vec(
                (
                    entry_name(),
                    proptest::collection::vec(any::<u8>(), 0..300),
                    any::<bool>(),
                ),
                0..5,
            );
            let flips =
                proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4);
            (entries, flips).prop_map(|(entries, flips)| {
                let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
                for (name, data, stored) in entries {
                    let opts =
                        zip::write::SimpleFileOptions::default().compression_method(if stored {
                            zip::CompressionMethod::Stored
                        } else {
                            zip::CompressionMethod::Deflated
                        });
                    if w.start_file(name, opts).is_ok() {
                        let _ = w.write_all(&data);
                    }
                }
                let mut z = w.finish().map(Cursor::into_inner).unwrap_or_default();
                if !z.is_empty() {
                    for (at, b) in flips {
                        let i = at.index(z.len());
                        z[i] = b;
                    }
                }
                z
            })
        }

        fn files_under(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                assert!(!meta.file_type().is_symlink(), "a symlink was unpacked");
                if meta.is_dir() {
                    files_under(&e.path(), out);
                } else {
                    out.push((e.path(), meta.len()));
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn any_bytes_are_checked_without_panicking(
                bytes in proptest::collection::vec(any::<u8>(), 0..512),
                zip_magic in any::<bool>(),
            ) {
                let mut b = bytes;
                if zip_magic {
                    b.splice(0..0, *b"PK\x03\x04");
                }
                let _ = inspect(CodeFormat::Zip, None, &b, LIMIT);
            }

            #[test]
            fn what_is_accepted_unpacks_inside_its_directory_within_its_size(z in archive()) {
                let Ok(listing) = inspect(CodeFormat::Zip, None, &z, LIMIT) else {
                    return Ok(());
                };
                let dir = tempfile::tempdir().unwrap();
                let dest = dir.path().join("code");
                if unpack(CodeFormat::Zip, None, false, &z, &dest).is_ok() {
                    let mut files = Vec::new();
                    files_under(&dest, &mut files);
                    let total: u64 = files.iter().map(|(_, n)| n).sum();
                    prop_assert!(total <= listing.unpacked_bytes);
                    for (p, _) in &files {
                        prop_assert!(p.starts_with(&dest), "{} escaped", p.display());
                    }
                }
                // Nothing is ever written next to the code directory.
                let beside: Vec<_> = std::fs::read_dir(dir.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name())
                    .filter(|n| n != "code")
                    .collect();
                prop_assert!(beside.is_empty(), "{beside:?}");
            }
        }
    }
}

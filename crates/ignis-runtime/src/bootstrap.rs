//! The python and node bootstraps, embedded in the binary and written to disk at start.
//!
//! A bootstrap loads the user's handler once per instance and then serves invocations over the
//! protocol in [`crate::protocol`]; see docs/runtime-protocol.md.

use std::path::{Path, PathBuf};

/// Source of the python bootstrap.
pub const PYTHON: &str = include_str!("../bootstrap/python/ignis_bootstrap.py");
/// Source of the python zygote, which forks warmed python instances into sandboxes.
pub const PYTHON_ZYGOTE: &str = include_str!("../bootstrap/python/ignis_zygote.py");
/// The `ignis` module of python functions (data access), installed beside the bootstrap.
pub const PYTHON_CLIENT: &str = include_str!("../bootstrap/python/ignis_client.py");
/// The `ignis` module of node functions (data access), installed beside the bootstrap.
pub const NODE_CLIENT: &str = include_str!("../bootstrap/node/ignis_client.js");
/// Source of the node bootstrap.
pub const NODE: &str = include_str!("../bootstrap/node/ignis_bootstrap.js");
/// A module the node bootstrap loads before READY, to warm node's module loader.
pub const NODE_WARM: &str = "// Loaded by ignis_bootstrap.js before READY to warm the module loader.\nexports.warm = true;\n";

/// A complete `bootstrap` for the `lambda` runtime in bash (the Runtime API over `/dev/tcp`)
/// that answers every event with itself: the no-op of benchmarks and a reference client.
pub const LAMBDA_ECHO: &[u8] = include_bytes!("../bootstrap/lambda/echo.sh");

/// Where the bootstraps were written.
#[derive(Debug, Clone)]
pub struct BootstrapPaths {
    /// The directory holding both files.
    pub dir: PathBuf,
    /// Path of the python bootstrap.
    pub python: PathBuf,
    /// Path of the node bootstrap.
    pub node: PathBuf,
    /// Path of the python zygote.
    pub python_zygote: PathBuf,
}

/// Writes the bootstraps into `dir` (created if needed), rewriting a file only when its content
/// differs, so that running instances never see a half-written file.
pub fn install(dir: &Path) -> std::io::Result<BootstrapPaths> {
    std::fs::create_dir_all(dir)?;
    let python = dir.join("ignis_bootstrap.py");
    let node = dir.join("ignis_bootstrap.js");
    write_if_changed(&python, PYTHON)?;
    write_if_changed(&node, NODE)?;
    write_if_changed(&dir.join("ignis_warm.js"), NODE_WARM)?;
    write_if_changed(&dir.join("ignis_client.py"), PYTHON_CLIENT)?;
    write_if_changed(&dir.join("ignis_client.js"), NODE_CLIENT)?;
    let python_zygote = dir.join("ignis_zygote.py");
    write_if_changed(&python_zygote, PYTHON_ZYGOTE)?;
    Ok(BootstrapPaths {
        dir: dir.to_path_buf(),
        python,
        node,
        python_zygote,
    })
}

fn write_if_changed(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let paths = install(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&paths.python).unwrap(), PYTHON);
        assert_eq!(std::fs::read_to_string(&paths.node).unwrap(), NODE);
        install(dir.path()).unwrap();
        assert!(!PYTHON.is_empty() && !NODE.is_empty());
    }

    /// Drives both bootstraps over the real protocol (bootstrap/test_protocol.py): handler
    /// styles, context, errors, init errors, size limits, log ordering, warm state.
    #[test]
    fn bootstraps_pass_the_protocol_suite() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bootstrap/test_protocol.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .output()
            .expect("python3 is needed to test the bootstraps");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "protocol suite failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    }
}

//! Stem cells: pre-started, sandboxed runtime instances that hold no function yet (OpenWhisk's
//! prewarm containers). A cold start takes one instead of starting an interpreter:
//!
//! ```text
//!  stem cell: sandbox + interpreter + bootstrap, READY sent, /code = an empty slot directory
//!     │  cold start of function f
//!     ├─ hard-link f's unpacked code into the slot (the instance sees it at /code, read-only)
//!     ├─ set the cgroup's memory limit (and CPU share) to f's
//!     └─ INIT → the bootstrap imports f's handler → an ordinary warm-able instance
//!  the pool refills in the background
//! ```
//!
//! Stem cells exist per runtime for functions with the default /tmp size and no host network,
//! and only where instances have cgroups (the memory limit is set at specialisation).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use ignis_core::{FunctionSpec, FunctionVersion, Network, Runtime};

use crate::Inner;
use crate::instance::{Placement, ProcessInstance};
use crate::zygote::Zygote;

/// Memory limit a stem cell waits under (its function's limit replaces it).
const STEM_MEMORY_MB: u32 = 1024;

/// A directory an instance sees at /code; removed when the instance goes.
pub(crate) struct CodeSlot {
    dir: PathBuf,
}

impl CodeSlot {
    fn create(root: &Path) -> std::io::Result<CodeSlot> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(root)?;
        let dir = root.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(CodeSlot { dir })
    }

    /// Fills the slot with `code`: hard links (no copy) where the file system allows, copies
    /// otherwise.
    fn fill(&self, code: &Path) -> std::io::Result<()> {
        link_tree(code, &self.dir)
    }
}

impl Drop for CodeSlot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn link_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ty = entry.file_type()?;
        if ty.is_dir() {
            std::fs::create_dir(&to)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
            link_tree(&from, &to)?;
        } else if ty.is_file() && std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// One runtime's stem cells.
struct StemPool {
    runtime: Runtime,
    target: usize,
    idle: Mutex<Vec<(ProcessInstance, CodeSlot)>>,
    wake: tokio::sync::Notify,
}

/// The stem cells of every runtime, refilled in the background.
pub(crate) struct StemCells {
    pools: Vec<Arc<StemPool>>,
    /// The python zygote, once started (where the sandbox can be entered from outside).
    zygote: Arc<OnceLock<Arc<Zygote>>>,
}

impl StemCells {
    /// Whether a function can start from a stem cell.
    pub fn fits(f: &FunctionVersion) -> bool {
        f.spec.network == Network::None
            && f.spec.tmp_mb == FunctionSpec::new(f.spec.runtime, "").tmp_mb
            && matches!(f.spec.runtime, Runtime::Python | Runtime::Node)
    }

    /// Starts `per_runtime` stem cells for python and node (if their interpreters exist) and
    /// the tasks that keep the pools full.
    pub fn start(inner: &Arc<Inner>, per_runtime: usize) -> StemCells {
        let mut pools = Vec::new();
        let zygote = Arc::new(OnceLock::new());
        if per_runtime == 0 || inner.sandbox.protections().cgroups.is_none() {
            return StemCells { pools, zygote };
        }
        for runtime in [Runtime::Python, Runtime::Node] {
            let pool = Arc::new(StemPool {
                runtime,
                target: per_runtime,
                idle: Mutex::new(Vec::new()),
                wake: tokio::sync::Notify::new(),
            });
            let use_zygote =
                runtime == Runtime::Python && inner.config.zygote && inner.sandbox.can_enter();
            let zygote = use_zygote.then(|| zygote.clone());
            tokio::spawn(refill(Arc::downgrade(inner), pool.clone(), zygote));
            pools.push(pool);
        }
        StemCells { pools, zygote }
    }

    /// Python instances the zygote has forked, if it runs.
    pub fn zygote_forks(&self) -> Option<u64> {
        self.zygote.get().map(|z| z.forks())
    }

    /// The python zygote, if it runs and works.
    pub fn zygote(&self) -> Option<&Zygote> {
        self.zygote.get().map(|z| &**z).filter(|z| z.usable())
    }

    /// Takes a live stem cell of `runtime`, if one is ready.
    pub fn take(&self, runtime: Runtime) -> Option<(ProcessInstance, CodeSlot)> {
        let pool = self.pools.iter().find(|p| p.runtime == runtime)?;
        let mut got = None;
        {
            let mut idle = pool.idle.lock().unwrap();
            while let Some(mut cell) = idle.pop() {
                if cell.0.alive() {
                    got = Some(cell);
                    break;
                }
            }
        }
        pool.wake.notify_one();
        got
    }

    /// Stem cells ready now, per runtime.
    pub fn ready(&self) -> Vec<(Runtime, usize)> {
        self.pools
            .iter()
            .map(|p| (p.runtime, p.idle.lock().unwrap().len()))
            .collect()
    }

    /// Kills every stem cell.
    pub fn clear(&self) {
        for p in &self.pools {
            p.idle.lock().unwrap().clear();
        }
    }
}

/// Gives a stem cell its function: code into the slot, memory limit, INIT.
pub(crate) async fn specialise(
    mut cell: (ProcessInstance, CodeSlot),
    f: &FunctionVersion,
    code_dir: &Path,
    logs: &mut crate::LogCollector,
    deadline: tokio::time::Instant,
    inner: &Inner,
) -> Result<ProcessInstance, crate::instance::RunEnd> {
    let platform =
        |what: &str, e: std::io::Error| crate::instance::RunEnd::platform(format!("{what}: {e}"));
    let (inst, slot) = &mut cell;
    let t0 = std::time::Instant::now();
    slot.fill(code_dir)
        .map_err(|e| platform("filling the code slot", e))?;
    let t1 = t0.elapsed();
    inst.set_memory_limit(f.spec.memory_mb)
        .map_err(|e| platform("setting the memory limit", e))?;
    let t2 = t0.elapsed();
    let code = inner.sandbox.code_path(&slot.dir);
    inst.init(inner, f, &code, logs, deadline).await?;
    tracing::debug!(fill = ?t1, limit = ?t2, init = ?t0.elapsed(), "specialised a stem cell");
    let (mut inst, slot) = cell;
    inst.hold_slot(slot);
    Ok(inst)
}

/// Starts the python zygote (off the async workers: it imports for a while).
async fn start_zygote(inner: &Weak<Inner>, slot: &OnceLock<Arc<Zygote>>) {
    let Some(strong) = inner.upgrade() else {
        return;
    };
    let python = strong.config.python.clone();
    let paths = strong.config.bootstraps.clone();
    let boot = strong
        .sandbox
        .runtime_path(&paths.dir, "ignis_bootstrap.py");
    drop(strong);
    let started =
        tokio::task::spawn_blocking(move || Zygote::start(&python, &paths.python_zygote, &boot))
            .await;
    match started {
        Ok(Ok(z)) => {
            tracing::debug!("python zygote ready");
            let _ = slot.set(z);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "no python zygote; stem cells start interpreters"),
        Err(e) => tracing::warn!(error = %e, "no python zygote"),
    }
}

async fn refill(
    inner: Weak<Inner>,
    pool: Arc<StemPool>,
    zygote: Option<Arc<OnceLock<Arc<Zygote>>>>,
) {
    if let Some(z) = &zygote {
        start_zygote(&inner, z).await;
    }
    let zygote = zygote.and_then(|z| z.get().cloned());
    let mut backoff = Duration::from_millis(100);
    loop {
        let missing = pool.target.saturating_sub(pool.idle.lock().unwrap().len());
        if missing == 0 {
            pool.wake.notified().await;
            continue;
        }
        if missing < pool.target {
            // Cells are still ready: let the cold start that took one finish first, so that
            // starting an interpreter does not compete with it for the CPU.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.closing.load(Ordering::Relaxed) {
            return;
        }
        let made = make_cell(&strong, pool.runtime, zygote.as_deref()).await;
        drop(strong);
        match made {
            Ok(cell) => {
                pool.idle.lock().unwrap().push(cell);
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(runtime = %pool.runtime, error = %e, "cannot start a stem cell; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn make_cell(
    inner: &Inner,
    runtime: Runtime,
    zygote: Option<&Zygote>,
) -> Result<(ProcessInstance, CodeSlot), String> {
    let slot =
        CodeSlot::create(&inner.config.code_dir.join(".slots")).map_err(|e| e.to_string())?;
    let place = Placement {
        memory_mb: STEM_MEMORY_MB,
        tmp_mb: FunctionSpec::new(runtime, "").tmp_mb,
        network: Network::None,
    };
    if let Some(z) = zygote.filter(|z| z.usable()) {
        match ProcessInstance::fork_from(inner, z, place, &slot.dir, true).await {
            Ok(inst) => return Ok((inst, slot)),
            Err(e) => tracing::warn!(error = %e, "the python zygote could not fork a stem cell"),
        }
    }
    let inst = ProcessInstance::spawn(inner, runtime, place, &slot.dir, false)
        .await
        .map_err(|end| end.error.map(|e| e.message).unwrap_or_default())?;
    Ok((inst, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_link_trees_and_vanish() {
        let tmp = tempfile::tempdir().unwrap();
        let code = tmp.path().join("code");
        std::fs::create_dir_all(code.join("lib")).unwrap();
        std::fs::write(code.join("app.py"), "x").unwrap();
        std::fs::write(code.join("lib/util.py"), "y").unwrap();
        let slot = CodeSlot::create(&tmp.path().join("slots")).unwrap();
        slot.fill(&code).unwrap();
        assert_eq!(
            std::fs::read_to_string(slot.dir.join("lib/util.py")).unwrap(),
            "y"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(slot.dir.join("app.py")).unwrap().ino(),
            std::fs::metadata(code.join("app.py")).unwrap().ino(),
            "hard-linked, not copied"
        );
        let dir = slot.dir.clone();
        drop(slot);
        assert!(!dir.exists());
        assert!(code.join("app.py").exists());
    }
}

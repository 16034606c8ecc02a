//! The `wasm` runtime of Ignis: WebAssembly run in-process by wasmtime.
//!
//! ```text
//!  deploy (blocking pool)                      cold start (blocking pool)
//!  bytes ─► WasmEngine::compile                WasmEngine::load(sha256)
//!     │  wat → binary, module or component?       │  <cache>/<sha256>-<engine tag>.cwasm
//!     │  Cranelift compile, link check,           │  exists? deserialize_file (mmap)
//!     │  _start / incoming-handler export         │  else compile from the blob, write, then load
//!     ▼                                           ▼
//!  Compiled ─► store_artifact (tmp, fsync,     WasmCode: InstancePre (module) or ProxyPre
//!              rename)                         (component), shared while any slot holds it
//!                                                 │
//!  invocation (tokio worker) ─────────────────────┘
//!  WasmCode::run: fresh Store ─► instantiate from the pooling allocator (copy-on-write memory
//!  image) ─► _start / handle ─► result, logs ─► Store dropped: nothing survives the invocation
//! ```
//!
//! One [`WasmEngine`] per server: one wasmtime `Engine` with the pooling allocator, epoch
//! interruption (a ticker thread, see `ticker.rs`) and async support, one linker for WASI
//! preview 1 modules and one for `wasi:http` components. Guests run on the tokio worker that
//! runs the invocation and yield to it at every epoch tick.
//!
//! Limits: memory through a per-store `ResourceLimiter` (the function's `memory_mb`), time
//! through epochs (the invocation's deadline), results and logs through bounded captures.
#![warn(missing_docs)]

mod http;
mod outgoing;
mod output;
mod run;
mod ticker;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use sha2::Digest;
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, OptLevel, PoolingAllocationConfig,
    Precompiled,
};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use outgoing::{ApiBody, ApiFuture, ApiService, BoxError, DataApi};
use run::{ComponentState, ModuleState};
pub use run::{RunOutput, RunRequest};

/// Bytes of each linear memory and table kept mapped when an instance's slot is freed, reset
/// with `memset` rather than `madvise`: the pages a small invocation touches again are then
/// neither unmapped (a TLB shootdown on every core) nor faulted in anew. At most
/// `pool_slots` × 128 KiB stay resident.
const KEEP_RESIDENT: usize = 64 * 1024;

/// Why WebAssembly could not be compiled or loaded.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The uploaded code is not acceptable: invalid, unknown imports, wrong world. The message
    /// names what is wrong and is meant for the user (400 at deploy).
    #[error("{0}")]
    Invalid(String),
    /// The engine itself failed (out of address space for the pool, …).
    #[error("wasm engine: {0}")]
    Engine(String),
    /// Reading or writing the compiled-artifact cache, or reading the code, failed.
    #[error("wasm artifact cache: {0}")]
    Io(#[from] std::io::Error),
}

/// Settings of the wasm engine.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Directory of compiled artifacts (`<sha256>-<engine tag>.cwasm`); created if missing.
    pub cache_dir: PathBuf,
    /// Slots of the pooling allocator: the most wasm instances alive at once (each component
    /// takes a few core instances of them).
    pub pool_slots: u32,
}

impl WasmConfig {
    /// Default slots of the pooling allocator.
    pub const DEFAULT_POOL_SLOTS: u32 = 1000;

    /// Settings with the default pool under `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        WasmConfig {
            cache_dir: cache_dir.into(),
            pool_slots: Self::DEFAULT_POOL_SLOTS,
        }
    }
}

/// What a deploy made of the uploaded bytes: the serialized machine code, ready to be written
/// to the artifact cache.
pub struct Compiled {
    kind: Kind,
    artifact: Vec<u8>,
}

impl Compiled {
    /// Whether it is a component (`wasi:http`) rather than a module.
    pub fn is_component(&self) -> bool {
        self.kind == Kind::Component
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Module,
    Component,
}

/// The pre-instantiated code of one version, ready for [`WasmCode::run`]. Kept while any of
/// the function's instance slots holds it; dropped with the last one (scale to zero).
pub struct WasmCode {
    engine: Arc<EngineInner>,
    pre: Pre,
}

enum Pre {
    Module(wasmtime::InstancePre<ModuleState>),
    Component(ProxyPre<ComponentState>),
}

struct EngineInner {
    engine: Engine,
    modules: Linker<ModuleState>,
    components: ComponentLinker<ComponentState>,
    cache_dir: PathBuf,
    tag: String,
    ticker: ticker::Ticker,
    loaded: Mutex<HashMap<String, Weak<WasmCode>>>,
}

/// The server's wasm engine. Cheap to clone.
#[derive(Clone)]
pub struct WasmEngine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("cache_dir", &self.inner.cache_dir)
            .field("tag", &self.inner.tag)
            .finish()
    }
}

/// Feeds `Hash` output into SHA-256, to name artifacts by the engine's compatibility hash.
struct Sha256Hasher(sha2::Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn engine_error(e: impl std::fmt::Display) -> WasmError {
    WasmError::Engine(e.to_string())
}

/// The message of an error and its causes, `a: b: c`.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    let mut out = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
    }
    out
}

impl WasmEngine {
    /// Builds the engine (reserving the pool's address space), its linkers and the ticker.
    pub fn new(config: &WasmConfig) -> Result<Self, WasmError> {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.pool_slots.max(1);
        pool.total_core_instances(n)
            .total_component_instances(n)
            .total_memories(n)
            .total_tables(n)
            .total_stacks(n)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut cfg = Config::new();
        cfg.epoch_interruption(true)
            .wasm_component_model(true)
            .cranelift_opt_level(OptLevel::Speed)
            .parallel_compilation(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = match Engine::new(&cfg) {
            Ok(engine) => engine,
            Err(e) => {
                // The pool reserves address space up front (4 GiB and guards per memory
                // slot); a host with a small address-space limit refuses it. Instances are
                // then mapped one by one: slower, but wasm still runs.
                tracing::warn!(
                    error = %chain(&e),
                    "wasm: cannot reserve the instance pool; allocating instances on demand"
                );
                cfg.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&cfg).map_err(|e| engine_error(chain(&e)))?
            }
        };

        let mut modules = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut modules, |s: &mut ModuleState| &mut s.wasi)
            .map_err(|e| engine_error(chain(&e)))?;
        let mut components = ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut components)
            .map_err(|e| engine_error(chain(&e)))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut components)
            .map_err(|e| engine_error(chain(&e)))?;

        let mut h = Sha256Hasher(sha2::Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let tag = hex::encode(&h.0.finalize()[..8]);
        std::fs::create_dir_all(&config.cache_dir)?;
        let ticker = ticker::Ticker::start(engine.clone())?;
        Ok(WasmEngine {
            inner: Arc::new(EngineInner {
                engine,
                modules,
                components,
                cache_dir: config.cache_dir.clone(),
                tag,
                ticker,
                loaded: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Identifies this engine's compilation settings and wasmtime version; part of artifact
    /// names, so that another engine never loads an artifact it did not make.
    pub fn tag(&self) -> &str {
        &self.inner.tag
    }

    /// Checks and compiles uploaded code: WebAssembly binary or text, a WASI preview 1 module
    /// exporting `_start` and importing only WASI, or a component exporting
    /// `wasi:http/incoming-handler` and importing only what the `wasi:http/proxy` world gives.
    /// CPU-heavy: call it on a blocking thread.
    pub fn compile(&self, code: &[u8]) -> Result<Compiled, WasmError> {
        let binary = to_binary(code)?;
        let kind = kind_of(&binary)?;
        let engine = &self.inner.engine;
        let artifact = match kind {
            Kind::Module => {
                let module = Module::new(engine, &binary).map_err(|e| {
                    WasmError::Invalid(format!("invalid WebAssembly module: {}", chain(&e)))
                })?;
                self.prepare_module(&module)?;
                module.serialize()
            }
            Kind::Component => {
                let component = Component::new(engine, &binary).map_err(|e| {
                    WasmError::Invalid(format!("invalid WebAssembly component: {}", chain(&e)))
                })?;
                self.prepare_component(&component)?;
                component.serialize()
            }
        }
        .map_err(|e| engine_error(chain(&e)))?;
        Ok(Compiled { kind, artifact })
    }

    fn prepare_module(
        &self,
        module: &Module,
    ) -> Result<wasmtime::InstancePre<ModuleState>, WasmError> {
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(f))
                if f.params().len() == 0 && f.results().len() == 0 => {}
            Some(_) => {
                return Err(WasmError::Invalid(
                    "the module's `_start` export is not a function without parameters and results"
                        .into(),
                ));
            }
            None => {
                return Err(WasmError::Invalid(
                    "the module has no `_start` export: build it as a WASI command (a `main` \
                     program for wasm32-wasip1), not a library or reactor"
                        .into(),
                ));
            }
        }
        self.inner.modules.instantiate_pre(module).map_err(|e| {
            WasmError::Invalid(format!(
                "the module cannot be linked: {}; wasm modules may import only WASI preview 1 \
                 (`wasi_snapshot_preview1`)",
                chain(&e)
            ))
        })
    }

    fn prepare_component(
        &self,
        component: &Component,
    ) -> Result<ProxyPre<ComponentState>, WasmError> {
        let pre = self
            .inner
            .components
            .instantiate_pre(component)
            .map_err(|e| {
                WasmError::Invalid(format!(
                    "the component cannot be linked: {}; components may import only WASI 0.2 \
                 interfaces (`wasi:http`, `wasi:io`, `wasi:cli`, `wasi:clocks`, `wasi:random`, \
                 …)",
                    chain(&e)
                ))
            })?;
        ProxyPre::new(pre).map_err(|e| {
            WasmError::Invalid(format!(
                "the component does not target the `wasi:http/proxy` world: {}; it must export \
                 `wasi:http/incoming-handler`",
                chain(&e)
            ))
        })
    }

    fn artifact_path(&self, sha256: &str) -> PathBuf {
        self.inner
            .cache_dir
            .join(format!("{sha256}-{}.cwasm", self.inner.tag))
    }

    /// Writes a compiled artifact for the code with this SHA-256: to a temporary file, fsync'd,
    /// then renamed, so that a file under its final name is always complete — the soundness
    /// of [`WasmEngine::load`] rests on it.
    pub fn store_artifact(&self, sha256: &str, compiled: &Compiled) -> Result<(), WasmError> {
        let path = self.artifact_path(sha256);
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp-{}-{:x}", std::process::id(), next_suffix()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&compiled.artifact)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(written?)
    }

    /// The loaded code of this SHA-256 if some instance still holds it. No I/O.
    pub fn cached(&self, sha256: &str) -> Option<Arc<WasmCode>> {
        let loaded = self.inner.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded.get(sha256).and_then(Weak::upgrade)
    }

    /// Loads the code with this SHA-256 and pre-instantiates it: from the artifact cache, or,
    /// if the artifact is missing or was made by another engine, by compiling `source()` (the
    /// uploaded bytes) again and caching the result. Does file I/O: call it on a blocking
    /// thread.
    pub fn load(
        &self,
        sha256: &str,
        source: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<Arc<WasmCode>, WasmError> {
        if let Some(code) = self.cached(sha256) {
            return Ok(code);
        }
        let path = self.artifact_path(sha256);
        let pre = match self.deserialize(&path) {
            Some(pre) => pre,
            None => {
                let _ = std::fs::remove_file(&path);
                let compiled = self.compile(&source()?)?;
                self.store_artifact(sha256, &compiled)?;
                self.deserialize(&path).ok_or_else(|| {
                    engine_error(format!("cannot load the artifact just written to {path:?}"))
                })?
            }
        };
        let code = Arc::new(WasmCode {
            engine: self.inner.clone(),
            pre,
        });
        let mut loaded = self.inner.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded.retain(|_, w| w.strong_count() > 0);
        loaded.insert(sha256.to_string(), Arc::downgrade(&code));
        Ok(code)
    }

    /// Maps an artifact and pre-instantiates it; `None` if there is none or it does not load.
    fn deserialize(&self, path: &Path) -> Option<Pre> {
        let engine = &self.inner.engine;
        let kind = Engine::detect_precompiled_file(path).ok()??;
        // SAFETY: `deserialize_file` runs machine code from the file, so the file must have
        // been made by `serialize` of a compatible engine and not altered since. It is: the
        // only files under the cache directory's final names are those `store_artifact` wrote
        // from `Module::serialize`/`Component::serialize` (temporary file, fsync, rename, so
        // never a torn one), named by the SHA-256 of their code and by this engine's
        // compatibility hash; the directory is inside the data directory (mode 0700), which
        // only the server writes; and wasmtime checks the header's engine settings again.
        let loaded = unsafe {
            match kind {
                Precompiled::Module => Module::deserialize_file(engine, path)
                    .map(|m| self.prepare_module(&m).map(Pre::Module)),
                Precompiled::Component => Component::deserialize_file(engine, path)
                    .map(|c| self.prepare_component(&c).map(Pre::Component)),
            }
        };
        match loaded {
            Ok(Ok(pre)) => Some(pre),
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cached artifact does not link");
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %chain(&e), "cached artifact does not load");
                None
            }
        }
    }
}

fn next_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// WebAssembly text is turned into binary; binary is taken as it is.
fn to_binary(code: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, WasmError> {
    if code.starts_with(b"\0asm") {
        return Ok(std::borrow::Cow::Borrowed(code));
    }
    let text = code
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'(' || b == b';');
    if !text {
        return Err(WasmError::Invalid(
            "the code is not WebAssembly: a binary starts with the bytes \\0asm, WebAssembly \
             text with `(module` or `(component`"
                .into(),
        ));
    }
    wat::parse_bytes(code)
        .map_err(|e| WasmError::Invalid(format!("the WebAssembly text does not parse: {e}")))
}

/// Module or component, from the binary's version field.
fn kind_of(binary: &[u8]) -> Result<Kind, WasmError> {
    match binary.get(4..8) {
        Some([1, 0, 0, 0]) => Ok(Kind::Module),
        Some([0x0d, 0, 1, 0]) => Ok(Kind::Component),
        Some(v) => Err(WasmError::Invalid(format!(
            "unsupported WebAssembly binary version {v:02x?}: expected a core module (1) or a \
             component (0x0d, layer 1)"
        ))),
        None => Err(WasmError::Invalid(
            "the WebAssembly binary is truncated".into(),
        )),
    }
}

impl WasmCode {
    /// Whether it is a `wasi:http` component rather than a WASI module.
    pub fn is_component(&self) -> bool {
        matches!(self.pre, Pre::Component(_))
    }
}

#[cfg(test)]
mod tests;

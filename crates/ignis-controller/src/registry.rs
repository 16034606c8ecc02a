//! The function registry: deploying versions (checking spec and code) and an in-memory cache of
//! function metadata for the invoke path.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use ignis_core::{
    CodeFormat, CodeRef, FunctionSpec, FunctionVersion, Runtime, SpecError, validate_function_name,
};
use ignis_invoker::Invoker;
use ignis_runtime::code::{self, CodeError};
use ignis_store::{BlobStore, NewVersion, Store};
use ignis_wasm::{Compiled, WasmEngine, WasmError};

use crate::{ControllerError, QuotaDefaults, Result};

/// Uploaded code.
#[derive(Debug, Clone)]
pub enum CodeUpload {
    /// A zip archive.
    Zip(Bytes),
    /// One file; without a name, one is derived from the handler.
    File {
        /// Its name in the code directory.
        filename: Option<String>,
        /// Its bytes.
        bytes: Bytes,
    },
}

/// A deploy: a new version of a function.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Namespace.
    pub namespace: String,
    /// Function name.
    pub name: String,
    /// Runtime, handler, limits, env.
    pub spec: FunctionSpec,
    /// The code; `None` keeps the previous version's code.
    pub code: Option<CodeUpload>,
    /// Refuse (409) if the function exists.
    pub create_only: bool,
}

impl From<CodeError> for ControllerError {
    fn from(e: CodeError) -> Self {
        match e {
            CodeError::Handler(s) => ControllerError::InvalidSpec(s),
            CodeError::Io(e) => ControllerError::Internal(e.to_string()),
            CodeError::TooLarge(m) => {
                ControllerError::TooLarge(format!("the code is too large: {m}"))
            }
            other => ControllerError::InvalidSpec(SpecError::new("code", other.to_string())),
        }
    }
}

/// Checks and stores a new version; runs on the blocking pool. Wasm code is compiled here, once,
/// and its artifact cached, so that no invocation compiles.
pub(crate) fn deploy(
    store: &dyn Store,
    blobs: &BlobStore,
    invoker: &Invoker,
    limits: &QuotaDefaults,
    req: DeployRequest,
) -> Result<(FunctionVersion, bool)> {
    validate_function_name(&req.name)
        .map_err(|e| ControllerError::InvalidSpec(SpecError::new("name", e.to_string())))?;
    let mut spec = req.spec;
    spec.validate()?;
    for (field, dest) in [
        ("on_success", &spec.on_success),
        ("on_failure", &spec.on_failure),
    ] {
        let Some(dest) = dest else { continue };
        if dest == &req.name {
            return Err(SpecError::new(field, "a function cannot be its own destination").into());
        }
        validate_function_name(dest)
            .map_err(|e| ControllerError::InvalidSpec(SpecError::new(field, e.to_string())))?;
        if store.get_version(&req.namespace, dest, None)?.is_none() {
            return Err(ControllerError::NotFound(format!(
                "destination function {dest:?}"
            )));
        }
        if let Some(path) = destination_cycle(store, &req.namespace, &req.name, dest)? {
            return Err(SpecError::new(
                field,
                format!("destinations would form a cycle: {}", path.join(" → ")),
            )
            .into());
        }
    }
    let (format, filename, bytes) = match req.code {
        Some(CodeUpload::Zip(b)) => (CodeFormat::Zip, None, b),
        Some(CodeUpload::File { filename, bytes }) => {
            let filename = filename
                .or_else(|| code::default_filename(&spec))
                .ok_or_else(|| {
                    SpecError::new(
                        "filename",
                        "a single-file upload needs a file name (query parameter filename)",
                    )
                })?;
            (CodeFormat::File, Some(filename), bytes)
        }
        None => {
            let Some(prev) = store.get_version(&req.namespace, &req.name, None)? else {
                return Err(SpecError::new("code", "required when creating a function").into());
            };
            let bytes = blobs.get(&prev.code.sha256).map_err(|e| {
                ControllerError::Internal(format!("code of the previous version: {e}"))
            })?;
            (prev.code.format, prev.code.filename, Bytes::from(bytes))
        }
    };
    const MIB: u64 = 1024 * 1024;
    if limits.code_mb > 0 && bytes.len() as u64 > u64::from(limits.code_mb) * MIB {
        return Err(ControllerError::TooLarge(format!(
            "the code is too large: {} bytes, more than the namespace's quota of {} MiB",
            bytes.len(),
            limits.code_mb
        )));
    }
    let max_unpacked = match limits.code_unpacked_mb {
        0 => u64::MAX,
        mb => u64::from(mb) * MIB,
    };
    let listing = code::inspect(format, filename.as_deref(), &bytes, max_unpacked)?;
    if let Some(handler) = code::check_handler(&spec, &listing)? {
        spec.handler = handler;
    }
    let wasm = if spec.runtime == Runtime::Wasm {
        Some(compile_wasm(invoker, format, &bytes)?)
    } else {
        None
    };
    let sha256 = blobs
        .put(&bytes)
        .map_err(|e| ControllerError::Internal(format!("storing code: {e}")))?;
    let code = CodeRef {
        sha256,
        size: bytes.len() as u64,
        format,
        filename,
    };
    if let Some((engine, compiled)) = wasm {
        engine
            .store_artifact(&code.sha256, &compiled)
            .map_err(|e| ControllerError::Internal(e.to_string()))?;
    } else {
        // Unpack now so that the first invocation does not pay for it.
        let executable = spec.runtime.executable_code();
        code::unpack(
            format,
            code.filename.as_deref(),
            executable,
            &bytes,
            &invoker.code_dir().join(code::dir_name(&code, executable)),
        )?;
    }
    // The count and the insert under one lock, so that concurrent deploys cannot pass the
    // namespace's function quota together.
    static ADDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _adding = ADDING.lock().unwrap_or_else(|e| e.into_inner());
    if limits.functions > 0
        && store
            .get_version(&req.namespace, &req.name, None)?
            .is_none()
    {
        let count = store.list_functions(&req.namespace)?.len();
        if count >= limits.functions as usize {
            return Err(ControllerError::QuotaExceeded {
                message: format!(
                    "namespace {:?} is at its quota of {} functions; delete one first",
                    req.namespace, limits.functions
                ),
                retry_after_secs: 60,
            });
        }
    }
    let new = NewVersion {
        namespace: req.namespace,
        name: req.name,
        spec,
        code,
    };
    Ok(store.put_version(new, req.create_only)?)
}

/// Checks and compiles the code of a wasm function: one WebAssembly file (binary or text).
fn compile_wasm<'a>(
    invoker: &'a Invoker,
    format: CodeFormat,
    bytes: &[u8],
) -> Result<(&'a WasmEngine, Compiled)> {
    if format == CodeFormat::Zip {
        return Err(SpecError::new(
            "code",
            "wasm functions take one .wasm (or .wat) file, not a zip archive",
        )
        .into());
    }
    let engine = invoker.wasm().map_err(ControllerError::Internal)?;
    let compiled = engine.compile(bytes).map_err(|e| match e {
        WasmError::Invalid(m) => ControllerError::InvalidSpec(SpecError::new("code", m)),
        other => ControllerError::Internal(other.to_string()),
    })?;
    Ok((engine, compiled))
}

/// Whether following destinations from `start` leads back to `name`; the path if it does.
fn destination_cycle(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    start: &str,
) -> Result<Option<Vec<String>>> {
    let mut seen = HashSet::new();
    let mut stack = vec![vec![name.to_string(), start.to_string()]];
    while let Some(path) = stack.pop() {
        let last = path.last().cloned().unwrap_or_default();
        if !seen.insert(last.clone()) {
            continue;
        }
        let Some(f) = store.get_version(namespace, &last, None)? else {
            continue;
        };
        for next in [&f.spec.on_success, &f.spec.on_failure]
            .into_iter()
            .flatten()
        {
            let mut p = path.clone();
            p.push(next.clone());
            if next == name {
                return Ok(Some(p));
            }
            stack.push(p);
        }
    }
    Ok(None)
}

#[derive(Default)]
struct Cached {
    latest: Option<Arc<FunctionVersion>>,
    versions: HashMap<u32, Arc<FunctionVersion>>,
}

/// Cache of function metadata. This process is the only writer of the store in single-node
/// mode, so entries are replaced on deploy and dropped on delete, never stale. Keyed by
/// namespace then name, so that a lookup allocates nothing.
#[derive(Default)]
pub(crate) struct Registry {
    functions: RwLock<HashMap<String, HashMap<String, Cached>>>,
    namespaces: RwLock<HashSet<String>>,
}

impl Registry {
    pub fn namespace_known(&self, ns: &str) -> bool {
        self.namespaces.read().unwrap().contains(ns)
    }

    pub fn remember_namespace(&self, ns: &str) {
        self.namespaces.write().unwrap().insert(ns.to_string());
    }

    /// Drops a deleted namespace and every function of it.
    pub fn forget_namespace(&self, ns: &str) {
        self.namespaces.write().unwrap().remove(ns);
        self.functions.write().unwrap().remove(ns);
    }

    pub fn get(&self, ns: &str, name: &str, version: Option<u32>) -> Option<Arc<FunctionVersion>> {
        let map = self.functions.read().unwrap();
        let c = map.get(ns)?.get(name)?;
        match version {
            None => c.latest.clone(),
            Some(v) => c.versions.get(&v).cloned(),
        }
    }

    pub fn put(&self, ns: &str, name: &str, is_latest: bool, f: Arc<FunctionVersion>) {
        let mut map = self.functions.write().unwrap();
        let c = map
            .entry(ns.to_string())
            .or_default()
            .entry(name.to_string())
            .or_default();
        if is_latest {
            c.latest = Some(f.clone());
        }
        c.versions.insert(f.version, f);
    }

    pub fn put_latest(&self, ns: &str, name: &str, f: Arc<FunctionVersion>) {
        self.put(ns, name, true, f);
    }

    pub fn forget(&self, ns: &str, name: &str) {
        if let Some(fns) = self.functions.write().unwrap().get_mut(ns) {
            fns.remove(name);
        }
    }
}

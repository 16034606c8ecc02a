//! Instances of wasm functions. A wasm instance is a *slot* in the version's pool: it holds the
//! pre-instantiated code (shared by every slot of the version) and the function's environment,
//! and each invocation on it runs in a fresh wasmtime store (`ignis_wasm::WasmCode::run`), on
//! the invocation's own task — no process, no sandbox: wasmtime isolates the guest.
//!
//! The pool gives wasm what it gives other runtimes: at most `max_instances` invocations at
//! once, the bounded queue and 429 past it, the memory budget (each slot reserves the
//! function's memory), keep-alive and `GET /v1/system/instances`. A slot is never spoiled by
//! its invocation (the store is dropped), so it always goes back to the pool.
//!
//! A component's slot also holds its data access (`data.rs`): a token for its namespace, in
//! `IGNIS_TOKEN`, and the in-process API its `wasi:http` outgoing requests reach. A module's
//! holds none: it cannot make requests.
//!
//! Cold start = the version's code had to be loaded (artifact mapped, `instantiate_pre`); a new
//! slot of code already loaded by another slot is warm.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ignis_core::{ActivationError, ErrorPhase, FunctionVersion, LogStream, Status};
use ignis_wasm::{RunRequest, WasmCode, WasmError};

use crate::instance::{RunEnd, function_env};
use crate::logs::LogCollector;

/// A wasm function's instance slot.
pub(crate) struct WasmSlot {
    code: Arc<WasmCode>,
    env: Vec<(String, String)>,
    /// A component's data access (token, what its outgoing requests reach), as long as the
    /// slot lives.
    data: Option<crate::data::WasmData>,
}

fn load_failed(e: WasmError) -> RunEnd {
    match e {
        // Compiled at deploy, so this happens only if the engine changed and the code no
        // longer compiles or links.
        WasmError::Invalid(message) => RunEnd {
            status: Status::ApplicationError,
            body: Bytes::new(),
            error: Some(ActivationError {
                kind: "InvalidWasm".into(),
                message,
                stack: None,
                phase: ErrorPhase::Init,
            }),
            reusable: false,
        },
        other => RunEnd::platform(other.to_string()),
    }
}

/// Makes a slot for `f`; `true` if its code had to be loaded (a cold start).
pub(crate) async fn create(
    inner: &Arc<crate::Inner>,
    f: &FunctionVersion,
) -> Result<(WasmSlot, bool), RunEnd> {
    let engine = inner.wasm_engine().map_err(RunEnd::platform)?;
    let (code, cold) = match engine.cached(&f.code.sha256) {
        Some(code) => (code, false),
        None => {
            let engine = engine.clone();
            let source = inner.code.clone();
            let sha = f.code.sha256.clone();
            let code = tokio::task::spawn_blocking(move || engine.load(&sha, || source.read(&sha)))
                .await
                .map_err(|e| RunEnd::platform(e.to_string()))?
                .map_err(load_failed)?;
            (code, true)
        }
    };
    let mut env: Vec<(String, String)> = function_env(f).into_iter().collect();
    // Only a component can make a request (`wasi:http/outgoing-handler`); a WASI preview 1
    // module has no way to open a connection, so it gets no token it could not use.
    let data = if code.is_component() {
        inner.data.attach_wasm(&f.namespace, &mut env)
    } else {
        None
    };
    Ok((WasmSlot { code, env, data }, cold))
}

/// Runs one invocation on a slot.
pub(crate) async fn run(
    slot: &WasmSlot,
    f: &FunctionVersion,
    event: &Bytes,
    logs: &mut LogCollector,
    deadline: Instant,
) -> RunEnd {
    let out = slot
        .code
        .run(RunRequest {
            event,
            env: &slot.env,
            name: &f.name,
            memory_bytes: f.spec.memory_mb as usize * 1024 * 1024,
            deadline,
            timeout_ms: f.spec.timeout_ms,
            api: slot.data.as_ref().map(|d| &d.api),
        })
        .await;
    // A capture keeps a little more than the log limit, so the collector marks truncation.
    logs.push(LogStream::Stdout, &out.stdout);
    logs.push(LogStream::Stderr, &out.stderr);
    RunEnd {
        status: out.status,
        body: out.body,
        error: out.error,
        reusable: true,
    }
}

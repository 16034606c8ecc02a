//! One invocation: a fresh `Store`, an instance from the pre-instantiated code, the guest's
//! entry point, and how it ended.
//!
//! How an end is classified, first match wins:
//!
//! | what happened | status | error type |
//! |---|---|---|
//! | the deadline passed (epoch interrupt, or a host wait cut short) | `timeout` | `Timeout` |
//! | more than the result limit written to a module's stdout | `application_error` | `ResultTooLarge` |
//! | the guest failed after a memory grow was refused | `oom` | `OutOfMemory` |
//! | `proc_exit(0)` / `_start` returned | `success` | — |
//! | `proc_exit(n)`, n ≠ 0 | `application_error` | `ExitCode` |
//! | a wasm trap | `application_error` | `Trap` (stack: the wasm backtrace) |
//! | the pool has no free slot, or another host failure | `platform_error` | `WasmInstance` |

use std::time::Instant;

use bytes::Bytes;
use ignis_core::{ActivationError, ErrorPhase, MAX_LOG_BYTES, MAX_RESULT_BYTES, Status};
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreContextMut, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::outgoing::{DataApi, OutgoingHooks};
use crate::output::{Capture, Full};
use crate::{Pre, WasmCode, chain};

/// What an invocation gives the guest.
#[derive(Debug, Clone, Copy)]
pub struct RunRequest<'a> {
    /// The event: a module's stdin; a component's request (see `http.rs`).
    pub event: &'a Bytes,
    /// Environment variables (the function's, and Ignis's `IGNIS_*`).
    pub env: &'a [(String, String)],
    /// `argv[0]`: the function's name.
    pub name: &'a str,
    /// Memory limit of the instance in bytes.
    pub memory_bytes: usize,
    /// When the invocation times out.
    pub deadline: Instant,
    /// The function's timeout, for the error message.
    pub timeout_ms: u64,
    /// What a component's outgoing requests may reach (its namespace's data); `None`: nothing.
    /// Modules have no outgoing requests.
    pub api: Option<&'a DataApi>,
}

/// How an invocation ended.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// success, application_error, timeout, oom or platform_error.
    pub status: Status,
    /// The result (success only).
    pub body: Bytes,
    /// The error (failures only).
    pub error: Option<ActivationError>,
    /// What the guest wrote as logs: a component's stdout (a module's stdout is its result).
    pub stdout: Bytes,
    /// What the guest wrote to stderr.
    pub stderr: Bytes,
    /// Whether log bytes were dropped past the limit.
    pub logs_truncated: bool,
}

/// Logs are kept up to the activation's limit plus a line's worth, so the log collector can
/// still tell that the limit was passed.
const LOG_CAPTURE_BYTES: usize = MAX_LOG_BYTES + 64 * 1024;

/// The memory limit of one store, and whether it refused a grow.
pub(crate) struct Limits {
    memory_bytes: usize,
    refused: Option<usize>,
}

/// Most elements of a table; the pooling allocator bounds them too.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Store data of a WASI preview 1 module.
pub(crate) struct ModuleState {
    pub wasi: WasiP1Ctx,
    limits: Limits,
    deadline: Instant,
}

/// Store data of a `wasi:http` component.
pub(crate) struct ComponentState {
    /// First: dropped before `table` (fields drop in order), so that request bodies the table
    /// still holds fail instead of ending (`outgoing.rs`).
    hooks: OutgoingHooks,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: Limits,
    deadline: Instant,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Interrupts the guest at every epoch tick: past the deadline it traps, before it yields.
fn on_epoch<T: HasDeadline>(ctx: StoreContextMut<'_, T>) -> wasmtime::Result<UpdateDeadline> {
    if Instant::now() >= ctx.data().deadline() {
        Ok(UpdateDeadline::Interrupt)
    } else {
        Ok(UpdateDeadline::Yield(1))
    }
}

trait HasDeadline {
    fn deadline(&self) -> Instant;
}

impl HasDeadline for ModuleState {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl HasDeadline for ComponentState {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

fn wasi_builder(req: &RunRequest<'_>, stdout: &Capture, stderr: &Capture) -> WasiCtxBuilder {
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        .envs(req.env)
        .arg(req.name);
    b
}

fn limits(req: &RunRequest<'_>) -> Limits {
    Limits {
        memory_bytes: req.memory_bytes,
        refused: None,
    }
}

fn new_store<T: HasDeadline + Send + 'static>(
    engine: &wasmtime::Engine,
    data: T,
    limiter: fn(&mut T) -> &mut Limits,
) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(move |s| limiter(s) as &mut dyn ResourceLimiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(on_epoch::<T>);
    store
}

/// How a guest's run ended, before it is classified.
pub(crate) enum End {
    /// `_start` returned, or the component answered.
    Done(Bytes),
    /// The guest or the host failed.
    Failed(wasmtime::Error),
    /// A failure already classified (HTTP status, no response, result too large).
    Classified(Status, &'static str, String),
    /// The deadline passed while the host waited.
    Deadline,
}

/// What is known of a run once the guest is done, to classify it.
struct Classify<'a> {
    req: &'a RunRequest<'a>,
    stdout_overflow: bool,
    refused: Option<usize>,
    stderr: Bytes,
}

/// The last lines of stderr, for error messages.
fn stderr_tail(stderr: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut tail: Vec<&str> = text
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(lines)
        .collect();
    tail.reverse();
    tail.join("\n")
}

impl Classify<'_> {
    /// The output of a run that ended so, with the logs it wrote.
    fn output(self, ended: End, stdout_log: Bytes, logs_truncated: bool) -> RunOutput {
        let (status, body, error) = self.end(ended);
        RunOutput {
            status,
            body,
            error,
            stdout: stdout_log,
            stderr: self.stderr,
            logs_truncated,
        }
    }

    /// Status, result and error of a run, by the table in the module's documentation.
    fn end(&self, ended: End) -> (Status, Bytes, Option<ActivationError>) {
        let fail = |status, kind: &str, message: String, stack| {
            let error = ActivationError {
                kind: kind.to_string(),
                message,
                stack,
                phase: ErrorPhase::Invoke,
            };
            (status, Bytes::new(), Some(error))
        };
        let e = match ended {
            End::Deadline => None,
            End::Failed(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => None,
            _ if self.stdout_overflow => {
                return fail(
                    Status::ApplicationError,
                    "ResultTooLarge",
                    format!("the function wrote more than {MAX_RESULT_BYTES} bytes to stdout"),
                    None,
                );
            }
            End::Done(body) => return (Status::Success, body, None),
            End::Classified(status, kind, message) => return fail(status, kind, message, None),
            End::Failed(e) => Some(e),
        };
        let Some(e) = e else {
            let message = format!(
                "the function did not finish within {} ms",
                self.req.timeout_ms
            );
            return fail(Status::Timeout, "Timeout", message, None);
        };
        let trap = e.downcast_ref::<Trap>();
        let exit = e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|x| x.0);
        if let Some(wanted) = self.refused {
            let then = match (exit, trap) {
                (Some(code), _) => format!("it then exited with status {code}"),
                (None, Some(t)) => format!("it then trapped: {t}"),
                (None, None) => format!("then: {}", chain(&e)),
            };
            let message = format!(
                "the function asked for {} MiB of memory, more than its limit of {} MiB; {then}",
                wanted.div_ceil(1024 * 1024),
                self.req.memory_bytes / (1024 * 1024)
            );
            return fail(Status::Oom, "OutOfMemory", message, None);
        }
        if let Some(code) = exit {
            let mut message = format!("the module exited with status {code}");
            let tail = stderr_tail(&self.stderr, 5);
            if !tail.is_empty() {
                message = format!("{message}: {tail}");
            }
            return fail(Status::ApplicationError, "ExitCode", message, None);
        }
        if let Some(t) = trap {
            let stack = e
                .downcast_ref::<wasmtime::WasmBacktrace>()
                .map(|b| b.to_string())
                .filter(|s| !s.is_empty());
            return fail(Status::ApplicationError, "Trap", t.to_string(), stack);
        }
        let message = chain(&e);
        if message.contains("concurrent") && message.contains("limit") {
            // The pooling allocator has no free slot: not the function's fault.
            return fail(Status::PlatformError, "WasmInstance", message, None);
        }
        fail(Status::ApplicationError, "WasmError", message, None)
    }
}

impl WasmCode {
    /// Runs one invocation in a fresh store, on the current task. Never panics on guest
    /// behaviour; every end is an output.
    pub async fn run(&self, req: RunRequest<'_>) -> RunOutput {
        let _running = self.engine.ticker.running();
        match &self.pre {
            Pre::Module(pre) => self.run_module(pre, &req).await,
            Pre::Component(pre) => self.run_component(pre, &req).await,
        }
    }

    async fn run_module(
        &self,
        pre: &wasmtime::InstancePre<ModuleState>,
        req: &RunRequest<'_>,
    ) -> RunOutput {
        let stdout = Capture::new(MAX_RESULT_BYTES, Full::Trap);
        let stderr = Capture::new(LOG_CAPTURE_BYTES, Full::Drop);
        let mut wasi = wasi_builder(req, &stdout, &stderr);
        wasi.stdin(MemoryInputPipe::new(req.event.clone()));
        let state = ModuleState {
            wasi: wasi.build_p1(),
            limits: limits(req),
            deadline: req.deadline,
        };
        let mut store = new_store(&self.engine.engine, state, |s| &mut s.limits);
        let guest = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        };
        let deadline = tokio::time::Instant::from_std(req.deadline);
        let ended = match tokio::time::timeout_at(deadline, guest).await {
            Err(_) => End::Deadline,
            Ok(Err(e)) => End::Failed(e),
            Ok(Ok(())) => End::Done(Bytes::new()),
        };
        let refused = store.data().limits.refused;
        drop(store);
        let (out, stdout_overflow) = stdout.take();
        let (err, logs_truncated) = stderr.take();
        let ended = match ended {
            End::Done(_) => End::Done(out),
            End::Failed(e)
                if e.downcast_ref::<wasmtime_wasi::I32Exit>().map(|x| x.0) == Some(0) =>
            {
                End::Done(out)
            }
            other => other,
        };
        let classify = Classify {
            req,
            stdout_overflow,
            refused,
            stderr: err,
        };
        classify.output(ended, Bytes::new(), logs_truncated)
    }

    async fn run_component(
        &self,
        pre: &wasmtime_wasi_http::p2::bindings::ProxyPre<ComponentState>,
        req: &RunRequest<'_>,
    ) -> RunOutput {
        let stdout = Capture::new(LOG_CAPTURE_BYTES, Full::Drop);
        let stderr = Capture::new(LOG_CAPTURE_BYTES, Full::Drop);
        let state = ComponentState {
            hooks: OutgoingHooks::new(req.api.cloned()),
            wasi: wasi_builder(req, &stdout, &stderr).build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: limits(req),
            deadline: req.deadline,
        };
        let mut store = new_store(&self.engine.engine, state, |s| &mut s.limits);
        let http_req = crate::http::Request::from_event(req.event);
        let deadline = tokio::time::Instant::from_std(req.deadline);
        let prepared = (|| {
            let incoming = store.data_mut().http().new_incoming_request(
                wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
                http_req.to_hyper()?,
            )?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let out = store.data_mut().http().new_response_outparam(tx)?;
            wasmtime::Result::Ok((incoming, out, rx))
        })();
        let (ended, refused) = match prepared {
            Err(e) => (End::Failed(e), None),
            Ok((incoming, out, rx)) => {
                let guest = async move {
                    let handled = async {
                        let proxy = pre.instantiate_async(&mut store).await?;
                        proxy
                            .wasi_http_incoming_handler()
                            .call_handle(&mut store, incoming, out)
                            .await
                    }
                    .await;
                    let refused = store.data().limits.refused;
                    // Dropping the store ends a response body the guest did not finish.
                    drop(store);
                    (handled, refused)
                };
                let answer = crate::http::collect_response(rx);
                match tokio::time::timeout_at(deadline, async { tokio::join!(guest, answer) }).await
                {
                    Err(_) => (End::Deadline, None),
                    Ok(((Err(e), refused), _)) => (End::Failed(e), refused),
                    Ok(((Ok(()), refused), answer)) => (http_req.end(answer), refused),
                }
            }
        };
        let (out, out_dropped) = stdout.take();
        let (err, err_dropped) = stderr.take();
        let classify = Classify {
            req,
            stdout_overflow: false,
            refused,
            stderr: err,
        };
        classify.output(ended, out, out_dropped || err_dropped)
    }
}

//! One instance: a python/node process speaking the protocol (kept warm and reused), or an exec
//! slot (a fresh process per invocation, event on stdin, result on stdout).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ignis_core::{
    ActivationError, ActivationId, ErrorPhase, FunctionVersion, LogStream, MAX_RESULT_BYTES,
    Network, Runtime, Status,
};
use ignis_runtime::protocol::{
    self, ErrorPayload, Frame, FrameKind, InitMessage, InvokeMeta, ProtocolError,
};
use ignis_sandbox::{ProcessSpec, SandboxedProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::time::Instant as TokioInstant;

use crate::Inner;
use crate::logs::LogCollector;

/// How a run on an instance ended, before it is turned into an activation.
#[derive(Clone)]
pub(crate) struct RunEnd {
    pub status: Status,
    pub body: Bytes,
    pub error: Option<ActivationError>,
    /// Whether the instance may serve again.
    pub reusable: bool,
}

impl RunEnd {
    pub(crate) fn failed(status: Status, kind: &str, message: String, phase: ErrorPhase) -> Self {
        RunEnd {
            status,
            body: Bytes::new(),
            error: Some(ActivationError {
                kind: kind.to_string(),
                message,
                stack: None,
                phase,
            }),
            reusable: false,
        }
    }

    /// Ignis itself failed while preparing the instance.
    pub(crate) fn platform(message: String) -> Self {
        Self::failed(
            Status::PlatformError,
            "InstanceStart",
            message,
            ErrorPhase::Init,
        )
    }

    fn from_payload(status: Status, payload: &[u8], phase: ErrorPhase, reusable: bool) -> Self {
        let e = ErrorPayload::parse(payload);
        RunEnd {
            status,
            body: Bytes::new(),
            error: Some(ActivationError {
                kind: e.kind,
                message: e.message,
                stack: e.stack,
                phase,
            }),
            reusable,
        }
    }
}

/// A live instance.
pub(crate) struct Instance {
    pub kind: InstanceKind,
    pub last_used: Instant,
    /// What `GET /v1/system/instances` shows; unregistered (and its memory given back to the
    /// invoker's budget) when the instance is dropped. Shared by the handles of one shared
    /// instance, so its strong count is the number of handles alive.
    pub meta: Arc<crate::registry::Registered>,
}

impl Instance {
    /// For a shared instance, `n` more handles to it (each one place in its pool).
    pub fn more_handles(&self, n: usize) -> Vec<Instance> {
        match &self.kind {
            InstanceKind::Shared(s) => (0..n)
                .map(|_| Instance {
                    kind: InstanceKind::Shared(s.clone()),
                    last_used: self.last_used,
                    meta: self.meta.clone(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether it is known to be unable to serve (a shared instance whose process ended).
    pub fn is_dead(&self) -> bool {
        matches!(&self.kind, InstanceKind::Shared(s) if s.is_dead())
    }
}

pub(crate) enum InstanceKind {
    /// A python or node process kept between invocations.
    Process(Box<ProcessInstance>),
    /// An exec function's slot: code unpacked, a process is started per invocation.
    Exec { code_dir: std::path::PathBuf },
    /// A handle to a python or node process running several invocations at once.
    Shared(Arc<crate::shared::SharedInstance>),
    /// A `bootstrap` speaking the Lambda Runtime API, kept between invocations.
    Lambda(Box<crate::lambda::LambdaInstance>),
    /// A wasm function's slot: its loaded code, a fresh store per invocation.
    Wasm(crate::wasm::WasmSlot),
}

pub(crate) struct ProcessInstance {
    pub(crate) proc: SandboxedProcess,
    pub(crate) channel: tokio::net::UnixStream,
    pub(crate) rbuf: BytesMut,
    next_id: u64,
    /// For a specialised stem cell: the directory its /code shows, removed with it.
    pub(crate) slot: Option<crate::stem::CodeSlot>,
    /// Its data access (token, relay), from INIT on.
    pub(crate) data: Option<crate::data::InstanceData>,
}

/// What came out of the channel while pumping.
enum Pumped {
    Frame(Frame),
    Closed,
    Deadline,
    Broken(ProtocolError),
}

/// Reads the channel and both log pipes until a frame arrives, the channel closes or the
/// deadline passes. Log bytes go to `logs`. Cancel-safe reads only (`read_buf`, `readable`).
async fn pump(
    channel: &mut tokio::net::UnixStream,
    rbuf: &mut BytesMut,
    stdout: &pipe::Receiver,
    stderr: &pipe::Receiver,
    logs: &mut LogCollector,
    deadline: TokioInstant,
) -> Pumped {
    let mut scratch = [0u8; 16 * 1024];
    loop {
        match protocol::parse_frame(rbuf) {
            Ok(Some(f)) => return Pumped::Frame(f),
            Ok(None) => {}
            Err(e) => return Pumped::Broken(e),
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(64 * 1024);
        }
        tokio::select! {
            biased;
            r = channel.read_buf(rbuf) => match r {
                Ok(0) => return Pumped::Closed,
                Ok(_) => {}
                Err(e) => return Pumped::Broken(e.into()),
            },
            r = stdout.readable() => {
                if r.is_ok() { drain(stdout, LogStream::Stdout, logs, &mut scratch); }
            }
            r = stderr.readable() => {
                if r.is_ok() { drain(stderr, LogStream::Stderr, logs, &mut scratch); }
            }
            _ = tokio::time::sleep_until(deadline) => return Pumped::Deadline,
        }
    }
}

/// Reads whatever a pipe holds right now, without waiting. Returns false at end of file.
pub(crate) fn drain(
    p: &pipe::Receiver,
    stream: LogStream,
    logs: &mut LogCollector,
    scratch: &mut [u8],
) -> bool {
    loop {
        match p.try_read(scratch) {
            Ok(0) => return false,
            Ok(n) => logs.push(stream, &scratch[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Reads what a pipe holds right now with a plain non-blocking read(2). tokio's `try_read`
/// answers WouldBlock until its reactor has seen the pipe become readable, which can lag behind
/// data written just before the process answered or exited: the final drains must not trust it.
pub(crate) fn read_now(p: &pipe::Receiver, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: read(2) into a buffer we own, on a descriptor the receiver keeps open.
    let n = unsafe { libc::read(p.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Takes every byte a pipe holds now (see [`read_now`]) into the logs.
pub(crate) fn drain_now(
    p: &pipe::Receiver,
    stream: LogStream,
    logs: &mut LogCollector,
    scratch: &mut [u8],
) {
    while let Ok(n) = read_now(p, scratch) {
        if n == 0 {
            return;
        }
        logs.push(stream, &scratch[..n]);
    }
}

pub(crate) fn drain_both(proc: &SandboxedProcess, logs: &mut LogCollector) {
    let mut scratch = [0u8; 16 * 1024];
    drain_now(&proc.stdout, LogStream::Stdout, logs, &mut scratch);
    drain_now(&proc.stderr, LogStream::Stderr, logs, &mut scratch);
}

fn base_env(inner: &Inner) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let tmp: std::ffi::OsString = if inner.sandbox.protections().filesystem_isolation {
        "/tmp".into()
    } else {
        inner.config.tmp_dir.clone().into()
    };
    vec![
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), tmp.clone()),
        ("TMPDIR".into(), tmp),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

/// Where and under which limits an instance runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub memory_mb: u32,
    pub tmp_mb: u32,
    pub network: Network,
}

impl Placement {
    pub fn of(f: &FunctionVersion) -> Self {
        Placement {
            memory_mb: f.spec.memory_mb,
            tmp_mb: f.spec.tmp_mb,
            network: f.spec.network,
        }
    }
}

/// What every kind of instance shares: code, limits, network, environment. The caller sets
/// the program, its arguments and any data limit.
pub(crate) fn process_spec(
    inner: &Inner,
    place: Placement,
    code_dir: &std::path::Path,
    protocol: bool,
) -> ProcessSpec {
    let mut env = base_env(inner);
    if protocol {
        env.push(("IGNIS_PROTOCOL_FD".into(), "3".into()));
        env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    }
    ProcessSpec {
        program: std::path::PathBuf::new(),
        args: Vec::new(),
        env,
        code_dir: code_dir.to_path_buf(),
        runtime_dir: protocol.then(|| inner.config.bootstraps.dir.clone()),
        memory_mb: place.memory_mb,
        tmp_mb: place.tmp_mb,
        host_network: place.network == Network::Host,
        data_limit_bytes: None,
        channel: protocol,
        stdin: !protocol,
        background: false,
        // python/node instances reach their namespace's data through it (see `data.rs`).
        loopback_listeners: if protocol && inner.sandbox.own_network(place.network == Network::Host)
        {
            vec![crate::data::DATA_PORT]
        } else {
            Vec::new()
        },
    }
}

pub(crate) fn function_env(f: &FunctionVersion) -> std::collections::BTreeMap<String, String> {
    let mut env = f.spec.env.clone();
    env.insert("IGNIS_NAMESPACE".into(), f.namespace.clone());
    env.insert("IGNIS_FUNCTION_NAME".into(), f.name.clone());
    env.insert("IGNIS_FUNCTION_VERSION".into(), f.version.to_string());
    env.insert("IGNIS_MEMORY_MB".into(), f.spec.memory_mb.to_string());
    env
}

pub(crate) fn timeout_end(f: &FunctionVersion, phase: ErrorPhase) -> RunEnd {
    RunEnd::failed(
        Status::Timeout,
        "Timeout",
        format!(
            "the function did not finish within {} ms",
            f.spec.timeout_ms
        ),
        phase,
    )
}

/// Classifies an instance that died without answering: out of memory or crash.
pub(crate) fn died(
    proc: &mut SandboxedProcess,
    logs: &mut LogCollector,
    phase: ErrorPhase,
) -> RunEnd {
    drain_both(proc, logs);
    // The cgroup says whether the kernel OOM-killed it; node reports reaching its heap limit.
    let oom = proc.oom_killed() || logs.contains("JavaScript heap out of memory");
    let exit = match proc.try_exit() {
        Some(s) => describe_exit(s),
        None => "the instance closed its channel".to_string(),
    };
    let tail = logs.stderr_tail(5);
    let message = if tail.is_empty() {
        exit
    } else {
        format!("{exit}: {tail}")
    };
    if oom {
        RunEnd::failed(Status::Oom, "OutOfMemory", message, phase)
    } else {
        RunEnd::failed(Status::Crash, "Crash", message, phase)
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("the process exited with status {c}"),
        (_, Some(sig)) => format!("the process was killed by signal {sig}"),
        _ => "the process ended".to_string(),
    }
}

impl ProcessInstance {
    /// Starts a python/node instance and loads the function's code. On failure returns how the
    /// (init) run ended, for the activation.
    pub async fn start(
        inner: &Inner,
        f: &FunctionVersion,
        code_dir: &std::path::Path,
        logs: &mut LogCollector,
        deadline: TokioInstant,
    ) -> Result<ProcessInstance, RunEnd> {
        let mut inst = Self::spawn(inner, f.spec.runtime, Placement::of(f), code_dir, true).await?;
        let code = inner.sandbox.code_path(code_dir);
        inst.init(inner, f, &code, logs, deadline).await?;
        Ok(inst)
    }

    /// Like [`Self::start`] for python, with the process forked from the zygote instead of a
    /// fresh interpreter; falls back to [`Self::start`] if the zygote cannot fork.
    pub async fn start_forked(
        inner: &Inner,
        zygote: &crate::zygote::Zygote,
        f: &FunctionVersion,
        code_dir: &std::path::Path,
        logs: &mut LogCollector,
        deadline: TokioInstant,
    ) -> Result<ProcessInstance, RunEnd> {
        let forked = Self::fork_from(inner, zygote, Placement::of(f), code_dir, false).await;
        let mut inst = match forked {
            Ok(inst) => inst,
            Err(e) => {
                tracing::warn!(error = %e, "the python zygote could not fork an instance");
                return Self::start(inner, f, code_dir, logs, deadline).await;
            }
        };
        let code = inner.sandbox.code_path(code_dir);
        inst.init(inner, f, &code, logs, deadline).await?;
        Ok(inst)
    }

    /// Starts the bootstrap of `runtime` in a sandbox showing `code_dir` (possibly still empty,
    /// for a stem cell) and waits for READY. `limit_heap`: bound the interpreter's own heap by
    /// the memory limit (off for stem cells, whose limit is set when they are specialised).
    pub async fn spawn(
        inner: &Inner,
        runtime: Runtime,
        place: Placement,
        code_dir: &std::path::Path,
        limit_heap: bool,
    ) -> Result<ProcessInstance, RunEnd> {
        let mb = place.memory_mb as u64;
        let sandbox = &inner.sandbox;
        let rt_dir = &inner.config.bootstraps.dir;
        let (program, args, data_limit): (_, Vec<std::ffi::OsString>, _) = match runtime {
            Runtime::Python => (
                inner.config.python.clone(),
                vec![
                    "-u".into(),
                    "-B".into(),
                    sandbox.runtime_path(rt_dir, "ignis_bootstrap.py").into(),
                ],
                limit_heap.then_some(mb * 1024 * 1024),
            ),
            Runtime::Node => {
                let mut args: Vec<std::ffi::OsString> = Vec::new();
                if limit_heap {
                    args.push(format!("--max-old-space-size={}", (mb * 3 / 4).max(32)).into());
                }
                args.push(sandbox.runtime_path(rt_dir, "ignis_bootstrap.js").into());
                (inner.config.node.clone(), args, None)
            }
            Runtime::Exec
            | Runtime::Lambda
            | Runtime::Wasm
            | Runtime::Sequence
            | Runtime::Workflow => {
                unreachable!("{runtime} functions have no bootstrap of Ignis's")
            }
        };
        let spec = ProcessSpec {
            program,
            args,
            data_limit_bytes: data_limit,
            // A stem cell (no heap limit yet) warms up without taking CPU from live instances.
            background: !limit_heap,
            ..process_spec(inner, place, code_dir, true)
        };
        let started = Instant::now();
        let spawned = inner.sandbox.spawn(&spec).await;
        inner.sandbox_setup.observe(started.elapsed());
        let proc = spawned.map_err(|e| {
            RunEnd::failed(
                Status::PlatformError,
                "InstanceStart",
                e.to_string(),
                ErrorPhase::Init,
            )
        })?;
        Self::adopt(proc).await
    }

    /// Starts a python process by forking the zygote into a fresh sandbox (see
    /// [`crate::zygote`]) and waits for READY; tells the zygote whether that worked.
    pub async fn fork_from(
        inner: &Inner,
        zygote: &crate::zygote::Zygote,
        place: Placement,
        code_dir: &std::path::Path,
        background: bool,
    ) -> Result<ProcessInstance, String> {
        let forked = Self::fork_into_sandbox(inner, zygote, place, code_dir, background).await;
        zygote.record(forked.is_ok());
        forked
    }

    async fn fork_into_sandbox(
        inner: &Inner,
        zygote: &crate::zygote::Zygote,
        place: Placement,
        code_dir: &std::path::Path,
        background: bool,
    ) -> Result<ProcessInstance, String> {
        let spec = ProcessSpec {
            background,
            ..process_spec(inner, place, code_dir, true)
        };
        let t0 = Instant::now();
        let (mut proc, entry) = inner
            .sandbox
            .spawn_holder(&spec)
            .await
            .map_err(|e| e.to_string())?;
        let holder = t0.elapsed();
        let pid = zygote.fork(entry, &spec.env).await?;
        let forked = t0.elapsed();
        proc.entered = Some(ignis_sandbox::Entered {
            pid,
            board: zygote.board().clone(),
        });
        let inst = Self::adopt(proc)
            .await
            .map_err(|end| end.error.map(|e| e.message).unwrap_or_default())?;
        tracing::debug!(?holder, ?forked, ready = ?t0.elapsed(), "forked an instance from the zygote");
        Ok(inst)
    }

    /// Takes a started runtime process and waits for its READY.
    async fn adopt(mut proc: SandboxedProcess) -> Result<ProcessInstance, RunEnd> {
        let channel = proc.channel.take().expect("channel was asked for");
        let mut inst = ProcessInstance {
            proc,
            channel,
            rbuf: BytesMut::with_capacity(64 * 1024),
            next_id: 1,
            slot: None,
            data: None,
        };
        // A bootstrap that cannot even start says so on stderr; its READY is due at once.
        let deadline = TokioInstant::now() + std::time::Duration::from_secs(30);
        let mut logs = LogCollector::default();
        let ready = match inst.next_frame_raw(&mut logs, deadline).await {
            Ok(fr) => fr,
            Err(why) => {
                let mut end = died(&mut inst.proc, &mut logs, ErrorPhase::Init);
                if let Some(e) = end.error.as_mut() {
                    e.message = format!("the runtime did not start ({why}): {}", e.message);
                }
                end.status = Status::PlatformError;
                return Err(end);
            }
        };
        if ready.kind != FrameKind::Ready {
            return Err(protocol_violation(ready.kind, ErrorPhase::Init));
        }
        Ok(inst)
    }

    /// Gives the instance its function: INIT with the code at `code` (a path inside the
    /// sandbox) and the function's environment; waits for INIT_OK.
    pub async fn init(
        &mut self,
        inner: &Inner,
        f: &FunctionVersion,
        code: &std::path::Path,
        logs: &mut LogCollector,
        deadline: TokioInstant,
    ) -> Result<(), RunEnd> {
        let init = InitMessage {
            code_dir: code.to_string_lossy().into_owned(),
            handler: f.spec.handler.clone(),
            namespace: f.namespace.clone(),
            function: f.name.clone(),
            version: f.version,
            memory_mb: f.spec.memory_mb,
            timeout_ms: f.spec.timeout_ms,
            env: {
                let mut env = function_env(f);
                let listener = self.proc.listeners.pop();
                self.data = inner
                    .data
                    .attach(&f.namespace, listener.is_some(), &mut env);
                if let (Some(data), Some(l)) = (self.data.as_mut(), listener) {
                    data.serve(l);
                }
                env
            },
            concurrency: f.spec.instance_concurrency,
        };
        let payload = serde_json::to_vec(&init).unwrap_or_default();
        let init_frame = protocol::encode(FrameKind::Init, 0, &payload);
        if self.channel.write_all(&init_frame).await.is_err() {
            return Err(died(&mut self.proc, logs, ErrorPhase::Init));
        }
        match self.next_frame(f, logs, deadline, ErrorPhase::Init).await {
            Ok(fr) if fr.kind == FrameKind::InitOk => Ok(()),
            Ok(fr) if fr.kind == FrameKind::InitError => {
                drain_both(&self.proc, logs);
                Err(RunEnd::from_payload(
                    Status::ApplicationError,
                    &fr.payload,
                    ErrorPhase::Init,
                    false,
                ))
            }
            Ok(fr) => Err(protocol_violation(fr.kind, ErrorPhase::Init)),
            Err(end) => Err(end),
        }
    }

    /// Whether the process is still there (a stem cell may have died while waiting).
    pub fn alive(&mut self) -> bool {
        self.proc.try_exit().is_none() && matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Sets the memory limit of a stem cell given to a function.
    pub fn set_memory_limit(&self, memory_mb: u32) -> std::io::Result<()> {
        self.proc.set_memory_limit(memory_mb)
    }

    /// Keeps the code slot of a specialised stem cell for as long as the instance lives.
    pub fn hold_slot(&mut self, slot: crate::stem::CodeSlot) {
        self.slot = Some(slot);
    }

    /// Waits for the next frame with no function to blame: `Err` says why none came.
    async fn next_frame_raw(
        &mut self,
        logs: &mut LogCollector,
        deadline: TokioInstant,
    ) -> Result<Frame, &'static str> {
        match pump(
            &mut self.channel,
            &mut self.rbuf,
            &self.proc.stdout,
            &self.proc.stderr,
            logs,
            deadline,
        )
        .await
        {
            Pumped::Frame(fr) => Ok(fr),
            Pumped::Deadline => {
                self.proc.kill();
                Err("no READY in time")
            }
            Pumped::Closed => {
                let _ = self
                    .proc
                    .wait_exit(std::time::Duration::from_millis(200))
                    .await;
                Err("it exited")
            }
            Pumped::Broken(_) => {
                self.proc.kill();
                Err("its channel broke")
            }
        }
    }

    /// Waits for the next frame; on failure (deadline, instance gone) says how the run ended.
    async fn next_frame(
        &mut self,
        f: &FunctionVersion,
        logs: &mut LogCollector,
        deadline: TokioInstant,
        phase: ErrorPhase,
    ) -> Result<Frame, RunEnd> {
        let pumped = pump(
            &mut self.channel,
            &mut self.rbuf,
            &self.proc.stdout,
            &self.proc.stderr,
            logs,
            deadline,
        )
        .await;
        match pumped {
            Pumped::Frame(fr) => Ok(fr),
            Pumped::Deadline => {
                self.proc.kill();
                drain_both(&self.proc, logs);
                Err(timeout_end(f, phase))
            }
            Pumped::Closed => {
                // Let the process be reaped so that its exit status can be reported.
                let _ = self
                    .proc
                    .wait_exit(std::time::Duration::from_millis(200))
                    .await;
                Err(died(&mut self.proc, logs, phase))
            }
            Pumped::Broken(e) => {
                self.proc.kill();
                let mut end = died(&mut self.proc, logs, phase);
                if let Some(err) = end.error.as_mut() {
                    err.kind = "ProtocolError".into();
                    err.message = format!("{e}; {}", err.message);
                }
                Err(end)
            }
        }
    }

    /// Runs one invocation.
    pub async fn invoke(
        &mut self,
        f: &FunctionVersion,
        id: ActivationId,
        event: &[u8],
        logs: &mut LogCollector,
        deadline: TokioInstant,
        deadline_ms: u64,
    ) -> RunEnd {
        let seq = self.next_id;
        self.next_id += 1;
        let request_id = id.to_string();
        let meta = InvokeMeta {
            request_id: &request_id,
            deadline_ms,
        };
        let frame = protocol::encode_invoke(seq, &meta, event);
        let write = tokio::time::timeout_at(deadline, self.channel.write_all(&frame)).await;
        match write {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return died(&mut self.proc, logs, ErrorPhase::Invoke),
            Err(_) => {
                self.proc.kill();
                return timeout_end(f, ErrorPhase::Invoke);
            }
        }
        let fr = match self.next_frame(f, logs, deadline, ErrorPhase::Invoke).await {
            Ok(fr) => fr,
            Err(end) => return end,
        };
        // Everything the handler printed before answering is in the pipes now.
        drain_both(&self.proc, logs);
        if fr.id != seq {
            self.proc.kill();
            return protocol_violation(fr.kind, ErrorPhase::Invoke);
        }
        answer(fr, &self.proc)
    }
}

/// How an invocation ended, from the RESULT or ERROR frame that answered it (any other frame
/// is a protocol violation). Kills the instance when it cannot serve again.
pub(crate) fn answer(fr: Frame, proc: &SandboxedProcess) -> RunEnd {
    match fr.kind {
        FrameKind::Result => {
            if fr.payload.len() > MAX_RESULT_BYTES {
                return RunEnd::failed(
                    Status::ApplicationError,
                    "ResultTooLarge",
                    format!(
                        "the result is {} bytes, more than the limit of {MAX_RESULT_BYTES}",
                        fr.payload.len()
                    ),
                    ErrorPhase::Invoke,
                );
            }
            RunEnd {
                status: Status::Success,
                body: fr.payload,
                error: None,
                reusable: true,
            }
        }
        FrameKind::Error => {
            let e = ErrorPayload::parse(&fr.payload);
            if e.kind == "MemoryError" {
                proc.kill();
                RunEnd::from_payload(Status::Oom, &fr.payload, ErrorPhase::Invoke, false)
            } else {
                RunEnd::from_payload(
                    Status::ApplicationError,
                    &fr.payload,
                    ErrorPhase::Invoke,
                    true,
                )
            }
        }
        other => {
            proc.kill();
            protocol_violation(other, ErrorPhase::Invoke)
        }
    }
}

pub(crate) fn protocol_violation(kind: FrameKind, phase: ErrorPhase) -> RunEnd {
    RunEnd::failed(
        Status::Crash,
        "ProtocolError",
        format!("the instance sent an unexpected {kind:?} frame"),
        phase,
    )
}

/// Runs an exec function: a fresh process, the event on stdin, the result from stdout.
pub(crate) async fn run_exec(
    inner: &Inner,
    f: &FunctionVersion,
    code_dir: &std::path::Path,
    event: Bytes,
    logs: &mut LogCollector,
    deadline: TokioInstant,
) -> RunEnd {
    let handler = f.spec.handler.trim_start_matches("./");
    // Without a cgroup, a data-size rlimit is the only memory bound.
    let data_limit = inner
        .sandbox
        .protections()
        .cgroups
        .is_none()
        .then_some(f.spec.memory_mb as u64 * 1024 * 1024);
    let own_network = inner.sandbox.own_network(f.spec.network == Network::Host);
    let mut env = function_env(f);
    // Data access for this process only: its token dies with the invocation.
    let mut data = inner.data.attach(&f.namespace, own_network, &mut env);
    let mut spec = ProcessSpec {
        program: inner.sandbox.code_path(code_dir).join(handler),
        data_limit_bytes: data_limit,
        loopback_listeners: if data.is_some() && own_network {
            vec![crate::data::DATA_PORT]
        } else {
            Vec::new()
        },
        ..process_spec(inner, Placement::of(f), code_dir, false)
    };
    spec.env
        .extend(env.into_iter().map(|(k, v)| (k.into(), v.into())));
    let started = Instant::now();
    let spawned = inner.sandbox.spawn(&spec).await;
    inner.sandbox_setup.observe(started.elapsed());
    let mut proc = match spawned {
        Ok(p) => p,
        Err(e) => {
            return RunEnd::failed(
                Status::ApplicationError,
                "ExecFailed",
                format!("cannot run {handler:?}: {e}"),
                ErrorPhase::Init,
            );
        }
    };
    if let (Some(d), Some(l)) = (data.as_mut(), proc.listeners.pop()) {
        d.serve(l);
    }
    if let Some(mut stdin) = proc.stdin.take() {
        tokio::spawn(async move {
            // A process that does not read its stdin is fine: the write just fails.
            let _ = stdin.write_all(&event).await;
            let _ = stdin.shutdown().await;
        });
    }
    let mut out = BytesMut::new();
    let mut scratch = [0u8; 16 * 1024];
    let mut stdout_open = true;
    let mut stderr_open = true;
    let status = loop {
        tokio::select! {
            biased;
            r = proc.stdout.readable(), if stdout_open => {
                if r.is_err() { stdout_open = false; continue; }
                loop {
                    match proc.stdout.try_read(&mut scratch) {
                        Ok(0) => { stdout_open = false; break; }
                        Ok(n) => out.extend_from_slice(&scratch[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => { stdout_open = false; break; }
                    }
                }
                if out.len() > MAX_RESULT_BYTES {
                    proc.kill();
                    drain_both(&proc, logs);
                    return RunEnd::failed(
                        Status::ApplicationError,
                        "ResultTooLarge",
                        format!("the function wrote more than {MAX_RESULT_BYTES} bytes to stdout"),
                        ErrorPhase::Invoke,
                    );
                }
            }
            r = proc.stderr.readable(), if stderr_open => {
                if r.is_err() || !drain(&proc.stderr, LogStream::Stderr, logs, &mut scratch) {
                    stderr_open = false;
                }
            }
            s = proc.child.wait() => break s,
            _ = tokio::time::sleep_until(deadline) => {
                proc.kill();
                drain_now(&proc.stderr, LogStream::Stderr, logs, &mut scratch);
                return timeout_end(f, ErrorPhase::Invoke);
            }
        }
    };
    // The process has exited: take what is left in the pipes, then end its whole group.
    loop {
        match read_now(&proc.stdout, &mut scratch) {
            Ok(n) if n > 0 && out.len() <= MAX_RESULT_BYTES => out.extend_from_slice(&scratch[..n]),
            _ => break,
        }
    }
    drain_now(&proc.stderr, LogStream::Stderr, logs, &mut scratch);
    proc.kill();
    if out.len() > MAX_RESULT_BYTES {
        return RunEnd::failed(
            Status::ApplicationError,
            "ResultTooLarge",
            format!("the function wrote more than {MAX_RESULT_BYTES} bytes to stdout"),
            ErrorPhase::Invoke,
        );
    }
    match status {
        Ok(s) if s.success() => RunEnd {
            status: Status::Success,
            body: out.freeze(),
            error: None,
            reusable: true,
        },
        Ok(s) if s.code().is_some() => {
            let tail = logs.stderr_tail(5);
            let mut message = describe_exit(s);
            if !tail.is_empty() {
                message = format!("{message}: {tail}");
            }
            RunEnd {
                reusable: true,
                ..RunEnd::failed(
                    Status::ApplicationError,
                    "ExitCode",
                    message,
                    ErrorPhase::Invoke,
                )
            }
        }
        Ok(s) if proc.oom_killed() => RunEnd {
            reusable: true,
            ..RunEnd::failed(
                Status::Oom,
                "OutOfMemory",
                format!("{}: the memory limit was reached", describe_exit(s)),
                ErrorPhase::Invoke,
            )
        },
        Ok(s) => RunEnd {
            reusable: true,
            ..RunEnd::failed(Status::Crash, "Crash", describe_exit(s), ErrorPhase::Invoke)
        },
        Err(e) => RunEnd::failed(
            Status::PlatformError,
            "Wait",
            e.to_string(),
            ErrorPhase::Invoke,
        ),
    }
}

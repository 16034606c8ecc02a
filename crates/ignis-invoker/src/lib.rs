//! The data plane of Ignis: runs invocations on instances.
//!
//! ```text
//!  invoke(function@version, event)
//!     │
//!     ▼  pool of that version (one short mutex section)
//!  idle instance? ── yes ──► warm run
//!     │ no
//!  live < max_instances? ── yes ──► create instance (cold run)
//!     │ no
//!  queue has room? ── yes ──► wait for a released instance (or a slot)
//!     │ no
//!  Throttled (429)
//! ```
//!
//! An instance that crashed, timed out or ran out of memory is dropped (its process group is
//! killed) and never reused. Idle instances are reclaimed after the keep-alive: scale to zero.
//! The warm path does no disk I/O and spawns nothing. Wasm functions use the same pools, with
//! in-process instances (`wasm.rs`).
#![warn(missing_docs)]

mod data;
mod instance;
mod lambda;
mod logs;
mod pool;
mod registry;
mod runtime_api;
mod shared;
mod stem;
mod wasm;
mod zygote;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ignis_core::{
    ActivationError, ActivationId, ErrorPhase, FunctionVersion, LogLine, Runtime, Status,
};
use ignis_runtime::bootstrap::BootstrapPaths;
use ignis_sandbox::Sandbox;

pub use ignis_wasm::{ApiBody, ApiFuture, ApiService, BoxError};
pub use logs::{Followed, LogCollector, LogFollower, LogHub};
use pool::{Acquired, Pool, PoolMap};
pub use registry::InstanceInfo;

/// Where the invoker gets the bytes of a version's code when it must unpack it.
pub trait CodeSource: Send + Sync {
    /// The uploaded bytes with this SHA-256.
    fn read(&self, sha256: &str) -> std::io::Result<Vec<u8>>;
}

/// Settings of the invoker.
#[derive(Debug, Clone)]
pub struct InvokerConfig {
    /// Directory where code is unpacked, one subdirectory per code hash.
    pub code_dir: PathBuf,
    /// Writable scratch directory given to functions as HOME and TMPDIR.
    pub tmp_dir: PathBuf,
    /// The installed bootstraps.
    pub bootstraps: BootstrapPaths,
    /// Path of the python interpreter.
    pub python: PathBuf,
    /// Path of node.
    pub node: PathBuf,
    /// How long an idle instance is kept before it is reclaimed.
    pub keep_alive: Duration,
    /// How many invocations of one function may wait for an instance.
    pub queue_per_function: usize,
    /// Stem cells kept ready per runtime (python, node); 0 turns them off.
    pub stem_cells: usize,
    /// Most memory (MiB) the limits of all live instances may add up to.
    pub memory_budget_mb: u64,
    /// Start python stem cells by forking a warmed interpreter (the zygote), where the sandbox
    /// allows a process from outside to enter it (root, namespaces, cgroups).
    pub zygote: bool,
    /// The AWS region `lambda` instances are told they run in (`AWS_REGION`, ARNs).
    pub aws_region: String,
    /// The wasm engine's artifact cache and pool; the engine is made on first use.
    pub wasm: ignis_wasm::WasmConfig,
}

/// One invocation to run.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The version to run.
    pub function: Arc<FunctionVersion>,
    /// Its activation id (the request id given to the handler).
    pub id: ActivationId,
    /// The event bytes (JSON for python/node).
    pub event: Bytes,
    /// When the gateway accepted it; the deadline counts from here.
    pub accepted: Instant,
    /// What a caller of the AWS Lambda API added, for `lambda` runtimes.
    pub lambda: Option<Arc<LambdaContext>>,
}

/// What an AWS Lambda API caller adds to an invocation, passed to a `lambda` runtime in the
/// Runtime API's headers.
#[derive(Debug, Clone, Default)]
pub struct LambdaContext {
    /// The ARN the caller invoked (with its qualifier); the unqualified ARN when `None`.
    pub invoked_arn: Option<String>,
    /// `X-Amz-Client-Context`, decoded (JSON), for `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    /// For `Lambda-Runtime-Cognito-Identity`.
    pub cognito_identity: Option<String>,
}

/// The end of an invocation, from which the activation record is made.
#[derive(Debug, Clone)]
pub struct InvokeResult {
    /// How it ended.
    pub status: Status,
    /// The result bytes (success only).
    pub body: Bytes,
    /// The error (failures only).
    pub error: Option<ActivationError>,
    /// What the function wrote.
    pub logs: Vec<LogLine>,
    /// Whether logs were dropped past the limit.
    pub logs_truncated: bool,
    /// Whether an instance was created for it.
    pub cold: bool,
    /// Which instance ran it.
    pub instance: String,
    /// Time waiting in the queue.
    pub queue: Duration,
    /// Time creating the instance and loading the code.
    pub init: Duration,
    /// Time running the handler.
    pub run: Duration,
}

/// Why an invocation was not run at all.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The function's instances and queue are full.
    #[error(
        "too many concurrent invocations of {function}: {max} instances busy and the queue is full"
    )]
    Throttled {
        /// namespace/name@version
        function: String,
        /// its max_instances
        max: u32,
    },
    /// The invoker's memory budget is taken by busy instances.
    #[error(
        "no memory for another instance of {function} ({memory_mb} MiB): every instance is busy"
    )]
    OutOfMemory {
        /// namespace/name@version
        function: String,
        /// its memory limit
        memory_mb: u32,
    },
    /// The namespace's instances hold its memory quota and every one is busy.
    #[error(
        "namespace {namespace:?} is at its quota of {limit_mb} MiB of instance memory: every instance is busy"
    )]
    NamespaceMemory {
        /// The namespace.
        namespace: String,
        /// Its quota.
        limit_mb: u64,
    },
    /// The invoker is shutting down.
    #[error("the invoker is shutting down")]
    ShuttingDown,
    /// No invoker could run it (cluster mode: none is live, or the one running it was lost).
    #[error("no invoker can run it: {0}")]
    Unavailable(String),
}

/// Counts of one function's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct InstanceCounts {
    /// Instances alive (idle, busy or starting).
    pub live: usize,
    /// Idle instances.
    pub idle: usize,
    /// Invocations waiting.
    pub queued: usize,
}

pub(crate) struct Inner {
    pub config: InvokerConfig,
    pub sandbox: Sandbox,
    code: Arc<dyn CodeSource>,
    pools: RwLock<PoolMap>,
    pub(crate) closing: std::sync::atomic::AtomicBool,
    stem: std::sync::OnceLock<stem::StemCells>,
    registry: Arc<registry::Registry>,
    wasm: std::sync::OnceLock<Result<ignis_wasm::WasmEngine, String>>,
    /// Time to start a sandboxed process (fork, isolation, exec), per instance started.
    pub(crate) sandbox_setup: ignis_core::metrics::Histogram,
    log_hub: Arc<LogHub>,
    namespace_memory: std::sync::OnceLock<NamespaceMemoryQuota>,
    pub(crate) data: data::DataAccess,
}

/// The memory quota (MiB, 0 for none) of a namespace's instances, as the controller knows it.
pub type NamespaceMemoryQuota = Box<dyn Fn(&str) -> u64 + Send + Sync>;

impl Inner {
    /// The wasm engine, made on first use (it reserves the address space of its pool).
    pub(crate) fn wasm_engine(&self) -> Result<&ignis_wasm::WasmEngine, String> {
        self.wasm
            .get_or_init(|| {
                ignis_wasm::WasmEngine::new(&self.config.wasm).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Runs invocations on pooled instances. Cheap to clone.
#[derive(Clone)]
pub struct Invoker {
    inner: Arc<Inner>,
}

impl Invoker {
    /// A new invoker; starts its keep-alive reaper on the current tokio runtime.
    pub fn new(config: InvokerConfig, sandbox: Sandbox, code: Arc<dyn CodeSource>) -> Self {
        let config_budget = config.memory_budget_mb;
        let inner = Arc::new(Inner {
            config,
            sandbox,
            code,
            pools: RwLock::new(PoolMap::default()),
            closing: std::sync::atomic::AtomicBool::new(false),
            stem: std::sync::OnceLock::new(),
            registry: Arc::new(registry::Registry::new(config_budget)),
            wasm: std::sync::OnceLock::new(),
            sandbox_setup: Default::default(),
            log_hub: Arc::default(),
            namespace_memory: std::sync::OnceLock::new(),
            data: data::DataAccess::default(),
        });
        let _ = inner
            .stem
            .set(stem::StemCells::start(&inner, inner.config.stem_cells));
        let this = Invoker { inner };
        let weak = Arc::downgrade(&this.inner);
        let tick = (this.inner.config.keep_alive / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let pools = inner.pools.read().unwrap().all();
                let invoker = Invoker { inner };
                for p in pools {
                    p.reap_idle(invoker.inner.config.keep_alive);
                    invoker.keep_provisioned(&p);
                }
            }
        });
        this
    }

    /// Tells the invoker the memory quota of each namespace (once; later calls are ignored).
    pub fn set_namespace_memory_quota(&self, quota: NamespaceMemoryQuota) {
        let _ = self.inner.namespace_memory.set(quota);
    }

    /// Where instances reach the API for their namespace's data: the server's listening
    /// address, set once it is bound. Until then instances get no data access.
    pub fn set_data_endpoint(&self, addr: std::net::SocketAddr) {
        self.inner.data.set_endpoint(addr);
    }

    /// The API served in this process, without a socket, that wasm components reach for their
    /// namespace's data (`wasi:http` outgoing requests to `IGNIS_API_URL`). Set once; until
    /// then wasm instances get no data access.
    pub fn set_data_service(&self, service: Arc<dyn ApiService>) {
        self.inner.data.set_service(service);
    }

    /// The tokens of running instances, which the gateway accepts for their namespace's data.
    pub fn tokens(&self) -> &Arc<ignis_core::data::InstanceTokens> {
        &self.inner.data.tokens
    }

    /// The sandbox instances run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    fn pool(&self, f: &Arc<FunctionVersion>) -> Arc<Pool> {
        if let Some(p) = self.inner.pools.read().unwrap().get(f) {
            return p.clone();
        }
        let queue = self.inner.config.queue_per_function;
        self.inner.pools.write().unwrap().get_or_insert(f, queue)
    }

    /// Runs an invocation to its end. Errors only when it could not be run at all.
    pub async fn invoke(&self, inv: Invocation) -> Result<InvokeResult, InvokeError> {
        if self
            .inner
            .closing
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(InvokeError::ShuttingDown);
        }
        let f = &inv.function;
        let timeout = Duration::from_millis(f.spec.timeout_ms);
        let deadline = tokio::time::Instant::from_std(inv.accepted + timeout);
        let deadline_ms = ignis_core::now_ms()
            + timeout.saturating_sub(inv.accepted.elapsed()).as_millis() as u64;
        let pool = self.pool(f);
        let acquired = pool
            .acquire(deadline)
            .await
            .map_err(|()| InvokeError::Throttled {
                function: format!("{}/{}@{}", f.namespace, f.name, f.version),
                max: f.spec.max_instances,
            })?;
        let queue = inv.accepted.elapsed();
        let tap = self
            .inner
            .log_hub
            .tap(&f.namespace, &f.name, inv.id, f.version);
        let mut logs = LogCollector::tapped(tap.clone());
        let init_start = Instant::now();
        let (mut lease, cold) = match acquired {
            Acquired::Warm(lease) => (lease, false),
            Acquired::Create(slot) => {
                let memory = match self.reserve_memory(f) {
                    Ok(m) => m,
                    Err(short) => {
                        drop(slot);
                        return Err(match short {
                            registry::Short::Budget => InvokeError::OutOfMemory {
                                function: format!("{}/{}@{}", f.namespace, f.name, f.version),
                                memory_mb: f.spec.memory_mb,
                            },
                            registry::Short::Namespace => InvokeError::NamespaceMemory {
                                namespace: f.namespace.clone(),
                                limit_mb: self.namespace_memory_quota(&f.namespace),
                            },
                        });
                    }
                };
                match self.create_instance(f, memory, &mut logs, deadline).await {
                    Ok((instance, loaded)) => (slot.fill(instance), loaded),
                    Err(end) => {
                        drop(slot); // frees the slot for someone else
                        let (logs, logs_truncated) = logs.finish();
                        let init = init_start.elapsed();
                        return Ok(InvokeResult {
                            status: end.status,
                            body: end.body,
                            error: end.error,
                            logs,
                            logs_truncated,
                            cold: true,
                            instance: String::new(),
                            queue,
                            init,
                            run: Duration::ZERO,
                        });
                    }
                }
            }
        };
        let init = if cold {
            init_start.elapsed()
        } else {
            Duration::ZERO
        };
        tracing::debug!(
            instance = %lease.instance().meta.meta.name,
            cold,
            queue_ms = queue.as_millis() as u64,
            init_ms = init.as_millis() as u64,
            "instance acquired"
        );
        let run_start = Instant::now();
        let instance = lease.instance();
        let meta = &instance.meta.meta;
        meta.running
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let end = match &mut instance.kind {
            instance::InstanceKind::Process(p) => {
                p.invoke(f, inv.id, &inv.event, &mut logs, deadline, deadline_ms)
                    .await
            }
            instance::InstanceKind::Lambda(l) => {
                l.invoke(&inv, &mut logs, deadline, deadline_ms).await
            }
            instance::InstanceKind::Exec { code_dir } => {
                let code_dir = code_dir.clone();
                instance::run_exec(
                    &self.inner,
                    f,
                    &code_dir,
                    inv.event.clone(),
                    &mut logs,
                    deadline,
                )
                .await
            }
            instance::InstanceKind::Shared(s) => {
                let (end, own_logs) = s
                    .invoke(inv.id, inv.event.clone(), deadline, deadline_ms, tap)
                    .await;
                logs = own_logs;
                end
            }
            instance::InstanceKind::Wasm(slot) => {
                wasm::run(slot, f, &inv.event, &mut logs, inv.accepted + timeout).await
            }
        };
        let run = run_start.elapsed();
        let meta = &instance.meta.meta;
        meta.served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        meta.running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let name = meta.name.clone();
        lease.release(end.reusable);
        let (logs, logs_truncated) = logs.finish();
        Ok(InvokeResult {
            status: end.status,
            body: end.body,
            error: end.error,
            logs,
            logs_truncated,
            cold,
            instance: name,
            queue,
            init,
            run,
        })
    }

    fn namespace_memory_quota(&self, namespace: &str) -> u64 {
        self.inner
            .namespace_memory
            .get()
            .map_or(0, |quota| quota(namespace))
    }

    /// Reserves an instance's memory in the invoker's budget and its namespace's quota,
    /// evicting idle instances, least recently used first, to make room: of any function for
    /// the budget, of the namespace's functions for its quota.
    fn reserve_memory(
        &self,
        f: &FunctionVersion,
    ) -> Result<registry::MemoryGrant, registry::Short> {
        let mb = f.spec.memory_mb as u64;
        let limit = self.namespace_memory_quota(&f.namespace);
        loop {
            let short = match self.inner.registry.reserve(mb, &f.namespace, limit) {
                Ok(grant) => return Ok(grant),
                Err(short) => short,
            };
            let pools = self.inner.pools.read().unwrap().all();
            let victim = pools
                .iter()
                .filter(|p| short == registry::Short::Budget || p.function.namespace == f.namespace)
                .filter_map(|p| p.oldest_idle().map(|t| (t, p)))
                .min_by_key(|(t, _)| *t)
                .map(|(_, p)| p.clone())
                .ok_or(short)?;
            let evicted = victim.evict_oldest();
            tracing::debug!(
                handles = evicted.as_ref().map_or(0, Vec::len),
                "evicted an idle instance for memory"
            );
            drop(evicted);
        }
    }

    /// Starts instances of a provisioned pool (min_instances) until it has its minimum.
    fn keep_provisioned(&self, pool: &Arc<Pool>) {
        let min = pool.min.load(std::sync::atomic::Ordering::Relaxed);
        if min == 0 || pool.counts().live >= min {
            return;
        }
        let Some(slot) = pool.try_slot() else { return };
        let this = self.clone();
        let f = pool.function.clone();
        tokio::spawn(async move {
            let Ok(memory) = this.reserve_memory(&f) else {
                tracing::warn!(function = %f.name, "no memory left to provision an instance");
                return;
            };
            let mut logs = LogCollector::default();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(f.spec.timeout_ms);
            match this.create_instance(&f, memory, &mut logs, deadline).await {
                Ok((instance, _)) => slot.fill(instance).release(true),
                Err(end) => {
                    let why = end.error.map(|e| e.message).unwrap_or_default();
                    tracing::warn!(function = %f.name, error = %why, "cannot provision an instance");
                }
            }
        });
    }

    /// Keeps `f.spec.min_instances` instances of this version warm from now on, and none of
    /// the function's other versions (a new version takes over the provisioned concurrency).
    pub fn provision(&self, f: &Arc<FunctionVersion>) {
        let others: Vec<Arc<Pool>> = self
            .inner
            .pools
            .read()
            .unwrap()
            .all()
            .into_iter()
            .filter(|p| {
                p.function.namespace == f.namespace
                    && p.function.name == f.name
                    && p.function.version != f.version
            })
            .collect();
        for p in others {
            p.min.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        let pool = self.pool(f);
        pool.min.store(
            f.spec.min_instances as usize,
            std::sync::atomic::Ordering::Relaxed,
        );
        for _ in 0..f.spec.min_instances {
            self.keep_provisioned(&pool);
        }
    }

    /// Every live instance.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        self.inner.registry.list()
    }

    /// Memory limits of a namespace's live instances added up, in MiB.
    pub fn namespace_memory(&self, namespace: &str) -> u64 {
        self.inner.registry.namespace_memory(namespace)
    }

    /// Memory limits of live instances added up, and the budget, in MiB.
    pub fn memory(&self) -> (u64, u64) {
        self.inner.registry.memory()
    }

    /// Creates an instance of `f`; `true` if that was a cold start (for wasm: the code had to
    /// be loaded; a new process is always one).
    async fn create_instance(
        &self,
        f: &Arc<FunctionVersion>,
        memory: registry::MemoryGrant,
        logs: &mut LogCollector,
        deadline: tokio::time::Instant,
    ) -> Result<(instance::Instance, bool), instance::RunEnd> {
        let code_dir = || async {
            self.ensure_code(f).await.map_err(|e| instance::RunEnd {
                status: Status::PlatformError,
                body: Bytes::new(),
                error: Some(ActivationError {
                    kind: "CodeUnavailable".into(),
                    message: e,
                    stack: None,
                    phase: ErrorPhase::Init,
                }),
                reusable: false,
            })
        };
        let (kind, cold) = match f.spec.runtime {
            // The controller runs compositions itself; one reaching the invoker is a bug.
            Runtime::Sequence | Runtime::Workflow => {
                return Err(instance::RunEnd {
                    status: Status::PlatformError,
                    body: Bytes::new(),
                    error: Some(ActivationError {
                        kind: "NotRunnable".into(),
                        message: format!("{} functions are run by the controller", f.spec.runtime),
                        stack: None,
                        phase: ErrorPhase::Init,
                    }),
                    reusable: false,
                });
            }
            Runtime::Wasm => {
                let (slot, loaded) = wasm::create(&self.inner, f).await?;
                (instance::InstanceKind::Wasm(slot), loaded)
            }
            Runtime::Exec => (
                instance::InstanceKind::Exec {
                    code_dir: code_dir().await?,
                },
                true,
            ),
            Runtime::Lambda => (
                instance::InstanceKind::Lambda(Box::new(
                    lambda::LambdaInstance::start(
                        &self.inner,
                        f,
                        &code_dir().await?,
                        logs,
                        deadline,
                    )
                    .await?,
                )),
                true,
            ),
            Runtime::Python | Runtime::Node => {
                let code_dir = code_dir().await?;
                let cell = stem::StemCells::fits(f)
                    .then(|| self.inner.stem.get().and_then(|s| s.take(f.spec.runtime)))
                    .flatten();
                let p = match cell {
                    Some(cell) => {
                        stem::specialise(cell, f, &code_dir, logs, deadline, &self.inner).await?
                    }
                    None => {
                        let zygote = (f.spec.runtime == Runtime::Python)
                            .then(|| self.inner.stem.get().and_then(|s| s.zygote()))
                            .flatten();
                        match zygote {
                            Some(z) => {
                                instance::ProcessInstance::start_forked(
                                    &self.inner,
                                    z,
                                    f,
                                    &code_dir,
                                    logs,
                                    deadline,
                                )
                                .await?
                            }
                            None => {
                                instance::ProcessInstance::start(
                                    &self.inner,
                                    f,
                                    &code_dir,
                                    logs,
                                    deadline,
                                )
                                .await?
                            }
                        }
                    }
                };
                let kind = if f.spec.instance_concurrency > 1 {
                    let s = shared::SharedInstance::start(p, f.clone());
                    instance::InstanceKind::Shared(Arc::new(s))
                } else {
                    instance::InstanceKind::Process(Box::new(p))
                };
                (kind, true)
            }
        };
        let instance = instance::Instance {
            kind,
            last_used: Instant::now(),
            meta: Arc::new(self.inner.registry.register(f, memory)),
        };
        Ok((instance, cold))
    }

    /// The unpacked code directory of a version, unpacking it on first use.
    async fn ensure_code(&self, f: &FunctionVersion) -> Result<PathBuf, String> {
        let exec = f.spec.runtime.executable_code();
        let dir = self
            .inner
            .config
            .code_dir
            .join(ignis_runtime::code::dir_name(&f.code, exec));
        if dir.is_dir() {
            return Ok(dir);
        }
        let inner = self.inner.clone();
        let code = f.code.clone();
        let target = dir.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let bytes = inner
                .code
                .read(&code.sha256)
                .map_err(|e| format!("code {}: {e}", code.sha256))?;
            ignis_runtime::code::unpack(
                code.format,
                code.filename.as_deref(),
                exec,
                &bytes,
                &target,
            )
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(dir)
    }

    /// Instance counts of one function version.
    pub fn counts(&self, f: &FunctionVersion) -> InstanceCounts {
        self.inner
            .pools
            .read()
            .unwrap()
            .get(f)
            .map(|p| p.counts())
            .unwrap_or_default()
    }

    /// Kills the idle instances of every version of a function and forgets its pools (after a
    /// delete). Busy instances finish their invocation and are then dropped.
    pub fn evict_function(&self, namespace: &str, name: &str) {
        let removed = self
            .inner
            .pools
            .write()
            .unwrap()
            .remove_function(namespace, name);
        for p in removed {
            p.close();
        }
    }

    /// Stops taking invocations and kills every idle instance. Busy ones are killed when
    /// their invocation ends.
    pub fn shutdown(&self) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.inner.stem.get() {
            s.clear();
        }
        let pools = std::mem::take(&mut *self.inner.pools.write().unwrap());
        for p in pools.all() {
            p.close();
        }
    }

    /// Python instances forked by the zygote so far; `None` when no zygote runs.
    pub fn zygote_forks(&self) -> Option<u64> {
        self.inner.stem.get().and_then(|s| s.zygote_forks())
    }

    /// Stem cells ready now, per runtime.
    pub fn stem_cells_ready(&self) -> Vec<(Runtime, usize)> {
        self.inner.stem.get().map(|s| s.ready()).unwrap_or_default()
    }

    /// Writes the invoker's metrics: instances by runtime and state, stem cells ready,
    /// invocations waiting per function, memory, and the sandbox setup time.
    pub fn render_metrics(&self, e: &mut ignis_core::metrics::Exposition) {
        use std::collections::BTreeMap;
        let mut instances: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
        for i in self.instances() {
            *instances.entry((i.runtime, i.state)).or_default() += 1;
        }
        e.family(
            "ignis_instances",
            "gauge",
            "Live instances, by runtime and state (idle or busy).",
        );
        for ((runtime, state), n) in &instances {
            e.sample(
                "ignis_instances",
                &[("runtime", runtime), ("state", state)],
                *n as f64,
            );
        }
        e.family(
            "ignis_stem_cells_ready",
            "gauge",
            "Stem cells (pre-started instances without code) ready, by runtime.",
        );
        for (runtime, n) in self.stem_cells_ready() {
            e.sample(
                "ignis_stem_cells_ready",
                &[("runtime", runtime.as_str())],
                n as f64,
            );
        }
        let mut queued: BTreeMap<(String, String), usize> = BTreeMap::new();
        for p in self.inner.pools.read().unwrap().all() {
            let f = &p.function;
            *queued
                .entry((f.namespace.clone(), f.name.clone()))
                .or_default() += p.counts().queued;
        }
        e.family(
            "ignis_function_queue_depth",
            "gauge",
            "Invocations waiting for an instance of a function.",
        );
        for ((ns, name), n) in &queued {
            e.sample(
                "ignis_function_queue_depth",
                &[("namespace", ns), ("function", name)],
                *n as f64,
            );
        }
        let (used, budget) = self.memory();
        e.family(
            "ignis_instance_memory_megabytes",
            "gauge",
            "Memory limits of live instances added up (used) and the invoker's budget.",
        );
        e.sample(
            "ignis_instance_memory_megabytes",
            &[("kind", "used")],
            used as f64,
        );
        e.sample(
            "ignis_instance_memory_megabytes",
            &[("kind", "budget")],
            budget as f64,
        );
        e.family(
            "ignis_sandbox_setup_seconds",
            "histogram",
            "Time to start one sandboxed instance process (fork, isolation layers, exec).",
        );
        e.histogram(
            "ignis_sandbox_setup_seconds",
            &[],
            &self.inner.sandbox_setup,
        );
    }

    /// Follows the log lines of every instance of a function from now on.
    pub fn follow_logs(&self, namespace: &str, function: &str) -> LogFollower {
        self.inner.log_hub.follow(namespace, function)
    }

    /// The AWS region `lambda` instances run in.
    pub fn aws_region(&self) -> &str {
        &self.inner.config.aws_region
    }

    /// The directory code is unpacked into.
    pub fn code_dir(&self) -> &Path {
        &self.inner.config.code_dir
    }

    /// The wasm engine (made on first use), for compiling wasm code at deploy.
    pub fn wasm(&self) -> Result<&ignis_wasm::WasmEngine, String> {
        self.inner.wasm_engine()
    }
}

//! The control plane of Ignis: the registry of functions (deploy, versions, delete), invocation
//! (resolve function@version, hand to the invoker, record the activation) and activation reads.
//!
//! The controller knows nothing of HTTP; the gateway maps its errors to status codes. Function
//! metadata is cached in memory (this process is the only writer in single-node mode), so the
//! invoke path reads no disk.
#![warn(missing_docs)]

mod cluster;
mod compose;
mod data;
mod metrics;
mod multipart;
mod nats;
mod queue;
mod quotas;
mod recorder;
mod registry;
mod topics;
mod triggers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use ignis_core::{
    ActivationError, ActivationId, ActivationRecord, ExecutionRecord, FunctionVersion, SpecError,
    Status, billed_ms, now_ms,
};
pub use ignis_invoker::{Followed, LambdaContext, LogFollower};
use ignis_invoker::{Invocation, InvokeError, Invoker};
use ignis_store::{
    ActivationFilter, ActivationPage, BlobStore, NamespaceQuotas, NamespaceRecord, ObjectFiles,
    Store, StoreError,
};

pub use cluster::{ClusterStatus, ExternalChange, Leadership, RemoteInvoker};
pub use data::{MAX_LIST, ObjectAttributes, ObjectListing, ObjectUpload};
pub use ignis_store::{MultipartUpload, UploadedPart};
pub use multipart::{ABANDONED_UPLOAD_AGE, MAX_PART_NUMBER};
pub use queue::Accepted;
pub use quotas::QuotaDefaults;
use recorder::{Finished, Recorder};
pub use registry::{CodeUpload, DeployRequest};
pub use topics::{MAX_MESSAGE_BYTES, Published};

/// Why a control-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A field of the request is not acceptable.
    #[error("{0}")]
    InvalidSpec(#[from] SpecError),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown namespace, function, version or activation.
    #[error("{0} not found")]
    NotFound(String),
    /// Already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The function is at its concurrency limit and its queue is full.
    #[error("{0}")]
    Throttled(String),
    /// The namespace is at one of its quotas; retry after that many seconds.
    #[error("{message}")]
    QuotaExceeded {
        /// Which quota.
        message: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// A function's code is larger than its namespace's quota.
    #[error("{0}")]
    CodeTooLarge(String),
    /// A condition of the request does not hold (a compare-and-swap's version, an increment of
    /// a value that is not an integer).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The request's body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// Shutting down.
    #[error("the server is shutting down")]
    Unavailable,
    /// Cluster mode: no invoker could run it now (none live, or the one running it was lost).
    #[error("no invoker can run it now: {0}")]
    NoInvoker(String),
    /// Something failed inside Ignis; details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ControllerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ControllerError::Conflict(what),
            StoreError::NotFound(what) => ControllerError::NotFound(what),
            other => ControllerError::Internal(other.to_string()),
        }
    }
}

/// Result of controller operations.
pub type Result<T, E = ControllerError> = std::result::Result<T, E>;

/// The answer to an invocation.
#[derive(Debug, Clone)]
pub struct InvokeOutcome {
    /// Activation id.
    pub activation_id: ActivationId,
    /// Version that ran.
    pub version: u32,
    /// How it ended.
    pub status: Status,
    /// The result (success only).
    pub body: Bytes,
    /// Whether the body is JSON (python/node) rather than raw bytes (exec).
    pub json: bool,
    /// The error (failures only).
    pub error: Option<ActivationError>,
    /// Whether an instance was created.
    pub cold: bool,
    /// Which instance ran it.
    pub instance: String,
    /// Total time in ms.
    pub duration_ms: u64,
    /// Total time in µs (what compositions subtract to measure their own overhead).
    pub duration_us: u64,
    /// Init time in ms.
    pub init_ms: u64,
}

/// The event as the function will get it: an empty body is `{}` for JSON runtimes, and anything
/// else must be JSON for them.
fn check_event(function: &FunctionVersion, event: Bytes) -> Result<Bytes> {
    if !function.spec.runtime.json_events() {
        return Ok(event);
    }
    if event.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Bytes::from_static(b"{}"));
    }
    ignis_core::check_json(&event).map_err(|e| {
        ControllerError::BadRequest(format!(
            "{e}; {} functions take a JSON event",
            function.spec.runtime
        ))
    })?;
    Ok(event)
}

/// Where the controller keeps things.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Directory of code blobs.
    pub blob_dir: PathBuf,
}

/// Counts invocations in flight so that shutdown can wait for them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    blobs: BlobStore,
    objects: ObjectFiles,
    invoker: Invoker,
    registry: registry::Registry,
    recorder: Recorder,
    in_flight: InFlight,
    queue: queue::AsyncQueue,
    quotas: Arc<quotas::Quotas>,
    metrics: metrics::Metrics,
    pricing: std::sync::RwLock<ignis_core::usage::PriceModel>,
    topics: topics::Topics,
    nats: nats::NatsSources,
    executions: compose::Executions,
    remote: std::sync::OnceLock<Arc<dyn cluster::RemoteInvoker>>,
    leadership: std::sync::OnceLock<cluster::Leadership>,
    cluster_status: std::sync::OnceLock<cluster::ClusterStatus>,
}

impl Controller {
    /// A controller over a store, a blob directory, the object bodies and an invoker.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: BlobStore,
        objects: ObjectFiles,
        invoker: Invoker,
    ) -> std::io::Result<Self> {
        let recorder = Recorder::start(store.clone())?;
        let quotas = Arc::new(quotas::Quotas::default());
        for ns in store.namespaces().map_err(std::io::Error::other)? {
            quotas.set_own(&ns.name, ns.quotas);
        }
        let q = quotas.clone();
        invoker
            .set_namespace_memory_quota(Box::new(move |ns| u64::from(q.effective(ns).memory_mb)));
        Ok(Controller {
            inner: Arc::new(Inner {
                registry: registry::Registry::default(),
                store,
                blobs,
                objects,
                invoker,
                recorder,
                in_flight: InFlight::default(),
                queue: queue::AsyncQueue::default(),
                quotas,
                metrics: metrics::Metrics::default(),
                pricing: Default::default(),
                topics: topics::Topics::default(),
                nats: nats::NatsSources::default(),
                executions: compose::Executions::default(),
                remote: Default::default(),
                leadership: Default::default(),
                cluster_status: Default::default(),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The invoker.
    pub fn invoker(&self) -> &Invoker {
        &self.inner.invoker
    }

    /// Runs a store call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| ControllerError::Internal(e.to_string()))?
    }

    /// Whether shutdown has begun.
    pub(crate) fn closing(&self) -> bool {
        self.inner.queue.closing.load(Ordering::Acquire)
    }

    /// Fails with NotFound unless the namespace exists.
    pub async fn check_namespace(&self, namespace: &str) -> Result<()> {
        if self.inner.registry.namespace_known(namespace) {
            return Ok(());
        }
        let ns = namespace.to_string();
        let exists = self
            .blocking(move |i| Ok(i.store.namespace_exists(&ns)?))
            .await?;
        if !exists {
            return Err(ControllerError::NotFound(format!(
                "namespace {namespace:?}"
            )));
        }
        self.inner.registry.remember_namespace(namespace);
        Ok(())
    }

    /// Sets the quotas of namespaces that set none of their own.
    pub fn set_quota_defaults(&self, defaults: QuotaDefaults) {
        self.inner.quotas.set_defaults(defaults);
    }

    /// Invocations of a namespace running now.
    pub fn running_in(&self, namespace: &str) -> u32 {
        self.inner.quotas.running(namespace)
    }

    /// The quotas in force for a namespace: its own, else the server's defaults.
    pub fn quotas_of(&self, namespace: &str) -> QuotaDefaults {
        self.inner.quotas.effective(namespace)
    }

    /// Starts the task that deletes, every `every`, the activations that namespaces' retention
    /// quotas (days, count) no longer keep, the expired key-value entries, and the multipart
    /// uploads started more than [`ABANDONED_UPLOAD_AGE`] ago.
    pub fn start_pruner(&self, every: std::time::Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if !this.leads() {
                    continue;
                }
                if let Err(e) = this.prune_activations().await {
                    tracing::error!(error = %e, "activation pruning");
                }
                let purged = this
                    .blocking(|i| Ok(i.store.kv_purge_expired(now_ms())?))
                    .await;
                if let Err(e) = purged {
                    tracing::error!(error = %e, "purging expired key-value entries");
                }
                match this.abort_abandoned_uploads(ABANDONED_UPLOAD_AGE).await {
                    Ok(0) => {}
                    Ok(parts) => tracing::info!(parts, "aborted abandoned multipart uploads"),
                    Err(e) => tracing::error!(error = %e, "aborting abandoned multipart uploads"),
                }
            }
        });
    }

    /// Applies every namespace's activation retention once; returns how many activations went.
    pub async fn prune_activations(&self) -> Result<u64> {
        let mut pruned = 0;
        for ns in self.blocking(|i| Ok(i.store.list_namespaces()?)).await? {
            let q = self.inner.quotas.effective(&ns);
            if q.activation_retention_days == 0 && q.activation_retention_count == 0 {
                continue;
            }
            let before_ms = match q.activation_retention_days {
                0 => 0,
                days => now_ms().saturating_sub(u64::from(days) * 86_400_000),
            };
            let keep = (q.activation_retention_count > 0)
                .then_some(u64::from(q.activation_retention_count));
            pruned += self
                .blocking(move |i| Ok(i.store.prune_activations(&ns, before_ms, keep)?))
                .await?;
        }
        Ok(pruned)
    }

    /// Every namespace, by name.
    pub async fn list_namespaces(&self) -> Result<Vec<NamespaceRecord>> {
        self.blocking(|i| Ok(i.store.namespaces()?)).await
    }

    /// One namespace.
    pub async fn get_namespace(&self, namespace: &str) -> Result<NamespaceRecord> {
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.get_namespace(&ns)?))
            .await?
            .ok_or_else(|| ControllerError::NotFound(format!("namespace {namespace:?}")))
    }

    /// Creates a namespace, or keeps it if it exists; with `quotas`, sets its own quotas.
    /// Returns it and whether it is new.
    pub async fn create_namespace(
        &self,
        namespace: &str,
        quotas: Option<NamespaceQuotas>,
    ) -> Result<(NamespaceRecord, bool)> {
        ignis_core::validate_namespace_name(namespace)
            .map_err(|e| ControllerError::BadRequest(e.to_string()))?;
        let ns = namespace.to_string();
        let (record, created) = self
            .blocking(move |i| {
                let created = i.store.create_namespace(&ns)?;
                if let Some(q) = &quotas {
                    i.store.set_namespace_quotas(&ns, q)?;
                }
                let record = i
                    .store
                    .get_namespace(&ns)?
                    .ok_or_else(|| StoreError::NotFound(format!("namespace {ns:?}")))?;
                Ok((record, created))
            })
            .await?;
        self.inner.quotas.set_own(namespace, record.quotas);
        self.inner.registry.remember_namespace(namespace);
        Ok((record, created))
    }

    /// Deletes a namespace and everything in it (see [`Store::delete_namespace`]); the
    /// instances of its functions are stopped. Returns the names of the functions it had.
    /// The default namespace cannot be deleted.
    pub async fn delete_namespace(&self, namespace: &str) -> Result<Vec<String>> {
        if namespace == ignis_core::DEFAULT_NAMESPACE {
            return Err(ControllerError::BadRequest(
                "the default namespace cannot be deleted".into(),
            ));
        }
        // Records already made go to disk first, to be deleted with the rest; the store drops
        // any made later for a namespace that no longer exists.
        self.inner.recorder.flush().await;
        let ns = namespace.to_string();
        let functions = self
            .blocking(move |i| Ok(i.store.delete_namespace(&ns)?))
            .await?
            .ok_or_else(|| ControllerError::NotFound(format!("namespace {namespace:?}")))?;
        self.inner.registry.forget_namespace(namespace);
        self.inner.quotas.forget(namespace);
        self.inner.metrics.forget_namespace(namespace);
        // Its nats triggers went with it: their subscriptions stop.
        self.inner.nats.changed();
        self.inner.invoker.tokens().revoke_namespace(namespace);
        let ns = namespace.to_string();
        self.blocking(move |i| {
            i.objects
                .remove_namespace(&ns)
                .map_err(|e| ControllerError::Internal(format!("deleting object bodies: {e}")))
        })
        .await?;
        for name in &functions {
            self.inner.invoker.evict_function(namespace, name);
        }
        Ok(functions)
    }

    /// Deploys a new version. Returns it and whether the function is new.
    pub async fn deploy(&self, req: DeployRequest) -> Result<(FunctionVersion, bool)> {
        self.check_namespace(&req.namespace).await?;
        let (ns, name) = (req.namespace.clone(), req.name.clone());
        let (fv, created) = self
            .blocking(move |i| {
                let limits = i.quotas.effective(&req.namespace);
                registry::deploy(i.store.as_ref(), &i.blobs, &i.invoker, &limits, req)
            })
            .await?;
        let fv = Arc::new(fv);
        self.inner.registry.put_latest(&ns, &name, fv.clone());
        if !fv.spec.runtime.is_composition() {
            self.inner.invoker.provision(&fv);
        }
        Ok(((*fv).clone(), created))
    }

    /// Starts the provisioned instances (min_instances) of every function, after a restart.
    pub async fn provision_all(&self) -> Result<()> {
        let functions = self
            .blocking(|i| {
                let mut all = Vec::new();
                for ns in i.store.list_namespaces()? {
                    all.extend(i.store.list_functions(&ns)?);
                }
                Ok(all)
            })
            .await?;
        for f in functions.into_iter().filter(|f| f.spec.min_instances > 0) {
            let f = Arc::new(f);
            self.inner
                .registry
                .put_latest(&f.namespace.clone(), &f.name.clone(), f.clone());
            self.inner.invoker.provision(&f);
        }
        Ok(())
    }

    /// A function's latest version, or a given one.
    pub async fn get_function(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Arc<FunctionVersion>> {
        if let Some(f) = self.inner.registry.get(namespace, name, version) {
            return Ok(f);
        }
        self.check_namespace(namespace).await?;
        let (ns, n) = (namespace.to_string(), name.to_string());
        let found = self
            .blocking(move |i| Ok(i.store.get_version(&ns, &n, version)?))
            .await?;
        let Some(f) = found else {
            return Err(ControllerError::NotFound(match version {
                Some(v) => format!("function {name:?} version {v}"),
                None => format!("function {name:?}"),
            }));
        };
        let f = Arc::new(f);
        self.inner
            .registry
            .put(namespace, name, version.is_none(), f.clone());
        Ok(f)
    }

    /// The latest version of every function in a namespace.
    pub async fn list_functions(&self, namespace: &str) -> Result<Vec<FunctionVersion>> {
        self.check_namespace(namespace).await?;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.list_functions(&ns)?))
            .await
    }

    /// Every version of a function.
    pub async fn list_versions(&self, namespace: &str, name: &str) -> Result<Vec<FunctionVersion>> {
        self.check_namespace(namespace).await?;
        let (ns, n) = (namespace.to_string(), name.to_string());
        let versions = self
            .blocking(move |i| Ok(i.store.list_versions(&ns, &n)?))
            .await?;
        if versions.is_empty() {
            return Err(ControllerError::NotFound(format!("function {name:?}")));
        }
        Ok(versions)
    }

    /// Deletes a function and all its versions; its instances are stopped.
    pub async fn delete_function(&self, namespace: &str, name: &str) -> Result<u32> {
        self.check_namespace(namespace).await?;
        let (ns, n) = (namespace.to_string(), name.to_string());
        let deleted = self
            .blocking(move |i| Ok(i.store.delete_function(&ns, &n)?))
            .await?;
        self.inner.registry.forget(namespace, name);
        self.inner.metrics.forget_function(namespace, name);
        self.inner.invoker.evict_function(namespace, name);
        deleted.ok_or_else(|| ControllerError::NotFound(format!("function {name:?}")))
    }

    /// Invokes a function and waits for its end. The activation is recorded whatever happens,
    /// even if the caller goes away: the run continues on its own task.
    pub async fn invoke(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
        event: Bytes,
    ) -> Result<InvokeOutcome> {
        self.invoke_as(namespace, name, version, event, ActivationId::new())
            .await
    }

    /// [`Controller::invoke`] under an activation id the caller chose (a web function puts it
    /// in the event it builds).
    pub async fn invoke_as(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
        event: Bytes,
        id: ActivationId,
    ) -> Result<InvokeOutcome> {
        self.invoke_with(namespace, name, version, event, id, None)
            .await
    }

    /// [`Controller::invoke`] from the AWS Lambda API, with what its caller adds for `lambda`
    /// runtimes (invoked ARN, client context).
    pub async fn invoke_lambda(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
        event: Bytes,
        context: LambdaContext,
        id: ActivationId,
    ) -> Result<InvokeOutcome> {
        self.invoke_with(namespace, name, version, event, id, Some(Arc::new(context)))
            .await
    }

    async fn invoke_with(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
        event: Bytes,
        id: ActivationId,
        lambda: Option<Arc<LambdaContext>>,
    ) -> Result<InvokeOutcome> {
        let accepted = Instant::now();
        let start_ms = now_ms();
        let function = self.get_function(namespace, name, version).await?;
        let event = check_event(&function, event)?;
        let this = self.clone();
        self.inner.in_flight.count.fetch_add(1, Ordering::AcqRel);
        // The run goes on on its own task, in the caller's span (the gateway's request id).
        let span = tracing::Span::current();
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _guard = InFlightGuard(&this.inner.in_flight);
                let inv = Invocation {
                    function,
                    id,
                    event,
                    accepted,
                    lambda,
                };
                this.run(inv, start_ms, None).await
            },
            span,
        ));
        task.await
            .map_err(|e| ControllerError::Internal(format!("invocation task: {e}")))?
    }

    /// Runs an invocation and records its activation under `id`: a composition by the
    /// controller itself, any other function by the invoker.
    async fn run(
        &self,
        inv: Invocation,
        start_ms: u64,
        trigger: Option<String>,
    ) -> Result<InvokeOutcome> {
        if inv.function.spec.runtime.is_composition() {
            return self.run_composition(inv, start_ms, trigger, 1, None).await;
        }
        self.run_function(inv, start_ms, trigger).await
    }

    /// Runs an invocation of a function that is not a composition on the invoker.
    async fn run_function(
        &self,
        inv: Invocation,
        start_ms: u64,
        trigger: Option<String>,
    ) -> Result<InvokeOutcome> {
        let function = inv.function.clone();
        let (id, accepted) = (inv.id, inv.accepted);
        let json = function.spec.runtime.json_events();
        let metrics = self
            .inner
            .metrics
            .function(&function.namespace, &function.name);
        let _admitted = self.inner.quotas.admit(&function.namespace).map_err(|r| {
            metrics.throttled(metrics::Throttle::Quota);
            ControllerError::QuotaExceeded {
                message: r.message,
                retry_after_secs: r.retry_after_secs,
            }
        })?;
        let r = match self.invoke_on_invoker(inv).await {
            Ok(r) => r,
            Err(e @ (InvokeError::Throttled { .. } | InvokeError::OutOfMemory { .. })) => {
                metrics.throttled(match e {
                    InvokeError::Throttled { .. } => metrics::Throttle::Concurrency,
                    _ => metrics::Throttle::Memory,
                });
                return Err(ControllerError::Throttled(e.to_string()));
            }
            Err(e @ InvokeError::NamespaceMemory { .. }) => {
                return Err(ControllerError::QuotaExceeded {
                    message: e.to_string(),
                    retry_after_secs: 1,
                });
            }
            Err(InvokeError::ShuttingDown) => return Err(ControllerError::Unavailable),
            Err(InvokeError::Unavailable(why)) => return Err(ControllerError::NoInvoker(why)),
        };
        let duration = accepted.elapsed();
        let duration_ms = duration.as_millis() as u64;
        let init_ms = r.init.as_millis() as u64;
        let billed = billed_ms((r.init + r.run).as_micros() as u64);
        metrics.finished(
            r.status,
            r.cold,
            duration,
            r.init,
            u64::from(function.spec.memory_mb) * billed,
        );
        let record = ActivationRecord {
            id,
            namespace: function.namespace.clone(),
            function: function.name.clone(),
            version: function.version,
            start_ms,
            end_ms: start_ms + duration_ms,
            duration_ms,
            queue_ms: r.queue.as_millis() as u64,
            init_ms,
            cold: r.cold,
            trigger,
            instance: r.instance.clone(),
            status: r.status,
            result: None,
            error: r.error.clone(),
            logs: r.logs,
            logs_truncated: r.logs_truncated,
            memory_mb: function.spec.memory_mb,
            billed_ms: billed,
        };
        tracing::debug!(
            activation = %id,
            status = %r.status,
            cold = r.cold,
            duration_ms,
            billed_ms = billed,
            "activation finished"
        );
        let result = (r.status == Status::Success).then(|| r.body.clone());
        self.inner
            .recorder
            .record(Finished { record, result })
            .await;
        Ok(InvokeOutcome {
            activation_id: id,
            version: function.version,
            status: r.status,
            body: r.body,
            json,
            error: r.error,
            cold: r.cold,
            instance: r.instance,
            duration_ms,
            duration_us: duration.as_micros() as u64,
            init_ms,
        })
    }

    /// One activation, with logs.
    pub async fn get_activation(&self, namespace: &str, id: &str) -> Result<ActivationRecord> {
        self.check_namespace(namespace).await?;
        let not_found = || ControllerError::NotFound(format!("activation {id:?}"));
        let id = ActivationId::parse(id).ok_or_else(not_found)?;
        self.inner.recorder.flush().await;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.get_activation(&ns, id)?))
            .await?
            .ok_or_else(not_found)
    }

    /// A page of activations.
    pub async fn list_activations(
        &self,
        namespace: &str,
        filter: ActivationFilter,
    ) -> Result<ActivationPage> {
        self.check_namespace(namespace).await?;
        self.inner.recorder.flush().await;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.list_activations(&ns, &filter)?))
            .await
    }

    /// One workflow execution with its ended steps (the id is the workflow's activation id).
    pub async fn get_execution(&self, namespace: &str, id: &str) -> Result<ExecutionRecord> {
        self.check_namespace(namespace).await?;
        let not_found = || ControllerError::NotFound(format!("execution {id:?}"));
        let id = ActivationId::parse(id).ok_or_else(not_found)?;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.get_execution(&ns, id)?))
            .await?
            .ok_or_else(not_found)
    }

    /// A namespace's workflow executions (of one function if given), newest first.
    pub async fn list_executions(
        &self,
        namespace: &str,
        function: Option<String>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>> {
        self.check_namespace(namespace).await?;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.list_executions(&ns, function.as_deref(), limit)?))
            .await
    }

    /// Follows the log lines of a function's instances from now on (404 for a function that
    /// does not exist).
    pub async fn follow_logs(&self, namespace: &str, name: &str) -> Result<LogFollower> {
        self.get_function(namespace, name, None).await?;
        Ok(self.inner.invoker.follow_logs(namespace, name))
    }

    /// Sets the price model of usage reports.
    pub fn set_pricing(&self, pricing: ignis_core::usage::PriceModel) {
        *self.inner.pricing.write().unwrap() = pricing;
    }

    /// A namespace's usage over `[from_ms, to_ms)`, from its activation records (the recorder
    /// is flushed first, so every finished invocation counts).
    pub async fn usage(
        &self,
        namespace: &str,
        from_ms: u64,
        to_ms: u64,
        group_by: ignis_core::usage::GroupBy,
    ) -> Result<ignis_core::usage::UsageReport> {
        self.check_namespace(namespace).await?;
        if from_ms > to_ms {
            return Err(ControllerError::BadRequest(format!(
                "from ({from_ms}) is after to ({to_ms})"
            )));
        }
        self.inner.recorder.flush().await;
        let ns = namespace.to_string();
        let cells = self
            .blocking(move |i| Ok(i.store.usage(&ns, from_ms, to_ms)?))
            .await?;
        let pricing = self.inner.pricing.read().unwrap().clone();
        Ok(ignis_core::usage::UsageReport::build(
            namespace, from_ms, to_ms, group_by, &pricing, &cells,
        ))
    }

    /// Every metric of the server in the Prometheus text format: the control plane's
    /// counters, the invoker's, and gauges read now (instances, stem cells, queues, backlog).
    pub async fn render_metrics(&self) -> String {
        let async_backlog = self
            .blocking(|i| Ok(i.store.async_backlog()?))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "reading the async backlog for /metrics");
                Vec::new()
            });
        let gauges = metrics::Gauges {
            in_flight: self.inner.in_flight.count.load(Ordering::Relaxed),
            async_backlog,
        };
        let mut e = ignis_core::metrics::Exposition::default();
        self.inner.metrics.render(&mut e, &gauges);
        self.inner.invoker.render_metrics(&mut e);
        e.finish()
    }

    /// Stops taking invocations, waits for those in flight, writes every pending activation
    /// and stops all instances.
    pub async fn shutdown(&self) {
        // Queued asynchronous invocations stay queued for the next start.
        self.inner.queue.closing.store(true, Ordering::Release);
        self.inner.nats.stop_all();
        self.inner.topics.wake();
        loop {
            let idle = self.inner.in_flight.idle.notified();
            if self.inner.in_flight.count.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
        self.inner.invoker.shutdown();
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.recorder.shutdown()).await;
    }
}

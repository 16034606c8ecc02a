//! Asynchronous invocations: accepted into a durable queue (synced to disk before the 202),
//! run by a worker as capacity allows, retried with exponential backoff, then moved to a
//! dead-letter list that can be replayed.
//!
//! Delivery is at least once, and each accepted invocation has exactly one visible activation:
//! its activation id is fixed when it is accepted, every attempt writes the activation under
//! that id (replacing the previous one), and the queue entry is removed only after the
//! activation is on disk. A crash in between runs the invocation again; it never loses it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ignis_core::{ActivationId, Status, now_ms};
use ignis_store::{QueueState, QueuedInvocation};
use tokio::sync::{Notify, Semaphore};

use crate::{Controller, ControllerError, Result, check_event};

/// Invocations of the queue running at once.
const CONCURRENCY: usize = 64;
/// Backoff before the first retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Wait before running again an invocation refused for lack of capacity (429).
const THROTTLED_BACKOFF: Duration = Duration::from_millis(200);
/// Wait before an invocation no invoker ran to its end is sent again (cluster mode).
const NO_INVOKER_BACKOFF: Duration = Duration::from_millis(250);
/// How long a node that does not run the queue waits before looking again (cluster mode).
const NOT_LEADING: Duration = Duration::from_millis(500);

/// The worker's state.
pub(crate) struct AsyncQueue {
    /// Set at shutdown: no new queued invocation starts (the rest waits in the queue).
    pub(crate) closing: std::sync::atomic::AtomicBool,
    wake: Notify,
    running: Mutex<HashSet<ActivationId>>,
    /// Queued invocations running per function: at most its max_instances, so that the
    /// backlog never fills a function's own queue (sync callers keep their place, and a
    /// shutdown waits only for what is really running).
    per_function: Mutex<std::collections::HashMap<(String, String), u32>>,
    permits: Arc<Semaphore>,
}

impl Default for AsyncQueue {
    fn default() -> Self {
        AsyncQueue {
            closing: std::sync::atomic::AtomicBool::new(false),
            wake: Notify::new(),
            running: Mutex::new(HashSet::new()),
            per_function: Mutex::new(std::collections::HashMap::new()),
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
        }
    }
}

impl AsyncQueue {
    /// Tells the worker that new items are queued.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// A callback URL must be http or https, with a host.
fn check_callback(url: &str) -> Result<()> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| ControllerError::BadRequest(format!("callback {url:?} is not a URL")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(ControllerError::BadRequest(format!(
            "callback {url:?} must be an http:// or https:// URL"
        )));
    }
    Ok(())
}

type CallbackClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// One client for every callback: https with the system's certificate authorities (or
/// SSL_CERT_FILE / SSL_CERT_DIR), loaded once.
fn callback_client() -> Option<CallbackClient> {
    static CLIENT: std::sync::OnceLock<Option<CallbackClient>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .ok()?
                .https_or_http()
                .enable_http1()
                .build();
            Some(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector),
            )
        })
        .clone()
}

/// POSTs `body` to `url`, trying three times with a growing pause; failures are logged.
async fn deliver_callback(url: String, body: Vec<u8>) {
    let Some(client) = callback_client() else {
        tracing::warn!(url = %url, "no certificate authorities: callback not sent");
        return;
    };
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=3 {
        let req = hyper::Request::post(&url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(Bytes::from(body.clone())));
        let Ok(req) = req else { return };
        match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return,
            Ok(Ok(resp)) => {
                tracing::warn!(url = %url, status = %resp.status(), attempt, "callback refused")
            }
            Ok(Err(e)) => {
                // The connector's error says only "Connect"; the cause (refused, certificate…)
                // is in the chain.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(": ");
                    why.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::warn!(url = %url, error = %why, attempt, "callback failed")
            }
            Err(_) => tracing::warn!(url = %url, attempt, "callback timed out"),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// What an accepted asynchronous invocation answers.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Its activation id.
    pub activation_id: ActivationId,
    /// False when an earlier submission with the same idempotency key was returned.
    pub new: bool,
    /// Where that invocation is now: queued, done, or dead.
    pub state: QueueState,
}

fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF * 2u32.saturating_pow(attempts.saturating_sub(1).min(16))
}

impl Controller {
    /// Accepts an asynchronous invocation: durably queued before this returns.
    pub async fn submit_async(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
        event: Bytes,
        idempotency_key: Option<String>,
        callback: Option<String>,
    ) -> Result<Accepted> {
        let id = ActivationId::new();
        self.submit_async_as(
            namespace,
            name,
            version,
            event,
            idempotency_key,
            callback,
            id,
        )
        .await
    }

    /// [`Controller::submit_async`] under an activation id the caller chose (the gateway's
    /// request id). An idempotency key already used answers with its first id instead.
    #[allow(clippy::too_many_arguments)]
    pub async fn submit_async_as(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
        event: Bytes,
        idempotency_key: Option<String>,
        callback: Option<String>,
        id: ActivationId,
    ) -> Result<Accepted> {
        let function = self.get_function(namespace, name, version).await?;
        let event = check_event(&function, event)?;
        if let Some(url) = &callback {
            check_callback(url)?;
        }
        if let Some(k) = &idempotency_key
            && (k.is_empty() || k.len() > 256)
        {
            return Err(ControllerError::BadRequest(
                "an idempotency key has 1 to 256 characters".into(),
            ));
        }
        let now = now_ms();
        let item = QueuedInvocation {
            id,
            namespace: namespace.to_string(),
            function: name.to_string(),
            version,
            event: event.to_vec(),
            attempts: 0,
            next_attempt_ms: now,
            created_ms: now,
            idempotency_key,
            last_error: None,
            trigger: None,
            callback,
            state: QueueState::Queued,
        };
        let (item, new) = self.blocking(move |i| Ok(i.store.enqueue(&item)?)).await?;
        self.inner.queue.wake.notify_one();
        Ok(Accepted {
            activation_id: item.id,
            new,
            state: item.state,
        })
    }

    /// Dead-letter items of a namespace.
    pub async fn dead_letters(&self, namespace: &str) -> Result<Vec<QueuedInvocation>> {
        self.check_namespace(namespace).await?;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.dead_letters(&ns)?)).await
    }

    /// Queues a dead-letter item again, with fresh retries.
    pub async fn replay(&self, namespace: &str, id: &str) -> Result<ActivationId> {
        self.check_namespace(namespace).await?;
        let not_found = || ControllerError::NotFound(format!("dead-letter item {id:?}"));
        let id = ActivationId::parse(id).ok_or_else(not_found)?;
        let ns = namespace.to_string();
        let revived = self.blocking(move |i| Ok(i.store.revive(&ns, id)?)).await?;
        if !revived {
            return Err(not_found());
        }
        self.inner.queue.wake.notify_one();
        Ok(id)
    }

    /// Starts the worker that runs queued invocations (also those left by a previous run).
    pub fn start_async_worker(&self) {
        let this = self.clone();
        tokio::spawn(async move { this.work().await });
    }

    async fn work(self) {
        loop {
            if self
                .inner
                .queue
                .closing
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return;
            }
            if !self.leads() {
                // Another node of the cluster runs the queue.
                let _ = tokio::time::timeout(NOT_LEADING, self.inner.queue.wake.notified()).await;
                continue;
            }
            let now = now_ms();
            let due = match self.blocking(move |i| Ok(i.store.due(now, 512)?)).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the async queue");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut started = 0;
            for item in due {
                if self
                    .inner
                    .queue
                    .closing
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    return;
                }
                if self.inner.queue.running.lock().unwrap().contains(&item.id) {
                    continue;
                }
                let max = match self
                    .get_function(&item.namespace, &item.function, item.version)
                    .await
                {
                    Ok(f) => f.spec.max_instances,
                    Err(_) => 1,
                };
                let key = (item.namespace.clone(), item.function.clone());
                {
                    let mut per = self.inner.queue.per_function.lock().unwrap();
                    let n = per.entry(key.clone()).or_insert(0);
                    if *n >= max {
                        continue;
                    }
                    *n += 1;
                }
                self.inner.queue.running.lock().unwrap().insert(item.id);
                let Ok(permit) = self.inner.queue.permits.clone().acquire_owned().await else {
                    return;
                };
                started += 1;
                let this = self.clone();
                let span = tracing::info_span!("invocation", request_id = %item.id);
                tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        let id = item.id;
                        this.run_queued(item).await;
                        this.inner.queue.running.lock().unwrap().remove(&id);
                        if let Some(n) = this.inner.queue.per_function.lock().unwrap().get_mut(&key)
                        {
                            *n = n.saturating_sub(1);
                        }
                        drop(permit);
                        this.inner.queue.wake.notify_one();
                    },
                    span,
                ));
            }
            if started > 0 {
                continue;
            }
            // Nothing new to start: sleep until the next item is due or one is submitted.
            let next = self
                .blocking(|i| Ok(i.store.next_due()?))
                .await
                .ok()
                .flatten();
            let wait = match next {
                Some(t) if t > now_ms() => Duration::from_millis(t - now_ms()),
                Some(_) => Duration::from_millis(20),
                None => Duration::from_secs(5),
            };
            let _ = tokio::time::timeout(
                wait.min(Duration::from_secs(5)),
                self.inner.queue.wake.notified(),
            )
            .await;
        }
    }

    async fn run_queued(&self, item: QueuedInvocation) {
        let id = item.id;
        let function = match self
            .get_function(&item.namespace, &item.function, item.version)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                let why = e.to_string();
                let _ = self
                    .blocking(move |i| Ok(i.store.bury(id, item.attempts, &why)?))
                    .await;
                return;
            }
        };
        let retries = function.spec.retries;
        let (on_success, on_failure) = (
            function.spec.on_success.clone(),
            function.spec.on_failure.clone(),
        );
        let event_copy = item.event.clone();
        self.inner
            .in_flight
            .count
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _guard = crate::InFlightGuard(&self.inner.in_flight);
        let inv = ignis_invoker::Invocation {
            function,
            id,
            event: Bytes::from(item.event.clone()),
            accepted: Instant::now(),
            lambda: None,
        };
        let outcome = self.run(inv, now_ms(), item.trigger).await;
        let attempts = item.attempts + 1;
        let callback = item.callback.clone();
        let result = match outcome {
            Ok(o) if o.status == Status::Success => {
                // The activation must be on disk before the queue forgets the invocation.
                self.inner.recorder.flush().await;
                let done = self.blocking(move |i| Ok(i.store.dequeue(id)?)).await;
                self.settled(
                    &item.namespace,
                    &item.function,
                    &o,
                    &event_copy,
                    callback,
                    on_success,
                )
                .await;
                done
            }
            Ok(o) => {
                self.inner.recorder.flush().await;
                let why = match &o.error {
                    Some(e) => format!("{}: {}: {}", o.status, e.kind, e.message),
                    None => o.status.to_string(),
                };
                if attempts <= retries {
                    let next = now_ms() + backoff(attempts).as_millis() as u64;
                    self.blocking(move |i| Ok(i.store.retry_later(id, attempts, next, &why)?))
                        .await
                } else {
                    let buried = self
                        .blocking(move |i| Ok(i.store.bury(id, attempts, &why)?))
                        .await;
                    self.settled(
                        &item.namespace,
                        &item.function,
                        &o,
                        &event_copy,
                        callback,
                        on_failure,
                    )
                    .await;
                    buried
                }
            }
            Err(ControllerError::QuotaExceeded {
                message,
                retry_after_secs,
            }) => {
                // Not an attempt either: the namespace's quota said when to come back.
                let next = now_ms() + retry_after_secs * 1000;
                let attempts = item.attempts;
                self.blocking(move |i| Ok(i.store.retry_later(id, attempts, next, &message)?))
                    .await
            }
            Err(ControllerError::Throttled(why)) => {
                // Not an attempt: the function never ran.
                let next = now_ms() + THROTTLED_BACKOFF.as_millis() as u64;
                let attempts = item.attempts;
                self.blocking(move |i| Ok(i.store.retry_later(id, attempts, next, &why)?))
                    .await
            }
            Err(ControllerError::Unavailable) => Ok(()),
            Err(ControllerError::NoInvoker(why)) => {
                // Not an attempt: no invoker ran it to its end (cluster mode). Sent again soon.
                let next = now_ms() + NO_INVOKER_BACKOFF.as_millis() as u64;
                let attempts = item.attempts;
                self.blocking(move |i| Ok(i.store.retry_later(id, attempts, next, &why)?))
                    .await
            }
            Err(e) => {
                let why = e.to_string();
                self.blocking(move |i| Ok(i.store.bury(id, attempts, &why)?))
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, id = %id, "cannot update the async queue");
        }
    }
}

impl Controller {
    /// A queued invocation reached its final outcome: POST it to the callback and queue the
    /// destination function, if there are ones.
    async fn settled(
        &self,
        namespace: &str,
        function: &str,
        o: &crate::InvokeOutcome,
        event: &[u8],
        callback: Option<String>,
        destination: Option<String>,
    ) {
        let request: serde_json::Value =
            serde_json::from_slice(event).unwrap_or(serde_json::Value::Null);
        let result: Option<serde_json::Value> = (o.status == Status::Success)
            .then(|| serde_json::from_slice(&o.body).unwrap_or(serde_json::Value::Null));
        // Lambda's destination record shape.
        let record = serde_json::json!({
            "version": "1.0",
            "timestamp": now_ms(),
            "requestContext": {
                "requestId": o.activation_id,
                "functionName": function,
                "namespace": namespace,
                "condition": if o.status == Status::Success { "Success" } else { "RetriesExhausted" },
            },
            "responseContext": { "status": o.status, "functionError": o.error.as_ref().map(|e| &e.kind) },
            "requestPayload": request,
            "responsePayload": result,
            "error": o.error,
        });
        let body = serde_json::to_vec(&record).unwrap_or_default();
        if let Some(url) = callback {
            tokio::spawn(deliver_callback(url, body.clone()));
        }
        if let Some(dest) = destination {
            let queued = self
                .submit_async(namespace, &dest, None, Bytes::from(body), None, None)
                .await;
            if let Err(e) = queued {
                tracing::warn!(function = %function, destination = %dest, error = %e, "cannot invoke the destination");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert!(backoff(100) >= Duration::from_secs(65536));
    }
}

//! Compositions, run by the controller itself: sequences (here) and workflows
//! ([`workflow`]). A composition has no instance: each of its components or steps is an
//! invocation of another function through the same path as any other ([`Controller::call`]:
//! the namespace's quotas, the invoker, the recorder), and the composition gets an activation
//! of its own whose logs list the activations it made, one line each, id first.
//!
//! ```text
//!  invoke seq ─► run ─► run_composition ─┬─ sequence: call c1 ─► call c2 ─► … (output → input)
//!                                        └─ workflow: drive the DAG, every ended step on disk
//! ```

mod checks;
mod workflow;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ignis_core::composition::{FunctionRef, MAX_NESTING};
use ignis_core::{
    ActivationError, ActivationId, ActivationRecord, ErrorPhase, FunctionVersion, LogLine,
    LogStream, MAX_PAYLOAD_BYTES, Runtime, Status, now_ms,
};
use ignis_invoker::Invocation;
use serde_json::Value;

pub(crate) use checks::check_references;
pub(crate) use workflow::Executions;

use crate::recorder::Finished;
use crate::{Controller, ControllerError, InFlightGuard, InvokeOutcome, Result, check_event};

/// The bucket of each namespace where step inputs bigger than the payload limit are kept.
pub(crate) const STEP_INPUT_BUCKET: &str = "ignis-step-inputs";

/// Pause before calling again a function that was throttled (429) or refused by a quota: such
/// a call is not an attempt, the function never ran.
const BUSY_BACKOFF: Duration = Duration::from_millis(10);
/// Longest such pause.
const BUSY_BACKOFF_MAX: Duration = Duration::from_millis(500);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How a composition ended, for its activation and its caller.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    status: Status,
    body: Bytes,
    json: bool,
    error: Option<ActivationError>,
    /// One line per activation made (id first), or per skipped step.
    lines: Vec<String>,
}

impl Ended {
    fn failed(kind: &str, message: impl Into<String>, lines: Vec<String>) -> Ended {
        Ended {
            status: Status::ApplicationError,
            body: Bytes::new(),
            json: true,
            error: Some(ActivationError {
                kind: kind.into(),
                message: message.into(),
                stack: None,
                phase: ErrorPhase::Invoke,
            }),
            lines,
        }
    }
}

/// The event given to a function called by a composition.
pub(crate) enum Event {
    /// Bytes as they are (a sequence passes each output on unchanged).
    Bytes(Bytes),
    /// A JSON value (a workflow step's input): a string goes as its bare text to functions
    /// that take any bytes (exec, wasm, sequence), everything else as JSON.
    Json(Value),
}

impl Event {
    fn encode(self, runtime: Runtime) -> Bytes {
        match self {
            Event::Bytes(b) => b,
            Event::Json(Value::String(s)) if !runtime.json_events() => Bytes::from(s),
            Event::Json(v) => Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        }
    }
}

/// A result as a JSON value: JSON if it parses, else its text as a string.
pub(crate) fn decode(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

impl Controller {
    /// Runs a composition under the activation id of `inv` and records its activation.
    /// `depth` is 1 for a composition invoked directly, one more for each level of nesting;
    /// `parent` is the workflow execution whose step this is, if any.
    pub(crate) fn run_composition(
        &self,
        inv: Invocation,
        start_ms: u64,
        trigger: Option<String>,
        depth: u32,
        parent: Option<ActivationId>,
    ) -> BoxFuture<Result<InvokeOutcome>> {
        let this = self.clone();
        Box::pin(async move {
            let function = inv.function.clone();
            // The run counts against the namespace's quotas, but holds no share of its
            // concurrency while its components run: they take their own.
            drop(this.inner.quotas.admit(&function.namespace).map_err(|r| {
                ControllerError::QuotaExceeded {
                    message: r.message,
                    retry_after_secs: r.retry_after_secs,
                }
            })?);
            let ended = if depth > MAX_NESTING {
                Ended::failed(
                    "NestingTooDeep",
                    format!("compositions nested more than {MAX_NESTING} deep"),
                    Vec::new(),
                )
            } else if function.spec.runtime == Runtime::Sequence {
                this.run_sequence(&function, inv.event, depth).await
            } else {
                this.run_workflow(&function, inv.id, inv.event, trigger.clone(), depth, parent)
                    .await?
            };
            Ok(this
                .record_composition(&function, inv.id, start_ms, trigger, ended)
                .await)
        })
    }

    /// Stores a step's input that is bigger than the payload limit in the namespace's object
    /// storage ([`STEP_INPUT_BUCKET`], key `<activation id>.json`) and returns the event the
    /// step gets instead: `{"ignis_input_ref": {"bucket", "key", "size"}}`, which the python and
    /// node clients' `step_input`/`stepInput` resolve. A retried step overwrites its own.
    async fn spill_input(&self, namespace: &str, id: ActivationId, input: Bytes) -> Result<Bytes> {
        self.create_bucket(namespace, STEP_INPUT_BUCKET).await?;
        let key = format!("{id}.json");
        let size = input.len();
        let mut upload = self
            .begin_upload(namespace, STEP_INPUT_BUCKET, &key)
            .await?;
        upload.write(input).await?;
        let attrs = crate::data::ObjectAttributes {
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        self.finish_upload(namespace, STEP_INPUT_BUCKET, &key, upload, attrs)
            .await?;
        let reference = serde_json::json!({
            "ignis_input_ref": {"bucket": STEP_INPUT_BUCKET, "key": key, "size": size}
        });
        Ok(Bytes::from(reference.to_string()))
    }

    /// Calls one function for a composition under activation id `id`; a nested composition
    /// runs one level deeper. The run goes on, and is recorded, even if the caller stops
    /// waiting (a step's timeout). Throttling and quota refusals are waited out.
    pub(crate) fn call(
        &self,
        namespace: &str,
        fref: &FunctionRef,
        event: Event,
        id: ActivationId,
        depth: u32,
        parent: Option<ActivationId>,
    ) -> BoxFuture<Result<InvokeOutcome>> {
        let this = self.clone();
        let (ns, fref) = (namespace.to_string(), fref.clone());
        Box::pin(async move {
            let function = this.get_function(&ns, &fref.name, fref.version).await?;
            let mut event = event.encode(function.spec.runtime);
            if event.len() > MAX_PAYLOAD_BYTES {
                event = this.spill_input(&ns, id, event).await?;
            }
            let event = check_event(&function, event)?;
            let mut pause = BUSY_BACKOFF;
            loop {
                let inv = Invocation {
                    function: function.clone(),
                    id,
                    event: event.clone(),
                    accepted: Instant::now(),
                    lambda: None,
                };
                this.inner.in_flight.count.fetch_add(1, Ordering::AcqRel);
                let runner = this.clone();
                let task = tokio::spawn(async move {
                    let _guard = InFlightGuard(&runner.inner.in_flight);
                    if inv.function.spec.runtime.is_composition() {
                        runner
                            .run_composition(inv, now_ms(), None, depth + 1, parent)
                            .await
                    } else {
                        runner.run_function(inv, now_ms(), None).await
                    }
                });
                let r = task
                    .await
                    .map_err(|e| ControllerError::Internal(format!("invocation task: {e}")))?;
                match r {
                    Err(ControllerError::Throttled(_) | ControllerError::QuotaExceeded { .. })
                        if !this.closing() =>
                    {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(BUSY_BACKOFF_MAX);
                    }
                    other => return other,
                }
            }
        })
    }

    /// Runs the components of a sequence one after the other; the first failure ends it.
    async fn run_sequence(&self, f: &FunctionVersion, event: Bytes, depth: u32) -> Ended {
        let mut event = event;
        let mut lines = Vec::with_capacity(f.spec.components.len());
        let mut last = None;
        for (i, c) in f.spec.components.iter().enumerate() {
            let fref = match FunctionRef::parse(c) {
                Ok(r) => r,
                Err(e) => return Ended::failed("ComponentError", e, lines),
            };
            let called = self
                .call(
                    &f.namespace,
                    &fref,
                    Event::Bytes(event),
                    ActivationId::new(),
                    depth,
                    None,
                )
                .await;
            let o = match called {
                Ok(o) => o,
                Err(e) => {
                    return Ended::failed(
                        "ComponentError",
                        format!("component {} ({c}): {e}", i + 1),
                        lines,
                    );
                }
            };
            lines.push(format!(
                "{} {}@{} {} {}ms",
                o.activation_id, fref.name, o.version, o.status, o.duration_ms
            ));
            if o.status != Status::Success {
                return Ended {
                    status: o.status,
                    body: o.body,
                    json: o.json,
                    error: o.error,
                    lines,
                };
            }
            event = o.body.clone();
            last = Some(o);
        }
        match last {
            Some(o) => Ended {
                status: Status::Success,
                body: o.body,
                json: o.json,
                error: None,
                lines,
            },
            None => Ended::failed("ComponentError", "a sequence without components", lines),
        }
    }

    /// Writes the activation of a composition (its logs list the activations it made).
    async fn record_composition(
        &self,
        function: &FunctionVersion,
        id: ActivationId,
        start_ms: u64,
        trigger: Option<String>,
        ended: Ended,
    ) -> InvokeOutcome {
        let end_ms = now_ms().max(start_ms);
        let duration_ms = end_ms - start_ms;
        let logs = ended
            .lines
            .into_iter()
            .map(|line| LogLine {
                ts_ms: end_ms,
                stream: LogStream::Stdout,
                line,
            })
            .collect();
        let record = ActivationRecord {
            id,
            namespace: function.namespace.clone(),
            function: function.name.clone(),
            version: function.version,
            start_ms,
            end_ms,
            duration_ms,
            queue_ms: 0,
            init_ms: 0,
            cold: false,
            trigger,
            instance: String::new(),
            status: ended.status,
            result: None,
            error: ended.error.clone(),
            logs,
            logs_truncated: false,
            memory_mb: 0,
            // Its components are billed; the composition itself is not.
            billed_ms: 0,
        };
        let result = (ended.status == Status::Success).then(|| ended.body.clone());
        self.inner
            .recorder
            .record(Finished { record, result })
            .await;
        InvokeOutcome {
            activation_id: id,
            version: function.version,
            status: ended.status,
            body: ended.body,
            json: ended.json,
            error: ended.error,
            cold: false,
            instance: String::new(),
            duration_ms,
            duration_us: duration_ms * 1000,
            init_ms: 0,
        }
    }
}

/// Takes up the workflow executions a previous run of the server left running.
impl Controller {
    /// Resumes every workflow execution left running (by a crash or a shutdown): steps that
    /// ended are not run again. Call before [`Controller::start_async_worker`]. Returns how many
    /// were resumed.
    pub async fn resume_workflows(&self) -> Result<usize> {
        self.resume_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_encode_by_runtime() {
        let s = || Event::Json(Value::String("a b".into()));
        assert_eq!(&s().encode(Runtime::Exec)[..], b"a b");
        assert_eq!(&s().encode(Runtime::Python)[..], b"\"a b\"");
        assert_eq!(
            &Event::Json(serde_json::json!({"x": 1})).encode(Runtime::Wasm)[..],
            b"{\"x\":1}"
        );
        assert_eq!(decode(b"{\"n\":1}"), serde_json::json!({"n": 1}));
        assert_eq!(decode(b"hello"), Value::String("hello".into()));
    }
}

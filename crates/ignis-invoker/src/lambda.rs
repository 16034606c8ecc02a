//! Instances of the `lambda` runtime: the code's `bootstrap` runs in the sandbox and speaks the
//! AWS Lambda Runtime API (version 2018-06-01) to an HTTP endpoint of this instance's own.
//!
//! ```text
//!  invoker ──Pending──► runtime API task (hyper, one per instance)
//!     ▲                   │ accepts on 127.0.0.1:9001 of the instance's network namespace
//!     │ ApiEvent          ▼ (a listener made by the sandbox inside it), or 127.0.0.1:<any>
//!     └───────────────── bootstrap: GET  /2018-06-01/runtime/invocation/next   (long poll)
//!                                   POST /2018-06-01/runtime/invocation/{id}/response
//!                                   POST /2018-06-01/runtime/invocation/{id}/error
//!                                   POST /2018-06-01/runtime/init/error
//! ```
//!
//! With a network of its own, the instance gets a second listener there, `127.0.0.1:9400`,
//! relayed to the server's API for its namespace's data (`data.rs`), with `IGNIS_API_URL` and
//! `IGNIS_TOKEN` in its environment, as every instance does.
//!
//! Init ends at the first `next` (success), an `init/error` or the process ending (failure).
//! An invocation is handed to the waiting `next` and ends with its `response` or `error`, the
//! process ending (crash, out of memory) or the deadline (the instance is killed). Everything
//! the process writes to stdout and stderr is the activation's logs, as on Lambda. The HTTP
//! side is `runtime_api.rs`.

use ignis_core::{ActivationId, ErrorPhase, FunctionVersion, LogStream, MAX_RESULT_BYTES, Status};
use ignis_sandbox::{ProcessSpec, SandboxedProcess};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;

use crate::instance::{self, Placement, RunEnd};
use crate::logs::LogCollector;
use crate::runtime_api::{self, ApiEvent, Pending};
use crate::{Inner, Invocation};

/// The port of the Runtime API inside an instance's own network namespace (Lambda's).
const RUNTIME_API_PORT: u16 = 9001;

/// A process speaking the Lambda Runtime API, kept between invocations.
pub(crate) struct LambdaInstance {
    proc: SandboxedProcess,
    invocations: mpsc::Sender<Pending>,
    events: mpsc::UnboundedReceiver<ApiEvent>,
    /// The Runtime API server; aborting it ends its connections too.
    server: tokio::task::JoinHandle<()>,
    region: String,
    /// Its data access (token, relay of its data listener), as long as the instance lives.
    _data: Option<crate::data::InstanceData>,
}

impl Drop for LambdaInstance {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The Lambda environment (`_HANDLER`, `LAMBDA_TASK_ROOT`, `AWS_LAMBDA_*`, `AWS_REGION`…) of
/// an instance of `f` whose code is at `code` and whose Runtime API is at `api`.
fn lambda_env(f: &FunctionVersion, code: &str, api: &str, region: &str) -> Vec<(String, String)> {
    let runtime = f
        .spec
        .lambda
        .as_ref()
        .map_or("provided.al2023", |l| l.runtime.as_str());
    let stream = ignis_core::new_secret()
        .map(|s| s[..32].to_string())
        .unwrap_or_default();
    let mut env: Vec<(String, String)> = f.spec.env.clone().into_iter().collect();
    env.extend(
        [
            ("_HANDLER", f.spec.handler.clone()),
            ("LAMBDA_TASK_ROOT", code.to_string()),
            ("LAMBDA_RUNTIME_DIR", code.to_string()),
            ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", f.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", f.version.to_string()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                f.spec.memory_mb.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", f.name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("[{}]{stream}", f.version),
            ),
            (
                "AWS_LAMBDA_INITIALIZATION_TYPE",
                if f.spec.min_instances > 0 {
                    "provisioned-concurrency"
                } else {
                    "on-demand"
                }
                .into(),
            ),
            ("AWS_EXECUTION_ENV", format!("AWS_Lambda_{runtime}")),
            ("AWS_REGION", region.to_string()),
            ("AWS_DEFAULT_REGION", region.to_string()),
            ("LD_LIBRARY_PATH", format!("{code}/lib")),
            ("TZ", ":UTC".into()),
            ("IGNIS_NAMESPACE", f.namespace.clone()),
            ("IGNIS_FUNCTION_NAME", f.name.clone()),
            ("IGNIS_FUNCTION_VERSION", f.version.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

/// An X-Ray trace header for an invocation, derived from its id.
fn trace_id(id: ActivationId) -> String {
    let hex = id.to_string();
    let secs = ignis_core::now_ms() / 1000;
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        &hex[..24],
        &hex[16..]
    )
}

impl LambdaInstance {
    /// Starts the function's `bootstrap` and waits until it asks for its first invocation.
    pub async fn start(
        inner: &Inner,
        f: &FunctionVersion,
        code_dir: &std::path::Path,
        logs: &mut LogCollector,
        deadline: TokioInstant,
    ) -> Result<LambdaInstance, RunEnd> {
        let sandbox = &inner.sandbox;
        let place = Placement::of(f);
        let own_network = sandbox.own_network(place.network == ignis_core::Network::Host);
        // In a network namespace of its own the listener is made inside it by the sandbox;
        // sharing the host's network, any free port of the host's loopback will do.
        let host_listener = if own_network {
            None
        } else {
            Some(
                std::net::TcpListener::bind(("127.0.0.1", 0))
                    .map_err(|e| RunEnd::platform(format!("runtime API listener: {e}")))?,
            )
        };
        let port = match &host_listener {
            Some(l) => l
                .local_addr()
                .map_err(|e| RunEnd::platform(e.to_string()))?
                .port(),
            None => RUNTIME_API_PORT,
        };
        // Its namespace's data, as for every instance (docs/baas.md): with a network of its
        // own, through a second listener there, at the same port as other runtimes'.
        let mut data_env = std::collections::BTreeMap::new();
        let mut data = inner.data.attach(&f.namespace, own_network, &mut data_env);
        let mut listen = Vec::new();
        if own_network {
            listen.push(RUNTIME_API_PORT);
            if data.is_some() {
                listen.push(crate::data::DATA_PORT);
            }
        }
        let code = sandbox.code_path(code_dir);
        let code_str = code.to_string_lossy().into_owned();
        let region = inner.config.aws_region.clone();
        let mut spec = ProcessSpec {
            program: code.join(ignis_runtime::code::LAMBDA_BOOTSTRAP),
            loopback_listeners: listen,
            data_limit_bytes: sandbox
                .protections()
                .cgroups
                .is_none()
                .then_some(f.spec.memory_mb as u64 * 1024 * 1024),
            ..instance::process_spec(inner, place, code_dir, false)
        };
        spec.stdin = false;
        spec.env.extend(
            lambda_env(f, &code_str, &format!("127.0.0.1:{port}"), &region)
                .into_iter()
                .chain(data_env)
                .map(|(k, v)| (k.into(), v.into())),
        );
        let started = std::time::Instant::now();
        let spawned = sandbox.spawn(&spec).await;
        inner.sandbox_setup.observe(started.elapsed());
        let mut proc = spawned.map_err(|e| {
            RunEnd::failed(
                Status::ApplicationError,
                "Runtime.InvalidEntrypoint",
                format!("cannot run bootstrap: {e}"),
                ErrorPhase::Init,
            )
        })?;
        let mut own = proc.listeners.drain(..);
        let listener = match host_listener.or_else(|| own.next()) {
            Some(l) => l,
            None => return Err(RunEnd::platform("no runtime API listener".into())),
        };
        if let (Some(d), Some(l)) = (data.as_mut(), own.next()) {
            d.serve(l);
        }
        drop(own);
        listener
            .set_nonblocking(true)
            .map_err(|e| RunEnd::platform(e.to_string()))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| RunEnd::platform(e.to_string()))?;
        let (invocations, events, server) = runtime_api::start(listener);
        let mut inst = LambdaInstance {
            proc,
            invocations,
            events,
            server,
            region,
            _data: data,
        };
        match inst.wait(f, logs, deadline, ErrorPhase::Init, None).await {
            Waited::Ready => Ok(inst),
            Waited::End(end) => Err(end),
        }
    }

    /// Runs one invocation: hands it to `next`, waits for `response` or `error`.
    pub async fn invoke(
        &mut self,
        inv: &Invocation,
        logs: &mut LogCollector,
        deadline: TokioInstant,
        deadline_ms: u64,
    ) -> RunEnd {
        let (f, id, event) = (&*inv.function, inv.id, &inv.event);
        let context = inv.lambda.as_deref();
        let request_id = id.to_string();
        let pending = Pending {
            request_id: request_id.clone(),
            event: event.clone(),
            deadline_ms,
            arn: context
                .and_then(|c| c.invoked_arn.clone())
                .unwrap_or_else(|| {
                    ignis_core::lambda::function_arn(&self.region, &f.namespace, &f.name, None)
                }),
            trace_id: trace_id(id),
            client_context: context.and_then(|c| c.client_context.clone()),
            cognito_identity: context.and_then(|c| c.cognito_identity.clone()),
        };
        if self.invocations.try_send(pending).is_err() {
            self.proc.kill();
            return RunEnd::platform("the instance's runtime API is gone".into());
        }
        match self
            .wait(f, logs, deadline, ErrorPhase::Invoke, Some(&request_id))
            .await
        {
            Waited::End(end) => end,
            Waited::Ready => unreachable!("readiness is only awaited at init"),
        }
    }

    /// Pumps the Runtime API's events and the log pipes until the phase ends.
    async fn wait(
        &mut self,
        f: &FunctionVersion,
        logs: &mut LogCollector,
        deadline: TokioInstant,
        phase: ErrorPhase,
        request_id: Option<&str>,
    ) -> Waited {
        let mut scratch = [0u8; 16 * 1024];
        let ours = |id: &str| request_id == Some(id);
        // A pipe at end of file stays readable: stop polling it, or it would starve the rest.
        let (mut stdout_open, mut stderr_open) = (true, true);
        loop {
            tokio::select! {
                biased;
                ev = self.events.recv() => {
                    let Some(ev) = ev else {
                        self.proc.kill();
                        return Waited::End(RunEnd::platform("the runtime API stopped".into()));
                    };
                    instance::drain_both(&self.proc, logs);
                    match ev {
                        ApiEvent::Ready if request_id.is_none() => return Waited::Ready,
                        ApiEvent::InitError(report) if request_id.is_none() => {
                            self.proc.kill();
                            return Waited::End(report.into_end(
                                Status::ApplicationError,
                                ErrorPhase::Init,
                                false,
                            ));
                        }
                        ApiEvent::Response { id, body } if ours(&id) => {
                            return Waited::End(RunEnd {
                                status: Status::Success,
                                body,
                                error: None,
                                reusable: true,
                            });
                        }
                        ApiEvent::Error { id, report } if ours(&id) => {
                            return Waited::End(report.into_end(
                                Status::ApplicationError,
                                phase,
                                true,
                            ));
                        }
                        ApiEvent::TooLarge { id } if ours(&id) => {
                            return Waited::End(RunEnd {
                                reusable: true,
                                ..RunEnd::failed(
                                    Status::ApplicationError,
                                    "Function.ResponseSizeTooLarge",
                                    format!(
                                        "the response is larger than the limit of {MAX_RESULT_BYTES} bytes"
                                    ),
                                    phase,
                                )
                            });
                        }
                        _ => {}
                    }
                }
                r = self.proc.stdout.readable(), if stdout_open => {
                    stdout_open = r.is_ok()
                        && instance::drain(&self.proc.stdout, LogStream::Stdout, logs, &mut scratch);
                }
                r = self.proc.stderr.readable(), if stderr_open => {
                    stderr_open = r.is_ok()
                        && instance::drain(&self.proc.stderr, LogStream::Stderr, logs, &mut scratch);
                }
                _ = self.proc.child.wait() => {
                    let mut end = instance::died(&mut self.proc, logs, phase);
                    if let Some(e) = end.error.as_mut().filter(|e| e.kind == "Crash") {
                        e.kind = "Runtime.ExitError".into();
                    }
                    return Waited::End(end);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.proc.kill();
                    instance::drain_both(&self.proc, logs);
                    return Waited::End(instance::timeout_end(f, phase));
                }
            }
        }
    }
}

enum Waited {
    Ready,
    End(RunEnd),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_have_the_xray_shape() {
        let t = trace_id(ActivationId::new());
        let root = t.strip_prefix("Root=1-").unwrap();
        let (time, rest) = root.split_once('-').unwrap();
        assert_eq!(time.len(), 8);
        let (rand, rest) = rest.split_once(";Parent=").unwrap();
        assert_eq!(rand.len(), 24);
        assert!(rest.ends_with(";Sampled=0"));
    }

    #[test]
    fn environment_names_the_function() {
        let mut spec = ignis_core::FunctionSpec::new(ignis_core::Runtime::Lambda, "app.handler");
        spec.env.insert("MINE".into(), "1".into());
        spec.env.insert("AWS_REGION".into(), "mars-1".into());
        let f = FunctionVersion {
            namespace: "default".into(),
            name: "fn1".into(),
            version: 3,
            spec,
            code: ignis_core::CodeRef {
                sha256: "00".into(),
                size: 1,
                format: ignis_core::CodeFormat::Zip,
                filename: None,
            },
            created_ms: 0,
        };
        let env: std::collections::HashMap<_, _> =
            lambda_env(&f, "/code", "127.0.0.1:9001", "eu-west-1")
                .into_iter()
                .collect();
        assert_eq!(env["_HANDLER"], "app.handler");
        assert_eq!(env["LAMBDA_TASK_ROOT"], "/code");
        assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "fn1");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "3");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
        assert_eq!(env["AWS_REGION"], "eu-west-1", "reserved names win");
        assert_eq!(env["MINE"], "1");
        assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/fn1");
    }
}

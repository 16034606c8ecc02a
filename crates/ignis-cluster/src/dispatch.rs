//! Invocations across the cluster: a gateway sends each to the function's home invoker over
//! NATS request/reply (`ignis.invoke.<node>`), overflowing to the next invoker in the
//! function's order when one is full; an invoker answers with the run's end.
//!
//! The message is `[u32 big-endian length][JSON head][bytes]`: the head says what the bytes
//! are (the event, or the result), so neither is copied into JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use ignis_core::{ActivationError, ActivationId, FunctionVersion, LogLine, Status};
use ignis_invoker::{Invocation, InvokeError, InvokeResult, Invoker, LambdaContext};
use serde::{Deserialize, Serialize};

use crate::{Cluster, ClusterError, Membership};

/// Subjects invokers answer on: this prefix and the node name.
const SUBJECT_PREFIX: &str = "ignis.invoke.";
/// Time an answer may take beyond the function's own timeout (instance start, the network).
const GRACE: Duration = Duration::from_secs(30);
/// How often a waiting gateway checks that the invoker running its invocation is still live.
const LIVENESS_CHECK: Duration = Duration::from_millis(250);

#[derive(Serialize, Deserialize)]
struct RequestHead<F> {
    /// `&FunctionVersion` sent, `FunctionVersion` received.
    function: F,
    id: ActivationId,
    /// µs since the gateway accepted the invocation (the deadline counts from then).
    waited_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lambda: Option<LambdaHead>,
}

#[derive(Serialize, Deserialize)]
struct LambdaHead {
    invoked_arn: Option<String>,
    client_context: Option<String>,
    cognito_identity: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum ReplyHead {
    Ran {
        status: Status,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ActivationError>,
        logs: Vec<LogLine>,
        logs_truncated: bool,
        cold: bool,
        instance: String,
        queue_us: u64,
        init_us: u64,
        run_us: u64,
    },
    Throttled {
        function: String,
        max: u32,
    },
    OutOfMemory {
        function: String,
        memory_mb: u32,
    },
    NamespaceMemory {
        namespace: String,
        limit_mb: u64,
    },
    Unavailable {
        why: String,
    },
}

fn frame(head: &impl Serialize, body: &[u8]) -> Bytes {
    let head = serde_json::to_vec(head).expect("heads serialize");
    let mut out = BytesMut::with_capacity(4 + head.len() + body.len());
    out.put_u32(head.len() as u32);
    out.put_slice(&head);
    out.put_slice(body);
    out.freeze()
}

fn unframe<T: for<'de> Deserialize<'de>>(msg: &Bytes) -> Result<(T, Bytes), String> {
    if msg.len() < 4 {
        return Err("a message shorter than its frame".into());
    }
    let n = u32::from_be_bytes(msg[..4].try_into().unwrap()) as usize;
    if msg.len() < 4 + n {
        return Err("a message shorter than its head".into());
    }
    let head = serde_json::from_slice(&msg[4..4 + n]).map_err(|e| e.to_string())?;
    Ok((head, msg.slice(4 + n..)))
}

fn encode_request(inv: &Invocation) -> Bytes {
    let head = RequestHead {
        function: &*inv.function,
        id: inv.id,
        waited_us: inv.accepted.elapsed().as_micros() as u64,
        lambda: inv.lambda.as_ref().map(|l| LambdaHead {
            invoked_arn: l.invoked_arn.clone(),
            client_context: l.client_context.clone(),
            cognito_identity: l.cognito_identity.clone(),
        }),
    };
    frame(&head, &inv.event)
}

fn decode_request(msg: &Bytes) -> Result<Invocation, String> {
    let (head, event): (RequestHead<FunctionVersion>, Bytes) = unframe(msg)?;
    let now = Instant::now();
    Ok(Invocation {
        function: Arc::new(head.function),
        id: head.id,
        event,
        accepted: now
            .checked_sub(Duration::from_micros(head.waited_us))
            .unwrap_or(now),
        lambda: head.lambda.map(|l| {
            Arc::new(LambdaContext {
                invoked_arn: l.invoked_arn,
                client_context: l.client_context,
                cognito_identity: l.cognito_identity,
            })
        }),
    })
}

fn encode_reply(result: Result<InvokeResult, InvokeError>) -> Bytes {
    match result {
        Ok(r) => frame(
            &ReplyHead::Ran {
                status: r.status,
                error: r.error,
                logs: r.logs,
                logs_truncated: r.logs_truncated,
                cold: r.cold,
                instance: r.instance,
                queue_us: r.queue.as_micros() as u64,
                init_us: r.init.as_micros() as u64,
                run_us: r.run.as_micros() as u64,
            },
            &r.body,
        ),
        Err(e) => {
            let head = match e {
                InvokeError::Throttled { function, max } => ReplyHead::Throttled { function, max },
                InvokeError::OutOfMemory {
                    function,
                    memory_mb,
                } => ReplyHead::OutOfMemory {
                    function,
                    memory_mb,
                },
                InvokeError::NamespaceMemory {
                    namespace,
                    limit_mb,
                } => ReplyHead::NamespaceMemory {
                    namespace,
                    limit_mb,
                },
                other => ReplyHead::Unavailable {
                    why: other.to_string(),
                },
            };
            frame(&head, &[])
        }
    }
}

fn decode_reply(msg: &Bytes) -> Result<InvokeResult, InvokeError> {
    let (head, body): (ReplyHead, Bytes) =
        unframe(msg).map_err(|e| InvokeError::Unavailable(format!("a bad answer: {e}")))?;
    match head {
        ReplyHead::Ran {
            status,
            error,
            logs,
            logs_truncated,
            cold,
            instance,
            queue_us,
            init_us,
            run_us,
        } => Ok(InvokeResult {
            status,
            body,
            error,
            logs,
            logs_truncated,
            cold,
            instance,
            queue: Duration::from_micros(queue_us),
            init: Duration::from_micros(init_us),
            run: Duration::from_micros(run_us),
        }),
        ReplyHead::Throttled { function, max } => Err(InvokeError::Throttled { function, max }),
        ReplyHead::OutOfMemory {
            function,
            memory_mb,
        } => Err(InvokeError::OutOfMemory {
            function,
            memory_mb,
        }),
        ReplyHead::NamespaceMemory {
            namespace,
            limit_mb,
        } => Err(InvokeError::NamespaceMemory {
            namespace,
            limit_mb,
        }),
        ReplyHead::Unavailable { why } => Err(InvokeError::Unavailable(why)),
    }
}

/// What became of an invocation sent to an invoker.
enum Sent {
    /// The invoker answered (with the run's end, or why it did not run it).
    Answered(Result<InvokeResult, InvokeError>),
    /// Nobody received it: it never ran.
    NotTaken(String),
    /// It may have run, or be running: no answer came.
    Lost(String),
}

/// Sends invocations to invokers. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    cluster: Arc<Cluster>,
    members: Membership,
    /// This node's own invoker, if it is one: called directly, without NATS.
    local: Option<Invoker>,
}

impl Dispatcher {
    /// A dispatcher over the invokers `members` knows; `local` is this node's invoker if it
    /// has the invoker role.
    pub fn new(cluster: Arc<Cluster>, members: Membership, local: Option<Invoker>) -> Self {
        Dispatcher {
            cluster,
            members,
            local,
        }
    }

    /// The invokers the cluster knows of.
    pub fn members(&self) -> &Membership {
        &self.members
    }

    /// Runs an invocation on the function's home invoker, or the next ones when it is full or
    /// not listening. Once an invoker has it, it is not sent elsewhere: an invoker lost while
    /// running it is `Unavailable` (a queued invocation is sent again by the queue, a caller may
    /// retry), so a blocking call never runs twice behind its caller's back.
    pub async fn invoke(&self, inv: Invocation) -> Result<InvokeResult, InvokeError> {
        let order = self
            .members
            .order_for(&inv.function.namespace, &inv.function.name);
        let mut last = InvokeError::Unavailable("no invoker is live in the cluster".into());
        for node in order {
            let attempt = match &self.local {
                Some(local) if node == self.cluster.node() => local.invoke(inv.clone()).await,
                _ => match self.remote(&node, &inv).await {
                    Sent::Answered(answer) => answer,
                    Sent::NotTaken(why) => Err(InvokeError::Unavailable(why)),
                    Sent::Lost(why) => return Err(InvokeError::Unavailable(why)),
                },
            };
            match attempt {
                // It never ran there: the next invoker may take it.
                Err(
                    e @ (InvokeError::Throttled { .. }
                    | InvokeError::OutOfMemory { .. }
                    | InvokeError::ShuttingDown
                    | InvokeError::Unavailable(_)),
                ) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    async fn remote(&self, node: &str, inv: &Invocation) -> Sent {
        let timeout = Duration::from_millis(inv.function.spec.timeout_ms) + GRACE;
        let request = async_nats::Request::new()
            .payload(encode_request(inv))
            .timeout(Some(timeout));
        let sent = self
            .cluster
            .client()
            .send_request(format!("{SUBJECT_PREFIX}{node}"), request);
        tokio::pin!(sent);
        let why = |what: &str| format!("invoker {node} {what}");
        loop {
            tokio::select! {
                answer = &mut sent => {
                    return match answer {
                        Ok(msg) => Sent::Answered(decode_reply(&msg.payload)),
                        Err(e) => match e.kind() {
                            async_nats::RequestErrorKind::NoResponders => {
                                Sent::NotTaken(why("is not listening"))
                            }
                            async_nats::RequestErrorKind::TimedOut => {
                                Sent::Lost(why("did not answer in time"))
                            }
                            _ => Sent::Lost(why(&format!("could not be asked: {e}"))),
                        },
                    };
                }
                _ = tokio::time::sleep(LIVENESS_CHECK) => {
                    if !self.members.is_live(node) {
                        return Sent::Lost(why("was lost while running it"));
                    }
                }
            }
        }
    }
}

/// Answers invocations sent to this node.
pub struct InvokerService {
    running: Arc<tokio::sync::watch::Sender<usize>>,
    task: tokio::task::AbortHandle,
}

impl InvokerService {
    /// Subscribes to this node's subject and runs what arrives on `invoker`, each invocation
    /// on its own task of the current runtime.
    pub async fn start(
        cluster: &Arc<Cluster>,
        invoker: Invoker,
    ) -> Result<InvokerService, ClusterError> {
        let client = cluster.client().clone();
        let mut subscription = client
            .subscribe(format!("{SUBJECT_PREFIX}{}", cluster.node()))
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let running = Arc::new(tokio::sync::watch::Sender::new(0usize));
        let counter = running.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = subscription.next().await {
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                let (invoker, client) = (invoker.clone(), client.clone());
                counter.send_modify(|n| *n += 1);
                let done = counter.clone();
                tokio::spawn(async move {
                    let _count = Counted(done);
                    let answer = match decode_request(&msg.payload) {
                        Ok(inv) => encode_reply(invoker.invoke(inv).await),
                        Err(e) => encode_reply(Err(InvokeError::Unavailable(format!(
                            "a bad request: {e}"
                        )))),
                    };
                    if let Err(e) = client.publish(reply, answer).await {
                        tracing::warn!(error = %e, "an invocation's answer was not sent");
                    }
                    let _ = client.flush().await;
                });
            }
        })
        .abort_handle();
        Ok(InvokerService { running, task })
    }

    /// Takes no more invocations and waits (up to `timeout`) for those running to end and
    /// be answered: a clean stop does not cut short what gateways sent here.
    pub async fn drain(&self, timeout: Duration) {
        self.task.abort();
        let mut watch = self.running.subscribe();
        let _ = tokio::time::timeout(timeout, watch.wait_for(|n| *n == 0)).await;
    }
}

/// Counts a running invocation until dropped.
struct Counted(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_core::{CodeFormat, CodeRef, FunctionSpec, Runtime};

    #[test]
    fn requests_and_replies_round_trip() {
        let function = Arc::new(FunctionVersion {
            namespace: "default".into(),
            name: "f".into(),
            version: 3,
            spec: FunctionSpec::new(Runtime::Python, "app.handler"),
            code: CodeRef {
                sha256: "ab".repeat(32),
                size: 1,
                format: CodeFormat::File,
                filename: Some("app.py".into()),
            },
            created_ms: 1,
        });
        let inv = Invocation {
            function: function.clone(),
            id: ActivationId::new(),
            event: Bytes::from_static(b"{\"a\":1}"),
            accepted: Instant::now(),
            lambda: Some(Arc::new(LambdaContext {
                invoked_arn: Some("arn".into()),
                ..Default::default()
            })),
        };
        let back = decode_request(&encode_request(&inv)).unwrap();
        assert_eq!(back.function, function);
        assert_eq!((back.id, &back.event[..]), (inv.id, &b"{\"a\":1}"[..]));
        assert_eq!(back.lambda.unwrap().invoked_arn.as_deref(), Some("arn"));

        let r = InvokeResult {
            status: Status::Success,
            body: Bytes::from_static(b"\x00binary\xff"),
            error: None,
            logs: vec![],
            logs_truncated: true,
            cold: true,
            instance: "i-1".into(),
            queue: Duration::from_micros(5),
            init: Duration::from_micros(6),
            run: Duration::from_micros(7),
        };
        let back = decode_reply(&encode_reply(Ok(r.clone()))).unwrap();
        assert_eq!(back.body, r.body);
        assert_eq!(
            (back.cold, back.logs_truncated, back.run),
            (true, true, r.run)
        );
        let e = decode_reply(&encode_reply(Err(InvokeError::Throttled {
            function: "f".into(),
            max: 2,
        })));
        assert!(matches!(e, Err(InvokeError::Throttled { max: 2, .. })));
        assert!(decode_reply(&Bytes::from_static(b"\x00\x00\x00\x09{}")).is_err());
        assert!(decode_request(&Bytes::from_static(b"\x00")).is_err());
    }
}

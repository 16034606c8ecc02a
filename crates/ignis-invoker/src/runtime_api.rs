//! The Lambda Runtime API (version 2018-06-01) that a `lambda` instance's bootstrap talks to:
//! an HTTP/1.1 server (hyper) on the instance's listener, one task per instance, handing
//! invocations from the invoker to `next` and turning `response`, `error` and `init/error`
//! into [`ApiEvent`]s for it. The lifecycle around it is in `lambda.rs`.
//!
//! | request | answer |
//! |---|---|
//! | `GET /2018-06-01/runtime/invocation/next` | 200 when an invocation comes: the event, `Lambda-Runtime-*` headers |
//! | `POST …/invocation/{id}/response` | 202; 400 `InvalidRequestID` for another id; 413 past 6 MiB |
//! | `POST …/invocation/{id}/error` | 202; 400 `InvalidRequestID` for another id |
//! | `POST /2018-06-01/runtime/init/error` | 202 before the first `next`, 403 `InvalidStateTransition` after |

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ignis_core::{ActivationError, ErrorPhase, MAX_RESULT_BYTES, Status};
use tokio::sync::{Mutex as AsyncMutex, Semaphore, mpsc};

use crate::instance::RunEnd;

/// Connections one instance may hold open to its Runtime API at once.
const MAX_CONNECTIONS: usize = 16;
/// Largest error document a runtime may post.
const MAX_ERROR_BYTES: usize = 1024 * 1024;
const PREFIX: &str = "/2018-06-01/runtime/";

/// One invocation on its way to the bootstrap's `next`.
pub(crate) struct Pending {
    pub request_id: String,
    pub event: Bytes,
    pub deadline_ms: u64,
    pub arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
}

/// What a runtime's error document says (`{"errorMessage", "errorType", "stackTrace"}`).
#[derive(Debug)]
pub(crate) struct ErrorReport {
    kind: String,
    message: String,
    stack: Option<String>,
}

impl ErrorReport {
    /// Reads the posted document; the header `Lambda-Runtime-Function-Error-Type` names the
    /// type when the document does not.
    fn parse(body: &[u8], header_type: Option<&str>) -> Self {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let kind = text("errorType")
            .or_else(|| header_type.map(str::to_string))
            .unwrap_or_else(|| "Unhandled".into());
        let message = text("errorMessage").unwrap_or_else(|| {
            if v.is_null() {
                String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned()
            } else {
                String::new()
            }
        });
        let stack = match v.get("stackTrace") {
            Some(serde_json::Value::Array(lines)) => Some(
                lines
                    .iter()
                    .map(|l| match l {
                        serde_json::Value::String(s) => s.trim_end().to_string(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        ErrorReport {
            kind,
            message,
            stack,
        }
    }

    pub(crate) fn into_end(self, status: Status, phase: ErrorPhase, reusable: bool) -> RunEnd {
        RunEnd {
            status,
            body: Bytes::new(),
            error: Some(ActivationError {
                kind: self.kind,
                message: self.message,
                stack: self.stack,
                phase,
            }),
            reusable,
        }
    }
}

/// What the Runtime API tells the invoker.
pub(crate) enum ApiEvent {
    /// The first `next`: init is over.
    Ready,
    InitError(ErrorReport),
    Response {
        id: String,
        body: Bytes,
    },
    Error {
        id: String,
        report: ErrorReport,
    },
    TooLarge {
        id: String,
    },
}

/// State shared by the Runtime API's connections.
struct ApiState {
    /// Invocations for `next`; one `next` at a time takes from it.
    pending: AsyncMutex<mpsc::Receiver<Pending>>,
    /// The request id handed out by `next` and not answered yet.
    current: std::sync::Mutex<Option<String>>,
    ready: AtomicBool,
    events: mpsc::UnboundedSender<ApiEvent>,
}

/// Serves the Runtime API on `listener` from now on: returns where to send invocations, where
/// its events come, and the server's task (aborting it ends every connection).
pub(crate) fn start(
    listener: tokio::net::TcpListener,
) -> (
    mpsc::Sender<Pending>,
    mpsc::UnboundedReceiver<ApiEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (inv_tx, inv_rx) = mpsc::channel(1);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let state = Arc::new(ApiState {
        pending: AsyncMutex::new(inv_rx),
        current: std::sync::Mutex::new(None),
        ready: AtomicBool::new(false),
        events: ev_tx,
    });
    (inv_tx, ev_rx, tokio::spawn(serve(listener, state)))
}

/// Serves the Runtime API on `listener` until aborted; at most [`MAX_CONNECTIONS`] at once.
async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "runtime API accept");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        connections.spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

fn json_reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Lambda's error document for the runtime.
fn api_error(status: StatusCode, kind: &str, message: &str) -> Reply {
    json_reply(
        status,
        serde_json::json!({ "errorMessage": message, "errorType": kind }),
    )
}

fn accepted() -> Reply {
    json_reply(StatusCode::ACCEPTED, serde_json::json!({ "status": "OK" }))
}

async fn handle(state: Arc<ApiState>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_string();
    let Some(route) = path.strip_prefix(PREFIX) else {
        return Ok(api_error(
            StatusCode::NOT_FOUND,
            "InvalidRequest",
            "unknown path; the Runtime API is under /2018-06-01/runtime/",
        ));
    };
    let method = req.method().clone();
    let reply = match (route.split('/').collect::<Vec<_>>().as_slice(), &method) {
        (["invocation", "next"], &Method::GET) => next(&state).await,
        (["invocation", id, "response"], &Method::POST) => {
            let id = id.to_string();
            match read_body(req, MAX_RESULT_BYTES).await {
                Ok(body) => answer(&state, &id, |id| ApiEvent::Response { id, body }),
                Err(BodyError::TooLarge) => {
                    let r = answer(&state, &id, |id| ApiEvent::TooLarge { id });
                    if r.status() == StatusCode::ACCEPTED {
                        api_error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "RequestEntityTooLarge",
                            &format!("the response is larger than {MAX_RESULT_BYTES} bytes"),
                        )
                    } else {
                        r
                    }
                }
                Err(BodyError::Broken) => bad_body(),
            }
        }
        (["invocation", id, "error"], &Method::POST) => {
            let id = id.to_string();
            let header = error_type_header(&req);
            match read_body(req, MAX_ERROR_BYTES).await {
                Ok(body) => {
                    let report = ErrorReport::parse(&body, header.as_deref());
                    answer(&state, &id, |id| ApiEvent::Error { id, report })
                }
                Err(BodyError::TooLarge) => api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    "the error document is too large",
                ),
                Err(BodyError::Broken) => bad_body(),
            }
        }
        (["init", "error"], &Method::POST) => {
            let header = error_type_header(&req);
            match read_body(req, MAX_ERROR_BYTES).await {
                Ok(body) if !state.ready.load(Ordering::Acquire) => {
                    let report = ErrorReport::parse(&body, header.as_deref());
                    let _ = state.events.send(ApiEvent::InitError(report));
                    accepted()
                }
                Ok(_) => api_error(
                    StatusCode::FORBIDDEN,
                    "InvalidStateTransition",
                    "init/error after the first invocation/next",
                ),
                Err(_) => bad_body(),
            }
        }
        (["invocation", "next"], _)
        | (["invocation", _, "response" | "error"], _)
        | (["init", "error"], _) => api_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidRequest",
            &format!("{method} is not allowed on {path}"),
        ),
        _ => api_error(
            StatusCode::NOT_FOUND,
            "InvalidRequest",
            &format!("unknown path {path}"),
        ),
    };
    Ok(reply)
}

fn bad_body() -> Reply {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequest",
        "the request body could not be read",
    )
}

fn error_type_header(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

/// Long-polls for the next invocation.
async fn next(state: &ApiState) -> Reply {
    if !state.ready.swap(true, Ordering::AcqRel) {
        let _ = state.events.send(ApiEvent::Ready);
    }
    let mut pending = state.pending.lock().await;
    let Some(p) = pending.recv().await else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Runtime.Shutdown",
            "the instance is being stopped",
        );
    };
    *state.current.lock().unwrap() = Some(p.request_id.clone());
    let mut r = Response::new(Full::new(p.event));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", &p.request_id);
    put("lambda-runtime-deadline-ms", &p.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &p.arn);
    put("lambda-runtime-trace-id", &p.trace_id);
    if let Some(c) = &p.client_context {
        put("lambda-runtime-client-context", c);
    }
    if let Some(c) = &p.cognito_identity {
        put("lambda-runtime-cognito-identity", c);
    }
    r
}

/// Ends the invocation `id` with `event` if it is the one handed out.
fn answer(state: &ApiState, id: &str, event: impl FnOnce(String) -> ApiEvent) -> Reply {
    let mut current = state.current.lock().unwrap();
    if current.as_deref() != Some(id) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            &format!("{id:?} is not the invocation in progress"),
        );
    }
    *current = None;
    let _ = state.events.send(event(id.to_string()));
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_are_read_like_lambda() {
        let r = ErrorReport::parse(
            br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":["  File \"a.py\", line 1\n","x"]}"#,
            Some("Unhandled"),
        );
        assert_eq!(r.kind, "ValueError");
        assert_eq!(r.message, "boom");
        assert_eq!(r.stack.as_deref(), Some("  File \"a.py\", line 1\nx"));
        let r = ErrorReport::parse(b"{}", Some("Runtime.Custom"));
        assert_eq!(r.kind, "Runtime.Custom");
        let r = ErrorReport::parse(b"not json", None);
        assert_eq!(
            (r.kind.as_str(), r.message.as_str()),
            ("Unhandled", "not json")
        );
    }
}

//! Invoke of the Lambda-compatible API: `POST /2015-03-31/functions/{name}/invocations` with
//! `X-Amz-Invocation-Type` (`RequestResponse`, `Event`, `DryRun`), `X-Amz-Log-Type: Tail`
//! (the last 4 KB of the logs, base64, in `X-Amz-Log-Result`) and `X-Amz-Client-Context`.
//!
//! A function that ran and failed answers 200 with `X-Amz-Function-Error: Unhandled` and
//! Lambda's error document (`errorMessage`, `errorType`, `stackTrace`) as the body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ignis_controller::{InvokeOutcome, LambdaContext};
use ignis_core::{ActivationRecord, LogLine, Status};
use serde_json::json;

use super::{Call, LambdaError, LambdaResult, lookup_error, target};
use crate::AppState;

/// How much of the logs `X-Amz-Log-Type: Tail` returns (Lambda's 4 KB).
const LOG_TAIL_BYTES: usize = 4096;
/// Largest decoded `X-Amz-Client-Context` (Lambda's limit).
const MAX_CLIENT_CONTEXT_BYTES: usize = 3583;

pub(crate) async fn invoke(state: &AppState, call: &Call, name: &str) -> LambdaResult<Response> {
    let t = target(call, name)?;
    if call.body.len() > ignis_core::MAX_PAYLOAD_BYTES {
        return Err(LambdaError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!(
                "Request must be smaller than {} bytes for the InvokeFunction operation",
                ignis_core::MAX_PAYLOAD_BYTES
            ),
        ));
    }
    let tail = match call.header("x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(LambdaError::invalid(format!(
                "X-Amz-Log-Type {other:?} is not None or Tail"
            )));
        }
    };
    let client_context = match call.header("x-amz-client-context") {
        None => None,
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    LambdaError::invalid("X-Amz-Client-Context is not base64-encoded text")
                })?;
            if raw.len() > MAX_CLIENT_CONTEXT_BYTES {
                return Err(LambdaError::invalid(format!(
                    "X-Amz-Client-Context is larger than {MAX_CLIENT_CONTEXT_BYTES} bytes"
                )));
            }
            Some(raw)
        }
    };
    let executed = |v: u32| -> String {
        if t.version.is_some() {
            v.to_string()
        } else {
            "$LATEST".to_string()
        }
    };
    match call
        .header("x-amz-invocation-type")
        .unwrap_or("RequestResponse")
    {
        "RequestResponse" => {}
        "Event" => {
            let accepted = state
                .controller
                .submit_async_as(
                    &call.namespace,
                    &t.name,
                    t.version,
                    call.body.clone(),
                    None,
                    None,
                    call.request_id,
                )
                .await
                .map_err(|e| lookup_error(e, call, &t))?;
            let mut r = StatusCode::ACCEPTED.into_response();
            put(
                &mut r,
                "x-amzn-requestid",
                &accepted.activation_id.to_string(),
            );
            return Ok(r);
        }
        "DryRun" => {
            state
                .controller
                .get_function(&call.namespace, &t.name, t.version)
                .await
                .map_err(|e| lookup_error(e, call, &t))?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        other => {
            return Err(LambdaError::invalid(format!(
                "X-Amz-Invocation-Type {other:?} is not RequestResponse, Event or DryRun"
            )));
        }
    }
    let qualifier = t.version.map(|v| v.to_string());
    let context = LambdaContext {
        invoked_arn: Some(ignis_core::lambda::function_arn(
            &call.region,
            &call.namespace,
            &t.name,
            qualifier.as_deref(),
        )),
        client_context,
        cognito_identity: None,
    };
    let o = state
        .controller
        .invoke_lambda(
            &call.namespace,
            &t.name,
            t.version,
            call.body.clone(),
            context,
            call.request_id,
        )
        .await
        .map_err(|e| lookup_error(e, call, &t))?;
    if o.status == Status::PlatformError {
        let why = o.error.map(|e| e.message).unwrap_or_default();
        tracing::error!(error = %why, function = %t.name, "platform error in a Lambda invoke");
        return Err(LambdaError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            format!("Ignis could not run the function: {why}"),
        ));
    }
    let logs = if tail {
        let record = state
            .controller
            .get_activation(&call.namespace, &o.activation_id.to_string())
            .await?;
        Some(log_tail(&record))
    } else {
        None
    };
    let mut r = outcome(&o);
    put(&mut r, "x-amz-executed-version", &executed(o.version));
    put(&mut r, "x-amzn-requestid", &o.activation_id.to_string());
    if let Some(logs) = logs {
        put(&mut r, "x-amz-log-result", &logs);
    }
    Ok(r)
}

fn put(r: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// The body of a run: the result, or Lambda's error document with `X-Amz-Function-Error`.
fn outcome(o: &InvokeOutcome) -> Response {
    let json_type = HeaderValue::from_static("application/json");
    if o.status == Status::Success {
        let mut r = (StatusCode::OK, o.body.clone()).into_response();
        let ct = if o.json || serde_json::from_slice::<serde::de::IgnoredAny>(&o.body).is_ok() {
            json_type
        } else {
            HeaderValue::from_static("application/octet-stream")
        };
        r.headers_mut().insert("content-type", ct);
        return r;
    }
    let (kind, message, stack) = match &o.error {
        Some(e) => (e.kind.as_str(), e.message.as_str(), e.stack.as_deref()),
        None => ("Unhandled", "the function failed", None),
    };
    let kind = match o.status {
        Status::Timeout => "Sandbox.Timedout",
        Status::Oom => "Runtime.OutOfMemory",
        _ => kind,
    };
    let stack: Vec<&str> = stack.map(|s| s.lines().collect()).unwrap_or_default();
    let mut doc =
        json!({ "errorMessage": message, "errorType": kind, "requestId": o.activation_id });
    if !stack.is_empty() {
        doc["stackTrace"] = json!(stack);
    }
    let mut r = (StatusCode::OK, axum::Json(doc)).into_response();
    r.headers_mut().insert(
        "x-amz-function-error",
        HeaderValue::from_static("Unhandled"),
    );
    r
}

/// The last 4 KB of an activation's logs as Lambda shows them (with its START, END and REPORT
/// lines), base64-encoded.
fn log_tail(a: &ActivationRecord) -> String {
    let mut text = format!("START RequestId: {} Version: {}\n", a.id, a.version);
    for LogLine { line, .. } in &a.logs {
        text.push_str(line);
        text.push('\n');
    }
    if a.logs_truncated {
        text.push_str("[logs truncated]\n");
    }
    text.push_str(&format!("END RequestId: {}\n", a.id));
    text.push_str(&format!(
        "REPORT RequestId: {}\tDuration: {} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
        a.id,
        a.duration_ms.saturating_sub(a.init_ms),
        a.billed_ms,
        a.memory_mb
    ));
    if a.cold {
        text.push_str(&format!("\tInit Duration: {} ms", a.init_ms));
    }
    text.push('\n');
    let mut start = text.len().saturating_sub(LOG_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    base64::engine::general_purpose::STANDARD.encode(&text.as_bytes()[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_core::{ActivationError, ActivationId, ErrorPhase, LogStream};

    fn record(lines: usize, line_len: usize) -> ActivationRecord {
        ActivationRecord {
            id: ActivationId::new(),
            namespace: "default".into(),
            function: "f".into(),
            version: 2,
            start_ms: 0,
            end_ms: 10,
            duration_ms: 10,
            queue_ms: 0,
            init_ms: 4,
            cold: true,
            trigger: None,
            instance: String::new(),
            status: Status::Success,
            result: None,
            error: None,
            logs: (0..lines)
                .map(|i| LogLine {
                    ts_ms: 0,
                    stream: LogStream::Stdout,
                    line: format!("{i:0line_len$}"),
                })
                .collect(),
            logs_truncated: false,
            memory_mb: 128,
            billed_ms: 7,
        }
    }

    fn decode(s: &str) -> String {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
    }

    #[test]
    fn tails_keep_the_last_four_kilobytes_with_lambdas_lines() {
        let a = record(2, 5);
        let t = decode(&log_tail(&a));
        assert!(t.starts_with(&format!(
            "START RequestId: {} Version: 2\n00000\n00001\nEND",
            a.id
        )));
        assert!(t.contains("\tBilled Duration: 7 ms\tMemory Size: 128 MB\tInit Duration: 4 ms\n"));
        let big = record(100, 100);
        let t = decode(&log_tail(&big));
        assert_eq!(t.len(), LOG_TAIL_BYTES);
        assert!(t.contains(&format!("{:0100}\nEND RequestId", 99)));
        assert!(!t.contains("START"));
    }

    #[test]
    fn failures_are_lambda_error_documents() {
        let o = InvokeOutcome {
            activation_id: ActivationId::new(),
            version: 1,
            status: Status::ApplicationError,
            body: Default::default(),
            json: true,
            error: Some(ActivationError {
                kind: "ValueError".into(),
                message: "boom".into(),
                stack: Some("a\nb".into()),
                phase: ErrorPhase::Invoke,
            }),
            cold: false,
            instance: String::new(),
            duration_ms: 1,
            duration_us: 1000,
            init_ms: 0,
        };
        let r = outcome(&o);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-amz-function-error"], "Unhandled");
        let timeout = outcome(&InvokeOutcome {
            status: Status::Timeout,
            ..o.clone()
        });
        assert_eq!(timeout.headers()["x-amz-function-error"], "Unhandled");
        let ok = outcome(&InvokeOutcome {
            status: Status::Success,
            body: bytes::Bytes::from_static(b"\"hi\""),
            error: None,
            ..o
        });
        assert!(ok.headers().get("x-amz-function-error").is_none());
    }
}

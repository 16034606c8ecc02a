//! The requests and answers of the REST API that are not already types of `ignis-core`.

use std::collections::BTreeMap;

use bytes::Bytes;
use ignis_core::{
    ActivationId, ActivationRecord, LogLine, LogStream, Network, Runtime, Status, Web, WorkflowDef,
};
use serde::{Deserialize, Serialize};

use crate::{ClientError, CodeUpload};

/// A deployment: the spec of the new version and, usually, its code.
///
/// Limits left at `None` (and an empty `env`) take the server's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// The runtime.
    pub runtime: Runtime,
    /// The handler (`module.function` for python/node, a path for exec).
    pub handler: String,
    /// Memory limit in MiB.
    pub memory_mb: Option<u32>,
    /// Time limit of one invocation in milliseconds.
    pub timeout_ms: Option<u64>,
    /// The most instances running at once.
    pub max_instances: Option<u32>,
    /// Instances kept warm at all times.
    pub min_instances: Option<u32>,
    /// Invocations one instance runs at once.
    pub instance_concurrency: Option<u32>,
    /// Further attempts of failed asynchronous invocations.
    pub retries: Option<u32>,
    /// Destination function of successful asynchronous invocations.
    pub on_success: Option<String>,
    /// Destination function of failed asynchronous invocations.
    pub on_failure: Option<String>,
    /// Network access: `none` or `host`.
    pub network: Option<Network>,
    /// Whether it answers HTTP at `/fn/{ns}/{name}/…`: false, true (with a key) or public.
    pub web: Option<Web>,
    /// Browser origins allowed to call it as a web function.
    pub cors_origins: Vec<String>,
    /// Size of the private /tmp in MiB.
    pub tmp_mb: Option<u32>,
    /// Environment variables of the function.
    pub env: BTreeMap<String, String>,
    /// The code; `None` keeps the code of the latest version (a configuration-only update).
    pub code: Option<CodeUpload>,
    /// A sequence's components: `name` or `name@version`, in order.
    pub components: Vec<String>,
    /// A workflow's definition.
    pub workflow: Option<WorkflowDef>,
    /// Whether deploying over an existing function is allowed (a new version); when `false` the
    /// server answers 409 `conflict` if the function exists.
    pub overwrite: bool,
}

impl DeployRequest {
    /// A deployment with the server's default limits and no environment.
    pub fn new(runtime: Runtime, handler: impl Into<String>, code: Option<CodeUpload>) -> Self {
        DeployRequest {
            runtime,
            handler: handler.into(),
            memory_mb: None,
            timeout_ms: None,
            max_instances: None,
            min_instances: None,
            instance_concurrency: None,
            retries: None,
            on_success: None,
            on_failure: None,
            network: None,
            web: None,
            cors_origins: Vec::new(),
            tmp_mb: None,
            env: BTreeMap::new(),
            code,
            components: Vec::new(),
            workflow: None,
            overwrite: true,
        }
    }
}

/// The JSON form of a deployment without code.
#[derive(Serialize)]
pub(crate) struct DeployJson<'a> {
    pub runtime: Runtime,
    pub handler: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_success: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<Web>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub cors_origins: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmp_mb: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub components: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<&'a WorkflowDef>,
}

/// The outcome of an invocation that reached the function, whatever the function did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeResponse {
    /// HTTP status: 200 on success, 502/504/500 when the function failed.
    pub status: u16,
    /// Id of the activation recording this invocation.
    pub activation_id: String,
    /// How it ended: `success`, `application_error`, `timeout`, `oom`, `crash`,
    /// `platform_error`.
    pub fn_status: String,
    /// Whether an instance had to be created for it.
    pub cold: bool,
    /// End-to-end duration in milliseconds, including queue wait and init.
    pub duration_ms: u64,
    /// Time spent creating the instance and loading the code (0 when warm).
    pub init_ms: u64,
    /// The version of the function that ran.
    pub version: u32,
    /// The result (JSON for python/node, raw stdout for exec), or the error document when the
    /// function failed.
    pub body: Bytes,
}

impl InvokeResponse {
    /// Whether the function succeeded.
    pub fn is_success(&self) -> bool {
        self.fn_status == Status::Success.as_str()
    }

    /// The status as an enum, `None` if the server sent one this client does not know.
    pub fn fn_status(&self) -> Option<Status> {
        self.fn_status.parse().ok()
    }

    /// The error of a failed invocation, decoded from the body; `None` on success.
    pub fn error(&self) -> Option<InvokeError> {
        if self.is_success() {
            return None;
        }
        #[derive(Deserialize)]
        struct Doc {
            error: InvokeError,
        }
        Some(match serde_json::from_slice::<Doc>(&self.body) {
            Ok(doc) => doc.error,
            Err(_) => InvokeError {
                code: self.fn_status.clone(),
                kind: String::new(),
                message: short_text(&self.body)
                    .unwrap_or_else(|| format!("function failed with HTTP {}", self.status)),
                stack: None,
            },
        })
    }

    /// `Ok(self)` if the function succeeded, [`ClientError::FunctionFailed`] otherwise.
    pub fn into_result(self) -> Result<Self, ClientError> {
        match self.error() {
            None => Ok(self),
            Some(err) => Err(ClientError::FunctionFailed {
                status: self.fn_status,
                kind: err.kind,
                message: err.message,
                activation_id: self.activation_id,
            }),
        }
    }
}

/// Why a function failed, as the invoke endpoint reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeError {
    /// The activation status, e.g. `application_error`.
    #[serde(default)]
    pub code: String,
    /// The error type, e.g. `ValueError`, `Timeout`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The message.
    #[serde(default)]
    pub message: String,
    /// The stack trace, for python/node exceptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// Which activations to list; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivationFilter {
    /// Only this function's.
    pub function: Option<String>,
    /// Only those that ended so.
    pub status: Option<Status>,
    /// Only those a firing of this trigger caused.
    pub trigger: Option<String>,
    /// Only those started at or after this time (ms since epoch).
    pub since: Option<u64>,
    /// Only those started before this time (ms since epoch).
    pub until: Option<u64>,
    /// At most this many (server default 50, max 200).
    pub limit: Option<u32>,
    /// Continue after a previous page.
    pub cursor: Option<String>,
}

/// One page of activations, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationPage {
    /// The activations, without logs and results.
    pub activations: Vec<ActivationRecord>,
    /// Give this as [`ActivationFilter::cursor`] to get the next page; `None` on the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// The logs of one activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationLogs {
    /// The activation.
    pub id: ActivationId,
    /// Its lines, oldest first.
    pub logs: Vec<LogLine>,
    /// Whether lines were dropped because it wrote more than the limit.
    #[serde(default)]
    pub truncated: bool,
}

/// Which log lines of a function to get.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only this stream.
    pub stream: Option<LogStream>,
    /// Only lines containing this.
    pub grep: Option<String>,
    /// Only this activation's lines.
    pub activation: Option<String>,
    /// Only this version's lines.
    pub version: Option<u32>,
    /// How many recent activations (not following; the server's default is 10).
    pub tail: Option<u32>,
}

/// The first line of a body, if it is text, cut to a readable length.
pub(crate) fn short_text(body: &[u8]) -> Option<String> {
    const MAX: usize = 300;
    let text = std::str::from_utf8(body).ok()?.trim();
    let line = text.lines().next()?.trim();
    if line.is_empty() {
        return None;
    }
    Some(match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(body: &'static [u8]) -> InvokeResponse {
        InvokeResponse {
            status: 502,
            activation_id: "a1".into(),
            fn_status: "application_error".into(),
            cold: false,
            duration_ms: 3,
            init_ms: 0,
            version: 1,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn failures_decode_the_error_document() {
        let r = failed(
            br#"{"error":{"code":"application_error","message":"boom","activation_id":"a1","type":"ValueError","stack":"Traceback"}}"#,
        );
        let err = r.error().unwrap();
        assert_eq!(err.kind, "ValueError");
        assert_eq!(err.stack.as_deref(), Some("Traceback"));
        match r.into_result().unwrap_err() {
            ClientError::FunctionFailed {
                status,
                kind,
                message,
                activation_id,
            } => {
                assert_eq!(
                    (&*status, &*kind, &*message, &*activation_id),
                    ("application_error", "ValueError", "boom", "a1")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn failures_without_a_document_still_explain() {
        assert_eq!(failed(b"oops\nmore").error().unwrap().message, "oops");
        assert_eq!(
            failed(b"").error().unwrap().message,
            "function failed with HTTP 502"
        );
    }

    #[test]
    fn successes_have_no_error() {
        let mut r = failed(b"{}");
        r.fn_status = "success".into();
        r.status = 200;
        assert!(r.error().is_none());
        assert_eq!(r.fn_status(), Some(Status::Success));
        assert!(r.into_result().is_ok());
    }
}

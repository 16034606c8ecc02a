//! Activations: the record of one invocation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ActivationId;

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The handler returned a result.
    Success,
    /// The handler (or its initialisation) raised an error or exited non-zero.
    ApplicationError,
    /// The invocation passed its deadline; the instance was killed.
    Timeout,
    /// The instance ran out of memory.
    Oom,
    /// The instance died without answering.
    Crash,
    /// Ignis itself failed to run the invocation.
    PlatformError,
}

impl Status {
    /// Every status, in declaration order (`status as usize` is its index).
    pub const ALL: [Status; 6] = [
        Status::Success,
        Status::ApplicationError,
        Status::Timeout,
        Status::Oom,
        Status::Crash,
        Status::PlatformError,
    ];

    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::ApplicationError => "application_error",
            Status::Timeout => "timeout",
            Status::Oom => "oom",
            Status::Crash => "crash",
            Status::PlatformError => "platform_error",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "success" => Status::Success,
            "application_error" => Status::ApplicationError,
            "timeout" => Status::Timeout,
            "oom" => Status::Oom,
            "crash" => Status::Crash,
            "platform_error" => Status::PlatformError,
            other => return Err(format!("unknown status {other:?}")),
        })
    }
}

/// Whether an error happened while loading the code or while running the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPhase {
    /// Loading the handler (import, syntax error, missing function).
    Init,
    /// Running the handler.
    Invoke,
}

/// The error of a failed activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationError {
    /// The exception class or error kind, e.g. `ValueError`, `Timeout`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable message.
    pub message: String,
    /// Stack trace, for python/node exceptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// When it happened.
    pub phase: ErrorPhase,
}

/// The stream a log line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line a function wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When Ignis read it (ms since epoch).
    pub ts_ms: u64,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The text, without the newline (invalid UTF-8 replaced).
    pub line: String,
}

/// One line of a function's logs with the activation that wrote it: what following a
/// function's logs delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLogLine {
    /// When Ignis read it (ms since epoch).
    pub ts_ms: u64,
    /// The activation (and request id) that wrote it.
    pub activation_id: ActivationId,
    /// The function's version.
    pub version: u32,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The text, without the newline.
    pub line: String,
}

/// The record of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationRecord {
    /// Unique id.
    pub id: ActivationId,
    /// Namespace of the function.
    pub namespace: String,
    /// Function name.
    pub function: String,
    /// Function version that ran.
    pub version: u32,
    /// When the invocation was accepted (ms since epoch).
    pub start_ms: u64,
    /// When it finished (ms since epoch).
    pub end_ms: u64,
    /// end − start, including queue wait and init.
    pub duration_ms: u64,
    /// Time waiting for a free instance.
    pub queue_ms: u64,
    /// Time spent creating the instance and loading the code (0 when warm).
    pub init_ms: u64,
    /// Whether an instance had to be created.
    pub cold: bool,
    /// The trigger whose firing caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Which instance ran it (`<function>/<n>`), so warm reuse can be seen.
    #[serde(default)]
    pub instance: String,
    /// How it ended.
    pub status: Status,
    /// The result, for successful activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error, for failed activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ActivationError>,
    /// Lines written by the function, oldest first.
    #[serde(default)]
    pub logs: Vec<LogLine>,
    /// Whether lines were dropped because the activation wrote more than the log limit.
    #[serde(default)]
    pub logs_truncated: bool,
    /// Memory limit the function ran with.
    pub memory_mb: u32,
    /// Billed duration: run time (init + handler) rounded up to the millisecond.
    pub billed_ms: u64,
}

impl ActivationRecord {
    /// Billed GB-seconds of this activation.
    pub fn gb_seconds(&self) -> f64 {
        (self.memory_mb as f64 / 1024.0) * (self.billed_ms as f64 / 1000.0)
    }
}

/// Billed milliseconds for a run of `micros` microseconds: rounded up, at least 1.
pub fn billed_ms(micros: u64) -> u64 {
    micros.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_rounds_up() {
        assert_eq!(billed_ms(0), 1);
        assert_eq!(billed_ms(1), 1);
        assert_eq!(billed_ms(1000), 1);
        assert_eq!(billed_ms(1001), 2);
    }

    #[test]
    fn statuses_round_trip() {
        for (i, s) in Status::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i);
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}

//! Shared vocabulary of Ignis: namespaces, functions, runtimes, limits and activation records.
//!
//! Every other crate speaks in these types. Nothing here does I/O; the only side effect is
//! reading the clock and the OS random source for ids.
#![warn(missing_docs)]

mod activation;
pub mod composition;
pub mod data;
mod function;
mod ids;
mod json;
pub mod lambda;
pub mod metrics;
mod names;
#[cfg(test)]
mod proptests;
mod trigger;
pub mod usage;

pub use activation::{
    ActivationError, ActivationRecord, ErrorPhase, FunctionLogLine, LogLine, LogStream, Status,
    billed_ms,
};
pub use composition::{
    ExecutionRecord, ExecutionStatus, FunctionRef, StepRecord, StepStatus, WorkflowDef,
    WorkflowStep,
};
pub use function::{
    CodeFormat, CodeRef, FunctionSpec, FunctionVersion, LambdaConfig, Network, Runtime, SpecError,
    Web,
};
pub use ids::{ActivationId, new_secret, now_ms};
pub use json::{JsonError, MAX_JSON_DEPTH, check_json};
pub use names::{NameError, validate_function_name, validate_namespace_name, validate_topic_name};
pub use trigger::{
    Caused, Firing, MAX_BATCH_SIZE, MAX_BATCH_WINDOW_MS, NatsDeliver, NatsSource, Rule,
    StorageEvent, Trigger, TriggerKind, TriggerSpec,
};

/// Largest request payload (event) accepted by invoke, like Lambda's synchronous limit.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Largest result a function may return.
pub const MAX_RESULT_BYTES: usize = 6 * 1024 * 1024;
/// Most log bytes kept for one activation; the rest is dropped and the record marked truncated.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;
/// Name of the namespace that always exists.
pub const DEFAULT_NAMESPACE: &str = "default";

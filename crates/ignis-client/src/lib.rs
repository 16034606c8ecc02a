//! Typed client of the Ignis REST API, used by the `ignis` CLI, the load-test tool and tests.
//!
//! ```text
//!  CliConfig ──(url, key, namespace)──▶ Client ──HTTP/1, pooled, keep-alive──▶ ignis serve
//!  package_code(dir) ─▶ CodeUpload ─▶ DeployRequest ─▶ Client::deploy
//! ```
//!
//! - [`Client`] wraps one pooled hyper connection pool; clone it freely. [`Client::invoke`]
//!   is the hot path: one request, the result returned as [`bytes::Bytes`] without copying.
//! - Every failure is a [`ClientError`]; its variants separate configuration mistakes, an
//!   unreachable server, a refused request and a function that failed, so that callers can map
//!   them to exit codes.
//! - [`CliConfig`] is the small TOML file `ignis serve` writes on first start so that the CLI
//!   needs no set-up.
//! - [`package_code`] turns a file or directory into an upload (a deterministic zip for
//!   directories).
//! - [`display`] has the table and timestamp formatting shared by command-line tools.
//!
//! The client only speaks plain `http://`; put Ignis behind a TLS proxy for remote use.
#![warn(missing_docs)]

mod api;
mod client;
mod config;
pub mod display;
mod error;
mod package;

pub use api::{
    ActivationFilter, ActivationLogs, ActivationPage, DeployRequest, InvokeError, InvokeResponse,
    LogQuery,
};
pub use client::{Client, LogEvent};
pub use config::{CONFIG_ENV, CliConfig};
pub use error::{ClientError, TransportError};
pub use ignis_core::FunctionLogLine;
pub use package::{CodeUpload, package_code};

/// Re-exported so callers of [`Client::request`] need no direct dependency on hyper.
pub use hyper::{HeaderMap, Method, StatusCode};

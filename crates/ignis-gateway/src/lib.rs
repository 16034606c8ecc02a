//! The HTTP gateway of Ignis: the REST API under `/v1`, authentication, and the mapping of
//! every failure to a JSON error with a proper status. Only this crate knows HTTP.
//!
//! Routes, with who may call each, are listed in [`ROUTES`] and documented in docs/api.md.
#![warn(missing_docs)]

pub mod auth;
mod data;
pub mod error;
mod handlers;
mod in_process;
mod lambda_api;
pub mod observe;
pub mod routes;
pub mod s3;
pub mod secrets;
pub mod serve;
pub mod sigv4;
mod tenancy;
mod topics;
mod triggers;
mod ui;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, Uri};
use ignis_controller::Controller;

pub use auth::{Access, KeyRing, NewKey, Principal, generate_key, upgrade_record};
pub use error::ApiError;
pub use in_process::InProcessApi;
pub use observe::RequestId;
pub use routes::{ROUTES, Route};
pub use secrets::MasterKey;
pub use serve::{HttpLimits, serve};

/// Largest deploy request body: a 50 MiB zip, base64-encoded in JSON, with room to spare.
pub const MAX_DEPLOY_BYTES: usize = 100 * 1024 * 1024;

/// What every handler shares.
pub struct AppState {
    /// The control plane.
    pub controller: Controller,
    /// Accepted API keys.
    pub keys: Arc<KeyRing>,
    /// What `GET /v1/system/info` answers.
    pub info: serde_json::Value,
    /// Whether `/metrics` is served without a key (else it needs an admin key).
    pub metrics_public: bool,
    /// Becomes `true` when the server starts shutting down: streams that would never end
    /// (followed logs) end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The whole HTTP API: the routes of [`ROUTES`], each behind its authorization.
pub fn router(state: Arc<AppState>) -> Router {
    routes::build(state.clone())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(observe::request_span))
        .with_state(state)
}

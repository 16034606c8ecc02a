//! The HTTP gateway of Ignis: the REST API under `/v1`, authentication, and the mapping of
//! every failure to a JSON error with a proper status. Only this crate knows HTTP.
//!
//! Routes are listed in [`router`] and documented in docs/api.md.
#![warn(missing_docs)]

pub mod auth;
pub mod error;
mod handlers;
mod lambda_api;
pub mod sigv4;
mod triggers;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::routing::{any, get, post, put};
use ignis_controller::Controller;

pub use auth::{KeyRing, NewKey, generate_key};
pub use error::ApiError;

/// Largest deploy request body: a 50 MiB zip, base64-encoded in JSON, with room to spare.
pub const MAX_DEPLOY_BYTES: usize = 100 * 1024 * 1024;

/// What every handler shares.
pub struct AppState {
    /// The control plane.
    pub controller: Controller,
    /// Accepted API keys.
    pub keys: KeyRing,
    /// What `GET /v1/system/info` answers.
    pub info: serde_json::Value,
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The whole HTTP API.
pub fn router(state: Arc<AppState>) -> Router {
    let ns = "/v1/namespaces/{ns}";
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async { axum::Json(serde_json::json!({"ready": true})) }),
        )
        .route("/v1/system/info", get(handlers::system_info))
        .route("/v1/system/instances", get(handlers::system_instances))
        .route(&format!("{ns}/functions"), get(handlers::list_functions))
        .route(
            &format!("{ns}/functions/{{name}}"),
            put(handlers::put_function)
                .get(handlers::get_function)
                .delete(handlers::delete_function)
                .layer(DefaultBodyLimit::max(MAX_DEPLOY_BYTES)),
        )
        .route(
            &format!("{ns}/functions/{{name}}/versions"),
            get(handlers::list_versions),
        )
        .route(
            &format!("{ns}/functions/{{name}}/versions/{{version}}"),
            get(handlers::get_version),
        )
        .route(
            &format!("{ns}/functions/{{name}}/invoke"),
            post(handlers::invoke).layer(DefaultBodyLimit::max(ignis_core::MAX_PAYLOAD_BYTES)),
        )
        .route(
            &format!("{ns}/activations"),
            get(handlers::list_activations),
        )
        .route(&format!("{ns}/dlq"), get(handlers::list_dead_letters))
        .route(&format!("{ns}/triggers"), get(triggers::list_triggers))
        .route(
            &format!("{ns}/triggers/{{name}}"),
            put(triggers::put_trigger)
                .get(triggers::get_trigger)
                .delete(triggers::delete_trigger),
        )
        .route(
            &format!("{ns}/triggers/{{name}}/fire"),
            post(triggers::fire_trigger),
        )
        .route(
            &format!("{ns}/triggers/{{name}}/firings"),
            get(triggers::list_firings),
        )
        .route(&format!("{ns}/rules"), get(triggers::list_rules))
        .route(
            &format!("{ns}/rules/{{name}}"),
            put(triggers::put_rule)
                .get(triggers::get_rule)
                .delete(triggers::delete_rule),
        )
        .route(
            &format!("{ns}/rules/{{name}}/enable"),
            post(triggers::enable_rule),
        )
        .route(
            &format!("{ns}/rules/{{name}}/disable"),
            post(triggers::disable_rule),
        )
        .route(
            &format!("{ns}/dlq/{{id}}/replay"),
            post(handlers::replay_dead_letter),
        )
        .route(
            &format!("{ns}/activations/{{id}}"),
            get(handlers::get_activation),
        )
        .route(
            &format!("{ns}/activations/{{id}}/logs"),
            get(handlers::activation_logs),
        )
        .route(
            "/fn/{ns}/{name}",
            any(web::handle).layer(DefaultBodyLimit::max(ignis_core::MAX_PAYLOAD_BYTES)),
        )
        .route(
            "/fn/{ns}/{name}/",
            any(web::handle).layer(DefaultBodyLimit::max(ignis_core::MAX_PAYLOAD_BYTES)),
        )
        .route(
            "/fn/{ns}/{name}/{*path}",
            any(web::handle).layer(DefaultBodyLimit::max(ignis_core::MAX_PAYLOAD_BYTES)),
        )
        .route(lambda_api::PREFIX, any(lambda_api::handle))
        .route(&format!("{}/", lambda_api::PREFIX), any(lambda_api::handle))
        .route(
            &format!("{}/{{*rest}}", lambda_api::PREFIX),
            any(lambda_api::handle),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

//! Routes of topics: `POST /v1/namespaces/{ns}/topics/{topic}` publishes a message (the body),
//! `GET /v1/namespaces/{ns}/topics` lists the topics with their counts.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ignis_controller::MAX_MESSAGE_BYTES;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

pub async fn publish(
    State(state): State<Arc<AppState>>,
    Path((ns, topic)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a message has at most {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("application/octet-stream"));
    let published = state
        .controller
        .publish(&ns, &topic, body, content_type)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(published)).into_response())
}

pub async fn list_topics(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "topics": state.controller.list_topics(&ns).await? }),
    ))
}

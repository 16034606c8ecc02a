//! Routes of triggers and rules: `/v1/namespaces/{ns}/triggers/…` and `/rules/…`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ignis_core::TriggerSpec;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// `overwrite=false` in the query: refuse to replace. No other parameter is known.
fn create_only(raw: Option<&str>) -> ApiResult<bool> {
    let mut overwrite = None;
    for (k, v) in crate::handlers::query_pairs(raw)? {
        match k.as_str() {
            "overwrite" => overwrite = Some(v),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    crate::handlers::create_only(overwrite.as_deref())
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> ApiResult<T> {
    let body: &[u8] = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

fn created(new: bool, v: impl serde::Serialize) -> Response {
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(v)).into_response()
}

pub async fn put_trigger(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let spec: TriggerSpec = json_body(&body?, "trigger")?;
    let create_only = create_only(raw.as_deref())?;
    let (t, new) = state
        .controller
        .put_trigger(&ns, &name, spec, create_only)
        .await?;
    Ok(created(new, t))
}

pub async fn list_triggers(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "triggers": state.controller.list_triggers(&ns).await? }),
    ))
}

pub async fn get_trigger(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let t = state.controller.get_trigger(&ns, &name).await?;
    Ok(Json(serde_json::to_value(t).unwrap_or_default()))
}

pub async fn delete_trigger(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.controller.delete_trigger(&ns, &name).await?;
    Ok(Json(json!({ "deleted": name })))
}

pub async fn fire_trigger(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let firing = state.controller.fire_trigger(&ns, &name, body?).await?;
    Ok((StatusCode::ACCEPTED, Json(firing)).into_response())
}

pub async fn list_firings(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let mut limit = 50;
    for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?
    {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| ApiError::bad_request("limit must be between 1 and 1000"))?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let firings = state.controller.list_firings(&ns, &name, limit).await?;
    Ok(Json(json!({ "firings": firings })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    trigger: String,
    function: String,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

pub async fn put_rule(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let b: RuleBody = json_body(&body?, "rule")?;
    let create_only = create_only(raw.as_deref())?;
    let (rule, new) = state
        .controller
        .put_rule(&ns, &name, &b.trigger, &b.function, b.enabled, create_only)
        .await?;
    Ok(created(new, rule))
}

pub async fn list_rules(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({ "rules": state.controller.list_rules(&ns).await? }),
    ))
}

pub async fn get_rule(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let r = state.controller.get_rule(&ns, &name).await?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()))
}

pub async fn delete_rule(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.controller.delete_rule(&ns, &name).await?;
    Ok(Json(json!({ "deleted": name })))
}

pub async fn enable_rule(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let r = state.controller.set_rule_enabled(&ns, &name, true).await?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()))
}

pub async fn disable_rule(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let r = state.controller.set_rule_enabled(&ns, &name, false).await?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()))
}

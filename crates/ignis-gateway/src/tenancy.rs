//! Namespaces (`/v1/namespaces/{ns}`, admin only) and API keys (`/v1/namespaces/{ns}/keys`
//! for a namespace's owner, `/v1/keys` for admin keys). Who may call each is in
//! [`crate::ROUTES`]; a secret appears in exactly one response, the one that made it.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ignis_store::{ApiKeyRecord, NamespaceQuotas, NamespaceRecord, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::routes::namespace_error;

type ApiResult<T> = Result<T, ApiError>;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(ignis_controller::ControllerError::Internal(e.to_string()))
}

/// A namespace with its own quotas and those in force.
fn namespace_json(state: &AppState, record: &NamespaceRecord) -> Value {
    let q = state.controller.quotas_of(&record.name);
    json!({
        "name": record.name,
        "created_ms": record.created_ms,
        "quotas": record.quotas,
        "effective_quotas": q,
        "usage": {
            "instance_memory_mb": state.controller.invoker().namespace_memory(&record.name),
            "running": state.controller.running_in(&record.name),
        },
    })
}

pub async fn list_namespaces(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let namespaces: Vec<Value> = state
        .controller
        .list_namespaces()
        .await?
        .iter()
        .map(|n| namespace_json(&state, n))
        .collect();
    Ok(Json(json!({ "namespaces": namespaces })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceBody {
    quotas: Option<NamespaceQuotas>,
}

pub async fn put_namespace(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let quotas = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<NamespaceBody>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid namespace: {e}")))?
            .quotas
    };
    let (record, created) = state
        .controller
        .create_namespace(&ns, quotas)
        .await
        .map_err(|e| match e {
            ignis_controller::ControllerError::BadRequest(m) => {
                ApiError::invalid_field("namespace", m)
            }
            other => other.into(),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(namespace_json(&state, &record))).into_response())
}

pub async fn get_namespace(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let record = state
        .controller
        .get_namespace(&ns)
        .await
        .map_err(namespace_error)?;
    Ok(Json(namespace_json(&state, &record)))
}

pub async fn delete_namespace(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let functions = state
        .controller
        .delete_namespace(&ns)
        .await
        .map_err(namespace_error)?;
    state.keys.remove_namespace(&ns);
    tracing::info!(namespace = %ns, functions = functions.len(), "namespace deleted");
    Ok(Json(json!({ "deleted": ns, "functions": functions })))
}

/// A key as listed: never its secret nor its hash.
fn key_json(k: &ApiKeyRecord) -> Value {
    json!({
        "id": k.id,
        "namespace": k.namespace,
        "role": k.role.as_str(),
        "created_ms": k.created_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    role: String,
}

/// Makes, stores and accepts a key; the response is the only place its secret appears.
async fn make_key(state: &AppState, namespace: Option<String>, role: Role) -> ApiResult<Response> {
    let master = state.keys.master().clone();
    let store = state.controller.store().clone();
    let key = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let k = crate::generate_key(&master, namespace, role).map_err(|e| e.to_string())?;
        store.put_key(&k.record).map_err(|e| e.to_string())?;
        Ok(k)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    state.keys.insert(key.record.clone());
    tracing::info!(key = %key.record.id, role = role.as_str(), "API key created");
    let mut body = key_json(&key.record);
    body["key"] = Value::from(key.token);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn forget_key(state: &AppState, id: &str) -> ApiResult<()> {
    let store = state.controller.store().clone();
    let owned = id.to_string();
    tokio::task::spawn_blocking(move || store.delete_key(&owned))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    state.keys.remove(id);
    tracing::info!(key = %id, "API key revoked");
    Ok(())
}

fn key_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("key {id:?} not found"),
    )
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let KeyBody { role } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid key request: {e}")))?;
    let role = match Role::parse(&role) {
        Some(Role::Admin) => {
            return Err(ApiError::invalid_field(
                "role",
                "admin keys belong to no namespace: make them with POST /v1/keys",
            ));
        }
        Some(r) => r,
        None => {
            return Err(ApiError::invalid_field(
                "role",
                format!("unknown role {role:?}; expected owner, invoke or read"),
            ));
        }
    };
    make_key(&state, Some(ns), role).await
}

pub async fn list_keys(State(state): State<Arc<AppState>>, Path(ns): Path<String>) -> Json<Value> {
    let keys: Vec<Value> = state
        .keys
        .list()
        .iter()
        .filter(|k| k.namespace.as_deref() == Some(ns.as_str()))
        .map(key_json)
        .collect();
    Json(json!({ "keys": keys }))
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Path((ns, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let belongs = state
        .keys
        .list()
        .iter()
        .any(|k| k.id == id && k.namespace.as_deref() == Some(ns.as_str()));
    if !belongs {
        return Err(key_not_found(&id));
    }
    forget_key(&state, &id).await?;
    Ok(Json(json!({ "revoked": id })))
}

pub async fn list_all_keys(State(state): State<Arc<AppState>>) -> Json<Value> {
    let keys: Vec<Value> = state.keys.list().iter().map(key_json).collect();
    Json(json!({ "keys": keys }))
}

pub async fn create_admin_key(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    make_key(&state, None, Role::Admin).await
}

/// Held while an admin key may be revoked, so that two revocations at once cannot remove the
/// last two admin keys.
static ADMIN_KEY_CHANGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn revoke_any_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let _one_at_a_time = ADMIN_KEY_CHANGE.lock().await;
    let keys = state.keys.list();
    let Some(key) = keys.iter().find(|k| k.id == id) else {
        return Err(key_not_found(&id));
    };
    if key.role == Role::Admin && keys.iter().filter(|k| k.role == Role::Admin).count() == 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the last admin key cannot be revoked: make another first",
        ));
    }
    forget_key(&state, &id).await?;
    Ok(Json(json!({ "revoked": id })))
}

//! Route handlers of `/v1/…`. Each authenticates, turns the request into a controller call and
//! the answer into JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use ignis_controller::{CodeUpload, DeployRequest, InvokeOutcome};
use ignis_core::{FunctionSpec, Runtime, SpecError, Status};
use ignis_store::{ActivationFilter, Cursor};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// `name` or `name@3`.
fn split_version(name: &str) -> ApiResult<(&str, Option<u32>)> {
    match name.split_once('@') {
        None => Ok((name, None)),
        Some((n, v)) => {
            let v = v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                ApiError::bad_request(format!("invalid version {v:?} in {name:?}"))
            })?;
            Ok((n, Some(v)))
        }
    }
}

/// `overwrite=false` refuses to replace an existing thing (409); `true` or absent replaces.
pub(crate) fn create_only(overwrite: Option<&str>) -> ApiResult<bool> {
    match overwrite {
        None | Some("true") => Ok(false),
        Some("false") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "overwrite must be true or false, not {other:?}"
        ))),
    }
}

pub(crate) fn query_pairs(raw: Option<&str>) -> ApiResult<Vec<(String, String)>> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

/// A number in a query parameter that is not part of a function spec.
pub(crate) fn query_num<T: std::str::FromStr>(name: &str, v: &str) -> ApiResult<T> {
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid {name}: {v:?} is not a number")))
}

fn parse_num<T: std::str::FromStr>(field: &'static str, v: &str) -> ApiResult<T> {
    v.parse().map_err(|_| {
        ApiError::invalid_field(field, format!("invalid {field}: {v:?} is not a number"))
    })
}

pub async fn system_info(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    Ok(Json(state.info.clone()))
}

pub async fn system_instances(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let invoker = state.controller.invoker();
    let (used_mb, budget_mb) = invoker.memory();
    let stem: serde_json::Map<String, Value> = invoker
        .stem_cells_ready()
        .into_iter()
        .map(|(rt, n)| (rt.to_string(), Value::from(n)))
        .collect();
    Ok(Json(json!({
        "instances": invoker.instances(),
        "stem_cells": stem,
        "zygote": invoker.zygote_forks().map(|forks| json!({ "runtime": "python", "forks": forks })),
        "memory": { "used_mb": used_mb, "budget_mb": budget_mb },
    })))
}

/// This node's view of its cluster (docs/cluster.md), or `{"mode": "single"}`.
pub async fn system_cluster(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(
        state
            .controller
            .cluster_status()
            .unwrap_or_else(|| json!({ "mode": "single" })),
    )
}

pub async fn list_functions(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let functions = state.controller.list_functions(&ns).await?;
    Ok(Json(json!({ "functions": functions })))
}

pub async fn get_function(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (name, version) = split_version(&name)?;
    let f = state.controller.get_function(&ns, name, version).await?;
    let mut v = serde_json::to_value(&*f).unwrap_or_default();
    v["instances"] =
        serde_json::to_value(state.controller.invoker().counts(&f)).unwrap_or_default();
    Ok(Json(v))
}

pub async fn list_versions(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let versions = state.controller.list_versions(&ns, &name).await?;
    Ok(Json(json!({ "versions": versions })))
}

pub async fn get_version(
    State(state): State<Arc<AppState>>,
    Path((ns, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v: u32 = version
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid version {version:?}")))?;
    let f = state.controller.get_function(&ns, &name, Some(v)).await?;
    Ok(Json(serde_json::to_value(&*f).unwrap_or_default()))
}

pub async fn delete_function(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let versions = state.controller.delete_function(&ns, &name).await?;
    Ok(Json(json!({ "deleted": name, "versions": versions })))
}

/// JSON form of a deploy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    runtime: Option<String>,
    handler: Option<String>,
    memory_mb: Option<u32>,
    timeout_ms: Option<u64>,
    max_instances: Option<u32>,
    min_instances: Option<u32>,
    instance_concurrency: Option<u32>,
    retries: Option<u32>,
    on_success: Option<String>,
    on_failure: Option<String>,
    network: Option<String>,
    web: Option<ignis_core::Web>,
    #[serde(default)]
    cors_origins: Vec<String>,
    tmp_mb: Option<u32>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    code: Option<CodeBody>,
    #[serde(default)]
    components: Vec<String>,
    workflow: Option<ignis_core::WorkflowDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    zip: Option<String>,
    file: Option<String>,
    filename: Option<String>,
}

/// The parts of a spec a deploy may give; absent ones take their defaults.
#[derive(Default)]
struct SpecParts<'a> {
    runtime: Option<&'a str>,
    handler: Option<String>,
    memory_mb: Option<u32>,
    timeout_ms: Option<u64>,
    max_instances: Option<u32>,
    min_instances: Option<u32>,
    instance_concurrency: Option<u32>,
    retries: Option<u32>,
    on_success: Option<String>,
    on_failure: Option<String>,
    network: Option<&'a str>,
    web: Option<ignis_core::Web>,
    cors_origins: Vec<String>,
    tmp_mb: Option<u32>,
    env: BTreeMap<String, String>,
    components: Vec<String>,
    workflow: Option<ignis_core::WorkflowDef>,
}

fn spec_from(parts: SpecParts<'_>) -> ApiResult<FunctionSpec> {
    let SpecParts {
        runtime,
        handler,
        memory_mb,
        timeout_ms,
        max_instances,
        min_instances,
        instance_concurrency,
        retries,
        on_success,
        on_failure,
        network,
        web,
        cors_origins,
        tmp_mb,
        env,
        components,
        workflow,
    } = parts;
    let runtime: Runtime = runtime
        .ok_or_else(|| {
            ApiError::invalid_field(
                "runtime",
                "invalid runtime: required (python, node, exec, lambda, wasm, sequence or workflow)",
            )
        })?
        .parse()
        .map_err(|e: SpecError| ApiError::invalid_field(e.field, e.to_string()))?;
    let mut spec = FunctionSpec::new(runtime, handler.unwrap_or_default());
    if let Some(m) = memory_mb {
        spec.memory_mb = m;
    }
    if let Some(t) = timeout_ms {
        spec.timeout_ms = t;
    }
    if let Some(m) = max_instances {
        spec.max_instances = m;
    }
    if let Some(m) = min_instances {
        spec.min_instances = m;
    }
    if let Some(c) = instance_concurrency {
        spec.instance_concurrency = c;
    }
    if let Some(r) = retries {
        spec.retries = r;
    }
    spec.on_success = on_success;
    spec.on_failure = on_failure;
    if let Some(w) = web {
        spec.web = w;
    }
    spec.cors_origins = cors_origins;
    if let Some(n) = network {
        spec.network = n
            .parse()
            .map_err(|e: SpecError| ApiError::invalid_field(e.field, e.to_string()))?;
    }
    if let Some(t) = tmp_mb {
        spec.tmp_mb = t;
    }
    spec.env = env;
    spec.components = components;
    spec.workflow = workflow;
    Ok(spec)
}

fn b64(field: &'static str, s: &str) -> ApiResult<Bytes> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map(Bytes::from)
        .map_err(|e| ApiError::invalid_field(field, format!("invalid {field}: not base64 ({e})")))
}

pub async fn put_function(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let pairs = query_pairs(raw.as_deref())?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let create_only = create_only(get("overwrite"))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let (spec, code) = match content_type.as_str() {
        "application/json" => {
            let b: DeployBody = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid deploy body: {e}")))?;
            let code = match b.code {
                None => None,
                Some(CodeBody {
                    zip: Some(z),
                    file: None,
                    filename: None,
                }) => Some(CodeUpload::Zip(b64("code.zip", &z)?)),
                Some(CodeBody {
                    zip: None,
                    file: Some(f),
                    filename,
                }) => Some(CodeUpload::File {
                    filename,
                    bytes: b64("code.file", &f)?,
                }),
                Some(_) => {
                    return Err(ApiError::invalid_field(
                        "code",
                        "invalid code: give either {\"zip\": base64} or {\"file\": base64, \"filename\": name}",
                    ));
                }
            };
            let spec = spec_from(SpecParts {
                runtime: b.runtime.as_deref(),
                handler: b.handler,
                memory_mb: b.memory_mb,
                timeout_ms: b.timeout_ms,
                max_instances: b.max_instances,
                min_instances: b.min_instances,
                instance_concurrency: b.instance_concurrency,
                retries: b.retries,
                on_success: b.on_success,
                on_failure: b.on_failure,
                network: b.network.as_deref(),
                web: b.web,
                cors_origins: b.cors_origins,
                tmp_mb: b.tmp_mb,
                env: b.env,
                components: b.components,
                workflow: b.workflow,
            })?;
            (spec, code)
        }
        "application/zip" | "application/x-zip-compressed" | "application/octet-stream" => {
            let mut env = BTreeMap::new();
            for (_, v) in pairs.iter().filter(|(k, _)| k == "env") {
                let (ek, ev) = v.split_once('=').ok_or_else(|| {
                    ApiError::invalid_field("env", format!("invalid env: {v:?} is not KEY=VALUE"))
                })?;
                env.insert(ek.to_string(), ev.to_string());
            }
            let known = [
                "runtime",
                "handler",
                "memory_mb",
                "timeout_ms",
                "max_instances",
                "min_instances",
                "instance_concurrency",
                "retries",
                "on_success",
                "on_failure",
                "network",
                "web",
                "cors_origin",
                "tmp_mb",
                "env",
                "filename",
                "overwrite",
            ];
            if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {k:?}"
                )));
            }
            let spec = spec_from(SpecParts {
                runtime: get("runtime"),
                handler: get("handler").map(str::to_string),
                memory_mb: get("memory_mb")
                    .map(|v| parse_num("memory_mb", v))
                    .transpose()?,
                timeout_ms: get("timeout_ms")
                    .map(|v| parse_num("timeout_ms", v))
                    .transpose()?,
                max_instances: get("max_instances")
                    .map(|v| parse_num("max_instances", v))
                    .transpose()?,
                min_instances: get("min_instances")
                    .map(|v| parse_num("min_instances", v))
                    .transpose()?,
                instance_concurrency: get("instance_concurrency")
                    .map(|v| parse_num("instance_concurrency", v))
                    .transpose()?,
                retries: get("retries")
                    .map(|v| parse_num("retries", v))
                    .transpose()?,
                on_success: get("on_success").map(str::to_string),
                on_failure: get("on_failure").map(str::to_string),
                network: get("network"),
                web: get("web")
                    .map(|v| {
                        v.parse()
                            .map_err(|e: SpecError| ApiError::invalid_field(e.field, e.to_string()))
                    })
                    .transpose()?,
                cors_origins: pairs
                    .iter()
                    .filter(|(k, _)| k == "cors_origin")
                    .map(|(_, v)| v.clone())
                    .collect(),
                tmp_mb: get("tmp_mb").map(|v| parse_num("tmp_mb", v)).transpose()?,
                env,
                components: Vec::new(),
                workflow: None,
            })?;
            let code = if content_type == "application/octet-stream" {
                CodeUpload::File {
                    filename: get("filename").map(str::to_string),
                    bytes: body,
                }
            } else {
                CodeUpload::Zip(body)
            };
            (spec, Some(code))
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type {other:?} is not accepted: send application/json, application/zip or application/octet-stream"
                ),
            ));
        }
    };
    let (fv, created) = state
        .controller
        .deploy(DeployRequest {
            namespace: ns,
            name,
            spec,
            code,
            create_only,
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(fv)).into_response())
}

fn status_code(s: Status) -> StatusCode {
    match s {
        Status::Success => StatusCode::OK,
        Status::ApplicationError | Status::Crash | Status::Oom => StatusCode::BAD_GATEWAY,
        Status::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Status::PlatformError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn outcome_response(o: InvokeOutcome) -> Response {
    let mut resp = if o.status == Status::Success {
        let json = o.json || serde_json::from_slice::<serde::de::IgnoredAny>(&o.body).is_ok();
        let ct = if json {
            "application/json"
        } else {
            "application/octet-stream"
        };
        ([(header::CONTENT_TYPE, ct)], o.body).into_response()
    } else {
        let e = o.error.clone();
        let (kind, message, stack) = match e {
            Some(e) => (e.kind, e.message, e.stack),
            None => (String::new(), o.status.to_string(), None),
        };
        let mut err = ApiError::new(status_code(o.status), o.status.as_str(), message)
            .with("activation_id", o.activation_id.to_string())
            .with("type", kind);
        if let Some(s) = stack {
            err = err.with("stack", s);
        }
        err.into_response()
    };
    let h = resp.headers_mut();
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    put("x-ignis-activation-id", o.activation_id.to_string());
    put("x-ignis-status", o.status.to_string());
    put("x-ignis-cold", o.cold.to_string());
    put("x-ignis-duration-ms", o.duration_ms.to_string());
    put("x-ignis-init-ms", o.init_ms.to_string());
    put("x-ignis-version", o.version.to_string());
    put("x-ignis-instance", o.instance);
    resp
}

pub async fn invoke(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    request_id: Option<axum::Extension<crate::RequestId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let id = crate::RequestId::of(request_id);
    let body = body?;
    let (name, mut version) = split_version(&name)?;
    let mut blocking = true;
    let mut callback = None;
    if raw.is_some() {
        for (k, v) in query_pairs(raw.as_deref())? {
            match k.as_str() {
                "version" => version = Some(query_num("version", &v)?),
                "callback" => callback = Some(v),
                "blocking" => {
                    blocking = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "blocking must be true or false, not {other:?}"
                            )));
                        }
                    }
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter {other:?}"
                    )));
                }
            }
        }
    }
    if blocking && callback.is_some() {
        return Err(ApiError::bad_request(
            "a callback needs an asynchronous invocation (blocking=false)",
        ));
    }
    if !blocking {
        let key = headers
            .get("idempotency-key")
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| ApiError::bad_request("the Idempotency-Key header is not text"))
            })
            .transpose()?;
        let accepted = state
            .controller
            .submit_async_as(&ns, name, version, body, key, callback, id)
            .await?;
        let id = accepted.activation_id.to_string();
        let mut resp = (
            StatusCode::ACCEPTED,
            Json(json!({ "activation_id": id, "status": accepted.state, "new": accepted.new })),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-ignis-activation-id", v);
        }
        return Ok(resp);
    }
    let outcome = state
        .controller
        .invoke_as(&ns, name, version, body, id)
        .await?;
    Ok(outcome_response(outcome))
}

pub async fn list_activations(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let mut filter = ActivationFilter {
        limit: 50,
        ..Default::default()
    };
    for (k, v) in query_pairs(raw.as_deref())? {
        match k.as_str() {
            "function" => filter.function = Some(v),
            "trigger" => filter.trigger = Some(v),
            "status" => {
                filter.status = Some(v.parse().map_err(|e: String| ApiError::bad_request(e))?)
            }
            "since" => filter.since = Some(query_num("since", &v)?),
            "until" => filter.until = Some(query_num("until", &v)?),
            "limit" => {
                let l: usize = query_num("limit", &v)?;
                if !(1..=200).contains(&l) {
                    return Err(ApiError::bad_request("limit must be between 1 and 200"));
                }
                filter.limit = l;
            }
            "cursor" => {
                filter.cursor = Some(
                    Cursor::decode(&v).ok_or_else(|| ApiError::bad_request("invalid cursor"))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let page = state.controller.list_activations(&ns, filter).await?;
    Ok(Json(json!({
        "activations": page.activations,
        "next_cursor": page.next.map(|c| c.encode()),
    })))
}

pub async fn list_dead_letters(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let items: Vec<Value> = state
        .controller
        .dead_letters(&ns)
        .await?
        .into_iter()
        .map(|q| {
            json!({
                "id": q.id,
                "function": q.function,
                "version": q.version,
                "attempts": q.attempts,
                "last_error": q.last_error,
                "created_ms": q.created_ms,
                "event_bytes": q.event.len(),
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": items })))
}

pub async fn replay_dead_letter(
    State(state): State<Arc<AppState>>,
    Path((ns, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = state.controller.replay(&ns, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "activation_id": id, "status": "queued" })),
    )
        .into_response())
}

pub async fn get_activation(
    State(state): State<Arc<AppState>>,
    Path((ns, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let a = state.controller.get_activation(&ns, &id).await?;
    Ok(Json(serde_json::to_value(a).unwrap_or_default()))
}

pub async fn activation_logs(
    State(state): State<Arc<AppState>>,
    Path((ns, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let a = state.controller.get_activation(&ns, &id).await?;
    Ok(Json(
        json!({ "id": a.id, "logs": a.logs, "truncated": a.logs_truncated }),
    ))
}

/// `GET /v1/namespaces/{ns}/executions`: workflow executions, newest first, without steps.
pub async fn list_executions(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let (mut function, mut limit) = (None, 50);
    for (k, v) in query_pairs(raw.as_deref())? {
        match k.as_str() {
            "function" => function = Some(v),
            "limit" => {
                limit = query_num("limit", &v)?;
                if !(1..=200).contains(&limit) {
                    return Err(ApiError::bad_request("limit must be between 1 and 200"));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let list = state
        .controller
        .list_executions(&ns, function, limit)
        .await?;
    Ok(Json(json!({ "executions": list })))
}

/// `GET /v1/namespaces/{ns}/executions/{id}`: one execution with its ended steps.
pub async fn get_execution(
    State(state): State<Arc<AppState>>,
    Path((ns, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let e = state.controller.get_execution(&ns, &id).await?;
    Ok(Json(serde_json::to_value(e).unwrap_or_default()))
}

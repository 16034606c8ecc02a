//! Routes of a namespace's data (docs/baas.md): the key-value store under
//! `/v1/namespaces/{ns}/kv/…`, buckets and objects under `/v1/namespaces/{ns}/buckets/…`.
//!
//! Object bodies stream both ways: an upload goes to the controller frame by frame (no body
//! limit on that route, 5 GiB enforced while counting), a download is read from the open file.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use ignis_controller::{ControllerError, ObjectAttributes};
use ignis_store::{Expect, ObjectMeta};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::handlers::{query_num, query_pairs};

type ApiResult<T> = Result<T, ApiError>;

/// Prefix of the headers carrying user metadata of objects in this API.
pub(crate) const META_PREFIX: &str = "x-ignis-meta-";

/// Entries or objects listed per page when the client does not say.
const DEFAULT_LIMIT: usize = 100;

/// Known query parameters, each parsed once; an unknown one is a 400.
fn query(raw: Option<&str>, known: &[&str]) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in query_pairs(raw)? {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?}"
            )));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// The compare-and-swap condition: `if_version=N` / `if_absent=true` in the query, or
/// `If-Match: "N"` / `If-None-Match: *`.
fn expect(q: &BTreeMap<String, String>, headers: &HeaderMap) -> ApiResult<Expect> {
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_string());
    let if_none = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "*");
    let version = q.get("if_version").cloned().or(if_match);
    let absent = if_none || q.get("if_absent").is_some_and(|v| v == "true");
    match (version, absent) {
        (Some(_), true) => Err(ApiError::bad_request(
            "if_version and if_absent exclude each other",
        )),
        (Some(v), false) => Ok(Expect::Version(query_num("if_version", &v)?)),
        (None, true) => Ok(Expect::Absent),
        (None, false) => Ok(Expect::Any),
    }
}

fn ttl(q: &BTreeMap<String, String>) -> ApiResult<Option<u64>> {
    q.get("ttl").map(|v| query_num("ttl", v)).transpose()
}

fn limit(q: &BTreeMap<String, String>) -> ApiResult<usize> {
    q.get("limit")
        .map(|v| query_num("limit", v))
        .transpose()
        .map(|l| l.unwrap_or(DEFAULT_LIMIT))
}

fn version_headers(version: u64) -> [(HeaderName, HeaderValue); 2] {
    [
        (HeaderName::from_static("x-ignis-version"), version.into()),
        (
            header::ETAG,
            HeaderValue::from_str(&format!("\"{version}\"")).expect("digits"),
        ),
    ]
}

pub async fn kv_get(
    State(state): State<Arc<AppState>>,
    Path((ns, key)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    query(raw.as_deref(), &[])?;
    let e = state.controller.kv_get(&ns, &key).await?;
    let mut resp = (
        version_headers(e.version),
        [(header::CONTENT_TYPE, "application/octet-stream")],
        e.value,
    )
        .into_response();
    if let Some(ms) = e.expires_ms {
        resp.headers_mut()
            .insert("x-ignis-expires-ms", HeaderValue::from(ms));
    }
    Ok(resp)
}

pub async fn kv_put(
    State(state): State<Arc<AppState>>,
    Path((ns, key)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let q = query(raw.as_deref(), &["ttl", "if_version", "if_absent"])?;
    let expect = expect(&q, &headers)?;
    let version = state
        .controller
        .kv_put(&ns, &key, body?, ttl(&q)?, expect)
        .await?;
    Ok((
        version_headers(version),
        Json(json!({"key": key, "version": version})),
    )
        .into_response())
}

pub async fn kv_delete(
    State(state): State<Arc<AppState>>,
    Path((ns, key)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let q = query(raw.as_deref(), &["if_version"])?;
    let expect = expect(&q, &headers)?;
    state.controller.kv_delete(&ns, &key, expect).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementBody {
    increment: i64,
    #[serde(default)]
    ttl: Option<u64>,
}

pub async fn kv_increment(
    State(state): State<Arc<AppState>>,
    Path((ns, key)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    query(raw.as_deref(), &[])?;
    let body: IncrementBody = serde_json::from_slice(&body?).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"increment\": <integer>, \"ttl\": <seconds, optional>}}: {e}"
        ))
    })?;
    let (value, version) = state
        .controller
        .kv_increment(&ns, &key, body.increment, body.ttl)
        .await?;
    Ok((
        version_headers(version),
        Json(json!({"key": key, "value": value, "version": version})),
    )
        .into_response())
}

pub async fn kv_list(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let q = query(raw.as_deref(), &["prefix", "after", "limit"])?;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let (entries, next) = state
        .controller
        .kv_list(&ns, &prefix, q.get("after").cloned(), limit(&q)?)
        .await?;
    Ok(Json(json!({"keys": entries, "next": next})))
}

pub async fn list_buckets(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({"buckets": state.controller.list_buckets(&ns).await?}),
    ))
}

pub async fn create_bucket(
    State(state): State<Arc<AppState>>,
    Path((ns, bucket)): Path<(String, String)>,
) -> ApiResult<Response> {
    let new = state.controller.create_bucket(&ns, &bucket).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"name": bucket, "created": new}))).into_response())
}

pub async fn delete_bucket(
    State(state): State<Arc<AppState>>,
    Path((ns, bucket)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.controller.delete_bucket(&ns, &bucket).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_objects(
    State(state): State<Arc<AppState>>,
    Path((ns, bucket)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let q = query(raw.as_deref(), &["prefix", "after", "limit"])?;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let (objects, next) = state
        .controller
        .list_objects(&ns, &bucket, &prefix, q.get("after").cloned(), limit(&q)?)
        .await?;
    Ok(Json(json!({"objects": objects, "next": next})))
}

/// User metadata from headers starting with `prefix` (lowercase names, UTF-8 values).
pub(crate) fn user_metadata(
    headers: &HeaderMap,
    prefix: &str,
) -> ApiResult<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    for (name, value) in headers {
        if let Some(k) = name.as_str().strip_prefix(prefix) {
            let v = value.to_str().map_err(|_| {
                ApiError::bad_request(format!("metadata header {name} is not visible ASCII"))
            })?;
            meta.insert(k.to_string(), v.to_string());
        }
    }
    let size: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > 2048 {
        return Err(ApiError::bad_request(
            "user metadata may have at most 2 KiB",
        ));
    }
    Ok(meta)
}

/// Streams a request body into an object and records it.
pub(crate) async fn upload(
    state: &AppState,
    ns: &str,
    bucket: &str,
    key: &str,
    headers: &HeaderMap,
    body: Body,
    meta_prefix: &str,
) -> Result<ObjectMeta, ControllerError> {
    let metadata =
        user_metadata(headers, meta_prefix).map_err(|e| ControllerError::BadRequest(e.message))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut up = state.controller.begin_upload(ns, bucket, key).await?;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ControllerError::BadRequest(format!("the request body could not be read: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            up.write(data).await?;
        }
    }
    state
        .controller
        .finish_upload(
            ns,
            bucket,
            key,
            up,
            ObjectAttributes {
                content_type,
                metadata,
            },
        )
        .await
}

pub async fn put_object(
    State(state): State<Arc<AppState>>,
    Path((ns, bucket, key)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ObjectMeta>> {
    query(raw.as_deref(), &[])?;
    let meta = upload(&state, &ns, &bucket, &key, &headers, body, META_PREFIX).await?;
    Ok(Json(meta))
}

/// The headers describing an object: type, length, ETag (quoted, as S3 sends it),
/// Last-Modified and user metadata under `meta_prefix`.
pub(crate) fn object_headers(meta: &ObjectMeta, meta_prefix: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.etag)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(meta.modified_ms)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    for (k, v) in &meta.metadata {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(format!("{meta_prefix}{k}").as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.insert(name, value);
        }
    }
    h
}

/// An RFC 7231 date.
pub(crate) fn http_date(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The byte range (first, last, inclusive) a `Range: bytes=…` header asks of `size` bytes:
/// `Ok(None)` without one (or with several ranges, answered whole, as HTTP allows), `Err` for
/// a range outside the object (416).
pub(crate) fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => (first, last.min(size.saturating_sub(1))),
        (Ok(first), Err(_)) if b.is_empty() => (first, size.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => {
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        _ => return Err(()),
    };
    if size == 0 || range.0 >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// A response streaming an open object file, or the part of it `range` asks (206).
pub(crate) fn stream_file(
    mut file: std::fs::File,
    mut headers: HeaderMap,
    head: bool,
    range: Option<(u64, u64)>,
    size: u64,
) -> Response {
    use std::io::Seek;
    use tokio::io::AsyncReadExt;
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let mut status = StatusCode::OK;
    let len = match range {
        Some((first, last)) => {
            status = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
            if file.seek(std::io::SeekFrom::Start(first)).is_err() {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            last - first + 1
        }
        None => size,
    };
    let body = if head {
        Body::empty()
    } else {
        let file = tokio::fs::File::from_std(file).take(len);
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// 416 for a range outside the object.
pub(crate) fn range_not_satisfiable(size: u64) -> Response {
    let mut r = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        format!("the object has {size} bytes"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

pub async fn get_object(
    State(state): State<Arc<AppState>>,
    Path((ns, bucket, key)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    method: axum::http::Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    query(raw.as_deref(), &[])?;
    if method == axum::http::Method::HEAD {
        let meta = state.controller.head_object(&ns, &bucket, &key).await?;
        let mut resp = Response::new(Body::empty());
        *resp.headers_mut() = object_headers(&meta, META_PREFIX);
        return Ok(resp);
    }
    let (meta, file) = state.controller.open_object(&ns, &bucket, &key).await?;
    let Ok(range) = byte_range(&headers, meta.size) else {
        return Ok(range_not_satisfiable(meta.size));
    };
    let h = object_headers(&meta, META_PREFIX);
    Ok(stream_file(file, h, false, range, meta.size))
}

pub async fn delete_object(
    State(state): State<Arc<AppState>>,
    Path((ns, bucket, key)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    state.controller.delete_object(&ns, &bucket, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

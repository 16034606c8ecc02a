//! Web functions: `ANY /fn/{namespace}/{function}/{path…}` turns an HTTP request into an event
//! shaped like a Lambda function URL request (API Gateway payload 2.0) and the function's
//! `{statusCode, headers, body, isBase64Encoded, cookies}` into the HTTP response. A result
//! without `statusCode` is sent as JSON with 200. Functions opt in with `web: true` (callers
//! need a key) or `web: "public"`, and may allow browser origins with `cors_origins`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use ignis_core::{FunctionSpec, Status, Web};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
        || matches!(
            ct.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | ""
        )
}

/// The Lambda function URL event of a request.
pub(crate) fn event(
    method: &Method,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Value {
    let mut hdrs = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == header::COOKIE {
            cookies.extend(v.split(';').map(|c| Value::from(c.trim())));
            continue;
        }
        match hdrs.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                hdrs.insert(name.as_str().to_string(), Value::from(v));
            }
        }
    }
    let raw_query = uri.query().unwrap_or("");
    let mut query = Map::new();
    for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(raw_query).unwrap_or_default()
    {
        match query.get_mut(&k) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                query.insert(k, Value::from(v));
            }
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(text) if is_text(content_type) => (Value::from(text), false),
        _ => (
            Value::from(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let mut e = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": hdrs,
        "requestContext": {
            "http": {
                "method": method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "userAgent": headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": request_id,
            "timeEpoch": ignis_core::now_ms(),
        },
        "isBase64Encoded": base64,
    });
    if !cookies.is_empty() {
        e["cookies"] = Value::from(cookies);
    }
    if !query.is_empty() {
        e["queryStringParameters"] = Value::Object(query);
    }
    if body.as_str() != Some("") || base64 {
        e["body"] = body;
    }
    e
}

/// The HTTP response a function's result asks for.
pub(crate) fn response(result: &[u8]) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(result).ok();
    let Some(Value::Object(obj)) = parsed.as_ref().filter(|v| v.get("statusCode").is_some()) else {
        // A plain result: JSON if it is JSON, else the bytes as they are.
        let ct = if parsed.is_some() {
            "application/json"
        } else {
            "application/octet-stream"
        };
        return ([(header::CONTENT_TYPE, ct)], Bytes::copy_from_slice(result)).into_response();
    };
    let status = obj
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|c| StatusCode::from_u16(c as u16).ok());
    let Some(status) = status else {
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "invalid_response",
            "the function's statusCode is not an HTTP status",
        )
        .into_response();
    };
    let body = match obj.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if obj.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(b) => b,
                Err(_) => {
                    return ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "invalid_response",
                        "the function's body is marked base64 but is not",
                    )
                    .into_response();
                }
            }
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Some(Value::Object(headers)) = obj.get("headers") {
        for (k, v) in headers {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(k.as_str()), HeaderValue::from_str(&v))
            {
                h.insert(name, value);
            }
        }
    }
    if let Some(Value::Array(cookies)) = obj.get("cookies") {
        for c in cookies.iter().filter_map(Value::as_str) {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.append(header::SET_COOKIE, v);
            }
        }
    }
    resp
}

/// The origin to allow for this request, if the function allows it.
fn allowed_origin(spec: &FunctionSpec, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let o = origin.to_str().ok()?;
    if spec.cors_origins.iter().any(|a| a == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    spec.cors_origins
        .iter()
        .any(|a| a == o)
        .then(|| origin.clone())
}

/// `ANY /fn/{ns}/{name}` and `/fn/{ns}/{name}/{*path}`.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(params): Path<Vec<(String, String)>>,
    method: Method,
    uri: Uri,
    request_id: Option<axum::Extension<crate::RequestId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    let (ns, name) = (
        get("ns").unwrap_or_default(),
        get("name").unwrap_or_default(),
    );
    let path = format!("/{}", get("path").unwrap_or(""));
    let not_web = || ApiError::not_found(format!("{name:?} is not a web function"));
    let function = match state.controller.get_function(ns, name, None).await {
        Ok(f) => f,
        Err(ignis_controller::ControllerError::NotFound(_)) => return Err(not_web()),
        Err(e) => return Err(e.into()),
    };
    if function.spec.web == Web::Off {
        return Err(not_web());
    }
    let origin = allowed_origin(&function.spec, &headers);
    // A browser's preflight: answered here, the function is not run.
    if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Some(o) = origin {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
            );
            if let Some(req) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, req.clone());
            }
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        return Ok(resp);
    }
    if function.spec.web == Web::On {
        state
            .keys
            .authorize(&headers, crate::Access::Invoke, Some(ns))
            .await?;
    }
    let body = body?;
    let id = crate::RequestId::of(request_id);
    let event = event(&method, &path, &uri, &headers, &body, &id.to_string());
    let event = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
    let outcome = state
        .controller
        .invoke_as(ns, name, None, event, id)
        .await?;
    let mut resp = if outcome.status == Status::Success {
        response(&outcome.body)
    } else {
        crate::handlers::outcome_response(outcome.clone())
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&outcome.activation_id.to_string()) {
        h.insert("x-ignis-activation-id", v);
    }
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_request() {
        let uri: Uri = "/fn/default/f/a/b?x=1&y=2&x=3".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        let e = event(&Method::POST, "/a/b", &uri, &headers, b"{\"k\":1}", "rid");
        assert_eq!(e["rawPath"], "/a/b");
        assert_eq!(e["queryStringParameters"]["x"], "1,3");
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(e["body"], "{\"k\":1}");
        assert_eq!(e["isBase64Encoded"], false);
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        let mut bin = HeaderMap::new();
        bin.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        let e = event(&Method::PUT, "/", &uri, &bin, &[0, 159, 146, 150], "rid");
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "AJ+Slg==");
    }

    #[test]
    fn results_become_responses() {
        let r = response(
            br#"{"statusCode": 201, "headers": {"x-a": "1"}, "body": "made", "cookies": ["s=1"]}"#,
        );
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()[header::SET_COOKIE], "s=1");
        let r = response(br#"{"statusCode": 200, "body": "AAE=", "isBase64Encoded": true}"#);
        assert_eq!(r.status(), 200);
        let r = response(br#"{"plain": true}"#);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let r = response(br#"{"statusCode": "nope"}"#);
        assert_eq!(r.status(), 502);
    }
}

//! How an event becomes the HTTP request a `wasi:http` component handles, and its response the
//! activation's result.
//!
//! - An **HTTP event** — what the gateway makes of a request to a web function, or any event
//!   shaped like a Lambda function URL request (`"version": "2.0"` and
//!   `requestContext.http.method`) — becomes that request: method, `rawPath`,
//!   `rawQueryString`, headers, cookies and body (base64-decoded if `isBase64Encoded`). The
//!   response becomes `{"statusCode", "headers", "cookies", "body", "isBase64Encoded"}`,
//!   which the gateway turns back into an HTTP response; any status is a successful
//!   invocation, as it is for a Lambda function behind a function URL.
//! - **Any other event** becomes `POST /` with the event as body (`content-type:
//!   application/json` if it is JSON, else `application/octet-stream`). The response body is
//!   the result; a status of 400 or more makes the activation an `application_error`
//!   (`HttpStatus`).

use std::convert::Infallible;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method};
use ignis_core::{MAX_RESULT_BYTES, Status};
use serde_json::{Map, Value, json};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::run::End;

/// The request a component is given.
pub(crate) struct Request {
    method: Method,
    uri: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// It came from an HTTP event: answer with a `{statusCode, …}` result.
    web: bool,
}

/// The body of a request: the whole event's body, at once.
pub(crate) type RequestBody =
    http_body_util::combinators::MapErr<Full<Bytes>, fn(Infallible) -> wasmtime_wasi_http::Error>;

/// What the component answered.
pub(crate) struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// Longest part of an error response's body quoted in the activation's error.
const QUOTED_BODY: usize = 1024;

fn is_http_event(event: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"requestContext\"";
    event
        .first()
        .is_some_and(|&b| b == b'{' || b.is_ascii_whitespace())
        && event.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

impl Request {
    /// The request for an event: the HTTP request it describes, or `POST /` carrying it.
    pub fn from_event(event: &Bytes) -> Self {
        if is_http_event(event)
            && let Some(req) = Self::from_http_event(event)
        {
            return req;
        }
        let json = serde_json::from_slice::<serde::de::IgnoredAny>(event).is_ok();
        let content_type = if json {
            "application/json"
        } else {
            "application/octet-stream"
        };
        Request {
            method: Method::POST,
            uri: "http://localhost/".into(),
            headers: vec![("content-type".into(), content_type.into())],
            body: event.clone(),
            web: false,
        }
    }

    fn from_http_event(event: &[u8]) -> Option<Self> {
        let e: Value = serde_json::from_slice(event).ok()?;
        if e.get("version")?.as_str()? != "2.0" {
            return None;
        }
        let method = e.pointer("/requestContext/http/method")?.as_str()?;
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        let str_of = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
        let mut path = str_of("rawPath").to_string();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let query = str_of("rawQueryString");
        let mut headers = Vec::new();
        let mut host = "localhost".to_string();
        if let Some(Value::Object(h)) = e.get("headers") {
            for (k, v) in h {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match k.to_ascii_lowercase().as_str() {
                    "host" => host = v,
                    // The body is whole, whatever the original framing was.
                    "transfer-encoding" | "content-length" => {}
                    _ => headers.push((k.clone(), v)),
                }
            }
        }
        if let Some(Value::Array(cookies)) = e.get("cookies") {
            let c: Vec<&str> = cookies.iter().filter_map(Value::as_str).collect();
            if !c.is_empty() {
                headers.push(("cookie".into(), c.join("; ")));
            }
        }
        let body = match e.get("body") {
            Some(Value::String(s)) if e.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
                Bytes::from(base64::engine::general_purpose::STANDARD.decode(s).ok()?)
            }
            Some(Value::String(s)) => Bytes::from(s.clone()),
            _ => Bytes::new(),
        };
        let uri = if query.is_empty() {
            format!("http://{host}{path}")
        } else {
            format!("http://{host}{path}?{query}")
        };
        Some(Request {
            method,
            uri,
            headers,
            body,
            web: true,
        })
    }

    /// The hyper request handed to wasmtime-wasi-http.
    pub fn to_hyper(&self) -> wasmtime::Result<hyper::Request<RequestBody>> {
        let never: fn(Infallible) -> wasmtime_wasi_http::Error = |e| match e {};
        let mut b = hyper::Request::builder()
            .method(self.method.clone())
            .uri(&self.uri);
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        b.body(Full::new(self.body.clone()).map_err(never))
            .map_err(|e| wasmtime::format_err!("the event is not a valid HTTP request: {e}"))
    }

    /// The end of an invocation whose component answered (or failed to).
    pub fn end(&self, answer: Result<Answer, End>) -> End {
        let a = match answer {
            Ok(a) => a,
            Err(end) => return end,
        };
        if self.web {
            return End::Done(web_result(&a));
        }
        if a.status >= 400 {
            let quoted = &a.body[..a.body.len().min(QUOTED_BODY)];
            let mut message = format!("the component answered HTTP {}", a.status);
            if !quoted.is_empty() {
                message.push_str(": ");
                message.push_str(&String::from_utf8_lossy(quoted));
            }
            return End::Classified(Status::ApplicationError, "HttpStatus", message);
        }
        End::Done(a.body)
    }
}

/// `{statusCode, headers, cookies, body, isBase64Encoded}` of a response.
fn web_result(a: &Answer) -> Bytes {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &a.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == hyper::header::SET_COOKIE {
            cookies.push(Value::from(v));
            continue;
        }
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::from(v));
            }
        }
    }
    let (body, base64) = match std::str::from_utf8(&a.body) {
        Ok(text) => (text.to_string(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&a.body),
            true,
        ),
    };
    let mut r = json!({
        "statusCode": a.status,
        "headers": headers,
        "body": body,
        "isBase64Encoded": base64,
    });
    if !cookies.is_empty() {
        r["cookies"] = Value::from(cookies);
    }
    Bytes::from(serde_json::to_vec(&r).unwrap_or_default())
}

type Outparam =
    tokio::sync::oneshot::Receiver<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>;

fn answer_failed(kind: &'static str, message: String) -> End {
    End::Classified(Status::ApplicationError, kind, message)
}

/// Waits for the response the component sets and reads its body, at most the result limit.
pub(crate) async fn collect_response(rx: Outparam) -> Result<Answer, End> {
    let resp = match rx.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(code)) => {
            return Err(answer_failed(
                "HttpError",
                format!("the component answered with the error {code:?}"),
            ));
        }
        Err(_) => {
            return Err(answer_failed(
                "NoResponse",
                "the component returned without setting a response (response-outparam.set)".into(),
            ));
        }
    };
    let (parts, mut body) = resp.into_parts();
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            answer_failed(
                "HttpError",
                format!("the component's response body failed: {e:?}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = first.as_ref().map_or(0, Bytes::len) + rest.len() + data.len();
        if len > MAX_RESULT_BYTES {
            return Err(answer_failed(
                "ResultTooLarge",
                format!("the component's response body is more than {MAX_RESULT_BYTES} bytes"),
            ));
        }
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    let body = if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        rest.freeze()
    };
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_of(r: &Request) -> Vec<(&str, &str)> {
        r.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn plain_events_are_posted() {
        let r = Request::from_event(&Bytes::from_static(br#"{"a":1}"#));
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.uri, "http://localhost/");
        assert_eq!(headers_of(&r), [("content-type", "application/json")]);
        assert!(!r.web);
        let r = Request::from_event(&Bytes::from_static(b"\xff raw"));
        assert_eq!(
            headers_of(&r),
            [("content-type", "application/octet-stream")]
        );
        // Mentions requestContext but is not an HTTP event.
        let r = Request::from_event(&Bytes::from_static(br#"{"requestContext": 1}"#));
        assert!(!r.web);
        assert_eq!(&r.body[..], br#"{"requestContext": 1}"#);
    }

    #[test]
    fn http_events_become_requests() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/a/b",
            "rawQueryString": "x=1",
            "headers": {"host": "example.com", "x-k": "v", "content-length": "3"},
            "cookies": ["a=1", "b=2"],
            "requestContext": {"http": {"method": "PUT"}},
            "body": "AAEC",
            "isBase64Encoded": true,
        });
        let r = Request::from_event(&Bytes::from(event.to_string()));
        assert!(r.web);
        assert_eq!(r.method, Method::PUT);
        assert_eq!(r.uri, "http://example.com/a/b?x=1");
        assert_eq!(headers_of(&r), [("x-k", "v"), ("cookie", "a=1; b=2")]);
        assert_eq!(&r.body[..], &[0, 1, 2]);
        let hyper_req = r.to_hyper().unwrap();
        assert_eq!(hyper_req.uri().path(), "/a/b");
    }

    #[test]
    fn answers_become_results() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", "1".parse().unwrap());
        headers.append("x-a", "2".parse().unwrap());
        headers.append("set-cookie", "s=1".parse().unwrap());
        let a = Answer {
            status: 201,
            headers,
            body: Bytes::from_static(&[0xff, 0]),
        };
        let v: Value = serde_json::from_slice(&web_result(&a)).unwrap();
        assert_eq!(v["statusCode"], 201);
        assert_eq!(v["headers"]["x-a"], "1, 2");
        assert_eq!(v["cookies"], json!(["s=1"]));
        assert_eq!(v["isBase64Encoded"], true);
        assert_eq!(v["body"], "/wA=");

        let plain = Request::from_event(&Bytes::from_static(b"{}"));
        let teapot = Answer {
            status: 418,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"short and stout"),
        };
        match plain.end(Ok(teapot)) {
            End::Classified(Status::ApplicationError, "HttpStatus", m) => {
                assert_eq!(m, "the component answered HTTP 418: short and stout")
            }
            _ => panic!("a 418 is an application error"),
        }
    }
}

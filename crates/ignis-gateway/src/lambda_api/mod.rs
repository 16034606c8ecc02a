//! The AWS Lambda–compatible API under `/2015-03-31/functions…`, so that the AWS SDKs and CLI
//! work with their endpoint URL pointed at Ignis: CreateFunction, GetFunction,
//! GetFunctionConfiguration, ListFunctions, UpdateFunctionCode, UpdateFunctionConfiguration,
//! DeleteFunction, PublishVersion, ListVersionsByFunction (`functions.rs`) and Invoke
//! (`invoke.rs`); the configuration Lambda shows and takes is in `config.rs`.
//!
//! Requests are authenticated with AWS Signature Version 4 ([`crate::sigv4`]): the access key
//! id is an Ignis key's id, the secret its secret. The account is the key's namespace (the
//! default namespace for a key of every namespace); the region is the server's. Errors have
//! Lambda's shape — status, `x-amzn-ErrorType` and `{"Type", "message"}` — so the SDKs raise
//! their usual exceptions. Every Ignis version is a Lambda version: `$LATEST` is the latest one,
//! and PublishVersion names it.

mod config;
mod functions;
mod invoke;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ignis_controller::ControllerError;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Access, Principal};
use crate::sigv4;

/// Largest CreateFunction/UpdateFunctionCode body (a 50 MB zip in base64, in JSON).
const MAX_BODY_BYTES: usize = crate::MAX_DEPLOY_BYTES;
/// The path prefix of the API.
pub(crate) const PREFIX: &str = "/2015-03-31/functions";

/// An error in Lambda's shape.
#[derive(Debug)]
pub(crate) struct LambdaError {
    pub status: StatusCode,
    /// The exception name (`ResourceNotFoundException`…).
    pub code: &'static str,
    pub message: String,
    /// `TooManyRequestsException`'s reason.
    pub reason: Option<&'static str>,
    /// `Retry-After` of a 429, in seconds (1 if not set).
    pub retry_after_secs: Option<u64>,
}

impl LambdaError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        LambdaError {
            status,
            code,
            message: message.into(),
            reason: None,
            retry_after_secs: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    pub fn unsupported(what: &str) -> Self {
        Self::invalid(format!(
            "{what} is not supported by Ignis (see docs/lambda.md)"
        ))
    }
}

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let mut body = json!({ "Type": kind, "message": self.message });
        if let Some(r) = self.reason {
            body["Reason"] = Value::from(r);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Ok(v) = HeaderValue::from_str(&ignis_core::ActivationId::new().to_string()) {
            h.insert("x-amzn-requestid", v);
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            h.insert(
                "retry-after",
                HeaderValue::from(self.retry_after_secs.unwrap_or(1)),
            );
        }
        resp
    }
}

impl From<ControllerError> for LambdaError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::InvalidSpec(s) => LambdaError::invalid(s.to_string()),
            ControllerError::BadRequest(m) | ControllerError::PreconditionFailed(m) => {
                LambdaError::new(StatusCode::BAD_REQUEST, "InvalidRequestContentException", m)
            }
            ControllerError::NotFound(what) => LambdaError::not_found(format!("{what} not found")),
            ControllerError::Conflict(what) => LambdaError::new(
                StatusCode::CONFLICT,
                "ResourceConflictException",
                format!("{what} already exists"),
            ),
            ControllerError::Throttled(m) => LambdaError {
                reason: Some("ReservedFunctionConcurrentInvocationLimitExceeded"),
                ..LambdaError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    format!("Rate Exceeded: {m}"),
                )
            },
            ControllerError::QuotaExceeded {
                message,
                retry_after_secs,
            } => LambdaError {
                reason: Some("ConcurrentInvocationLimitExceeded"),
                retry_after_secs: Some(retry_after_secs),
                ..LambdaError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    format!("Rate Exceeded: {message}"),
                )
            },
            ControllerError::TooLarge(m) | ControllerError::CodeTooLarge(m) => LambdaError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
                m,
            ),
            ControllerError::Unavailable => LambdaError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceException",
                "the server is shutting down",
            ),
            ControllerError::NoInvoker(m) => {
                LambdaError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", m)
            }
            ControllerError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                LambdaError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceException",
                    "internal error; see the server log",
                )
            }
        }
    }
}

pub(crate) type LambdaResult<T> = Result<T, LambdaError>;

/// A request that passed SigV4: its parts, and the namespace it acts in.
pub(crate) struct Call {
    pub method: Method,
    /// The path after [`PREFIX`], percent-decoded segment by segment.
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub namespace: String,
    pub region: String,
    /// The gateway's id of the request: an invocation's activation id.
    pub request_id: ignis_core::ActivationId,
}

impl Call {
    pub fn query(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }

    /// The JSON body as `T`; an empty body is `{}`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> LambdaResult<T> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body).map_err(|e| {
            LambdaError::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                format!("invalid request body: {e}"),
            )
        })
    }
}

/// Verifies the signature and reads the request. The namespace is the key's, or the default
/// one for an admin key.
async fn authenticate(state: &AppState, req: Request) -> LambdaResult<(Call, Principal)> {
    let (parts, body) = req.into_parts();
    let region = state.controller.invoker().aws_region().to_string();
    let now = ignis_core::now_ms() / 1000;
    let refused = |e: sigv4::SigV4Error| {
        let status = match e {
            sigv4::SigV4Error::Malformed(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        };
        LambdaError::new(status, e.aws_code(), e.to_string())
    };
    let check = |body: &[u8], who: &mut Option<Principal>| {
        let signed = sigv4::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body,
        };
        sigv4::verify(&signed, now, &region, "lambda", |id| {
            let (secret, principal) = state.keys.signing_secret(id)?;
            *who = Some(principal);
            Some(secret)
        })
        .map(|_| ())
    };
    // Everything but the body's hash first, so that a request that cannot be right is refused
    // before its body (up to 100 MiB) is read.
    let mut who = None;
    match check(b"", &mut who) {
        Ok(()) | Err(sigv4::SigV4Error::Mismatch) => {}
        Err(e) => return Err(refused(e)),
    }
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            LambdaError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                format!("the request is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    check(&body, &mut who).map_err(refused)?;
    let Some(principal) = who else {
        return Err(refused(sigv4::SigV4Error::Mismatch));
    };
    let namespace = principal
        .namespace
        .clone()
        .unwrap_or_else(|| ignis_core::DEFAULT_NAMESPACE.to_string());
    let rest = parts.uri.path().strip_prefix(PREFIX).unwrap_or("");
    let segments = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            String::from_utf8(sigv4::percent_decode(s))
                .map_err(|_| LambdaError::invalid("the path is not UTF-8"))
        })
        .collect::<LambdaResult<Vec<_>>>()?;
    let query =
        serde_urlencoded::from_str::<Vec<(String, String)>>(parts.uri.query().unwrap_or(""))
            .map_err(|e| LambdaError::invalid(format!("malformed query string: {e}")))?;
    let request_id = parts
        .extensions
        .get::<crate::RequestId>()
        .map_or_else(ignis_core::ActivationId::new, |r| r.0);
    Ok((
        Call {
            request_id,
            method: parts.method,
            segments,
            query,
            headers: parts.headers,
            body,
            namespace,
            region,
        },
        principal,
    ))
}

/// What a Lambda operation needs of the key: reading, invoking or changing functions.
fn access_of(method: &Method, seg: &[&str]) -> Access {
    match (method, seg) {
        (&Method::POST, [_, "invocations"]) => Access::Invoke,
        (&Method::GET, _) => Access::Read,
        _ => Access::Write,
    }
}

/// Every route of the Lambda API.
pub(crate) async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match route(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(state: &AppState, req: Request) -> LambdaResult<Response> {
    let (call, principal) = authenticate(state, req).await?;
    let seg: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    principal
        .allows(access_of(&call.method, &seg), Some(&call.namespace))
        .map_err(|e| LambdaError::new(StatusCode::FORBIDDEN, "AccessDeniedException", e.message))?;
    match (&call.method, seg.as_slice()) {
        (&Method::GET, []) => functions::list_functions(state, &call).await,
        (&Method::POST, []) => functions::create_function(state, &call).await,
        (&Method::GET, [name]) => functions::get_function(state, &call, name).await,
        (&Method::DELETE, [name]) => functions::delete_function(state, &call, name).await,
        (&Method::GET, [name, "configuration"]) => {
            functions::get_configuration(state, &call, name).await
        }
        (&Method::PUT, [name, "configuration"]) => {
            functions::update_configuration(state, &call, name).await
        }
        (&Method::PUT, [name, "code"]) => functions::update_code(state, &call, name).await,
        (&Method::POST, [name, "invocations"]) => invoke::invoke(state, &call, name).await,
        (&Method::POST, [name, "versions"]) => functions::publish_version(state, &call, name).await,
        (&Method::GET, [name, "versions"]) => functions::list_versions(state, &call, name).await,
        (_, [_, "aliases", ..]) => Err(LambdaError::unsupported("aliases")),
        _ => Err(LambdaError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!(
                "unknown operation {} {PREFIX}/{}",
                call.method,
                seg.join("/")
            ),
        )),
    }
}

/// A function named as Lambda allows: `name`, `name:qualifier`, `account:function:name[:q]` or
/// a full ARN; with the `Qualifier` parameter. The version is `None` for `$LATEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub name: String,
    pub version: Option<u32>,
}

pub(crate) fn target(call: &Call, raw: &str) -> LambdaResult<Target> {
    let account = ignis_core::lambda::account_id(&call.namespace);
    let not_found = || LambdaError::not_found(format!("Function not found: {raw}"));
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, qualifier) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        [acct, "function", name] => {
            if *acct != account {
                return Err(not_found());
            }
            (*name, None)
        }
        [acct, "function", name, q] => {
            if *acct != account {
                return Err(not_found());
            }
            (*name, Some(*q))
        }
        [
            "arn",
            "aws",
            "lambda",
            region,
            acct,
            "function",
            name,
            rest @ ..,
        ] if rest.len() <= 1 => {
            if *region != call.region || *acct != account {
                return Err(not_found());
            }
            (*name, rest.first().copied())
        }
        _ => {
            return Err(LambdaError::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                format!("{raw:?} is not a function name or ARN"),
            ));
        }
    };
    let qualifier = match (qualifier, call.query("Qualifier")) {
        (Some(a), Some(b)) if a != b => {
            return Err(LambdaError::invalid(
                "the qualifier of the name and the Qualifier parameter differ",
            ));
        }
        (q, p) => q.or(p),
    };
    let version = match qualifier {
        None | Some("$LATEST") => None,
        Some(q) => match q.parse::<u32>() {
            Ok(v) if v > 0 => Some(v),
            // Not a version: an alias, which Ignis does not keep.
            _ => return Err(not_found()),
        },
    };
    ignis_core::validate_function_name(name).map_err(|_| not_found())?;
    Ok(Target {
        name: name.to_string(),
        version,
    })
}

/// Maps "function not found" to Lambda's message, with the ARN.
pub(crate) fn lookup_error(e: ControllerError, call: &Call, t: &Target) -> LambdaError {
    match e {
        ControllerError::NotFound(_) => {
            let q = t.version.map(|v| v.to_string());
            LambdaError::not_found(format!(
                "Function not found: {}",
                ignis_core::lambda::function_arn(
                    &call.region,
                    &call.namespace,
                    &t.name,
                    q.as_deref()
                )
            ))
        }
        other => other.into(),
    }
}

pub(crate) fn ok_json(status: StatusCode, v: Value) -> LambdaResult<Response> {
    Ok((status, axum::Json(v)).into_response())
}

/// A verified call in `ns` with `query`, for unit tests.
#[cfg(test)]
pub(crate) fn test_call(ns: &str, query: &[(&str, &str)]) -> Call {
    Call {
        method: Method::GET,
        segments: vec![],
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        headers: HeaderMap::new(),
        body: Bytes::new(),
        namespace: ns.into(),
        region: "us-east-1".into(),
        request_id: ignis_core::ActivationId::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_in_every_lambda_form() {
        let c = test_call("default", &[]);
        let acct = ignis_core::lambda::account_id("default");
        let t = |n: &str| target(&c, n);
        let latest = Target {
            name: "f".into(),
            version: None,
        };
        let v3 = Target {
            name: "f".into(),
            version: Some(3),
        };
        assert_eq!(t("f").unwrap(), latest);
        assert_eq!(t("f:$LATEST").unwrap(), latest);
        assert_eq!(t("f:3").unwrap(), v3);
        assert_eq!(t(&format!("{acct}:function:f")).unwrap(), latest);
        assert_eq!(
            t(&format!("arn:aws:lambda:us-east-1:{acct}:function:f:3")).unwrap(),
            v3
        );
        // Another account or region, an alias, a bad name.
        for bad in [
            "arn:aws:lambda:us-east-1:999999999999:function:f".to_string(),
            format!("arn:aws:lambda:eu-west-1:{acct}:function:f"),
            "f:prod".into(),
            "f:0".into(),
            "bad name".into(),
        ] {
            assert_eq!(
                t(&bad).unwrap_err().code,
                "ResourceNotFoundException",
                "{bad}"
            );
        }
        assert_eq!(t("a:b:c:d:e").unwrap_err().code, "ValidationException");
        let q = test_call("default", &[("Qualifier", "2")]);
        assert_eq!(target(&q, "f").unwrap().version, Some(2));
        assert_eq!(
            target(&q, "f:3").unwrap_err().code,
            "InvalidParameterValueException"
        );
    }
}

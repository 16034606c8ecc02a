//! The AWS Lambda–compatible API under `/2015-03-31/functions…`, so that the AWS SDKs and CLI
//! work with their endpoint URL pointed at Ignis: CreateFunction, GetFunction,
//! GetFunctionConfiguration, ListFunctions, UpdateFunctionCode, UpdateFunctionConfiguration,
//! DeleteFunction, PublishVersion, ListVersionsByFunction and Invoke (in `lambda_invoke.rs`).
//!
//! Requests are authenticated with AWS Signature Version 4 ([`crate::sigv4`]): the access key
//! id is an Ignis key's id, the secret its secret. The account is the key's namespace (the
//! default namespace for a key of every namespace); the region is the server's. Errors have
//! Lambda's shape — status, `x-amzn-ErrorType` and `{"Type", "message"}` — so the SDKs raise
//! their usual exceptions. Every Ignis version is a Lambda version: `$LATEST` is the latest one,
//! and PublishVersion names it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use ignis_controller::{CodeUpload, ControllerError, DeployRequest};
use ignis_core::{FunctionSpec, FunctionVersion, Runtime, SpecError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::sigv4;

/// Largest CreateFunction/UpdateFunctionCode body (a 50 MB zip in base64, in JSON).
const MAX_BODY_BYTES: usize = crate::MAX_DEPLOY_BYTES;
/// The path prefix of the API.
pub(crate) const PREFIX: &str = "/2015-03-31/functions";
/// Lambda's memory limits, in MB.
const MEMORY_MB: std::ops::RangeInclusive<u32> = 128..=10_240;
/// Lambda's timeout limit, in seconds.
const TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=900;
/// Names of the environment Lambda sets itself, which functions may not set.
const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// An error in Lambda's shape.
#[derive(Debug)]
pub(crate) struct LambdaError {
    pub status: StatusCode,
    /// The exception name (`ResourceNotFoundException`…).
    pub code: &'static str,
    pub message: String,
    /// `TooManyRequestsException`'s reason.
    pub reason: Option<&'static str>,
}

impl LambdaError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        LambdaError {
            status,
            code,
            message: message.into(),
            reason: None,
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

    fn unsupported(what: &str) -> Self {
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
            h.insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<ControllerError> for LambdaError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::InvalidSpec(s) => LambdaError::invalid(s.to_string()),
            ControllerError::BadRequest(m) => {
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
            ControllerError::Unavailable => LambdaError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceException",
                "the server is shutting down",
            ),
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
    fn json<T: serde::de::DeserializeOwned>(&self) -> LambdaResult<T> {
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
/// one for a key of every namespace.
async fn authenticate(state: &AppState, req: Request) -> LambdaResult<Call> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            LambdaError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                format!("the request is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let region = state.controller.invoker().aws_region().to_string();
    let mut namespace = None;
    let signed = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
    };
    let now = ignis_core::now_ms() / 1000;
    sigv4::verify(&signed, now, &region, "lambda", |id| {
        let (secret, ns) = state.keys.signing_secret(id)?;
        namespace = Some(ns);
        Some(secret)
    })
    .map_err(|e| {
        let status = match e {
            sigv4::SigV4Error::Malformed(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        };
        LambdaError::new(status, e.aws_code(), e.to_string())
    })?;
    let namespace = namespace
        .flatten()
        .unwrap_or_else(|| ignis_core::DEFAULT_NAMESPACE.to_string());
    let rest = parts.uri.path().strip_prefix(PREFIX).unwrap_or("");
    let segments = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            String::from_utf8(percent_decode(s))
                .map_err(|_| LambdaError::invalid("the path is not UTF-8"))
        })
        .collect::<LambdaResult<Vec<_>>>()?;
    let query =
        serde_urlencoded::from_str::<Vec<(String, String)>>(parts.uri.query().unwrap_or(""))
            .map_err(|e| LambdaError::invalid(format!("malformed query string: {e}")))?;
    Ok(Call {
        method: parts.method,
        segments,
        query,
        headers: parts.headers,
        body,
        namespace,
        region,
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Every route of the Lambda API.
pub(crate) async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match route(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(state: &AppState, req: Request) -> LambdaResult<Response> {
    let call = authenticate(state, req).await?;
    let seg: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match (&call.method, seg.as_slice()) {
        (&Method::GET, []) => list_functions(state, &call).await,
        (&Method::POST, []) => create_function(state, &call).await,
        (&Method::GET, [name]) => get_function(state, &call, name).await,
        (&Method::DELETE, [name]) => delete_function(state, &call, name).await,
        (&Method::GET, [name, "configuration"]) => get_configuration(state, &call, name).await,
        (&Method::PUT, [name, "configuration"]) => update_configuration(state, &call, name).await,
        (&Method::PUT, [name, "code"]) => update_code(state, &call, name).await,
        (&Method::POST, [name, "invocations"]) => {
            crate::lambda_invoke::invoke(state, &call, name).await
        }
        (&Method::POST, [name, "versions"]) => publish_version(state, &call, name).await,
        (&Method::GET, [name, "versions"]) => list_versions(state, &call, name).await,
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

/// `2019-08-14T22:26:11.234+0000` (Lambda's LastModified).
fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = sigv4::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Lambda's FunctionConfiguration of a version; `as_latest` shows it as `$LATEST`.
pub(crate) fn configuration(region: &str, f: &FunctionVersion, as_latest: bool) -> Value {
    let version = if as_latest {
        "$LATEST".to_string()
    } else {
        f.version.to_string()
    };
    let lambda = f.spec.lambda.clone().unwrap_or_default();
    let runtime = if lambda.runtime.is_empty() {
        f.spec.runtime.as_str().to_string()
    } else {
        lambda.runtime
    };
    let sha = hex::decode(&f.code.sha256).unwrap_or_default();
    json!({
        "FunctionName": f.name,
        "FunctionArn": ignis_core::lambda::function_arn(
            region, &f.namespace, &f.name, (!as_latest).then_some(version.as_str())),
        "Runtime": runtime,
        "Role": lambda.role,
        "Handler": f.spec.handler,
        "CodeSize": f.code.size,
        "Description": lambda.description,
        "Timeout": f.spec.timeout_ms.div_ceil(1000),
        "MemorySize": f.spec.memory_mb,
        "LastModified": timestamp(f.created_ms),
        "CodeSha256": base64::engine::general_purpose::STANDARD.encode(sha),
        "Version": version,
        "Environment": { "Variables": f.spec.env },
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": revision_id(f),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
        "EphemeralStorage": { "Size": f.spec.tmp_mb },
    })
}

/// Changes whenever the function does: every change is a new Ignis version.
fn revision_id(f: &FunctionVersion) -> String {
    format!(
        "{}-{}-{}",
        f.version,
        f.created_ms,
        &f.code.sha256[..f.code.sha256.len().min(12)]
    )
}

fn check_revision(f: &FunctionVersion, given: Option<&str>) -> LambdaResult<()> {
    match given {
        Some(r) if r != revision_id(f) => Err(LambdaError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            "the RevisionId provided does not match the latest RevisionId of the function",
        )),
        _ => Ok(()),
    }
}

fn ok_json(status: StatusCode, v: Value) -> LambdaResult<Response> {
    Ok((status, axum::Json(v)).into_response())
}

/// `Code` of CreateFunction and UpdateFunctionCode.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CodeBody {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
}

fn zip_of(code: &CodeBody) -> LambdaResult<Bytes> {
    if code.s3_bucket.is_some() {
        return Err(LambdaError::unsupported("code from S3 (S3Bucket/S3Key)"));
    }
    if code.image_uri.is_some() {
        return Err(LambdaError::unsupported("container images (ImageUri)"));
    }
    let zip = code
        .zip_file
        .as_deref()
        .ok_or_else(|| LambdaError::invalid("ZipFile is required"))?;
    base64::engine::general_purpose::STANDARD
        .decode(zip.trim())
        .map(Bytes::from)
        .map_err(|_| LambdaError::invalid("ZipFile is not valid base64"))
}

/// The settings CreateFunction and UpdateFunctionConfiguration share.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Settings {
    runtime: Option<String>,
    role: Option<String>,
    handler: Option<String>,
    description: Option<String>,
    timeout: Option<u64>,
    memory_size: Option<u32>,
    environment: Option<Environment>,
    ephemeral_storage: Option<EphemeralStorage>,
    revision_id: Option<String>,
    package_type: Option<String>,
    architectures: Option<Vec<String>>,
    layers: Option<Vec<String>>,
    vpc_config: Option<Value>,
    file_systems_configs: Option<Vec<Value>>,
    dead_letter_config: Option<Value>,
    image_config: Option<Value>,
    tracing_config: Option<Value>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Environment {
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EphemeralStorage {
    size: u32,
}

/// Fields that change nothing on Ignis and are accepted as such.
const IGNORED_FIELDS: &[&str] = &[
    "FunctionName",
    "Code",
    "Publish",
    "Tags",
    "KMSKeyArn",
    "SnapStart",
    "LoggingConfig",
    "CodeSigningConfigArn",
];

fn validation(message: String) -> LambdaError {
    LambdaError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
}

impl Settings {
    /// Applies the settings to `spec` (a new function's defaults, or the latest version's).
    fn apply(self, spec: &mut FunctionSpec) -> LambdaResult<()> {
        if let Some(k) = self
            .other
            .keys()
            .find(|k| !IGNORED_FIELDS.contains(&k.as_str()))
        {
            return Err(LambdaError::unsupported(&format!("the field {k}")));
        }
        if self.package_type.as_deref().is_some_and(|p| p != "Zip") {
            return Err(LambdaError::unsupported("PackageType Image"));
        }
        if self.layers.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(LambdaError::unsupported("layers"));
        }
        if self
            .file_systems_configs
            .as_ref()
            .is_some_and(|l| !l.is_empty())
        {
            return Err(LambdaError::unsupported("file systems (EFS)"));
        }
        let non_empty = |v: &Option<Value>, key: &str| {
            v.as_ref()
                .and_then(|v| v.get(key))
                .is_some_and(|x| !x.is_null() && x != &json!([]) && x != &json!(""))
        };
        if non_empty(&self.vpc_config, "SubnetIds") {
            return Err(LambdaError::unsupported("VPC configuration"));
        }
        if non_empty(&self.dead_letter_config, "TargetArn") {
            return Err(LambdaError::unsupported(
                "DeadLetterConfig (Ignis keeps failed asynchronous invocations in its own dead-letter list)",
            ));
        }
        if self.image_config.is_some() {
            return Err(LambdaError::unsupported("ImageConfig"));
        }
        if let Some(mode) = self.tracing_config.as_ref().and_then(|t| t.get("Mode"))
            && mode != "PassThrough"
        {
            return Err(LambdaError::unsupported("active X-Ray tracing"));
        }
        check_architectures(self.architectures.as_deref())?;
        let mut lambda = spec.lambda.clone().unwrap_or_default();
        if let Some(r) = self.runtime {
            spec.runtime = Runtime::from_lambda_name(&r).ok_or_else(|| {
                LambdaError::invalid(format!(
                    "runtime {r} is not supported: Ignis runs python3.x, nodejs*.x and provided* \
                     (provided.al2023, provided.al2, provided)"
                ))
            })?;
            lambda.runtime = r;
        }
        if let Some(h) = self.handler {
            spec.handler = h;
        }
        if let Some(role) = self.role {
            lambda.role = role;
        }
        if let Some(d) = self.description {
            lambda.description = d;
        }
        if let Some(t) = self.timeout {
            if !TIMEOUT_SECS.contains(&t) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{t}' at 'timeout' failed to satisfy constraint: Member must have value between 1 and 900"
                )));
            }
            spec.timeout_ms = t * 1000;
        }
        if let Some(m) = self.memory_size {
            if !MEMORY_MB.contains(&m) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{m}' at 'memorySize' failed to satisfy constraint: Member must have value between 128 and 10240"
                )));
            }
            spec.memory_mb = m;
        }
        if let Some(e) = self.environment {
            let reserved: Vec<&str> = e
                .variables
                .keys()
                .map(String::as_str)
                .filter(|k| RESERVED_ENV.contains(k))
                .collect();
            if !reserved.is_empty() {
                return Err(LambdaError::invalid(format!(
                    "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
                    reserved.join(", ")
                )));
            }
            spec.env = e.variables;
        }
        if let Some(s) = self.ephemeral_storage {
            if !(512..=10_240).contains(&s.size) {
                return Err(validation(format!(
                    "1 validation error detected: Value '{}' at 'ephemeralStorage.size' failed to satisfy constraint: Member must have value between 512 and 10240",
                    s.size
                )));
            }
            spec.tmp_mb = s.size;
        }
        spec.lambda = Some(lambda);
        spec.validate().map_err(spec_error)
    }
}

/// Refuses an architecture other than the server's.
fn check_architectures(given: Option<&[String]>) -> LambdaResult<()> {
    let arch = std::env::consts::ARCH.replace("aarch64", "arm64");
    match given.and_then(|a| a.iter().find(|a| **a != arch)) {
        Some(a) => Err(LambdaError::invalid(format!(
            "architecture {a} is not this server's ({arch})"
        ))),
        None => Ok(()),
    }
}

fn spec_error(e: SpecError) -> LambdaError {
    LambdaError::invalid(e.to_string())
}

/// CreateFunction: a new function from a zip.
async fn create_function(state: &AppState, call: &Call) -> LambdaResult<Response> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Create {
        function_name: Option<String>,
        code: Option<CodeBody>,
        #[serde(default)]
        publish: bool,
    }
    let head: Create = call.json()?;
    let settings: Settings = call.json()?;
    let name = head
        .function_name
        .ok_or_else(|| validation("FunctionName is required".into()))?;
    let t = target(call, &name)?;
    let code = zip_of(&head.code.unwrap_or_default())?;
    if settings.runtime.is_none() {
        return Err(LambdaError::invalid(
            "Runtime is required for a Zip package",
        ));
    }
    if settings.handler.is_none() {
        return Err(LambdaError::invalid(
            "Handler is required for a Zip package",
        ));
    }
    // Lambda's defaults: 128 MB, 3 s.
    let mut spec = FunctionSpec::new(Runtime::Lambda, "");
    spec.memory_mb = 128;
    spec.timeout_ms = 3000;
    settings.apply(&mut spec)?;
    let (fv, _) = state
        .controller
        .deploy(DeployRequest {
            namespace: call.namespace.clone(),
            name: t.name.clone(),
            spec,
            code: Some(CodeUpload::Zip(code)),
            create_only: true,
        })
        .await
        .map_err(|e| match e {
            ControllerError::Conflict(_) => LambdaError::new(
                StatusCode::CONFLICT,
                "ResourceConflictException",
                format!("Function already exist: {}", t.name),
            ),
            other => other.into(),
        })?;
    ok_json(
        StatusCode::CREATED,
        configuration(&call.region, &fv, !head.publish),
    )
}

async fn latest_or(
    state: &AppState,
    call: &Call,
    t: &Target,
) -> LambdaResult<Arc<FunctionVersion>> {
    state
        .controller
        .get_function(&call.namespace, &t.name, t.version)
        .await
        .map_err(|e| lookup_error(e, call, t))
}

async fn get_function(state: &AppState, call: &Call, name: &str) -> LambdaResult<Response> {
    let t = target(call, name)?;
    let f = latest_or(state, call, &t).await?;
    ok_json(
        StatusCode::OK,
        json!({
            "Configuration": configuration(&call.region, &f, t.version.is_none()),
            "Code": { "RepositoryType": "Ignis" },
            "Tags": {},
        }),
    )
}

async fn get_configuration(state: &AppState, call: &Call, name: &str) -> LambdaResult<Response> {
    let t = target(call, name)?;
    let f = latest_or(state, call, &t).await?;
    ok_json(
        StatusCode::OK,
        configuration(&call.region, &f, t.version.is_none()),
    )
}

async fn delete_function(state: &AppState, call: &Call, name: &str) -> LambdaResult<Response> {
    let t = target(call, name)?;
    if t.version.is_some() {
        return Err(LambdaError::unsupported(
            "deleting one version (Ignis keeps every version of a function until it is deleted)",
        ));
    }
    state
        .controller
        .delete_function(&call.namespace, &t.name)
        .await
        .map_err(|e| lookup_error(e, call, &t))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new version with the latest one's settings changed by `change`.
async fn redeploy(
    state: &AppState,
    call: &Call,
    t: &Target,
    code: Option<Bytes>,
    change: impl FnOnce(&mut FunctionSpec) -> LambdaResult<()>,
) -> LambdaResult<FunctionVersion> {
    if t.version.is_some() {
        return Err(LambdaError::invalid(
            "only $LATEST can be updated: versions are immutable",
        ));
    }
    let latest = latest_or(state, call, t).await?;
    let mut spec = latest.spec.clone();
    change(&mut spec)?;
    let (fv, _) = state
        .controller
        .deploy(DeployRequest {
            namespace: call.namespace.clone(),
            name: t.name.clone(),
            spec,
            code: code.map(CodeUpload::Zip),
            create_only: false,
        })
        .await?;
    Ok(fv)
}

async fn update_configuration(state: &AppState, call: &Call, name: &str) -> LambdaResult<Response> {
    let t = target(call, name)?;
    let settings: Settings = call.json()?;
    let latest = latest_or(state, call, &t).await?;
    check_revision(&latest, settings.revision_id.as_deref())?;
    let fv = redeploy(state, call, &t, None, |spec| settings.apply(spec)).await?;
    ok_json(StatusCode::OK, configuration(&call.region, &fv, true))
}

async fn update_code(state: &AppState, call: &Call, name: &str) -> LambdaResult<Response> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Update {
        #[serde(flatten)]
        code: CodeBody,
        #[serde(default)]
        publish: bool,
        #[serde(default)]
        dry_run: bool,
        revision_id: Option<String>,
        architectures: Option<Vec<String>>,
    }
    let t = target(call, name)?;
    let u: Update = call.json()?;
    let zip = zip_of(&u.code)?;
    let latest = latest_or(state, call, &t).await?;
    check_revision(&latest, u.revision_id.as_deref())?;
    if u.dry_run {
        return ok_json(StatusCode::OK, configuration(&call.region, &latest, true));
    }
    check_architectures(u.architectures.as_deref())?;
    let fv = redeploy(state, call, &t, Some(zip), |_| Ok(())).await?;
    ok_json(StatusCode::OK, configuration(&call.region, &fv, !u.publish))
}

/// PublishVersion: every Ignis version is immutable already; this names the latest one.
async fn publish_version(state: &AppState, call: &Call, name: &str) -> LambdaResult<Response> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct Publish {
        code_sha256: Option<String>,
        revision_id: Option<String>,
    }
    let t = target(call, name)?;
    if t.version.is_some() {
        return Err(LambdaError::invalid(
            "publish from $LATEST, not from a version",
        ));
    }
    let p: Publish = call.json()?;
    let f = latest_or(state, call, &t).await?;
    check_revision(&f, p.revision_id.as_deref())?;
    let config = configuration(&call.region, &f, false);
    if let Some(sha) = p.code_sha256
        && Some(sha.as_str()) != config["CodeSha256"].as_str()
    {
        return Err(LambdaError::invalid(format!(
            "CodeSha256 ({sha}) is different from the current CodeSha256 in $LATEST; update the code first"
        )));
    }
    ok_json(StatusCode::CREATED, config)
}

/// `Marker` and `MaxItems` of the list operations: one page of `items`.
fn page(call: &Call, items: Vec<Value>) -> LambdaResult<(Vec<Value>, Option<String>)> {
    let max = match call.query("MaxItems") {
        None => 50,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=10_000).contains(m))
            .ok_or_else(|| validation(format!("MaxItems {m:?} is not between 1 and 10000")))?,
    };
    let start = match call.query("Marker") {
        None | Some("") => 0,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= items.len())
            .ok_or_else(|| LambdaError::invalid(format!("invalid Marker {m:?}")))?,
    };
    let end = (start + max).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items[start..end].to_vec(), next))
}

async fn list_functions(state: &AppState, call: &Call) -> LambdaResult<Response> {
    let all_versions = match call.query("FunctionVersion") {
        None => false,
        Some("ALL") => true,
        Some(v) => return Err(validation(format!("FunctionVersion {v:?} is not ALL"))),
    };
    let functions = state.controller.list_functions(&call.namespace).await?;
    let mut items = Vec::new();
    for f in functions {
        items.push(configuration(&call.region, &f, true));
        if all_versions {
            for v in state
                .controller
                .list_versions(&f.namespace, &f.name)
                .await?
            {
                items.push(configuration(&call.region, &v, false));
            }
        }
    }
    let (functions, next) = page(call, items)?;
    ok_json(
        StatusCode::OK,
        json!({ "Functions": functions, "NextMarker": next }),
    )
}

async fn list_versions(state: &AppState, call: &Call, name: &str) -> LambdaResult<Response> {
    let t = target(call, name)?;
    let latest = latest_or(state, call, &t).await?;
    let mut items = vec![configuration(&call.region, &latest, true)];
    for v in state
        .controller
        .list_versions(&call.namespace, &t.name)
        .await
        .map_err(|e| lookup_error(e, call, &t))?
    {
        items.push(configuration(&call.region, &v, false));
    }
    let (versions, next) = page(call, items)?;
    ok_json(
        StatusCode::OK,
        json!({ "Versions": versions, "NextMarker": next }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ns: &str, query: &[(&str, &str)]) -> Call {
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
        }
    }

    #[test]
    fn function_names_in_every_lambda_form() {
        let c = call("default", &[]);
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
        let q = call("default", &[("Qualifier", "2")]);
        assert_eq!(target(&q, "f").unwrap().version, Some(2));
        assert_eq!(
            target(&q, "f:3").unwrap_err().code,
            "InvalidParameterValueException"
        );
    }

    #[test]
    fn timestamps_have_lambdas_format() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(timestamp(1_440_938_160_123), "2015-08-30T12:36:00.123+0000");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000+0000");
    }

    #[test]
    fn settings_map_to_a_spec_and_refuse_what_ignis_cannot_do() {
        let parse = |v: Value| serde_json::from_value::<Settings>(v).unwrap();
        let mut spec = FunctionSpec::new(Runtime::Lambda, "");
        parse(json!({
            "Runtime": "python3.12", "Handler": "app.handler", "Role": "arn:aws:iam::1:role/r",
            "Timeout": 30, "MemorySize": 512, "Environment": {"Variables": {"A": "1"}},
            "EphemeralStorage": {"Size": 1024}, "Tags": {"t": "x"}, "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")]
        }))
        .apply(&mut spec)
        .unwrap();
        assert_eq!(spec.runtime, Runtime::Python);
        assert_eq!(
            (spec.timeout_ms, spec.memory_mb, spec.tmp_mb),
            (30_000, 512, 1024)
        );
        assert_eq!(spec.env["A"], "1");
        let l = spec.lambda.clone().unwrap();
        assert_eq!(
            (l.runtime.as_str(), l.role.as_str()),
            ("python3.12", "arn:aws:iam::1:role/r")
        );
        let refused = |v: Value| {
            let mut s = spec.clone();
            parse(v).apply(&mut s).unwrap_err()
        };
        assert_eq!(
            refused(json!({"Runtime": "java21"})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"MemorySize": 64})).code,
            "ValidationException"
        );
        assert_eq!(refused(json!({"Timeout": 901})).code, "ValidationException");
        assert_eq!(
            refused(json!({"Layers": ["arn:x"]})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"Environment": {"Variables": {"AWS_REGION": "x"}}})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"Handler": "a b", "Runtime": "provided.al2023"})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"Frobnicate": 1})).code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            refused(json!({"PackageType": "Image"})).code,
            "InvalidParameterValueException"
        );
    }

    #[test]
    fn pages_follow_markers() {
        let items: Vec<Value> = (0..5).map(Value::from).collect();
        let c = call("default", &[("MaxItems", "2")]);
        let (p, next) = page(&c, items.clone()).unwrap();
        assert_eq!((p.len(), next.as_deref()), (2, Some("2")));
        let c = call("default", &[("MaxItems", "2"), ("Marker", "4")]);
        let (p, next) = page(&c, items.clone()).unwrap();
        assert_eq!((p, next), (vec![Value::from(4)], None));
        assert!(page(&call("default", &[("MaxItems", "0")]), items.clone()).is_err());
        assert!(page(&call("default", &[("Marker", "9")]), items).is_err());
    }
}

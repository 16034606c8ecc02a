//! An S3-compatible subset under `/s3`, path-style (`/s3/{bucket}/{key}`), so that boto3's s3
//! client works with `endpoint_url="http://host:port/s3"` and `addressing_style: path`:
//! ListBuckets, CreateBucket, HeadBucket, DeleteBucket, PutObject, CopyObject, GetObject,
//! HeadObject, DeleteObject, ListObjectsV2 (with a delimiter too), and multipart uploads
//! (CreateMultipartUpload, UploadPart, ListParts, CompleteMultipartUpload,
//! AbortMultipartUpload, ListMultipartUploads). See docs/baas.md.
//!
//! Requests are signed with AWS Signature Version 4 (service `s3`) by an Ignis key, like the
//! Lambda API: the key's namespace is the account (the default namespace for an admin key).
//! Bodies stream as on the REST routes; a signed payload's SHA-256 is checked as the body is
//! read and a mismatch stores nothing. Multipart uploads in progress are kept by the store
//! (`ignis_controller`'s `multipart` module) and survive a restart.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use ignis_controller::{ControllerError, MAX_PART_NUMBER, ObjectAttributes, ObjectUpload};
use ignis_store::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Access;
use crate::data::{byte_range, object_headers, stream_file, user_metadata};
use crate::sigv4::{self, PayloadHash};
use ignis_controller::ObjectListing;

/// The path prefix of the API.
pub(crate) const PREFIX: &str = "/s3";
const META: &str = "x-amz-meta-";
const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Largest XML request body (CompleteMultipartUpload, CreateBucketConfiguration).
const MAX_XML_BYTES: usize = 1024 * 1024;

/// An error in S3's shape: status and `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug)]
struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: String,
}

type S3Result<T> = Result<T, S3Error>;

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> S3Error {
    S3Error {
        status,
        code,
        message: message.into(),
    }
}

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
            self.code,
            xml_escape(&self.message)
        );
        (
            self.status,
            [(header::CONTENT_TYPE, "application/xml")],
            body,
        )
            .into_response()
    }
}

impl From<ControllerError> for S3Error {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::NotFound(what) if what.starts_with("bucket") => err(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                format!("{what} not found"),
            ),
            ControllerError::NotFound(what) if what.starts_with("multipart upload") => err(
                StatusCode::NOT_FOUND,
                "NoSuchUpload",
                format!("{what} not found"),
            ),
            ControllerError::NotFound(what) => err(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                format!("{what} not found"),
            ),
            ControllerError::InvalidSpec(s) => {
                err(StatusCode::BAD_REQUEST, "InvalidArgument", s.to_string())
            }
            // The controller's refusals of a part list start with "part".
            ControllerError::BadRequest(m) if m.starts_with("part") => {
                err(StatusCode::BAD_REQUEST, "InvalidPart", m)
            }
            ControllerError::BadRequest(m) => err(StatusCode::BAD_REQUEST, "InvalidArgument", m),
            ControllerError::Conflict(what) => err(
                StatusCode::CONFLICT,
                "BucketNotEmpty",
                format!("{what} is not empty"),
            ),
            ControllerError::TooLarge(m) | ControllerError::CodeTooLarge(m) => {
                err(StatusCode::BAD_REQUEST, "EntityTooLarge", m)
            }
            ControllerError::PreconditionFailed(m) => {
                err(StatusCode::PRECONDITION_FAILED, "PreconditionFailed", m)
            }
            ControllerError::Throttled(m) | ControllerError::QuotaExceeded { message: m, .. } => {
                err(StatusCode::SERVICE_UNAVAILABLE, "SlowDown", m)
            }
            ControllerError::Unavailable => err(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the server is shutting down",
            ),
            ControllerError::NoInvoker(m) => {
                err(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m)
            }
            ControllerError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "internal error; see the server log",
                )
            }
        }
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response()
}

fn iso8601(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Percent-encodes a key for `encoding-type=url` listings (`/` kept).
fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request that passed SigV4.
struct Call {
    method: Method,
    bucket: Option<String>,
    key: Option<String>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Body,
    payload: PayloadHash,
    namespace: String,
}

/// A request's query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn query(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

impl Call {
    fn query(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, k: &str) -> bool {
        self.query.iter().any(|(key, _)| key == k)
    }

    /// A small body (XML), read whole and checked against the signed hash.
    async fn small_body(self) -> S3Result<bytes::Bytes> {
        let bytes = axum::body::to_bytes(self.body, MAX_XML_BYTES)
            .await
            .map_err(|_| {
                err(
                    StatusCode::BAD_REQUEST,
                    "MaxMessageLengthExceeded",
                    "the request body is too large",
                )
            })?;
        if let PayloadHash::Sha256(want) = &self.payload
            && hex::encode(Sha256::digest(&bytes)) != *want
        {
            return Err(sha_mismatch());
        }
        Ok(bytes)
    }
}

fn sha_mismatch() -> S3Error {
    err(
        StatusCode::BAD_REQUEST,
        "XAmzContentSHA256Mismatch",
        "the body's SHA-256 is not the one x-amz-content-sha256 claims",
    )
}

/// Every route of the S3 API.
pub(crate) async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match route(&state, req).await {
        Ok(r) => r,
        Err(e) => {
            // An error may be found before the request's body is read (a PutObject into a
            // missing bucket): the connection is closed after it, since a client that sent
            // `Expect: 100-continue`, as boto3 does, sends no body after such an answer while
            // the server would take the start of its next request for that body.
            let mut r = e.into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

async fn authenticate(state: &AppState, req: Request) -> S3Result<Call> {
    let (parts, body) = req.into_parts();
    let region = state.controller.invoker().aws_region().to_string();
    let signed = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: b"",
    };
    let mut who = None;
    let (_, payload) = sigv4::verify_s3(&signed, ignis_core::now_ms() / 1000, &region, |id| {
        let (secret, principal) = state.keys.signing_secret(id)?;
        who = Some(principal);
        Some(secret)
    })
    .map_err(|e| match e {
        sigv4::SigV4Error::Missing => err(StatusCode::FORBIDDEN, "AccessDenied", e.to_string()),
        sigv4::SigV4Error::Malformed(m) => err(StatusCode::BAD_REQUEST, "InvalidRequest", m),
        sigv4::SigV4Error::UnknownKey => {
            err(StatusCode::FORBIDDEN, "InvalidAccessKeyId", e.to_string())
        }
        sigv4::SigV4Error::Skewed(..) => {
            err(StatusCode::FORBIDDEN, "RequestTimeTooSkewed", e.to_string())
        }
        _ => err(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            e.to_string(),
        ),
    })?;
    let principal = who.ok_or_else(|| err(StatusCode::FORBIDDEN, "AccessDenied", "no key"))?;
    let namespace = principal
        .namespace
        .clone()
        .unwrap_or_else(|| ignis_core::DEFAULT_NAMESPACE.to_string());
    let access = match parts.method {
        Method::GET | Method::HEAD => Access::DataRead,
        _ => Access::DataWrite,
    };
    principal
        .allows(access, Some(&namespace))
        .map_err(|e| err(StatusCode::FORBIDDEN, "AccessDenied", e.message))?;
    let rest = parts.uri.path().strip_prefix(PREFIX).unwrap_or("");
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let decode = |s: &str| {
        String::from_utf8(sigv4::percent_decode(s)).map_err(|_| {
            err(
                StatusCode::BAD_REQUEST,
                "InvalidURI",
                "the path is not UTF-8",
            )
        })
    };
    let (bucket, key) = match rest.split_once('/') {
        Some((b, k)) if !k.is_empty() => (Some(decode(b)?), Some(decode(k)?)),
        Some((b, _)) => (Some(decode(b)?), None),
        None if rest.is_empty() => (None, None),
        None => (Some(decode(rest)?), None),
    };
    let query =
        serde_urlencoded::from_str::<Vec<(String, String)>>(parts.uri.query().unwrap_or(""))
            .map_err(|e| {
                err(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    format!("malformed query string: {e}"),
                )
            })?;
    Ok(Call {
        method: parts.method,
        bucket,
        key,
        query,
        headers: parts.headers,
        body,
        payload,
        namespace,
    })
}

async fn route(state: &AppState, req: Request) -> S3Result<Response> {
    let call = authenticate(state, req).await?;
    let c = &state.controller;
    let ns = call.namespace.clone();
    match (call.method.clone(), call.bucket.clone(), call.key.clone()) {
        (Method::GET, None, None) => list_buckets(state, &ns).await,
        (Method::PUT, Some(b), None) => {
            call.small_body().await?;
            c.create_bucket(&ns, &b).await?;
            let mut r = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/{b}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Ok(r)
        }
        (Method::HEAD, Some(b), None) => {
            let exists = c.list_buckets(&ns).await?.iter().any(|x| x.name == b);
            Ok(if exists {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            }
            .into_response())
        }
        (Method::DELETE, Some(b), None) => {
            c.delete_bucket(&ns, &b).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, Some(b), None) if call.has("uploads") => {
            list_multipart_uploads(state, &ns, &b, Query(call.query)).await
        }
        (Method::GET, Some(b), None) => list_objects_v2(state, &ns, &b, Query(call.query)).await,
        (Method::PUT, Some(_), Some(_))
            if call.headers.contains_key("x-amz-copy-source") && call.has("uploadId") =>
        {
            Err(err(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "UploadPartCopy is not supported",
            ))
        }
        (Method::PUT, Some(b), Some(k)) if call.headers.contains_key("x-amz-copy-source") => {
            copy_object(state, call, &b, &k).await
        }
        (Method::PUT, Some(b), Some(k)) if call.has("uploadId") => {
            upload_part(state, call, &b, &k).await
        }
        (Method::PUT, Some(b), Some(k)) => put_object(state, call, &b, &k).await,
        (Method::POST, Some(b), Some(k)) if call.has("uploads") => {
            create_multipart(state, call, &b, &k).await
        }
        (Method::POST, Some(b), Some(k)) if call.has("uploadId") => {
            complete_multipart(state, call, &b, &k).await
        }
        (Method::DELETE, Some(b), Some(k)) if call.has("uploadId") => {
            let id = call.query("uploadId").unwrap_or_default();
            c.abort_multipart(&ns, &b, &k, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, Some(b), Some(k)) if call.has("uploadId") => {
            list_parts(state, &ns, &b, &k, Query(call.query)).await
        }
        (Method::GET | Method::HEAD, Some(b), Some(k)) => {
            let head = call.method == Method::HEAD;
            let (meta, file) = c.open_object(&ns, &b, &k).await?;
            let Ok(range) = byte_range(&call.headers, meta.size) else {
                return Err(err(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    format!("the object has {} bytes", meta.size),
                ));
            };
            Ok(stream_file(file, s3_headers(&meta), head, range, meta.size))
        }
        (Method::DELETE, Some(b), Some(k)) => {
            match c.delete_object(&ns, &b, &k).await {
                Ok(()) => {}
                // S3 answers 204 for a key that is not there; a missing bucket is an error.
                Err(ControllerError::NotFound(what)) if what.starts_with("object") => {}
                Err(e) => return Err(e.into()),
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (m, b, k) => Err(err(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!(
                "{m} on {} is not supported by this S3 subset (see docs/baas.md)",
                match (b, k) {
                    (Some(b), Some(k)) => format!("object {b}/{k}"),
                    (Some(b), None) => format!("bucket {b}"),
                    _ => "the service".to_string(),
                }
            ),
        )),
    }
}

fn s3_headers(meta: &ObjectMeta) -> HeaderMap {
    object_headers(meta, META)
}

async fn list_buckets(state: &AppState, ns: &str) -> S3Result<Response> {
    let buckets = state.controller.list_buckets(ns).await?;
    let mut body = format!(
        "<ListAllMyBucketsResult xmlns=\"{XMLNS}\"><Owner><ID>{0}</ID><DisplayName>{0}</DisplayName></Owner><Buckets>",
        xml_escape(ns)
    );
    for b in buckets {
        body.push_str(&format!(
            "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate></Bucket>",
            xml_escape(&b.name),
            iso8601(b.created_ms)
        ));
    }
    body.push_str("</Buckets></ListAllMyBucketsResult>");
    Ok(xml(StatusCode::OK, body))
}

async fn list_objects_v2(
    state: &AppState,
    ns: &str,
    bucket: &str,
    call: Query,
) -> S3Result<Response> {
    if call.query("list-type") != Some("2") {
        return Err(err(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "only ListObjectsV2 (list-type=2) is supported",
        ));
    }
    let delimiter = call.query("delimiter").unwrap_or("");
    let prefix = call.query("prefix").unwrap_or("");
    let max = number(&call, "max-keys", 1000)?;
    let token = call.query("continuation-token");
    let after = match token {
        Some(t) => Some(
            hex::decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    err(
                        StatusCode::BAD_REQUEST,
                        "InvalidArgument",
                        "invalid continuation token",
                    )
                })?,
        ),
        None => call.query("start-after").map(str::to_string),
    };
    let limit = max.min(ignis_controller::MAX_LIST);
    let listing = if max == 0 {
        ObjectListing::default()
    } else if delimiter.is_empty() {
        let (objects, next) = state
            .controller
            .list_objects(ns, bucket, prefix, after, limit)
            .await?;
        ObjectListing {
            objects,
            prefixes: Vec::new(),
            next,
        }
    } else {
        state
            .controller
            .list_objects_delimited(ns, bucket, prefix, delimiter, after, limit)
            .await?
    };
    let ObjectListing {
        objects,
        prefixes,
        next,
    } = listing;
    let url = call.query("encoding-type") == Some("url");
    let enc = |s: &str| if url { url_encode(s) } else { xml_escape(s) };
    let mut body = format!(
        "<ListBucketResult xmlns=\"{XMLNS}\"><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{max}</MaxKeys><IsTruncated>{}</IsTruncated>",
        xml_escape(bucket),
        enc(prefix),
        objects.len() + prefixes.len(),
        next.is_some()
    );
    if !delimiter.is_empty() {
        body.push_str(&format!("<Delimiter>{}</Delimiter>", enc(delimiter)));
    }
    if url {
        body.push_str("<EncodingType>url</EncodingType>");
    }
    if let Some(t) = token {
        body.push_str(&format!(
            "<ContinuationToken>{}</ContinuationToken>",
            xml_escape(t)
        ));
    }
    if let Some(n) = &next {
        body.push_str(&format!(
            "<NextContinuationToken>{}</NextContinuationToken>",
            hex::encode(n)
        ));
    }
    for o in &objects {
        body.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            enc(&o.key),
            iso8601(o.modified_ms),
            xml_escape(&o.etag),
            o.size
        ));
    }
    for p in &prefixes {
        body.push_str(&format!(
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            enc(p)
        ));
    }
    body.push_str("</ListBucketResult>");
    Ok(xml(StatusCode::OK, body))
}

fn attributes(headers: &HeaderMap) -> S3Result<ObjectAttributes> {
    let metadata = user_metadata(headers, META)
        .map_err(|e| err(StatusCode::BAD_REQUEST, "MetadataTooLarge", e.message))?;
    Ok(ObjectAttributes {
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        metadata,
    })
}

/// Streams the call's body into `up`, checking the signed SHA-256 if there is one.
async fn pump(mut up: ObjectUpload, body: Body, payload: &PayloadHash) -> S3Result<ObjectUpload> {
    let mut sha = matches!(payload, PayloadHash::Sha256(_)).then(Sha256::new);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| err(StatusCode::BAD_REQUEST, "IncompleteBody", e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if let Some(h) = sha.as_mut() {
                h.update(&data);
            }
            up.write(data).await?;
        }
    }
    if let (Some(h), PayloadHash::Sha256(want)) = (sha, payload)
        && hex::encode(h.finalize()) != *want
    {
        return Err(sha_mismatch());
    }
    Ok(up)
}

fn etag_response(etag: &str) -> Response {
    let mut r = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

async fn put_object(state: &AppState, call: Call, bucket: &str, key: &str) -> S3Result<Response> {
    let attrs = attributes(&call.headers)?;
    let up = state
        .controller
        .begin_upload(&call.namespace, bucket, key)
        .await?;
    let up = pump(up, call.body, &call.payload).await?;
    let meta = state
        .controller
        .finish_upload(&call.namespace, bucket, key, up, attrs)
        .await?;
    Ok(etag_response(&meta.etag))
}

async fn copy_object(state: &AppState, call: Call, bucket: &str, key: &str) -> S3Result<Response> {
    let header = |name: &str| call.headers.get(name).and_then(|v| v.to_str().ok());
    if call
        .headers
        .keys()
        .any(|h| h.as_str().starts_with("x-amz-copy-source-"))
    {
        return Err(err(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "conditional copies (x-amz-copy-source-if-*) are not supported",
        ));
    }
    let source = header("x-amz-copy-source").unwrap_or_default();
    let (path, version) = match source.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (source, None),
    };
    if version.is_some() {
        return Err(err(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "object versions are not supported",
        ));
    }
    let path = String::from_utf8(sigv4::percent_decode(path)).map_err(|_| {
        err(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "x-amz-copy-source is not UTF-8",
        )
    })?;
    let Some((from_bucket, from_key)) = path
        .trim_start_matches('/')
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .map(|(b, k)| (b.to_string(), k.to_string()))
    else {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "x-amz-copy-source must be /bucket/key",
        ));
    };
    let attrs = match header("x-amz-metadata-directive").unwrap_or("COPY") {
        "COPY" => None,
        "REPLACE" => Some(attributes(&call.headers)?),
        other => {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("x-amz-metadata-directive must be COPY or REPLACE, not {other:?}"),
            ));
        }
    };
    if (from_bucket.as_str(), from_key.as_str()) == (bucket, key) && attrs.is_none() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "copying an object to itself without changing its metadata \
             (x-amz-metadata-directive: REPLACE) does nothing",
        ));
    }
    let ns = call.namespace.clone();
    call.small_body().await?;
    let meta = state
        .controller
        .copy_object(&ns, (&from_bucket, &from_key), bucket, key, attrs)
        .await?;
    Ok(xml(
        StatusCode::OK,
        format!(
            "<CopyObjectResult xmlns=\"{XMLNS}\"><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag></CopyObjectResult>",
            iso8601(meta.modified_ms),
            xml_escape(&meta.etag)
        ),
    ))
}

async fn create_multipart(
    state: &AppState,
    call: Call,
    bucket: &str,
    key: &str,
) -> S3Result<Response> {
    let attrs = attributes(&call.headers)?;
    let ns = call.namespace.clone();
    call.small_body().await?;
    let upload = state
        .controller
        .create_multipart(&ns, bucket, key, attrs)
        .await?;
    Ok(xml(
        StatusCode::OK,
        format!(
            "<InitiateMultipartUploadResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
            xml_escape(bucket),
            xml_escape(key),
            upload.id
        ),
    ))
}

async fn upload_part(state: &AppState, call: Call, bucket: &str, key: &str) -> S3Result<Response> {
    let number: u32 = call
        .query("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            err(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("partNumber must be 1 to {MAX_PART_NUMBER}"),
            )
        })?;
    let id = call.query("uploadId").unwrap_or_default();
    // Refused before any byte of the body is read.
    let upload = state
        .controller
        .get_multipart(&call.namespace, bucket, key, id)
        .await?;
    let up = state
        .controller
        .begin_upload(&call.namespace, bucket, key)
        .await?;
    let up = pump(up, call.body, &call.payload).await?;
    let part = state
        .controller
        .finish_part(&call.namespace, &upload, number, up)
        .await?;
    Ok(etag_response(&part.etag))
}

/// `(part number, etag)` of every `<Part>` of a CompleteMultipartUpload body.
fn listed_parts(xml: &str) -> Vec<(u32, String)> {
    let tag = |s: &str, name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = s.find(&open)? + open.len();
        let end = s[start..].find(&format!("</{name}>"))? + start;
        Some(s[start..end].trim().to_string())
    };
    xml.split("<Part>")
        .skip(1)
        .filter_map(|p| {
            let n = tag(p, "PartNumber")?.parse().ok()?;
            let etag = tag(p, "ETag")
                .unwrap_or_default()
                .replace("&quot;", "")
                .replace('"', "");
            Some((n, etag))
        })
        .collect()
}

async fn complete_multipart(
    state: &AppState,
    call: Call,
    bucket: &str,
    key: &str,
) -> S3Result<Response> {
    let id = call.query("uploadId").unwrap_or_default().to_string();
    let ns = call.namespace.clone();
    state
        .controller
        .get_multipart(&ns, bucket, key, &id)
        .await?;
    let body = call.small_body().await?;
    let listed = listed_parts(&String::from_utf8_lossy(&body));
    if listed.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "no <Part> in the request",
        ));
    }
    let meta = state
        .controller
        .complete_multipart(&ns, bucket, key, &id, &listed)
        .await?;
    Ok(xml(
        StatusCode::OK,
        format!(
            "<CompleteMultipartUploadResult xmlns=\"{XMLNS}\"><Location>/{0}/{1}</Location><Bucket>{0}</Bucket><Key>{1}</Key><ETag>&quot;{2}&quot;</ETag></CompleteMultipartUploadResult>",
            xml_escape(bucket),
            xml_escape(key),
            meta.etag
        ),
    ))
}

/// A non-negative number parameter, `default` if absent.
fn number(call: &Query, name: &str, default: usize) -> S3Result<usize> {
    match call.query(name) {
        Some(v) => v.parse().map_err(|_| {
            err(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("{name} is not a number"),
            )
        }),
        None => Ok(default),
    }
}

/// `<Initiator>` and `<Owner>`: the namespace.
fn owner(ns: &str) -> String {
    let ns = xml_escape(ns);
    format!(
        "<Initiator><ID>{ns}</ID><DisplayName>{ns}</DisplayName></Initiator><Owner><ID>{ns}</ID><DisplayName>{ns}</DisplayName></Owner>"
    )
}

async fn list_parts(
    state: &AppState,
    ns: &str,
    bucket: &str,
    key: &str,
    call: Query,
) -> S3Result<Response> {
    let id = call.query("uploadId").unwrap_or_default();
    let max = number(&call, "max-parts", 1000)?.min(1000);
    let marker = number(&call, "part-number-marker", 0)?;
    let (upload, parts) = state.controller.list_parts(ns, bucket, key, id).await?;
    let after: Vec<_> = parts
        .iter()
        .filter(|p| p.number as usize > marker)
        .collect();
    let page = &after[..after.len().min(max)];
    let truncated = after.len() > page.len();
    let mut body = format!(
        "<ListPartsResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId>{}<StorageClass>STANDARD</StorageClass><PartNumberMarker>{marker}</PartNumberMarker><MaxParts>{max}</MaxParts><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(bucket),
        xml_escape(key),
        xml_escape(&upload.id),
        owner(ns)
    );
    if let Some(last) = page.last() {
        body.push_str(&format!(
            "<NextPartNumberMarker>{}</NextPartNumberMarker>",
            last.number
        ));
    }
    for p in page {
        body.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size></Part>",
            p.number,
            iso8601(p.uploaded_ms),
            p.etag,
            p.size
        ));
    }
    body.push_str("</ListPartsResult>");
    Ok(xml(StatusCode::OK, body))
}

async fn list_multipart_uploads(
    state: &AppState,
    ns: &str,
    bucket: &str,
    call: Query,
) -> S3Result<Response> {
    if call.query("delimiter").is_some_and(|d| !d.is_empty()) {
        return Err(err(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "listing multipart uploads with a delimiter is not supported",
        ));
    }
    let prefix = call.query("prefix").unwrap_or("");
    let max = number(&call, "max-uploads", 1000)?.min(1000);
    let key_marker = call.query("key-marker").unwrap_or("");
    let id_marker = call.query("upload-id-marker").unwrap_or("");
    // Without an upload id marker, every upload of the marker's key is skipped.
    let after = (!key_marker.is_empty()).then(|| {
        let id = match id_marker {
            "" => char::MAX.to_string(),
            id => id.to_string(),
        };
        (key_marker.to_string(), id)
    });
    let (uploads, truncated) = if max == 0 {
        (Vec::new(), false)
    } else {
        state
            .controller
            .list_multipart_uploads(ns, bucket, prefix, after, max)
            .await?
    };
    let url = call.query("encoding-type") == Some("url");
    let enc = |s: &str| if url { url_encode(s) } else { xml_escape(s) };
    let mut body = format!(
        "<ListMultipartUploadsResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><KeyMarker>{}</KeyMarker><UploadIdMarker>{}</UploadIdMarker><Prefix>{}</Prefix><MaxUploads>{max}</MaxUploads><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(bucket),
        enc(key_marker),
        xml_escape(id_marker),
        enc(prefix)
    );
    if url {
        body.push_str("<EncodingType>url</EncodingType>");
    }
    if let (true, Some(last)) = (truncated, uploads.last()) {
        body.push_str(&format!(
            "<NextKeyMarker>{}</NextKeyMarker><NextUploadIdMarker>{}</NextUploadIdMarker>",
            enc(&last.key),
            xml_escape(&last.id)
        ));
    }
    for u in &uploads {
        body.push_str(&format!(
            "<Upload><Key>{}</Key><UploadId>{}</UploadId>{}<StorageClass>STANDARD</StorageClass><Initiated>{}</Initiated></Upload>",
            enc(&u.key),
            xml_escape(&u.id),
            owner(ns),
            iso8601(u.created_ms)
        ));
    }
    body.push_str("</ListMultipartUploadsResult>");
    Ok(xml(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_bodies_are_read() {
        let body = r#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"abc"</ETag><PartNumber>1</PartNumber></Part><Part><ETag>&quot;def&quot;</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>"#;
        assert_eq!(
            listed_parts(body),
            [(1, "abc".to_string()), (2, "def".to_string())]
        );
        assert!(listed_parts("<nothing/>").is_empty());
        assert_eq!(url_encode("a b/c%"), "a%20b/c%25");
        assert_eq!(xml_escape("<&>"), "&lt;&amp;&gt;");
    }
}

//! [`Client`]: one pooled HTTP/1 client per server, cheap to clone and share between tasks.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ignis_core::{ActivationRecord, ExecutionRecord, FunctionVersion, Network, Web};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::{DeployJson, short_text};
use crate::config;
use crate::{
    ActivationFilter, ActivationLogs, ActivationPage, CliConfig, ClientError, CodeUpload,
    DeployRequest, InvokeResponse, TransportError,
};

const X_IGNIS_ACTIVATION_ID: HeaderName = HeaderName::from_static("x-ignis-activation-id");
const X_IGNIS_STATUS: HeaderName = HeaderName::from_static("x-ignis-status");
const X_IGNIS_COLD: HeaderName = HeaderName::from_static("x-ignis-cold");
const X_IGNIS_DURATION_MS: HeaderName = HeaderName::from_static("x-ignis-duration-ms");
const X_IGNIS_INIT_MS: HeaderName = HeaderName::from_static("x-ignis-init-ms");
const X_IGNIS_VERSION: HeaderName = HeaderName::from_static("x-ignis-version");

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const APPLICATION_ZIP: HeaderValue = HeaderValue::from_static("application/zip");
const APPLICATION_OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one Ignis server, in one namespace.
///
/// Connections are pooled and kept alive; clones share the pool, so make one `Client` and
/// clone it into every task. Every method is one HTTP request.
#[derive(Clone)]
pub struct Client {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    inner: Arc<Inner>,
}

struct Inner {
    /// `http://host:port[/prefix]`, without a trailing slash.
    base: String,
    /// `{base}/v1/namespaces/{ns}`, encoded.
    ns_url: String,
    namespace: String,
    /// `Bearer <key>`, marked sensitive; `None` with an empty key.
    auth: Option<HeaderValue>,
    /// The key's id and secret.
    key_parts: Option<(String, String)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.base)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `url` (`http://host:port`, `host:port` meaning http) using API
    /// key `key` (no `Authorization` header when empty), working in `namespace`.
    pub fn new(url: &str, key: &str, namespace: &str) -> Result<Client, ClientError> {
        let base = normalize_url(url)?;
        ignis_core::validate_namespace_name(namespace)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let auth = if key.is_empty() {
            None
        } else {
            let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                ClientError::Config("the API key contains characters not allowed in HTTP".into())
            })?;
            value.set_sensitive(true);
            Some(value)
        };
        let mut ns_url = format!("{base}/v1/namespaces/");
        push_segment(&mut ns_url, namespace);

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let key_parts = key
            .split_once(':')
            .map(|(id, secret)| (id.to_owned(), secret.to_owned()));
        Ok(Client {
            http,
            inner: Arc::new(Inner {
                base,
                ns_url,
                namespace: namespace.to_owned(),
                auth,
                key_parts,
            }),
        })
    }

    /// A client configured from flags or environment variables (already parsed into the
    /// options), completed from the CLI config file written by `ignis serve`
    /// ([`CliConfig::default_path`]). The namespace defaults to `default`.
    ///
    /// The file's key is only used with the file's URL, so a key is never sent to a server it
    /// was not issued by.
    pub fn from_opts(
        url: Option<String>,
        key: Option<String>,
        namespace: Option<String>,
    ) -> Result<Client, ClientError> {
        let path = CliConfig::default_path();
        let file = match &path {
            Some(p) if url.is_none() || key.is_none() => CliConfig::load(p)?,
            _ => None,
        };
        let settings = config::resolve(url, key, namespace, file, path.as_deref())?;
        Client::new(&settings.url, &settings.key, &settings.namespace)
    }

    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// The API key's id and secret: also the AWS access key id and secret access key of the
    /// Lambda-compatible API. `None` without a key.
    pub fn key_parts(&self) -> Option<(&str, &str)> {
        self.inner
            .key_parts
            .as_ref()
            .map(|(id, secret)| (id.as_str(), secret.as_str()))
    }

    /// The namespace this client works in.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Sends one request to `path` (absolute, already encoded, e.g. `/v1/system/info`), with
    /// an optional body and its content type, and returns the answer whatever its status.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        let (content_type, bytes) = match body {
            Some((ct, bytes)) => {
                let ct = HeaderValue::from_str(ct)
                    .map_err(|_| ClientError::Config(format!("invalid content type {ct:?}")))?;
                (Some(ct), bytes)
            }
            None => (None, Bytes::new()),
        };
        self.send(method, self.url_for(path), content_type, bytes)
            .await
    }

    /// `{base}{path}`.
    fn url_for(&self, path: &str) -> String {
        let base = &self.inner.base;
        let mut target = String::with_capacity(base.len() + path.len());
        target.push_str(base);
        target.push_str(path);
        target
    }

    /// Sends one request to `target`, a full URL under the base URL.
    async fn send(
        &self,
        method: Method,
        target: String,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        self.send_with(method, target, content_type, body, None)
            .await
    }

    /// [`Client::send`] with one more header.
    async fn send_with(
        &self,
        method: Method,
        target: String,
        content_type: Option<HeaderValue>,
        body: Bytes,
        extra: Option<(&'static str, HeaderValue)>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        let base = &self.inner.base;
        let uri = Uri::try_from(target)
            .map_err(|e| ClientError::Config(format!("invalid request URL: {e}")))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        if let Some(auth) = &self.inner.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if let Some(ct) = content_type {
            headers.insert(CONTENT_TYPE, ct);
        }
        if let Some((name, value)) = extra {
            headers.insert(name, value);
        }
        let resp = self.http.request(req).await.map_err(|e| {
            let url = base.clone();
            if e.is_connect() {
                ClientError::Connect {
                    url,
                    source: TransportError::new(e),
                }
            } else {
                ClientError::Transport {
                    url,
                    source: TransportError::new(e),
                }
            }
        })?;
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| ClientError::Transport {
                url: base.clone(),
                source: TransportError::new(e),
            })?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    /// Sends a request and decodes a successful JSON answer; any other status is an
    /// [`ClientError::Api`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        target: String,
        body: Option<(HeaderValue, Bytes)>,
        what: &'static str,
    ) -> Result<T, ClientError> {
        let (ct, bytes) = match body {
            Some((ct, bytes)) => (Some(ct), bytes),
            None => (None, Bytes::new()),
        };
        let (status, headers, body) = self.send(method, target, ct, bytes).await?;
        if !status.is_success() {
            return Err(api_error(status, &headers, &body));
        }
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode { what, source })
    }

    /// `{base}/v1/namespaces/{ns}/functions/{name}{suffix}`, with room for a short query.
    fn function_url(&self, name: &str, suffix: &str) -> String {
        let ns = &self.inner.ns_url;
        let mut url = String::with_capacity(ns.len() + name.len() + suffix.len() + 32);
        url.push_str(ns);
        url.push_str("/functions/");
        push_segment(&mut url, name);
        url.push_str(suffix);
        url
    }

    /// `GET /healthz`: `Ok` when the server answers 200.
    pub async fn healthz(&self) -> Result<(), ClientError> {
        let (status, headers, body) = self
            .send(Method::GET, self.url_for("/healthz"), None, Bytes::new())
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(api_error(status, &headers, &body))
        }
    }

    /// `GET /v1/system/info`: version, active sandbox protections and so on.
    pub async fn system_info(&self) -> Result<serde_json::Value, ClientError> {
        let target = self.url_for("/v1/system/info");
        self.call(Method::GET, target, None, "system info").await
    }

    /// Deploys a new version of function `name` (creating the function if it is new) and
    /// returns it.
    pub async fn deploy(
        &self,
        name: &str,
        req: &DeployRequest,
    ) -> Result<FunctionVersion, ClientError> {
        let mut path = Query::new(self.function_url(name, ""));
        if !req.overwrite {
            path.push("overwrite", "false");
        }
        let body = match &req.code {
            None => {
                let doc = DeployJson {
                    runtime: req.runtime,
                    handler: &req.handler,
                    memory_mb: req.memory_mb,
                    timeout_ms: req.timeout_ms,
                    env: &req.env,
                    max_instances: req.max_instances,
                    min_instances: req.min_instances,
                    instance_concurrency: req.instance_concurrency,
                    retries: req.retries,
                    on_success: req.on_success.as_deref(),
                    on_failure: req.on_failure.as_deref(),
                    network: req.network,
                    web: req.web,
                    cors_origins: &req.cors_origins,
                    tmp_mb: req.tmp_mb,
                    components: &req.components,
                    workflow: req.workflow.as_ref(),
                };
                let json = serde_json::to_vec(&doc).map_err(|source| ClientError::Decode {
                    what: "deployment",
                    source,
                })?;
                (APPLICATION_JSON, Bytes::from(json))
            }
            Some(code) => {
                path.push("runtime", req.runtime.as_str());
                path.push("handler", &req.handler);
                if let Some(m) = req.memory_mb {
                    path.push("memory_mb", &m.to_string());
                }
                if let Some(t) = req.timeout_ms {
                    path.push("timeout_ms", &t.to_string());
                }
                if let Some(n) = req.max_instances {
                    path.push("max_instances", &n.to_string());
                }
                if let Some(n) = req.min_instances {
                    path.push("min_instances", &n.to_string());
                }
                if let Some(n) = req.instance_concurrency {
                    path.push("instance_concurrency", &n.to_string());
                }
                if let Some(n) = req.retries {
                    path.push("retries", &n.to_string());
                }
                if let Some(f) = &req.on_success {
                    path.push("on_success", f);
                }
                if let Some(f) = &req.on_failure {
                    path.push("on_failure", f);
                }
                if let Some(n) = req.network {
                    path.push("network", if n == Network::Host { "host" } else { "none" });
                }
                if let Some(t) = req.tmp_mb {
                    path.push("tmp_mb", &t.to_string());
                }
                if let Some(w) = req.web {
                    let w = match w {
                        Web::Off => "false",
                        Web::On => "true",
                        Web::Public => "public",
                    };
                    path.push("web", w);
                }
                for o in &req.cors_origins {
                    path.push("cors_origin", o);
                }
                for (k, v) in &req.env {
                    path.push("env", &format!("{k}={v}"));
                }
                match code {
                    CodeUpload::Zip(bytes) => (APPLICATION_ZIP, bytes.clone()),
                    CodeUpload::File { filename, bytes } => {
                        path.push("filename", filename);
                        (APPLICATION_OCTET_STREAM, bytes.clone())
                    }
                }
            }
        };
        self.call(Method::PUT, path.0, Some(body), "function version")
            .await
    }

    /// The latest version of every function in the namespace, by name.
    pub async fn list_functions(&self) -> Result<Vec<FunctionVersion>, ClientError> {
        #[derive(Deserialize)]
        struct Functions {
            functions: Vec<FunctionVersion>,
        }
        let mut target = self.inner.ns_url.clone();
        target.push_str("/functions");
        let list: Functions = self
            .call(Method::GET, target, None, "function list")
            .await?;
        Ok(list.functions)
    }

    /// The latest version of function `name`, or the given one with `name@3`.
    pub async fn get_function(&self, name: &str) -> Result<FunctionVersion, ClientError> {
        let target = self.function_url(name, "");
        self.call(Method::GET, target, None, "function version")
            .await
    }

    /// Every version of function `name`, oldest first.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<FunctionVersion>, ClientError> {
        #[derive(Deserialize)]
        struct Versions {
            versions: Vec<FunctionVersion>,
        }
        let target = self.function_url(name, "/versions");
        let list: Versions = self.call(Method::GET, target, None, "version list").await?;
        Ok(list.versions)
    }

    /// Version `version` of function `name`.
    pub async fn get_version(
        &self,
        name: &str,
        version: u32,
    ) -> Result<FunctionVersion, ClientError> {
        let target = self.function_url(name, &format!("/versions/{version}"));
        self.call(Method::GET, target, None, "function version")
            .await
    }

    /// Deletes function `name` and all its versions; the server answers
    /// `{"deleted": name, "versions": n}`.
    pub async fn delete_function(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        let target = self.function_url(name, "");
        self.call(Method::DELETE, target, None, "deletion").await
    }

    /// Invokes function `name` (or `name@3`; or give `version`) with `body` as the event and
    /// waits for the outcome.
    ///
    /// Returns `Ok` whatever the function did — check [`InvokeResponse::is_success`] or use
    /// [`InvokeResponse::into_result`]; errors are for invocations that did not reach the
    /// function (unknown function, payload too large, 429 when it is at capacity...). The body
    /// is sent as `application/json`; for python and node it must be JSON (empty means `{}`),
    /// for exec it may be any bytes.
    pub async fn invoke(
        &self,
        name: &str,
        version: Option<u32>,
        body: Bytes,
    ) -> Result<InvokeResponse, ClientError> {
        let mut target = self.function_url(name, "/invoke");
        if let Some(v) = version {
            // Writing to a String cannot fail.
            let _ = write!(target, "?version={v}");
        }
        let (status, headers, body) = self
            .send(Method::POST, target, Some(APPLICATION_JSON), body)
            .await?;
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &HeaderName| text(name).and_then(|v| v.trim().parse::<u64>().ok());
        let Some(fn_status) = text(&X_IGNIS_STATUS) else {
            if status.is_success() {
                return Err(ClientError::Api {
                    status: status.as_u16(),
                    code: "invalid_response".into(),
                    message: "the server answered the invocation without an x-ignis-status header"
                        .into(),
                    retry_after: None,
                });
            }
            return Err(api_error(status, &headers, &body));
        };
        Ok(InvokeResponse {
            status: status.as_u16(),
            fn_status: fn_status.to_owned(),
            activation_id: text(&X_IGNIS_ACTIVATION_ID).unwrap_or_default().to_owned(),
            cold: text(&X_IGNIS_COLD) == Some("true"),
            duration_ms: number(&X_IGNIS_DURATION_MS).unwrap_or(0),
            init_ms: number(&X_IGNIS_INIT_MS).unwrap_or(0),
            version: number(&X_IGNIS_VERSION)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            body,
        })
    }

    /// `POST …/invoke?blocking=false`: queues an asynchronous invocation and returns the
    /// server's answer (202): `activation_id`, `status` (queued, done or dead) and `new`. The
    /// same `idempotency_key` returns the same activation.
    pub async fn invoke_async(
        &self,
        name: &str,
        version: Option<u32>,
        body: Bytes,
        idempotency_key: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut target = self.function_url(name, "/invoke?blocking=false");
        if let Some(v) = version {
            let _ = write!(target, "&version={v}");
        }
        let extra = match idempotency_key {
            Some(k) => Some((
                "idempotency-key",
                HeaderValue::from_str(k)
                    .map_err(|_| ClientError::Config("invalid idempotency key".into()))?,
            )),
            None => None,
        };
        let (status, headers, body) = self
            .send_with(Method::POST, target, Some(APPLICATION_JSON), body, extra)
            .await?;
        if !status.is_success() {
            return Err(api_error(status, &headers, &body));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
                what: "async invocation",
                source,
            })?;
        Ok(v)
    }

    /// A JSON call under the namespace: `{base}/v1/namespaces/{ns}{path}` with an optional JSON
    /// body; any status but 2xx is an [`ClientError::Api`].
    pub async fn namespace_json(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let target = format!("{}{path}", self.inner.ns_url);
        self.json_at(method, target, body).await
    }

    async fn json_at(
        &self,
        method: Method,
        target: String,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let body = body.map(|b| (APPLICATION_JSON, Bytes::from(b.to_string())));
        self.call(method, target, body, "response").await
    }

    /// `POST /v1/namespaces/{ns}/topics/{topic}`: publishes a message, JSON unless
    /// `content_type` says otherwise. Answers `{"id", "triggers"}` once it is stored.
    pub async fn publish(
        &self,
        topic: &str,
        content_type: Option<&str>,
        message: Bytes,
    ) -> Result<serde_json::Value, ClientError> {
        let mut target = format!("{}/topics/", self.inner.ns_url);
        push_segment(&mut target, topic);
        let ct = match content_type {
            None => APPLICATION_JSON,
            Some(ct) => HeaderValue::from_str(ct)
                .map_err(|_| ClientError::Config(format!("{ct:?} is not a valid content type")))?,
        };
        self.call(Method::POST, target, Some((ct, message)), "publish")
            .await
    }

    /// `/v1/namespaces` (no name) or `/v1/namespaces/{name}`: namespaces, for admin keys.
    pub async fn namespaces(
        &self,
        method: Method,
        name: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut target = self.url_for("/v1/namespaces");
        if let Some(n) = name {
            target.push('/');
            push_segment(&mut target, n);
        }
        self.json_at(method, target, body).await
    }

    /// The API keys: `/v1/keys[/{id}]` (every key, admin keys) with `admin`, else the
    /// namespace's `/v1/namespaces/{ns}/keys[/{id}]`; with an optional JSON body.
    pub async fn keys(
        &self,
        method: Method,
        admin: bool,
        id: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut target = if admin {
            self.url_for("/v1/keys")
        } else {
            format!("{}/keys", self.inner.ns_url)
        };
        if let Some(id) = id {
            target.push('/');
            push_segment(&mut target, id);
        }
        self.json_at(method, target, body).await
    }

    /// `GET /v1/namespaces/{ns}/dlq`: asynchronous invocations that failed every attempt.
    pub async fn dead_letters(&self) -> Result<serde_json::Value, ClientError> {
        let target = format!("{}/dlq", self.inner.ns_url);
        self.call(Method::GET, target, None, "dead letters").await
    }

    /// `POST /v1/namespaces/{ns}/dlq/{id}/replay`: queues a dead-letter item again.
    pub async fn replay_dead_letter(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        let mut target = format!("{}/dlq/", self.inner.ns_url);
        push_segment(&mut target, id);
        target.push_str("/replay");
        self.call(Method::POST, target, None, "replay").await
    }

    /// One page of activations matching `filter`, newest first.
    pub async fn list_activations(
        &self,
        filter: &ActivationFilter,
    ) -> Result<ActivationPage, ClientError> {
        let mut target = self.inner.ns_url.clone();
        target.push_str("/activations");
        let mut q = Query::new(target);
        if let Some(f) = &filter.function {
            q.push("function", f);
        }
        if let Some(s) = filter.status {
            q.push("status", s.as_str());
        }
        if let Some(t) = &filter.trigger {
            q.push("trigger", t);
        }
        if let Some(t) = filter.since {
            q.push("since", &t.to_string());
        }
        if let Some(t) = filter.until {
            q.push("until", &t.to_string());
        }
        if let Some(n) = filter.limit {
            q.push("limit", &n.to_string());
        }
        if let Some(c) = &filter.cursor {
            q.push("cursor", c);
        }
        self.call(Method::GET, q.0, None, "activation list").await
    }

    /// One activation, with its result or error and its logs.
    pub async fn get_activation(&self, id: &str) -> Result<ActivationRecord, ClientError> {
        let target = self.activation_url(id, "");
        self.call(Method::GET, target, None, "activation").await
    }

    /// Workflow executions, newest first (of one function if given).
    pub async fn list_executions(
        &self,
        function: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<ExecutionRecord>, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            executions: Vec<ExecutionRecord>,
        }
        let mut target = self.inner.ns_url.clone();
        target.push_str("/executions");
        let mut q = Query::new(target);
        if let Some(f) = function {
            q.push("function", f);
        }
        if let Some(n) = limit {
            q.push("limit", &n.to_string());
        }
        let page: Page = self.call(Method::GET, q.0, None, "executions").await?;
        Ok(page.executions)
    }

    /// One workflow execution with its ended steps.
    pub async fn get_execution(&self, id: &str) -> Result<ExecutionRecord, ClientError> {
        let mut url = self.inner.ns_url.clone();
        url.push_str("/executions/");
        push_segment(&mut url, id);
        self.call(Method::GET, url, None, "execution").await
    }

    /// The logs of one activation.
    pub async fn activation_logs(&self, id: &str) -> Result<ActivationLogs, ClientError> {
        let target = self.activation_url(id, "/logs");
        self.call(Method::GET, target, None, "activation logs")
            .await
    }

    /// `{base}/v1/namespaces/{ns}/activations/{id}{suffix}`.
    fn activation_url(&self, id: &str, suffix: &str) -> String {
        let mut url = self.inner.ns_url.clone();
        url.push_str("/activations/");
        push_segment(&mut url, id);
        url.push_str(suffix);
        url
    }
}

/// Checks a server URL and returns it as `http://authority[/prefix]` with no trailing slash.
pub(crate) fn normalize_url(url: &str) -> Result<String, ClientError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(ClientError::Config("the server URL is empty".into()));
    }
    let full = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let bad = |why: &str| ClientError::Config(format!("invalid server URL {url:?}: {why}"));
    let uri: Uri = full
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported by this client; use http:// (or a local TLS proxy)",
            ));
        }
        _ => return Err(bad("only http:// URLs are supported")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if uri.query().is_some() {
        return Err(bad("a server URL has no query"));
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(format!("http://{authority}{prefix}"))
}

/// Builds `path?k=v&k=v`, percent-encoding keys and values.
struct Query(String);

impl Query {
    fn new(path: String) -> Self {
        Query(path)
    }

    fn push(&mut self, key: &str, value: &str) {
        self.0.push(if self.0.contains('?') { '&' } else { '?' });
        push_encoded(&mut self.0, key, b"");
        self.0.push('=');
        push_encoded(&mut self.0, value, b"");
    }
}

/// Appends `segment` as one path segment: everything but unreserved characters and `@`
/// (for `name@3`) percent-encoded, and `.`/`..` encoded so they cannot climb the path.
fn push_segment(out: &mut String, segment: &str) {
    if segment == "." || segment == ".." {
        for _ in 0..segment.len() {
            out.push_str("%2E");
        }
    } else {
        push_encoded(out, segment, b"@");
    }
}

fn push_encoded(out: &mut String, s: &str, keep: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep.contains(&b)
        {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// The error for a non-success answer: the server's JSON error if it sent one, else a
/// description of the HTTP status.
fn api_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ClientError {
    #[derive(Deserialize)]
    struct Doc {
        error: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        field: Option<String>,
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let reason = status
        .canonical_reason()
        .map(|r| r.to_ascii_lowercase())
        .unwrap_or_else(|| format!("http {}", status.as_u16()));
    let (code, message) = match serde_json::from_slice::<Doc>(body) {
        Ok(Doc { error }) => {
            let mut message = if error.message.is_empty() {
                reason
            } else {
                error.message
            };
            if let Some(field) = error.field.filter(|f| !message.contains(f.as_str())) {
                message = format!("{field}: {message}");
            }
            (error.code, message)
        }
        Err(_) => (
            reason.replace([' ', '-'], "_"),
            short_text(body).unwrap_or(reason),
        ),
    };
    ClientError::Api {
        status: status.as_u16(),
        code,
        message,
        retry_after,
    }
}

mod data;
mod observe;

pub use observe::LogEvent;

#[cfg(test)]
mod tests;

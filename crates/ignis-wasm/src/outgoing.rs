//! Outgoing requests of `wasi:http` components (`wasi:http/outgoing-handler`): a component may
//! reach its namespace's data through the Ignis API, and nothing else.
//!
//! ```text
//!  guest: GET http://127.0.0.1:9400/v1/namespaces/ns/kv/k ──► OutgoingHooks::send_request
//!     scheme http and authority = DataApi::authority?  else HTTP-request-denied
//!     Authorization absent (the instance's token is put in) or that very token? else denied
//!     at most MAX_OPEN requests at once per invocation?   else connection-limit-reached
//!        │ origin-form request (path and query), the body streamed as the guest writes it
//!        ▼
//!  ApiService::call — the server's own router, in this process: no socket, no network
//!        │ the gateway authenticates the token like any credential: its namespace's data only
//!        ▼
//!  response (streamed back to the guest)
//! ```
//!
//! A request still in flight when the invocation ends is dropped with its store. Its body then
//! fails rather than ends: `wasmtime-wasi-http` reports an outgoing body whose store went away
//! as finished, which would let a guest that trapped or timed out mid-upload store a truncated
//! object ([`GuestBody`]).
//!
//! The authority is a name, not an address: nothing listens there, and a guest has no
//! sockets anyway. Without a [`DataApi`] (modules, or a server that gave none) every outgoing
//! request is refused, as before data access existed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::header::{AUTHORIZATION, HeaderValue};
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{Error as HttpError, WasiBody, WasiHttpHooks};

/// Errors of a body crossing between a guest and the API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request to, or a response from, an [`ApiService`].
pub type ApiBody = UnsyncBoxBody<Bytes, BoxError>;

/// The future of one request to an [`ApiService`].
pub type ApiFuture = Pin<Box<dyn Future<Output = hyper::Response<ApiBody>> + Send>>;

/// The Ignis API served in this process, without a connection: where components' requests to
/// their data go. The server gives its router (`ignis-gateway`); whatever it answers goes back
/// to the guest as it is.
pub trait ApiService: Send + Sync {
    /// Serves one request (origin-form URI: path and query).
    fn call(&self, request: hyper::Request<ApiBody>) -> ApiFuture;
}

/// Requests one invocation may have in flight at once, as an instance's relay allows
/// connections (docs/baas.md, limits).
const MAX_OPEN: usize = 32;

/// What a component may reach: the API at `authority`, with its instance's token.
#[derive(Clone)]
pub struct DataApi {
    service: Arc<dyn ApiService>,
    authority: String,
    bearer: HeaderValue,
}

impl std::fmt::Debug for DataApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("DataApi")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl DataApi {
    /// Access to `service` for requests to `http://{authority}` (e.g. `127.0.0.1:9400`, the
    /// authority of the `IGNIS_API_URL` the guest is given), authenticated by `token`.
    /// `None` if the token cannot be a header value.
    pub fn new(service: Arc<dyn ApiService>, authority: &str, token: &str) -> Option<Self> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        bearer.set_sensitive(true);
        Some(DataApi {
            service,
            authority: authority.to_string(),
            bearer,
        })
    }
}

/// The `wasi:http` hooks of one invocation's store. Must be dropped before the store's
/// resource table (see [`GuestBody`]).
pub(crate) struct OutgoingHooks {
    api: Option<DataApi>,
    open: Arc<Semaphore>,
    /// Whether the store lives; cleared when the hooks are dropped with it.
    alive: Arc<AtomicBool>,
}

impl Drop for OutgoingHooks {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

/// A guest's request body as the API reads it: its end is an end only while the guest's store
/// lives. When the store is dropped mid-body (trap, timeout), `wasmtime-wasi-http` ends the
/// body as if the guest had finished it; this turns that end into an error, so that the API
/// stores nothing of a body cut short, as it does for a client whose connection drops. A body
/// the guest finished ends before its store goes (the store is dropped after the guest
/// returned), unless the guest returned without waiting for the response — and then the
/// request is cut off with the invocation anyway.
struct GuestBody {
    inner: WasiBody,
    alive: Arc<AtomicBool>,
}

impl hyper::body::Body for GuestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(frame)) => {
                Poll::Ready(Some(frame.map_err(|e| Box::new(e) as BoxError)))
            }
            // The hooks are dropped before the resource table, and the end is seen only once
            // the table dropped the body's sender: a store gone is seen here.
            Poll::Ready(None) if self.alive.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(
                "the invocation ended before its request body was finished".into(),
            ))),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl OutgoingHooks {
    pub fn new(api: Option<DataApi>) -> Self {
        OutgoingHooks {
            api,
            open: Arc::new(Semaphore::new(MAX_OPEN)),
            alive: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The request as the API will get it, or why it is refused.
    fn admit(
        &self,
        request: hyper::Request<WasiBody>,
    ) -> Result<(&DataApi, hyper::Request<ApiBody>), HttpError> {
        let api = self.api.as_ref().ok_or(HttpError::HttpRequestDenied)?;
        let uri = request.uri();
        if uri.scheme() != Some(&hyper::http::uri::Scheme::HTTP)
            || uri.authority().map(|a| a.as_str()) != Some(api.authority.as_str())
        {
            return Err(HttpError::HttpRequestDenied);
        }
        let (mut parts, body) = request.into_parts();
        match parts.headers.get(AUTHORIZATION) {
            None => {
                parts.headers.insert(AUTHORIZATION, api.bearer.clone());
            }
            Some(given) if given == api.bearer => {}
            // Another credential (an API key in the function's environment, say) would reach
            // more than the instance's own data: not through here.
            Some(_) => return Err(HttpError::HttpRequestDenied),
        }
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let body = GuestBody {
            inner: body,
            alive: self.alive.clone(),
        }
        .boxed_unsync();
        Ok((api, hyper::Request::from_parts(parts, body)))
    }
}

type IoFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;
type SendFuture = Box<
    dyn Future<Output = wasmtime_wasi_http::Result<(hyper::Response<WasiBody>, IoFuture)>> + Send,
>;

impl WasiHttpHooks for OutgoingHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let admitted = self.admit(request).and_then(|(api, request)| {
            let permit = self
                .open
                .clone()
                .try_acquire_owned()
                .map_err(|_| HttpError::ConnectionLimitReached)?;
            Ok((api.service.clone(), request, permit))
        });
        Box::new(async move {
            let (service, request, permit) = admitted?;
            let response = service.call(request).await;
            // The place is given back when the guest is done with the response's body.
            let response = response.map(|body| {
                body.map_err(|e| HttpError::InternalError(Some(e.to_string())))
                    .map_frame(move |frame| {
                        let _held = &permit;
                        frame
                    })
                    .boxed_unsync()
            });
            Ok((response, Box::new(async { Ok(()) }) as IoFuture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    /// Answers with the request's method, path and authorization, and counts calls.
    struct Echo;

    impl ApiService for Echo {
        fn call(&self, request: hyper::Request<ApiBody>) -> ApiFuture {
            Box::pin(async move {
                let auth = request
                    .headers()
                    .get(AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_string());
                let text = format!("{} {} {auth:?}", request.method(), request.uri());
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let text = format!("{text} {}", String::from_utf8_lossy(&body));
                hyper::Response::new(
                    Full::new(Bytes::from(text))
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                )
            })
        }
    }

    fn request(uri: &str, auth: Option<&str>, body: &'static str) -> hyper::Request<WasiBody> {
        let mut b = hyper::Request::builder().method("PUT").uri(uri);
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(
            Full::new(Bytes::from(body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .unwrap()
    }

    async fn send(
        hooks: &mut OutgoingHooks,
        req: hyper::Request<WasiBody>,
    ) -> Result<String, HttpError> {
        let fut = hooks.send_request(req, None, Box::new(async { Ok(()) }));
        let (response, _) = Pin::from(fut).await?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn only_the_api_is_reached_and_only_with_the_instance_token() {
        let api = DataApi::new(Arc::new(Echo), "127.0.0.1:9400", "ibt_x").unwrap();
        let mut hooks = OutgoingHooks::new(Some(api));
        // The token is put in when absent, accepted when it is the instance's.
        let got = send(
            &mut hooks,
            request(
                "http://127.0.0.1:9400/v1/namespaces/a/kv/k?ttl=5",
                None,
                "v",
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            got,
            "PUT /v1/namespaces/a/kv/k?ttl=5 Some(\"Bearer ibt_x\") v"
        );
        let got = send(
            &mut hooks,
            request("http://127.0.0.1:9400/x", Some("Bearer ibt_x"), ""),
        )
        .await
        .unwrap();
        assert_eq!(got, "PUT /x Some(\"Bearer ibt_x\") ");
        // Anything else is refused before it reaches the API.
        for (uri, auth) in [
            ("http://127.0.0.1:9401/x", None),
            ("http://example.com/x", None),
            ("https://127.0.0.1:9400/x", None),
            ("http://127.0.0.1:9400/x", Some("Bearer ik_admin:secret")),
            ("http://127.0.0.1:9400/x", Some("Basic YTpi")),
        ] {
            let r = send(&mut hooks, request(uri, auth, "")).await;
            assert!(
                matches!(r, Err(HttpError::HttpRequestDenied)),
                "{uri} {auth:?}: {r:?}"
            );
        }
        // Without data access, nothing at all.
        let mut none = OutgoingHooks::new(None);
        let r = send(&mut none, request("http://127.0.0.1:9400/x", None, "")).await;
        assert!(matches!(r, Err(HttpError::HttpRequestDenied)));
    }

    #[tokio::test]
    async fn a_body_ends_only_while_its_store_lives() {
        let hooks = OutgoingHooks::new(None);
        let body = |alive: &Arc<AtomicBool>| GuestBody {
            inner: Full::new(Bytes::from_static(b"part"))
                .map_err(|e| match e {})
                .boxed_unsync(),
            alive: alive.clone(),
        };
        let whole = body(&hooks.alive).collect().await.unwrap().to_bytes();
        assert_eq!(&whole[..], b"part");
        let alive = hooks.alive.clone();
        drop(hooks);
        let cut = body(&alive).collect().await;
        assert!(
            cut.is_err(),
            "a store gone mid-body is an error, not an end"
        );
    }

    #[tokio::test]
    async fn requests_in_flight_are_bounded() {
        let api = DataApi::new(Arc::new(Echo), "api", "ibt_x").unwrap();
        let mut hooks = OutgoingHooks::new(Some(api));
        let mut held = Vec::new();
        for _ in 0..MAX_OPEN {
            let fut = hooks.send_request(
                request("http://api/x", None, ""),
                None,
                Box::new(async { Ok(()) }),
            );
            let (response, _) = Pin::from(fut).await.unwrap();
            held.push(response);
        }
        let r = send(&mut hooks, request("http://api/x", None, "")).await;
        assert!(matches!(r, Err(HttpError::ConnectionLimitReached)), "{r:?}");
        held.pop();
        let empty = hyper::Request::builder()
            .uri("http://api/y")
            .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
            .unwrap();
        assert!(
            send(&mut hooks, empty).await.is_ok(),
            "a place was given back"
        );
    }
}

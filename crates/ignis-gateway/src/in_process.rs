//! The API served in this process, without a connection: what `wasi:http` components of wasm
//! functions reach for their namespace's data (docs/baas.md). Requests go through the same
//! router, middleware and authorization as over a socket; only the socket is missing (and with
//! it the accept loop's limits, which the invocation's deadline and the guest's bound on
//! requests in flight stand in for).

use std::sync::{Arc, Weak};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use ignis_invoker::{ApiBody, ApiFuture, ApiService, BoxError};

use crate::error::ApiError;

/// The server's router as an [`ApiService`].
///
/// It holds the router weakly: the invoker keeps this, and the router's state keeps the
/// invoker, so a strong reference would keep both alive for good. The server holds the router
/// for as long as it serves; past that, requests are answered `503`.
#[derive(Debug, Clone)]
pub struct InProcessApi {
    router: Weak<Router>,
}

impl InProcessApi {
    /// Serves requests with `router` while the caller keeps it.
    pub fn new(router: &Arc<Router>) -> Self {
        InProcessApi {
            router: Arc::downgrade(router),
        }
    }
}

impl ApiService for InProcessApi {
    fn call(&self, request: axum::http::Request<ApiBody>) -> ApiFuture {
        let router = self.router.upgrade().map(|r| (*r).clone());
        Box::pin(async move {
            let response = match router {
                // The router is always ready and never fails (`Infallible`).
                Some(mut router) => match tower::Service::call(&mut router, request).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
                None => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the server is shutting down",
                )
                .into_response(),
            };
            response.map(|body: Body| body.map_err(BoxError::from).boxed_unsync())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    fn get(path: &str) -> axum::http::Request<ApiBody> {
        axum::http::Request::builder()
            .uri(path)
            .body(
                Full::new(Bytes::new())
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    #[tokio::test]
    async fn requests_reach_the_router_while_it_lives() {
        let router = Arc::new(Router::new().route("/v1/x", axum::routing::get(|| async { "x" })));
        let api = InProcessApi::new(&router);
        let r = api.call(get("/v1/x")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"x");
        drop(router);
        assert_eq!(
            api.call(get("/v1/x")).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

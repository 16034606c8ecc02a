//! Every route of the API in one table, [`ROUTES`]: its method, path, handler and the
//! [`Access`] it needs. The router is built from the table, and one middleware, [`guard`],
//! authorizes every request from it before any handler or body extractor runs — so a route
//! cannot exist without saying who may call it, and the authorization test
//! (`crates/ignis/tests/all/authz.rs`) goes over the same table.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, delete, get, post, put};

use crate::auth::Access;
use crate::error::ApiError;
use crate::{
    AppState, MAX_DEPLOY_BYTES, data, handlers, lambda_api, observe, s3, tenancy, topics, triggers,
    ui, web,
};

type Handler = fn() -> MethodRouter<Arc<AppState>>;

/// One route: `method` is an HTTP method, or `*` for every method.
pub struct Route {
    /// HTTP method, or `*`.
    pub method: &'static str,
    /// axum path pattern.
    pub path: &'static str,
    /// What the caller needs.
    pub access: Access,
    handler: Handler,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

fn payload_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(ignis_core::MAX_PAYLOAD_BYTES)
}

use Access::{Admin, AnyKey, DataRead, DataWrite, Handler as Own, Invoke, Public, Read, Write};

/// Every route of the HTTP API (documented in docs/api.md).
pub static ROUTES: &[Route] = &[
    route("GET", "/healthz", Public, || get(|| async { "ok" })),
    route("GET", "/readyz", Public, || {
        get(|| async { axum::Json(serde_json::json!({"ready": true})) })
    }),
    // An admin key, or nobody with --metrics-public: the handler decides.
    route("GET", "/metrics", Own, || get(observe::metrics)),
    // The dashboard's static files; the data it shows comes from the API, with a key.
    route("GET", "/ui", Public, || get(ui::index)),
    route("GET", "/ui/", Public, || get(ui::index)),
    route("GET", "/ui/{file}", Public, || get(ui::file)),
    route("GET", "/v1/system/info", AnyKey, || {
        get(handlers::system_info)
    }),
    route("GET", "/v1/system/cluster", Admin, || {
        get(handlers::system_cluster)
    }),
    route("GET", "/v1/system/instances", Admin, || {
        get(handlers::system_instances)
    }),
    route("GET", "/v1/namespaces", Admin, || {
        get(tenancy::list_namespaces)
    }),
    route("PUT", "/v1/namespaces/{ns}", Admin, || {
        put(tenancy::put_namespace)
    }),
    route("GET", "/v1/namespaces/{ns}", Admin, || {
        get(tenancy::get_namespace)
    }),
    route("DELETE", "/v1/namespaces/{ns}", Admin, || {
        delete(tenancy::delete_namespace)
    }),
    route("GET", "/v1/keys", Admin, || get(tenancy::list_all_keys)),
    route("POST", "/v1/keys", Admin, || {
        post(tenancy::create_admin_key)
    }),
    route("DELETE", "/v1/keys/{id}", Admin, || {
        delete(tenancy::revoke_any_key)
    }),
    route("GET", "/v1/namespaces/{ns}/keys", Write, || {
        get(tenancy::list_keys)
    }),
    route("POST", "/v1/namespaces/{ns}/keys", Write, || {
        post(tenancy::create_key)
    }),
    route("DELETE", "/v1/namespaces/{ns}/keys/{id}", Write, || {
        delete(tenancy::revoke_key)
    }),
    route("GET", "/v1/namespaces/{ns}/functions", Read, || {
        get(handlers::list_functions)
    }),
    route("PUT", "/v1/namespaces/{ns}/functions/{name}", Write, || {
        put(handlers::put_function).layer(DefaultBodyLimit::max(MAX_DEPLOY_BYTES))
    }),
    route("GET", "/v1/namespaces/{ns}/functions/{name}", Read, || {
        get(handlers::get_function)
    }),
    route(
        "DELETE",
        "/v1/namespaces/{ns}/functions/{name}",
        Write,
        || delete(handlers::delete_function),
    ),
    route(
        "GET",
        "/v1/namespaces/{ns}/functions/{name}/versions",
        Read,
        || get(handlers::list_versions),
    ),
    route(
        "GET",
        "/v1/namespaces/{ns}/functions/{name}/versions/{version}",
        Read,
        || get(handlers::get_version),
    ),
    route(
        "GET",
        "/v1/namespaces/{ns}/functions/{name}/logs",
        Read,
        || get(observe::function_logs),
    ),
    route(
        "POST",
        "/v1/namespaces/{ns}/functions/{name}/invoke",
        Invoke,
        || post(handlers::invoke).layer(payload_limit()),
    ),
    route("GET", "/v1/namespaces/{ns}/activations", Read, || {
        get(handlers::list_activations)
    }),
    route("GET", "/v1/namespaces/{ns}/activations/{id}", Read, || {
        get(handlers::get_activation)
    }),
    route(
        "GET",
        "/v1/namespaces/{ns}/activations/{id}/logs",
        Read,
        || get(handlers::activation_logs),
    ),
    route("GET", "/v1/namespaces/{ns}/executions", Read, || {
        get(handlers::list_executions)
    }),
    route("GET", "/v1/namespaces/{ns}/executions/{id}", Read, || {
        get(handlers::get_execution)
    }),
    route("GET", "/v1/namespaces/{ns}/usage", Read, || {
        get(observe::usage)
    }),
    route("GET", "/v1/namespaces/{ns}/dlq", Read, || {
        get(handlers::list_dead_letters)
    }),
    route("POST", "/v1/namespaces/{ns}/dlq/{id}/replay", Write, || {
        post(handlers::replay_dead_letter)
    }),
    route("GET", "/v1/namespaces/{ns}/triggers", Read, || {
        get(triggers::list_triggers)
    }),
    route("PUT", "/v1/namespaces/{ns}/triggers/{name}", Write, || {
        put(triggers::put_trigger)
    }),
    route("GET", "/v1/namespaces/{ns}/triggers/{name}", Read, || {
        get(triggers::get_trigger)
    }),
    route(
        "DELETE",
        "/v1/namespaces/{ns}/triggers/{name}",
        Write,
        || delete(triggers::delete_trigger),
    ),
    route(
        "POST",
        "/v1/namespaces/{ns}/triggers/{name}/fire",
        Invoke,
        || post(triggers::fire_trigger),
    ),
    route(
        "GET",
        "/v1/namespaces/{ns}/triggers/{name}/firings",
        Read,
        || get(triggers::list_firings),
    ),
    route("GET", "/v1/namespaces/{ns}/rules", Read, || {
        get(triggers::list_rules)
    }),
    route("PUT", "/v1/namespaces/{ns}/rules/{name}", Write, || {
        put(triggers::put_rule)
    }),
    route("GET", "/v1/namespaces/{ns}/rules/{name}", Read, || {
        get(triggers::get_rule)
    }),
    route("DELETE", "/v1/namespaces/{ns}/rules/{name}", Write, || {
        delete(triggers::delete_rule)
    }),
    route(
        "POST",
        "/v1/namespaces/{ns}/rules/{name}/enable",
        Write,
        || post(triggers::enable_rule),
    ),
    route(
        "POST",
        "/v1/namespaces/{ns}/rules/{name}/disable",
        Write,
        || post(triggers::disable_rule),
    ),
    route("GET", "/v1/namespaces/{ns}/topics", Read, || {
        get(topics::list_topics)
    }),
    route(
        "POST",
        "/v1/namespaces/{ns}/topics/{topic}",
        DataWrite,
        || post(topics::publish).layer(payload_limit()),
    ),
    route("GET", "/v1/namespaces/{ns}/kv", DataRead, || {
        get(data::kv_list)
    }),
    route("GET", "/v1/namespaces/{ns}/kv/{*key}", DataRead, || {
        get(data::kv_get)
    }),
    route("PUT", "/v1/namespaces/{ns}/kv/{*key}", DataWrite, || {
        put(data::kv_put).layer(DefaultBodyLimit::max(ignis_core::data::MAX_KV_VALUE_BYTES))
    }),
    route("POST", "/v1/namespaces/{ns}/kv/{*key}", DataWrite, || {
        post(data::kv_increment)
    }),
    route("DELETE", "/v1/namespaces/{ns}/kv/{*key}", DataWrite, || {
        delete(data::kv_delete)
    }),
    route("GET", "/v1/namespaces/{ns}/buckets", DataRead, || {
        get(data::list_buckets)
    }),
    route(
        "PUT",
        "/v1/namespaces/{ns}/buckets/{bucket}",
        DataWrite,
        || put(data::create_bucket),
    ),
    route(
        "DELETE",
        "/v1/namespaces/{ns}/buckets/{bucket}",
        DataWrite,
        || delete(data::delete_bucket),
    ),
    route(
        "GET",
        "/v1/namespaces/{ns}/buckets/{bucket}/objects",
        DataRead,
        || get(data::list_objects),
    ),
    route(
        "GET",
        "/v1/namespaces/{ns}/buckets/{bucket}/objects/{*key}",
        DataRead,
        || get(data::get_object),
    ),
    route(
        "PUT",
        "/v1/namespaces/{ns}/buckets/{bucket}/objects/{*key}",
        DataWrite,
        // Streamed to disk, up to 5 GiB (counted by the controller).
        || put(data::put_object).layer(DefaultBodyLimit::disable()),
    ),
    route(
        "DELETE",
        "/v1/namespaces/{ns}/buckets/{bucket}/objects/{*key}",
        DataWrite,
        || delete(data::delete_object),
    ),
    route("*", "/fn/{ns}/{name}", Own, || {
        any(web::handle).layer(payload_limit())
    }),
    route("*", "/fn/{ns}/{name}/", Own, || {
        any(web::handle).layer(payload_limit())
    }),
    route("*", "/fn/{ns}/{name}/{*path}", Own, || {
        any(web::handle).layer(payload_limit())
    }),
    // The S3-compatible API: SigV4 checked by its handler, bodies streamed.
    route("*", "/s3", Own, || {
        any(s3::handle).layer(DefaultBodyLimit::disable())
    }),
    route("*", "/s3/", Own, || {
        any(s3::handle).layer(DefaultBodyLimit::disable())
    }),
    route("*", "/s3/{*rest}", Own, || {
        any(s3::handle).layer(DefaultBodyLimit::disable())
    }),
    route("*", "/2015-03-31/functions", Own, || {
        any(lambda_api::handle)
    }),
    route("*", "/2015-03-31/functions/", Own, || {
        any(lambda_api::handle)
    }),
    route("*", "/2015-03-31/functions/{*rest}", Own, || {
        any(lambda_api::handle)
    }),
];

/// The router of [`ROUTES`], every route behind [`guard`].
pub(crate) fn build(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let mut by_path: BTreeMap<&str, MethodRouter<Arc<AppState>>> = BTreeMap::new();
    for r in ROUTES {
        let new = (r.handler)();
        let merged = match by_path.remove(r.path) {
            Some(existing) => existing.merge(new),
            None => new,
        };
        by_path.insert(r.path, merged);
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods);
    }
    router.route_layer(axum::middleware::from_fn_with_state(state, guard))
}

/// The entry of [`ROUTES`] for a request; HEAD is served by GET routes.
pub fn lookup(method: &Method, path: &str) -> Option<&'static Route> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|r| r.path == path && (r.method == method || r.method == "*"))
}

/// Authorizes a request by its route's entry in [`ROUTES`]: 401 without a valid key, 403 when
/// the key's role or namespace does not allow it, 404 `namespace_not_found` for a namespace
/// that does not exist (checked after the key, so that keys confined to a namespace learn
/// nothing of others).
pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    matched: MatchedPath,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let Some(route) = lookup(req.method(), matched.as_str()) else {
        if ROUTES.iter().any(|r| r.path == matched.as_str()) {
            return crate::method_not_allowed().await.into_response();
        }
        tracing::error!(path = matched.as_str(), "route missing from ROUTES");
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
        .into_response();
    };
    if matches!(route.access, Access::Public | Access::Handler) {
        return next.run(req).await;
    }
    let ns = params.iter().find(|(k, _)| *k == "ns").map(|(_, v)| v);
    if let Err(e) = state.keys.authorize(req.headers(), route.access, ns).await {
        return e.into_response();
    }
    if let Some(ns) = ns
        && route.access != Access::Admin
        && let Err(e) = state.controller.check_namespace(ns).await
    {
        return namespace_error(e).into_response();
    }
    next.run(req).await
}

/// A failed namespace lookup as an API error: 404 `namespace_not_found`.
pub(crate) fn namespace_error(e: ignis_controller::ControllerError) -> ApiError {
    match e {
        ignis_controller::ControllerError::NotFound(what) => ApiError::new(
            StatusCode::NOT_FOUND,
            "namespace_not_found",
            format!("{what} not found"),
        ),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_entry_per_method_and_path() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            assert!(
                ["GET", "PUT", "POST", "DELETE", "*"].contains(&r.method),
                "{}",
                r.method
            );
            if r.path.starts_with("/2015-03-31") {
                assert!(r.path.starts_with(lambda_api::PREFIX));
            }
        }
        assert_eq!(
            lookup(&Method::HEAD, "/healthz").map(|r| r.access),
            Some(Public)
        );
        assert!(lookup(&Method::PATCH, "/v1/namespaces").is_none());
    }
}

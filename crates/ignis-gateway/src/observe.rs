//! Observability routes: `/metrics` (Prometheus text), a namespace's usage and cost, and the
//! live log stream of a function (server-sent events).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use ignis_controller::Followed;
use ignis_core::usage::{GroupBy, parse_date};
use ignis_core::{ActivationId, FunctionLogLine, LogStream};
use ignis_store::ActivationFilter;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Access;
use crate::error::ApiError;
use crate::handlers::query_pairs;

const DAY_MS: u64 = 86_400_000;

/// The id of one HTTP request, made by [`request_span`] for every request. An invocation
/// takes it as its activation id, so the same id names the request (`x-request-id`), the
/// activation, the instance's request id (`context.aws_request_id`) and every log line of the
/// platform for it.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub ActivationId);

impl RequestId {
    /// The id of a request (a fresh one where no middleware set it, e.g. in unit tests).
    pub(crate) fn of(ext: Option<axum::Extension<RequestId>>) -> ActivationId {
        ext.map_or_else(ActivationId::new, |e| e.0.0)
    }
}

/// Middleware: gives the request its [`RequestId`], runs it inside a `request` span carrying
/// `request_id` (so every log line emitted for it names it) and returns it as `x-request-id`.
pub(crate) async fn request_span(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let id = ActivationId::new();
    req.extensions_mut().insert(RequestId(id));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method());
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request done"
        )
    });
    if let Ok(v) = axum::http::HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// `GET /metrics`: every metric in the Prometheus text format. Needs an admin key unless the
/// server runs with `--metrics-public`.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !state.metrics_public
        && let Err(e) = state.keys.authorize(&headers, Access::Admin, None).await
    {
        return e.into_response();
    }
    let body = state.controller.render_metrics().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// A bound of a usage period: milliseconds since the epoch, or a UTC date `YYYY-MM-DD`
/// (its start; as `to`, the end of that day, so the day is included).
fn period_bound(name: &str, v: &str, end: bool) -> Result<u64, ApiError> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().map_err(|_| {
            ApiError::bad_request(format!("{name}: {v:?} is too large a number of ms"))
        });
    }
    let day = parse_date(v).filter(|d| *d >= 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{name} must be milliseconds since the epoch or a date YYYY-MM-DD, not {v:?}"
        ))
    })? as u64;
    Ok((day + u64::from(end)) * DAY_MS)
}

/// The first millisecond of the current UTC month.
fn start_of_month(now_ms: u64) -> u64 {
    let (y, m, _) = ignis_core::usage::civil_from_days((now_ms / DAY_MS) as i64);
    ignis_core::usage::days_from_civil(y, m, 1) as u64 * DAY_MS
}

/// `GET /v1/namespaces/{ns}/usage?from=&to=&group_by=function|day`: requests, GB-seconds and
/// cost from the namespace's activation records. The period defaults to the current month.
pub async fn usage(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let now = ignis_core::now_ms();
    let (mut from, mut to, mut group_by) = (start_of_month(now), now + 1, GroupBy::Function);
    for (k, v) in query_pairs(raw.as_deref())? {
        match k.as_str() {
            "from" => from = period_bound("from", &v, false)?,
            "to" => to = period_bound("to", &v, true)?,
            "group_by" => group_by = v.parse().map_err(ApiError::bad_request)?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let report = state.controller.usage(&ns, from, to, group_by).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

/// Which lines a log request wants.
#[derive(Debug, Default, Clone)]
struct LogFilter {
    stream: Option<LogStream>,
    grep: Option<String>,
    activation: Option<ActivationId>,
    version: Option<u32>,
}

impl LogFilter {
    fn matches(&self, l: &FunctionLogLine) -> bool {
        self.stream.is_none_or(|s| s == l.stream)
            && self.activation.is_none_or(|a| a == l.activation_id)
            && self.version.is_none_or(|v| v == l.version)
            && self.grep.as_deref().is_none_or(|g| l.line.contains(g))
    }
}

/// `GET /v1/namespaces/{ns}/functions/{name}/logs`: with `follow=true`, a stream of
/// server-sent events — `ready` once subscribed, then one `log` event (a JSON line) per line
/// the function's instances write from then on, and `missed` (a count) if the client fell
/// behind; otherwise the lines of its `tail` (default 10) most recent activations, oldest
/// first. Filters: `stream` (stdout, stderr), `grep` (a substring), `activation`, `version`.
pub async fn function_logs(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (mut follow, mut tail, mut filter) = (false, 10usize, LogFilter::default());
    for (k, v) in query_pairs(raw.as_deref())? {
        match k.as_str() {
            "follow" => {
                follow = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::bad_request("follow must be true or false")),
                }
            }
            "tail" => {
                tail = v
                    .parse()
                    .ok()
                    .filter(|t| (1..=100).contains(t))
                    .ok_or_else(|| ApiError::bad_request("tail must be between 1 and 100"))?
            }
            "stream" => {
                filter.stream = Some(match v.as_str() {
                    "stdout" => LogStream::Stdout,
                    "stderr" => LogStream::Stderr,
                    _ => return Err(ApiError::bad_request("stream must be stdout or stderr")),
                })
            }
            "grep" if !v.is_empty() => filter.grep = Some(v),
            "grep" => {}
            "activation" => {
                filter.activation =
                    Some(ActivationId::parse(&v).ok_or_else(|| {
                        ApiError::bad_request(format!("invalid activation id {v:?}"))
                    })?)
            }
            "version" => {
                filter.version = Some(
                    v.parse()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| ApiError::bad_request(format!("invalid version {v:?}")))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    if !follow {
        return recent_logs(&state, &ns, &name, tail, &filter).await;
    }
    let follower = state.controller.follow_logs(&ns, &name).await?;
    let ready = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(Event::default().event("ready").data("{}"))
    });
    let stopping = state.stopping.clone();
    let lines = futures_util::stream::unfold(
        (follower, filter, stopping),
        |(mut f, filter, mut stopping)| async move {
            loop {
                if *stopping.borrow() {
                    return None;
                }
                let next = tokio::select! {
                    next = f.next() => next,
                    // Shutting down (or the server's state is gone): end the stream.
                    _ = stopping.changed() => return None,
                };
                let event = match next {
                    Followed::Line(l) if filter.matches(&l) => Event::default()
                        .event("log")
                        .data(serde_json::to_string(&*l).unwrap_or_default()),
                    Followed::Line(_) => continue,
                    Followed::Missed(n) => Event::default().event("missed").data(n.to_string()),
                };
                return Some((Ok(event), (f, filter, stopping)));
            }
        },
    );
    let sse = Sse::new(ready.chain(lines)).keep_alive(KeepAlive::default());
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

async fn recent_logs(
    state: &AppState,
    ns: &str,
    name: &str,
    tail: usize,
    filter: &LogFilter,
) -> Result<Response, ApiError> {
    state.controller.get_function(ns, name, None).await?;
    let page = state
        .controller
        .list_activations(
            ns,
            ActivationFilter {
                function: Some(name.to_string()),
                limit: tail,
                ..Default::default()
            },
        )
        .await?;
    let mut lines = Vec::new();
    for a in page.activations.iter().rev() {
        if filter.activation.is_some_and(|id| id != a.id)
            || filter.version.is_some_and(|v| v != a.version)
        {
            continue;
        }
        let full = state
            .controller
            .get_activation(ns, &a.id.to_string())
            .await?;
        for l in full.logs {
            let live = FunctionLogLine {
                ts_ms: l.ts_ms,
                activation_id: a.id,
                version: a.version,
                stream: l.stream,
                line: l.line,
            };
            if filter.matches(&live) {
                lines.push(live);
            }
        }
    }
    Ok(Json(json!({ "lines": lines })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_bounds() {
        assert_eq!(
            period_bound("from", "1700000000000", false).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(period_bound("from", "1970-01-02", false).unwrap(), DAY_MS);
        assert_eq!(period_bound("to", "1970-01-02", true).unwrap(), 2 * DAY_MS);
        assert!(period_bound("to", "yesterday", true).is_err());
        assert!(period_bound("to", "", true).is_err());
        assert!(period_bound("to", "99999999999999999999999", true).is_err());
        assert_eq!(start_of_month(DAY_MS * 40 + 5), DAY_MS * 31);
    }
}

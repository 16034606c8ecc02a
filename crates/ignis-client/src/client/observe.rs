//! Usage reports and function logs (recent, or followed live over server-sent events).

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use hyper::{Method, Request, Uri};
use ignis_core::usage::UsageReport;

use super::{Client, Query, api_error};
use crate::api::LogQuery;
use crate::{ClientError, TransportError};
use ignis_core::FunctionLogLine;

/// What a followed log stream delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    /// The server subscribed the stream: lines written from now on will come.
    Ready,
    /// One line.
    Line(FunctionLogLine),
    /// This many lines were dropped because the client read too slowly.
    Missed(u64),
}

/// Splits server-sent events out of a byte stream.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: BytesMut,
}

impl SseParser {
    /// Adds bytes; returns the complete events as (event name, data).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block = self.buf.split_to(end);
            self.buf.advance(2);
            let text = String::from_utf8_lossy(&block);
            let (mut event, mut data) = (String::from("message"), Vec::new());
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                }
            }
            // Comments alone (keep-alives) are no event.
            if !data.is_empty() {
                out.push((event, data.join("\n")));
            }
        }
        out
    }
}

impl Client {
    /// `GET /v1/namespaces/{ns}/usage`: requests, GB-seconds and cost over a period (`from`
    /// and `to`: ms since the epoch or `YYYY-MM-DD`; the server's default is the current
    /// month), grouped by `function` or `day`.
    pub async fn usage(
        &self,
        from: Option<&str>,
        to: Option<&str>,
        group_by: Option<&str>,
    ) -> Result<UsageReport, ClientError> {
        let mut q = Query::new(format!("{}/usage", self.inner.ns_url));
        for (k, v) in [("from", from), ("to", to), ("group_by", group_by)] {
            if let Some(v) = v {
                q.push(k, v);
            }
        }
        self.call(Method::GET, q.0, None, "usage report").await
    }

    fn logs_query(&self, function: &str, query: &LogQuery, follow: bool) -> String {
        let mut q = Query::new(self.function_url(function, "/logs"));
        if follow {
            q.push("follow", "true");
        } else if let Some(t) = query.tail {
            q.push("tail", &t.to_string());
        }
        if let Some(s) = query.stream {
            q.push("stream", s.as_str());
        }
        if let Some(g) = &query.grep {
            q.push("grep", g);
        }
        if let Some(a) = &query.activation {
            q.push("activation", a);
        }
        if let Some(v) = query.version {
            q.push("version", &v.to_string());
        }
        q.0
    }

    /// The log lines of a function's most recent activations, oldest first.
    pub async fn recent_logs(
        &self,
        function: &str,
        query: &LogQuery,
    ) -> Result<Vec<FunctionLogLine>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Lines {
            lines: Vec<FunctionLogLine>,
        }
        let target = self.logs_query(function, query, false);
        let lines: Lines = self.call(Method::GET, target, None, "logs").await?;
        Ok(lines.lines)
    }

    /// Follows a function's logs: calls `on_event` for each event as it arrives until it
    /// returns `false` or the server closes the stream.
    pub async fn follow_logs(
        &self,
        function: &str,
        query: &LogQuery,
        mut on_event: impl FnMut(LogEvent) -> bool,
    ) -> Result<(), ClientError> {
        let base = &self.inner.base;
        let transport = |e: TransportError| ClientError::Transport {
            url: base.clone(),
            source: e,
        };
        let uri = Uri::try_from(self.logs_query(function, query, true))
            .map_err(|e| ClientError::Config(format!("invalid request URL: {e}")))?;
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(auth) = &self.inner.auth {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let resp = self.http.request(req).await.map_err(|e| {
            if e.is_connect() {
                ClientError::Connect {
                    url: base.clone(),
                    source: TransportError::new(e),
                }
            } else {
                transport(TransportError::new(e))
            }
        })?;
        let (parts, mut body) = resp.into_parts();
        if !parts.status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| transport(TransportError::new(e)))?
                .to_bytes();
            return Err(api_error(parts.status, &parts.headers, &bytes));
        }
        let mut parser = SseParser::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| transport(TransportError::new(e)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for (event, data) in parser.push(&data) {
                let ev = match event.as_str() {
                    "ready" => LogEvent::Ready,
                    "missed" => LogEvent::Missed(data.trim().parse().unwrap_or(0)),
                    "log" => LogEvent::Line(serde_json::from_str(&data).map_err(|source| {
                        ClientError::Decode {
                            what: "log line",
                            source,
                        }
                    })?),
                    _ => continue,
                };
                if !on_event(ev) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_reads() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: rea").is_empty());
        assert_eq!(
            p.push(b"dy\ndata: {}\n\nevent: log\ndata: {\"a\":1}\n\ndata: x\ndata: y\n"),
            vec![
                ("ready".to_string(), "{}".to_string()),
                ("log".to_string(), "{\"a\":1}".to_string())
            ]
        );
        assert_eq!(
            p.push(b"\n"),
            vec![("message".to_string(), "x\ny".to_string())]
        );
    }
}

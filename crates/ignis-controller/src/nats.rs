//! `nats` triggers: an external NATS subject as an event source (OpenFaaS's NATS connector).
//!
//! One task per `nats` trigger connects to the trigger's server and fires the trigger for each
//! message, in the order they arrive: the firing queues one asynchronous invocation per enabled
//! rule through the durable queue, so a message is accepted durably before the next is read.
//! A trigger reads its messages one of two ways:
//!
//! ```text
//!  core NATS (no stream)                     JetStream (a stream named)
//!  subscribe(subject[, queue group])         durable pull consumer on the stream,
//!     │                                      filtered by the subject
//!     ▼                                         │
//!  fire ── commit ──► reply to a request        ▼
//!                                            fire with an id derived from the message
//!  at most once: a message published while      │── commit ──► ACK
//!  Ignis is down, or killed between its         │── already fired (redelivery) ──► ACK
//!  receipt and the commit, is not seen          └── failed ──► NAK, reconnect with backoff
//!                                            at least once, fired once per message
//! ```
//!
//! Core NATS: a message with a reply subject (a NATS request) is answered once the firing is
//! on disk, with the firing's id and activation ids (or an error): the requester knows its
//! message will be handled. JetStream: see [`jetstream`].
//!
//! A lost connection is retried with backoff (0.5 s doubling to 30 s). A supervisor starts and
//! stops the tasks as triggers are created, changed or deleted (a namespace's deletion
//! included), and at shutdown.

mod jetstream;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use ignis_core::{NatsSource, SpecError, Trigger, TriggerKind, TriggerSpec};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::{Controller, Result};

/// First pause before connecting again; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause before connecting again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the supervisor looks at the triggers even if nothing told it of a change.
const RECHECK: Duration = Duration::from_secs(30);

/// The running subscriptions, by namespace and trigger name.
#[derive(Default)]
pub(crate) struct NatsSources {
    changed: Notify,
    running: Mutex<HashMap<(String, String), Running>>,
}

struct Running {
    source: NatsSource,
    task: tokio::task::AbortHandle,
}

impl NatsSources {
    /// Tells the supervisor that triggers changed.
    pub(crate) fn changed(&self) {
        self.changed.notify_one();
    }

    /// Stops every subscription.
    pub(crate) fn stop_all(&self) {
        for (_, r) in self.running.lock().unwrap().drain() {
            r.task.abort();
        }
    }

    /// How many subscriptions run.
    pub(crate) fn count(&self) -> usize {
        self.running.lock().unwrap().len()
    }
}

/// A subject or queue group: 1 to 256 characters, no white space.
fn check_token(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_whitespace) {
        return Err(SpecError::new(
            field,
            format!("{field} must have 1 to 256 characters and no white space"),
        )
        .into());
    }
    Ok(())
}

/// Checks the source of a `nats` trigger.
pub(crate) fn check_nats_source(source: Option<&NatsSource>) -> Result<()> {
    let Some(s) = source else {
        return Err(SpecError::new("nats", "required for a nats trigger").into());
    };
    let scheme_ok = s.url.starts_with("nats://") || s.url.starts_with("tls://");
    let has_host = s
        .url
        .parse::<async_nats::ServerAddr>()
        .is_ok_and(|a| !a.host().is_empty());
    if !scheme_ok || !has_host {
        return Err(SpecError::new(
            "nats.url",
            format!(
                "{:?} is not a NATS server URL (nats://host:port or tls://host:port)",
                s.url
            ),
        )
        .into());
    }
    check_token("nats.subject", &s.subject)?;
    if s.subject.split('.').any(str::is_empty) {
        return Err(SpecError::new("nats.subject", "a subject has no empty token").into());
    }
    if let Some(g) = &s.queue_group {
        check_token("nats.queue_group", g)?;
    }
    match &s.stream {
        Some(stream) => {
            jetstream::check_name("nats.stream", stream)?;
            if let Some(c) = &s.consumer {
                jetstream::check_name("nats.consumer", c)?;
            }
            if s.queue_group.is_some() {
                return Err(SpecError::new(
                    "nats.queue_group",
                    "a queue group is for core NATS; the servers reading one JetStream consumer share its messages already",
                )
                .into());
            }
        }
        None => {
            for (set, field) in [
                (s.consumer.is_some(), "nats.consumer"),
                (s.deliver.is_some(), "nats.deliver"),
            ] {
                if set {
                    return Err(SpecError::new(
                        field,
                        format!("{field} needs a JetStream stream (nats.stream)"),
                    )
                    .into());
                }
            }
        }
    }
    Ok(())
}

/// Fills in what a stored `nats` trigger leaves out: the name of the JetStream consumer that
/// Ignis makes for it, so that the trigger shows it.
pub(crate) fn complete_nats_source(namespace: &str, name: &str, spec: &mut TriggerSpec) {
    if let Some(s) = &mut spec.nats
        && s.stream.is_some()
        && s.consumer.is_none()
    {
        s.consumer = Some(jetstream::default_consumer(namespace, name));
    }
}

/// The event a NATS message becomes: `{"subject", "data", "headers", "reply"?}`. `data` is the
/// payload's JSON if it is JSON, else its text if it is UTF-8; other payloads come as
/// `data_base64` instead.
fn nats_event(msg: &async_nats::Message) -> Vec<u8> {
    let mut event = message_fields(msg);
    if let Some(reply) = &msg.reply {
        event.insert("reply".into(), Value::from(reply.as_str()));
    }
    serde_json::to_vec(&Value::Object(event)).unwrap_or_default()
}

/// `subject`, `data` (or `data_base64`) and `headers` of a message's event.
fn message_fields(msg: &async_nats::Message) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("subject".into(), Value::from(msg.subject.as_str()));
    if let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) {
        event.insert("data".into(), v);
    } else if let Ok(text) = std::str::from_utf8(&msg.payload) {
        event.insert("data".into(), Value::from(text));
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&msg.payload);
        event.insert("data_base64".into(), Value::from(b64));
    }
    let mut headers = Map::new();
    if let Some(h) = &msg.headers {
        for (name, values) in h.iter() {
            let values: Vec<Value> = values.iter().map(|v| Value::from(v.as_str())).collect();
            headers.insert(name.to_string(), Value::from(values));
        }
    }
    event.insert("headers".into(), Value::Object(headers));
    event
}

impl Controller {
    /// Starts the supervisor of `nats` triggers' subscriptions.
    pub fn start_nats_sources(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if this.closing() {
                    this.inner.nats.stop_all();
                    return;
                }
                let changed = this.inner.nats.changed.notified();
                if let Err(e) = this.reconcile_nats().await {
                    tracing::error!(error = %e, "nats triggers");
                }
                let _ = tokio::time::timeout(RECHECK, changed).await;
            }
        });
    }

    /// How many `nats` triggers have a subscription task.
    pub fn nats_subscriptions(&self) -> usize {
        self.inner.nats.count()
    }

    /// Starts the subscriptions of new or changed `nats` triggers, stops those of deleted ones,
    /// and deletes the JetStream consumers Ignis made for triggers that no longer use them.
    async fn reconcile_nats(&self) -> Result<()> {
        // In a cluster, only the node that runs the background work subscribes.
        let wanted: Vec<(Trigger, NatsSource)> = if self.leads() {
            self.triggers_of_kind(TriggerKind::Nats)
                .await?
                .into_iter()
                .filter_map(|t| Some((t.clone(), t.spec.nats?)))
                .collect()
        } else {
            Vec::new()
        };
        if self.closing() {
            return Ok(());
        }
        let mut running = self.inner.nats.running.lock().unwrap();
        let mut keep = std::collections::HashSet::new();
        for (t, source) in wanted {
            let key = (t.namespace.clone(), t.name.clone());
            keep.insert(key.clone());
            if running.get(&key).is_some_and(|r| r.source == source) {
                continue;
            }
            if let Some(old) = running.remove(&key) {
                old.task.abort();
                jetstream::forget_consumer(&key.0, &key.1, &old.source, Some(&source));
            }
            let this = self.clone();
            let task = tokio::spawn(async move { this.subscribe_nats(t).await }).abort_handle();
            running.insert(key, Running { source, task });
        }
        running.retain(|key, r| {
            let keep = keep.contains(key);
            if !keep {
                r.task.abort();
                jetstream::forget_consumer(&key.0, &key.1, &r.source, None);
            }
            keep
        });
        Ok(())
    }

    /// Connects and fires `trigger` for every message (of its subject, or of its JetStream
    /// stream), connecting again with backoff whenever the connection is lost for good. Ends
    /// only when aborted.
    async fn subscribe_nats(self, trigger: Trigger) {
        let Some(source) = trigger.spec.nats.clone() else {
            return;
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let connected = async_nats::ConnectOptions::new()
                .name(format!("ignis {}/{}", trigger.namespace, trigger.name))
                .connection_timeout(Duration::from_secs(5))
                .connect(source.url.as_str())
                .await;
            match connected {
                Ok(client) if source.stream.is_some() => {
                    if let Err(e) = self
                        .consume_stream(&trigger, &source, &client, &mut backoff)
                        .await
                    {
                        tracing::warn!(namespace = %trigger.namespace, trigger = %trigger.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "nats trigger cannot read its stream");
                    }
                }
                Ok(client) => {
                    let sub = match &source.queue_group {
                        Some(g) => {
                            client
                                .queue_subscribe(source.subject.clone(), g.clone())
                                .await
                        }
                        None => client.subscribe(source.subject.clone()).await,
                    };
                    match sub {
                        Ok(mut sub) => {
                            tracing::info!(namespace = %trigger.namespace, trigger = %trigger.name, subject = %source.subject, "nats trigger subscribed");
                            backoff = FIRST_BACKOFF;
                            while let Some(msg) = sub.next().await {
                                self.on_nats_message(&trigger, &client, msg).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(namespace = %trigger.namespace, trigger = %trigger.name, error = %e, "nats subscribe failed")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace = %trigger.namespace, trigger = %trigger.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot connect to the nats server")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn on_nats_message(
        &self,
        trigger: &Trigger,
        client: &async_nats::Client,
        msg: async_nats::Message,
    ) {
        let event = Bytes::from(nats_event(&msg));
        let fired = self.fire(trigger.clone(), event, None).await;
        if let Some(reply) = msg.reply {
            let answer = match &fired {
                Ok(f) => json!({ "firing": f.id, "activations": f.activations }),
                Err(e) => json!({ "error": { "message": e.to_string() } }),
            };
            if let Err(e) = client.publish(reply, answer.to_string().into()).await {
                tracing::warn!(trigger = %trigger.name, error = %e, "cannot answer a nats request");
            }
        }
        if let Err(e) = fired {
            tracing::warn!(namespace = %trigger.namespace, trigger = %trigger.name, error = %e, "nats message not accepted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str, subject: &str, group: Option<&str>) -> NatsSource {
        NatsSource {
            url: url.into(),
            subject: subject.into(),
            queue_group: group.map(String::from),
            stream: None,
            consumer: None,
            deliver: None,
        }
    }

    fn in_stream(stream: &str, consumer: Option<&str>) -> NatsSource {
        NatsSource {
            stream: Some(stream.into()),
            consumer: consumer.map(String::from),
            ..source("nats://127.0.0.1:4222", "orders.>", None)
        }
    }

    #[test]
    fn sources_are_checked() {
        assert!(
            check_nats_source(Some(&source("nats://127.0.0.1:4222", "orders.>", None))).is_ok()
        );
        assert!(check_nats_source(Some(&source("tls://u:p@h:4222", "a.*.b", Some("g")))).is_ok());
        for (bad, field) in [
            (source("http://h:4222", "a", None), "nats.url"),
            (source("nats://", "a", None), "nats.url"),
            (source("nats://h:4222", "", None), "nats.subject"),
            (source("nats://h:4222", "a b", None), "nats.subject"),
            (source("nats://h:4222", "a..b", None), "nats.subject"),
            (source("nats://h:4222", "a", Some("")), "nats.queue_group"),
            (in_stream("", None), "nats.stream"),
            (in_stream("ORD.ERS", None), "nats.stream"),
            (in_stream("ORDERS", Some("a b")), "nats.consumer"),
            (
                NatsSource {
                    queue_group: Some("g".into()),
                    ..in_stream("ORDERS", None)
                },
                "nats.queue_group",
            ),
            (
                NatsSource {
                    consumer: Some("c".into()),
                    ..source("nats://h:4222", "a", None)
                },
                "nats.consumer",
            ),
            (
                NatsSource {
                    deliver: Some(ignis_core::NatsDeliver::All),
                    ..source("nats://h:4222", "a", None)
                },
                "nats.deliver",
            ),
        ] {
            match check_nats_source(Some(&bad)) {
                Err(crate::ControllerError::InvalidSpec(e)) => {
                    assert_eq!(e.field, field, "{bad:?}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(check_nats_source(None).is_err());
        assert!(check_nats_source(Some(&in_stream("ORDERS", None))).is_ok());
        assert!(check_nats_source(Some(&in_stream("ORDERS", Some("mine")))).is_ok());
    }

    #[test]
    fn a_stream_trigger_gets_its_consumer_name() {
        let mut spec = TriggerSpec {
            nats: Some(in_stream("ORDERS", None)),
            ..Default::default()
        };
        complete_nats_source("default", "orders", &mut spec);
        let named = spec.nats.as_ref().and_then(|s| s.consumer.clone());
        assert_eq!(
            named,
            Some(jetstream::default_consumer("default", "orders"))
        );
        // A consumer given is kept; a core NATS trigger gets none.
        let mut mine = TriggerSpec {
            nats: Some(in_stream("ORDERS", Some("mine"))),
            ..Default::default()
        };
        complete_nats_source("default", "orders", &mut mine);
        assert_eq!(mine.nats.unwrap().consumer.as_deref(), Some("mine"));
        let mut core = TriggerSpec {
            nats: Some(source("nats://h:1", "a", None)),
            ..Default::default()
        };
        complete_nats_source("default", "orders", &mut core);
        assert_eq!(core.nats.unwrap().consumer, None);
    }

    #[test]
    fn messages_become_events() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-Order", "7");
        let msg = async_nats::Message {
            subject: "orders.new".into(),
            reply: Some("_INBOX.1".into()),
            payload: Bytes::from_static(br#"{"n": 1}"#),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        };
        let v: Value = serde_json::from_slice(&nats_event(&msg)).unwrap();
        assert_eq!(
            v,
            json!({"subject": "orders.new", "data": {"n": 1}, "headers": {"X-Order": ["7"]}, "reply": "_INBOX.1"})
        );
        let text = async_nats::Message {
            payload: Bytes::from_static(b"hello"),
            reply: None,
            headers: None,
            ..msg.clone()
        };
        let v: Value = serde_json::from_slice(&nats_event(&text)).unwrap();
        assert_eq!(
            v,
            json!({"subject": "orders.new", "data": "hello", "headers": {}})
        );
        let binary = async_nats::Message {
            payload: Bytes::from_static(b"\xff\x00"),
            ..text
        };
        let v: Value = serde_json::from_slice(&nats_event(&binary)).unwrap();
        assert_eq!(v["data_base64"], "/wA=");
    }
}

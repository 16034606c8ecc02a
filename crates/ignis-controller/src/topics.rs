//! Topics: messages published to a topic of a namespace (through the API, or from a function
//! with the in-sandbox client) fire the topic triggers subscribed to it, in batches.
//!
//! ```text
//!  publish ──► Store::publish ──────────► topic_messages + one delivery per subscribed
//!  (202 after     (one fsync'd commit)     topic trigger
//!   the commit)                                │ dispatcher: a batch is due when it is full
//!                                              ▼ (batch_size) or its oldest message waited
//!  Store::record_delivery (one fsync'd commit):    batch_window_ms
//!    the deliveries leave, the firing and one async_queue row per enabled rule
//!    (event {"trigger","topic","messages":[…]}) arrive
//!                                              │
//!                                              ▼ the async queue: run, retry, dead letters
//! ```
//!
//! Delivery is at least once: a message is in the store from its 202 until it is handed to the
//! async queue, in the same transaction that queues its invocation, and the queue forgets an
//! invocation only once its activation is on disk. A crash anywhere runs a batch again, never
//! drops one. A trigger with no enabled rule keeps its messages until a rule is enabled.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use ignis_core::{
    ActivationId, MAX_BATCH_SIZE, MAX_BATCH_WINDOW_MS, MAX_PAYLOAD_BYTES, SpecError, TriggerKind,
    TriggerSpec, now_ms, validate_topic_name,
};
use ignis_store::{TopicInfo, TopicMessage};
use serde::Serialize;
use tokio::sync::Notify;

use crate::triggers::firing_of;
use crate::{Controller, ControllerError, Result};

/// Largest message data accepted by publish, so that a batch of messages fits in one event.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Longest the dispatcher sleeps when nothing is due (it also looks again at triggers whose
/// messages wait for an enabled rule).
const IDLE: Duration = Duration::from_secs(1);
/// Batches handed over per trigger in one pass, so that one busy trigger does not hold back
/// the others.
const BATCHES_PER_PASS: usize = 16;

/// The dispatcher's state.
#[derive(Default)]
pub(crate) struct Topics {
    wake: Notify,
}

impl Topics {
    /// Tells the dispatcher to look again (a message, a trigger or a rule changed).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// What publish answers.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The message's id.
    pub id: String,
    /// How many topic triggers will get it.
    pub triggers: usize,
}

/// Checks the topic, batch size and window of a topic trigger.
pub(crate) fn check_topic_trigger(spec: &TriggerSpec) -> Result<()> {
    let Some(topic) = &spec.topic else {
        return Err(SpecError::new("topic", "required for a topic trigger").into());
    };
    validate_topic_name(topic).map_err(|e| SpecError::new("topic", e.to_string()))?;
    if let Some(n) = spec.batch_size
        && !(1..=MAX_BATCH_SIZE).contains(&n)
    {
        return Err(
            SpecError::new("batch_size", format!("must be from 1 to {MAX_BATCH_SIZE}")).into(),
        );
    }
    if let Some(ms) = spec.batch_window_ms
        && ms > MAX_BATCH_WINDOW_MS
    {
        return Err(SpecError::new(
            "batch_window_ms",
            format!("must be at most {MAX_BATCH_WINDOW_MS}"),
        )
        .into());
    }
    Ok(())
}

/// Whether a content type says JSON (`application/json`, `…+json`, with parameters or not).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// The message as functions get it: `{"id","topic","published_ms","data"}` with the JSON data
/// as sent, or `"data_base64"` and `"content_type"` for other content.
fn message_body(
    id: &str,
    topic: &str,
    published_ms: u64,
    data: &[u8],
    content_type: Option<&str>,
) -> Result<Vec<u8>> {
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(ControllerError::BadRequest(format!(
            "a message has at most {MAX_MESSAGE_BYTES} bytes, this one {}",
            data.len()
        )));
    }
    let head = format!("{{\"id\":\"{id}\",\"topic\":\"{topic}\",\"published_ms\":{published_ms},");
    let mut body = Vec::with_capacity(head.len() + data.len() + 32);
    body.extend_from_slice(head.as_bytes());
    match content_type {
        Some(ct) if !is_json(ct) => {
            let ct = serde_json::to_string(ct).unwrap_or_else(|_| "\"\"".into());
            body.extend_from_slice(b"\"content_type\":");
            body.extend_from_slice(ct.as_bytes());
            body.extend_from_slice(b",\"data_base64\":\"");
            body.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            body.extend_from_slice(b"\"}");
        }
        _ => {
            if data.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(ControllerError::BadRequest(
                    "a JSON message must not be empty".into(),
                ));
            }
            ignis_core::check_json(data).map_err(|e| {
                let why = match e {
                    ignis_core::JsonError::Invalid(e) => {
                        format!("the message is not valid JSON ({e})")
                    }
                    too_deep => too_deep.to_string().replace("payload", "message"),
                };
                ControllerError::BadRequest(format!(
                    "{why}; send other content with its own content-type"
                ))
            })?;
            body.extend_from_slice(b"\"data\":");
            body.extend_from_slice(data);
            body.push(b'}');
        }
    }
    Ok(body)
}

/// The event of one batch.
fn batch_event(trigger: &str, topic: &str, messages: &[&[u8]]) -> Vec<u8> {
    let size: usize = messages.iter().map(|m| m.len() + 1).sum();
    let mut event = Vec::with_capacity(size + trigger.len() + topic.len() + 48);
    event.extend_from_slice(
        format!("{{\"trigger\":\"{trigger}\",\"topic\":\"{topic}\",\"messages\":[").as_bytes(),
    );
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            event.push(b',');
        }
        event.extend_from_slice(m);
    }
    event.extend_from_slice(b"]}");
    event
}

impl Controller {
    /// Publishes a message to a topic: durably stored (synced to disk) before this returns.
    /// `content_type` other than JSON (or none) makes the data opaque bytes.
    pub async fn publish(
        &self,
        namespace: &str,
        topic: &str,
        data: Bytes,
        content_type: Option<&str>,
    ) -> Result<Published> {
        self.check_namespace(namespace).await?;
        validate_topic_name(topic).map_err(|e| ControllerError::BadRequest(e.to_string()))?;
        let id = ActivationId::new().to_string();
        let published_ms = now_ms();
        let body = message_body(&id, topic, published_ms, &data, content_type)?;
        let message = TopicMessage {
            id: id.clone(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            body,
            published_ms,
        };
        let triggers = self
            .blocking(move |i| Ok(i.store.publish(&message)?))
            .await?;
        if triggers > 0 {
            self.inner.topics.wake();
        }
        Ok(Published { id, triggers })
    }

    /// The topics of a namespace, with their counts.
    pub async fn list_topics(&self, namespace: &str) -> Result<Vec<TopicInfo>> {
        self.check_namespace(namespace).await?;
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.list_topics(&ns)?)).await
    }

    /// Starts the task that hands topic messages to their triggers' functions.
    pub fn start_topic_dispatcher(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if this.closing() {
                    return;
                }
                let wait = if !this.leads() {
                    // Another node of the cluster hands the messages over.
                    IDLE
                } else {
                    match this.dispatch_topics().await {
                        Ok(wait) => wait,
                        Err(e) => {
                            tracing::error!(error = %e, "topic dispatcher");
                            IDLE
                        }
                    }
                };
                if !wait.is_zero() {
                    let _ = tokio::time::timeout(wait, this.inner.topics.wake.notified()).await;
                }
            }
        });
    }

    /// One pass over the triggers with messages waiting: hands over the batches that are due.
    /// Returns how long to wait before the next pass.
    async fn dispatch_topics(&self) -> Result<Duration> {
        let pending = self.blocking(|i| Ok(i.store.pending_deliveries()?)).await?;
        let mut wait = IDLE;
        for p in pending {
            let (ns, name) = (p.namespace.clone(), p.trigger.clone());
            let trigger = self
                .blocking(move |i| Ok(i.store.get_trigger(&ns, &name)?))
                .await?;
            let Some(trigger) = trigger.filter(|t| t.spec.kind == TriggerKind::Topic) else {
                // Made another kind meanwhile (a deleted trigger took its deliveries with it).
                let (ns, name) = (p.namespace.clone(), p.trigger.clone());
                self.blocking(move |i| Ok(i.store.forget_deliveries(&ns, &name)?))
                    .await?;
                continue;
            };
            let rules = self.rules_of(&trigger).await?;
            if rules.is_empty() {
                // Kept until a rule is enabled.
                continue;
            }
            let size = trigger.spec.batch_size.unwrap_or(1).max(1) as usize;
            let due_ms = p.oldest_ms + trigger.spec.batch_window_ms.unwrap_or(0);
            let now = now_ms();
            if (p.count as usize) < size && now < due_ms {
                wait = wait.min(Duration::from_millis(due_ms - now));
                continue;
            }
            let topic = trigger.spec.topic.clone().unwrap_or_default();
            let mut left = p.count as usize;
            for _ in 0..BATCHES_PER_PASS {
                // Full batches, then the rest only if its oldest message's window has passed
                // (the next pass reads its age again).
                if left == 0 || (left < size && left != p.count as usize) {
                    break;
                }
                let (ns, name) = (trigger.namespace.clone(), trigger.name.clone());
                let deliveries = self
                    .blocking(move |i| Ok(i.store.next_deliveries(&ns, &name, size)?))
                    .await?;
                if deliveries.is_empty() {
                    break;
                }
                // A batch stays within the event limit.
                let mut bytes = 64 + trigger.name.len() + topic.len();
                let mut take = 0;
                for d in &deliveries {
                    if take > 0 && bytes + d.body.len() + 1 > MAX_PAYLOAD_BYTES {
                        break;
                    }
                    bytes += d.body.len() + 1;
                    take += 1;
                }
                let bodies: Vec<&[u8]> = deliveries[..take]
                    .iter()
                    .map(|d| d.body.as_slice())
                    .collect();
                let event = batch_event(&trigger.name, &topic, &bodies);
                let seqs: Vec<u64> = deliveries[..take].iter().map(|d| d.seq).collect();
                let (firing, queued) = firing_of(&trigger, rules.clone(), &event, None);
                match self
                    .blocking(move |i| Ok(i.store.record_delivery(&firing, &queued, &seqs)?))
                    .await
                {
                    Ok(()) => self.inner.queue.wake(),
                    // The trigger was deleted meanwhile: its deliveries went with it.
                    Err(ControllerError::Conflict(_)) => break,
                    Err(e) => return Err(e),
                }
                left = left.saturating_sub(take);
            }
            if left > 0 {
                wait = Duration::ZERO;
            }
        }
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_json_as_sent_and_wrap_other_bytes() {
        let m = message_body("i1", "orders", 7, br#"{"a": [1, 2]}"#, None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "i1", "topic": "orders", "published_ms": 7, "data": {"a": [1, 2]}})
        );
        let m = message_body(
            "i2",
            "t",
            1,
            b"\x00\xffraw",
            Some("application/octet-stream"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["content_type"], "application/octet-stream");
        assert_eq!(v["data_base64"], "AP9yYXc=");
        assert!(message_body("i", "t", 1, b"{nope", Some("application/json")).is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(message_body("i", "t", 1, deep.as_bytes(), None).is_err());
        assert!(message_body("i", "t", 1, b"  ", None).is_err());
        assert!(message_body("i", "t", 1, &vec![b'1'; MAX_MESSAGE_BYTES + 1], None).is_err());
        let batch = batch_event("tr", "t", &[b"{\"n\":1}", b"{\"n\":2}"]);
        let v: serde_json::Value = serde_json::from_slice(&batch).unwrap();
        assert_eq!(v["messages"][1]["n"], 2);
        assert_eq!(v["trigger"], "tr");
    }

    #[test]
    fn topic_triggers_are_checked() {
        let spec = |topic: Option<&str>, size, window| TriggerSpec {
            kind: TriggerKind::Topic,
            topic: topic.map(String::from),
            batch_size: size,
            batch_window_ms: window,
            ..Default::default()
        };
        assert!(check_topic_trigger(&spec(Some("orders.created"), Some(10), Some(500))).is_ok());
        for (bad, field) in [
            (spec(None, None, None), "topic"),
            (spec(Some(".x"), None, None), "topic"),
            (spec(Some("t"), Some(0), None), "batch_size"),
            (
                spec(Some("t"), Some(MAX_BATCH_SIZE + 1), None),
                "batch_size",
            ),
            (
                spec(Some("t"), None, Some(MAX_BATCH_WINDOW_MS + 1)),
                "batch_window_ms",
            ),
        ] {
            match check_topic_trigger(&bad) {
                Err(ControllerError::InvalidSpec(e)) => assert_eq!(e.field, field),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}

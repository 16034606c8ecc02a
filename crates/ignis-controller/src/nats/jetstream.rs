//! The JetStream mode of `nats` triggers: at least once, and one firing per message.
//!
//! A trigger that names a stream reads it through a durable pull consumer filtered by the
//! trigger's subject, with explicit acknowledgements:
//!
//! 1. Each message is fired with a firing id derived from the namespace, the trigger, the
//!    stream (its name and creation time) and the message's stream sequence; the firing and
//!    the invocations it queues are committed in one transaction synced to disk.
//! 2. Only then is the message acknowledged. If Ignis is killed before the ACK, the NATS server
//!    delivers the message again (once the consumer's ack wait has passed); its firing id is
//!    the same, the store refuses to record a firing twice, and the message is acknowledged
//!    without firing again. Firings are kept as long as their trigger, so this holds for every
//!    redelivery.
//! 3. A firing that cannot be recorded is NAKed (it comes again after [`NAK_DELAY`]), and the
//!    consumer is read again after the trigger's backoff.
//!
//! A trigger with no enabled rule pulls nothing (a message pulled just as its last rule went is
//! NAKed): its messages wait in the stream until a rule is enabled, as a topic trigger's do.
//!
//! Messages stay in the stream while Ignis is down or disconnected and are read when it comes
//! back. A recreated stream starts its sequences again; its creation time in the firing id
//! keeps its messages from being taken for those of the old one.
//!
//! Consumers: left unnamed, the trigger's consumer is Ignis's own
//! ([`default_consumer`]): made when missing — starting at the trigger's creation, or at the
//! stream's first message with `deliver: all` — made again when the trigger's subject changes,
//! and deleted with the trigger (best effort). A consumer the trigger names is the user's: made
//! if missing, otherwise used as it is (a pull consumer with explicit acknowledgements,
//! filtering the trigger's subject), never changed or deleted.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use bytes::Bytes;
use futures_util::StreamExt;
use ignis_core::{ActivationId, NatsDeliver, NatsSource, SpecError, Trigger};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::FIRST_BACKOFF;
use crate::triggers::firing_of;
use crate::{Controller, ControllerError, Result};

/// Longest stream or consumer name (JetStream's limit).
const MAX_NAME: usize = 255;
/// How long the NATS server waits for an ACK before delivering a message again, for the
/// consumers Ignis makes.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Messages asked for at once. Each is fired and acknowledged in turn, which takes
/// milliseconds: the last of a batch is acknowledged well within [`ACK_WAIT`].
const BATCH: usize = 64;
/// How long one pull waits for messages; the client gives up 5 s later if the server never
/// answers (a lost connection), and pulls again.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How often a trigger without an enabled rule looks again (its messages wait meanwhile).
const PAUSE_CHECK: Duration = Duration::from_secs(1);
/// When a message whose firing failed comes again.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// Longest time to delete a consumer Ignis no longer needs.
const FORGET_TIMEOUT: Duration = Duration::from_secs(10);

/// Why reading a stream stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum StreamError {
    /// The stream cannot be looked up.
    #[error("stream {stream:?}: {reason}")]
    Stream {
        /// Its name.
        stream: String,
        /// What the NATS server or client said.
        reason: String,
    },
    /// The consumer cannot be made or used.
    #[error("consumer {consumer:?} of stream {stream:?}: {reason}")]
    Consumer {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// Why.
        reason: String,
    },
    /// Pulling messages failed.
    #[error("reading messages: {0}")]
    Messages(String),
    /// The store failed (reading the rules, or recording a firing: its message was NAKed).
    #[error("{0}")]
    Store(ControllerError),
}

/// Checks a stream or consumer name: 1 to 255 characters, no white space, control character,
/// `.`, `*`, `>`, `/` or `\` (JetStream's rule).
pub(super) fn check_name(field: &'static str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        });
    if bad {
        return Err(SpecError::new(
            field,
            format!(
                "{field} must have 1 to {MAX_NAME} characters, none of them white space, '.', '*', '>', '/' or '\\'"
            ),
        )
        .into());
    }
    Ok(())
}

/// The name of the consumer Ignis makes for a trigger: `ignis-NS-TRIGGER-HASH`, dots made
/// underscores (JetStream names have none) and a hash of both names so that no two triggers
/// share one.
pub(super) fn default_consumer(namespace: &str, trigger: &str) -> String {
    let hash = Sha256::digest(format!("{namespace}/{trigger}").as_bytes());
    format!(
        "ignis-{}-{}-{}",
        namespace.replace('.', "_"),
        trigger.replace('.', "_"),
        hex::encode(&hash[..4])
    )
}

/// The consumer a trigger reads through.
fn consumer_name(namespace: &str, trigger: &str, source: &NatsSource) -> String {
    source
        .consumer
        .clone()
        .unwrap_or_else(|| default_consumer(namespace, trigger))
}

/// The id of the firing of the message `seq` of a stream created at `stream_created_ns`: the
/// same at every delivery of the message.
fn firing_id(trigger: &Trigger, stream: &str, stream_created_ns: i128, seq: u64) -> ActivationId {
    let mut h = Sha256::new();
    for part in [&trigger.namespace, &trigger.name, stream] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(stream_created_ns.to_be_bytes());
    h.update(seq.to_be_bytes());
    let digest = h.finalize();
    ActivationId::parse(&hex::encode(&digest[..16])).expect("32 hex digits make an id")
}

/// The event a stream's message becomes: that of a core NATS message without `reply` (a
/// JetStream message's reply subject is its acknowledgement), with `stream`, `stream_seq` and
/// `published_ms` (when the stream stored it).
fn stream_event(msg: &async_nats::Message, stream: &str, seq: u64, published_ms: i128) -> Vec<u8> {
    let mut event = super::message_fields(msg);
    event.insert("stream".into(), Value::from(stream));
    event.insert("stream_seq".into(), Value::from(seq));
    event.insert(
        "published_ms".into(),
        Value::from(u64::try_from(published_ms).unwrap_or(0)),
    );
    serde_json::to_vec(&Value::Object(event)).unwrap_or_default()
}

/// Looks up the trigger's consumer, making it if it is missing (or, for Ignis's own, if it
/// filters another subject), and checks that it can be read one acknowledged message at a time.
async fn bind_consumer(
    stream: &async_nats::jetstream::stream::Stream,
    stream_name: &str,
    trigger: &Trigger,
    source: &NatsSource,
) -> std::result::Result<PullConsumer, StreamError> {
    let name = consumer_name(&trigger.namespace, &trigger.name, source);
    let owned = name == default_consumer(&trigger.namespace, &trigger.name);
    let failed = |reason: String| StreamError::Consumer {
        stream: stream_name.to_string(),
        consumer: name.clone(),
        reason,
    };
    let deliver_policy = match source.deliver.unwrap_or_default() {
        NatsDeliver::All => DeliverPolicy::All,
        NatsDeliver::New => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(trigger.created_ms) * 1_000_000,
            )
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        },
    };
    let config = pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!(
            "ignis trigger {}/{}",
            trigger.namespace, trigger.name
        )),
        filter_subject: source.subject.clone(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        deliver_policy,
        ..Default::default()
    };
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(&name, config.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let filter = consumer.cached_info().config.filter_subject.clone();
    if filter != source.subject {
        if !owned {
            return Err(failed(format!(
                "it filters {filter:?}, not the trigger's subject {:?}: name another consumer, or change or delete this one",
                source.subject
            )));
        }
        // Ignis's own consumer of a trigger whose subject changed: made again for the new one.
        stream
            .delete_consumer(&name)
            .await
            .map_err(|e| failed(e.to_string()))?;
        consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    if consumer.cached_info().config.ack_policy != AckPolicy::Explicit {
        return Err(failed(
            "its messages are not acknowledged one by one (its ack policy is not explicit)".into(),
        ));
    }
    Ok(consumer)
}

/// Deletes the consumer Ignis made for a trigger that no longer reads it (deleted, or now
/// reading another stream, consumer or server), in the background and at best: a failure is
/// logged, and the consumer stays on the NATS server.
pub(super) fn forget_consumer(
    namespace: &str,
    trigger: &str,
    old: &NatsSource,
    new: Option<&NatsSource>,
) {
    let Some(stream) = old.stream.clone() else {
        return;
    };
    let consumer = consumer_name(namespace, trigger, old);
    if consumer != default_consumer(namespace, trigger) {
        return;
    }
    let still_used = new.is_some_and(|n| {
        n.url == old.url
            && n.stream.as_deref() == Some(stream.as_str())
            && consumer_name(namespace, trigger, n) == consumer
    });
    if still_used {
        return;
    }
    let url = old.url.clone();
    let (ns, t) = (namespace.to_string(), trigger.to_string());
    tokio::spawn(async move {
        let deleted = tokio::time::timeout(FORGET_TIMEOUT, async {
            let client = async_nats::ConnectOptions::new()
                .name(format!("ignis {ns}/{t}"))
                .connection_timeout(Duration::from_secs(5))
                .connect(url.as_str())
                .await
                .map_err(|e| e.to_string())?;
            async_nats::jetstream::new(client)
                .delete_consumer_from_stream(&consumer, &stream)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match deleted {
            Ok(Ok(_)) => {
                tracing::info!(namespace = %ns, trigger = %t, %stream, %consumer, "deleted the jetstream consumer of a nats trigger")
            }
            Ok(Err(e)) => {
                tracing::warn!(namespace = %ns, trigger = %t, %stream, %consumer, error = %e, "cannot delete the jetstream consumer of a nats trigger")
            }
            Err(_) => {
                tracing::warn!(namespace = %ns, trigger = %t, %stream, %consumer, "cannot delete the jetstream consumer of a nats trigger: timed out")
            }
        }
    });
}

impl Controller {
    /// Reads the trigger's stream through its consumer and fires the trigger for each message,
    /// acknowledging it once the firing is on disk. Returns when the consumer cannot be read
    /// any more (the caller connects again after `backoff`, which this resets once bound).
    pub(super) async fn consume_stream(
        &self,
        trigger: &Trigger,
        source: &NatsSource,
        client: &async_nats::Client,
        backoff: &mut Duration,
    ) -> std::result::Result<(), StreamError> {
        let stream_name = source.stream.as_deref().unwrap_or_default();
        let js = async_nats::jetstream::new(client.clone());
        let stream = js
            .get_stream(stream_name)
            .await
            .map_err(|e| StreamError::Stream {
                stream: stream_name.to_string(),
                reason: e.to_string(),
            })?;
        let created_ns = stream.cached_info().created.unix_timestamp_nanos();
        let consumer = bind_consumer(&stream, stream_name, trigger, source).await?;
        tracing::info!(namespace = %trigger.namespace, trigger = %trigger.name, stream = %stream_name, consumer = %consumer.cached_info().name, subject = %source.subject, "nats trigger reads its stream");
        *backoff = FIRST_BACKOFF;
        let mut paused = false;
        loop {
            let rules = self.rules_of(trigger).await.map_err(StreamError::Store)?;
            if rules.is_empty() {
                if !paused {
                    tracing::info!(namespace = %trigger.namespace, trigger = %trigger.name, "nats trigger has no enabled rule: its messages wait in the stream");
                    paused = true;
                }
                tokio::time::sleep(PAUSE_CHECK).await;
                continue;
            }
            paused = false;
            let mut batch = consumer
                .batch()
                .max_messages(BATCH)
                .expires(PULL_EXPIRES)
                .messages()
                .await
                .map_err(|e| StreamError::Messages(e.to_string()))?;
            while let Some(next) = batch.next().await {
                let msg = next.map_err(|e| StreamError::Messages(e.to_string()))?;
                if !self
                    .on_stream_message(trigger, stream_name, created_ns, msg)
                    .await?
                {
                    // The last rule went: the rest of the batch goes back to the stream.
                    while let Some(Ok(rest)) = batch.next().await {
                        let _ = rest.ack_with(AckKind::Nak(None)).await;
                    }
                    break;
                }
            }
        }
    }

    /// Fires the trigger for one message of its stream (unless an earlier delivery of it did),
    /// then acknowledges it: true. False if the trigger has no enabled rule any more (the
    /// message is NAKed, to wait in the stream). A failed firing is NAKed and ends the reading.
    async fn on_stream_message(
        &self,
        trigger: &Trigger,
        stream: &str,
        created_ns: i128,
        msg: async_nats::jetstream::Message,
    ) -> std::result::Result<bool, StreamError> {
        let (seq, published_ns) = match msg.info() {
            Ok(info) => (info.stream_sequence, info.published.unix_timestamp_nanos()),
            Err(e) => {
                // Only a message without a JetStream reply subject, which a pull consumer
                // never hands out; there is nothing to acknowledge.
                tracing::warn!(namespace = %trigger.namespace, trigger = %trigger.name, error = %e, "not a jetstream message");
                return Ok(true);
            }
        };
        let event = Bytes::from(stream_event(
            &msg.message,
            stream,
            seq,
            published_ns / 1_000_000,
        ));
        let id = firing_id(trigger, stream, created_ns, seq);
        let fired: Result<bool> = async {
            let rules = self.rules_of(trigger).await?;
            if rules.is_empty() {
                return Ok(false);
            }
            let (mut firing, queued) = firing_of(trigger, rules, &event, None);
            firing.id = id;
            self.blocking(move |i| Ok(i.store.record_firing(&firing, &queued)?))
                .await?;
            Ok(true)
        }
        .await;
        match fired {
            Ok(false) => {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                return Ok(false);
            }
            Ok(true) => self.inner.queue.wake(),
            Err(ControllerError::Conflict(_)) => {
                tracing::debug!(namespace = %trigger.namespace, trigger = %trigger.name, stream, seq, "nats message delivered again: already fired");
            }
            Err(e) => {
                if let Err(nak) = msg.ack_with(AckKind::Nak(Some(NAK_DELAY))).await {
                    tracing::debug!(trigger = %trigger.name, error = %nak, "cannot nak a nats message");
                }
                return Err(StreamError::Store(e));
            }
        }
        if let Err(e) = msg.ack().await {
            // It comes again after the ack wait, and does not fire twice.
            tracing::warn!(namespace = %trigger.namespace, trigger = %trigger.name, stream, seq, error = %e, "cannot acknowledge a nats message");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["ORDERS", "a-b_c", &"x".repeat(255)] {
            assert!(check_name("nats.stream", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a.b",
            "a b",
            "a*",
            "a>",
            "a/b",
            "a\\b",
            "a\u{7}",
            &"x".repeat(256),
        ] {
            assert!(check_name("nats.stream", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_consumers_are_valid_and_distinct() {
        let a = default_consumer("a-b", "c");
        let b = default_consumer("a", "b-c");
        assert!(a.starts_with("ignis-a-b-c-") && b.starts_with("ignis-a-b-c-"));
        assert_ne!(a, b, "a hash of both names keeps them apart");
        let dotted = default_consumer("team.eu", "v1.2");
        assert!(check_name("nats.consumer", &dotted).is_ok(), "{dotted}");
        assert_eq!(dotted, default_consumer("team.eu", "v1.2"));
        let long = default_consumer(&"n".repeat(64), &"t".repeat(128));
        assert!(check_name("nats.consumer", &long).is_ok());
    }

    #[test]
    fn a_message_has_one_firing_id() {
        let trigger = Trigger {
            namespace: "default".into(),
            name: "orders".into(),
            spec: Default::default(),
            created_ms: 1,
            last_scheduled_ms: None,
        };
        let id = firing_id(&trigger, "ORDERS", 7, 42);
        assert_eq!(id, firing_id(&trigger, "ORDERS", 7, 42));
        assert_ne!(id, firing_id(&trigger, "ORDERS", 7, 43));
        assert_ne!(
            id,
            firing_id(&trigger, "ORDERS", 8, 42),
            "a recreated stream"
        );
        assert_ne!(id, firing_id(&trigger, "OTHER", 7, 42));
        let other = Trigger {
            name: "orders2".into(),
            ..trigger.clone()
        };
        assert_ne!(id, firing_id(&other, "ORDERS", 7, 42));
    }

    #[test]
    fn stream_messages_become_events_without_their_ack_subject() {
        let msg = async_nats::Message {
            subject: "orders.new".into(),
            reply: Some("$JS.ACK.ORDERS.c.1.42.42.0.0".into()),
            payload: Bytes::from_static(br#"{"n": 1}"#),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        let v: Value = serde_json::from_slice(&stream_event(&msg, "ORDERS", 42, 1_700)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"subject": "orders.new", "data": {"n": 1}, "headers": {},
                "stream": "ORDERS", "stream_seq": 42, "published_ms": 1700})
        );
    }
}

//! Triggers (named event sources: fired by API, on a cron schedule, by messages published to a
//! topic, or by messages of an external NATS subject or JetStream stream) and rules (a trigger
//! linked to a function), in the OpenWhisk model.

use serde::{Deserialize, Serialize};

use crate::ActivationId;

/// What fires a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// Fired through the API.
    #[default]
    Plain,
    /// Fired on a cron schedule (and through the API).
    Cron,
    /// Fired by the messages published to a topic of its namespace, in batches.
    Topic,
    /// Fired by the messages of a subject of an external NATS server.
    Nats,
    /// Fired when an object of the namespace's storage is created or deleted (and through the
    /// API).
    Storage,
}

/// A change to object storage that fires `storage` triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StorageEvent {
    /// An object was written (created or replaced).
    #[serde(rename = "object:created")]
    ObjectCreated,
    /// An object was deleted.
    #[serde(rename = "object:deleted")]
    ObjectDeleted,
}

impl StorageEvent {
    /// The name used in trigger specs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageEvent::ObjectCreated => "object:created",
            StorageEvent::ObjectDeleted => "object:deleted",
        }
    }
}

/// Most messages in one batch of a topic trigger.
pub const MAX_BATCH_SIZE: u32 = 1000;
/// Longest a topic trigger may wait to fill a batch.
pub const MAX_BATCH_WINDOW_MS: u64 = 300_000;

/// Where a `nats` trigger subscribes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSource {
    /// The server: `nats://host:port` (or `tls://host:port`); user and password may be given
    /// in the URL.
    pub url: String,
    /// The subject, wildcards allowed (`orders.*`, `orders.>`).
    pub subject: String,
    /// A queue group: servers of one group share the subject's messages instead of each getting
    /// every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_group: Option<String>,
    /// A JetStream stream that stores the subject's messages. With one, the trigger reads them
    /// through a durable pull consumer and acknowledges each only once its firing is on disk:
    /// at least once, also across restarts of Ignis. Without one, core NATS: at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// With `stream`: the durable consumer's name. Left out, Ignis names (and owns) one for the
    /// trigger, filled in when the trigger is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// With `stream`: where a consumer that Ignis creates starts (default
    /// [`NatsDeliver::New`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<NatsDeliver>,
}

/// Where a JetStream consumer made for a `nats` trigger starts reading its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsDeliver {
    /// The messages stored since the trigger was created or last replaced.
    #[default]
    New,
    /// Every message of the stream, from its first.
    All,
}

/// What a user says about a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// plain or cron.
    #[serde(default)]
    pub kind: TriggerKind,
    /// For cron: 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// For cron: the IANA time zone the schedule is read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// For cron: after downtime, fire once for every missed time instead of skipping them.
    #[serde(default)]
    pub catch_up: bool,
    /// Payload given to the functions when the schedule fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// For topic: the topic of the namespace whose messages fire the trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// For topic: most messages given to one invocation (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// For topic: how long a message may wait for others to fill its batch (default 0: a
    /// batch goes as soon as there is a message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_window_ms: Option<u64>,
    /// For nats: the server and subject subscribed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSource>,
    /// For storage: the bucket watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// For storage: which changes fire it (default: both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<StorageEvent>,
    /// For storage: only keys starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// For storage: only keys ending with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

impl TriggerSpec {
    /// Whether a storage trigger fires for `event` on `key` in `bucket`.
    pub fn matches_storage(&self, bucket: &str, key: &str, event: StorageEvent) -> bool {
        self.kind == TriggerKind::Storage
            && self.bucket.as_deref() == Some(bucket)
            && (self.events.is_empty() || self.events.contains(&event))
            && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
    }
}

/// A stored trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Kind, schedule…
    #[serde(flatten)]
    pub spec: TriggerSpec,
    /// When it was made.
    pub created_ms: u64,
    /// The scheduled time it last fired for (cron), so that it never fires twice for one time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_ms: Option<u64>,
}

/// A stored rule: when `trigger` fires, invoke `function`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The trigger.
    pub trigger: String,
    /// The function invoked (latest version).
    pub function: String,
    /// Disabled rules do not invoke.
    pub enabled: bool,
    /// When it was made.
    pub created_ms: u64,
}

/// One invocation a firing caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caused {
    /// Through this rule.
    pub rule: String,
    /// Of this function.
    pub function: String,
    /// Its activation id.
    pub activation_id: ActivationId,
}

/// The record of one firing of a trigger (a trigger activation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    /// Its id.
    pub id: ActivationId,
    /// Namespace.
    pub namespace: String,
    /// The trigger.
    pub trigger: String,
    /// When it fired.
    pub fired_ms: u64,
    /// For a schedule: the time it fired for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_ms: Option<u64>,
    /// The invocations it queued, one per enabled rule.
    pub activations: Vec<Caused>,
}

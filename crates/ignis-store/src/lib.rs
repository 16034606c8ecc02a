//! The embedded store of Ignis: metadata and activations in one SQLite file, code as
//! content-addressed blobs on disk.
//!
//! Everything goes through the object-safe [`Store`] trait so that a second backend (NATS
//! JetStream, for cluster mode) can stand in its place.
#![warn(missing_docs)]

mod blobs;
mod clock;
mod data;
mod executions;
mod multipart;
mod objects;
mod sqlite;
#[cfg(any(test, feature = "test-suite"))]
pub mod suite;
mod topics;

use ignis_core::usage::UsageCell;
use ignis_core::{
    ActivationId, ActivationRecord, CodeRef, ExecutionRecord, Firing, FunctionSpec,
    FunctionVersion, Rule, Status, StepRecord, Trigger,
};
use serde::{Deserialize, Serialize};

pub use blobs::{BlobMirror, BlobStore, sha256_hex};
pub use clock::with_clock;
pub use data::{
    BucketRecord, DataStore, Expect, IncrementError, KvEntry, ObjectMeta, StorageFiring,
    VersionMismatch,
};
pub use multipart::{CompletedUpload, MultipartStore, MultipartUpload, UploadedPart};
pub use objects::{BodyMirror, ObjectFiles, ObjectWriter, WrittenObject};
pub use sqlite::SqliteStore;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The file system failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a key may do. See docs/security.md, section "Tenancy and API keys".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, in every namespace, including namespaces themselves.
    Admin,
    /// Everything inside its namespace, its keys included.
    Owner,
    /// Invoke functions, fire triggers and call web functions of its namespace; nothing else.
    Invoke,
    /// Read (GET) everything of its namespace but its keys; change nothing.
    Read,
}

impl Role {
    /// The name used in the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Owner => "owner",
            Role::Invoke => "invoke",
            Role::Read => "read",
        }
    }

    /// Parses [`Role::as_str`]'s form.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Admin, Role::Owner, Role::Invoke, Role::Read]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A stored API key. Its secret is never stored in clear: `secret_hash` (argon2id) is what
/// bearer and basic authentication check, `sealed_secret` (the secret encrypted under the
/// server's master key) is what AWS Signature Version 4 verification decrypts. See
/// docs/security.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id, the part before `:` in the key; also the AWS access key id.
    pub id: String,
    /// argon2id hash of the secret, in the PHC string format. Empty only for a key of an older
    /// data directory whose secret the server has not seen yet (then `secret_sha256` is set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_hash: String,
    /// The secret encrypted with the server's master key (ChaCha20-Poly1305), base64 of nonce
    /// and ciphertext: SigV4 requests carry only an HMAC made with the secret, so verifying one
    /// needs the secret itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
    /// Older data directories: SHA-256 of the secret, hex. Replaced by `secret_hash` at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    /// Older data directories: the secret in clear. Sealed and removed at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Namespace the key belongs to; `None` for an admin key (every namespace).
    pub namespace: Option<String>,
    /// What it may do.
    pub role: Role,
    /// When it was made.
    pub created_ms: u64,
}

/// A namespace as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_ms: u64,
    /// Its own quotas, where they differ from the server's defaults.
    #[serde(default)]
    pub quotas: NamespaceQuotas,
}

/// Per-namespace limits set on the namespace; `None` takes the server's default, `0` means no
/// limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuotas {
    /// Invocations of the namespace's functions running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Invocations started per minute (a token bucket holding a minute's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocations_per_minute: Option<u32>,
    /// Days an activation is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_retention_days: Option<u32>,
    /// Activations kept at most, the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_retention_count: Option<u32>,
    /// MiB the memory limits of the namespace's live instances may add up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Functions the namespace may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<u32>,
    /// MiB of one function's code as uploaded (the zip or the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_mb: Option<u32>,
    /// MiB of one function's code once unpacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_unpacked_mb: Option<u32>,
}

/// A version to add.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewVersion {
    /// Namespace.
    pub namespace: String,
    /// Function name.
    pub name: String,
    /// Its spec.
    pub spec: FunctionSpec,
    /// Its code.
    pub code: CodeRef,
}

/// Which activations to list.
#[derive(Debug, Clone, Default)]
pub struct ActivationFilter {
    /// Only this function.
    pub function: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only activations caused by this trigger.
    pub trigger: Option<String>,
    /// Started at or after (ms).
    pub since: Option<u64>,
    /// Started before (ms).
    pub until: Option<u64>,
    /// Page size.
    pub limit: usize,
    /// Continue after this position (from a previous page).
    pub cursor: Option<Cursor>,
}

/// A position in the activation list (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// start_ms of the last activation seen.
    pub start_ms: u64,
    /// id of the last activation seen.
    pub id: ActivationId,
}

impl Cursor {
    /// The opaque text form given to clients.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.start_ms, self.id)
    }

    /// Parses [`Cursor::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('-')?;
        Some(Cursor {
            start_ms: ms.parse().ok()?,
            id: ActivationId::parse(id)?,
        })
    }
}

/// One page of activations.
#[derive(Debug, Clone)]
pub struct ActivationPage {
    /// The activations, newest first, without logs.
    pub activations: Vec<ActivationRecord>,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
}

/// An asynchronous invocation waiting in (or dead in) the durable queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedInvocation {
    /// The activation id it was acknowledged with (also the id of its activation record).
    pub id: ActivationId,
    /// Namespace.
    pub namespace: String,
    /// Function name.
    pub function: String,
    /// Version asked for, or `None` for the latest at run time.
    pub version: Option<u32>,
    /// The event.
    #[serde(with = "base64_bytes")]
    pub event: Vec<u8>,
    /// Runs tried so far.
    pub attempts: u32,
    /// When it may run next (ms since epoch).
    pub next_attempt_ms: u64,
    /// When it was accepted.
    pub created_ms: u64,
    /// The client's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// The last failure, for dead ones.
    pub last_error: Option<String>,
    /// The trigger whose firing queued it, if any.
    pub trigger: Option<String>,
    /// Where to POST the outcome when it is final.
    pub callback: Option<String>,
    /// Waiting, done, or dead (read from the store; ignored when queueing).
    pub state: QueueState,
}

/// Where a queued invocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    /// Waiting to run (or running).
    #[default]
    Queued,
    /// Failed every attempt: in the dead-letter list.
    Dead,
    /// Finished; kept so that its idempotency key still answers.
    Done,
}

/// A message published to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMessage {
    /// Its id, given to the publisher.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Topic.
    pub topic: String,
    /// The message as functions get it: one JSON object (id, topic, data…).
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    /// When it was accepted.
    pub published_ms: u64,
}

/// A topic of a namespace and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Messages published to it, ever.
    pub published: u64,
    /// Messages waiting to be handed to at least one of its triggers.
    pub pending: u64,
    /// When the last message was published.
    pub last_published_ms: u64,
}

/// Messages waiting for one topic trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeliveries {
    /// Namespace.
    pub namespace: String,
    /// The topic trigger.
    pub trigger: String,
    /// How many.
    pub count: u64,
    /// When the oldest was published.
    pub oldest_ms: u64,
}

/// A message waiting for a topic trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its position in the store (what [`Store::record_delivery`] takes).
    pub seq: u64,
    /// [`TopicMessage::body`].
    pub body: Vec<u8>,
}

/// Bytes as base64 text in JSON (events and messages travel in the cluster store's log).
pub mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Deserializes base64 into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The storage interface of Ignis. Object-safe: chosen once at start as `Arc<dyn Store>`.
pub trait Store: DataStore + MultipartStore + Send + Sync {
    /// Whether a namespace exists.
    fn namespace_exists(&self, namespace: &str) -> Result<bool>;
    /// Every namespace, by name.
    fn namespaces(&self) -> Result<Vec<NamespaceRecord>>;
    /// The names of every namespace, sorted.
    fn list_namespaces(&self) -> Result<Vec<String>> {
        Ok(self.namespaces()?.into_iter().map(|n| n.name).collect())
    }
    /// One namespace.
    fn get_namespace(&self, namespace: &str) -> Result<Option<NamespaceRecord>>;
    /// Creates a namespace; false if it existed.
    fn create_namespace(&self, namespace: &str) -> Result<bool>;
    /// Sets a namespace's quotas; false if there is no such namespace.
    fn set_namespace_quotas(&self, namespace: &str, quotas: &NamespaceQuotas) -> Result<bool>;
    /// Deletes a namespace and everything in it, in one transaction: functions and their
    /// versions, triggers, rules, firings, activations, queued and dead asynchronous
    /// invocations, topics and their messages, its keys, key-value entries, buckets, object
    /// records and multipart uploads (the caller deletes the object and part bodies). Returns the names of the functions it had, or `None` if the
    /// namespace did not exist. Code blobs are shared by content and stay.
    fn delete_namespace(&self, namespace: &str) -> Result<Option<Vec<String>>>;

    /// Stores a key.
    fn put_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// Every key.
    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Deletes a key; false if unknown.
    fn delete_key(&self, id: &str) -> Result<bool>;

    /// Adds the next version of a function (creating the function if new); an unknown
    /// namespace is `NotFound`. With `create_only`, an existing function is a conflict. Returns the version and whether the function is new.
    fn put_version(&self, new: NewVersion, create_only: bool) -> Result<(FunctionVersion, bool)>;
    /// One version, or the latest with `None`.
    fn get_version(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<FunctionVersion>>;
    /// The latest version of every function of a namespace, by name.
    fn list_functions(&self, namespace: &str) -> Result<Vec<FunctionVersion>>;
    /// Every version of a function, oldest first.
    fn list_versions(&self, namespace: &str, name: &str) -> Result<Vec<FunctionVersion>>;
    /// Deletes a function and its versions; the number of versions, or `None` if unknown.
    fn delete_function(&self, namespace: &str, name: &str) -> Result<Option<u32>>;

    /// Queues an asynchronous invocation durably (synced to disk before returning). With an
    /// idempotency key already used for this function, returns the existing item and `false`.
    fn enqueue(&self, item: &QueuedInvocation) -> Result<(QueuedInvocation, bool)>;
    /// Queued items due at `now_ms`, oldest first.
    fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<QueuedInvocation>>;
    /// When the next queued item is due, if any is queued.
    fn next_due(&self) -> Result<Option<u64>>;
    /// Schedules another attempt.
    fn retry_later(
        &self,
        id: ActivationId,
        attempts: u32,
        next_attempt_ms: u64,
        error: &str,
    ) -> Result<()>;
    /// Moves an item to the dead-letter list.
    fn bury(&self, id: ActivationId, attempts: u32, error: &str) -> Result<()>;
    /// Marks an item finished (its event is dropped; its idempotency key is kept).
    fn dequeue(&self, id: ActivationId) -> Result<()>;
    /// Dead-letter items of a namespace, newest first.
    fn dead_letters(&self, namespace: &str) -> Result<Vec<QueuedInvocation>>;
    /// Puts a dead item back in the queue with no attempts; false if there is none with this id.
    fn revive(&self, namespace: &str, id: ActivationId) -> Result<bool>;

    /// Stores a trigger; with `create_only`, an existing one is a conflict. True if new.
    fn put_trigger(&self, trigger: &Trigger, create_only: bool) -> Result<bool>;
    /// One trigger.
    fn get_trigger(&self, namespace: &str, name: &str) -> Result<Option<Trigger>>;
    /// The triggers of a namespace, by name.
    fn list_triggers(&self, namespace: &str) -> Result<Vec<Trigger>>;
    /// Deletes a trigger and the rules that use it; false if unknown.
    fn delete_trigger(&self, namespace: &str, name: &str) -> Result<bool>;
    /// Stores a rule; with `create_only`, an existing one is a conflict. True if new.
    fn put_rule(&self, rule: &Rule, create_only: bool) -> Result<bool>;
    /// One rule.
    fn get_rule(&self, namespace: &str, name: &str) -> Result<Option<Rule>>;
    /// The rules of a namespace, by name.
    fn list_rules(&self, namespace: &str) -> Result<Vec<Rule>>;
    /// Deletes a rule; false if unknown.
    fn delete_rule(&self, namespace: &str, name: &str) -> Result<bool>;
    /// Records a firing, queues the invocations it caused and, for a schedule, the time it
    /// fired for — all in one transaction synced to disk, so a firing is never lost nor
    /// repeated. Fails with `Conflict`, writing nothing, if a firing with its id was already
    /// recorded (ids derived from a message make a redelivered message fire once).
    fn record_firing(&self, firing: &Firing, queued: &[QueuedInvocation]) -> Result<()>;
    /// Marks a scheduled time as handled without firing (a time missed during downtime).
    fn skip_scheduled(&self, namespace: &str, trigger: &str, scheduled_ms: u64) -> Result<()>;
    /// Publishes a message: in one transaction synced to disk, counts it in its topic and, if
    /// topic triggers of its namespace subscribe to the topic, stores it with one pending
    /// delivery per trigger. Returns how many triggers it is for (none: it is only counted).
    fn publish(&self, message: &TopicMessage) -> Result<usize>;
    /// The topics of a namespace (those published to), by name.
    fn list_topics(&self, namespace: &str) -> Result<Vec<TopicInfo>>;
    /// Every topic trigger with messages waiting for it.
    fn pending_deliveries(&self) -> Result<Vec<PendingDeliveries>>;
    /// The oldest messages waiting for a topic trigger, at most `limit`.
    fn next_deliveries(
        &self,
        namespace: &str,
        trigger: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>>;
    /// Hands messages of a topic trigger over to the queue, in one transaction synced to disk:
    /// records the firing and its queued invocations, and removes the trigger's deliveries
    /// `delivered` (and the messages no other trigger waits for). Fails with `Conflict` if one
    /// of them is no longer pending, writing nothing.
    fn record_delivery(
        &self,
        firing: &Firing,
        queued: &[QueuedInvocation],
        delivered: &[u64],
    ) -> Result<()>;

    /// Drops the messages a trigger waits for (and those no other trigger waits for): for a
    /// trigger that is no longer a topic trigger.
    fn forget_deliveries(&self, namespace: &str, trigger: &str) -> Result<()>;

    /// Firings of a trigger, newest first.
    fn list_firings(&self, namespace: &str, trigger: &str, limit: usize) -> Result<Vec<Firing>>;

    /// Stores activations, all in one transaction.
    fn insert_activations(&self, records: &[ActivationRecord]) -> Result<()>;
    /// One activation with its logs.
    fn get_activation(&self, namespace: &str, id: ActivationId)
    -> Result<Option<ActivationRecord>>;
    /// Deletes a namespace's activations that started before `before_ms` and, with `keep`, all
    /// but the newest `keep`. Returns how many went.
    fn prune_activations(&self, namespace: &str, before_ms: u64, keep: Option<u64>) -> Result<u64>;
    /// A page of activations, newest first, without logs and results.
    fn list_activations(
        &self,
        namespace: &str,
        filter: &ActivationFilter,
    ) -> Result<ActivationPage>;

    /// Inserts or replaces a workflow execution (its steps are saved apart); dropped if its
    /// namespace no longer exists.
    fn save_execution(&self, execution: &ExecutionRecord) -> Result<()>;
    /// Stores ended steps `(execution id, namespace, step)`, all in one transaction.
    fn save_steps(&self, steps: &[(ActivationId, String, StepRecord)]) -> Result<()>;
    /// One execution with its ended steps.
    fn get_execution(&self, namespace: &str, id: ActivationId) -> Result<Option<ExecutionRecord>>;
    /// A namespace's executions (of one function if given), newest first, without steps.
    fn list_executions(
        &self,
        namespace: &str,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>>;
    /// Every execution still running, with its ended steps (to resume after a restart).
    fn running_executions(&self) -> Result<Vec<ExecutionRecord>>;
    /// The metering of a namespace's activations that started in `[from_ms, to_ms)`: one row
    /// per function and UTC day, with exact integer sums.
    fn usage(&self, namespace: &str, from_ms: u64, to_ms: u64) -> Result<Vec<UsageCell>>;

    /// Asynchronous invocations waiting to run (not dead, not done), per namespace.
    fn async_backlog(&self) -> Result<Vec<(String, u64)>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_object_safe() {
        fn takes(_: &dyn Store) {}
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        takes(&s);
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            start_ms: 12345,
            id: ActivationId::new(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("garbage"), None);
        assert_eq!(Cursor::decode("12-zz"), None);
    }
}

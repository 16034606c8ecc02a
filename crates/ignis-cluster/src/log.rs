//! The replicated store: a JetStream stream of commands applied by every node to a local SQLite
//! replica.
//!
//! Why a log and not one KV key per record: the [`Store`] contract has multi-record
//! transactions (a firing with its queued invocations, a namespace deleted with everything in
//! it, a topic message with one delivery per trigger) and conditional writes whose answer
//! depends on several records. JetStream KV has neither; an ordered log applied
//! deterministically gives both, with JetStream's replication and no consensus of our own.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use ignis_core::usage::UsageCell;
use ignis_core::{
    ActivationId, ActivationRecord, ExecutionRecord, Firing, FunctionVersion, Rule, StepRecord,
    Trigger,
};
use ignis_store::{
    ActivationFilter, ActivationPage, ApiKeyRecord, BucketRecord, CompletedUpload, DataStore,
    Delivery, Expect, IncrementError, KvEntry, MultipartStore, MultipartUpload, NamespaceQuotas,
    NamespaceRecord, NewVersion, ObjectMeta, PendingDeliveries, QueuedInvocation, Result,
    SqliteStore, StorageFiring, Store, StoreError, TopicInfo, TopicMessage, UploadedPart,
    VersionMismatch,
};
use serde::{Deserialize, Serialize};

use crate::Cluster;

/// The stream of commands.
pub(crate) const STREAM: &str = "IGNIS_LOG";
/// Its subject.
const SUBJECT: &str = "ignis.log";
/// Most bytes of activation records in one entry of the log.
const BATCH_BYTES: usize = 4 << 20;
/// How long a starting node waits to catch up with the log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a write waits for its own node to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the applier waits for an entry before it checks that its consumer is not stuck.
const STALL_CHECK: Duration = Duration::from_secs(2);
/// How long a write keeps trying to append to the log (a JetStream leader election).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

/// One entry of the log.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// Unique; also the JetStream message id, so a publish retried is stored once.
    id: String,
    /// The writer's clock, which the write stamps on what it creates, on every node.
    at_ms: u64,
    cmd: Command,
}

/// A write of the [`Store`], [`DataStore`] and [`MultipartStore`] traits, as data.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Command {
    CreateNamespace {
        namespace: String,
    },
    SetNamespaceQuotas {
        namespace: String,
        quotas: NamespaceQuotas,
    },
    DeleteNamespace {
        namespace: String,
    },
    PutKey {
        key: ApiKeyRecord,
    },
    DeleteKey {
        id: String,
    },
    PutVersion {
        new: NewVersion,
        create_only: bool,
    },
    DeleteFunction {
        namespace: String,
        name: String,
    },
    Enqueue {
        item: QueuedInvocation,
    },
    RetryLater {
        id: ActivationId,
        attempts: u32,
        next_attempt_ms: u64,
        error: String,
    },
    Bury {
        id: ActivationId,
        attempts: u32,
        error: String,
    },
    Dequeue {
        id: ActivationId,
    },
    Revive {
        namespace: String,
        id: ActivationId,
    },
    PutTrigger {
        trigger: Trigger,
        create_only: bool,
    },
    DeleteTrigger {
        namespace: String,
        name: String,
    },
    PutRule {
        rule: Rule,
        create_only: bool,
    },
    DeleteRule {
        namespace: String,
        name: String,
    },
    RecordFiring {
        firing: Firing,
        queued: Vec<QueuedInvocation>,
    },
    SkipScheduled {
        namespace: String,
        trigger: String,
        scheduled_ms: u64,
    },
    Publish {
        message: TopicMessage,
    },
    RecordDelivery {
        firing: Firing,
        queued: Vec<QueuedInvocation>,
        delivered: Vec<u64>,
    },
    ForgetDeliveries {
        namespace: String,
        trigger: String,
    },
    InsertActivations {
        records: Vec<ActivationRecord>,
    },
    PruneActivations {
        namespace: String,
        before_ms: u64,
        keep: Option<u64>,
    },
    SaveExecution {
        execution: ExecutionRecord,
    },
    SaveSteps {
        steps: Vec<(ActivationId, String, StepRecord)>,
    },
    KvPut {
        namespace: String,
        key: String,
        #[serde(with = "ignis_store::base64_bytes")]
        value: Vec<u8>,
        expires_ms: Option<u64>,
        expect: Expect,
        now_ms: u64,
    },
    KvDelete {
        namespace: String,
        key: String,
        expect: Expect,
        now_ms: u64,
    },
    KvIncrement {
        namespace: String,
        key: String,
        by: i64,
        expires_ms: Option<u64>,
        now_ms: u64,
    },
    KvPurgeExpired {
        now_ms: u64,
    },
    CreateBucket {
        namespace: String,
        name: String,
    },
    DeleteBucket {
        namespace: String,
        name: String,
    },
    PutObject {
        namespace: String,
        meta: ObjectMeta,
        /// Its storage firings, committed with it.
        #[serde(default)]
        firings: Vec<StorageFiring>,
    },
    DeleteObject {
        namespace: String,
        bucket: String,
        key: String,
        /// The body the writer read and made the firings for (absent in entries written
        /// before storage firings were logged with the change: whatever body is there).
        #[serde(default)]
        file: Option<String>,
        #[serde(default)]
        firings: Vec<StorageFiring>,
    },
    CreateUpload {
        namespace: String,
        upload: MultipartUpload,
    },
    PutPart {
        namespace: String,
        upload: String,
        part: UploadedPart,
    },
    CompleteUpload {
        namespace: String,
        upload: String,
        parts: Vec<(u32, String)>,
        meta: ObjectMeta,
        firings: Vec<StorageFiring>,
    },
    AbortUpload {
        namespace: String,
        upload: String,
    },
    AbortUploadsBefore {
        before_ms: u64,
    },
}

/// What applying a command answered.
enum Outcome {
    Unit,
    Bool(bool),
    Version(Box<FunctionVersion>, bool),
    Names(Option<Vec<String>>),
    Versions(Option<u32>),
    Enqueued(QueuedInvocation, bool),
    Count(u64),
    KvPut(std::result::Result<u64, VersionMismatch>),
    KvDelete(std::result::Result<bool, VersionMismatch>),
    KvIncrement(std::result::Result<(i64, u64), String>),
    Object(Option<ObjectMeta>),
    Part(Option<UploadedPart>),
    Completed(CompletedUpload),
    Files(Option<Vec<String>>),
    NamespaceFiles(Vec<(String, String)>),
}

/// What changed, told to the node's caches after every command applied (from any node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A namespace was created, deleted, or got new quotas.
    Namespace(String),
    /// API keys changed.
    Keys,
    /// A function got a version or was deleted.
    Function {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// Triggers or rules of a namespace changed.
    Triggers(String),
    /// Something was queued or published: background work may have something to do.
    Work,
}

impl Command {
    fn change(&self) -> Option<Change> {
        Some(match self {
            Command::CreateNamespace { namespace }
            | Command::SetNamespaceQuotas { namespace, .. }
            | Command::DeleteNamespace { namespace } => Change::Namespace(namespace.clone()),
            Command::PutKey { .. } | Command::DeleteKey { .. } => Change::Keys,
            Command::PutVersion { new, .. } => Change::Function {
                namespace: new.namespace.clone(),
                name: new.name.clone(),
            },
            Command::DeleteFunction { namespace, name } => Change::Function {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            Command::PutTrigger { trigger, .. } => Change::Triggers(trigger.namespace.clone()),
            Command::PutRule { rule, .. } => Change::Triggers(rule.namespace.clone()),
            Command::DeleteTrigger { namespace, .. } | Command::DeleteRule { namespace, .. } => {
                Change::Triggers(namespace.clone())
            }
            Command::Enqueue { .. }
            | Command::Revive { .. }
            | Command::RecordFiring { .. }
            | Command::RecordDelivery { .. }
            | Command::Publish { .. } => Change::Work,
            Command::PutObject { firings, .. }
            | Command::DeleteObject { firings, .. }
            | Command::CompleteUpload { firings, .. }
                if !firings.is_empty() =>
            {
                Change::Work
            }
            _ => return None,
        })
    }

    fn apply(self, s: &SqliteStore) -> Result<Outcome> {
        use Outcome as O;
        Ok(match self {
            Command::CreateNamespace { namespace } => O::Bool(s.create_namespace(&namespace)?),
            Command::SetNamespaceQuotas { namespace, quotas } => {
                O::Bool(s.set_namespace_quotas(&namespace, &quotas)?)
            }
            Command::DeleteNamespace { namespace } => O::Names(s.delete_namespace(&namespace)?),
            Command::PutKey { key } => {
                s.put_key(&key)?;
                O::Unit
            }
            Command::DeleteKey { id } => O::Bool(s.delete_key(&id)?),
            Command::PutVersion { new, create_only } => {
                let (v, created) = s.put_version(new, create_only)?;
                O::Version(Box::new(v), created)
            }
            Command::DeleteFunction { namespace, name } => {
                O::Versions(s.delete_function(&namespace, &name)?)
            }
            Command::Enqueue { item } => {
                let (item, new) = s.enqueue(&item)?;
                O::Enqueued(item, new)
            }
            Command::RetryLater {
                id,
                attempts,
                next_attempt_ms,
                error,
            } => {
                s.retry_later(id, attempts, next_attempt_ms, &error)?;
                O::Unit
            }
            Command::Bury {
                id,
                attempts,
                error,
            } => {
                s.bury(id, attempts, &error)?;
                O::Unit
            }
            Command::Dequeue { id } => {
                s.dequeue(id)?;
                O::Unit
            }
            Command::Revive { namespace, id } => O::Bool(s.revive(&namespace, id)?),
            Command::PutTrigger {
                trigger,
                create_only,
            } => O::Bool(s.put_trigger(&trigger, create_only)?),
            Command::DeleteTrigger { namespace, name } => {
                O::Bool(s.delete_trigger(&namespace, &name)?)
            }
            Command::PutRule { rule, create_only } => O::Bool(s.put_rule(&rule, create_only)?),
            Command::DeleteRule { namespace, name } => O::Bool(s.delete_rule(&namespace, &name)?),
            Command::RecordFiring { firing, queued } => {
                s.record_firing(&firing, &queued)?;
                O::Unit
            }
            Command::SkipScheduled {
                namespace,
                trigger,
                scheduled_ms,
            } => {
                s.skip_scheduled(&namespace, &trigger, scheduled_ms)?;
                O::Unit
            }
            Command::Publish { message } => O::Count(s.publish(&message)? as u64),
            Command::RecordDelivery {
                firing,
                queued,
                delivered,
            } => {
                s.record_delivery(&firing, &queued, &delivered)?;
                O::Unit
            }
            Command::ForgetDeliveries { namespace, trigger } => {
                s.forget_deliveries(&namespace, &trigger)?;
                O::Unit
            }
            Command::InsertActivations { records } => {
                s.insert_activations(&records)?;
                O::Unit
            }
            Command::PruneActivations {
                namespace,
                before_ms,
                keep,
            } => O::Count(s.prune_activations(&namespace, before_ms, keep)?),
            Command::SaveExecution { execution } => {
                s.save_execution(&execution)?;
                O::Unit
            }
            Command::SaveSteps { steps } => {
                s.save_steps(&steps)?;
                O::Unit
            }
            Command::KvPut {
                namespace,
                key,
                value,
                expires_ms,
                expect,
                now_ms,
            } => O::KvPut(s.kv_put(&namespace, &key, &value, expires_ms, expect, now_ms)?),
            Command::KvDelete {
                namespace,
                key,
                expect,
                now_ms,
            } => O::KvDelete(s.kv_delete(&namespace, &key, expect, now_ms)?),
            Command::KvIncrement {
                namespace,
                key,
                by,
                expires_ms,
                now_ms,
            } => O::KvIncrement(
                match s.kv_increment(&namespace, &key, by, expires_ms, now_ms) {
                    Ok(v) => Ok(v),
                    Err(IncrementError::NotAnInteger(why)) => Err(why),
                    Err(IncrementError::Store(e)) => return Err(e),
                },
            ),
            Command::KvPurgeExpired { now_ms } => O::Count(s.kv_purge_expired(now_ms)?),
            Command::CreateBucket { namespace, name } => {
                O::Bool(s.create_bucket(&namespace, &name)?)
            }
            Command::DeleteBucket { namespace, name } => {
                O::Bool(s.delete_bucket(&namespace, &name)?)
            }
            Command::PutObject {
                namespace,
                meta,
                firings,
            } => O::Object(s.put_object(&namespace, &meta, &firings)?),
            Command::DeleteObject {
                namespace,
                bucket,
                key,
                file,
                firings,
            } => {
                let file = match file {
                    Some(f) => f,
                    None => match s.get_object(&namespace, &bucket, &key)? {
                        Some(m) => m.file,
                        None => return Ok(O::Bool(false)),
                    },
                };
                O::Bool(s.delete_object(&namespace, &bucket, &key, &file, &firings)?)
            }
            Command::CreateUpload { namespace, upload } => {
                s.create_upload(&namespace, &upload)?;
                O::Unit
            }
            Command::PutPart {
                namespace,
                upload,
                part,
            } => O::Part(s.put_part(&namespace, &upload, &part)?),
            Command::CompleteUpload {
                namespace,
                upload,
                parts,
                meta,
                firings,
            } => O::Completed(s.complete_upload(&namespace, &upload, &parts, &meta, &firings)?),
            Command::AbortUpload { namespace, upload } => {
                O::Files(s.abort_upload(&namespace, &upload)?)
            }
            Command::AbortUploadsBefore { before_ms } => {
                O::NamespaceFiles(s.abort_uploads_before(before_ms)?)
            }
        })
    }
}

type Waiter = std::sync::mpsc::SyncSender<Result<Outcome>>;

/// Told of every change applied.
pub type Observer = Arc<dyn Fn(&Change) + Send + Sync>;

/// What the applier shares with the writers and readers of one node.
#[derive(Default)]
struct Applied {
    /// The last stream sequence applied.
    seq: Mutex<u64>,
    /// Held while an entry is applied: a snapshot is taken between two entries.
    applying: Mutex<()>,
    /// The replica missed entries the log no longer has (it fell behind a compaction while
    /// running): every call fails until the node restarts from a snapshot.
    broken: std::sync::atomic::AtomicBool,
    /// The sequence of the newest snapshot this node made or started from.
    snapshot: std::sync::atomic::AtomicU64,
    moved: Condvar,
    /// Writes of this node waiting for their answer, by entry id.
    waiting: Mutex<HashMap<String, Waiter>>,
    observer: Mutex<Option<Observer>>,
}

/// The cluster's [`Store`]: see the module documentation.
pub struct ReplicatedStore {
    cluster: Arc<Cluster>,
    replica: Arc<SqliteStore>,
    replica_path: std::path::PathBuf,
    applied: Arc<Applied>,
}

/// The object store bucket of replica snapshots, named `replica-<sequence, 20 digits>`.
const SNAPSHOTS: &str = "ignis_snapshots";

async fn snapshot_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> std::result::Result<jetstream::object_store::ObjectStore, String> {
    crate::until_formed(|| async {
        match js.get_object_store(SNAPSHOTS).await {
            Ok(s) => Ok(s),
            Err(_) => js
                .create_object_store(jetstream::object_store::Config {
                    bucket: SNAPSHOTS.into(),
                    description: Some("Ignis store replicas, by log sequence".into()),
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string()),
        }
    })
    .await
}

/// The snapshots in the bucket, by sequence, newest last.
async fn snapshots(
    bucket: &jetstream::object_store::ObjectStore,
) -> std::result::Result<Vec<(u64, String)>, String> {
    let mut list = bucket.list().await.map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    while let Some(info) = list.next().await {
        let info = info.map_err(|e| e.to_string())?;
        if let Some(seq) = info
            .name
            .strip_prefix("replica-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((seq, info.name));
        }
    }
    found.sort();
    Ok(found)
}

fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("cluster log: {what}")))
}

fn unexpected() -> StoreError {
    unavailable("a command's answer did not match it")
}

impl ReplicatedStore {
    /// Creates the log stream if the cluster has none, rebuilds the replica at `replica_path`
    /// from the whole log and follows it from then on.
    pub fn open(cluster: Arc<Cluster>, replica_path: &Path) -> Result<Self> {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = replica_path.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        let js = cluster.jetstream().clone();
        let replicas = cluster.replicas();
        // Start from the newest snapshot, if the log was compacted: replaying from there
        // gives the same replica as replaying everything.
        let (bucket_js, target) = (js.clone(), replica_path.to_path_buf());
        let start = cluster
            .wait(async move {
                let bucket = snapshot_bucket(&bucket_js, replicas).await?;
                // Listing makes a consumer, which a NATS cluster still forming may refuse.
                let newest = crate::until_formed(|| snapshots(&bucket)).await?.pop();
                let Some((seq, name)) = newest else {
                    return Ok(0);
                };
                let mut object = bucket.get(&name).await.map_err(|e| e.to_string())?;
                let mut file = tokio::fs::File::create(&target)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::io::copy(&mut object, &mut file)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<u64, String>(seq)
            })
            .map_err(|e| unavailable(format!("the newest snapshot: {e}")))?;
        let replica = Arc::new(SqliteStore::open_replica(replica_path)?);
        let stream = cluster
            .wait(async move {
                let config = jetstream::stream::Config {
                    name: STREAM.into(),
                    subjects: vec![SUBJECT.into()],
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                };
                crate::until_formed(|| js.get_or_create_stream(config.clone())).await
            })
            .map_err(|e| unavailable(format!("{e} (is JetStream enabled on NATS?)")))?;
        let first = stream.cached_info().state.first_sequence;
        if first > start + 1 {
            return Err(unavailable(format!(
                "the log starts at entry {first} and no snapshot covers the entries before it"
            )));
        }
        drop(stream);
        let applied = Arc::new(Applied::default());
        *applied.seq.lock().unwrap() = start;
        applied
            .snapshot
            .store(start, std::sync::atomic::Ordering::Relaxed);
        if start > 0 {
            tracing::info!(entry = start, "store replica started from a snapshot");
        }
        let store = ReplicatedStore {
            cluster,
            replica,
            replica_path: replica_path.to_path_buf(),
            applied,
        };
        store.start_applier()?;
        // Catching up at start may span a JetStream leader election (a NATS server just lost).
        store.barrier_within(CATCH_UP_TIMEOUT)?;
        Ok(store)
    }

    /// Tells `observer` of every change applied from now on, whichever node made it.
    pub fn observe(&self, observer: Observer) {
        *self.applied.observer.lock().unwrap() = Some(observer);
    }

    fn start_applier(&self) -> Result<()> {
        let (js, replica, applied) = (
            self.cluster.jetstream().clone(),
            self.replica.clone(),
            self.applied.clone(),
        );
        self.cluster.handle().spawn(follow(js, replica, applied));
        Ok(())
    }

    fn check(&self) -> Result<()> {
        if self
            .applied
            .broken
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(unavailable(
                "this node fell behind the log's compaction and missed entries; restart it (it \
                 starts again from the newest snapshot)",
            ));
        }
        Ok(())
    }

    /// The sequence of the newest snapshot this node made or started from.
    pub fn snapshot_seq(&self) -> u64 {
        self.applied
            .snapshot
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Compacts the log: writes a snapshot of this node's replica to the object store
    /// `ignis_snapshots`, then deletes the log's entries older than `keep` entries before it
    /// (nodes that are behind by less than `keep` catch up from the log; a node that starts
    /// later starts from the snapshot), and older snapshots but one. Returns the snapshot's
    /// sequence.
    pub fn compact(&self, keep: u64) -> Result<u64> {
        self.check()?;
        let file = self.replica_path.with_extension("snapshot");
        let _ = std::fs::remove_file(&file);
        let seq = {
            let _between_entries = self.applied.applying.lock().unwrap();
            let seq = *self.applied.seq.lock().unwrap();
            self.replica.snapshot_to(&file)?;
            seq
        };
        let (js, replicas, path) = (
            self.cluster.jetstream().clone(),
            self.cluster.replicas(),
            file.clone(),
        );
        self.cluster
            .wait(async move {
                let bucket = snapshot_bucket(&js, replicas).await?;
                let mut body = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| e.to_string())?;
                let name = format!("replica-{seq:020}");
                bucket
                    .put(name.as_str(), &mut body)
                    .await
                    .map_err(|e| e.to_string())?;
                if seq > keep {
                    let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
                    stream
                        .purge()
                        .sequence(seq - keep + 1)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let all = snapshots(&bucket).await?;
                for (_, old) in all.iter().take(all.len().saturating_sub(2)) {
                    let _ = bucket.delete(old).await;
                }
                Ok::<(), String>(())
            })
            .map_err(|e| unavailable(format!("compaction: {e}")))?;
        let _ = std::fs::remove_file(&file);
        self.applied
            .snapshot
            .store(seq, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(entry = seq, "store log compacted");
        Ok(seq)
    }

    /// The last sequence of the log this node has applied.
    pub fn applied(&self) -> u64 {
        *self.applied.seq.lock().unwrap()
    }

    /// Waits until this node has applied every entry appended before the call.
    pub fn barrier(&self) -> Result<()> {
        self.barrier_within(APPLY_TIMEOUT)
    }

    fn barrier_within(&self, timeout: Duration) -> Result<()> {
        let js = self.cluster.jetstream().clone();
        let last = self
            .cluster
            .wait(async move {
                let stream = js.get_stream(STREAM).await?;
                Ok::<_, async_nats::Error>(stream.cached_info().state.last_sequence)
            })
            .map_err(unavailable)?;
        self.wait_applied(last, timeout)
    }

    fn wait_applied(&self, seq: u64, timeout: Duration) -> Result<()> {
        let mut applied = self.applied.seq.lock().unwrap();
        let deadline = std::time::Instant::now() + timeout;
        while *applied < seq {
            if self
                .applied
                .broken
                .load(std::sync::atomic::Ordering::Acquire)
            {
                drop(applied);
                return self.check();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(unavailable(format!(
                    "this node has applied the log up to {} of {seq}",
                    *applied
                )));
            }
            applied = self.applied.moved.wait_timeout(applied, left).unwrap().0;
        }
        Ok(())
    }

    /// The replica, up to date with every write made before the call.
    fn read(&self) -> Result<&SqliteStore> {
        self.check()?;
        self.barrier()?;
        Ok(&self.replica)
    }

    /// Appends a command and waits for this node to apply it; returns what applying answered.
    fn exec(&self, cmd: Command) -> Result<Outcome> {
        self.check()?;
        let id = ActivationId::new().to_string();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.applied.waiting.lock().unwrap().insert(id.clone(), tx);
        let entry = Entry {
            id: id.clone(),
            at_ms: ignis_core::now_ms(),
            cmd,
        };
        let payload = bytes::Bytes::from(serde_json::to_vec(&entry)?);
        let js = self.cluster.jetstream().clone();
        let msg_id = id.clone();
        let appended = self.cluster.wait(async move {
            let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
            let mut pause = Duration::from_millis(50);
            loop {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id.as_str());
                let err = match js
                    .publish_with_headers(SUBJECT, headers, payload.clone())
                    .await
                {
                    Ok(ack) => match ack.await {
                        Ok(_) => return Ok(()),
                        Err(e) => e.to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                if tokio::time::Instant::now() + pause > deadline {
                    return Err(err);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        });
        if let Err(e) = appended {
            self.applied.waiting.lock().unwrap().remove(&id);
            return Err(unavailable(e));
        }
        match rx.recv_timeout(APPLY_TIMEOUT) {
            Ok(outcome) => outcome,
            Err(_) => {
                self.applied.waiting.lock().unwrap().remove(&id);
                Err(unavailable("this node did not apply its own write in time"))
            }
        }
    }
}

/// Applies the log from the start, forever: an ordered consumer, created again from the next
/// sequence after any error.
async fn follow(js: jetstream::Context, replica: Arc<SqliteStore>, applied: Arc<Applied>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let next = *applied.seq.lock().unwrap() + 1;
        let err = match consume(&js, &replica, &applied, next).await {
            Ok(()) => "the log ended".to_string(),
            Err(e) => e.to_string(),
        };
        if applied.broken.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        tracing::warn!(error = %err, next, "following the cluster log again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn consume(
    js: &jetstream::Context,
    replica: &SqliteStore,
    applied: &Applied,
    next: u64,
) -> std::result::Result<(), async_nats::Error> {
    let stream = js.get_stream(STREAM).await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    loop {
        let message = match tokio::time::timeout(STALL_CHECK, messages.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) => return Ok(()),
            Err(_) => {
                // Quiet for a while: fine if there is nothing new; if the log has entries this
                // node has not seen, the consumer is stuck (a NATS server came and went):
                // make a new one.
                let stream = js.get_stream(STREAM).await?;
                let last = stream.cached_info().state.last_sequence;
                if last > *applied.seq.lock().unwrap() {
                    return Err(format!("the log is at {last} but nothing arrives").into());
                }
                continue;
            }
        };
        let seq = message.info()?.stream_sequence;
        let expected = *applied.seq.lock().unwrap() + 1;
        if seq > expected {
            // Entries this replica never applied were compacted away while it ran behind.
            tracing::error!(
                expected,
                got = seq,
                "the store's log lost entries this node had not applied; restart the node"
            );
            applied
                .broken
                .store(true, std::sync::atomic::Ordering::Release);
            applied.moved.notify_all();
            return Ok(());
        }
        if seq < expected {
            continue;
        }
        let _one_entry = applied.applying.lock().unwrap();
        // SQLite blocks: the runtime's other worker serves the store's callers meanwhile.
        tokio::task::block_in_place(|| apply_entry(replica, applied, &message.payload));
        *applied.seq.lock().unwrap() = seq;
        applied.moved.notify_all();
    }
}

fn apply_entry(replica: &SqliteStore, applied: &Applied, payload: &[u8]) {
    let entry: Entry = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "a cluster log entry could not be read; skipped");
            return;
        }
    };
    let change = entry.cmd.change();
    let outcome = ignis_store::with_clock(entry.at_ms, || entry.cmd.apply(replica));
    if let Some(waiter) = applied.waiting.lock().unwrap().remove(&entry.id) {
        let _ = waiter.send(outcome);
    }
    if let Some(change) = change {
        let observer = applied.observer.lock().unwrap().clone();
        if let Some(observer) = observer {
            observer(&change);
        }
    }
}

macro_rules! answer {
    ($outcome:expr, $pattern:pat => $value:expr) => {
        match $outcome? {
            $pattern => Ok($value),
            _ => Err(unexpected()),
        }
    };
}

impl Store for ReplicatedStore {
    fn namespace_exists(&self, namespace: &str) -> Result<bool> {
        self.read()?.namespace_exists(namespace)
    }

    fn namespaces(&self) -> Result<Vec<NamespaceRecord>> {
        self.read()?.namespaces()
    }

    fn get_namespace(&self, namespace: &str) -> Result<Option<NamespaceRecord>> {
        self.read()?.get_namespace(namespace)
    }

    fn create_namespace(&self, namespace: &str) -> Result<bool> {
        answer!(self.exec(Command::CreateNamespace { namespace: namespace.into() }), Outcome::Bool(b) => b)
    }

    fn set_namespace_quotas(&self, namespace: &str, quotas: &NamespaceQuotas) -> Result<bool> {
        answer!(self.exec(Command::SetNamespaceQuotas {
            namespace: namespace.into(),
            quotas: *quotas,
        }), Outcome::Bool(b) => b)
    }

    fn delete_namespace(&self, namespace: &str) -> Result<Option<Vec<String>>> {
        answer!(self.exec(Command::DeleteNamespace { namespace: namespace.into() }), Outcome::Names(n) => n)
    }

    fn put_key(&self, key: &ApiKeyRecord) -> Result<()> {
        answer!(self.exec(Command::PutKey { key: key.clone() }), Outcome::Unit => ())
    }

    fn list_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.read()?.list_keys()
    }

    fn delete_key(&self, id: &str) -> Result<bool> {
        answer!(self.exec(Command::DeleteKey { id: id.into() }), Outcome::Bool(b) => b)
    }

    fn put_version(&self, new: NewVersion, create_only: bool) -> Result<(FunctionVersion, bool)> {
        answer!(self.exec(Command::PutVersion { new, create_only }), Outcome::Version(v, c) => (*v, c))
    }

    fn get_version(
        &self,
        namespace: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<FunctionVersion>> {
        // A numbered version never changes: the replica answers at once if it has it.
        if version.is_some()
            && let Some(v) = self.replica.get_version(namespace, name, version)?
        {
            return Ok(Some(v));
        }
        self.read()?.get_version(namespace, name, version)
    }

    fn list_functions(&self, namespace: &str) -> Result<Vec<FunctionVersion>> {
        self.read()?.list_functions(namespace)
    }

    fn list_versions(&self, namespace: &str, name: &str) -> Result<Vec<FunctionVersion>> {
        self.read()?.list_versions(namespace, name)
    }

    fn delete_function(&self, namespace: &str, name: &str) -> Result<Option<u32>> {
        answer!(self.exec(Command::DeleteFunction {
            namespace: namespace.into(),
            name: name.into(),
        }), Outcome::Versions(v) => v)
    }

    fn enqueue(&self, item: &QueuedInvocation) -> Result<(QueuedInvocation, bool)> {
        answer!(self.exec(Command::Enqueue { item: item.clone() }), Outcome::Enqueued(i, new) => (i, new))
    }

    fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<QueuedInvocation>> {
        self.read()?.due(now_ms, limit)
    }

    fn next_due(&self) -> Result<Option<u64>> {
        self.read()?.next_due()
    }

    fn retry_later(
        &self,
        id: ActivationId,
        attempts: u32,
        next_attempt_ms: u64,
        error: &str,
    ) -> Result<()> {
        answer!(self.exec(Command::RetryLater {
            id,
            attempts,
            next_attempt_ms,
            error: error.into(),
        }), Outcome::Unit => ())
    }

    fn bury(&self, id: ActivationId, attempts: u32, error: &str) -> Result<()> {
        answer!(self.exec(Command::Bury { id, attempts, error: error.into() }), Outcome::Unit => ())
    }

    fn dequeue(&self, id: ActivationId) -> Result<()> {
        answer!(self.exec(Command::Dequeue { id }), Outcome::Unit => ())
    }

    fn dead_letters(&self, namespace: &str) -> Result<Vec<QueuedInvocation>> {
        self.read()?.dead_letters(namespace)
    }

    fn revive(&self, namespace: &str, id: ActivationId) -> Result<bool> {
        answer!(self.exec(Command::Revive { namespace: namespace.into(), id }), Outcome::Bool(b) => b)
    }

    fn put_trigger(&self, trigger: &Trigger, create_only: bool) -> Result<bool> {
        answer!(self.exec(Command::PutTrigger {
            trigger: trigger.clone(),
            create_only,
        }), Outcome::Bool(b) => b)
    }

    fn get_trigger(&self, namespace: &str, name: &str) -> Result<Option<Trigger>> {
        self.read()?.get_trigger(namespace, name)
    }

    fn list_triggers(&self, namespace: &str) -> Result<Vec<Trigger>> {
        self.read()?.list_triggers(namespace)
    }

    fn delete_trigger(&self, namespace: &str, name: &str) -> Result<bool> {
        answer!(self.exec(Command::DeleteTrigger {
            namespace: namespace.into(),
            name: name.into(),
        }), Outcome::Bool(b) => b)
    }

    fn put_rule(&self, rule: &Rule, create_only: bool) -> Result<bool> {
        answer!(self.exec(Command::PutRule { rule: rule.clone(), create_only }), Outcome::Bool(b) => b)
    }

    fn get_rule(&self, namespace: &str, name: &str) -> Result<Option<Rule>> {
        self.read()?.get_rule(namespace, name)
    }

    fn list_rules(&self, namespace: &str) -> Result<Vec<Rule>> {
        self.read()?.list_rules(namespace)
    }

    fn delete_rule(&self, namespace: &str, name: &str) -> Result<bool> {
        answer!(self.exec(Command::DeleteRule {
            namespace: namespace.into(),
            name: name.into(),
        }), Outcome::Bool(b) => b)
    }

    fn record_firing(&self, firing: &Firing, queued: &[QueuedInvocation]) -> Result<()> {
        answer!(self.exec(Command::RecordFiring {
            firing: firing.clone(),
            queued: queued.to_vec(),
        }), Outcome::Unit => ())
    }

    fn skip_scheduled(&self, namespace: &str, trigger: &str, scheduled_ms: u64) -> Result<()> {
        answer!(self.exec(Command::SkipScheduled {
            namespace: namespace.into(),
            trigger: trigger.into(),
            scheduled_ms,
        }), Outcome::Unit => ())
    }

    fn publish(&self, message: &TopicMessage) -> Result<usize> {
        answer!(self.exec(Command::Publish { message: message.clone() }), Outcome::Count(n) => n as usize)
    }

    fn list_topics(&self, namespace: &str) -> Result<Vec<TopicInfo>> {
        self.read()?.list_topics(namespace)
    }

    fn pending_deliveries(&self) -> Result<Vec<PendingDeliveries>> {
        self.read()?.pending_deliveries()
    }

    fn next_deliveries(
        &self,
        namespace: &str,
        trigger: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.read()?.next_deliveries(namespace, trigger, limit)
    }

    fn record_delivery(
        &self,
        firing: &Firing,
        queued: &[QueuedInvocation],
        delivered: &[u64],
    ) -> Result<()> {
        answer!(self.exec(Command::RecordDelivery {
            firing: firing.clone(),
            queued: queued.to_vec(),
            delivered: delivered.to_vec(),
        }), Outcome::Unit => ())
    }

    fn forget_deliveries(&self, namespace: &str, trigger: &str) -> Result<()> {
        answer!(self.exec(Command::ForgetDeliveries {
            namespace: namespace.into(),
            trigger: trigger.into(),
        }), Outcome::Unit => ())
    }

    fn list_firings(&self, namespace: &str, trigger: &str, limit: usize) -> Result<Vec<Firing>> {
        self.read()?.list_firings(namespace, trigger, limit)
    }

    fn insert_activations(&self, records: &[ActivationRecord]) -> Result<()> {
        // One entry per batch of at most BATCH_BYTES of records (an entry must fit in a NATS
        // message); a record larger than that is an entry of its own.
        let mut start = 0;
        let mut bytes = 0;
        for (i, r) in records.iter().enumerate() {
            let size = serde_json::to_vec(r)?.len();
            if i > start && bytes + size > BATCH_BYTES {
                let batch = records[start..i].to_vec();
                answer!(self.exec(Command::InsertActivations { records: batch }), Outcome::Unit => ())?;
                (start, bytes) = (i, 0);
            }
            bytes += size;
        }
        if start < records.len() {
            let batch = records[start..].to_vec();
            answer!(self.exec(Command::InsertActivations { records: batch }), Outcome::Unit => ())?;
        }
        Ok(())
    }

    fn get_activation(
        &self,
        namespace: &str,
        id: ActivationId,
    ) -> Result<Option<ActivationRecord>> {
        self.read()?.get_activation(namespace, id)
    }

    fn prune_activations(&self, namespace: &str, before_ms: u64, keep: Option<u64>) -> Result<u64> {
        answer!(self.exec(Command::PruneActivations {
            namespace: namespace.into(),
            before_ms,
            keep,
        }), Outcome::Count(n) => n)
    }

    fn list_activations(
        &self,
        namespace: &str,
        filter: &ActivationFilter,
    ) -> Result<ActivationPage> {
        self.read()?.list_activations(namespace, filter)
    }

    fn save_execution(&self, execution: &ExecutionRecord) -> Result<()> {
        answer!(self.exec(Command::SaveExecution { execution: execution.clone() }), Outcome::Unit => ())
    }

    fn save_steps(&self, steps: &[(ActivationId, String, StepRecord)]) -> Result<()> {
        answer!(self.exec(Command::SaveSteps { steps: steps.to_vec() }), Outcome::Unit => ())
    }

    fn get_execution(&self, namespace: &str, id: ActivationId) -> Result<Option<ExecutionRecord>> {
        self.read()?.get_execution(namespace, id)
    }

    fn list_executions(
        &self,
        namespace: &str,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>> {
        self.read()?.list_executions(namespace, function, limit)
    }

    fn running_executions(&self) -> Result<Vec<ExecutionRecord>> {
        self.read()?.running_executions()
    }

    fn usage(&self, namespace: &str, from_ms: u64, to_ms: u64) -> Result<Vec<UsageCell>> {
        self.read()?.usage(namespace, from_ms, to_ms)
    }

    fn async_backlog(&self) -> Result<Vec<(String, u64)>> {
        self.read()?.async_backlog()
    }
}

impl DataStore for ReplicatedStore {
    fn kv_get(&self, namespace: &str, key: &str, now_ms: u64) -> Result<Option<KvEntry>> {
        self.read()?.kv_get(namespace, key, now_ms)
    }

    fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expires_ms: Option<u64>,
        expect: Expect,
        now_ms: u64,
    ) -> Result<std::result::Result<u64, VersionMismatch>> {
        answer!(self.exec(Command::KvPut {
            namespace: namespace.into(),
            key: key.into(),
            value: value.to_vec(),
            expires_ms,
            expect,
            now_ms,
        }), Outcome::KvPut(r) => r)
    }

    fn kv_delete(
        &self,
        namespace: &str,
        key: &str,
        expect: Expect,
        now_ms: u64,
    ) -> Result<std::result::Result<bool, VersionMismatch>> {
        answer!(self.exec(Command::KvDelete {
            namespace: namespace.into(),
            key: key.into(),
            expect,
            now_ms,
        }), Outcome::KvDelete(r) => r)
    }

    fn kv_increment(
        &self,
        namespace: &str,
        key: &str,
        by: i64,
        expires_ms: Option<u64>,
        now_ms: u64,
    ) -> std::result::Result<(i64, u64), IncrementError> {
        let outcome = self.exec(Command::KvIncrement {
            namespace: namespace.into(),
            key: key.into(),
            by,
            expires_ms,
            now_ms,
        });
        match outcome? {
            Outcome::KvIncrement(r) => r.map_err(IncrementError::NotAnInteger),
            _ => Err(unexpected().into()),
        }
    }

    fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<KvEntry>> {
        self.read()?
            .kv_list(namespace, prefix, after, limit, now_ms)
    }

    fn kv_purge_expired(&self, now_ms: u64) -> Result<u64> {
        answer!(self.exec(Command::KvPurgeExpired { now_ms }), Outcome::Count(n) => n)
    }

    fn create_bucket(&self, namespace: &str, name: &str) -> Result<bool> {
        answer!(self.exec(Command::CreateBucket {
            namespace: namespace.into(),
            name: name.into(),
        }), Outcome::Bool(b) => b)
    }

    fn get_bucket(&self, namespace: &str, name: &str) -> Result<Option<BucketRecord>> {
        self.read()?.get_bucket(namespace, name)
    }

    fn list_buckets(&self, namespace: &str) -> Result<Vec<BucketRecord>> {
        self.read()?.list_buckets(namespace)
    }

    fn delete_bucket(&self, namespace: &str, name: &str) -> Result<bool> {
        answer!(self.exec(Command::DeleteBucket {
            namespace: namespace.into(),
            name: name.into(),
        }), Outcome::Bool(b) => b)
    }

    fn put_object(
        &self,
        namespace: &str,
        meta: &ObjectMeta,
        firings: &[StorageFiring],
    ) -> Result<Option<ObjectMeta>> {
        answer!(self.exec(Command::PutObject {
            namespace: namespace.into(),
            meta: meta.clone(),
            firings: firings.to_vec(),
        }), Outcome::Object(o) => o)
    }

    fn get_object(&self, namespace: &str, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        self.read()?.get_object(namespace, bucket, key)
    }

    fn delete_object(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        file: &str,
        firings: &[StorageFiring],
    ) -> Result<bool> {
        answer!(self.exec(Command::DeleteObject {
            namespace: namespace.into(),
            bucket: bucket.into(),
            key: key.into(),
            file: Some(file.into()),
            firings: firings.to_vec(),
        }), Outcome::Bool(b) => b)
    }

    fn list_objects(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        self.read()?
            .list_objects(namespace, bucket, prefix, after, limit)
    }
}

impl MultipartStore for ReplicatedStore {
    fn create_upload(&self, namespace: &str, upload: &MultipartUpload) -> Result<()> {
        answer!(self.exec(Command::CreateUpload {
            namespace: namespace.into(),
            upload: upload.clone(),
        }), Outcome::Unit => ())
    }

    fn get_upload(&self, namespace: &str, id: &str) -> Result<Option<MultipartUpload>> {
        self.read()?.get_upload(namespace, id)
    }

    fn list_uploads(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartUpload>> {
        self.read()?
            .list_uploads(namespace, bucket, prefix, after, limit)
    }

    fn put_part(
        &self,
        namespace: &str,
        upload: &str,
        part: &UploadedPart,
    ) -> Result<Option<UploadedPart>> {
        answer!(self.exec(Command::PutPart {
            namespace: namespace.into(),
            upload: upload.into(),
            part: part.clone(),
        }), Outcome::Part(p) => p)
    }

    fn list_parts(&self, namespace: &str, upload: &str) -> Result<Vec<UploadedPart>> {
        self.read()?.list_parts(namespace, upload)
    }

    fn complete_upload(
        &self,
        namespace: &str,
        upload: &str,
        parts: &[(u32, String)],
        meta: &ObjectMeta,
        firings: &[StorageFiring],
    ) -> Result<CompletedUpload> {
        answer!(self.exec(Command::CompleteUpload {
            namespace: namespace.into(),
            upload: upload.into(),
            parts: parts.to_vec(),
            meta: meta.clone(),
            firings: firings.to_vec(),
        }), Outcome::Completed(c) => c)
    }

    fn abort_upload(&self, namespace: &str, upload: &str) -> Result<Option<Vec<String>>> {
        answer!(self.exec(Command::AbortUpload {
            namespace: namespace.into(),
            upload: upload.into(),
        }), Outcome::Files(f) => f)
    }

    fn abort_uploads_before(&self, before_ms: u64) -> Result<Vec<(String, String)>> {
        answer!(self.exec(Command::AbortUploadsBefore { before_ms }), Outcome::NamespaceFiles(f) => f)
    }
}

//! The data services of a namespace (docs/baas.md): the key-value store and object storage,
//! whose changes fire `storage` triggers.
//!
//! Object bodies are streamed: [`ObjectUpload`] hands chunks to a writer on the blocking pool
//! through a bounded channel (the MD5 is computed there, as the bytes go to disk), so an upload
//! holds a few chunks in memory whatever its size.
//!
//! A change to an object is committed with the firings of the storage triggers that watch it,
//! in one transaction ([`ignis_store::DataStore::put_object`]): [`storage_firings`] makes them
//! from the namespace's triggers and rules just before.

use std::collections::BTreeMap;

use bytes::Bytes;
use ignis_core::data::{
    MAX_KV_VALUE_BYTES, MAX_OBJECT_BYTES, validate_bucket_name, validate_data_key,
};
use ignis_core::{Firing, Rule, StorageEvent, Trigger, now_ms};
use ignis_store::{
    BucketRecord, Expect, IncrementError, KvEntry, ObjectMeta, QueuedInvocation, StorageFiring,
    Store, StoreError, VersionMismatch, WrittenObject,
};
use tokio::sync::mpsc;

use crate::{Controller, ControllerError, Inner, Result};

/// Chunks an upload may have in flight to its writer.
const UPLOAD_CHUNKS_IN_FLIGHT: usize = 8;

/// Objects listed at most per page.
pub const MAX_LIST: usize = 1000;

pub(crate) fn bad_key(what: &str, key: &str) -> Result<()> {
    validate_data_key(what, key).map_err(|e| ControllerError::BadRequest(e.to_string()))
}

pub(crate) fn bad_bucket(bucket: &str) -> Result<()> {
    validate_bucket_name(bucket).map_err(|e| ControllerError::BadRequest(e.to_string()))
}

fn mismatch(key: &str, m: VersionMismatch) -> ControllerError {
    ControllerError::PreconditionFailed(match m.0 {
        Some(v) => format!("key {key:?} is at version {v}"),
        None => format!("key {key:?} does not exist"),
    })
}

fn expiry(ttl_secs: Option<u64>) -> Result<Option<u64>> {
    match ttl_secs {
        Some(0) => Err(ControllerError::BadRequest(
            "ttl must be at least 1 second".into(),
        )),
        Some(s) => Ok(Some(now_ms().saturating_add(s.saturating_mul(1000)))),
        None => Ok(None),
    }
}

/// An object being uploaded: feed it with [`ObjectUpload::write`], then
/// [`ObjectUpload::finish`]. Dropped before that, nothing is stored.
pub struct ObjectUpload {
    tx: mpsc::Sender<Option<Bytes>>,
    writer: tokio::task::JoinHandle<std::io::Result<WrittenObject>>,
    size: u64,
}

impl ObjectUpload {
    /// Appends a chunk; waits while the writer is behind.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.size += chunk.len() as u64;
        if self.size > MAX_OBJECT_BYTES {
            return Err(ControllerError::TooLarge(format!(
                "an object may have at most {MAX_OBJECT_BYTES} bytes"
            )));
        }
        if self.tx.send(Some(chunk)).await.is_err() {
            // The writer stopped: its error is what `finish` reports.
            return Err(self.writer_error().await);
        }
        Ok(())
    }

    async fn writer_error(&mut self) -> ControllerError {
        match (&mut self.writer).await {
            Ok(Err(e)) => ControllerError::Internal(format!("writing an object: {e}")),
            Ok(Ok(_)) => ControllerError::Internal("the object writer ended early".into()),
            Err(e) => ControllerError::Internal(e.to_string()),
        }
    }

    /// Makes the body durable.
    pub(crate) async fn finish(mut self) -> Result<WrittenObject> {
        if self.tx.send(None).await.is_err() {
            return Err(self.writer_error().await);
        }
        match (&mut self.writer).await {
            Ok(Ok(w)) => Ok(w),
            Ok(Err(e)) => Err(ControllerError::Internal(format!("writing an object: {e}"))),
            Err(e) => Err(ControllerError::Internal(e.to_string())),
        }
    }
}

/// What an object is written with, besides its body.
#[derive(Debug, Clone, Default)]
pub struct ObjectAttributes {
    /// Its content type (default `application/octet-stream`).
    pub content_type: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A page of objects listed with a delimiter: the objects whose key has no delimiter after the
/// prefix, and the common prefixes (up to and including the first delimiter after the prefix)
/// that stand for the others, S3's `CommonPrefixes`.
#[derive(Debug, Clone, Default)]
pub struct ObjectListing {
    /// Objects, by key.
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes, in order.
    pub prefixes: Vec<String>,
    /// Where the next page starts (an opaque position to give back as `after`), if there is
    /// one.
    pub next: Option<String>,
}

/// Appended to a common prefix, the position after every key that starts with it.
const PAST: char = char::MAX;

/// The firings of the namespace's storage triggers that watch `event` on `meta`: one per
/// trigger, each queuing one invocation per enabled rule of the trigger.
pub(crate) fn storage_firings(
    store: &dyn Store,
    namespace: &str,
    event: StorageEvent,
    meta: &ObjectMeta,
) -> Result<Vec<StorageFiring>> {
    let triggers: Vec<Trigger> = store
        .list_triggers(namespace)?
        .into_iter()
        .filter(|t| t.spec.matches_storage(&meta.bucket, &meta.key, event))
        .collect();
    if triggers.is_empty() {
        return Ok(Vec::new());
    }
    let rules = store.list_rules(namespace)?;
    Ok(triggers
        .iter()
        .map(|t| {
            let enabled = rules
                .iter()
                .filter(|r| r.trigger == t.name && r.enabled)
                .cloned()
                .collect();
            storage_firing(t, enabled, event, meta)
        })
        .collect())
}

/// The firing of storage trigger `trigger` for `event` on `meta`: its event, then one queued
/// invocation per rule.
fn storage_firing(
    trigger: &Trigger,
    rules: Vec<Rule>,
    event: StorageEvent,
    meta: &ObjectMeta,
) -> (Firing, Vec<QueuedInvocation>) {
    let payload = serde_json::json!({
        "event": event.as_str(),
        "namespace": trigger.namespace,
        "bucket": meta.bucket,
        "key": meta.key,
        "size": meta.size,
        "etag": meta.etag,
        "content_type": meta.content_type,
        "time_ms": now_ms(),
        "trigger": trigger.name,
    });
    crate::triggers::firing_of(trigger, rules, payload.to_string().as_bytes(), None)
}

impl Controller {
    /// One key-value entry; `NotFound` if absent or expired.
    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<KvEntry> {
        bad_key("key", key)?;
        let (ns, k) = (namespace.to_string(), key.to_string());
        self.blocking(move |i| Ok(i.store.kv_get(&ns, &k, now_ms())?))
            .await?
            .ok_or_else(|| ControllerError::NotFound(format!("key {key:?}")))
    }

    /// Writes an entry if `expect` holds (else `PreconditionFailed`); returns its version.
    pub async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: Bytes,
        ttl_secs: Option<u64>,
        expect: Expect,
    ) -> Result<u64> {
        bad_key("key", key)?;
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(ControllerError::TooLarge(format!(
                "a value may have at most {MAX_KV_VALUE_BYTES} bytes"
            )));
        }
        let expires = expiry(ttl_secs)?;
        let (ns, k) = (namespace.to_string(), key.to_string());
        self.blocking(move |i| Ok(i.store.kv_put(&ns, &k, &value, expires, expect, now_ms())?))
            .await?
            .map_err(|m| mismatch(key, m))
    }

    /// Deletes an entry if `expect` holds; `NotFound` if there was none.
    pub async fn kv_delete(&self, namespace: &str, key: &str, expect: Expect) -> Result<()> {
        bad_key("key", key)?;
        let (ns, k) = (namespace.to_string(), key.to_string());
        let existed = self
            .blocking(move |i| Ok(i.store.kv_delete(&ns, &k, expect, now_ms())?))
            .await?
            .map_err(|m| mismatch(key, m))?;
        if existed {
            Ok(())
        } else {
            Err(ControllerError::NotFound(format!("key {key:?}")))
        }
    }

    /// Adds `by` to an integer entry atomically; returns the new value and version.
    pub async fn kv_increment(
        &self,
        namespace: &str,
        key: &str,
        by: i64,
        ttl_secs: Option<u64>,
    ) -> Result<(i64, u64)> {
        bad_key("key", key)?;
        let expires = expiry(ttl_secs)?;
        let (ns, k) = (namespace.to_string(), key.to_string());
        self.blocking(move |i| {
            i.store
                .kv_increment(&ns, &k, by, expires, now_ms())
                .map_err(|e| match e {
                    IncrementError::NotAnInteger(m) => ControllerError::PreconditionFailed(m),
                    IncrementError::Store(e) => e.into(),
                })
        })
        .await
    }

    /// Entries whose key starts with `prefix`, after `after`; with the key to continue from.
    pub async fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<KvEntry>, Option<String>)> {
        let limit = limit.clamp(1, MAX_LIST);
        let (ns, p) = (namespace.to_string(), prefix.to_string());
        let mut entries = self
            .blocking(move |i| {
                Ok(i.store
                    .kv_list(&ns, &p, after.as_deref(), limit + 1, now_ms())?)
            })
            .await?;
        let next = (entries.len() > limit).then(|| {
            entries.truncate(limit);
            entries.last().map(|e| e.key.clone()).unwrap_or_default()
        });
        Ok((entries, next))
    }

    /// Creates a bucket; true if new.
    pub async fn create_bucket(&self, namespace: &str, bucket: &str) -> Result<bool> {
        bad_bucket(bucket)?;
        let (ns, b) = (namespace.to_string(), bucket.to_string());
        self.blocking(move |i| Ok(i.store.create_bucket(&ns, &b)?))
            .await
    }

    /// The buckets of a namespace.
    pub async fn list_buckets(&self, namespace: &str) -> Result<Vec<BucketRecord>> {
        let ns = namespace.to_string();
        self.blocking(move |i| Ok(i.store.list_buckets(&ns)?)).await
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, namespace: &str, bucket: &str) -> Result<()> {
        let (ns, b) = (namespace.to_string(), bucket.to_string());
        if self
            .blocking(move |i| Ok(i.store.delete_bucket(&ns, &b)?))
            .await?
        {
            Ok(())
        } else {
            Err(ControllerError::NotFound(format!("bucket {bucket:?}")))
        }
    }

    pub(crate) async fn check_bucket(&self, namespace: &str, bucket: &str) -> Result<()> {
        bad_bucket(bucket)?;
        let (ns, b) = (namespace.to_string(), bucket.to_string());
        match self
            .blocking(move |i| Ok(i.store.get_bucket(&ns, &b)?))
            .await?
        {
            Some(_) => Ok(()),
            None => Err(ControllerError::NotFound(format!("bucket {bucket:?}"))),
        }
    }

    /// Starts an upload into `bucket` (`NotFound` if it does not exist, before any byte is
    /// read).
    pub async fn begin_upload(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectUpload> {
        self.check_bucket(namespace, bucket).await?;
        bad_key("object key", key)?;
        let files = self.inner.objects.clone();
        let ns = namespace.to_string();
        let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(UPLOAD_CHUNKS_IN_FLIGHT);
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = files.writer(&ns)?;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Some(chunk) => w.write(&chunk)?,
                    None => return w.finish(),
                }
            }
            // The upload was dropped: `w` removes its temporary file.
            Err(std::io::Error::other("upload abandoned"))
        });
        Ok(ObjectUpload {
            tx,
            writer,
            size: 0,
        })
    }

    /// Finishes an upload: the body is made durable, then recorded (replacing any object of
    /// that key), then `object:created` fires the bucket's storage triggers.
    pub async fn finish_upload(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        upload: ObjectUpload,
        attrs: ObjectAttributes,
    ) -> Result<ObjectMeta> {
        let written = upload.finish().await?;
        let meta = ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: written.size,
            etag: hex::encode(written.md5),
            content_type: attrs
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            metadata: attrs.metadata,
            modified_ms: now_ms(),
            file: written.file,
        };
        self.record_object(namespace, meta).await
    }

    /// Runs an object change on the blocking pool; `change` also answers whether it committed
    /// firings, and the queue worker is woken if so.
    pub(crate) async fn storage_change<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Inner) -> Result<(T, bool)> + Send + 'static,
    ) -> Result<T> {
        let (out, fired) = self.blocking(change).await?;
        if fired {
            self.inner.queue.wake();
        }
        Ok(out)
    }

    /// Records an object whose body is durable — with the `object:created` firings of the
    /// triggers that watch it, in one transaction — and deletes the body it replaces.
    pub(crate) async fn record_object(
        &self,
        namespace: &str,
        meta: ObjectMeta,
    ) -> Result<ObjectMeta> {
        let ns = namespace.to_string();
        let m = meta.clone();
        self.storage_change(move |i| {
            let recorded = storage_firings(&*i.store, &ns, StorageEvent::ObjectCreated, &m)
                .and_then(|firings| Ok((i.store.put_object(&ns, &m, &firings)?, firings)));
            match recorded {
                Ok((old, firings)) => {
                    if let Some(old) = old {
                        i.objects.remove(&ns, &old.file);
                    }
                    Ok(((), !firings.is_empty()))
                }
                Err(e) => {
                    i.objects.remove(&ns, &m.file);
                    Err(e)
                }
            }
        })
        .await?;
        Ok(meta)
    }

    /// Copies an object of the namespace to `bucket`/`key` (replacing any object there), with
    /// the source's content type and metadata unless `attrs` replaces them, and fires
    /// `object:created`. The body is shared (a hard link), not read.
    pub async fn copy_object(
        &self,
        namespace: &str,
        (from_bucket, from_key): (&str, &str),
        bucket: &str,
        key: &str,
        attrs: Option<ObjectAttributes>,
    ) -> Result<ObjectMeta> {
        self.check_bucket(namespace, from_bucket).await?;
        self.check_bucket(namespace, bucket).await?;
        bad_key("object key", key)?;
        let (ns, b, k) = (
            namespace.to_string(),
            from_bucket.to_string(),
            from_key.to_string(),
        );
        let (source, file) = self
            .blocking(move |i| {
                // Replaced between the two steps: read again.
                for _ in 0..3 {
                    let Some(meta) = i.store.get_object(&ns, &b, &k)? else {
                        break;
                    };
                    match i.objects.duplicate(&ns, &meta.file) {
                        Ok(file) => return Ok((meta, file)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            return Err(ControllerError::Internal(format!(
                                "copying an object: {e}"
                            )));
                        }
                    }
                }
                Err(ControllerError::NotFound(format!(
                    "object {k:?} in bucket {b:?}"
                )))
            })
            .await?;
        let (content_type, metadata) = match attrs {
            Some(a) => (
                a.content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
                a.metadata,
            ),
            None => (source.content_type, source.metadata),
        };
        let meta = ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: source.size,
            etag: source.etag,
            content_type,
            metadata,
            modified_ms: now_ms(),
            file,
        };
        self.record_object(namespace, meta).await
    }

    /// An object's metadata.
    pub async fn head_object(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectMeta> {
        let (ns, b, k) = (namespace.to_string(), bucket.to_string(), key.to_string());
        self.blocking(move |i| Ok(i.store.get_object(&ns, &b, &k)?))
            .await?
            .ok_or_else(|| {
                ControllerError::NotFound(format!("object {key:?} in bucket {bucket:?}"))
            })
    }

    /// An object's metadata and its body, open (so that a concurrent replacement does not cut
    /// the read short).
    pub async fn open_object(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectMeta, std::fs::File)> {
        let (ns, b, k) = (namespace.to_string(), bucket.to_string(), key.to_string());
        self.blocking(move |i| {
            // Replaced between the two reads: read again.
            for _ in 0..3 {
                let Some(meta) = i.store.get_object(&ns, &b, &k)? else {
                    break;
                };
                match std::fs::File::open(i.objects.local(&ns, &meta.file)) {
                    Ok(f) => return Ok((meta, f)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(ControllerError::Internal(e.to_string())),
                }
            }
            Err(ControllerError::NotFound(format!(
                "object {k:?} in bucket {b:?}"
            )))
        })
        .await
    }

    /// Deletes an object — with the `object:deleted` firings of the triggers that watch it, in
    /// one transaction — then its body.
    pub async fn delete_object(&self, namespace: &str, bucket: &str, key: &str) -> Result<()> {
        let (ns, b, k) = (namespace.to_string(), bucket.to_string(), key.to_string());
        let gone = self
            .storage_change(move |i| {
                // Replaced between the read and the delete: read again.
                for _ in 0..3 {
                    let Some(meta) = i.store.get_object(&ns, &b, &k)? else {
                        return Ok((false, false));
                    };
                    let firings =
                        storage_firings(&*i.store, &ns, StorageEvent::ObjectDeleted, &meta)?;
                    match i.store.delete_object(&ns, &b, &k, &meta.file, &firings) {
                        Ok(gone) => {
                            if gone {
                                i.objects.remove(&ns, &meta.file);
                            }
                            return Ok((gone, gone && !firings.is_empty()));
                        }
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(ControllerError::Conflict(format!(
                    "object {k:?} is being replaced; a newer version of it"
                )))
            })
            .await?;
        if gone {
            Ok(())
        } else {
            Err(ControllerError::NotFound(format!(
                "object {key:?} in bucket {bucket:?}"
            )))
        }
    }

    /// Objects of a bucket whose key starts with `prefix`, after `after`; with the key to
    /// continue from.
    pub async fn list_objects(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<ObjectMeta>, Option<String>)> {
        self.check_bucket(namespace, bucket).await?;
        let limit = limit.clamp(1, MAX_LIST);
        let (ns, b, p) = (
            namespace.to_string(),
            bucket.to_string(),
            prefix.to_string(),
        );
        let mut objects = self
            .blocking(move |i| {
                Ok(i.store
                    .list_objects(&ns, &b, &p, after.as_deref(), limit + 1)?)
            })
            .await?;
        let next = (objects.len() > limit).then(|| {
            objects.truncate(limit);
            objects.last().map(|o| o.key.clone()).unwrap_or_default()
        });
        Ok((objects, next))
    }

    /// Objects of a bucket whose key starts with `prefix`, after `after`, with those whose key
    /// has `delimiter` after the prefix rolled up into common prefixes; at most `limit` objects
    /// and prefixes together.
    pub async fn list_objects_delimited(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        delimiter: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<ObjectListing> {
        self.check_bucket(namespace, bucket).await?;
        if delimiter.is_empty() {
            return Err(ControllerError::BadRequest("the delimiter is empty".into()));
        }
        let limit = limit.clamp(1, MAX_LIST);
        let (ns, b, p, d) = (
            namespace.to_string(),
            bucket.to_string(),
            prefix.to_string(),
            delimiter.to_string(),
        );
        self.blocking(move |i| {
            delimited(&p, &d, after, limit, |after, n| {
                Ok(i.store.list_objects(&ns, &b, &p, after, n)?)
            })
        })
        .await
    }
}

/// A page of a listing with a delimiter, over `fetch(after, n)`: the first `n` objects whose
/// key starts with `prefix`, after `after`, by key.
fn delimited(
    prefix: &str,
    delimiter: &str,
    after: Option<String>,
    limit: usize,
    mut fetch: impl FnMut(Option<&str>, usize) -> Result<Vec<ObjectMeta>>,
) -> Result<ObjectListing> {
    /// Keys of one common prefix read in a page before jumping past them.
    const SKIPS: usize = 32;
    /// Objects read at most per call of `fetch`: small, since a page may end early (a common
    /// prefix to jump past, or the limit reached).
    const PAGE: usize = 128;
    let mut list = ObjectListing::default();
    // A position past a common prefix: the keys under it were listed as that prefix.
    let mut rolled = after
        .as_deref()
        .and_then(|a| a.strip_suffix(PAST))
        .map(str::to_string);
    let mut after = after;
    let mut position = String::new();
    loop {
        let n = (limit + 1).min(PAGE);
        let page = fetch(after.as_deref(), n)?;
        let more = page.len() == n;
        let mut skipped = 0;
        for o in page {
            after = Some(o.key.clone());
            if rolled.as_deref().is_some_and(|r| o.key.starts_with(r)) {
                skipped += 1;
                if skipped > SKIPS {
                    break;
                }
                continue;
            }
            if list.objects.len() + list.prefixes.len() == limit {
                list.next = Some(position);
                return Ok(list);
            }
            match o.key[prefix.len()..].find(delimiter) {
                Some(at) => {
                    let common = o.key[..prefix.len() + at + delimiter.len()].to_string();
                    position = format!("{common}{PAST}");
                    list.prefixes.push(common.clone());
                    rolled = Some(common);
                }
                None => {
                    position = o.key.clone();
                    list.objects.push(o);
                }
            }
        }
        if !more && skipped <= SKIPS {
            return Ok(list);
        }
        // Jump past the keys of the last common prefix.
        if let Some(r) = &rolled {
            let past = format!("{r}{PAST}");
            if after.as_deref().is_none_or(|a| a < past.as_str()) {
                after = Some(past);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// The store's listing over sorted `keys`, counting its calls in `fetches`.
    fn store<'a>(
        keys: &'a [String],
        prefix: &'a str,
        fetches: &'a Cell<usize>,
    ) -> impl Fn(Option<&str>, usize) -> Result<Vec<ObjectMeta>> + Copy + 'a {
        move |after: Option<&str>, n: usize| {
            fetches.set(fetches.get() + 1);
            Ok(keys
                .iter()
                .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
                .take(n)
                .map(|k| ObjectMeta {
                    bucket: "b".into(),
                    key: k.clone(),
                    size: 0,
                    etag: String::new(),
                    content_type: String::new(),
                    metadata: BTreeMap::new(),
                    modified_ms: 0,
                    file: String::new(),
                })
                .collect())
        }
    }

    /// Every page of a delimited listing of `keys`, `limit` at a time, against what a plain
    /// walk over all keys gives.
    fn check(keys: &[String], prefix: &str, delimiter: &str, limit: usize) {
        let fetches = Cell::new(0);
        let fetch = store(keys, prefix, &fetches);
        let mut want: Vec<String> = Vec::new();
        for k in keys.iter().filter(|k| k.starts_with(prefix)) {
            let entry = match k[prefix.len()..].find(delimiter) {
                Some(at) => k[..prefix.len() + at + delimiter.len()].to_string(),
                None => k.clone(),
            };
            if want.last() != Some(&entry) {
                want.push(entry);
            }
        }
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = delimited(prefix, delimiter, after, limit, fetch).unwrap();
            assert!(page.objects.len() + page.prefixes.len() <= limit);
            let mut entries: Vec<String> = page.objects.into_iter().map(|o| o.key).collect();
            entries.extend(page.prefixes);
            entries.sort();
            got.extend(entries);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(
            got, want,
            "prefix {prefix:?}, delimiter {delimiter:?}, limit {limit}"
        );
        assert!(fetches.get() <= 2 * keys.len() / limit.max(1) + want.len() + 2);
    }

    #[test]
    fn delimited_listings_roll_keys_up_into_common_prefixes() {
        let mut keys: Vec<String> = (0..200).map(|i| format!("logs/2024/{i:03}")).collect();
        keys.extend((0..50).map(|i| format!("logs/2025/{i:03}")));
        keys.extend(
            [
                "a", "b/", "b/c", "b//d", "logs", "logs/x", "logs0", "z/é/1", "z/é/2",
            ]
            .map(str::to_string),
        );
        keys.sort();
        for limit in [1, 2, 3, 7, 1000] {
            for (prefix, delimiter) in [("", "/"), ("logs/", "/"), ("logs/2024/", "/"), ("", "//")]
            {
                check(&keys, prefix, delimiter, limit);
            }
            check(&keys, "", "0", limit);
        }
        // A "directory" of many keys is jumped over, not read through.
        let mut keys: Vec<String> = (0..5000).map(|i| format!("big/{i:05}")).collect();
        keys.extend(["a".to_string(), "z".to_string()]);
        keys.sort();
        let fetches = Cell::new(0);
        let page = delimited("", "/", None, 1000, store(&keys, "", &fetches)).unwrap();
        let objects: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            (objects, page.prefixes, page.next),
            (vec!["a", "z"], vec!["big/".to_string()], None)
        );
        assert!(fetches.get() <= 2, "{} fetches", fetches.get());
    }

    #[test]
    fn storage_firings_are_those_of_the_triggers_watching_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = ignis_store::SqliteStore::open(&dir.path().join("db")).unwrap();
        let ns = "default";
        let trigger = |name: &str, events: Vec<StorageEvent>, suffix: Option<&str>| Trigger {
            namespace: ns.into(),
            name: name.into(),
            spec: ignis_core::TriggerSpec {
                kind: ignis_core::TriggerKind::Storage,
                bucket: Some("raw".into()),
                events,
                suffix: suffix.map(str::to_string),
                ..Default::default()
            },
            created_ms: 1,
            last_scheduled_ms: None,
        };
        let rule = |name: &str, trigger: &str, enabled: bool| Rule {
            namespace: ns.into(),
            name: name.into(),
            trigger: trigger.into(),
            function: format!("fn-{name}"),
            enabled,
            created_ms: 1,
        };
        store
            .put_trigger(
                &trigger("csv", vec![StorageEvent::ObjectCreated], Some(".csv")),
                false,
            )
            .unwrap();
        store
            .put_trigger(&trigger("all", vec![], None), false)
            .unwrap();
        store
            .put_trigger(
                &Trigger {
                    name: "plain".into(),
                    spec: Default::default(),
                    ..trigger("x", vec![], None)
                },
                false,
            )
            .unwrap();
        for r in [
            rule("etl", "csv", true),
            rule("off", "csv", false),
            rule("audit", "all", true),
            rule("p", "plain", true),
        ] {
            store.put_rule(&r, false).unwrap();
        }
        let meta = |key: &str| ObjectMeta {
            bucket: "raw".into(),
            key: key.into(),
            size: 3,
            etag: "e".into(),
            content_type: "text/csv".into(),
            metadata: BTreeMap::new(),
            modified_ms: 1,
            file: "f".into(),
        };
        let fired = |event, key: &str| -> Vec<(String, Vec<String>, serde_json::Value)> {
            storage_firings(&store, ns, event, &meta(key))
                .unwrap()
                .into_iter()
                .map(|(f, q)| {
                    let event = serde_json::from_slice(
                        &q.first().map(|q| q.event.clone()).unwrap_or_default(),
                    )
                    .unwrap_or_default();
                    (
                        f.trigger,
                        q.into_iter().map(|q| q.function).collect(),
                        event,
                    )
                })
                .collect()
        };
        let created = fired(StorageEvent::ObjectCreated, "a.csv");
        assert_eq!(
            created
                .iter()
                .map(|(t, f, _)| (t.as_str(), f.clone()))
                .collect::<Vec<_>>(),
            [
                ("all", vec!["fn-audit".to_string()]),
                ("csv", vec!["fn-etl".to_string()])
            ]
        );
        let event = &created[1].2;
        assert_eq!(event["event"], "object:created");
        assert_eq!(
            (event["bucket"].as_str(), event["key"].as_str()),
            (Some("raw"), Some("a.csv"))
        );
        assert_eq!(event["trigger"], "csv");
        let deleted = fired(StorageEvent::ObjectDeleted, "a.csv");
        assert_eq!(
            deleted
                .iter()
                .map(|(t, _, _)| t.as_str())
                .collect::<Vec<_>>(),
            ["all"]
        );
        assert!(
            storage_firings(
                &store,
                ns,
                StorageEvent::ObjectCreated,
                &ObjectMeta {
                    bucket: "other".into(),
                    ..meta("a.csv")
                }
            )
            .unwrap()
            .is_empty()
        );
    }
}

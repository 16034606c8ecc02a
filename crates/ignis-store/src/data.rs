//! The data of namespaces (docs/baas.md): key-value entries, buckets and object metadata in
//! the SQLite file, object bodies as files ([`ObjectFiles`]).
//!
//! Every key-value operation is one transaction on the write connection, so compare-and-swap
//! and increment are atomic. An entry whose expiry has passed is absent for every operation;
//! [`DataStore::kv_purge_expired`] removes such rows for good.
//!
//! An object's record is committed together with the firings of the storage triggers that
//! watch the change (and their queued invocations), in one transaction synced to disk: a
//! change is never recorded without its firings, whatever the crash. The caller makes the
//! firings (they are data, so that a replicated store can log them with the change).

use std::collections::BTreeMap;

use ignis_core::Firing;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::sqlite::{SqliteStore, row_exists};
use crate::{QueuedInvocation, Result, StoreError};

/// One entry of the key-value store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// Its key.
    pub key: String,
    /// Its value (empty in listings).
    #[serde(skip)]
    pub value: Vec<u8>,
    /// Bumped by every write; 1 when created.
    pub version: u64,
    /// When it expires (ms since epoch), if it has a TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// When it was last written.
    pub updated_ms: u64,
    /// Size of the value.
    pub size: u64,
}

/// What a write expects of the entry it replaces (compare-and-swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Anything.
    Any,
    /// No entry.
    Absent,
    /// The entry at this version.
    Version(u64),
}

/// A conditional write refused: the entry's current version (`None`: there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMismatch(pub Option<u64>);

/// Why an increment failed.
#[derive(Debug, thiserror::Error)]
pub enum IncrementError {
    /// The current value is not a 64-bit integer, or the sum overflows.
    #[error("{0}")]
    NotAnInteger(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_ms: u64,
}

/// An object's metadata; its body is the file `file` of [`ObjectFiles`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Its bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// MD5 of the body, hex (S3's ETag for a single upload), or `<md5 of part md5s>-<parts>`.
    pub etag: String,
    /// Its content type.
    pub content_type: String,
    /// User metadata (`x-amz-meta-*` / `x-ignis-meta-*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// When it was written.
    pub modified_ms: u64,
    /// Name of its body under the namespace's object directory.
    pub file: String,
}

/// The firing of a storage trigger for an object change, with the invocations it queues (one
/// per enabled rule): recorded by [`DataStore::put_object`] and [`DataStore::delete_object`] in
/// the change's transaction.
pub type StorageFiring = (Firing, Vec<QueuedInvocation>);

/// The data of namespaces. Object-safe, a supertrait of [`crate::Store`].
pub trait DataStore: Send + Sync {
    /// An entry, unless absent or expired at `now_ms`.
    fn kv_get(&self, namespace: &str, key: &str, now_ms: u64) -> Result<Option<KvEntry>>;
    /// Writes an entry if `expect` holds; returns its new version.
    fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expires_ms: Option<u64>,
        expect: Expect,
        now_ms: u64,
    ) -> Result<Result<u64, VersionMismatch>>;
    /// Deletes an entry if `expect` holds; `Ok(false)` if there was none.
    fn kv_delete(
        &self,
        namespace: &str,
        key: &str,
        expect: Expect,
        now_ms: u64,
    ) -> Result<Result<bool, VersionMismatch>>;
    /// Adds `by` to an entry holding a decimal integer (absent: 0), atomically; returns the new
    /// value and version. `expires_ms` replaces the expiry if given.
    fn kv_increment(
        &self,
        namespace: &str,
        key: &str,
        by: i64,
        expires_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(i64, u64), IncrementError>;
    /// Entries (without values) whose key starts with `prefix`, after `after`, by key.
    fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<KvEntry>>;
    /// Deletes entries expired at `now_ms`; how many went.
    fn kv_purge_expired(&self, now_ms: u64) -> Result<u64>;

    /// Creates a bucket; false if it existed.
    fn create_bucket(&self, namespace: &str, name: &str) -> Result<bool>;
    /// One bucket.
    fn get_bucket(&self, namespace: &str, name: &str) -> Result<Option<BucketRecord>>;
    /// The buckets of a namespace, by name.
    fn list_buckets(&self, namespace: &str) -> Result<Vec<BucketRecord>>;
    /// Deletes an empty bucket: false if unknown, `Conflict` if it holds objects or multipart
    /// uploads in progress.
    fn delete_bucket(&self, namespace: &str, name: &str) -> Result<bool>;
    /// Records an object (its body already durable) and, in the same transaction synced to
    /// disk, its `object:created` firings; returns the object it replaced, whose file the
    /// caller deletes. `NotFound` if the bucket does not exist; nothing is written then.
    fn put_object(
        &self,
        namespace: &str,
        meta: &ObjectMeta,
        firings: &[StorageFiring],
    ) -> Result<Option<ObjectMeta>>;
    /// One object's metadata.
    fn get_object(&self, namespace: &str, bucket: &str, key: &str) -> Result<Option<ObjectMeta>>;
    /// Deletes an object's record if its body is still `file` (the object the caller read and
    /// made the firings for) and, in the same transaction synced to disk, records its
    /// `object:deleted` firings; false if there is no such object (the caller deletes the
    /// file). `Conflict` if the object was replaced since; nothing is written then.
    fn delete_object(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        file: &str,
        firings: &[StorageFiring],
    ) -> Result<bool>;
    /// Objects whose key starts with `prefix`, after `after`, by key.
    fn list_objects(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>>;
}

/// The tables of [`DataStore`], created with the others.
pub(crate) const DATA_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    expires_ms INTEGER,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS buckets (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS objects (
    namespace TEXT NOT NULL,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (namespace, bucket, key)
) WITHOUT ROWID;
";

/// The namespace-keyed tables of [`DATA_SCHEMA`] and [`crate::multipart::SCHEMA`], emptied
/// with their namespace.
pub(crate) const DATA_TABLES: [&str; 5] = [
    "kv",
    "buckets",
    "objects",
    "multipart_uploads",
    "multipart_parts",
];

/// (version, expired) of the row of a key, if there is one.
fn current(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    key: &str,
    now_ms: u64,
) -> Result<Option<(u64, bool, Vec<u8>)>> {
    Ok(tx
        .query_row(
            "SELECT version, expires_ms, value FROM kv WHERE namespace = ?1 AND key = ?2",
            params![namespace, key],
            |r| {
                let expires: Option<i64> = r.get(1)?;
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    expires.is_some_and(|e| e as u64 <= now_ms),
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
        )
        .optional()?)
}

/// Whether `expect` holds for a row (version, expired).
fn holds(expect: Expect, row: Option<(u64, bool)>) -> Result<(), VersionMismatch> {
    let live = row.filter(|(_, expired)| !expired).map(|(v, _)| v);
    match (expect, live) {
        (Expect::Any, _) | (Expect::Absent, None) => Ok(()),
        (Expect::Version(want), Some(v)) if want == v => Ok(()),
        (_, live) => Err(VersionMismatch(live)),
    }
}

fn kv_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KvEntry> {
    Ok(KvEntry {
        key: r.get(0)?,
        value: Vec::new(),
        version: r.get::<_, i64>(1)? as u64,
        expires_ms: r.get::<_, Option<i64>>(2)?.map(|e| e as u64),
        updated_ms: r.get::<_, i64>(3)? as u64,
        size: r.get::<_, i64>(4)? as u64,
    })
}

fn decode_object(record: String) -> Result<ObjectMeta> {
    Ok(serde_json::from_str(&record)?)
}

/// Records an object inside `tx` (its bucket must exist) with its `object:created` firings;
/// returns the record it replaced.
pub(crate) fn put_object_in(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    meta: &ObjectMeta,
    firings: &[StorageFiring],
) -> Result<Option<ObjectMeta>> {
    crate::sqlite::require_bucket(tx, namespace, &meta.bucket)?;
    let old: Option<String> = tx
        .query_row(
            "SELECT record FROM objects WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
            params![namespace, meta.bucket, meta.key],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute(
        "INSERT OR REPLACE INTO objects (namespace, bucket, key, record) VALUES (?1, ?2, ?3, ?4)",
        params![
            namespace,
            meta.bucket,
            meta.key,
            serde_json::to_string(meta)?
        ],
    )?;
    for (firing, queued) in firings {
        crate::sqlite::insert_firing(tx, firing, queued)?;
    }
    old.map(decode_object).transpose()
}

impl DataStore for SqliteStore {
    fn kv_get(&self, namespace: &str, key: &str, now_ms: u64) -> Result<Option<KvEntry>> {
        let conn = self.r();
        let entry = conn
            .query_row(
                "SELECT key, version, expires_ms, updated_ms, length(value), value FROM kv
                 WHERE namespace = ?1 AND key = ?2 AND (expires_ms IS NULL OR expires_ms > ?3)",
                params![namespace, key, now_ms as i64],
                |r| {
                    let mut e = kv_row(r)?;
                    e.value = r.get(5)?;
                    Ok(e)
                },
            )
            .optional()?;
        Ok(entry)
    }

    fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expires_ms: Option<u64>,
        expect: Expect,
        now_ms: u64,
    ) -> Result<Result<u64, VersionMismatch>> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let row = current(&tx, namespace, key, now_ms)?;
        if let Err(m) = holds(expect, row.as_ref().map(|(v, e, _)| (*v, *e))) {
            return Ok(Err(m));
        }
        let version = row.map_or(1, |(v, _, _)| v + 1);
        tx.execute(
            "INSERT OR REPLACE INTO kv (namespace, key, value, version, expires_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                namespace,
                key,
                value,
                version as i64,
                expires_ms.map(|e| e as i64),
                now_ms as i64
            ],
        )?;
        tx.commit()?;
        Ok(Ok(version))
    }

    fn kv_delete(
        &self,
        namespace: &str,
        key: &str,
        expect: Expect,
        now_ms: u64,
    ) -> Result<Result<bool, VersionMismatch>> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let row = current(&tx, namespace, key, now_ms)?;
        if let Err(m) = holds(expect, row.as_ref().map(|(v, e, _)| (*v, *e))) {
            return Ok(Err(m));
        }
        tx.execute(
            "DELETE FROM kv WHERE namespace = ?1 AND key = ?2",
            params![namespace, key],
        )?;
        tx.commit()?;
        Ok(Ok(row.is_some_and(|(_, expired, _)| !expired)))
    }

    fn kv_increment(
        &self,
        namespace: &str,
        key: &str,
        by: i64,
        expires_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<(i64, u64), IncrementError> {
        let mut conn = self.w();
        let tx = conn.transaction().map_err(StoreError::from)?;
        let row = current(&tx, namespace, key, now_ms)?;
        let (old, version, old_expiry) = match &row {
            Some((v, false, value)) => {
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        IncrementError::NotAnInteger(format!(
                            "the value of {key:?} is not a 64-bit integer"
                        ))
                    })?;
                let expiry: Option<i64> = tx
                    .query_row(
                        "SELECT expires_ms FROM kv WHERE namespace = ?1 AND key = ?2",
                        params![namespace, key],
                        |r| r.get(0),
                    )
                    .map_err(StoreError::from)?;
                (n, v + 1, expiry.map(|e| e as u64))
            }
            Some((v, true, _)) => (0, v + 1, None),
            None => (0, 1, None),
        };
        let new = old.checked_add(by).ok_or_else(|| {
            IncrementError::NotAnInteger(format!("incrementing {key:?} overflows"))
        })?;
        tx.execute(
            "INSERT OR REPLACE INTO kv (namespace, key, value, version, expires_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                namespace,
                key,
                new.to_string().into_bytes(),
                version as i64,
                expires_ms.or(old_expiry).map(|e| e as i64),
                now_ms as i64
            ],
        )
        .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        Ok((new, version))
    }

    fn kv_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<KvEntry>> {
        let conn = self.r();
        let mut stmt = conn.prepare_cached(
            "SELECT key, version, expires_ms, updated_ms, length(value) FROM kv
             WHERE namespace = ?1 AND key >= ?2 AND key > ?3 AND substr(key, 1, ?4) = ?2
               AND (expires_ms IS NULL OR expires_ms > ?5)
             ORDER BY key LIMIT ?6",
        )?;
        let rows = stmt
            .query_map(
                params![
                    namespace,
                    prefix,
                    after.unwrap_or(""),
                    prefix.chars().count() as i64,
                    now_ms as i64,
                    limit as i64
                ],
                kv_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn kv_purge_expired(&self, now_ms: u64) -> Result<u64> {
        let n = self.w().execute(
            "DELETE FROM kv WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
            [now_ms as i64],
        )?;
        Ok(n as u64)
    }

    fn create_bucket(&self, namespace: &str, name: &str) -> Result<bool> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM namespaces WHERE name = ?1",
                [namespace],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound(format!("namespace {namespace:?}")));
        }
        let n = tx.execute(
            "INSERT OR IGNORE INTO buckets (namespace, name, created_ms) VALUES (?1, ?2, ?3)",
            params![namespace, name, crate::clock::now_ms() as i64],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn get_bucket(&self, namespace: &str, name: &str) -> Result<Option<BucketRecord>> {
        Ok(self
            .r()
            .query_row(
                "SELECT name, created_ms FROM buckets WHERE namespace = ?1 AND name = ?2",
                params![namespace, name],
                |r| {
                    Ok(BucketRecord {
                        name: r.get(0)?,
                        created_ms: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()?)
    }

    fn list_buckets(&self, namespace: &str) -> Result<Vec<BucketRecord>> {
        let conn = self.r();
        let mut stmt = conn.prepare_cached(
            "SELECT name, created_ms FROM buckets WHERE namespace = ?1 ORDER BY name",
        )?;
        let rows = stmt
            .query_map([namespace], |r| {
                Ok(BucketRecord {
                    name: r.get(0)?,
                    created_ms: r.get::<_, i64>(1)? as u64,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn delete_bucket(&self, namespace: &str, name: &str) -> Result<bool> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let in_bucket = |table: &str| {
            let sql = format!("SELECT 1 FROM {table} WHERE namespace = ?1 AND bucket = ?2 LIMIT 1");
            row_exists(&tx, &sql, params![namespace, name])
        };
        if in_bucket("objects")? {
            return Err(StoreError::Conflict(format!(
                "objects in bucket {name:?} (delete them first); the bucket"
            )));
        }
        if in_bucket("multipart_uploads")? {
            return Err(StoreError::Conflict(format!(
                "multipart uploads in progress in bucket {name:?} (abort them first); the bucket"
            )));
        }
        let n = tx.execute(
            "DELETE FROM buckets WHERE namespace = ?1 AND name = ?2",
            params![namespace, name],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn put_object(
        &self,
        namespace: &str,
        meta: &ObjectMeta,
        firings: &[StorageFiring],
    ) -> Result<Option<ObjectMeta>> {
        self.synced(|tx| put_object_in(tx, namespace, meta, firings))
    }

    fn get_object(&self, namespace: &str, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        let record: Option<String> = self
            .r()
            .query_row(
                "SELECT record FROM objects WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                params![namespace, bucket, key],
                |r| r.get(0),
            )
            .optional()?;
        record.map(decode_object).transpose()
    }

    fn delete_object(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        file: &str,
        firings: &[StorageFiring],
    ) -> Result<bool> {
        self.synced(|tx| {
            let record: Option<String> = tx
                .query_row(
                    "SELECT record FROM objects WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                    params![namespace, bucket, key],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(record) = record else {
                return Ok(false);
            };
            if decode_object(record)?.file != file {
                return Err(StoreError::Conflict(format!(
                    "a newer version of object {key:?}"
                )));
            }
            tx.execute(
                "DELETE FROM objects WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                params![namespace, bucket, key],
            )?;
            for (firing, queued) in firings {
                crate::sqlite::insert_firing(tx, firing, queued)?;
            }
            Ok(true)
        })
    }

    fn list_objects(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        let conn = self.r();
        let mut stmt = conn.prepare_cached(
            "SELECT record FROM objects
             WHERE namespace = ?1 AND bucket = ?2 AND key >= ?3 AND key > ?4
               AND substr(key, 1, ?5) = ?3
             ORDER BY key LIMIT ?6",
        )?;
        let rows = stmt
            .query_map(
                params![
                    namespace,
                    bucket,
                    prefix,
                    after.unwrap_or(""),
                    prefix.chars().count() as i64,
                    limit as i64
                ],
                |r| r.get::<_, String>(0),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(decode_object).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::suite::{fired, object, queued_events};
    use ignis_core::StorageEvent;

    /// Object changes and the firings committed with them are all there after the database is
    /// reopened, as after a crash (the backend-neutral checks are
    /// [`crate::suite::object_changes_commit_with_their_firings`]).
    #[test]
    fn object_changes_and_their_firings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ignis.db");
        let ns = "default";
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create_bucket(ns, "b1").unwrap();
            let a = object("a.csv", "f1");
            let created = fired("csv", StorageEvent::ObjectCreated, &a, &["etl"]);
            s.put_object(ns, &a, &[created]).unwrap();
            let t = object("a.txt", "f2");
            s.put_object(ns, &t, &[]).unwrap();
            let deleted = fired("gone", StorageEvent::ObjectDeleted, &t, &["clean"]);
            assert!(
                s.delete_object(ns, "b1", "a.txt", "f2", &[deleted])
                    .unwrap()
            );
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.get_object(ns, "b1", "a.csv").unwrap().unwrap().file, "f1");
        assert!(s.get_object(ns, "b1", "a.txt").unwrap().is_none());
        assert_eq!(
            queued_events(&s),
            [
                "object:created a.csv etag-f1",
                "object:deleted a.txt etag-f2"
            ]
        );
        assert_eq!(s.list_firings(ns, "csv", 10).unwrap().len(), 1);
        assert_eq!(s.list_firings(ns, "gone", 10).unwrap().len(), 1);
    }
}

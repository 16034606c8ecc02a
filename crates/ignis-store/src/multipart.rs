//! Multipart uploads in progress (S3's CreateMultipartUpload … CompleteMultipartUpload,
//! docs/baas.md): one row per upload, one per part. A part's body is a file of
//! [`crate::ObjectFiles`], durable before its row is committed, so an upload survives a restart
//! part for part.
//!
//! Completing an upload records the object assembled from its parts, forgets the upload and
//! fires the storage triggers in one transaction synced to disk; the parts' files are deleted
//! by the caller after that commit.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::data::{ObjectMeta, StorageFiring, put_object_in};
use crate::sqlite::{SqliteStore, require_bucket, row_exists};
use crate::{Result, StoreError};

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartUpload {
    /// Its id (the `uploadId` of S3's API).
    pub id: String,
    /// The bucket the object goes to.
    pub bucket: String,
    /// The object's key.
    pub key: String,
    /// The object's content type, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The object's user metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// When it was started.
    pub created_ms: u64,
}

/// A part uploaded, its body durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedPart {
    /// Its number, 1 to 10 000.
    pub number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The MD5 of its body, hex (its ETag).
    pub etag: String,
    /// Name of its body under the namespace's object directory.
    pub file: String,
    /// When it was uploaded.
    pub uploaded_ms: u64,
}

/// What completing an upload leaves to delete once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedUpload {
    /// The object the new one replaced (its file is to be deleted).
    pub replaced: Option<ObjectMeta>,
    /// The files of every part of the upload, used or not.
    pub part_files: Vec<String>,
}

/// Multipart uploads in progress. Object-safe, a supertrait of [`crate::Store`].
pub trait MultipartStore: Send + Sync {
    /// Records a new upload; `NotFound` if its bucket does not exist.
    fn create_upload(&self, namespace: &str, upload: &MultipartUpload) -> Result<()>;
    /// One upload in progress.
    fn get_upload(&self, namespace: &str, id: &str) -> Result<Option<MultipartUpload>>;
    /// Uploads in progress in a bucket whose key starts with `prefix`, by key then id, after
    /// `after` (key, id).
    fn list_uploads(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartUpload>>;
    /// Records a part whose body is durable, replacing the part of that number if there was
    /// one; returns the part replaced (the caller deletes its file). `NotFound` if the upload
    /// is no longer in progress (the caller deletes the new part's file).
    fn put_part(
        &self,
        namespace: &str,
        upload: &str,
        part: &UploadedPart,
    ) -> Result<Option<UploadedPart>>;
    /// The parts of an upload, by number.
    fn list_parts(&self, namespace: &str, upload: &str) -> Result<Vec<UploadedPart>>;
    /// Completes an upload, in one transaction synced to disk: checks that each of `parts`
    /// (number, file) is still a part of the upload, records `meta` (the object assembled from
    /// them) with its `object:created` `firings` as [`crate::DataStore::put_object`] does, and
    /// forgets the upload and all its parts. `NotFound` if the upload is no longer in progress
    /// or the bucket is gone, `Conflict` if a part was replaced meanwhile; nothing is written
    /// then.
    fn complete_upload(
        &self,
        namespace: &str,
        upload: &str,
        parts: &[(u32, String)],
        meta: &ObjectMeta,
        firings: &[StorageFiring],
    ) -> Result<CompletedUpload>;
    /// Forgets an upload and its parts; returns the parts' files (the caller deletes them), or
    /// `None` if there is no such upload.
    fn abort_upload(&self, namespace: &str, upload: &str) -> Result<Option<Vec<String>>>;
    /// Forgets every upload started before `before_ms`, with its parts; returns the
    /// (namespace, file) of their parts (the caller deletes them).
    fn abort_uploads_before(&self, before_ms: u64) -> Result<Vec<(String, String)>>;
}

/// The tables of [`MultipartStore`], created with the others.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS multipart_uploads (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (namespace, id)
);
CREATE INDEX IF NOT EXISTS multipart_uploads_by_key ON multipart_uploads (namespace, bucket, key, id);
CREATE INDEX IF NOT EXISTS multipart_uploads_by_age ON multipart_uploads (created_ms);
CREATE TABLE IF NOT EXISTS multipart_parts (
    namespace TEXT NOT NULL,
    upload TEXT NOT NULL,
    number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    file TEXT NOT NULL,
    uploaded_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, upload, number)
) WITHOUT ROWID;
";

fn part_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadedPart> {
    Ok(UploadedPart {
        number: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        etag: r.get(2)?,
        file: r.get(3)?,
        uploaded_ms: r.get::<_, i64>(4)? as u64,
    })
}

const PART_COLUMNS: &str = "number, size, etag, file, uploaded_ms";

/// Deletes an upload and its parts inside `tx`; the parts' files, or `None` if it was not there.
fn forget_upload(
    tx: &rusqlite::Transaction<'_>,
    namespace: &str,
    upload: &str,
) -> Result<Option<Vec<String>>> {
    let n = tx.execute(
        "DELETE FROM multipart_uploads WHERE namespace = ?1 AND id = ?2",
        params![namespace, upload],
    )?;
    if n == 0 {
        return Ok(None);
    }
    let mut stmt = tx.prepare_cached(
        "DELETE FROM multipart_parts WHERE namespace = ?1 AND upload = ?2 RETURNING file",
    )?;
    let files = stmt
        .query_map(params![namespace, upload], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(files))
}

/// Fails with `NotFound` unless the upload is in progress.
fn require_upload(conn: &rusqlite::Connection, namespace: &str, upload: &str) -> Result<()> {
    let sql = "SELECT 1 FROM multipart_uploads WHERE namespace = ?1 AND id = ?2";
    if !row_exists(conn, sql, params![namespace, upload])? {
        return Err(StoreError::NotFound(format!("multipart upload {upload:?}")));
    }
    Ok(())
}

impl MultipartStore for SqliteStore {
    fn create_upload(&self, namespace: &str, upload: &MultipartUpload) -> Result<()> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        require_bucket(&tx, namespace, &upload.bucket)?;
        tx.execute(
            "INSERT INTO multipart_uploads (namespace, id, bucket, key, created_ms, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                namespace,
                upload.id,
                upload.bucket,
                upload.key,
                upload.created_ms as i64,
                serde_json::to_string(upload)?
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn get_upload(&self, namespace: &str, id: &str) -> Result<Option<MultipartUpload>> {
        let record: Option<String> = self
            .r()
            .query_row(
                "SELECT record FROM multipart_uploads WHERE namespace = ?1 AND id = ?2",
                params![namespace, id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(record.map(|r| serde_json::from_str(&r)).transpose()?)
    }

    fn list_uploads(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<MultipartUpload>> {
        let (after_key, after_id) = after.unwrap_or(("", ""));
        let conn = self.r();
        let mut stmt = conn.prepare_cached(
            "SELECT record FROM multipart_uploads
             WHERE namespace = ?1 AND bucket = ?2 AND substr(key, 1, ?4) = ?3
               AND (key > ?5 OR (key = ?5 AND id > ?6))
             ORDER BY key, id LIMIT ?7",
        )?;
        let rows = stmt
            .query_map(
                params![
                    namespace,
                    bucket,
                    prefix,
                    prefix.chars().count() as i64,
                    after_key,
                    after_id,
                    limit as i64
                ],
                |r| r.get::<_, String>(0),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.iter()
            .map(|r| serde_json::from_str(r).map_err(StoreError::from))
            .collect()
    }

    fn put_part(
        &self,
        namespace: &str,
        upload: &str,
        part: &UploadedPart,
    ) -> Result<Option<UploadedPart>> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        require_upload(&tx, namespace, upload)?;
        let old = tx
            .query_row(
                &format!(
                    "SELECT {PART_COLUMNS} FROM multipart_parts
                     WHERE namespace = ?1 AND upload = ?2 AND number = ?3"
                ),
                params![namespace, upload, part.number],
                part_row,
            )
            .optional()?;
        tx.execute(
            "INSERT OR REPLACE INTO multipart_parts
             (namespace, upload, number, size, etag, file, uploaded_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                namespace,
                upload,
                part.number,
                part.size as i64,
                part.etag,
                part.file,
                part.uploaded_ms as i64
            ],
        )?;
        tx.commit()?;
        Ok(old)
    }

    fn list_parts(&self, namespace: &str, upload: &str) -> Result<Vec<UploadedPart>> {
        let conn = self.r();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {PART_COLUMNS} FROM multipart_parts
             WHERE namespace = ?1 AND upload = ?2 ORDER BY number"
        ))?;
        let rows = stmt
            .query_map(params![namespace, upload], part_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn complete_upload(
        &self,
        namespace: &str,
        upload: &str,
        parts: &[(u32, String)],
        meta: &ObjectMeta,
        firings: &[StorageFiring],
    ) -> Result<CompletedUpload> {
        self.synced(|tx| {
            require_upload(tx, namespace, upload)?;
            for (number, file) in parts {
                let now: Option<String> = tx
                    .query_row(
                        "SELECT file FROM multipart_parts
                         WHERE namespace = ?1 AND upload = ?2 AND number = ?3",
                        params![namespace, upload, number],
                        |r| r.get(0),
                    )
                    .optional()?;
                if now.as_ref() != Some(file) {
                    return Err(StoreError::Conflict(format!(
                        "part {number} was replaced or removed meanwhile; the part"
                    )));
                }
            }
            let part_files = forget_upload(tx, namespace, upload)?.unwrap_or_default();
            let replaced = put_object_in(tx, namespace, meta, firings)?;
            Ok(CompletedUpload {
                replaced,
                part_files,
            })
        })
    }

    fn abort_upload(&self, namespace: &str, upload: &str) -> Result<Option<Vec<String>>> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let files = forget_upload(&tx, namespace, upload)?;
        tx.commit()?;
        Ok(files)
    }

    fn abort_uploads_before(&self, before_ms: u64) -> Result<Vec<(String, String)>> {
        let mut conn = self.w();
        let tx = conn.transaction()?;
        let old = {
            let mut stmt = tx.prepare_cached(
                "SELECT namespace, id FROM multipart_uploads WHERE created_ms < ?1",
            )?;
            stmt.query_map([before_ms as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut files = Vec::new();
        for (namespace, id) in old {
            for f in forget_upload(&tx, &namespace, &id)?.unwrap_or_default() {
                files.push((namespace.clone(), f));
            }
        }
        tx.commit()?;
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataStore;
    use crate::suite::{part, upload};

    /// Uploads and their parts are there after the database is reopened, as after a restart
    /// (the backend-neutral checks are [`crate::suite::multipart_uploads_complete_once`]).
    #[test]
    fn uploads_and_parts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ignis.db");
        let ns = "default";
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create_bucket(ns, "b1").unwrap();
            s.create_upload(ns, &upload("u1", "big.zip", 10)).unwrap();
            s.put_part(ns, "u1", &part(2, "p2")).unwrap();
            s.put_part(ns, "u1", &part(1, "p1")).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.get_upload(ns, "u1").unwrap(),
            Some(upload("u1", "big.zip", 10))
        );
        assert_eq!(
            s.list_parts(ns, "u1").unwrap(),
            [part(1, "p1"), part(2, "p2")]
        );
    }
}

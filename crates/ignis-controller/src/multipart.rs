//! Multipart uploads (S3's CreateMultipartUpload … CompleteMultipartUpload, docs/baas.md),
//! kept in the store so that an upload in progress survives a restart:
//!
//! ```text
//! create    record the upload (bucket, key, content type, metadata)
//! part N    body → object file (fsync'd) → record the part (replacing part N's file)
//! complete  read the parts → assemble their bodies into a new file (fsync'd) →
//!           one transaction: the object, the end of the upload, the storage firings →
//!           delete the parts' files
//! abort     forget the upload → delete the parts' files
//! ```
//!
//! A crash leaves at worst files no record names (a part written but not recorded, an
//! assembled body not committed, parts of a committed upload not yet deleted), never a record
//! naming a missing file. Uploads neither completed nor aborted within
//! [`ABANDONED_UPLOAD_AGE`] are aborted by the pruner.

use std::time::Duration;

use ignis_core::data::MAX_OBJECT_BYTES;
use ignis_core::{StorageEvent, now_ms};
use ignis_store::{MultipartUpload, ObjectMeta, StoreError, UploadedPart};

use crate::data::{ObjectAttributes, ObjectUpload, bad_bucket, bad_key, storage_firings};
use crate::{Controller, ControllerError, Result};

/// Part numbers go from 1 to this.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// An upload started this long ago and neither completed nor aborted is aborted.
pub const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

fn no_upload(id: &str) -> ControllerError {
    ControllerError::NotFound(format!("multipart upload {id:?}"))
}

/// The parts `listed` (number, ETag; an empty ETag matches any) among those uploaded, in
/// ascending order. A refusal is a `BadRequest` whose message starts with `part `.
fn choose_parts(uploaded: &[UploadedPart], listed: &[(u32, String)]) -> Result<Vec<UploadedPart>> {
    if listed.is_empty() {
        return Err(ControllerError::BadRequest(
            "parts: none listed to complete the upload with".into(),
        ));
    }
    let mut chosen = Vec::with_capacity(listed.len());
    let mut last = 0;
    for (n, etag) in listed {
        if *n <= last {
            return Err(ControllerError::BadRequest(format!(
                "part {n} is listed after part {last}: parts go in ascending order"
            )));
        }
        last = *n;
        match uploaded.iter().find(|p| p.number == *n) {
            Some(p) if etag.is_empty() || p.etag == *etag => chosen.push(p.clone()),
            Some(_) => {
                return Err(ControllerError::BadRequest(format!(
                    "part {n} was not uploaded with ETag {etag:?}"
                )));
            }
            None => {
                return Err(ControllerError::BadRequest(format!(
                    "part {n} was not uploaded"
                )));
            }
        }
    }
    Ok(chosen)
}

impl Controller {
    /// Starts a multipart upload into `bucket` (`NotFound` if it does not exist).
    pub async fn create_multipart(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        attrs: ObjectAttributes,
    ) -> Result<MultipartUpload> {
        bad_bucket(bucket)?;
        bad_key("object key", key)?;
        let upload = MultipartUpload {
            id: ignis_core::new_secret().map_err(|e| ControllerError::Internal(e.to_string()))?,
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type: attrs.content_type,
            metadata: attrs.metadata,
            created_ms: now_ms(),
        };
        let (ns, u) = (namespace.to_string(), upload.clone());
        self.blocking(move |i| Ok(i.store.create_upload(&ns, &u)?))
            .await?;
        Ok(upload)
    }

    /// The upload `id` in progress for `bucket`/`key`; `NotFound` (`multipart upload …`) if
    /// there is none.
    pub async fn get_multipart(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<MultipartUpload> {
        let (ns, i_d) = (namespace.to_string(), id.to_string());
        match self
            .blocking(move |i| Ok(i.store.get_upload(&ns, &i_d)?))
            .await?
        {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => Err(no_upload(id)),
        }
    }

    /// Makes a part's body durable, then records it as part `number` of `upload` (replacing
    /// that part if it was uploaded before, whose body is then deleted).
    pub async fn finish_part(
        &self,
        namespace: &str,
        upload: &MultipartUpload,
        number: u32,
        body: ObjectUpload,
    ) -> Result<UploadedPart> {
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(ControllerError::BadRequest(format!(
                "part numbers go from 1 to {MAX_PART_NUMBER}"
            )));
        }
        let written = body.finish().await?;
        let part = UploadedPart {
            number,
            size: written.size,
            etag: hex::encode(written.md5),
            file: written.file,
            uploaded_ms: now_ms(),
        };
        let (ns, id, p) = (namespace.to_string(), upload.id.clone(), part.clone());
        self.blocking(move |i| match i.store.put_part(&ns, &id, &p) {
            Ok(old) => {
                if let Some(old) = old {
                    i.objects.remove(&ns, &old.file);
                }
                Ok(())
            }
            // Completed or aborted meanwhile.
            Err(e) => {
                i.objects.remove(&ns, &p.file);
                Err(match e {
                    StoreError::NotFound(_) => no_upload(&id),
                    e => e.into(),
                })
            }
        })
        .await?;
        Ok(part)
    }

    /// An upload in progress and its parts, by number.
    pub async fn list_parts(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<(MultipartUpload, Vec<UploadedPart>)> {
        let upload = self.get_multipart(namespace, bucket, key, id).await?;
        let (ns, i_d) = (namespace.to_string(), id.to_string());
        let parts = self
            .blocking(move |i| Ok(i.store.list_parts(&ns, &i_d)?))
            .await?;
        Ok((upload, parts))
    }

    /// Completes an upload with the parts `listed` (number and ETag, ascending): assembles them
    /// into one object and records it with its `object:created` firings, ending the upload
    /// (parts not listed are dropped). Its ETag is S3's for a multipart upload: the MD5 of the
    /// parts' MD5s, `-` and their number. A list that does not match the parts uploaded is a
    /// `BadRequest` whose message starts with `part `.
    pub async fn complete_multipart(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        id: &str,
        listed: &[(u32, String)],
    ) -> Result<ObjectMeta> {
        let (upload, uploaded) = self.list_parts(namespace, bucket, key, id).await?;
        let chosen = choose_parts(&uploaded, listed)?;
        if chosen.iter().map(|p| p.size).sum::<u64>() > MAX_OBJECT_BYTES {
            return Err(ControllerError::TooLarge(format!(
                "an object may have at most {MAX_OBJECT_BYTES} bytes"
            )));
        }
        let ns = namespace.to_string();
        let parts = chosen.clone();
        let (whole, etag) = self
            .blocking(move |i| {
                let io =
                    |e: std::io::Error| ControllerError::Internal(format!("assembling parts: {e}"));
                let mut w = i.objects.writer(&ns).map_err(io)?;
                let mut buf = vec![0u8; 1 << 20];
                let mut md5s = Vec::with_capacity(parts.len() * 16);
                for p in &parts {
                    let mut f = match std::fs::File::open(i.objects.local(&ns, &p.file)) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(ControllerError::BadRequest(format!(
                                "part {} was replaced, or the upload ended, while completing",
                                p.number
                            )));
                        }
                        Err(e) => return Err(io(e)),
                    };
                    loop {
                        let n = std::io::Read::read(&mut f, &mut buf).map_err(io)?;
                        if n == 0 {
                            break;
                        }
                        w.write(&buf[..n]).map_err(io)?;
                    }
                    md5s.extend(hex::decode(&p.etag).map_err(|e| {
                        ControllerError::Internal(format!("the ETag of part {}: {e}", p.number))
                    })?);
                }
                let whole = w.finish().map_err(io)?;
                use md5::Digest as _;
                let etag = format!("{}-{}", hex::encode(md5::Md5::digest(&md5s)), parts.len());
                Ok((whole, etag))
            })
            .await?;
        let meta = ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: whole.size,
            etag,
            content_type: upload
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            metadata: upload.metadata,
            modified_ms: now_ms(),
            file: whole.file,
        };
        let (ns, i_d, m) = (namespace.to_string(), id.to_string(), meta.clone());
        let used: Vec<(u32, String)> = chosen.into_iter().map(|p| (p.number, p.file)).collect();
        self.storage_change(move |i| {
            let completed = storage_firings(&*i.store, &ns, StorageEvent::ObjectCreated, &m)
                .and_then(|firings| {
                    i.store
                        .complete_upload(&ns, &i_d, &used, &m, &firings)
                        .map(|done| (done, !firings.is_empty()))
                        .map_err(|e| match e {
                            StoreError::Conflict(_) => ControllerError::BadRequest(
                                "part list changed while completing; list the parts again".into(),
                            ),
                            StoreError::NotFound(what) if what.starts_with("multipart") => {
                                no_upload(&i_d)
                            }
                            e => e.into(),
                        })
                });
            match completed {
                Ok((done, fired)) => {
                    if let Some(old) = done.replaced {
                        i.objects.remove(&ns, &old.file);
                    }
                    for f in &done.part_files {
                        i.objects.remove(&ns, f);
                    }
                    Ok(((), fired))
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

    /// Aborts an upload: forgets it and deletes its parts.
    pub async fn abort_multipart(
        &self,
        namespace: &str,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<()> {
        self.get_multipart(namespace, bucket, key, id).await?;
        let (ns, i_d) = (namespace.to_string(), id.to_string());
        self.blocking(move |i| match i.store.abort_upload(&ns, &i_d)? {
            Some(files) => {
                for f in &files {
                    i.objects.remove(&ns, f);
                }
                Ok(())
            }
            None => Err(no_upload(&i_d)),
        })
        .await
    }

    /// Uploads in progress in a bucket whose key starts with `prefix`, by key and id, after
    /// `after` (key, id); with whether there are more.
    pub async fn list_multipart_uploads(
        &self,
        namespace: &str,
        bucket: &str,
        prefix: &str,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<(Vec<MultipartUpload>, bool)> {
        self.check_bucket(namespace, bucket).await?;
        let limit = limit.clamp(1, crate::MAX_LIST);
        let (ns, b, p) = (
            namespace.to_string(),
            bucket.to_string(),
            prefix.to_string(),
        );
        let mut uploads = self
            .blocking(move |i| {
                let after = after.as_ref().map(|(k, id)| (k.as_str(), id.as_str()));
                Ok(i.store.list_uploads(&ns, &b, &p, after, limit + 1)?)
            })
            .await?;
        let more = uploads.len() > limit;
        uploads.truncate(limit);
        Ok((uploads, more))
    }

    /// Aborts the uploads started more than `age` ago; returns how many parts went.
    pub async fn abort_abandoned_uploads(&self, age: Duration) -> Result<usize> {
        let before = now_ms().saturating_sub(age.as_millis() as u64);
        self.blocking(move |i| {
            let parts = i.store.abort_uploads_before(before)?;
            for (ns, f) in &parts {
                i.objects.remove(ns, f);
            }
            Ok(parts.len())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_parts_must_be_uploaded_in_order_with_their_etags() {
        let part = |number: u32, etag: &str| UploadedPart {
            number,
            size: 1,
            etag: etag.into(),
            file: format!("f{number}"),
            uploaded_ms: 1,
        };
        let uploaded = [part(1, "a"), part(2, "b"), part(3, "c")];
        let list = |l: &[(u32, &str)]| -> Vec<(u32, String)> {
            l.iter().map(|(n, e)| (*n, e.to_string())).collect()
        };
        let numbers = |r: Result<Vec<UploadedPart>>| -> Vec<u32> {
            r.unwrap().into_iter().map(|p| p.number).collect()
        };
        assert_eq!(
            numbers(choose_parts(&uploaded, &list(&[(1, "a"), (3, "")]))),
            [1, 3]
        );
        for bad in [
            &[(2, "b"), (1, "a")][..],
            &[(1, "a"), (1, "a")],
            &[(1, "x")],
            &[(4, "")],
            &[],
        ] {
            match choose_parts(&uploaded, &list(bad)) {
                Err(ControllerError::BadRequest(m)) => assert!(m.starts_with("part"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}

//! The namespace's data (docs/baas.md): key-value entries and objects.

use bytes::Bytes;
use hyper::Method;
use hyper::header::HeaderValue;

use super::{Client, api_error, push_encoded, push_segment};
use crate::ClientError;

/// A key or object key as path segments: `/` kept, everything else outside the unreserved
/// characters percent-encoded.
fn push_key(out: &mut String, key: &str) {
    for (i, part) in key.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        push_segment(out, part);
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = String::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str(k);
            q.push('=');
            push_encoded(&mut q, v, b"");
        }
    }
    q
}

/// `Ok` for a plain 404 (no such entry), the error otherwise (an unknown namespace too).
fn absent(e: ClientError) -> Result<(), ClientError> {
    match &e {
        ClientError::Api {
            status: 404, code, ..
        } if code == "not_found" => Ok(()),
        _ => Err(e),
    }
}

fn version_of(headers: &hyper::HeaderMap) -> u64 {
    headers
        .get("x-ignis-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Client {
    /// Sends a request; its body on success, an API error otherwise.
    async fn send_ok(
        &self,
        method: Method,
        url: String,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<(hyper::HeaderMap, Bytes), ClientError> {
        let (status, headers, body) = self.send(method, url, content_type, body).await?;
        if !status.is_success() {
            return Err(api_error(status, &headers, &body));
        }
        Ok((headers, body))
    }

    fn kv_url(&self, key: &str, q: &str) -> String {
        let mut url = format!("{}/kv/", self.inner.ns_url);
        push_key(&mut url, key);
        url.push_str(q);
        url
    }

    fn object_url(&self, bucket: &str, key: Option<&str>) -> String {
        let mut url = format!("{}/buckets/", self.inner.ns_url);
        push_segment(&mut url, bucket);
        if let Some(key) = key {
            url.push_str("/objects/");
            push_key(&mut url, key);
        }
        url
    }

    /// A key-value entry's value and version; `None` if there is none.
    pub async fn kv_get(&self, key: &str) -> Result<Option<(Bytes, u64)>, ClientError> {
        let (status, headers, body) = self
            .send(Method::GET, self.kv_url(key, ""), None, Bytes::new())
            .await?;
        if status.is_success() {
            return Ok(Some((body, version_of(&headers))));
        }
        absent(api_error(status, &headers, &body)).map(|()| None)
    }

    /// Writes an entry; returns its version. `if_version` / `if_absent`: compare-and-swap (a
    /// mismatch is an API error with status 412).
    pub async fn kv_put(
        &self,
        key: &str,
        value: Bytes,
        ttl_secs: Option<u64>,
        if_version: Option<u64>,
        if_absent: bool,
    ) -> Result<u64, ClientError> {
        let q = query(&[
            ("ttl", ttl_secs.map(|t| t.to_string())),
            ("if_version", if_version.map(|v| v.to_string())),
            ("if_absent", if_absent.then(|| "true".to_string())),
        ]);
        let ct = HeaderValue::from_static("application/octet-stream");
        let (headers, _) = self
            .send_ok(Method::PUT, self.kv_url(key, &q), Some(ct), value)
            .await?;
        Ok(version_of(&headers))
    }

    /// Deletes an entry; false if there was none.
    pub async fn kv_delete(&self, key: &str, if_version: Option<u64>) -> Result<bool, ClientError> {
        let q = query(&[("if_version", if_version.map(|v| v.to_string()))]);
        let (status, headers, body) = self
            .send(Method::DELETE, self.kv_url(key, &q), None, Bytes::new())
            .await?;
        if status.is_success() {
            return Ok(true);
        }
        absent(api_error(status, &headers, &body)).map(|()| false)
    }

    /// Adds `by` to an integer entry atomically; returns the new value and version.
    pub async fn kv_increment(
        &self,
        key: &str,
        by: i64,
        ttl_secs: Option<u64>,
    ) -> Result<(i64, u64), ClientError> {
        let mut body = serde_json::json!({ "increment": by });
        if let Some(t) = ttl_secs {
            body["ttl"] = t.into();
        }
        let v: serde_json::Value = self
            .json_at(Method::POST, self.kv_url(key, ""), Some(body))
            .await?;
        Ok((
            v["value"].as_i64().unwrap_or_default(),
            v["version"].as_u64().unwrap_or_default(),
        ))
    }

    /// One page of entries whose key starts with `prefix`: `{"keys": [...], "next": …}`.
    pub async fn kv_list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<serde_json::Value, ClientError> {
        let q = query(&[
            ("prefix", (!prefix.is_empty()).then(|| prefix.to_string())),
            ("after", after.map(str::to_string)),
            ("limit", limit.map(|l| l.to_string())),
        ]);
        let url = format!("{}/kv{q}", self.inner.ns_url);
        self.json_at(Method::GET, url, None).await
    }

    /// Creates a bucket (nothing if it exists); true if new.
    pub async fn create_bucket(&self, bucket: &str) -> Result<bool, ClientError> {
        let v = self
            .json_at(Method::PUT, self.object_url(bucket, None), None)
            .await?;
        Ok(v["created"].as_bool().unwrap_or(false))
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), ClientError> {
        let url = self.object_url(bucket, None);
        self.send_ok(Method::DELETE, url, None, Bytes::new())
            .await?;
        Ok(())
    }

    /// One page of a bucket's objects: `{"objects": [...], "next": …}`.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<serde_json::Value, ClientError> {
        let q = query(&[
            ("prefix", (!prefix.is_empty()).then(|| prefix.to_string())),
            ("after", after.map(str::to_string)),
            ("limit", limit.map(|l| l.to_string())),
        ]);
        let url = format!("{}/objects{q}", self.object_url(bucket, None));
        self.json_at(Method::GET, url, None).await
    }

    /// Stores an object; returns its metadata.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let ct = HeaderValue::from_str(content_type.unwrap_or("application/octet-stream"))
            .map_err(|_| ClientError::Config("invalid content type".into()))?;
        let url = self.object_url(bucket, Some(key));
        let (_, resp) = self.send_ok(Method::PUT, url, Some(ct), body).await?;
        serde_json::from_slice(&resp).map_err(|source| ClientError::Decode {
            what: "object",
            source,
        })
    }

    /// An object's body.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Bytes, ClientError> {
        let url = self.object_url(bucket, Some(key));
        Ok(self.send_ok(Method::GET, url, None, Bytes::new()).await?.1)
    }

    /// Deletes an object.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), ClientError> {
        let url = self.object_url(bucket, Some(key));
        self.send_ok(Method::DELETE, url, None, Bytes::new())
            .await?;
        Ok(())
    }
}

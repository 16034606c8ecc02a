//! API keys: `id:secret`, given as `Authorization: Bearer id:secret` or as HTTP basic auth
//! (OpenWhisk's form). Only the SHA-256 of a secret is stored; checks compare in constant time.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::http::HeaderMap;
use base64::Engine;
use ignis_store::{ApiKeyRecord, Role};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// A key just made: the only time its secret exists in clear.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// `id:secret`, to give to the user.
    pub token: String,
}

/// Makes a new key.
pub fn generate_key(namespace: Option<String>, role: Role) -> std::io::Result<NewKey> {
    let id = format!("ik_{}", &ignis_core::new_secret()?[..16]);
    let secret = ignis_core::new_secret()?;
    let record = ApiKeyRecord {
        secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        secret: Some(secret.clone()),
        id: id.clone(),
        namespace,
        role,
        created_ms: ignis_core::now_ms(),
    };
    Ok(NewKey {
        record,
        token: format!("{id}:{secret}"),
    })
}

/// Keeps the secret of `token` (`id:secret`) in `record` if it is that key's and the record has
/// only its hash (keys made before SigV4). Returns whether the record changed.
pub fn restore_secret(record: &mut ApiKeyRecord, token: &str) -> bool {
    let Some((id, secret)) = token.split_once(':') else {
        return false;
    };
    if record.secret.is_some() || record.id != id {
        return false;
    }
    let digest = Sha256::digest(secret.as_bytes());
    let stored = hex::decode(&record.secret_sha256).unwrap_or_default();
    if !constant_time_eq(&digest, &stored) {
        return false;
    }
    record.secret = Some(secret.to_string());
    true
}

/// The keys the gateway accepts, held in memory.
#[derive(Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<String, ApiKeyRecord>>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
    )
}

impl KeyRing {
    /// A ring holding `keys`.
    pub fn new(keys: Vec<ApiKeyRecord>) -> Self {
        let ring = KeyRing::default();
        for k in keys {
            ring.insert(k);
        }
        ring
    }

    /// Adds or replaces a key.
    pub fn insert(&self, key: ApiKeyRecord) {
        self.keys.write().unwrap().insert(key.id.clone(), key);
    }

    /// For AWS Signature Version 4: the secret of the key with this id (the access key id), and
    /// the namespace it is limited to. `None` if there is no such key or its secret is not kept.
    pub fn signing_secret(&self, id: &str) -> Option<(String, Option<String>)> {
        let keys = self.keys.read().unwrap();
        let k = keys.get(id)?;
        Some((k.secret.clone()?, k.namespace.clone()))
    }

    /// Checks the request's credentials and that they may act in `namespace`.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        namespace: Option<&str>,
    ) -> Result<Role, ApiError> {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(unauthorized(
                "missing API key: send `Authorization: Bearer <key>`",
            ));
        };
        let value = value
            .to_str()
            .map_err(|_| unauthorized("malformed Authorization header"))?;
        let token = if let Some(t) = value.strip_prefix("Bearer ") {
            t.trim().to_string()
        } else if let Some(b) = value.strip_prefix("Basic ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| unauthorized("malformed basic credentials"))?;
            String::from_utf8(raw).map_err(|_| unauthorized("malformed basic credentials"))?
        } else {
            return Err(unauthorized("unsupported Authorization scheme; use Bearer"));
        };
        let (id, secret) = token
            .split_once(':')
            .ok_or_else(|| unauthorized("malformed API key: expected id:secret"))?;
        let keys = self.keys.read().unwrap();
        let key = keys
            .get(id)
            .ok_or_else(|| unauthorized("invalid API key"))?;
        let digest = Sha256::digest(secret.as_bytes());
        let stored = hex::decode(&key.secret_sha256).unwrap_or_default();
        if !constant_time_eq(&digest, &stored) {
            return Err(unauthorized("invalid API key"));
        }
        if let (Some(limit), Some(ns)) = (&key.namespace, namespace)
            && limit != ns
        {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key may not act in namespace {ns:?}"),
            ));
        }
        Ok(key.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    #[test]
    fn accepts_bearer_and_basic_refuses_the_rest() {
        let k = generate_key(None, Role::Admin).unwrap();
        let ring = KeyRing::new(vec![k.record.clone()]);
        ring.authorize(&headers(&format!("Bearer {}", k.token)), Some("default"))
            .unwrap();
        let basic = base64::engine::general_purpose::STANDARD.encode(&k.token);
        ring.authorize(&headers(&format!("Basic {basic}")), None)
            .unwrap();
        let (id, _) = k.token.split_once(':').unwrap();
        for bad in [
            format!("Bearer {id}:wrong"),
            "Bearer nosuchkey:x".to_string(),
            "Bearer garbage".to_string(),
            format!("Token {}", k.token),
        ] {
            let e = ring.authorize(&headers(&bad), None).unwrap_err();
            assert_eq!(e.status, 401, "{bad}");
        }
        assert_eq!(
            ring.authorize(&HeaderMap::new(), None).unwrap_err().status,
            401
        );
        assert!(
            !k.record
                .secret_sha256
                .contains(k.token.split_once(':').unwrap().1)
        );
    }

    #[test]
    fn secrets_are_kept_for_signing_and_restored_for_old_keys() {
        let k = generate_key(None, Role::Admin).unwrap();
        let (id, secret) = k.token.split_once(':').unwrap();
        let ring = KeyRing::new(vec![k.record.clone()]);
        assert_eq!(ring.signing_secret(id), Some((secret.to_string(), None)));
        assert_eq!(ring.signing_secret("ik_nosuchkey"), None);
        let mut old = ApiKeyRecord {
            secret: None,
            ..k.record.clone()
        };
        assert!(!restore_secret(&mut old, &format!("{id}:wrong")));
        assert!(!restore_secret(&mut old, "ik_other:x"));
        assert_eq!(old.secret, None);
        assert!(restore_secret(&mut old, &k.token));
        assert_eq!(old.secret.as_deref(), Some(secret));
        assert!(!restore_secret(&mut old, &k.token), "already there");
    }

    #[test]
    fn namespace_keys_are_confined() {
        let k = generate_key(Some("team".into()), Role::Admin).unwrap();
        let ring = KeyRing::new(vec![k.record.clone()]);
        let h = headers(&format!("Bearer {}", k.token));
        ring.authorize(&h, Some("team")).unwrap();
        assert_eq!(ring.authorize(&h, Some("default")).unwrap_err().status, 403);
    }
}

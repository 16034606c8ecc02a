//! API keys: `id:secret`, given as `Authorization: Bearer id:secret` or as HTTP basic auth
//! (OpenWhisk's form), each with a role and, but for admin keys, a namespace.
//!
//! A secret is checked against its argon2id hash once; the verified key is then remembered
//! under the SHA-256 of the presented token, so the hot path costs one SHA-256 and a map
//! lookup. Revoking a key drops it from that cache at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use ignis_core::data::{INSTANCE_TOKEN_PREFIX, InstanceTokens};
use ignis_store::{ApiKeyRecord, Role};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::secrets::{MasterKey, hash_secret, verify_secret};

/// Verified tokens kept in memory at most; past it the cache starts again empty.
const MAX_VERIFIED: usize = 4096;

/// argon2id checks run at once at most (each takes 19 MiB and tens of milliseconds of CPU).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 4;

/// A key just made: the only time its secret exists in clear.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// `id:secret`, to give to the user.
    pub token: String,
}

/// What a route needs of the caller (the `access` column of [`crate::ROUTES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// No key.
    Public,
    /// Any valid key.
    AnyKey,
    /// An admin key.
    Admin,
    /// Reading in the route's namespace: admin, owner, read.
    Read,
    /// Invoking in the route's namespace (functions, triggers): admin, owner, invoke.
    Invoke,
    /// Changing the route's namespace (functions, triggers, rules, keys): admin, owner.
    Write,
    /// Reading the namespace's data (key-value entries, objects): admin, owner, read, and the
    /// token of an instance of the namespace.
    DataRead,
    /// Changing the namespace's data: admin, owner, and the token of an instance of the
    /// namespace.
    DataWrite,
    /// The handler authenticates itself: web functions (a key with [`Access::Invoke`] unless the
    /// function is public) and the Lambda API (AWS Signature Version 4).
    Handler,
}

/// Who is calling: a verified key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id.
    pub key_id: String,
    /// Its role.
    pub role: Role,
    /// Its namespace; `None` for an admin key.
    pub namespace: Option<String>,
    /// The token of an instance (docs/baas.md): its namespace's data, nothing else.
    pub instance: bool,
}

impl Principal {
    fn of(k: &ApiKeyRecord) -> Principal {
        Principal {
            key_id: k.id.clone(),
            role: k.role,
            namespace: k.namespace.clone(),
            instance: false,
        }
    }

    fn instance(namespace: &str) -> Principal {
        Principal {
            key_id: "instance".into(),
            role: Role::Owner,
            namespace: Some(namespace.to_string()),
            instance: true,
        }
    }

    /// Whether this key may do what `access` needs in `namespace` (the route's, if it has one).
    /// 403 otherwise.
    pub fn allows(&self, access: Access, namespace: Option<&str>) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            return Ok(());
        }
        if let (Some(ns), Some(own)) = (namespace, &self.namespace)
            && ns != own
        {
            return Err(forbidden(format!(
                "this key may not act in namespace {ns:?}"
            )));
        }
        if self.instance {
            return match access {
                Access::DataRead | Access::DataWrite | Access::Public => Ok(()),
                _ => Err(forbidden(
                    "an instance token may only reach its namespace's data".into(),
                )),
            };
        }
        let ok = match access {
            Access::Public | Access::AnyKey | Access::Handler => true,
            Access::DataRead => matches!(self.role, Role::Owner | Role::Read),
            Access::DataWrite => self.role == Role::Owner,
            Access::Admin => false,
            Access::Read => matches!(self.role, Role::Owner | Role::Read),
            Access::Invoke => matches!(self.role, Role::Owner | Role::Invoke),
            Access::Write => self.role == Role::Owner,
        };
        if ok {
            Ok(())
        } else {
            Err(forbidden(format!(
                "a key with role {} may not do this",
                self.role.as_str()
            )))
        }
    }
}

/// Makes a new key: a random id and secret, the secret hashed and sealed under `master`.
pub fn generate_key(
    master: &MasterKey,
    namespace: Option<String>,
    role: Role,
) -> std::io::Result<NewKey> {
    let id = format!("ik_{}", &ignis_core::new_secret()?[..16]);
    let secret = ignis_core::new_secret()?;
    let record = ApiKeyRecord {
        secret_hash: hash_secret(&secret)?,
        sealed_secret: Some(master.seal(&id, &secret)?),
        secret_sha256: None,
        secret: None,
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

/// Brings a record of an older data directory to the current form: a secret kept in clear (or,
/// for a record with only its SHA-256, the secret of `known_token` if it is that key's) is
/// hashed with argon2id and sealed, and the clear secret and SHA-256 dropped. Returns whether
/// the record changed (and must be stored again).
pub fn upgrade_record(
    record: &mut ApiKeyRecord,
    master: &MasterKey,
    known_token: Option<&str>,
) -> std::io::Result<bool> {
    let secret = match (&record.secret, &record.secret_sha256, known_token) {
        (Some(s), _, _) => s.clone(),
        (None, Some(sha), Some(token)) if record.secret_hash.is_empty() => {
            match token.trim().split_once(':') {
                Some((id, s)) if id == record.id && sha256_matches(s, sha) => s.to_string(),
                _ => return Ok(false),
            }
        }
        _ => return Ok(false),
    };
    record.secret_hash = hash_secret(&secret)?;
    record.sealed_secret = Some(master.seal(&record.id, &secret)?);
    record.secret = None;
    record.secret_sha256 = None;
    Ok(true)
}

fn sha256_matches(secret: &str, hex_digest: &str) -> bool {
    let digest = Sha256::digest(secret.as_bytes());
    let stored = hex::decode(hex_digest).unwrap_or_default();
    constant_time_eq(&digest, &stored)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The keys the gateway accepts, held in memory, with the master key that opens their sealed
/// secrets.
pub struct KeyRing {
    keys: RwLock<HashMap<String, ApiKeyRecord>>,
    /// SHA-256 of a presented `id:secret` → the key it was verified to be.
    verified: RwLock<HashMap<[u8; 32], Arc<Principal>>>,
    verifying: tokio::sync::Semaphore,
    master: Arc<MasterKey>,
    instance_tokens: std::sync::OnceLock<Arc<InstanceTokens>>,
}

impl KeyRing {
    /// A ring holding `keys`.
    pub fn new(keys: Vec<ApiKeyRecord>, master: Arc<MasterKey>) -> Self {
        let ring = KeyRing {
            keys: RwLock::default(),
            verified: RwLock::default(),
            verifying: tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
            master,
            instance_tokens: std::sync::OnceLock::new(),
        };
        for k in keys {
            ring.insert(k);
        }
        ring
    }

    /// Accepts, from now on, the tokens of running instances (`ibt_…`), each for its
    /// namespace's data only.
    pub fn accept_instance_tokens(&self, tokens: Arc<InstanceTokens>) {
        let _ = self.instance_tokens.set(tokens);
    }

    /// The principal of an instance token, if `token` is a live one.
    fn instance_principal(&self, token: &str) -> Option<Result<Arc<Principal>, ApiError>> {
        if !token.starts_with(INSTANCE_TOKEN_PREFIX) {
            return None;
        }
        let ns = self
            .instance_tokens
            .get()
            .and_then(|t| t.namespace_of(token));
        Some(match ns {
            Some(ns) => Ok(Arc::new(Principal::instance(&ns))),
            None => Err(unauthorized("invalid or expired instance token")),
        })
    }

    /// The master key.
    pub fn master(&self) -> &Arc<MasterKey> {
        &self.master
    }

    /// Adds or replaces a key.
    pub fn insert(&self, key: ApiKeyRecord) {
        self.forget_verified(|p| p.key_id == key.id);
        self.keys.write().unwrap().insert(key.id.clone(), key);
    }

    /// Replaces every key with `keys` (cluster mode: keys changed on another node).
    pub fn replace_all(&self, keys: Vec<ApiKeyRecord>) {
        *self.keys.write().unwrap() = keys.into_iter().map(|k| (k.id.clone(), k)).collect();
        self.verified.write().unwrap().clear();
    }

    /// Revokes a key: it is refused from now on.
    pub fn remove(&self, id: &str) {
        self.keys.write().unwrap().remove(id);
        self.forget_verified(|p| p.key_id == id);
    }

    /// Revokes every key of a namespace.
    pub fn remove_namespace(&self, namespace: &str) {
        self.keys
            .write()
            .unwrap()
            .retain(|_, k| k.namespace.as_deref() != Some(namespace));
        self.forget_verified(|p| p.namespace.as_deref() == Some(namespace));
    }

    fn forget_verified(&self, gone: impl Fn(&Principal) -> bool) {
        self.verified.write().unwrap().retain(|_, p| !gone(p));
    }

    /// Every key, by id.
    pub fn list(&self) -> Vec<ApiKeyRecord> {
        let mut keys: Vec<_> = self.keys.read().unwrap().values().cloned().collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys
    }

    /// For AWS Signature Version 4: the secret of the key with this id (the access key id),
    /// opened with the master key, and who the key is. `None` if there is no such key or its
    /// secret is not kept.
    pub fn signing_secret(&self, id: &str) -> Option<(String, Principal)> {
        let keys = self.keys.read().unwrap();
        let k = keys.get(id)?;
        let secret = match (&k.sealed_secret, &k.secret) {
            (Some(sealed), _) => self.master.open(id, sealed)?,
            (None, Some(clear)) => clear.clone(),
            (None, None) => return None,
        };
        Some((secret, Principal::of(k)))
    }

    /// Checks the request's credentials and that they allow `access` in `namespace`: 401
    /// without valid credentials, 403 when the key may not.
    pub async fn authorize(
        self: &Arc<Self>,
        headers: &HeaderMap,
        access: Access,
        namespace: Option<&str>,
    ) -> Result<Arc<Principal>, ApiError> {
        let p = self.authenticate_async(headers).await?;
        p.allows(access, namespace)?;
        Ok(p)
    }

    /// Who the request's credentials are; 401 if there are none or they are wrong. May check an
    /// argon2id hash (tens of milliseconds): async code calls [`KeyRing::authenticate_async`].
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, ApiError> {
        let token = presented_token(headers)?;
        if let Some(p) = self.instance_principal(&token) {
            return p;
        }
        match self.cached(&token) {
            Some(p) => Ok(p),
            None => self.verify(&token),
        }
    }

    /// [`KeyRing::authenticate`] for async code: a token verified before costs a SHA-256 and a
    /// map lookup; a new one is checked on the blocking pool, at most
    /// [`MAX_CONCURRENT_VERIFICATIONS`] at once (each argon2id check takes 19 MiB).
    pub async fn authenticate_async(
        self: &Arc<Self>,
        headers: &HeaderMap,
    ) -> Result<Arc<Principal>, ApiError> {
        let token = presented_token(headers)?;
        if let Some(p) = self.instance_principal(&token) {
            return p;
        }
        if let Some(p) = self.cached(&token) {
            return Ok(p);
        }
        let _permit = self
            .verifying
            .acquire()
            .await
            .map_err(|_| unauthorized("the server is shutting down"))?;
        let ring = self.clone();
        tokio::task::spawn_blocking(move || ring.verify(&token))
            .await
            .map_err(|_| unauthorized("invalid API key"))?
    }

    /// A token verified before.
    fn cached(&self, token: &str) -> Option<Arc<Principal>> {
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.verified.read().unwrap().get(&fingerprint).cloned()
    }

    /// Checks a token against its key's hash, and remembers it if right.
    fn verify(&self, token: &str) -> Result<Arc<Principal>, ApiError> {
        let (id, secret) = token
            .split_once(':')
            .ok_or_else(|| unauthorized("malformed API key: expected id:secret"))?;
        let key = self
            .keys
            .read()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| unauthorized("invalid API key"))?;
        let valid = if !key.secret_hash.is_empty() {
            verify_secret(secret, &key.secret_hash)
        } else {
            key.secret_sha256
                .as_deref()
                .is_some_and(|sha| sha256_matches(secret, sha))
        };
        if !valid {
            return Err(unauthorized("invalid API key"));
        }
        let p = Arc::new(Principal::of(&key));
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut verified = self.verified.write().unwrap();
        // A key revoked while its secret was being checked must not be remembered.
        if self.keys.read().unwrap().contains_key(id) {
            if verified.len() >= MAX_VERIFIED {
                verified.clear();
            }
            verified.insert(fingerprint, p.clone());
        }
        Ok(p)
    }
}

/// The `id:secret` of a bearer or basic `Authorization` header.
fn presented_token(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(unauthorized(
            "missing API key: send `Authorization: Bearer <key>`",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("malformed Authorization header"))?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        Ok(t.trim().to_string())
    } else if let Some(b) = value.strip_prefix("Basic ") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|_| unauthorized("malformed basic credentials"))?;
        String::from_utf8(raw).map_err(|_| unauthorized("malformed basic credentials"))
    } else {
        Err(unauthorized("unsupported Authorization scheme; use Bearer"))
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

    fn master() -> Arc<MasterKey> {
        Arc::new(MasterKey::generate().unwrap().0)
    }

    #[test]
    fn accepts_bearer_and_basic_refuses_the_rest() {
        let m = master();
        let k = generate_key(&m, None, Role::Admin).unwrap();
        let ring = KeyRing::new(vec![k.record.clone()], m);
        for _ in 0..2 {
            // The second time comes from the cache of verified tokens.
            ring.authenticate(&headers(&format!("Bearer {}", k.token)))
                .unwrap();
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(&k.token);
        ring.authenticate(&headers(&format!("Basic {basic}")))
            .unwrap();
        let (id, secret) = k.token.split_once(':').unwrap();
        for bad in [
            format!("Bearer {id}:wrong"),
            "Bearer nosuchkey:x".to_string(),
            "Bearer garbage".to_string(),
            format!("Token {}", k.token),
        ] {
            let e = ring.authenticate(&headers(&bad)).unwrap_err();
            assert_eq!(e.status, 401, "{bad}");
        }
        assert_eq!(
            ring.authenticate(&HeaderMap::new()).unwrap_err().status,
            401
        );
        let stored = serde_json::to_string(&k.record).unwrap();
        assert!(!stored.contains(secret), "{stored}");
    }

    #[test]
    fn revoked_keys_are_refused_at_once_even_when_cached() {
        let m = master();
        let k = generate_key(&m, Some("team".into()), Role::Owner).unwrap();
        let other = generate_key(&m, Some("other".into()), Role::Read).unwrap();
        let ring = KeyRing::new(vec![k.record.clone(), other.record.clone()], m);
        let h = headers(&format!("Bearer {}", k.token));
        ring.authenticate(&h).unwrap();
        ring.remove(&k.record.id);
        assert_eq!(ring.authenticate(&h).unwrap_err().status, 401);
        let h = headers(&format!("Bearer {}", other.token));
        ring.authenticate(&h).unwrap();
        ring.remove_namespace("other");
        assert_eq!(ring.authenticate(&h).unwrap_err().status, 401);
    }

    #[test]
    fn roles_and_namespaces_confine_keys() {
        let p = |role, ns: Option<&str>| Principal {
            key_id: "ik_x".into(),
            role,
            namespace: ns.map(str::to_string),
            instance: false,
        };
        use Access::*;
        let admin = p(Role::Admin, None);
        for a in [
            Public, AnyKey, Admin, Read, Invoke, Write, Handler, DataRead, DataWrite,
        ] {
            admin.allows(a, Some("any")).unwrap();
        }
        let cases = [
            (Role::Owner, [true, true, true, false, true, true]),
            (Role::Invoke, [false, true, false, false, false, false]),
            (Role::Read, [true, false, false, false, true, false]),
        ];
        for (role, [read, invoke, write, admin_ok, data_read, data_write]) in cases {
            let key = p(role, Some("team"));
            for (access, ok) in [
                (Read, read),
                (Invoke, invoke),
                (Write, write),
                (Admin, admin_ok),
                (DataRead, data_read),
                (DataWrite, data_write),
            ] {
                assert_eq!(
                    key.allows(access, Some("team")).is_ok(),
                    ok,
                    "{role:?} {access:?}"
                );
                let e = key.allows(access, Some("other")).unwrap_err();
                assert_eq!(e.status, 403, "{role:?} {access:?} elsewhere");
            }
            key.allows(AnyKey, None).unwrap();
        }
    }

    #[test]
    fn instance_tokens_reach_their_namespace_s_data_only() {
        let ring = KeyRing::new(vec![], master());
        let tokens = Arc::new(InstanceTokens::default());
        let t = tokens.issue("team").unwrap();
        let h = headers(&format!("Bearer {}", t.token));
        assert_eq!(
            ring.authenticate(&h).unwrap_err().status,
            401,
            "not yet accepted"
        );
        ring.accept_instance_tokens(tokens.clone());
        let p = ring.authenticate(&h).unwrap();
        assert!(p.instance);
        p.allows(Access::DataRead, Some("team")).unwrap();
        p.allows(Access::DataWrite, Some("team")).unwrap();
        for (access, ns) in [
            (Access::DataRead, "other"),
            (Access::DataWrite, "other"),
            (Access::Read, "team"),
            (Access::Invoke, "team"),
            (Access::Write, "team"),
            (Access::AnyKey, "team"),
            (Access::Handler, "team"),
        ] {
            assert_eq!(
                p.allows(access, Some(ns)).unwrap_err().status,
                403,
                "{access:?} in {ns}"
            );
        }
        drop(t);
        assert_eq!(ring.authenticate(&h).unwrap_err().status, 401, "revoked");
    }

    #[test]
    fn signing_secrets_are_opened_and_old_records_upgraded() {
        let m = master();
        let k = generate_key(&m, None, Role::Admin).unwrap();
        let (id, secret) = k.token.split_once(':').unwrap();
        let ring = KeyRing::new(vec![k.record.clone()], m.clone());
        let (s, p) = ring.signing_secret(id).unwrap();
        assert_eq!((s.as_str(), p.role), (secret, Role::Admin));
        assert_eq!(ring.signing_secret("ik_nosuchkey"), None);

        // A record with the secret in clear (SigV4 era) and one with only its SHA-256.
        let clear = ApiKeyRecord {
            secret_hash: String::new(),
            sealed_secret: None,
            secret: Some(secret.to_string()),
            secret_sha256: Some(hex::encode(Sha256::digest(secret.as_bytes()))),
            ..k.record.clone()
        };
        let mut up = clear.clone();
        assert!(upgrade_record(&mut up, &m, None).unwrap());
        assert!(up.secret.is_none() && up.secret_sha256.is_none());
        assert!(verify_secret(secret, &up.secret_hash));
        assert!(!upgrade_record(&mut up, &m, None).unwrap(), "already done");

        let hashed_only = ApiKeyRecord {
            secret: None,
            ..clear
        };
        let ring = KeyRing::new(vec![hashed_only.clone()], m.clone());
        ring.authenticate(&headers(&format!("Bearer {}", k.token)))
            .unwrap();
        assert_eq!(ring.signing_secret(id), None);
        let mut up = hashed_only;
        assert!(!upgrade_record(&mut up, &m, Some(&format!("{id}:wrong"))).unwrap());
        assert!(!upgrade_record(&mut up, &m, Some("ik_other:x")).unwrap());
        assert!(upgrade_record(&mut up, &m, Some(&k.token)).unwrap());
        let ring = KeyRing::new(vec![up], m);
        assert_eq!(ring.signing_secret(id).unwrap().0, secret);
    }
}

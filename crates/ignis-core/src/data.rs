//! The data services a namespace has besides its functions (docs/baas.md): the key-value
//! store, object storage, and the instance tokens through which functions reach them.
//!
//! This module holds the rules every layer shares — what a key, a bucket or an object key may
//! be, and the limits — and [`InstanceTokens`], the in-memory register of the tokens given to
//! running instances (the invoker issues them, the gateway checks them).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

/// Largest value of a key-value entry.
pub const MAX_KV_VALUE_BYTES: usize = 1024 * 1024;
/// Longest key of the key-value store, and longest object key, in bytes.
pub const MAX_DATA_KEY_BYTES: usize = 1024;
/// Largest object accepted in one upload (S3's single PUT limit).
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// Prefix of instance tokens: tells them apart from API keys (`id:secret`).
pub const INSTANCE_TOKEN_PREFIX: &str = "ibt_";

/// Why a data name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DataNameError(pub String);

/// Checks a key of the key-value store (or an object key): 1 to 1024 bytes of UTF-8 without
/// control characters.
pub fn validate_data_key(what: &str, key: &str) -> Result<(), DataNameError> {
    if key.is_empty() {
        return Err(DataNameError(format!("{what} must not be empty")));
    }
    if key.len() > MAX_DATA_KEY_BYTES {
        return Err(DataNameError(format!(
            "{what} is longer than {MAX_DATA_KEY_BYTES} bytes"
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(DataNameError(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks a bucket name, with S3's rules: 3 to 63 characters of lowercase letters, digits,
/// `-` and `.`, starting and ending with a letter or digit.
pub fn validate_bucket_name(name: &str) -> Result<(), DataNameError> {
    let ok_len = (3..=63).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok_len && ok_chars && ends(name.bytes().next()) && ends(name.bytes().last()) {
        Ok(())
    } else {
        Err(DataNameError(format!(
            "bucket name {:?} must be 3 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// The tokens of running instances: each gives access to the data of one namespace (never to
/// its functions, keys or settings) for as long as its [`InstanceToken`] lives — the instance's
/// life. Only the SHA-256 of a token is kept.
#[derive(Debug, Default)]
pub struct InstanceTokens {
    live: RwLock<HashMap<[u8; 32], Arc<str>>>,
}

/// A token given to one instance; dropping it revokes it.
#[derive(Debug)]
pub struct InstanceToken {
    tokens: Arc<InstanceTokens>,
    fingerprint: [u8; 32],
    /// The token, `ibt_` and 64 hex digits.
    pub token: String,
}

impl Drop for InstanceToken {
    fn drop(&mut self) {
        self.tokens.live.write().unwrap().remove(&self.fingerprint);
    }
}

impl InstanceTokens {
    /// Issues a token for `namespace`.
    pub fn issue(self: &Arc<Self>, namespace: &str) -> std::io::Result<InstanceToken> {
        let token = format!("{INSTANCE_TOKEN_PREFIX}{}", crate::new_secret()?);
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.live
            .write()
            .unwrap()
            .insert(fingerprint, Arc::from(namespace));
        Ok(InstanceToken {
            tokens: self.clone(),
            fingerprint,
            token,
        })
    }

    /// The namespace of a live token.
    pub fn namespace_of(&self, token: &str) -> Option<Arc<str>> {
        let fingerprint: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.live.read().unwrap().get(&fingerprint).cloned()
    }

    /// Revokes the tokens of a namespace's instances (the namespace is being deleted).
    pub fn revoke_namespace(&self, namespace: &str) {
        self.live
            .write()
            .unwrap()
            .retain(|_, ns| ns.as_ref() != namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        for ok in ["abc", "my-bucket.v2", "0aa"] {
            validate_bucket_name(ok).unwrap();
        }
        for bad in ["ab", "Abc", "-abc", "abc-", "a_b", &"a".repeat(64), "a/b"] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
        validate_data_key("key", "users/42/visits é").unwrap();
        assert!(validate_data_key("key", "").is_err());
        assert!(validate_data_key("key", "a\nb").is_err());
        assert!(validate_data_key("key", &"k".repeat(1025)).is_err());
    }

    #[test]
    fn tokens_live_as_long_as_their_holder() {
        let tokens = Arc::new(InstanceTokens::default());
        let a = tokens.issue("team").unwrap();
        let b = tokens.issue("other").unwrap();
        assert!(a.token.starts_with(INSTANCE_TOKEN_PREFIX));
        assert_eq!(tokens.namespace_of(&a.token).as_deref(), Some("team"));
        assert_eq!(tokens.namespace_of("ibt_nope"), None);
        let t = a.token.clone();
        drop(a);
        assert_eq!(tokens.namespace_of(&t), None);
        tokens.revoke_namespace("other");
        assert_eq!(tokens.namespace_of(&b.token), None);
    }
}

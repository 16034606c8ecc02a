//! How key secrets are kept: an argon2id hash (what bearer and basic authentication check) and
//! a copy sealed with ChaCha20-Poly1305 under the server's master key (what AWS Signature
//! Version 4 verification needs, since it needs the secret itself). See docs/security.md.

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};

const NONCE_BYTES: usize = 12;

/// Random bytes from the OS.
fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(out)
}

/// The argon2id hash of a secret, as a PHC string (`$argon2id$v=19$m=…`), with a fresh salt.
pub fn hash_secret(secret: &str) -> std::io::Result<String> {
    let salt = SaltString::encode_b64(&random::<16>()?)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Whether `secret` matches a hash made by [`hash_secret`]; the comparison is constant-time.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// The server's master key: 32 random bytes kept in `<data dir>/master.key` (mode 0600).
/// Seals key secrets for storage; the key id is bound to its sealed secret as associated
/// data, so a sealed secret copied into another key's record does not open.
pub struct MasterKey {
    cipher: ChaCha20Poly1305,
}

impl MasterKey {
    /// A fresh random master key, and its hex form to write to the file.
    pub fn generate() -> std::io::Result<(MasterKey, String)> {
        let bytes = random::<32>()?;
        Ok((MasterKey::from_bytes(&bytes), hex::encode(bytes)))
    }

    /// The master key of a file's content (64 hex digits).
    pub fn from_hex(text: &str) -> Option<MasterKey> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(MasterKey::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8; 32]) -> MasterKey {
        MasterKey {
            cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
        }
    }

    /// Encrypts the secret of key `id`: base64 of a random nonce and the ciphertext.
    pub fn seal(&self, id: &str, secret: &str) -> std::io::Result<String> {
        let nonce = random::<NONCE_BYTES>()?;
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| std::io::Error::other("sealing a key secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Decrypts what [`MasterKey::seal`] made for key `id`; `None` if it was not sealed with this
    /// master key for this id, or was altered.
    pub fn open(&self, id: &str, sealed: &str) -> Option<String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if raw.len() <= NONCE_BYTES {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_BYTES);
        let clear = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: id.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(clear).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_secret() {
        let h = hash_secret("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("s3cret"));
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3creT", &h));
        assert!(!verify_secret("s3cret", "garbage"));
        assert_ne!(h, hash_secret("s3cret").unwrap(), "salted");
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_id() {
        let (m, hex_form) = MasterKey::generate().unwrap();
        let sealed = m.seal("ik_a", "s3cret").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(m.open("ik_a", &sealed).as_deref(), Some("s3cret"));
        assert_eq!(m.open("ik_b", &sealed), None, "bound to its id");
        let again = MasterKey::from_hex(&hex_form).unwrap();
        assert_eq!(again.open("ik_a", &sealed).as_deref(), Some("s3cret"));
        let (other, _) = MasterKey::generate().unwrap();
        assert_eq!(other.open("ik_a", &sealed), None);
        let mut tampered = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        *tampered.last_mut().unwrap() ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);
        assert_eq!(m.open("ik_a", &tampered), None);
        assert_eq!(m.open("ik_a", "!!"), None);
        assert!(MasterKey::from_hex("abcd").is_none());
    }
}

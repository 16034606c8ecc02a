//! Identifiers, secrets and the clock.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A 32-character lowercase hex id of an activation (the OpenWhisk shape).
///
/// Ids are unique, not secret: they come from a per-thread generator seeded from the OS, so
/// making one costs no system call.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActivationId([u8; 16]);

thread_local! {
    static ID_STATE: Cell<u64> = Cell::new({
        let mut seed = [0u8; 8];
        // Falling back to the clock only weakens uniqueness across threads started in the same
        // nanosecond, which the thread id below also separates.
        if getrandom::fill(&mut seed).is_err() {
            seed = (now_ms() ^ 0x9e37_79b9_7f4a_7c15).to_le_bytes();
        }
        u64::from_le_bytes(seed) | 1
    });
}

fn splitmix64(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl ActivationId {
    /// A fresh id.
    pub fn new() -> Self {
        let (a, b) = ID_STATE.with(|s| (splitmix64(s), splitmix64(s)));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&b.to_be_bytes());
        ActivationId(bytes)
    }

    /// An id derived from this one and `salt`, the same every time: a workflow step keeps the
    /// activation id of its attempt across a restart of the server.
    pub fn derived(&self, salt: &str) -> ActivationId {
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let (mut a, mut b) = (0xcbf2_9ce4_8422_2325u64, 0x6c62_272e_07bb_0142u64);
        for &byte in self.0.iter().chain(salt.as_bytes()) {
            a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            b = (b ^ u64::from(byte))
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(17);
        }
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&mix(a).to_be_bytes());
        bytes[8..].copy_from_slice(&mix(b ^ a.rotate_left(32)).to_be_bytes());
        ActivationId(bytes)
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(ActivationId(bytes))
    }
}

impl Default for ActivationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ActivationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ActivationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for ActivationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ActivationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ActivationId::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid activation id"))
    }
}

/// A random secret of 32 bytes from the OS, hex encoded (64 characters).
pub fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = ActivationId::new();
        assert_eq!(a.derived("s/0/1"), a.derived("s/0/1"));
        assert_ne!(a.derived("s/0/1"), a.derived("s/0/2"));
        assert_ne!(a.derived("s/0/1"), ActivationId::new().derived("s/0/1"));
    }

    #[test]
    fn ids_round_trip_and_differ() {
        let a = ActivationId::new();
        let b = ActivationId::new();
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(ActivationId::parse(&s), Some(a));
        assert_eq!(ActivationId::parse("xyz"), None);
        assert_eq!(ActivationId::parse(&"g".repeat(32)), None);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<ActivationId>(&json).unwrap(), a);
    }

    #[test]
    fn secrets_are_long_and_distinct() {
        let a = new_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_secret().unwrap());
    }
}

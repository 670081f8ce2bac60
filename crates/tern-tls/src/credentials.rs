//! Credentials for secure channels: pre-shared keys, checked before any traffic, zeroized on
//! drop, never printed.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// The longest PSK identity accepted (bytes).
pub const MAX_PSK_IDENTITY_LEN: usize = 128;
/// The longest PSK accepted (bytes).
pub const MAX_PSK_KEY_LEN: usize = 64;

/// Why a credential is unusable. Each variant names the item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Empty PSK identity.
    #[error("the PSK identity is empty")]
    EmptyIdentity,
    /// PSK identity over 128 bytes.
    #[error("the PSK identity is {0} bytes long; at most 128 are allowed")]
    IdentityTooLong(usize),
    /// Empty key.
    #[error("the PSK key is empty")]
    EmptyKey,
    /// Key over 64 bytes.
    #[error("the PSK key is {0} bytes long; at most 64 are allowed")]
    KeyTooLong(usize),
    /// A `hex:` key that is not hex.
    #[error("the PSK key is not valid hex after \"hex:\"")]
    BadHex,
}

/// A PSK identity and its key. The key is zeroized on drop and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk {
    identity: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

impl Psk {
    /// Checks and builds a PSK: identity 1–128 bytes, key 1–64 bytes.
    pub fn new(
        identity: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, CredentialError> {
        let identity = identity.into();
        let key = Zeroizing::new(key.into());
        check_identity(&identity)?;
        check_key(&key)?;
        Ok(Psk { identity, key })
    }

    /// The identity.
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Psk")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Checks a PSK identity.
pub fn check_identity(identity: &[u8]) -> Result<(), CredentialError> {
    match identity.len() {
        0 => Err(CredentialError::EmptyIdentity),
        n if n > MAX_PSK_IDENTITY_LEN => Err(CredentialError::IdentityTooLong(n)),
        _ => Ok(()),
    }
}

/// Checks a PSK key.
pub fn check_key(key: &[u8]) -> Result<(), CredentialError> {
    match key.len() {
        0 => Err(CredentialError::EmptyKey),
        n if n > MAX_PSK_KEY_LEN => Err(CredentialError::KeyTooLong(n)),
        _ => Ok(()),
    }
}

/// Parses a key given on a command line or in a file: `hex:00ff…`, `sha256:PASSWORD` (the
/// 32-byte SHA-256 digest of the password, as some IoT platforms issue PSKs), or plain text.
pub fn parse_key(text: &str) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    if let Some(password) = text.strip_prefix("sha256:") {
        if password.is_empty() {
            return Err(CredentialError::EmptyKey);
        }
        let mut digest = openssl::sha::sha256(password.as_bytes());
        let key = Zeroizing::new(digest.to_vec());
        digest.zeroize();
        return Ok(key);
    }
    let key = match text.strip_prefix("hex:") {
        Some(hex) => {
            if hex.len() % 2 != 0 {
                return Err(CredentialError::BadHex);
            }
            let mut out = Zeroizing::new(Vec::with_capacity(hex.len() / 2));
            for i in (0..hex.len()).step_by(2) {
                let byte = hex
                    .get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok());
                out.push(byte.ok_or(CredentialError::BadHex)?);
            }
            out
        }
        None => Zeroizing::new(text.as_bytes().to_vec()),
    };
    check_key(&key)?;
    Ok(key)
}

/// Where a server finds the key for a PSK identity (a map, a file, a database).
pub trait PskStore: Send + Sync + 'static {
    /// The key for `identity`, if known.
    fn key_for(&self, identity: &[u8]) -> Option<Zeroizing<Vec<u8>>>;
}

/// A fixed set of PSKs in memory.
#[derive(Default)]
pub struct PskMap {
    entries: std::sync::RwLock<Vec<Psk>>,
}

impl PskMap {
    /// An empty map.
    pub fn new() -> Self {
        PskMap::default()
    }

    /// Adds or replaces the key of an identity.
    pub fn insert(&self, psk: Psk) {
        if let Ok(mut e) = self.entries.write() {
            e.retain(|p| p.identity != psk.identity);
            e.push(psk);
        }
    }

    /// Removes an identity; returns whether it was there.
    pub fn remove(&self, identity: &[u8]) -> bool {
        match self.entries.write() {
            Ok(mut e) => {
                let before = e.len();
                e.retain(|p| p.identity != identity);
                e.len() != before
            }
            Err(_) => false,
        }
    }
}

impl PskStore for PskMap {
    fn key_for(&self, identity: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let entries = self.entries.read().ok()?;
        entries
            .iter()
            .find(|p| p.identity == identity)
            .map(|p| Zeroizing::new(p.key.to_vec()))
    }
}

impl Drop for PskMap {
    fn drop(&mut self) {
        if let Ok(e) = self.entries.get_mut() {
            for p in e.iter_mut() {
                p.identity.zeroize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_text_hex_or_the_sha256_of_a_password() {
        assert_eq!(parse_key("secret").unwrap().as_slice(), b"secret");
        assert_eq!(parse_key("hex:00ff").unwrap().as_slice(), &[0x00, 0xff]);
        assert_eq!(parse_key("hex:0").unwrap_err(), CredentialError::BadHex);
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let digest = parse_key("sha256:abc").unwrap();
        assert_eq!(
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_key("sha256:").unwrap_err(), CredentialError::EmptyKey);
    }

    #[test]
    fn checks_name_the_item() {
        assert_eq!(
            Psk::new("", "k").unwrap_err(),
            CredentialError::EmptyIdentity
        );
        assert_eq!(Psk::new("id", "").unwrap_err(), CredentialError::EmptyKey);
        assert_eq!(
            Psk::new(vec![b'a'; 129], "k").unwrap_err(),
            CredentialError::IdentityTooLong(129)
        );
        assert_eq!(
            Psk::new("id", vec![1; 65]).unwrap_err(),
            CredentialError::KeyTooLong(65)
        );
        assert!(Psk::new(vec![b'a'; 128], vec![1; 64]).is_ok());
        assert!(CredentialError::KeyTooLong(65)
            .to_string()
            .contains("PSK key"));
    }

    #[test]
    fn keys_parse_and_never_print() {
        assert_eq!(&*parse_key("hex:00ff10").unwrap(), &[0, 0xff, 0x10]);
        assert_eq!(&*parse_key("secret").unwrap(), b"secret");
        assert_eq!(parse_key("hex:0").unwrap_err(), CredentialError::BadHex);
        assert_eq!(parse_key("hex:zz").unwrap_err(), CredentialError::BadHex);
        let psk = Psk::new("client", "topsecret").unwrap();
        assert!(!format!("{psk:?}").contains("topsecret"));
    }

    #[test]
    fn store_adds_and_removes() {
        let map = PskMap::new();
        map.insert(Psk::new("a", "1").unwrap());
        map.insert(Psk::new("a", "2").unwrap());
        assert_eq!(&*map.key_for(b"a").unwrap(), b"2");
        assert!(map.remove(b"a"));
        assert!(map.key_for(b"a").is_none());
        assert!(!map.remove(b"a"));
    }
}

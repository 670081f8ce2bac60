//! The AEAD algorithms OSCORE runs on (RFC 8613 §3.1, COSE algorithm numbers of RFC 9053).

use aes::Aes128;
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{Aead as _, KeyInit, Payload};
use ccm::consts::{U13, U16, U8};
use ccm::Ccm;

/// An AEAD algorithm of a security context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    /// AES-CCM-16-64-128 (COSE 10): the mandatory-to-implement default.
    AesCcm16_64_128,
    /// AES-CCM-16-128-128 (COSE 30).
    AesCcm16_128_128,
    /// AES-GCM with a 128-bit key (COSE 1).
    A128Gcm,
    /// AES-GCM with a 256-bit key (COSE 3).
    A256Gcm,
    /// ChaCha20/Poly1305 (COSE 24).
    ChaCha20Poly1305,
}

/// The AEAD refused the input: the tag did not verify (or the key or nonce had the wrong size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the message did not authenticate")]
pub struct AeadError;

impl Aead {
    /// The algorithm with COSE number `value`, if supported.
    pub fn from_cose(value: i64) -> Option<Self> {
        Some(match value {
            10 => Aead::AesCcm16_64_128,
            30 => Aead::AesCcm16_128_128,
            1 => Aead::A128Gcm,
            3 => Aead::A256Gcm,
            24 => Aead::ChaCha20Poly1305,
            _ => return None,
        })
    }

    /// Its COSE algorithm number.
    pub fn cose(self) -> i64 {
        match self {
            Aead::AesCcm16_64_128 => 10,
            Aead::AesCcm16_128_128 => 30,
            Aead::A128Gcm => 1,
            Aead::A256Gcm => 3,
            Aead::ChaCha20Poly1305 => 24,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Aead::AesCcm16_64_128 | Aead::AesCcm16_128_128 | Aead::A128Gcm => 16,
            Aead::A256Gcm | Aead::ChaCha20Poly1305 => 32,
        }
    }

    /// Nonce length in bytes (at least 7 for OSCORE's nonce construction).
    pub fn nonce_len(self) -> usize {
        match self {
            Aead::AesCcm16_64_128 | Aead::AesCcm16_128_128 => 13,
            Aead::A128Gcm | Aead::A256Gcm | Aead::ChaCha20Poly1305 => 12,
        }
    }

    /// Authentication tag length in bytes.
    pub fn tag_len(self) -> usize {
        match self {
            Aead::AesCcm16_64_128 => 8,
            _ => 16,
        }
    }

    /// Encrypts `plaintext`; the ciphertext with the tag appended.
    pub fn seal(
        self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, AeadError> {
        self.check(key, nonce)?;
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        let out = match self {
            Aead::AesCcm16_64_128 => Ccm::<Aes128, U8, U13>::new(GenericArray::from_slice(key))
                .encrypt(GenericArray::from_slice(nonce), payload),
            Aead::AesCcm16_128_128 => Ccm::<Aes128, U16, U13>::new(GenericArray::from_slice(key))
                .encrypt(GenericArray::from_slice(nonce), payload),
            Aead::A128Gcm => aes_gcm::Aes128Gcm::new(GenericArray::from_slice(key))
                .encrypt(GenericArray::from_slice(nonce), payload),
            Aead::A256Gcm => aes_gcm::Aes256Gcm::new(GenericArray::from_slice(key))
                .encrypt(GenericArray::from_slice(nonce), payload),
            Aead::ChaCha20Poly1305 => {
                chacha20poly1305::ChaCha20Poly1305::new(GenericArray::from_slice(key))
                    .encrypt(GenericArray::from_slice(nonce), payload)
            }
        };
        out.map_err(|_| AeadError)
    }

    /// Decrypts and authenticates `ciphertext` (tag appended).
    pub fn open(
        self,
        key: &[u8],
        nonce: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, AeadError> {
        self.check(key, nonce)?;
        if ciphertext.len() < self.tag_len() {
            return Err(AeadError);
        }
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        let out = match self {
            Aead::AesCcm16_64_128 => Ccm::<Aes128, U8, U13>::new(GenericArray::from_slice(key))
                .decrypt(GenericArray::from_slice(nonce), payload),
            Aead::AesCcm16_128_128 => Ccm::<Aes128, U16, U13>::new(GenericArray::from_slice(key))
                .decrypt(GenericArray::from_slice(nonce), payload),
            Aead::A128Gcm => aes_gcm::Aes128Gcm::new(GenericArray::from_slice(key))
                .decrypt(GenericArray::from_slice(nonce), payload),
            Aead::A256Gcm => aes_gcm::Aes256Gcm::new(GenericArray::from_slice(key))
                .decrypt(GenericArray::from_slice(nonce), payload),
            Aead::ChaCha20Poly1305 => {
                chacha20poly1305::ChaCha20Poly1305::new(GenericArray::from_slice(key))
                    .decrypt(GenericArray::from_slice(nonce), payload)
            }
        };
        out.map_err(|_| AeadError)
    }

    /// `from_slice` panics on a wrong length: sizes are checked first.
    fn check(self, key: &[u8], nonce: &[u8]) -> Result<(), AeadError> {
        if key.len() == self.key_len() && nonce.len() == self.nonce_len() {
            Ok(())
        } else {
            Err(AeadError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cose_numbers_round_trip() {
        for a in [
            Aead::AesCcm16_64_128,
            Aead::AesCcm16_128_128,
            Aead::A128Gcm,
            Aead::A256Gcm,
            Aead::ChaCha20Poly1305,
        ] {
            assert_eq!(Aead::from_cose(a.cose()), Some(a));
            let key = vec![1u8; a.key_len()];
            let nonce = vec![2u8; a.nonce_len()];
            let sealed = a.seal(&key, &nonce, b"aad", b"hello").unwrap();
            assert_eq!(sealed.len(), 5 + a.tag_len());
            assert_eq!(a.open(&key, &nonce, b"aad", &sealed).unwrap(), b"hello");
            assert_eq!(a.open(&key, &nonce, b"aaD", &sealed), Err(AeadError));
            assert_eq!(a.seal(&key[1..], &nonce, b"", b""), Err(AeadError));
            assert_eq!(a.open(&key, &nonce, b"", &sealed[..3]), Err(AeadError));
        }
        assert_eq!(Aead::from_cose(11), None);
    }
}

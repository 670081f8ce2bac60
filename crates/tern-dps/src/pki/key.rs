//! Private keys (ECDSA P-256 only) and a certificate paired with its key.

use std::fmt;

use openssl::ec::EcKey;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use rcgen::{KeyPair, PublicKeyData as _, PKCS_ECDSA_P256_SHA256};
use zeroize::{Zeroize as _, Zeroizing};

use super::pem::{read_single_block, PemBlock};
use super::{inspect, PkiError};

/// PEM labels accepted for a private key: PKCS#8 (what this module writes) and SEC1 (what
/// `openssl ecparam -genkey` and much factory tooling write).
const PRIVATE_KEY_LABELS: &[&str] = &["PRIVATE KEY", "EC PRIVATE KEY"];

/// An ECDSA P-256 private key. Its encoded form is zeroized on drop, and `Debug` never shows
/// it.
pub struct PrivateKey {
    key_pair: KeyPair,
}

impl PrivateKey {
    /// Reads a private key from PEM: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    ///
    /// Encrypted keys and keys other than P-256 are refused.
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let PemBlock { label, der } =
            read_single_block(pem, PRIVATE_KEY_LABELS, "PRIVATE KEY or EC PRIVATE KEY")?;
        let pkcs8 = if label == "EC PRIVATE KEY" {
            sec1_to_pkcs8(&der)?
        } else {
            der
        };
        let key_pair = KeyPair::try_from(pkcs8.as_slice()).map_err(|e| PkiError::BadKey {
            reason: e.to_string(),
        })?;
        Self::from_key_pair(key_pair)
    }

    /// The key as PKCS#8 PEM (`PRIVATE KEY`).
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key_pair.serialize_pem())
    }

    /// The public key as an uncompressed SEC1 point (65 bytes, starting 0x04).
    pub fn public_key_point(&self) -> &[u8] {
        self.key_pair.der_bytes()
    }

    pub(crate) fn from_key_pair(key_pair: KeyPair) -> Result<Self, PkiError> {
        if key_pair.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::WrongKeyType {
                what: "the private key",
                found: format!("{:?}", key_pair.algorithm()),
            });
        }
        Ok(Self { key_pair })
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.key_pair
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        // rcgen zeroizes its PKCS#8 copy on request but not on drop.
        self.key_pair.zeroize();
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(ECDSA P-256, <redacted>)")
    }
}

/// Generates a fresh ECDSA P-256 key (the device's identity key, say).
pub fn generate_key() -> Result<PrivateKey, PkiError> {
    let key_pair =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Build {
            what: "key pair",
            source,
        })?;
    PrivateKey::from_key_pair(key_pair)
}

/// A certificate (or chain, leaf first) with the private key of its leaf, both as PEM.
///
/// The key text is zeroized on drop and `Debug` never shows it. The fields are public so that
/// a caller can move them into a TLS configuration; [`CertifiedKey::from_pem`] builds one that
/// has been checked.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate, then any intermediates, as PEM.
    pub cert_pem: String,
    /// The leaf's private key as PEM.
    pub key_pem: Zeroizing<String>,
}

impl CertifiedKey {
    /// Pairs a certificate and a key after checking that both parse, that the key is P-256,
    /// and that it is the key of the (first) certificate.
    pub fn from_pem(cert_pem: String, key_pem: Zeroizing<String>) -> Result<Self, PkiError> {
        let certified = Self { cert_pem, key_pem };
        certified.private_key()?;
        Ok(certified)
    }

    /// The private key, parsed and checked against the (first) certificate.
    pub fn private_key(&self) -> Result<PrivateKey, PkiError> {
        let key = PrivateKey::from_pem(&self.key_pem)?;
        let info = inspect::inspect_with_key(&self.cert_pem)?;
        if info.public_key_point != key.public_key_point() {
            return Err(PkiError::KeyMismatch {
                subject: info.info.subject_cn.unwrap_or_default(),
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = inspect::inspect(&self.cert_pem)
            .ok()
            .and_then(|info| info.subject_cn);
        f.debug_struct("CertifiedKey")
            .field("subject", &subject)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Converts a SEC1 `ECPrivateKey` to PKCS#8, which is what rcgen reads. The DER is handed to
/// OpenSSL (never PEM, whose reader would prompt on a terminal for an encrypted key).
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let ec_key = EcKey::private_key_from_der(sec1).map_err(|e| PkiError::BadKey {
        reason: format!("not a SEC1 EC private key: {e}"),
    })?;
    let curve = ec_key.group().curve_name();
    if curve != Some(Nid::X9_62_PRIME256V1) {
        return Err(PkiError::WrongKeyType {
            what: "the private key",
            found: match curve.map(|nid| nid.short_name()) {
                Some(Ok(name)) => format!("an EC key on {name}"),
                _ => "an EC key on an unnamed curve".to_owned(),
            },
        });
    }
    let pkcs8 = PKey::from_ec_key(ec_key)?.private_key_to_pkcs8()?;
    Ok(Zeroizing::new(pkcs8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem() {
        let key = generate_key().unwrap();
        let again = PrivateKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(key.public_key_point(), again.public_key_point());
        assert_eq!(key.public_key_point().len(), 65);
    }

    #[test]
    fn reads_sec1_keys_and_refuses_other_curves() {
        let p256 =
            EcKey::generate(&openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap())
                .unwrap();
        let pem = String::from_utf8(p256.private_key_to_pem().unwrap()).unwrap();
        assert!(pem.contains("EC PRIVATE KEY"));
        PrivateKey::from_pem(&pem).unwrap();

        let p384 = EcKey::generate(&openssl::ec::EcGroup::from_curve_name(Nid::SECP384R1).unwrap())
            .unwrap();
        let pem = String::from_utf8(p384.private_key_to_pem().unwrap()).unwrap();
        assert!(matches!(
            PrivateKey::from_pem(&pem),
            Err(PkiError::WrongKeyType { .. })
        ));
        let pkcs8 = PKey::from_ec_key(p384).unwrap();
        let pem = String::from_utf8(pkcs8.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert!(PrivateKey::from_pem(&pem).is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = generate_key().unwrap();
        let pem = key.to_pem();
        let body_line = pem.lines().nth(1).unwrap();
        assert!(!format!("{key:?}").contains(body_line));
        let certified = CertifiedKey {
            cert_pem: String::new(),
            key_pem: pem.clone(),
        };
        let shown = format!("{certified:?}");
        assert!(!shown.contains(body_line), "{shown}");
        assert!(shown.contains("redacted"));
    }
}

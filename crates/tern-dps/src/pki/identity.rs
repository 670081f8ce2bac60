//! Identity certificates: the device's CSR (PKCS#10, RFC 2986) and the service's signature on
//! it.
//!
//! The service decides the device id; the CSR contributes only its public key. Its subject CN
//! is still checked against the id (`uuid:<device id>`), so that a device that asked for the
//! wrong name hears so plainly, and its self-signature is verified, so that a CSR for a key the
//! requester does not hold is refused.

use std::fmt;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose,
    PublicKeyData, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::inspect::DEVICE_ID_CN_PREFIX;
use super::issue::{leaf_params, CertificateAuthority};
use super::pem::read_single_block;
use super::{CertifiedKey, PkiError, PrivateKey, Serial};

/// The largest CSR, as PEM, that the service reads. A P-256 CSR is about 400 bytes.
pub const MAX_CSR_PEM_LEN: usize = 16 * 1024;

/// Longest device id: a CN holds 64 characters, five of which are `uuid:`.
const MAX_DEVICE_ID_LEN: usize = 64 - DEVICE_ID_CN_PREFIX.len();

/// PEM labels of a CSR (RFC 7468 §7; the second is what old tools write).
const CSR_LABELS: &[&str] = &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

/// Makes a device's CSR (PEM) for `key`, with subject CN `uuid:<device_id>`.
pub fn create_csr(key: &PrivateKey, device_id: &str) -> Result<String, PkiError> {
    check_device_id(device_id)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity_common_name(device_id));
    let csr = params
        .serialize_request(key.key_pair())
        .map_err(|source| PkiError::Build {
            what: "certificate signing request",
            source,
        })?;
    csr.pem().map_err(|source| PkiError::Build {
        what: "certificate signing request",
        source,
    })
}

/// An identity certificate the service has issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedIdentity {
    /// The device id in its subject CN.
    pub device_id: String,
    /// The certificate as PEM.
    pub cert_pem: String,
    /// Its serial number, lower-case hex.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// The service's identity CA, loaded once and ready to sign CSRs (cheaper per device than
/// [`sign_identity_csr`], which loads the CA each call). `Send + Sync`: share it across tasks.
pub struct IdentitySigner {
    authority: CertificateAuthority,
}

impl IdentitySigner {
    /// Loads the identity CA, which must be marked CA and hold its certificate's key.
    pub fn new(service_ca: &CertifiedKey) -> Result<Self, PkiError> {
        Ok(Self {
            authority: CertificateAuthority::load(service_ca)?,
        })
    }

    /// Checks `csr_pem` and issues the identity certificate for `expected_device_id`.
    ///
    /// The CSR must be one PEM `CERTIFICATE REQUEST` of at most [`MAX_CSR_PEM_LEN`] bytes,
    /// carry an ECDSA P-256 key, verify under that key, and name `uuid:<expected_device_id>`
    /// as its only subject CN. Everything else it asks for (extensions, other subject fields)
    /// is ignored: the certificate has CN `uuid:<expected_device_id>`, keyUsage
    /// digitalSignature and keyAgreement, extendedKeyUsage clientAuth and serverAuth,
    /// basicConstraints CA:false, and `serial` (or a random one). Validity as for every
    /// certificate here: from [`super::NOT_BEFORE_BACKDATE`] before `now` to `now + validity`,
    /// cut to the CA's end.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected_device_id: &str,
        validity: Duration,
        now: OffsetDateTime,
        serial: Option<Serial>,
    ) -> Result<IssuedIdentity, PkiError> {
        check_device_id(expected_device_id)?;
        let (not_before, not_after) = self.authority.window(now, validity)?;
        let public_key = match read_identity_csr(csr_pem, expected_device_id) {
            Ok(public_key) => public_key,
            Err(error) => {
                tracing::debug!(device_id = expected_device_id, %error, "refused CSR");
                return Err(error);
            }
        };
        let serial = match serial {
            Some(serial) => serial,
            None => Serial::random()?,
        };
        let serial_hex = serial.to_hex();
        let mut params = leaf_params(
            &identity_common_name(expected_device_id),
            serial,
            not_before,
            not_after,
        );
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let cert = self
            .authority
            .issue(&params, &public_key, "identity certificate")?;
        tracing::info!(
            device_id = expected_device_id,
            serial = %serial_hex,
            %not_after,
            "issued identity certificate"
        );
        Ok(IssuedIdentity {
            device_id: expected_device_id.to_owned(),
            cert_pem: cert.pem(),
            serial_hex,
            not_before,
            not_after,
        })
    }
}

impl fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySigner")
            .field("authority", &self.authority)
            .finish()
    }
}

/// Checks a device's CSR and issues its identity certificate, signed by `service_ca`.
///
/// A convenience for [`IdentitySigner::new`] then [`IdentitySigner::sign_csr`]; a service
/// signing many CSRs should keep an [`IdentitySigner`].
pub fn sign_identity_csr(
    csr_pem: &str,
    expected_device_id: &str,
    service_ca: &CertifiedKey,
    validity: Duration,
    now: OffsetDateTime,
    serial: Option<Serial>,
) -> Result<IssuedIdentity, PkiError> {
    IdentitySigner::new(service_ca)?.sign_csr(csr_pem, expected_device_id, validity, now, serial)
}

/// A device id (the part after `uuid:`) must be 1 to 59 ASCII letters, digits or '-': a UUID
/// fits, and nothing that could confuse a CN, a log line or a file name does.
pub fn check_device_id(device_id: &str) -> Result<(), PkiError> {
    let reason = if device_id.is_empty() {
        "it is empty"
    } else if device_id.len() > MAX_DEVICE_ID_LEN {
        "it is longer than 59 characters (with \"uuid:\" it must fit a 64-character CN)"
    } else if !device_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        "it may contain only ASCII letters, digits and '-'"
    } else {
        return Ok(());
    };
    Err(PkiError::InvalidDeviceId {
        device_id: device_id.to_owned(),
        reason,
    })
}

/// `uuid:<device_id>`.
fn identity_common_name(device_id: &str) -> String {
    format!("{DEVICE_ID_CN_PREFIX}{device_id}")
}

/// The public key of a CSR, as rcgen needs it to issue a certificate for it.
struct CsrPublicKey {
    /// The uncompressed SEC1 point.
    point: Vec<u8>,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Parses and checks a CSR (see [`IdentitySigner::sign_csr`]) and returns its public key.
///
/// The key type is checked before the signature, so that an RSA or P-384 CSR gets the clearer
/// error and costs no signature verification.
fn read_identity_csr(csr_pem: &str, expected_device_id: &str) -> Result<CsrPublicKey, PkiError> {
    if csr_pem.len() > MAX_CSR_PEM_LEN {
        return Err(PkiError::BadCsr {
            reason: format!("it is {} bytes; at most {MAX_CSR_PEM_LEN}", csr_pem.len()),
        });
    }
    let block = read_single_block(csr_pem, CSR_LABELS, "CERTIFICATE REQUEST")?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&block.der).map_err(|e| PkiError::BadCsr {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(PkiError::BadCsr {
            reason: format!("{} bytes after the end of the request", rest.len()),
        });
    }
    let info = &csr.certification_request_info;
    let point = p256_point(&info.subject_pki)?;
    csr.verify_signature().map_err(|_| PkiError::CsrSignature)?;

    let mut common_names = info.subject.iter_common_name();
    let common_name = match (common_names.next(), common_names.next()) {
        (Some(only), None) => only.as_str().map_err(|_| PkiError::BadCsr {
            reason: "the subject CN is not a string".to_owned(),
        })?,
        (None, _) => {
            return Err(PkiError::BadCsr {
                reason: "the subject has no CN".to_owned(),
            })
        }
        (Some(_), Some(_)) => {
            return Err(PkiError::BadCsr {
                reason: "the subject has more than one CN".to_owned(),
            })
        }
    };
    let expected = identity_common_name(expected_device_id);
    if common_name != expected {
        return Err(PkiError::DeviceIdMismatch {
            expected,
            found: common_name.to_owned(),
        });
    }
    Ok(CsrPublicKey {
        point: point.to_vec(),
    })
}

/// The uncompressed point of a P-256 key, or what the key is instead.
fn p256_point<'a>(spki: &'a SubjectPublicKeyInfo<'_>) -> Result<&'a [u8], PkiError> {
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(PkiError::WrongKeyType {
            what: "the CSR's public key",
            found: describe_key_algorithm(algorithm),
        });
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok());
    match curve {
        Some(curve) if curve == OID_EC_P256 => {}
        Some(curve) => {
            return Err(PkiError::WrongKeyType {
                what: "the CSR's public key",
                found: format!("an EC key on curve {curve}"),
            })
        }
        None => {
            return Err(PkiError::WrongKeyType {
                what: "the CSR's public key",
                found: "an EC key without a named curve".to_owned(),
            })
        }
    }
    let point: &[u8] = &spki.subject_public_key.data;
    // Compressed points are valid SEC1 but not accepted by every TLS stack (ring, hence
    // rustls, takes only uncompressed ones); devices have no reason to send them.
    if point.len() != 65 || point.first() != Some(&0x04) {
        return Err(PkiError::BadCsr {
            reason: "the public key is not an uncompressed P-256 point".to_owned(),
        });
    }
    Ok(point)
}

fn describe_key_algorithm(algorithm: &Oid<'_>) -> String {
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        "an RSA key".to_owned()
    } else if *algorithm == OID_SIG_ED25519 {
        "an Ed25519 key".to_owned()
    } else {
        format!("a key of algorithm {algorithm}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{create_ca, generate_key, inspect};

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    const DEVICE: &str = "8f0e1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn device_ids_are_checked() {
        assert!(check_device_id(DEVICE).is_ok());
        assert!(check_device_id("").is_err());
        assert!(check_device_id(&"a".repeat(60)).is_err());
        assert!(check_device_id("a b").is_err());
        assert!(check_device_id("uuid:x").is_err());
        assert!(check_device_id("é").is_err());
    }

    #[test]
    fn issues_an_identity_with_the_promised_profile() {
        let now = at(1_750_000_000);
        let ca = create_ca("Tern Identity CA", DAY * 365, now).unwrap();
        let key = generate_key().unwrap();
        let csr = create_csr(&key, DEVICE).unwrap();
        let serial = Serial::from_bytes(&[0x12; 16]).unwrap();
        let issued = sign_identity_csr(&csr, DEVICE, &ca, DAY * 30, now, Some(serial)).unwrap();
        assert_eq!(issued.serial_hex, "12".repeat(16));

        let info = inspect(&issued.cert_pem).unwrap();
        assert_eq!(info.subject_cn.as_deref(), Some(&*format!("uuid:{DEVICE}")));
        assert_eq!(info.issuer_cn.as_deref(), Some("Tern Identity CA"));
        assert_eq!(info.device_id.as_deref(), Some(DEVICE));
        assert_eq!(info.serial_hex, issued.serial_hex);
        assert_eq!(
            (info.not_before, info.not_after),
            (issued.not_before, issued.not_after)
        );
        assert!(!info.is_ca);

        let der = crate::pki::parse_pem_bundle(&issued.cert_pem).unwrap();
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(der[0].as_bytes()).unwrap();
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.digital_signature() && usage.key_agreement());
        assert!(!usage.key_cert_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_point()
        );
    }

    #[test]
    fn validity_is_cut_to_the_cas() {
        let now = at(1_750_000_000);
        let ca = create_ca("Short CA", DAY, now).unwrap();
        let csr = create_csr(&generate_key().unwrap(), DEVICE).unwrap();
        let issued = sign_identity_csr(&csr, DEVICE, &ca, DAY * 30, now, None).unwrap();
        assert_eq!(issued.not_after, inspect(&ca.cert_pem).unwrap().not_after);

        let later = now + time::Duration::days(2);
        assert!(matches!(
            sign_identity_csr(&csr, DEVICE, &ca, DAY, later, None),
            Err(PkiError::CaExpired { .. })
        ));
    }

    #[test]
    fn a_ca_without_the_ca_flag_cannot_sign() {
        let now = at(1_750_000_000);
        let ca = create_ca("Mfg CA", DAY, now).unwrap();
        let leaf =
            crate::pki::issue_manufacturer_certificate(&ca, "device", None, DAY, now).unwrap();
        assert!(matches!(
            IdentitySigner::new(&leaf),
            Err(PkiError::NotCa { .. })
        ));
    }

    #[test]
    fn refuses_a_csr_for_another_device() {
        let now = at(1_750_000_000);
        let ca = create_ca("Tern Identity CA", DAY, now).unwrap();
        let csr = create_csr(&generate_key().unwrap(), "other-device").unwrap();
        match sign_identity_csr(&csr, DEVICE, &ca, DAY, now, None) {
            Err(PkiError::DeviceIdMismatch { expected, found }) => {
                assert_eq!(expected, format!("uuid:{DEVICE}"));
                assert_eq!(found, "uuid:other-device");
            }
            other => panic!("{other:?}"),
        }
    }
}

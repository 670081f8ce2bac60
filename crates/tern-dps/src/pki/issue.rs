//! Issuing certificates (RFC 5280 profiles): CAs, factory certificates and TLS server
//! certificates, plus the serial numbers and validity windows every issued certificate shares.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm, SigningKey,
};
use time::{OffsetDateTime, UtcOffset};

use super::inspect::{inspect_with_key, to_hex};
use super::{generate_key, CertifiedKey, PkiError, PrivateKey};

/// How far before the issuing instant every certificate's `notBefore` is set, so that a
/// device whose clock runs a little behind the service's still accepts it (plgd's
/// certificate authority does the same).
pub const NOT_BEFORE_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// `ub-common-name` (RFC 5280 Appendix A.1).
const MAX_COMMON_NAME_CHARS: usize = 64;

/// A certificate serial number (RFC 5280 §4.1.2.2): positive, at most 20 octets encoded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh random serial of 16 octets from OpenSSL's CSPRNG.
    ///
    /// The top bit is cleared (so the INTEGER is positive without a pad octet) and the next
    /// set (so it has no leading zero octet): the DER is always exactly 16 octets, with 126
    /// random bits, and the hex in [`super::CertificateInfo::serial_hex`] is always 32 digits.
    pub fn random() -> Result<Self, PkiError> {
        let mut bytes = [0u8; 16];
        openssl::rand::rand_bytes(&mut bytes)?;
        bytes[0] = (bytes[0] & 0x7f) | 0x40;
        Ok(Self(bytes.to_vec()))
    }

    /// A serial from its big-endian magnitude, which must be non-zero, have no leading zero
    /// octet and fit the 20-octet limit once DER-encoded.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PkiError> {
        let first = *bytes.first().ok_or(PkiError::InvalidSerial {
            reason: "it is empty",
        })?;
        if first == 0 {
            return Err(PkiError::InvalidSerial {
                reason: "it has a leading zero octet (or is zero)",
            });
        }
        // A magnitude whose top bit is set gains a zero octet when DER-encoded as positive.
        let encoded_len = bytes.len() + usize::from(first >= 0x80);
        if encoded_len > 20 {
            return Err(PkiError::InvalidSerial {
                reason: "it is longer than 20 octets encoded",
            });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The big-endian magnitude.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex, as in [`super::CertificateInfo::serial_hex`].
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

/// Creates a self-signed CA: basicConstraints CA:true (critical), keyUsage keyCertSign and
/// cRLSign, a fresh P-256 key and a random serial. Used for manufacturer, identity (service)
/// and hub CAs.
///
/// Validity runs from [`NOT_BEFORE_BACKDATE`] before `now` to `now + validity`.
pub fn create_ca(
    common_name: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<CertifiedKey, PkiError> {
    check_common_name("CA common name", common_name)?;
    let (not_before, not_after) = validity_window(now, validity)?;
    let key = generate_key()?;
    let mut params = base_params(common_name, Serial::random()?, not_before, not_after);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params
        .self_signed(key.key_pair())
        .map_err(|source| PkiError::Build {
            what: "CA certificate",
            source,
        })?;
    tracing::debug!(common_name, %not_after, "created CA");
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.to_pem(),
    })
}

/// Issues a device's factory certificate: CN = `device_name`, extendedKeyUsage clientAuth,
/// keyUsage digitalSignature, a fresh P-256 key, signed by the manufacturer CA `ca`.
///
/// `serial` is generated when `None`. Validity is clamped to end no later than the CA's.
pub fn issue_manufacturer_certificate(
    ca: &CertifiedKey,
    device_name: &str,
    serial: Option<Serial>,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<CertifiedKey, PkiError> {
    check_common_name("device name", device_name)?;
    let authority = CertificateAuthority::load(ca)?;
    let (not_before, not_after) = authority.window(now, validity)?;
    let serial = match serial {
        Some(serial) => serial,
        None => Serial::random()?,
    };
    let key = generate_key()?;
    let mut params = leaf_params(device_name, serial, not_before, not_after);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = authority.issue(&params, key.key_pair(), "manufacturer certificate")?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.to_pem(),
    })
}

/// Issues a TLS server certificate (for the provisioning service or the hub): CN = the first
/// name, subjectAltName with every name (IP addresses as iPAddress, others as dNSName),
/// extendedKeyUsage serverAuth, keyUsage digitalSignature, a fresh P-256 key.
///
/// `names` must not be empty; [`LOCAL_SERVER_NAMES`] suits tests. Validity is clamped to end
/// no later than the CA's.
pub fn issue_server_certificate(
    ca: &CertifiedKey,
    names: &[&str],
    validity: Duration,
    now: OffsetDateTime,
) -> Result<CertifiedKey, PkiError> {
    let common_name = *names.first().ok_or(PkiError::InvalidName {
        what: "server name",
        name: String::new(),
        reason: "no names given",
    })?;
    check_common_name("server name", common_name)?;
    let mut subject_alt_names = Vec::with_capacity(names.len());
    for &name in names {
        check_subject_alt_name(name)?;
        subject_alt_names.push(match name.parse::<IpAddr>() {
            Ok(address) => SanType::IpAddress(address),
            Err(_) => SanType::DnsName(name.try_into().map_err(|_| PkiError::InvalidName {
                what: "server name",
                name: name.to_owned(),
                reason: "a DNS name must be ASCII",
            })?),
        });
    }
    let authority = CertificateAuthority::load(ca)?;
    let (not_before, not_after) = authority.window(now, validity)?;
    let key = generate_key()?;
    let mut params = leaf_params(common_name, Serial::random()?, not_before, not_after);
    params.subject_alt_names = subject_alt_names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = authority.issue(&params, key.key_pair(), "server certificate")?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.to_pem(),
    })
}

/// The names a server certificate for tests on one machine needs.
pub const LOCAL_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA loaded and ready to issue: its certificate parsed once and its key checked against it.
pub(crate) struct CertificateAuthority {
    issuer: Issuer<'static, CaKey>,
    common_name: String,
    not_after: OffsetDateTime,
}

impl CertificateAuthority {
    /// Loads `ca`, which must be marked CA and hold the key of its (first) certificate.
    pub(crate) fn load(ca: &CertifiedKey) -> Result<Self, PkiError> {
        let key = ca.private_key()?;
        let inspected = inspect_with_key(&ca.cert_pem)?;
        let common_name = inspected.info.subject_cn.unwrap_or_default();
        if !inspected.info.is_ca {
            return Err(PkiError::NotCa {
                subject: common_name,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&inspected.der.as_slice().into(), CaKey(key))
            .map_err(|source| PkiError::Build {
                what: "issuer from the CA certificate",
                source,
            })?;
        Ok(Self {
            issuer,
            common_name,
            not_after: inspected.info.not_after,
        })
    }

    /// The validity window for a certificate issued at `now`: see [`validity_window`], then
    /// cut to end when the CA does, since nothing outlives its issuer's validity.
    pub(crate) fn window(
        &self,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
        let (not_before, not_after) = validity_window(now, validity)?;
        if self.not_after <= now {
            return Err(PkiError::CaExpired {
                ca: self.common_name.clone(),
                not_after: self.not_after,
            });
        }
        Ok((not_before, not_after.min(self.not_after)))
    }

    /// Signs a certificate for `public_key` with `params`.
    pub(crate) fn issue(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
        what: &'static str,
    ) -> Result<Certificate, PkiError> {
        params
            .signed_by(public_key, &self.issuer)
            .map_err(|source| PkiError::Build { what, source })
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("common_name", &self.common_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The CA's key, as rcgen's issuer needs it: a private wrapper, so that rcgen's traits stay
/// out of [`PrivateKey`]'s public API, and so that the key is zeroized when the issuer drops.
struct CaKey(PrivateKey);

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.key_pair().der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.key_pair().algorithm()
    }
}

impl SigningKey for CaKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.key_pair().sign(message)
    }
}

/// `notBefore` is [`NOT_BEFORE_BACKDATE`] before `now`, `notAfter` is `now + validity`; both in
/// UTC and whole seconds, as X.509 encodes them.
pub(crate) fn validity_window(
    now: OffsetDateTime,
    validity: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    if validity.is_zero() {
        return Err(PkiError::InvalidValidity {
            reason: "the validity period is zero",
        });
    }
    let out_of_range = PkiError::InvalidValidity {
        reason: "the validity period runs outside the years 1950 to 9999",
    };
    let Some(now) = now.checked_to_offset(UtcOffset::UTC) else {
        return Err(out_of_range);
    };
    let now = now - time::Duration::nanoseconds(i64::from(now.nanosecond()));
    let (Ok(validity), Ok(backdate)) = (
        time::Duration::try_from(validity),
        time::Duration::try_from(NOT_BEFORE_BACKDATE),
    ) else {
        return Err(out_of_range);
    };
    let (Some(not_before), Some(not_after)) =
        (now.checked_sub(backdate), now.checked_add(validity))
    else {
        return Err(out_of_range);
    };
    // rcgen encodes 1950–2049 as UTCTime and the rest as GeneralizedTime, whose four-digit
    // year cannot go past 9999 or before 0; earlier than 1950 has no use here.
    if not_before.year() < 1950 || not_after.year() > 9999 {
        return Err(out_of_range);
    }
    Ok((not_before, not_after))
}

/// Parameters shared by every certificate issued here: subject CN only, explicit serial and
/// validity.
pub(crate) fn base_params(
    common_name: &str,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, common_name);
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name;
    params.serial_number = Some(SerialNumber::from_slice(serial.as_bytes()));
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

/// [`base_params`] for an end-entity certificate: basicConstraints CA:false written out, and
/// an authority key identifier, so that OpenSSL picks the right issuer even when two CAs share
/// a name.
pub(crate) fn leaf_params(
    common_name: &str,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = base_params(common_name, serial, not_before, not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params
}

/// A subject CN must be 1 to 64 characters without control characters.
pub(crate) fn check_common_name(what: &'static str, name: &str) -> Result<(), PkiError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.chars().count() > MAX_COMMON_NAME_CHARS {
        "it is longer than 64 characters (RFC 5280 ub-common-name)"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(PkiError::InvalidName {
        what,
        name: name.to_owned(),
        reason,
    })
}

/// A DNS name or IP address for subjectAltName: 1 to 253 characters without control
/// characters (the length limit of a DNS name, RFC 1035 §2.3.4).
fn check_subject_alt_name(name: &str) -> Result<(), PkiError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 253 {
        "it is longer than 253 characters"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(PkiError::InvalidName {
        what: "server name",
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    #[test]
    fn random_serials_are_16_octets_positive_and_distinct() {
        let a = Serial::random().unwrap();
        let b = Serial::random().unwrap();
        assert_ne!(a, b);
        for serial in [a, b] {
            assert_eq!(serial.as_bytes().len(), 16);
            assert_eq!(serial.as_bytes()[0] & 0xc0, 0x40);
            assert_eq!(serial.to_hex().len(), 32);
        }
    }

    #[test]
    fn serial_from_bytes_enforces_rfc_5280() {
        assert!(Serial::from_bytes(&[]).is_err());
        assert!(Serial::from_bytes(&[0]).is_err());
        assert!(Serial::from_bytes(&[0, 1]).is_err());
        assert!(Serial::from_bytes(&[1; 20]).is_ok());
        assert!(Serial::from_bytes(&[1; 21]).is_err());
        assert!(Serial::from_bytes(&[0x80; 19]).is_ok());
        assert!(Serial::from_bytes(&[0x80; 20]).is_err());
    }

    #[test]
    fn window_is_backdated_whole_seconds_and_bounded() {
        let now = at(1_700_000_000) + time::Duration::milliseconds(250);
        let (not_before, not_after) = validity_window(now, Duration::from_secs(100)).unwrap();
        assert_eq!(not_before, at(1_700_000_000 - 3600));
        assert_eq!(not_after, at(1_700_000_100));
        assert!(validity_window(now, Duration::ZERO).is_err());
        assert!(validity_window(now, Duration::from_secs(u64::MAX)).is_err());
        assert!(validity_window(
            at(0) - time::Duration::days(365 * 30),
            Duration::from_secs(1)
        )
        .is_err());
        // Out of range once in UTC: must be an error, not a panic in `to_offset`.
        let edge = time::PrimitiveDateTime::MAX
            .assume_offset(time::UtcOffset::from_hms(-1, 0, 0).unwrap());
        assert!(validity_window(edge, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn common_names_are_checked() {
        assert!(check_common_name("x", "Acme Device 1").is_ok());
        assert!(check_common_name("x", "").is_err());
        assert!(check_common_name("x", &"a".repeat(65)).is_err());
        assert!(check_common_name("x", "a\nb").is_err());
    }
}

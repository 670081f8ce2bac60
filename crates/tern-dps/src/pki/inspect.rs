//! Reading what a certificate says (RFC 5280 §4.1), and when it is due for renewal.

use std::fmt::Write as _;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::X509Name;

use super::{parse_pem_bundle, PkiError};

/// The prefix of a device's identity CN (the OCF and plgd convention: `uuid:<device id>`).
pub const DEVICE_ID_CN_PREFIX: &str = "uuid:";

/// What a certificate says, for logs, device records and renewal decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's common name, if it has one that is a string.
    pub subject_cn: Option<String>,
    /// The issuer's common name, if it has one that is a string.
    pub issuer_cn: Option<String>,
    /// The serial number as lower-case hex, without leading zero bytes.
    pub serial_hex: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// SHA-256 of the certificate's DER, lower-case hex.
    pub sha256_fingerprint_hex: String,
    /// Whether basicConstraints says CA:true.
    pub is_ca: bool,
    /// The device id, when the subject CN is `uuid:<device id>`.
    pub device_id: Option<String>,
}

impl CertificateInfo {
    /// See [`renewal_due`].
    pub fn renewal_due(&self, now: OffsetDateTime) -> bool {
        renewal_due(self, now)
    }
}

/// Inspects the first certificate in PEM text (the leaf of a chain).
///
/// Every certificate in the text must parse; only the first is described.
pub fn inspect(cert_pem: &str) -> Result<CertificateInfo, PkiError> {
    Ok(inspect_with_key(cert_pem)?.info)
}

/// Inspects one DER-encoded certificate.
pub fn inspect_der(der: &[u8]) -> Result<CertificateInfo, PkiError> {
    Ok(inspect_parsed(der)?.info)
}

/// Whether a certificate should be renewed at `now`: true from two thirds of the way through
/// its validity period on (and for a certificate whose period is empty or inverted).
///
/// The comparison is exact (`3·(now − not_before) ≥ 2·(not_after − not_before)`, in
/// nanoseconds), so the boundary does not move with rounding.
pub fn renewal_due(info: &CertificateInfo, now: OffsetDateTime) -> bool {
    let start = info.not_before.unix_timestamp_nanos();
    let end = info.not_after.unix_timestamp_nanos();
    let now = now.unix_timestamp_nanos();
    if end <= start {
        return true;
    }
    // Timestamps are within ±10^4 years, about 3.2·10^20 ns, so these products fit in i128.
    3 * (now - start) >= 2 * (end - start)
}

/// The earliest instant at which [`renewal_due`] is true: for scheduling the renewal.
pub fn renewal_time(info: &CertificateInfo) -> OffsetDateTime {
    let start = info.not_before.unix_timestamp_nanos();
    let end = info.not_after.unix_timestamp_nanos();
    let span = (end - start).max(0);
    // Round up, so that the instant returned is never one at which renewal is not yet due.
    let offset = (2 * span + 2) / 3;
    OffsetDateTime::from_unix_timestamp_nanos(start + offset).unwrap_or(info.not_after)
}

/// A certificate's description plus the parts the crate needs internally.
pub(crate) struct Inspected {
    pub info: CertificateInfo,
    /// The subject public key (for EC keys, the SEC1 point).
    pub public_key_point: Vec<u8>,
    /// The certificate's DER.
    pub der: Vec<u8>,
}

/// Like [`inspect`], keeping the public key and DER.
pub(crate) fn inspect_with_key(cert_pem: &str) -> Result<Inspected, PkiError> {
    let first = parse_pem_bundle(cert_pem)?
        .into_iter()
        .next()
        .ok_or(PkiError::PemBlockCount {
            label: super::pem::CERTIFICATE_LABEL,
            expected: "at least one",
            found: 0,
        })?;
    inspect_parsed(first.as_bytes())
}

fn inspect_parsed(der: &[u8]) -> Result<Inspected, PkiError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::BadCertificate {
        index: 0,
        reason: e.to_string(),
    })?;
    let tbs = &cert.tbs_certificate;
    let subject_cn = common_name(&tbs.subject);
    let device_id = subject_cn
        .as_deref()
        .and_then(|cn| cn.strip_prefix(DEVICE_ID_CN_PREFIX))
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let info = CertificateInfo {
        issuer_cn: common_name(&tbs.issuer),
        subject_cn,
        serial_hex: to_hex(&tbs.serial.to_bytes_be()),
        not_before: tbs.validity.not_before.to_datetime(),
        not_after: tbs.validity.not_after.to_datetime(),
        sha256_fingerprint_hex: to_hex(&openssl::sha::sha256(der)),
        is_ca: tbs.is_ca(),
        device_id,
    };
    Ok(Inspected {
        info,
        public_key_point: tbs.subject_pki.subject_public_key.data.to_vec(),
        der: der.to_vec(),
    })
}

/// The first common name of `name`, if it is a string type x509-parser can read.
pub(crate) fn common_name(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|attribute| attribute.as_str().ok())
        .map(str::to_owned)
}

/// Lower-case hex, no separators.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(not_before: i64, not_after: i64) -> CertificateInfo {
        CertificateInfo {
            subject_cn: None,
            issuer_cn: None,
            serial_hex: String::new(),
            not_before: OffsetDateTime::from_unix_timestamp(not_before).unwrap(),
            not_after: OffsetDateTime::from_unix_timestamp(not_after).unwrap(),
            sha256_fingerprint_hex: String::new(),
            is_ca: false,
            device_id: None,
        }
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    #[test]
    fn renewal_is_due_from_exactly_two_thirds_on() {
        let cert = info(1_000, 4_000);
        assert!(!renewal_due(&cert, at(2_999)));
        assert!(renewal_due(&cert, at(3_000)));
        assert!(renewal_due(&cert, at(3_001)));
        assert!(renewal_due(&cert, at(5_000)));
        assert!(!renewal_due(&cert, at(0)));
        assert_eq!(renewal_time(&cert), at(3_000));
    }

    #[test]
    fn renewal_boundary_is_exact_when_the_period_is_not_a_multiple_of_three() {
        // 2/3 of 100 s is 66.67 s: due at 67 s, not at 66 s.
        let cert = info(0, 100);
        assert!(!renewal_due(&cert, at(66)));
        assert!(renewal_due(&cert, at(67)));
        let due = renewal_time(&cert);
        assert!(renewal_due(&cert, due));
        assert!(!renewal_due(&cert, due - time::Duration::nanoseconds(1)));
    }

    #[test]
    fn an_empty_or_inverted_period_is_always_due() {
        assert!(renewal_due(&info(10, 10), at(10)));
        assert!(renewal_due(&info(10, 5), at(0)));
    }

    #[test]
    fn hex_is_lower_case_and_unseparated() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}

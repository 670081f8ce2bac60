//! The one error type of [`crate::pki`]: each variant names what was wrong with the input.

use std::path::PathBuf;

use time::OffsetDateTime;

/// What went wrong while making, reading or checking a certificate, key or CSR.
///
/// Every problem with input (hostile or merely broken) comes back as one of these; nothing in
/// [`crate::pki`] panics on input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The text is not well-formed PEM (RFC 7468): a BEGIN without END, bad base64, and so on.
    #[error("bad PEM: {reason}")]
    BadPem {
        /// What is wrong, with the line number where there is one.
        reason: String,
    },
    /// A PEM block has a label other than the one expected here.
    #[error("expected a PEM block labelled {expected:?}, found {found:?}")]
    WrongPemLabel {
        /// The label (or labels, separated by " or ") accepted here.
        expected: &'static str,
        /// The label found.
        found: String,
    },
    /// The text holds no PEM block at all, or not the number expected.
    #[error("expected {expected} {label:?} PEM block(s), found {found}")]
    PemBlockCount {
        /// The label looked for.
        label: &'static str,
        /// How many were expected ("one", "at least one").
        expected: &'static str,
        /// How many were found.
        found: usize,
    },
    /// A certificate's DER does not parse as X.509.
    #[error("certificate {index} is not valid X.509: {reason}")]
    BadCertificate {
        /// Its position (from 0) in the PEM text it came from.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A private key does not parse (or is encrypted, which is not supported).
    #[error("bad private key: {reason}")]
    BadKey {
        /// What is wrong.
        reason: String,
    },
    /// A certificate signing request does not parse, or lacks what the service needs from it.
    #[error("bad certificate signing request: {reason}")]
    BadCsr {
        /// What is wrong.
        reason: String,
    },
    /// The CSR's self-signature does not verify with the public key it carries.
    #[error("the certificate signing request's signature does not verify")]
    CsrSignature,
    /// A key is not an ECDSA P-256 key.
    #[error("{what} is {found}; only ECDSA P-256 keys are accepted")]
    WrongKeyType {
        /// Whose key ("the CSR's public key", "the private key").
        what: &'static str,
        /// What it is instead.
        found: String,
    },
    /// A device id is empty, too long or has characters not allowed in one.
    #[error("invalid device id {device_id:?}: {reason}")]
    InvalidDeviceId {
        /// The id given.
        device_id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A common name (of a CA, a device or a server) is empty, too long or has control
    /// characters.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// Which name ("CA common name", "device name", "server name").
        what: &'static str,
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The CSR's subject CN is not the one the service assigned to this device.
    #[error("the CSR's subject CN is {found:?}, expected {expected:?}")]
    DeviceIdMismatch {
        /// The CN the service expected (`uuid:<device id>`).
        expected: String,
        /// The CN in the CSR.
        found: String,
    },
    /// A private key is not the one whose public half the certificate carries.
    #[error("the private key does not belong to the certificate {subject:?}")]
    KeyMismatch {
        /// The certificate's subject CN.
        subject: String,
    },
    /// A certificate given as a CA (to issue with, or in a trust bundle) is not marked CA.
    #[error("certificate {subject:?} is not a CA (basicConstraints CA:true missing)")]
    NotCa {
        /// Its subject CN.
        subject: String,
    },
    /// The issuing CA's own validity has ended, so nothing it issues now would verify.
    #[error("CA {ca:?} expired at {not_after}")]
    CaExpired {
        /// The CA's subject CN.
        ca: String,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// A validity period that cannot be encoded (zero, or running past year 9999).
    #[error("invalid validity period: {reason}")]
    InvalidValidity {
        /// What is wrong.
        reason: &'static str,
    },
    /// A serial number that breaks RFC 5280 §4.1.2.2 (empty, zero, leading zero, over 20
    /// octets).
    #[error("invalid serial number: {reason}")]
    InvalidSerial {
        /// What is wrong.
        reason: &'static str,
    },
    /// A certificate in the chain is not valid yet at the time given.
    #[error("certificate {subject:?} is not valid before {not_before}")]
    NotYetValid {
        /// Its subject CN.
        subject: String,
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },
    /// A certificate in the chain has expired at the time given.
    #[error("certificate {subject:?} expired at {not_after}")]
    Expired {
        /// Its subject CN.
        subject: String,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The chain does not lead to any CA in the trusted bundle.
    #[error("certificate {subject:?} is issued by {issuer:?}, which is not a trusted CA")]
    UntrustedIssuer {
        /// The subject CN of the certificate whose issuer was not found.
        subject: String,
        /// The issuer CN it names.
        issuer: String,
    },
    /// A certificate inside the presented chain signs others but is not a CA.
    #[error("certificate {subject:?} issues certificates but is not a CA")]
    IssuerNotCa {
        /// Its subject CN.
        subject: String,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("the signature on certificate {subject:?} does not verify")]
    CertificateSignature {
        /// Its subject CN.
        subject: String,
    },
    /// OpenSSL refused the chain for another reason (key usage, path length, …).
    #[error("certificate {subject:?} rejected: {reason}")]
    ChainRejected {
        /// The subject CN of the certificate at fault.
        subject: String,
        /// OpenSSL's reason.
        reason: String,
    },
    /// rcgen could not build or sign a certificate or CSR.
    #[error("could not build the {what}: {source}")]
    Build {
        /// What was being built.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A cryptographic operation in OpenSSL failed (random bytes, key conversion).
    #[error("OpenSSL: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    /// A file name for [`crate::pki::write_pem_files`] that would leave the directory.
    #[error("invalid file name {name:?}: {reason}")]
    InvalidFileName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

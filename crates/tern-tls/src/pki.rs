//! Certificates for secure channels (RFC 7252 §9.1.3.3): where they come from (PEM or DER, in a
//! file or in memory), how the peer's are checked, and what the peer proved (subject, SANs).
//! Everything is loaded and checked when a context is built, before any traffic.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::x509::{X509VerifyResult, X509};

/// Where a certificate (chain) or key comes from.
#[derive(Clone)]
pub enum Source {
    /// A PEM or DER file (the format is detected).
    File(PathBuf),
    /// PEM text in memory.
    Pem(Vec<u8>),
    /// DER bytes in memory.
    Der(Vec<u8>),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "File({})", p.display()),
            Source::Pem(_) => f.write_str("Pem(..)"),
            Source::Der(_) => f.write_str("Der(..)"),
        }
    }
}

/// Why certificate settings cannot be used; each names the item.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which item.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a certificate or key in PEM or DER.
    #[error("{what} is not a valid PEM or DER {kind}")]
    Parse {
        /// Which item.
        what: &'static str,
        /// Certificate or key.
        kind: &'static str,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// A certificate without a key, or a key without a certificate.
    #[error("a certificate needs its private key, and a key its certificate")]
    Incomplete,
}

fn bytes_of(source: &Source, what: &'static str) -> Result<Vec<u8>, PkiError> {
    match source {
        Source::File(path) => std::fs::read(path).map_err(|e| PkiError::Read {
            what,
            path: path.display().to_string(),
            source: e,
        }),
        Source::Pem(b) | Source::Der(b) => Ok(b.clone()),
    }
}

fn looks_pem(bytes: &[u8]) -> bool {
    bytes.windows(10).any(|w| w == b"-----BEGIN")
}

/// Loads one or more certificates (a chain in PEM, or one in DER).
pub fn load_certificates(source: &Source, what: &'static str) -> Result<Vec<X509>, PkiError> {
    let bytes = bytes_of(source, what)?;
    let parse = PkiError::Parse {
        what,
        kind: "certificate",
    };
    let certs = if looks_pem(&bytes) {
        X509::stack_from_pem(&bytes).map_err(|_| parse)?
    } else {
        vec![X509::from_der(&bytes).map_err(|_| parse)?]
    };
    if certs.is_empty() {
        return Err(PkiError::Parse {
            what,
            kind: "certificate",
        });
    }
    Ok(certs)
}

/// Loads a private key (PEM or DER).
pub fn load_key(source: &Source, what: &'static str) -> Result<PKey<Private>, PkiError> {
    let bytes = zeroize::Zeroizing::new(bytes_of(source, what)?);
    let parse = || PkiError::Parse {
        what,
        kind: "private key",
    };
    if looks_pem(&bytes) {
        PKey::private_key_from_pem(&bytes).map_err(|_| parse())
    } else {
        PKey::private_key_from_der(&bytes).map_err(|_| parse())
    }
}

/// What a CN/SAN validation callback is told about one certificate of the peer's chain.
#[derive(Debug, Clone)]
pub struct CertificateCheck {
    /// The subject common name, if any.
    pub common_name: Option<String>,
    /// DNS and IP subject alternative names.
    pub sans: Vec<String>,
    /// The certificate, DER-encoded.
    pub der: Vec<u8>,
    /// Depth in the chain (0 = the peer's own certificate).
    pub depth: u32,
    /// Whether OpenSSL's chain validation accepted it (after the allow-* settings).
    pub validated: bool,
}

/// Decides whether to accept a peer certificate; called for each one in the chain.
pub type ValidateFn = Arc<dyn Fn(&CertificateCheck) -> bool + Send + Sync>;

/// Certificate settings, in the manner of libcoap's `coap_dtls_pki_t`.
#[derive(Clone)]
pub struct PkiSettings {
    /// Our certificate (chain); a client that only verifies the server needs none.
    pub certificate: Option<Source>,
    /// Our private key (with `certificate`).
    pub private_key: Option<Source>,
    /// Trust anchors for the peer's chain.
    pub ca: Option<Source>,
    /// Check the peer's certificate (client: the server's; server: ask for the client's).
    pub verify_peer: bool,
    /// Server: fail the handshake when the client sends no certificate.
    pub require_peer_certificate: bool,
    /// Accept a self-signed peer certificate.
    pub allow_self_signed: bool,
    /// Accept an expired (or not yet valid) peer certificate.
    pub allow_expired: bool,
    /// Longest chain accepted.
    pub chain_depth: u32,
    /// Client: the name or address the server's certificate must carry (CN or SAN).
    pub expected_name: Option<String>,
    /// Client: SNI sent in the ClientHello.
    pub sni: Option<String>,
    /// Server: other certificates to present, chosen by the SNI the client sends: (server
    /// name, certificate, key). Names match case-insensitively; a client that sends no SNI,
    /// or one not listed, gets `certificate`.
    pub by_server_name: Vec<(String, Source, Source)>,
    /// Extra per-certificate check (CN/SAN validation).
    pub validate: Option<ValidateFn>,
}

impl fmt::Debug for PkiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PkiSettings")
            .field("certificate", &self.certificate)
            .field("private_key", &"<redacted>")
            .field("ca", &self.ca)
            .field("verify_peer", &self.verify_peer)
            .field("require_peer_certificate", &self.require_peer_certificate)
            .finish_non_exhaustive()
    }
}

impl PkiSettings {
    /// Our certificate and key; the peer is verified against `ca` when one is given.
    pub fn new(certificate: Source, private_key: Source, ca: Option<Source>) -> Self {
        PkiSettings {
            certificate: Some(certificate),
            private_key: Some(private_key),
            ..Self::verify_only(ca)
        }
    }

    /// No certificate of our own (a client): only the peer is verified, against `ca`.
    pub fn verify_only(ca: Option<Source>) -> Self {
        let verify = ca.is_some();
        PkiSettings {
            certificate: None,
            private_key: None,
            ca,
            verify_peer: verify,
            require_peer_certificate: false,
            allow_self_signed: false,
            allow_expired: false,
            chain_depth: 4,
            expected_name: None,
            sni: None,
            by_server_name: Vec::new(),
            validate: None,
        }
    }
}

/// The common name and SANs of a certificate.
pub fn names(cert: &openssl::x509::X509Ref) -> (Option<String>, Vec<String>) {
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok());
    let mut sans = Vec::new();
    if let Some(alt) = cert.subject_alt_names() {
        for name in alt.iter() {
            if let Some(dns) = name.dnsname() {
                sans.push(dns.to_string());
            } else if let Some(ip) = name.ipaddress() {
                let text = match ip.len() {
                    4 => std::net::IpAddr::from(<[u8; 4]>::try_from(ip).unwrap_or_default())
                        .to_string(),
                    16 => std::net::IpAddr::from(<[u8; 16]>::try_from(ip).unwrap_or_default())
                        .to_string(),
                    _ => continue,
                };
                sans.push(text);
            }
        }
    }
    (cn, sans)
}

/// Whether a verification error is one the allow-* settings may excuse.
pub fn excusable(error: X509VerifyResult, settings: &PkiSettings) -> bool {
    use openssl_sys as ffi;
    let code = error.as_raw();
    let expired =
        code == ffi::X509_V_ERR_CERT_HAS_EXPIRED || code == ffi::X509_V_ERR_CERT_NOT_YET_VALID;
    let self_signed = code == ffi::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        || code == ffi::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN;
    (expired && settings.allow_expired) || (self_signed && settings.allow_self_signed)
}

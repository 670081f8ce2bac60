//! Chain verification (RFC 5280 §6) by OpenSSL's verifier, the one that checks peers in the
//! TLS handshake, so that what this accepts and what a connection accepts agree.

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509StoreContextRef, X509};
use time::OffsetDateTime;

use super::inspect::{common_name, inspect_der};
use super::{parse_pem_bundle, PkiError};

/// Checks that the first certificate of `leaf_pem` chains to a CA in `ca_bundle_pem`.
///
/// Certificates after the first in `leaf_pem` are untrusted intermediates, as a TLS peer would
/// send them. Every certificate in the bundle is a trust anchor (it need not be self-signed)
/// and must be marked CA; a bundle entry that is not is an error ([`PkiError::NotCa`]) rather
/// than being skipped, since it means the bundle is not what its owner thinks.
///
/// OpenSSL checks each signature, that each issuer is a CA allowed to sign certificates, and,
/// when `check_validity` is true, that every certificate in the chain is valid at `now`. The
/// provisioning service's "time" step passes false: a device without a clock cannot yet tell
/// whether it is.
///
/// The leaf's purpose (extendedKeyUsage) is not checked here; the TLS layer does that.
/// To check many certificates against one bundle, parse it once into [`TrustAnchors`].
pub fn verify_chain(
    leaf_pem: &str,
    ca_bundle_pem: &str,
    now: OffsetDateTime,
    check_validity: bool,
) -> Result<(), PkiError> {
    let presented = parse_pem_bundle(leaf_pem)?;
    let anchors = TrustAnchors::from_pem(ca_bundle_pem)?;
    let mut certificates = presented.iter();
    let leaf = match certificates.next() {
        Some(leaf) => X509::from_der(leaf.as_bytes())?,
        None => {
            return Err(PkiError::PemBlockCount {
                label: super::pem::CERTIFICATE_LABEL,
                expected: "at least one",
                found: 0,
            })
        }
    };
    let intermediates = certificates
        .map(|c| X509::from_der(c.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    anchors.verify(&leaf, &intermediates, now, check_validity)
}

/// A CA bundle parsed once, as [`verify_chain`] reads it, for checking many certificates:
/// parsing certificates is most of a check's cost in OpenSSL 3.
#[derive(Clone)]
pub struct TrustAnchors {
    anchors: Vec<X509>,
    /// When every anchor is valid: the latest start and the earliest end of their periods.
    valid_from: OffsetDateTime,
    valid_until: OffsetDateTime,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

impl TrustAnchors {
    /// Parses `ca_bundle_pem`; every certificate in it must be marked CA.
    pub fn from_pem(ca_bundle_pem: &str) -> Result<Self, PkiError> {
        let mut anchors = Vec::new();
        let mut period: Option<(OffsetDateTime, OffsetDateTime)> = None;
        for anchor in parse_pem_bundle(ca_bundle_pem)? {
            let info = inspect_der(anchor.as_bytes())?;
            if !info.is_ca {
                return Err(PkiError::NotCa {
                    subject: info.subject_cn.unwrap_or_default(),
                });
            }
            period = Some(match period {
                None => (info.not_before, info.not_after),
                Some((from, until)) => (from.max(info.not_before), until.min(info.not_after)),
            });
            anchors.push(X509::from_der(anchor.as_bytes())?);
        }
        // No anchor: a period nothing falls in (and nothing chains anyway).
        let (valid_from, valid_until) = period.unwrap_or((
            OffsetDateTime::UNIX_EPOCH + time::Duration::SECOND,
            OffsetDateTime::UNIX_EPOCH,
        ));
        Ok(TrustAnchors {
            anchors,
            valid_from,
            valid_until,
        })
    }

    /// When every anchor of the bundle is valid (both ends inclusive): the latest start and
    /// the earliest end of their validity periods (empty, `from` after `until`, when the
    /// periods do not overlap or the bundle is empty).
    pub fn validity(&self) -> (OffsetDateTime, OffsetDateTime) {
        (self.valid_from, self.valid_until)
    }

    /// Checks that `leaf` (DER) chains to one of the anchors, as [`verify_chain`] does.
    pub fn verify_der(
        &self,
        leaf_der: &[u8],
        now: OffsetDateTime,
        check_validity: bool,
    ) -> Result<(), PkiError> {
        self.verify(&X509::from_der(leaf_der)?, &[], now, check_validity)
    }

    /// Checks that `leaf`, with untrusted `intermediates`, chains to one of the anchors.
    pub fn verify(
        &self,
        leaf: &X509,
        intermediates: &[X509],
        now: OffsetDateTime,
        check_validity: bool,
    ) -> Result<(), PkiError> {
        let mut store = X509StoreBuilder::new()?;
        for anchor in &self.anchors {
            store.add_cert(anchor.clone())?;
        }
        let mut param = X509VerifyParam::new()?;
        // Every bundle entry is an anchor, even an intermediate CA (an enrollment group may
        // name the manufacturer's issuing CA rather than its root).
        let mut flags = X509VerifyFlags::PARTIAL_CHAIN;
        if check_validity {
            #[allow(
                clippy::useless_conversion,
                reason = "time_t is i64 on most targets but 32 bits on some"
            )]
            let seconds =
                now.unix_timestamp()
                    .try_into()
                    .map_err(|_| PkiError::InvalidValidity {
                        reason: "the verification time does not fit the platform's time_t",
                    })?;
            param.set_time(seconds);
        } else {
            flags |= X509VerifyFlags::NO_CHECK_TIME;
        }
        param.set_flags(flags)?;
        store.set_param(&param)?;
        let store = store.build();

        let mut chain = Stack::new()?;
        for certificate in intermediates {
            chain.push(certificate.clone())?;
        }
        let mut context = openssl::x509::X509StoreContext::new()?;
        context.init(&store, leaf, &chain, |context| {
            Ok(if context.verify_cert()? {
                Ok(())
            } else {
                Err(verification_error(context))
            })
        })?
    }
}

/// Translates OpenSSL's verification failure into the error that names it.
fn verification_error(context: &X509StoreContextRef) -> PkiError {
    let code = context.error().as_raw();
    let current = context.current_cert().and_then(|cert| cert.to_der().ok());
    let parsed = current.as_deref().and_then(|der| {
        x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, cert)| cert)
    });
    let subject = parsed
        .as_ref()
        .and_then(|cert| common_name(cert.subject()))
        .unwrap_or_default();
    let issuer = parsed
        .as_ref()
        .and_then(|cert| common_name(cert.issuer()))
        .unwrap_or_default();
    let info = current.as_deref().and_then(|der| inspect_der(der).ok());
    tracing::debug!(
        code,
        subject,
        issuer,
        reason = context.error().error_string(),
        "chain refused"
    );

    match code {
        openssl_sys::X509_V_ERR_CERT_NOT_YET_VALID => match info {
            Some(info) => PkiError::NotYetValid {
                subject,
                not_before: info.not_before,
            },
            None => rejected(context, subject),
        },
        openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED => match info {
            Some(info) => PkiError::Expired {
                subject,
                not_after: info.not_after,
            },
            None => rejected(context, subject),
        },
        openssl_sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | openssl_sys::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | openssl_sys::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
        | openssl_sys::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        | openssl_sys::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN => {
            PkiError::UntrustedIssuer { subject, issuer }
        }
        openssl_sys::X509_V_ERR_INVALID_CA => PkiError::IssuerNotCa { subject },
        openssl_sys::X509_V_ERR_CERT_SIGNATURE_FAILURE => {
            PkiError::CertificateSignature { subject }
        }
        _ => rejected(context, subject),
    }
}

fn rejected(context: &X509StoreContextRef, subject: String) -> PkiError {
    PkiError::ChainRejected {
        subject,
        reason: context.error().error_string().to_owned(),
    }
}

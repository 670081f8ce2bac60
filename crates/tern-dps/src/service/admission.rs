//! An enrollment group's manufacturer CA, with the verdicts on the certificates it was asked
//! about remembered: a device presents the same manufacturer certificate in two handshakes
//! and four requests, and in OpenSSL 3 parsing and verifying it costs more than the rest of
//! the service's work on the device together.
//!
//! What is remembered does not depend on time: whether the certificate chains to the CA, and
//! the period in which the certificate and every anchor of the bundle are valid. A check at a
//! time inside that period is answered from memory; outside it, OpenSSL verifies again (and
//! names the reason it fails).

use std::collections::HashMap;
use std::sync::Mutex;

use openssl::x509::X509;
use time::OffsetDateTime;

use crate::pki::{inspect_der, parse_pem_bundle, PkiError, TrustAnchors};

/// Certificates remembered per CA; the memory is emptied when full (each entry holds a
/// certificate's DER, under a kilobyte).
const MAX_VERDICTS: usize = 4096;

/// Why a certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It does not chain to the CA (or does not parse).
    DoesNotChain,
    /// It chains, but it or the CA is not valid at the time asked about; OpenSSL's reason.
    NotValidNow(String),
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Chains; the certificate and every anchor are valid from `from` to `until` (Unix
    /// seconds, inclusive).
    Chains {
        from: i64,
        until: i64,
    },
    DoesNotChain,
}

/// A group's manufacturer CA bundle, parsed, and what it said about certificates so far.
pub(super) struct GroupCa {
    /// The bundle as the store holds it.
    pub(super) pem: String,
    anchors: TrustAnchors,
    /// When every anchor of the bundle is valid (Unix seconds, inclusive).
    anchors_from: i64,
    anchors_until: i64,
    verdicts: Mutex<HashMap<Vec<u8>, Verdict>>,
}

impl std::fmt::Debug for GroupCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCa")
            .field("anchors", &self.anchors)
            .finish_non_exhaustive()
    }
}

impl GroupCa {
    /// Parses `pem`; every certificate in it must be a CA.
    pub(super) fn from_pem(pem: String) -> Result<Self, PkiError> {
        let anchors = TrustAnchors::from_pem(&pem)?;
        let (mut anchors_from, mut anchors_until) = (i64::MIN, i64::MAX);
        for anchor in parse_pem_bundle(&pem)? {
            let info = inspect_der(anchor.as_bytes())?;
            anchors_from = anchors_from.max(info.not_before.unix_timestamp());
            anchors_until = anchors_until.min(info.not_after.unix_timestamp());
        }
        Ok(GroupCa {
            pem,
            anchors,
            anchors_from,
            anchors_until,
            verdicts: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the certificate `leaf_der` chains to this CA directly (no intermediates), and,
    /// with `check_validity`, whether it and the CA are valid at `now`.
    pub(super) fn check(
        &self,
        leaf_der: &[u8],
        now: OffsetDateTime,
        check_validity: bool,
    ) -> Result<(), Refusal> {
        let remembered = self.lock().get(leaf_der).copied();
        let verdict = match remembered {
            Some(verdict) => verdict,
            None => {
                let verdict = self.verdict(leaf_der, now);
                let mut verdicts = self.lock();
                if verdicts.len() >= MAX_VERDICTS {
                    verdicts.clear();
                }
                verdicts.insert(leaf_der.to_vec(), verdict);
                verdict
            }
        };
        match verdict {
            Verdict::DoesNotChain => Err(Refusal::DoesNotChain),
            Verdict::Chains { .. } if !check_validity => Ok(()),
            Verdict::Chains { from, until } if (from..=until).contains(&now.unix_timestamp()) => {
                Ok(())
            }
            Verdict::Chains { .. } => match self.anchors.verify_der(leaf_der, now, true) {
                Ok(()) => Ok(()),
                Err(error) => Err(Refusal::NotValidNow(error.to_string())),
            },
        }
    }

    /// Verifies `leaf_der` with OpenSSL, time not checked, and finds its validity period.
    fn verdict(&self, leaf_der: &[u8], now: OffsetDateTime) -> Verdict {
        let (Ok(leaf), Ok(info)) = (X509::from_der(leaf_der), inspect_der(leaf_der)) else {
            return Verdict::DoesNotChain;
        };
        match self.anchors.verify(&leaf, &[], now, false) {
            Ok(()) => Verdict::Chains {
                from: self.anchors_from.max(info.not_before.unix_timestamp()),
                until: self.anchors_until.min(info.not_after.unix_timestamp()),
            },
            Err(_) => Verdict::DoesNotChain,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Verdict>> {
        match self.verdicts.lock() {
            Ok(verdicts) => verdicts,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::{create_ca, issue_manufacturer_certificate};

    const DAY: Duration = Duration::from_secs(86_400);

    fn der(pem: &str) -> Vec<u8> {
        parse_pem_bundle(pem).unwrap().remove(0).into_bytes()
    }

    #[test]
    fn remembered_verdicts_agree_with_openssl_at_every_time() {
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let maker = create_ca("Maker", DAY * 100, start).unwrap();
        let other = create_ca("Other", DAY * 100, start).unwrap();
        let ca = GroupCa::from_pem(maker.cert_pem.clone()).unwrap();
        let leaf = issue_manufacturer_certificate(&maker, "dev", None, DAY * 10, start).unwrap();
        let stranger =
            issue_manufacturer_certificate(&other, "dev", None, DAY * 10, start).unwrap();
        let anchors = TrustAnchors::from_pem(&maker.cert_pem).unwrap();
        // Before, inside and after the leaf's period, and after the CA's; each asked twice
        // (the second from memory) and compared with OpenSSL's own verdict.
        for offset in [-86_400 * 2, 0, 86_400 * 5, 86_400 * 11, 86_400 * 200] {
            let at = start + time::Duration::seconds(offset);
            for check_validity in [false, true] {
                let openssl = anchors.verify_der(&der(&leaf.cert_pem), at, check_validity);
                for _ in 0..2 {
                    let ours = ca.check(&der(&leaf.cert_pem), at, check_validity);
                    assert_eq!(
                        ours.is_ok(),
                        openssl.is_ok(),
                        "at {offset} s, validity {check_validity}: {ours:?} / {openssl:?}"
                    );
                    if let Err(Refusal::NotValidNow(reason)) = &ours {
                        assert!(!reason.is_empty());
                    }
                }
                assert_eq!(
                    ca.check(&der(&stranger.cert_pem), at, check_validity),
                    Err(Refusal::DoesNotChain)
                );
            }
        }
        assert_eq!(
            ca.check(b"not a certificate", start, false),
            Err(Refusal::DoesNotChain)
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let now = OffsetDateTime::now_utc();
        let maker = create_ca("Maker", DAY, now).unwrap();
        let ca = GroupCa::from_pem(maker.cert_pem.clone()).unwrap();
        for n in 0..MAX_VERDICTS + 10 {
            let _ = ca.check(&n.to_be_bytes(), now, false);
        }
        assert!(ca.lock().len() <= MAX_VERDICTS);
    }
}

//! An enrollment group's manufacturer CA, with the certificates it admitted remembered: a
//! device presents the same manufacturer certificate in two handshakes and four requests, and
//! in OpenSSL 3 parsing and verifying it costs more than the rest of the service's work on the
//! device together.
//!
//! What is remembered does not depend on time: that the certificate chains to the CA, and the
//! period in which the certificate and every anchor of the bundle are valid. A check at a time
//! inside that period is answered from memory; outside it, OpenSSL verifies again (and names
//! the reason it fails). Only certificates that chain are remembered: anyone can present any
//! certificate in a handshake, and each is checked against every group, so remembering
//! refusals would let strangers fill every group's memory.

use std::collections::HashMap;
use std::sync::Mutex;

use openssl::x509::X509;
use time::OffsetDateTime;

use crate::pki::{inspect_der, PkiError, TrustAnchors};

/// Certificates remembered per CA; the memory is emptied when full (each entry holds the DER
/// of a certificate the CA issued, under a kilobyte for a manufacturer certificate).
const MAX_REMEMBERED: usize = 4096;

/// Why a certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// It does not chain to the CA (or does not parse).
    DoesNotChain,
    /// It chains, but it or the CA is not valid at the time asked about; OpenSSL's reason.
    NotValidNow(String),
}

/// A certificate that chains: it and every anchor are valid from `from` to `until` (Unix
/// seconds, inclusive).
#[derive(Debug, Clone, Copy)]
struct Chains {
    from: i64,
    until: i64,
}

/// A group's manufacturer CA bundle, parsed, and the certificates it admitted so far.
pub(super) struct GroupCa {
    /// The bundle as the store holds it.
    pub(super) pem: String,
    anchors: TrustAnchors,
    /// When every anchor of the bundle is valid (Unix seconds, inclusive).
    anchors_from: i64,
    anchors_until: i64,
    chaining: Mutex<HashMap<Vec<u8>, Chains>>,
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
        let (from, until) = anchors.validity();
        let (anchors_from, anchors_until) = (from.unix_timestamp(), until.unix_timestamp());
        Ok(GroupCa {
            pem,
            anchors,
            anchors_from,
            anchors_until,
            chaining: Mutex::new(HashMap::new()),
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
        let chains = match remembered {
            Some(chains) => chains,
            None => {
                let chains = self.chains(leaf_der, now).ok_or(Refusal::DoesNotChain)?;
                self.remember(leaf_der, chains);
                chains
            }
        };
        if !check_validity || (chains.from..=chains.until).contains(&now.unix_timestamp()) {
            return Ok(());
        }
        self.anchors
            .verify_der(leaf_der, now, true)
            .map_err(|error| Refusal::NotValidNow(error.to_string()))
    }

    /// Verifies `leaf_der` with OpenSSL, time not checked, and finds its validity period;
    /// `None` when it does not chain (or does not parse).
    fn chains(&self, leaf_der: &[u8], now: OffsetDateTime) -> Option<Chains> {
        let leaf = X509::from_der(leaf_der).ok()?;
        let info = inspect_der(leaf_der).ok()?;
        self.anchors.verify(&leaf, &[], now, false).ok()?;
        Some(Chains {
            from: self.anchors_from.max(info.not_before.unix_timestamp()),
            until: self.anchors_until.min(info.not_after.unix_timestamp()),
        })
    }

    fn remember(&self, leaf_der: &[u8], chains: Chains) {
        let mut chaining = self.lock();
        if chaining.len() >= MAX_REMEMBERED {
            chaining.clear();
        }
        chaining.insert(leaf_der.to_vec(), chains);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Chains>> {
        match self.chaining.lock() {
            Ok(chaining) => chaining,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::{create_ca, issue_manufacturer_certificate, parse_pem_bundle};

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
    fn refused_certificates_are_not_remembered() {
        let now = OffsetDateTime::now_utc();
        let maker = create_ca("Maker", DAY, now).unwrap();
        let other = create_ca("Other", DAY, now).unwrap();
        let ca = GroupCa::from_pem(maker.cert_pem.clone()).unwrap();
        for n in 0..64u32 {
            assert_eq!(
                ca.check(&n.to_be_bytes(), now, false),
                Err(Refusal::DoesNotChain)
            );
        }
        let stranger = issue_manufacturer_certificate(&other, "dev", None, DAY, now).unwrap();
        assert!(ca.check(&der(&stranger.cert_pem), now, false).is_err());
        assert!(ca.lock().is_empty());
        let own = issue_manufacturer_certificate(&maker, "dev", None, DAY, now).unwrap();
        ca.check(&der(&own.cert_pem), now, true).unwrap();
        assert_eq!(ca.lock().len(), 1);
    }

    #[test]
    fn memory_stays_bounded() {
        let now = OffsetDateTime::now_utc();
        let ca = GroupCa::from_pem(create_ca("Maker", DAY, now).unwrap().cert_pem).unwrap();
        let chains = Chains { from: 0, until: 1 };
        for n in 0..MAX_REMEMBERED * 2 + 10 {
            ca.remember(&n.to_be_bytes(), chains);
            assert!(ca.lock().len() <= MAX_REMEMBERED);
        }
    }
}

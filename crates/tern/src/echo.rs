//! Echo (RFC 9175 §2) on the server: challenges that prove a request fresh, and the addresses
//! that proved they can receive (amplification mitigation, §2.4).
//!
//! Challenges are stateless: an Echo value is the time it was issued (milliseconds since the
//! verifier was made) and a MAC over that time and the peer's address, under a key drawn at
//! random when the router is made. A request that echoes a value this router issued to the
//! same address within the allowed age is fresh, and its address is verified; nothing is stored
//! per challenge, so challenges cost a flood nothing.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes of the issue time in an Echo value.
const TIME_LEN: usize = 8;
/// Bytes of the MAC in an Echo value (64 bits: forging one is a 2^-64 guess per try).
const MAC_LEN: usize = 8;

/// How long an Echo value verifies an address for amplification mitigation.
pub(crate) const ADDRESS_PROOF_AGE: Duration = Duration::from_secs(60);

/// Issues and checks Echo values.
pub(crate) struct EchoVerifier {
    key: [u8; 32],
    base: Instant,
}

impl std::fmt::Debug for EchoVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoVerifier").finish_non_exhaustive()
    }
}

impl EchoVerifier {
    /// A verifier with a fresh random key (the clock's nanoseconds if the system has no
    /// randomness, which only weakens challenges, never lets a request through unchecked).
    pub(crate) fn new() -> Self {
        EchoVerifier {
            key: crate::handling::seed(),
            base: crate::clock::now(),
        }
    }

    fn mac(&self, millis: u64, peer: SocketAddr) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&millis.to_be_bytes());
        match peer {
            SocketAddr::V4(a) => {
                mac.update(&a.ip().octets());
                mac.update(&a.port().to_be_bytes());
            }
            SocketAddr::V6(a) => {
                mac.update(&a.ip().octets());
                mac.update(&a.port().to_be_bytes());
            }
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// A challenge for `peer`, issued now.
    pub(crate) fn challenge(&self, now: Instant, peer: SocketAddr) -> Vec<u8> {
        let millis = now.saturating_duration_since(self.base).as_millis() as u64;
        let mut value = Vec::with_capacity(TIME_LEN + MAC_LEN);
        value.extend_from_slice(&millis.to_be_bytes());
        value.extend_from_slice(&self.mac(millis, peer));
        value
    }

    /// Whether `echo` is a challenge this verifier issued to `peer` at most `max_age` ago.
    pub(crate) fn verify(
        &self,
        now: Instant,
        peer: SocketAddr,
        echo: &[u8],
        max_age: Duration,
    ) -> bool {
        if echo.len() != TIME_LEN + MAC_LEN {
            return false;
        }
        let (time, mac) = echo.split_at(TIME_LEN);
        let mut bytes = [0u8; TIME_LEN];
        bytes.copy_from_slice(time);
        let millis = u64::from_be_bytes(bytes);
        if !bool::from(self.mac(millis, peer).ct_eq(mac)) {
            return false;
        }
        let issued = self.base + Duration::from_millis(millis);
        issued <= now && now.saturating_duration_since(issued) <= max_age
    }
}

/// How many verified addresses a driver remembers; the oldest is forgotten first (it is
/// challenged again on its next large response).
const MAX_VERIFIED: usize = 16_384;

/// The addresses that proved they receive what is sent to them (RFC 9175 §2.4), bounded.
#[derive(Default)]
pub(crate) struct VerifiedAddresses {
    set: HashSet<SocketAddr>,
    order: VecDeque<SocketAddr>,
}

impl VerifiedAddresses {
    pub(crate) fn contains(&self, peer: SocketAddr) -> bool {
        self.set.contains(&peer)
    }

    pub(crate) fn insert(&mut self, peer: SocketAddr) {
        if !self.set.insert(peer) {
            return;
        }
        self.order.push_back(peer);
        while self.order.len() > MAX_VERIFIED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_verify_for_their_address_and_age_only() {
        let v = EchoVerifier::new();
        let now = crate::clock::now();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let echo = v.challenge(now, a);
        assert_eq!(echo.len(), 16);
        assert!(v.verify(now, a, &echo, Duration::from_secs(1)));
        assert!(
            !v.verify(now, b, &echo, Duration::from_secs(1)),
            "another address"
        );
        let later = now + Duration::from_secs(5);
        assert!(
            !v.verify(later, a, &echo, Duration::from_secs(1)),
            "too old"
        );
        assert!(v.verify(later, a, &echo, Duration::from_secs(10)));
        let mut forged = echo.clone();
        forged[0] ^= 1;
        assert!(
            !v.verify(now, a, &forged, Duration::from_secs(3600)),
            "a changed time"
        );
        assert!(
            !v.verify(now, a, &echo[..15], Duration::from_secs(1)),
            "truncated"
        );
        assert!(!v.verify(now, a, &[], Duration::from_secs(1)));
        let other = EchoVerifier::new();
        assert!(
            !other.verify(now, a, &echo, Duration::from_secs(1)),
            "another key"
        );
    }

    #[test]
    fn verified_addresses_are_bounded() {
        let mut set = VerifiedAddresses::default();
        for port in 0..(MAX_VERIFIED as u32 + 10) {
            let port = (port % 65_536) as u16;
            set.insert(SocketAddr::from((
                [10, 0, (port >> 8) as u8, port as u8],
                1,
            )));
        }
        assert!(set.set.len() <= MAX_VERIFIED && set.order.len() <= MAX_VERIFIED);
    }
}

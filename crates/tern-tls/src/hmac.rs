//! HMAC (RFC 2104) over OpenSSL's plain SHA-2 contexts, keyed once.
//!
//! `EVP_DigestSign` fetches the digest from a provider and builds a MAC context on every call;
//! a handshake needs several MACs (the cookie twice, the key expansion), and building them that
//! way cost about a sixth of a PSK handshake's server CPU. Here the keyed inner and outer states
//! are made once and copied per MAC.

use zeroize::Zeroize;

/// The SHA-2 functions the PRF runs on: OpenSSL's plain digest contexts, which cost nothing to
/// make or copy (no provider fetch, unlike `EVP_DigestSign`, with which the key expansion took
/// about a quarter of a PSK handshake's CPU).
pub(crate) trait Digest: Clone {
    /// Input block size.
    const BLOCK: usize;
    fn start() -> Self;
    fn absorb(&mut self, data: &[u8]);
    fn output(self) -> Vec<u8>;
}

impl Digest for openssl::sha::Sha256 {
    const BLOCK: usize = 64;
    fn start() -> Self {
        Self::new()
    }
    fn absorb(&mut self, data: &[u8]) {
        self.update(data);
    }
    fn output(self) -> Vec<u8> {
        self.finish().to_vec()
    }
}

impl Digest for openssl::sha::Sha384 {
    const BLOCK: usize = 128;
    fn start() -> Self {
        Self::new()
    }
    fn absorb(&mut self, data: &[u8]) {
        self.update(data);
    }
    fn output(self) -> Vec<u8> {
        self.finish().to_vec()
    }
}

/// HMAC (RFC 2104) with the keyed inner and outer states made once.
pub(crate) struct Hmac<D: Digest> {
    inner: D,
    outer: D,
}

impl<D: Digest> Hmac<D> {
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut block = [0u8; 128];
        if key.len() > D::BLOCK {
            let mut d = D::start();
            d.absorb(key);
            let mut digest = d.output();
            block[..digest.len()].copy_from_slice(&digest);
            digest.zeroize();
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut pad = [0u8; 128];
        let mut keyed = |byte: u8| {
            for (p, k) in pad.iter_mut().zip(&block).take(D::BLOCK) {
                *p = k ^ byte;
            }
            let mut d = D::start();
            d.absorb(&pad[..D::BLOCK]);
            d
        };
        let (inner, outer) = (keyed(0x36), keyed(0x5c));
        pad.zeroize();
        block.zeroize();
        Hmac { inner, outer }
    }

    pub(crate) fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut inner = self.inner.clone();
        for part in parts {
            inner.absorb(part);
        }
        let mut digest = inner.output();
        let mut outer = self.outer.clone();
        outer.absorb(&digest);
        digest.zeroize();
        outer.output()
    }
}

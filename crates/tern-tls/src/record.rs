//! DTLS record headers (RFC 6347 §4.1), read by us rather than by OpenSSL so that datagrams can
//! be classified (handshake, application data, ClientHello) before any state is allocated, and
//! so that routing by Connection ID (RFC 9146) can come later.
//!
//! Also the record protection of an established session with an AEAD suite (`Protection`):
//! once OpenSSL has finished the handshake, a channel takes the keys (RFC 5246 §6.3 key
//! expansion from the master secret) and protects and checks its records itself, so that the
//! SSL object — about 25 KB resident per session, most of it the handshake buffer DTLS keeps
//! for retransmissions — can be freed.

use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;
use openssl::error::ErrorStack;
use zeroize::Zeroize;

use crate::hmac::{Digest, Hmac};

/// The 13-byte DTLS 1.2 record header.
pub const HEADER_LEN: usize = 13;

/// Record content types (RFC 5246 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// change_cipher_spec (20).
    ChangeCipherSpec,
    /// alert (21).
    Alert,
    /// handshake (22).
    Handshake,
    /// application_data (23).
    ApplicationData,
    /// Anything else.
    Other(u8),
}

impl ContentType {
    fn from_byte(b: u8) -> Self {
        match b {
            20 => Self::ChangeCipherSpec,
            21 => Self::Alert,
            22 => Self::Handshake,
            23 => Self::ApplicationData,
            other => Self::Other(other),
        }
    }
}

/// The fields of one record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Content type.
    pub content_type: ContentType,
    /// Protocol version, e.g. 0xfefd for DTLS 1.2.
    pub version: u16,
    /// Epoch.
    pub epoch: u16,
    /// 48-bit sequence number.
    pub sequence: u64,
    /// Length of the fragment that follows.
    pub length: u16,
}

impl RecordHeader {
    /// Parses the first record header of a datagram; `None` if too short or if the fragment
    /// runs past the datagram.
    pub fn parse(datagram: &[u8]) -> Option<Self> {
        let h = datagram.get(..HEADER_LEN)?;
        let length = u16::from_be_bytes([h[11], h[12]]);
        if datagram.len() < HEADER_LEN + usize::from(length) {
            return None;
        }
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&h[5..11]);
        Some(RecordHeader {
            content_type: ContentType::from_byte(h[0]),
            version: u16::from_be_bytes([h[1], h[2]]),
            epoch: u16::from_be_bytes([h[3], h[4]]),
            sequence: u64::from_be_bytes(seq),
            length,
        })
    }
}

/// Whether a datagram starts with an epoch-0 handshake record holding a ClientHello (type 1):
/// the only thing that may open a new server-side channel.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    match RecordHeader::parse(datagram) {
        Some(h) => {
            h.content_type == ContentType::Handshake
                && h.epoch == 0
                // The handshake type is the fragment's first byte: an empty fragment has none.
                && h.length > 0
                && datagram.get(HEADER_LEN) == Some(&1)
        }
        None => false,
    }
}

/// Iterates over the records of a datagram: each header with its fragment. Stops at the first
/// record that runs past the end.
pub fn records(datagram: &[u8]) -> impl Iterator<Item = (RecordHeader, &[u8])> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let h = RecordHeader::parse(rest)?;
        let end = HEADER_LEN + usize::from(h.length);
        let record = &rest[..end];
        rest = &rest[end..];
        Some((h, record))
    })
}

/// DTLS 1.2's version on the wire.
pub const DTLS1_2: u16 = 0xfefd;

/// Largest plaintext in one record (2^14, RFC 5246 §6.2.1).
pub const MAX_PLAINTEXT: usize = 16_384;

/// The fixed part of the nonce (the "salt" from the key block) and the explicit part sent in
/// each record (RFC 5288 §3, RFC 6655 §3).
const SALT_LEN: usize = 4;
const EXPLICIT_NONCE_LEN: usize = 8;

/// An AEAD cipher suite whose records we can protect ourselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Aead {
    key_len: usize,
    tag_len: usize,
    gcm: bool,
    /// The PRF hash: SHA-384 for the `_SHA384` suites, SHA-256 otherwise.
    sha384: bool,
}

impl Aead {
    /// The AEAD of a suite by its RFC name (e.g. `TLS_PSK_WITH_AES_128_CCM_8`): AES-CCM(-8)
    /// and AES-GCM with a 4-byte salt and an 8-byte explicit nonce. Other suites (CBC,
    /// ChaCha20-Poly1305) are not handled here: such a channel keeps OpenSSL's record layer.
    pub(crate) fn for_suite(standard_name: &str) -> Option<Aead> {
        let (_, cipher) = standard_name.split_once("_WITH_")?;
        let (key_len, tag_len, gcm, sha384) = match cipher {
            "AES_128_CCM_8" => (16, 8, false, false),
            "AES_256_CCM_8" => (32, 8, false, false),
            "AES_128_CCM" => (16, 16, false, false),
            "AES_256_CCM" => (32, 16, false, false),
            "AES_128_GCM_SHA256" => (16, 16, true, false),
            "AES_256_GCM_SHA384" => (32, 16, true, true),
            _ => return None,
        };
        Some(Aead {
            key_len,
            tag_len,
            gcm,
            sha384,
        })
    }

    fn cipher(&self) -> &'static CipherRef {
        match (self.gcm, self.key_len) {
            (false, 16) => Cipher::aes_128_ccm(),
            (false, _) => Cipher::aes_256_ccm(),
            (true, 16) => Cipher::aes_128_gcm(),
            (true, _) => Cipher::aes_256_gcm(),
        }
    }

    /// Bytes a record adds to its plaintext after the header.
    fn overhead(&self) -> usize {
        EXPLICIT_NONCE_LEN + self.tag_len
    }
}

/// One direction's key and salt.
struct DirectionKeys {
    key: [u8; 32],
    salt: [u8; SALT_LEN],
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.key.zeroize();
        self.salt.zeroize();
    }
}

/// TLS 1.2's PRF (RFC 5246 §5): P_hash(secret, label + seed), `out.len()` bytes.
fn prf<D: Digest>(secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    let hmac = Hmac::<D>::new(secret);
    let mut a = hmac.mac(&[label, seed]); // A(1)
    let mut filled = 0;
    while filled < out.len() {
        let mut block = hmac.mac(&[&a, label, seed]);
        let n = block.len().min(out.len() - filled);
        out[filled..filled + n].copy_from_slice(&block[..n]);
        block.zeroize();
        filled += n;
        if filled < out.len() {
            let next = hmac.mac(&[&a]);
            a.zeroize();
            a = next;
        }
    }
    a.zeroize();
}

/// The anti-replay window of RFC 6347 §4.1.2.6: the highest sequence number accepted and a
/// bitmap of the 64 below it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayWindow {
    /// Highest accepted sequence number plus one (0: none yet).
    top: u64,
    /// Bit i: `top - 1 - i` was accepted.
    bits: u64,
}

impl ReplayWindow {
    /// Whether `seq` may be new (not seen, and not too old to tell).
    pub(crate) fn is_fresh(&self, seq: u64) -> bool {
        if seq >= self.top {
            return true;
        }
        let age = self.top - 1 - seq;
        age < 64 && self.bits & (1 << age) == 0
    }

    /// Records `seq` as accepted (after it authenticated).
    pub(crate) fn mark(&mut self, seq: u64) {
        if seq >= self.top {
            let shift = seq + 1 - self.top;
            self.bits = if shift >= 64 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = seq + 1;
        } else {
            let age = self.top - 1 - seq;
            if age < 64 {
                self.bits |= 1 << age;
            }
        }
    }
}

/// The record protection of one established DTLS 1.2 session with an AEAD suite: the keys of
/// both directions, the write sequence number and the replay window of the current epoch.
pub(crate) struct Protection {
    /// Unique per process: which cached cipher contexts hold this session's keys.
    id: u64,
    aead: Aead,
    epoch: u16,
    write: DirectionKeys,
    read: DirectionKeys,
    /// Next sequence number to write in `epoch`.
    next_write: u64,
    window: ReplayWindow,
}

/// The highest sequence number DTLS 1.2 can carry (48 bits).
const MAX_SEQUENCE: u64 = (1 << 48) - 1;

impl Protection {
    /// The keys of a session from its master secret and the hello randoms (RFC 5246 §6.3):
    /// `epoch` is the current one, `next_write` the next sequence number we write in it.
    pub(crate) fn new(
        aead: Aead,
        is_server: bool,
        master_secret: &[u8],
        client_random: &[u8],
        server_random: &[u8],
        epoch: u16,
        next_write: u64,
    ) -> Result<Self, ErrorStack> {
        let mut seed = Vec::with_capacity(server_random.len() + client_random.len());
        seed.extend_from_slice(server_random);
        seed.extend_from_slice(client_random);
        // client_write_key, server_write_key, client_write_IV, server_write_IV (no MAC keys).
        let mut block = [0u8; 2 * 32 + 2 * SALT_LEN];
        let n = 2 * aead.key_len + 2 * SALT_LEN;
        let label = b"key expansion";
        if aead.sha384 {
            prf::<openssl::sha::Sha384>(master_secret, label, &seed, &mut block[..n]);
        } else {
            prf::<openssl::sha::Sha256>(master_secret, label, &seed, &mut block[..n]);
        }
        let keys = |key_at: usize, salt_at: usize| {
            let mut k = DirectionKeys {
                key: [0; 32],
                salt: [0; SALT_LEN],
            };
            k.key[..aead.key_len].copy_from_slice(&block[key_at..key_at + aead.key_len]);
            k.salt.copy_from_slice(&block[salt_at..salt_at + SALT_LEN]);
            k
        };
        let client = keys(0, 2 * aead.key_len);
        let server = keys(aead.key_len, 2 * aead.key_len + SALT_LEN);
        block.zeroize();
        let (write, read) = if is_server {
            (server, client)
        } else {
            (client, server)
        };
        Ok(Protection {
            id: NEXT_PROTECTION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            aead,
            epoch,
            write,
            read,
            next_write,
            window: ReplayWindow::default(),
        })
    }

    /// The epoch the session's records are in.
    pub(crate) fn epoch(&self) -> u16 {
        self.epoch
    }

    /// One record of `content_type` holding `plaintext` (at most [`MAX_PLAINTEXT`] bytes), or
    /// `None` once the sequence numbers are used up.
    pub(crate) fn seal(&mut self, content_type: u8, plaintext: &[u8]) -> Option<Vec<u8>> {
        if plaintext.len() > MAX_PLAINTEXT || self.next_write > MAX_SEQUENCE {
            return None;
        }
        let seq = self.next_write;
        self.next_write += 1;
        let explicit = (u64::from(self.epoch) << 48 | seq).to_be_bytes();
        let fragment_len = plaintext.len() + self.aead.overhead();
        let mut record = Vec::with_capacity(HEADER_LEN + fragment_len + 16);
        record.push(content_type);
        record.extend_from_slice(&DTLS1_2.to_be_bytes());
        record.extend_from_slice(&explicit);
        record.extend_from_slice(&u16::try_from(fragment_len).ok()?.to_be_bytes());
        record.extend_from_slice(&explicit);
        let aad = additional_data(&explicit, content_type, plaintext.len());
        let nonce = nonce(&self.write.salt, &explicit);
        let start = record.len();
        record.resize(start + plaintext.len() + 16, 0);
        let sealed = seal(
            self.aead,
            self.id,
            &self.write.key[..self.aead.key_len],
            &nonce,
            &aad,
            plaintext,
            &mut record[start..],
        );
        match sealed {
            Ok(()) => {
                record.truncate(HEADER_LEN + fragment_len);
                Some(record)
            }
            Err(_) => None,
        }
    }

    /// Checks and decrypts one record of the current epoch: its content type and plaintext, or
    /// `None` (dropped) if it is from another epoch, a replay, or does not authenticate.
    /// `replay_check` off: only the window is updated (for records OpenSSL already delivered).
    pub(crate) fn open(
        &mut self,
        header: &RecordHeader,
        record: &[u8],
        replay_check: bool,
    ) -> Option<(u8, Vec<u8>)> {
        if header.epoch != self.epoch || header.version != DTLS1_2 {
            return None;
        }
        if replay_check && !self.window.is_fresh(header.sequence) {
            return None;
        }
        let fragment = record.get(HEADER_LEN..)?;
        let ciphertext_len = fragment.len().checked_sub(self.aead.overhead())?;
        if ciphertext_len > MAX_PLAINTEXT + 1024 {
            return None;
        }
        let content_type = record[0];
        let explicit: [u8; 8] = fragment[..EXPLICIT_NONCE_LEN].try_into().ok()?;
        let sequence = (u64::from(header.epoch) << 48 | header.sequence).to_be_bytes();
        let aad = additional_data(&sequence, content_type, ciphertext_len);
        let nonce = nonce(&self.read.salt, &explicit);
        let (ciphertext, tag) = fragment[EXPLICIT_NONCE_LEN..].split_at(ciphertext_len);
        let plaintext = open(
            self.aead,
            self.id,
            &self.read.key[..self.aead.key_len],
            &nonce,
            &aad,
            ciphertext,
            tag,
        )
        .ok()?;
        if plaintext.len() > MAX_PLAINTEXT {
            return None;
        }
        self.window.mark(header.sequence);
        Some((content_type, plaintext))
    }
}

impl Drop for Protection {
    /// The cached contexts holding this session's keys are freed with it (OpenSSL cleanses a
    /// context's key schedule when it is freed), on this thread; elsewhere they age out.
    fn drop(&mut self) {
        let id = self.id;
        let _ = CONTEXTS.try_with(|contexts| {
            if let Ok(mut contexts) = contexts.try_borrow_mut() {
                contexts.retain(|c| c.keyed_for != id);
            }
        });
    }
}

/// The AEAD's additional data (RFC 5246 §6.2.3.3): seq_num (epoch and sequence), type,
/// version, length of the plaintext.
fn additional_data(sequence: &[u8; 8], content_type: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(sequence);
    aad[8] = content_type;
    aad[9..11].copy_from_slice(&DTLS1_2.to_be_bytes());
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

fn nonce(salt: &[u8; SALT_LEN], explicit: &[u8; 8]) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..SALT_LEN].copy_from_slice(salt);
    nonce[SALT_LEN..].copy_from_slice(explicit);
    nonce
}

/// Identifies a `Protection` to the per-thread cipher-context cache.
static NEXT_PROTECTION_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How many keyed cipher contexts a thread keeps: enough for the sessions a client or a
/// lightly loaded server uses in turn, few enough that the scan stays cheap; beyond it the
/// least recently used is re-keyed.
const CACHED_CONTEXTS: usize = 16;

/// A cipher context of the per-thread cache and whose key it holds.
struct CachedContext {
    aead: Aead,
    encrypt: bool,
    /// The `Protection` whose key is set in `ctx`.
    keyed_for: u64,
    ctx: CipherCtx,
}

thread_local! {
    /// Cipher contexts kept per thread, most recently used first, each keyed for one
    /// session's direction: a record of a session that is cached sets only its nonce. Making a
    /// context per record (and fetching the cipher) costs more than the encryption, and
    /// re-keying per record (the AES key schedule and OpenSSL's parameter lookups) was about
    /// a sixth of the record layer's time.
    static CONTEXTS: std::cell::RefCell<Vec<CachedContext>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's context for `aead` in that direction; `f` gets whether the
/// context already holds the key of protection `id` (else it must set `key`).
fn with_context<T>(
    aead: Aead,
    encrypt: bool,
    id: u64,
    f: impl FnOnce(&mut CipherCtx, bool) -> Result<T, ErrorStack>,
) -> Result<T, ErrorStack> {
    CONTEXTS.with(|contexts| {
        let mut contexts = contexts.borrow_mut();
        let hit = contexts
            .iter()
            .position(|c| c.keyed_for == id && c.aead == aead && c.encrypt == encrypt);
        let (mut entry, keyed) = match hit {
            Some(i) => (contexts.remove(i), true),
            None => {
                let reusable = contexts
                    .iter()
                    .rposition(|c| c.aead == aead && c.encrypt == encrypt)
                    .filter(|_| contexts.len() >= CACHED_CONTEXTS);
                let entry = match reusable {
                    Some(i) => contexts.remove(i),
                    None => {
                        if contexts.len() >= CACHED_CONTEXTS {
                            contexts.pop();
                        }
                        let mut ctx = CipherCtx::new()?;
                        if encrypt {
                            ctx.encrypt_init(Some(aead.cipher()), None, None)?;
                        } else {
                            ctx.decrypt_init(Some(aead.cipher()), None, None)?;
                        }
                        ctx.set_iv_length(12)?;
                        if !aead.gcm && encrypt {
                            ctx.set_tag_length(aead.tag_len)?;
                        }
                        CachedContext {
                            aead,
                            encrypt,
                            keyed_for: 0,
                            ctx,
                        }
                    }
                };
                (entry, false)
            }
        };
        let result = f(&mut entry.ctx, keyed);
        // A context left mid-operation is not reused.
        if result.is_ok() {
            entry.keyed_for = id;
            contexts.insert(0, entry);
        }
        result
    })
}

/// Encrypts `plaintext` into `out` (at least `plaintext.len() + 16` bytes): ciphertext, then
/// the tag.
fn seal(
    aead: Aead,
    id: u64,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut [u8],
) -> Result<(), ErrorStack> {
    with_context(aead, true, id, |ctx, keyed| {
        ctx.encrypt_init(None, (!keyed).then_some(key), Some(nonce))?;
        if !aead.gcm {
            ctx.set_data_len(plaintext.len())?;
        }
        ctx.cipher_update(aad, None)?;
        let n = ctx.cipher_update(plaintext, Some(out))?;
        let m = ctx.cipher_final(&mut out[n..])?;
        let end = n + m;
        ctx.tag(&mut out[end..end + aead.tag_len])
    })
}

/// Decrypts and authenticates.
fn open(
    aead: Aead,
    id: u64,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, ErrorStack> {
    with_context(aead, false, id, |ctx, keyed| {
        if !aead.gcm {
            // CCM checks the tag as it decrypts: it is set (with its length) first.
            ctx.set_tag(tag)?;
        }
        ctx.decrypt_init(None, (!keyed).then_some(key), Some(nonce))?;
        if !aead.gcm {
            ctx.set_data_len(ciphertext.len())?;
        }
        ctx.cipher_update(aad, None)?;
        let mut out = vec![0u8; ciphertext.len() + 16];
        let n = ctx.cipher_update(ciphertext, Some(&mut out))?;
        if aead.gcm {
            ctx.set_tag(tag)?;
        }
        let m = ctx.cipher_final(&mut out[n..])?;
        out.truncate(n + m);
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_classifies() {
        // Handshake, DTLS 1.0 version on ClientHello, epoch 0, seq 0, length 2, msg type 1.
        let hello = [22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0];
        let h = RecordHeader::parse(&hello).unwrap();
        assert_eq!(
            (h.content_type, h.version, h.epoch, h.length),
            (ContentType::Handshake, 0xfeff, 0, 2)
        );
        assert!(is_client_hello(&hello));
        let mut app = hello;
        app[0] = 23;
        assert!(!is_client_hello(&app));
        assert!(RecordHeader::parse(&hello[..12]).is_none());
        assert!(
            RecordHeader::parse(&hello[..14]).is_none(),
            "fragment runs past the end"
        );
        let mut seq = hello;
        seq[5..11].copy_from_slice(&[0, 0, 0, 0, 1, 2]);
        assert_eq!(RecordHeader::parse(&seq).unwrap().sequence, 0x102);
    }

    #[test]
    fn replay_window_takes_new_and_reordered_numbers_once() {
        let mut w = ReplayWindow::default();
        assert!(w.is_fresh(0));
        w.mark(0);
        assert!(!w.is_fresh(0));
        w.mark(5);
        assert!(w.is_fresh(3) && w.is_fresh(6) && !w.is_fresh(5));
        w.mark(3);
        assert!(!w.is_fresh(3));
        w.mark(100);
        assert!(!w.is_fresh(36), "too old to tell: dropped");
        assert!(w.is_fresh(37) && !w.is_fresh(100));
        w.mark(1_000);
        assert!(!w.is_fresh(100) && w.is_fresh(999));
    }

    #[test]
    fn records_iterates_and_stops_at_a_truncated_one() {
        let one = [23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7, 0, 1, 9];
        let mut two = one.to_vec();
        two.extend_from_slice(&one);
        two.extend_from_slice(&one[..13]); // header of a third, fragment missing
        let seen: Vec<_> = records(&two).map(|(h, r)| (h.sequence, r.len())).collect();
        assert_eq!(seen, vec![(7, 14), (7, 14)]);
    }

    #[test]
    fn suites_by_name() {
        assert!(Aead::for_suite("TLS_PSK_WITH_AES_128_CCM_8").is_some());
        assert!(Aead::for_suite("TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8").is_some());
        assert!(Aead::for_suite("TLS_PSK_WITH_AES_128_CBC_SHA256").is_none());
        assert!(Aead::for_suite("TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256").is_none());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn prf_matches_openssls_tls1_prf() {
        // `openssl kdf -keylen N -kdfopt digest:SHA256|SHA384 -kdfopt hexsecret:...
        //  -kdfopt seed:"test label" -kdfopt hexseed:... TLS1-PRF`
        let mut out = [0u8; 100];
        prf::<openssl::sha::Sha256>(
            &hex("9bbe436ba940f017b17652849a71db35"),
            b"test label",
            &hex("a0ba9f936cda311827a6f796ffd5198c"),
            &mut out,
        );
        assert_eq!(
            out.to_vec(),
            hex(
                "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a\
                 6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab\
                 4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701\
                 87347b66"
            )
        );
        let mut out = [0u8; 40];
        prf::<openssl::sha::Sha384>(
            &hex("b80b733d6ceefcdc71566ea48e5567df"),
            b"test label",
            &hex("cd665cf6a8447dd6ff8b27555edb7465"),
            &mut out,
        );
        assert_eq!(
            out.to_vec(),
            hex("7b0c18e9ced410ed1804f2cfa34a336a1c14dffb4900bb5fd7942107e81c83cde9ca0faa60be9fe3")
        );
    }

    /// More sessions than the cipher-context cache holds, used in turn on one thread, both
    /// AEAD kinds: every record opens with its own session's keys only, whether its keys were
    /// cached, evicted or re-keyed in between.
    #[test]
    fn interleaved_sessions_keep_their_own_keys() {
        let suites = [
            "TLS_PSK_WITH_AES_128_CCM_8",
            "TLS_PSK_WITH_AES_128_GCM_SHA256",
        ];
        let mut pairs: Vec<(Protection, Protection)> = (0..CACHED_CONTEXTS as u8 + 5)
            .map(|i| {
                let aead = Aead::for_suite(suites[usize::from(i) % 2]).unwrap();
                let master = [i; 48];
                let (cr, sr) = ([i ^ 0x55; 32], [i ^ 0xaa; 32]);
                (
                    Protection::new(aead, false, &master, &cr, &sr, 1, 0).unwrap(),
                    Protection::new(aead, true, &master, &cr, &sr, 1, 0).unwrap(),
                )
            })
            .collect();
        for round in 0..3u8 {
            for i in 0..pairs.len() {
                let text = [round, i as u8, 7];
                let record = pairs[i].0.seal(23, &text).unwrap();
                let header = RecordHeader::parse(&record).unwrap();
                // Another session (same AEAD kind, other keys) must refuse it.
                let other = (i + 2) % pairs.len();
                assert!(pairs[other].1.open(&header, &record, true).is_none());
                let (ty, plain) = pairs[i].1.open(&header, &record, true).unwrap();
                assert_eq!((ty, plain.as_slice()), (23, &text[..]));
                let back = pairs[i].1.seal(23, &text).unwrap();
                let header = RecordHeader::parse(&back).unwrap();
                assert_eq!(pairs[i].0.open(&header, &back, true).unwrap().1, text);
            }
        }
    }
}

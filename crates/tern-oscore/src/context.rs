//! Security contexts (RFC 8613 §3): the common, sender and recipient parts, derived from the
//! Master Secret and Salt exactly as §3.2 says, and the AEAD nonce of §5.2.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::algorithm::Aead;
use crate::cbor::{self, Derived};
use crate::replay::ReplayWindow;

/// The largest Sender or Recipient ID for an algorithm: its nonce length less 6 (§3.3).
pub fn max_id_len(aead: Aead) -> usize {
    aead.nonce_len() - 6
}

/// The largest sequence number: Partial IVs are at most 5 bytes (§6.1), 2^40 - 1.
pub const MAX_SEQUENCE_NUMBER: u64 = (1 << 40) - 1;

/// What a context is made from (§3.2): the input parameters shared by both endpoints.
#[derive(Clone)]
pub struct ContextParams {
    /// Master Secret (at least 16 bytes recommended; any non-empty length accepted).
    pub master_secret: Zeroizing<Vec<u8>>,
    /// Master Salt (empty by default).
    pub master_salt: Vec<u8>,
    /// ID Context, if any.
    pub id_context: Option<Vec<u8>>,
    /// Our Sender ID.
    pub sender_id: Vec<u8>,
    /// The peer's Sender ID, our Recipient ID.
    pub recipient_id: Vec<u8>,
    /// The AEAD algorithm (AES-CCM-16-64-128 by default).
    pub aead: Aead,
    /// Replay window size in messages (32 by default, at most 128).
    pub replay_window: u32,
}

impl std::fmt::Debug for ContextParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Master Secret is never shown.
        f.debug_struct("ContextParams")
            .field("master_salt", &self.master_salt)
            .field("id_context", &self.id_context)
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

impl ContextParams {
    /// Parameters with the defaults of §3.2 for the rest: no salt, no ID Context,
    /// AES-CCM-16-64-128, a 32-message replay window.
    pub fn new(master_secret: &[u8], sender_id: &[u8], recipient_id: &[u8]) -> Self {
        ContextParams {
            master_secret: Zeroizing::new(master_secret.to_vec()),
            master_salt: Vec::new(),
            id_context: None,
            sender_id: sender_id.to_vec(),
            recipient_id: recipient_id.to_vec(),
            aead: Aead::AesCcm16_64_128,
            replay_window: 32,
        }
    }
}

/// Why a context could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// The Master Secret is empty.
    #[error("the master secret is empty")]
    EmptySecret,
    /// A Sender or Recipient ID is longer than the algorithm's nonce allows.
    #[error("{which} ID is {len} bytes; {aead:?} allows at most {max}")]
    IdTooLong {
        /// "sender" or "recipient".
        which: &'static str,
        /// Its length.
        len: usize,
        /// The algorithm's limit.
        max: usize,
        /// The algorithm.
        aead: Aead,
    },
    /// Sender and Recipient ID are equal (they must differ within a context, §3.3).
    #[error("sender and recipient ID are the same")]
    SameIds,
    /// The replay window is 0 or larger than 128.
    #[error("replay window of {0} messages; it must be between 1 and 128")]
    ReplayWindow(u32),
}

/// A key that is zeroized on drop and never printed.
#[derive(Clone)]
pub struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// The key bytes (for the AEAD only).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// A security context: common, sender and recipient parts.
#[derive(Debug)]
pub struct SecurityContext {
    aead: Aead,
    id_context: Option<Vec<u8>>,
    common_iv: Vec<u8>,
    sender_id: Vec<u8>,
    sender_key: Key,
    /// The next sequence number to use.
    sender_sequence: u64,
    /// With persistence on (Appendix B.1.1): numbers below this are durably reserved, and
    /// none at or above it is used until a higher mark is stored.
    persisted_limit: Option<u64>,
    /// How many numbers each stored mark reserves ahead.
    persist_step: u64,
    recipient_id: Vec<u8>,
    recipient_key: Key,
    replay: ReplayWindow,
    /// False after the replay state was lost (Appendix B.1.2): requests are then not trusted
    /// until one proves fresh by echoing `echo_challenge`.
    replay_state_known: bool,
    /// The Echo value last sent while the replay state is unknown.
    echo_challenge: Option<Vec<u8>>,
    /// What the context was derived from, kept so that it can be derived again with another
    /// ID Context (Appendix B.2); the Master Secret is zeroized on drop.
    master_secret: Key,
    master_salt: Vec<u8>,
    replay_window_size: u32,
    /// Whether this context came from [`SecurityContext::rederive`] rather than from its
    /// configured parameters (storage then records its ID Context too).
    rederived: bool,
    /// The kid context requests carry instead of the ID Context while a re-derived context
    /// is not yet confirmed by a response (Appendix B.2: the wire form of R2 | R3).
    wire_kid_context: Option<Vec<u8>>,
}

/// HKDF-SHA256 output of `len` bytes for `info` (§3.2.1).
fn derive(params: &ContextParams, id: &[u8], what: Derived, len: usize) -> Zeroizing<Vec<u8>> {
    let hk = Hkdf::<Sha256>::new(Some(&params.master_salt), &params.master_secret);
    let info = cbor::info(id, params.id_context.as_deref(), params.aead, what, len);
    let mut out = Zeroizing::new(vec![0u8; len]);
    // L is at most 32 bytes here, far below HKDF-SHA256's 255 * 32 limit.
    if hk.expand(&info, &mut out).is_err() {
        out.zeroize();
    }
    out
}

impl SecurityContext {
    /// Derives a fresh context (sequence number 0, empty replay window).
    pub fn derive(params: &ContextParams) -> Result<Self, ContextError> {
        if params.master_secret.is_empty() {
            return Err(ContextError::EmptySecret);
        }
        let max = max_id_len(params.aead);
        for (which, id) in [
            ("sender", &params.sender_id),
            ("recipient", &params.recipient_id),
        ] {
            if id.len() > max {
                return Err(ContextError::IdTooLong {
                    which,
                    len: id.len(),
                    max,
                    aead: params.aead,
                });
            }
        }
        if params.sender_id == params.recipient_id {
            return Err(ContextError::SameIds);
        }
        let replay = ReplayWindow::new(params.replay_window)
            .ok_or(ContextError::ReplayWindow(params.replay_window))?;
        let key_len = params.aead.key_len();
        let common_iv = derive(params, &[], Derived::Iv, params.aead.nonce_len());
        Ok(SecurityContext {
            aead: params.aead,
            id_context: params.id_context.clone(),
            common_iv: common_iv.to_vec(),
            sender_id: params.sender_id.clone(),
            sender_key: Key(derive(params, &params.sender_id, Derived::Key, key_len)),
            sender_sequence: 0,
            persisted_limit: None,
            persist_step: 0,
            recipient_id: params.recipient_id.clone(),
            recipient_key: Key(derive(params, &params.recipient_id, Derived::Key, key_len)),
            replay,
            replay_state_known: true,
            echo_challenge: None,
            master_secret: Key(params.master_secret.clone()),
            master_salt: params.master_salt.clone(),
            replay_window_size: params.replay_window,
            rederived: false,
            wire_kid_context: None,
        })
    }

    /// The same context derived again with another ID Context (Appendix B.2): the Master
    /// Secret and Salt, the IDs and the algorithm stay, keys and Common IV change, and the new
    /// context starts afresh (sequence number 0, empty replay window, no persistence set up).
    /// As every key differs, no nonce of the old context can recur under the new one.
    pub fn rederive(&self, id_context: Option<Vec<u8>>) -> Result<SecurityContext, ContextError> {
        let params = ContextParams {
            master_secret: self.master_secret.0.clone(),
            master_salt: self.master_salt.clone(),
            id_context,
            sender_id: self.sender_id.clone(),
            recipient_id: self.recipient_id.clone(),
            aead: self.aead,
            replay_window: self.replay_window_size,
        };
        let mut context = SecurityContext::derive(&params)?;
        context.rederived = true;
        Ok(context)
    }

    /// Whether this context came from [`SecurityContext::rederive`].
    pub fn is_rederived(&self) -> bool {
        self.rederived
    }

    /// The kid context requests carry in place of the ID Context while a re-derivation
    /// awaits its confirming response, if any.
    pub fn wire_kid_context(&self) -> Option<&[u8]> {
        self.wire_kid_context.as_deref()
    }

    /// Sets or clears (once a response confirmed the context) the kid context requests carry
    /// during a re-derivation.
    pub fn set_wire_kid_context(&mut self, value: Option<Vec<u8>>) {
        self.wire_kid_context = value;
    }

    /// The highest stored sequence-number mark, when sequence numbers are persisted.
    pub fn persisted_limit(&self) -> Option<u64> {
        self.persisted_limit
    }

    /// The AEAD algorithm.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// The ID Context, if any.
    pub fn id_context(&self) -> Option<&[u8]> {
        self.id_context.as_deref()
    }

    /// Our Sender ID.
    pub fn sender_id(&self) -> &[u8] {
        &self.sender_id
    }

    /// Our Recipient ID (the peer's Sender ID).
    pub fn recipient_id(&self) -> &[u8] {
        &self.recipient_id
    }

    /// The Common IV.
    pub fn common_iv(&self) -> &[u8] {
        &self.common_iv
    }

    /// The Sender Key.
    pub fn sender_key(&self) -> &Key {
        &self.sender_key
    }

    /// The Recipient Key.
    pub fn recipient_key(&self) -> &Key {
        &self.recipient_key
    }

    /// The next sequence number the sender will use.
    pub fn sender_sequence(&self) -> u64 {
        self.sender_sequence
    }

    /// Continues sending from `next` (a value restored from persistent state, §B.1.1); never
    /// moves backwards.
    pub fn resume_sender_sequence(&mut self, next: u64) {
        self.sender_sequence = self.sender_sequence.max(next);
    }

    /// Turns on persistence of sequence numbers (Appendix B.1.1): from now on a number is only
    /// used once a mark above it has been stored. `stored_mark` is the mark read back from
    /// storage after a restart (`None` for a new context); sending continues from it, so a
    /// number used before a crash is never used again. Each new mark reserves `step` numbers.
    pub fn persist_sequence_numbers(&mut self, stored_mark: Option<u64>, step: u64) {
        let start = stored_mark.unwrap_or(0).max(self.sender_sequence);
        self.sender_sequence = start;
        self.persisted_limit = Some(start);
        self.persist_step = step.max(1);
    }

    /// The mark to store before the next message can be protected, when one is due: the
    /// caller writes it durably, then reports it with [`SecurityContext::mark_stored`].
    pub fn mark_to_store(&self) -> Option<u64> {
        let limit = self.persisted_limit?;
        (self.sender_sequence >= limit).then(|| {
            self.sender_sequence
                .saturating_add(self.persist_step)
                .min(MAX_SEQUENCE_NUMBER + 1)
        })
    }

    /// Records that `mark` is durably stored: numbers below it may be used.
    pub fn mark_stored(&mut self, mark: u64) {
        if let Some(limit) = &mut self.persisted_limit {
            *limit = (*limit).max(mark);
        }
    }

    /// Takes the next sequence number: `Err(Some(mark))` when `mark` must be stored first,
    /// `Err(None)` when the numbers are used up (the context must be re-derived, §7.2.1).
    pub(crate) fn take_sequence(&mut self) -> Result<u64, Option<u64>> {
        let n = self.sender_sequence;
        if n > MAX_SEQUENCE_NUMBER {
            return Err(None);
        }
        if let Some(mark) = self.mark_to_store() {
            return Err(Some(mark));
        }
        self.sender_sequence = n + 1;
        Ok(n)
    }

    /// The recipient's replay window.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    pub(crate) fn replay_window_mut(&mut self) -> &mut ReplayWindow {
        &mut self.replay
    }

    /// Declares the replay state lost (a server restarted without it, Appendix B.1.2): until
    /// a request echoes a challenge, requests decrypt but are refused with
    /// [`OscoreError::FreshnessUnknown`](crate::OscoreError::FreshnessUnknown).
    pub fn forget_replay_state(&mut self) {
        self.replay.reset();
        self.replay_state_known = false;
        self.echo_challenge = None;
    }

    /// Whether the replay window can be trusted.
    pub fn replay_state_known(&self) -> bool {
        self.replay_state_known
    }

    pub(crate) fn echo_challenge(&self) -> Option<&[u8]> {
        self.echo_challenge.as_deref()
    }

    pub(crate) fn set_echo_challenge(&mut self, challenge: Vec<u8>) {
        self.echo_challenge = Some(challenge);
    }

    /// The replay state is known again, the window starting at `sequence`.
    pub(crate) fn replay_state_recovered(&mut self, sequence: u64) {
        self.replay.restart_at(sequence);
        self.replay_state_known = true;
        self.echo_challenge = None;
    }
}

/// The AEAD nonce of §5.2: the ID and Partial IV, padded, XORed with the Common IV.
pub fn nonce(common_iv: &[u8], id: &[u8], partial_iv: &[u8]) -> Vec<u8> {
    let n = common_iv.len();
    let mut nonce = vec![0u8; n];
    // Callers keep id.len() <= n - 6 and partial_iv.len() <= 5; clamping keeps hostile input
    // from slicing out of bounds.
    let id = &id[id.len().saturating_sub(n - 6)..];
    let piv = &partial_iv[partial_iv.len().saturating_sub(5)..];
    nonce[0] = id.len() as u8;
    nonce[n - 5 - id.len()..n - 5].copy_from_slice(id);
    nonce[n - piv.len()..].copy_from_slice(piv);
    for (b, iv) in nonce.iter_mut().zip(common_iv) {
        *b ^= iv;
    }
    nonce
}

/// A sequence number as a Partial IV: big-endian, no leading zeros, 0 as one zero byte.
pub fn partial_iv(sequence: u64) -> Vec<u8> {
    let bytes = sequence.to_be_bytes();
    let skip = bytes.iter().take(7).take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// A Partial IV as a sequence number (`None` if longer than 5 bytes).
pub fn sequence_of(partial_iv: &[u8]) -> Option<u64> {
    if partial_iv.len() > 5 {
        return None;
    }
    Some(
        partial_iv
            .iter()
            .fold(0u64, |n, b| (n << 8) | u64::from(*b)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const SECRET: &str = "0102030405060708090a0b0c0d0e0f10";

    fn client(salt: &str, context: Option<&str>, sender: &str) -> SecurityContext {
        let mut p = ContextParams::new(&hex(SECRET), &hex(sender), &hex("01"));
        p.master_salt = hex(salt);
        p.id_context = context.map(hex);
        SecurityContext::derive(&p).unwrap()
    }

    /// Appendix C.1–C.3, client and server views.
    #[test]
    fn derivation_matches_appendix_c() {
        let cases = [
            (
                "9e7ca92223786340",
                None,
                "",
                "f0910ed7295e6ad4b54fc793154302ff",
                "ffb14e093c94c9cac9471648b4f98710",
                "4622d4dd6d944168eefb54987c",
                "4622d4dd6d944168eefb54987c",
                "4722d4dd6d944169eefb54987c",
            ),
            (
                "",
                None,
                "00",
                "321b26943253c7ffb6003b0b64d74041",
                "e57b5635815177cd679ab4bcec9d7dda",
                "be35ae297d2dace910c52e99f9",
                "bf35ae297d2dace910c52e99f9",
                "bf35ae297d2dace810c52e99f9",
            ),
            (
                "9e7ca92223786340",
                Some("37cbf3210017a2d3"),
                "",
                "af2a1300a5e95788b356336eeecd2b92",
                "e39a0c7c77b43f03b4b39ab9a268699f",
                "2ca58fb85ff1b81c0b7181b85e",
                "2ca58fb85ff1b81c0b7181b85e",
                "2da58fb85ff1b81d0b7181b85e",
            ),
        ];
        for (salt, context, sender, sk, rk, iv, sn, rn) in cases {
            let c = client(salt, context, sender);
            assert_eq!(c.sender_key().as_bytes(), hex(sk));
            assert_eq!(c.recipient_key().as_bytes(), hex(rk));
            assert_eq!(c.common_iv(), hex(iv));
            assert_eq!(nonce(c.common_iv(), c.sender_id(), &[0]), hex(sn));
            assert_eq!(nonce(c.common_iv(), c.recipient_id(), &[0]), hex(rn));
            // The server's view: the same keys, swapped.
            let mut p = ContextParams::new(&hex(SECRET), &hex("01"), &hex(sender));
            p.master_salt = hex(salt);
            p.id_context = context.map(hex);
            let s = SecurityContext::derive(&p).unwrap();
            assert_eq!(s.sender_key().as_bytes(), hex(rk));
            assert_eq!(s.recipient_key().as_bytes(), hex(sk));
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let p = ContextParams::new(b"", b"a", b"b");
        assert_eq!(
            SecurityContext::derive(&p).unwrap_err(),
            ContextError::EmptySecret
        );
        let p = ContextParams::new(b"secret", b"12345678", b"b");
        assert!(matches!(
            SecurityContext::derive(&p),
            Err(ContextError::IdTooLong { .. })
        ));
        let p = ContextParams::new(b"secret", b"a", b"a");
        assert_eq!(
            SecurityContext::derive(&p).unwrap_err(),
            ContextError::SameIds
        );
        let mut p = ContextParams::new(b"secret", b"a", b"b");
        p.replay_window = 0;
        assert_eq!(
            SecurityContext::derive(&p).unwrap_err(),
            ContextError::ReplayWindow(0)
        );
        assert!(!format!("{p:?}").contains("secret"));
    }

    #[test]
    fn persisted_sequence_numbers_wait_for_their_mark() {
        let mut c = client("", None, "00");
        c.persist_sequence_numbers(Some(100), 10);
        assert_eq!(c.sender_sequence(), 100);
        assert_eq!(c.take_sequence(), Err(Some(110)));
        c.mark_stored(110);
        for n in 100..110 {
            assert_eq!(c.take_sequence(), Ok(n));
        }
        assert_eq!(c.take_sequence(), Err(Some(120)));
        // A stale mark reported late does not lower the limit.
        c.mark_stored(105);
        assert_eq!(c.mark_to_store(), Some(120));
        // Without persistence numbers flow until exhausted.
        let mut free = client("", None, "00");
        free.resume_sender_sequence(MAX_SEQUENCE_NUMBER);
        assert_eq!(free.take_sequence(), Ok(MAX_SEQUENCE_NUMBER));
        assert_eq!(free.take_sequence(), Err(None));
    }

    #[test]
    fn partial_ivs_are_minimal() {
        assert_eq!(partial_iv(0), vec![0]);
        assert_eq!(partial_iv(20), vec![0x14]);
        assert_eq!(partial_iv(256), vec![1, 0]);
        assert_eq!(partial_iv(MAX_SEQUENCE_NUMBER), vec![0xff; 5]);
        assert_eq!(sequence_of(&partial_iv(123_456)), Some(123_456));
        assert_eq!(sequence_of(&[1; 6]), None);
    }
}

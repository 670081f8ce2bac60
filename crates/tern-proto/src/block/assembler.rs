//! Server-side reassembly of request bodies sent with Block1 (RFC 7959 §2.3, §2.5, §2.9;
//! Request-Tag per RFC 9175 §3).
//!
//! Atomic processing: the handler sees a request only once its whole body is here. Each
//! non-final block is answered 2.31 Continue, echoing its NUM with M=1 and the server's
//! preferred SZX (a smaller one than the client's asks it to continue with smaller blocks:
//! early negotiation, §2.5). Blocks must arrive in order; a repeat of the last block (a retried
//! request) is acknowledged again without being appended. Block 0 always starts the transfer
//! afresh, so a half-received body is never handed on.
//!
//! Bounds: a body limit (4.13 with Size1, also up front when Size1 announces too much), a cap
//! on transfers per peer (past it, that peer's least recently used transfer is dropped: a
//! client starting yet another transfer has most likely abandoned its oldest), a cap on
//! transfers and on buffered bytes overall (past them, new transfers are refused 5.03 with
//! Max-Age until the oldest expires, rather than evicting others: under overload, eviction
//! would let transfers push each other out and none would finish), and expiry after
//! `lifetime` without a block — lazily on every call, or by [`Block1Assembler::handle_timeout`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha12Rng;
use rand_core::SeedableRng;

use super::table::{Cost, PeerTable};
use super::value::{BlockValue, MAX_SZX};
use super::{check_lifetime, check_szx, response_to, BlockConfigError, RequestKey};
use crate::code::Code;
use crate::endpoint::later;
use crate::hash::{FromRng, Hasher};
use crate::message::Message;
use crate::option::{decode_uint, OptionNumber};

/// Limits and preferences of a [`Block1Assembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block1Config {
    /// The largest request body accepted (default 1 MiB); larger ones get 4.13 with Size1.
    pub max_body_size: usize,
    /// The block size exponent the server prefers (default 6: 1024 bytes); a client sending
    /// larger blocks is asked to continue with this size.
    pub preferred_szx: u8,
    /// Transfers in progress per peer (default 8).
    pub max_transfers_per_peer: usize,
    /// Transfers in progress in all (default 1,024).
    pub max_transfers: usize,
    /// Bytes buffered in all: bodies, keys and about 100 bytes of bookkeeping per transfer
    /// (default 64 MiB). At least `max_body_size`, and better some kilobytes more, or a body
    /// of the largest size cannot be taken.
    pub max_buffered_bytes: usize,
    /// How long a transfer waits for its next block (default 247 s, EXCHANGE_LIFETIME).
    pub lifetime: Duration,
    /// Whether BERT blocks (SZX 7, RFC 8323 §6: any multiple of 1024 bytes in one block) are
    /// taken (default off: they are reserved over datagram transports; on for TCP and TLS,
    /// where the CSM announces Block-Wise-Transfer).
    pub bert: bool,
}

impl Default for Block1Config {
    fn default() -> Self {
        Block1Config {
            max_body_size: 1 << 20,
            preferred_szx: 6,
            max_transfers_per_peer: 8,
            max_transfers: 1024,
            max_buffered_bytes: 64 << 20,
            lifetime: super::DEFAULT_LIFETIME,
            bert: false,
        }
    }
}

impl Block1Config {
    /// Checks every field: what [`Block1Assembler::new`] is given should have passed this.
    pub fn validate(&self) -> Result<(), BlockConfigError> {
        for (name, value) in [
            ("max_body_size", self.max_body_size),
            ("max_transfers_per_peer", self.max_transfers_per_peer),
            ("max_transfers", self.max_transfers),
            ("max_buffered_bytes", self.max_buffered_bytes),
        ] {
            if value == 0 {
                return Err(BlockConfigError::ZeroCapacity(name));
            }
        }
        check_szx("preferred_szx", self.preferred_szx)?;
        if self.max_buffered_bytes < self.max_body_size {
            return Err(BlockConfigError::Inconsistent(
                "max_buffered_bytes must be at least max_body_size",
            ));
        }
        check_lifetime(self.lifetime)
    }
}

/// What to do with a request, as decided by [`Block1Assembler::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block1Action {
    /// A non-final block was stored: send this 2.31 Continue.
    Continue(Message),
    /// The request is whole: hand it to the handler.
    Complete(Assembled),
    /// Send this error response (4.00, 4.02, 4.08, 4.13 or 5.03); the handler does not run.
    Reject(Message),
}

/// A request ready for its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// The request as its last block arrived (type, message ID, token, options) with the
    /// whole body as payload, and Block1 and Size1 removed.
    pub request: Message,
    /// The last block, when the body came block-wise; the final response acknowledges it.
    pub block1: Option<BlockValue>,
}

impl Assembled {
    /// Adds to the handler's final response the Block1 option that acknowledges the last
    /// block (its NUM and SZX, M=0; RFC 7959 §2.3). Does nothing for a request that did not
    /// come block-wise.
    pub fn acknowledge(&self, response: &mut Message) {
        if let Some(block) = self.block1 {
            block
                .with_more(false)
                .write(&mut response.options, OptionNumber::BLOCK1);
        }
    }
}

/// Counters of what a [`Block1Assembler`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Block1Stats {
    /// Blocks stored and answered 2.31 Continue.
    pub continued: u64,
    /// Repeats of the last block acknowledged again.
    pub repeated: u64,
    /// Block-wise bodies completed and handed on.
    pub completed: u64,
    /// 4.08 Request Entity Incomplete sent.
    pub incomplete: u64,
    /// 4.13 Request Entity Too Large sent.
    pub too_large: u64,
    /// 5.03 sent because the transfer or byte caps were reached.
    pub refused: u64,
    /// 4.00 or 4.02 sent for a malformed block.
    pub malformed: u64,
    /// Transfers dropped for the per-peer cap.
    pub evicted: u64,
    /// Transfers dropped after `lifetime` without a block.
    pub expired: u64,
}

/// One body being received.
#[derive(Debug)]
struct Transfer {
    body: Vec<u8>,
    /// Where the last stored block starts, to recognise a repeat of it.
    last_offset: usize,
}

impl Cost for Transfer {
    fn cost(&self) -> usize {
        self.body.capacity()
    }
}

/// Reassembles Block1 request bodies, for many peers at once. See the module documentation.
#[derive(Debug)]
pub struct Block1Assembler {
    config: Block1Config,
    transfers: PeerTable<Transfer>,
    stats: Block1Stats,
}

impl Block1Assembler {
    /// An assembler whose table hash is keyed from `seed` (peers choose the keys).
    pub fn new(config: Block1Config, seed: [u8; 32]) -> Self {
        let hasher = Hasher::from_rng(&mut ChaCha12Rng::from_seed(seed));
        Block1Assembler {
            config,
            transfers: PeerTable::new(hasher),
            stats: Block1Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Block1Config {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Block1Stats {
        self.stats
    }

    /// Transfers in progress.
    pub fn len(&self) -> usize {
        self.transfers.len()
    }

    /// Whether no transfer is in progress.
    pub fn is_empty(&self) -> bool {
        self.transfers.len() == 0
    }

    /// Bytes held for transfers in progress (buffers, keys and bookkeeping).
    pub fn buffered_bytes(&self) -> usize {
        self.transfers.bytes()
    }

    /// When the oldest transfer expires. Calling [`handle_timeout`](Self::handle_timeout) then
    /// frees its memory sooner; without it, expiry happens on the next [`handle`](Self::handle).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfers
            .oldest()
            .map(|at| later(at, self.config.lifetime))
    }

    /// Drops transfers that have waited `lifetime` for their next block.
    pub fn handle_timeout(&mut self, now: Instant) {
        let n = self.transfers.expire(now, self.config.lifetime);
        self.stats.expired += n as u64;
    }

    /// Takes a request from `peer` (any request: one without Block1 passes through as
    /// [`Block1Action::Complete`] unless its size is over the limit) and says what to do.
    pub fn handle(&mut self, now: Instant, peer: SocketAddr, request: Message) -> Block1Action {
        self.handle_timeout(now);
        let max = self.config.max_body_size;
        let block = match BlockValue::read(&request.options, OptionNumber::BLOCK1) {
            Ok(block) => block,
            Err(e) => {
                self.stats.malformed += 1;
                let text = format!("Malformed Block1: {e}");
                return Block1Action::Reject(response_to(&request, Code::BAD_OPTION, &text));
            }
        };
        // §4: Size1 in a request announces the whole body; refuse early what cannot fit.
        let announced = request
            .options
            .get(OptionNumber::SIZE1)
            .and_then(decode_uint);
        if announced.is_some_and(|s| s as usize > max) || request.payload.len() > max {
            return self.too_large(&request);
        }
        let Some(block) = block else {
            return Block1Action::Complete(Assembled {
                request,
                block1: None,
            });
        };
        if block.is_bert() && !self.config.bert {
            self.stats.malformed += 1;
            let text = "Block1 SZX 7 (BERT) is reserved over datagram transports";
            return Block1Action::Reject(response_to(&request, Code::BAD_REQUEST, text));
        }
        let (size, len) = (block.size(), request.payload.len());
        // A BERT block carries any number of 1024-byte units; only the last may be shorter
        // (RFC 8323 §6).
        let misfit = if block.is_bert() {
            block.more() && (len == 0 || len % size != 0)
        } else {
            len > size || (block.more() && len != size)
        };
        if misfit {
            self.stats.malformed += 1;
            let text = format!("Block1 payload of {len} bytes for a block size of {size}");
            return Block1Action::Reject(response_to(&request, Code::BAD_REQUEST, &text));
        }
        let key = RequestKey::block1(&request);
        // The server's preferred size applies only when it is smaller (§2.3); a BERT block is
        // acknowledged as BERT, so the client goes on with BERT.
        let ack = if block.is_bert() {
            block
        } else {
            block.with_szx(block.szx().min(self.config.preferred_szx.min(MAX_SZX)))
        };
        if block.num() == 0 {
            // Block 0 starts over, whatever was received before (§2.5).
            self.transfers.remove(peer, &key);
            if !block.more() {
                return self.complete(request, block, None);
            }
            return self.start(now, peer, key, request, ack);
        }
        let Some(t) = self.transfers.get(peer, &key) else {
            self.stats.incomplete += 1;
            let text = "No block-wise transfer in progress for this request: start at block 0";
            return Block1Action::Reject(response_to(
                &request,
                Code::REQUEST_ENTITY_INCOMPLETE,
                text,
            ));
        };
        let (received, last_offset) = (t.body.len(), t.last_offset);
        let offset = block.offset();
        if offset == received as u64 {
            if received + len > max {
                self.transfers.remove(peer, &key);
                return self.too_large(&request);
            }
            if !block.more() {
                let body = self.transfers.remove(peer, &key).map(|t| t.body);
                return self.complete(request, block, body);
            }
            let capacity = t.body.capacity();
            let grown = grown_capacity(capacity, received + len, max);
            if self.transfers.bytes() + (grown - capacity) > self.config.max_buffered_bytes {
                self.transfers.remove(peer, &key);
                return self.refuse(now, &request);
            }
            self.transfers.update(peer, &key, now, |t| {
                t.body.reserve_exact(grown - t.body.len());
                t.body.extend_from_slice(&request.payload);
                t.last_offset = received;
            });
            self.stats.continued += 1;
            return Block1Action::Continue(continue_response(&request, ack));
        }
        let repeat = block.more()
            && offset == last_offset as u64
            && received == last_offset + len
            && t.body.get(last_offset..) == Some(&request.payload[..]);
        if repeat {
            self.transfers.update(peer, &key, now, |_| ());
            self.stats.repeated += 1;
            return Block1Action::Continue(continue_response(&request, ack));
        }
        self.stats.incomplete += 1;
        let text = format!("Expected the block at byte {received}, not {offset}");
        Block1Action::Reject(response_to(
            &request,
            Code::REQUEST_ENTITY_INCOMPLETE,
            &text,
        ))
    }

    /// Stores block 0 of a new transfer, within the caps.
    fn start(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        key: RequestKey,
        request: Message,
        ack: BlockValue,
    ) -> Block1Action {
        if self.transfers.peer_len(peer) >= self.config.max_transfers_per_peer
            && self.transfers.remove_oldest_of(peer).is_some()
        {
            self.stats.evicted += 1;
        }
        let len = request.payload.len();
        let cost = len + key.len() + 256;
        if self.transfers.len() >= self.config.max_transfers
            || self.transfers.bytes() + cost > self.config.max_buffered_bytes
        {
            return self.refuse(now, &request);
        }
        let response = continue_response(&request, ack);
        let mut body = request.payload;
        body.shrink_to_fit();
        self.transfers.insert(
            peer,
            key,
            Transfer {
                body,
                last_offset: 0,
            },
            now,
        );
        self.stats.continued += 1;
        Block1Action::Continue(response)
    }

    fn complete(
        &mut self,
        mut request: Message,
        block: BlockValue,
        body: Option<Vec<u8>>,
    ) -> Block1Action {
        if let Some(mut body) = body {
            body.extend_from_slice(&request.payload);
            request.payload = body;
            self.stats.completed += 1;
        }
        request.options.remove(OptionNumber::BLOCK1);
        request.options.remove(OptionNumber::SIZE1);
        Block1Action::Complete(Assembled {
            request,
            block1: Some(block),
        })
    }

    /// 4.13 with Size1 = the largest body accepted (RFC 7959 §2.9.3, §4).
    fn too_large(&mut self, request: &Message) -> Block1Action {
        self.stats.too_large += 1;
        let max = self.config.max_body_size;
        let text = format!("Request body over {max} bytes");
        let mut response = response_to(request, Code::REQUEST_ENTITY_TOO_LARGE, &text);
        let size1 = u32::try_from(max).unwrap_or(u32::MAX);
        response.options.set_uint(OptionNumber::SIZE1, size1);
        Block1Action::Reject(response)
    }

    /// 5.03 with Max-Age = the time until the oldest transfer expires.
    fn refuse(&mut self, now: Instant, request: &Message) -> Block1Action {
        self.stats.refused += 1;
        let wait = self
            .poll_timeout()
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        let text = "Too many block-wise request bodies in progress";
        let mut response = response_to(request, Code::SERVICE_UNAVAILABLE, text);
        let secs = u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX);
        response.options.set_uint(OptionNumber::MAX_AGE, secs);
        Block1Action::Reject(response)
    }
}

/// 2.31 Continue acknowledging a block: its NUM, M=1, the server's size exponent.
fn continue_response(request: &Message, ack: BlockValue) -> Message {
    let mut m = response_to(request, Code::CONTINUE, "");
    ack.with_more(true)
        .write(&mut m.options, OptionNumber::BLOCK1);
    m
}

/// The capacity to grow a body buffer to so that it holds `needed` bytes: doubling, but never
/// past the body limit, so that what is counted is what is allocated.
fn grown_capacity(capacity: usize, needed: usize, max: usize) -> usize {
    if needed <= capacity {
        capacity
    } else {
        capacity.saturating_mul(2).min(max).max(needed)
    }
}

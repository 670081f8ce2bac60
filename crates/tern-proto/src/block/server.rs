//! Server-side Block2: slicing response bodies into blocks and serving the later blocks from a
//! cache (RFC 7959 §2.2, §2.4, §4; Observe per §2.6).
//!
//! A response body larger than the block size (the client's Block2 SZX if it asked for one,
//! else the server's default, whichever is smaller) goes out as block 0 with M=1, Size2 = the
//! whole length, and an ETag derived from a keyed hash of the body when the handler set none,
//! so that a client notices a representation that changed between blocks. The whole body is
//! cached per peer and [`RequestKey::block2`], so that requests for later blocks are answered
//! without running the handler again. A request past the end gets 4.02 Bad Option.
//!
//! When a later block is asked for and nothing is cached (expired, evicted, or never seen),
//! GET and FETCH run the handler again ([`Block2Lookup::Regenerate`]): if the representation is
//! unchanged its ETag is too, and the transfer goes on. Other methods are not re-executed for
//! a lost cache entry (a POST or PUT would act twice): they get 4.08 and the client starts over.
//!
//! Bounds: cached bytes overall (least recently used evicted first), entries per peer (that
//! peer's least recently used first), and expiry after `lifetime` unused.

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
use crate::message::{Message, Options};
use crate::option::OptionNumber;

/// Limits and preferences of a [`Block2Server`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block2Config {
    /// The block size exponent used when the client asks for none or a larger one (default 6:
    /// 1024 bytes).
    pub default_szx: u8,
    /// Bytes of response bodies cached in all (default 16 MiB).
    pub max_cached_bytes: usize,
    /// Bodies cached per peer (default 8).
    pub max_cached_per_peer: usize,
    /// How long a cached body is kept after its last use (default 247 s, EXCHANGE_LIFETIME).
    pub lifetime: Duration,
}

impl Default for Block2Config {
    fn default() -> Self {
        Block2Config {
            default_szx: 6,
            max_cached_bytes: 16 << 20,
            max_cached_per_peer: 8,
            lifetime: super::DEFAULT_LIFETIME,
        }
    }
}

impl Block2Config {
    /// Checks every field: what [`Block2Server::new`] is given should have passed this.
    pub fn validate(&self) -> Result<(), BlockConfigError> {
        check_szx("default_szx", self.default_szx)?;
        if self.max_cached_bytes == 0 {
            return Err(BlockConfigError::ZeroCapacity("max_cached_bytes"));
        }
        if self.max_cached_per_peer == 0 {
            return Err(BlockConfigError::ZeroCapacity("max_cached_per_peer"));
        }
        check_lifetime(self.lifetime)
    }
}

/// What to do with a request, as decided by [`Block2Server::handle_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block2Lookup {
    /// Run the handler (no Block2, or block 0: a fresh representation), then pass its
    /// response through [`Block2Server::respond`].
    Handle,
    /// A later block of a GET or FETCH whose body is not cached: run the handler again, then
    /// pass its response through [`Block2Server::respond`], which slices out that block.
    Regenerate,
    /// Send this response without running the handler: a block from the cache, or an error
    /// (4.00 for BERT, 4.02 for a malformed Block2 or a block past the end, 4.08 for a later
    /// block of another method whose body is gone).
    Respond(Message),
}

/// Counters of what a [`Block2Server`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Block2Stats {
    /// Responses sliced into blocks (block 0 or a regenerated block sent).
    pub sliced: u64,
    /// Later blocks served from the cache.
    pub from_cache: u64,
    /// Later blocks whose body had to be generated again.
    pub regenerated: u64,
    /// Requests past the end (4.02).
    pub past_end: u64,
    /// Cached bodies evicted for the byte or per-peer caps.
    pub evicted: u64,
    /// Cached bodies dropped after `lifetime` unused.
    pub expired: u64,
}

/// A whole response body and what every block of it carries.
#[derive(Debug)]
struct Cached {
    code: Code,
    /// The response's options without Block2, Size2 and Observe.
    options: Options,
    body: Vec<u8>,
}

impl Cost for Cached {
    fn cost(&self) -> usize {
        self.body.capacity() + self.options.encoded_len()
    }
}

/// Slices response bodies and caches them for the later blocks. See the module documentation.
#[derive(Debug)]
pub struct Block2Server {
    config: Block2Config,
    cache: PeerTable<Cached>,
    /// Keyed hash of bodies, for ETags.
    etag_hasher: Hasher,
    stats: Block2Stats,
}

impl Block2Server {
    /// A server whose table hash and ETags are keyed from `seed`.
    pub fn new(config: Block2Config, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha12Rng::from_seed(seed);
        Block2Server {
            config,
            cache: PeerTable::new(Hasher::from_rng(&mut rng)),
            etag_hasher: Hasher::from_rng(&mut rng),
            stats: Block2Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Block2Config {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Block2Stats {
        self.stats
    }

    /// Bodies cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.len() == 0
    }

    /// Bytes cached (bodies, options, keys and bookkeeping).
    pub fn cached_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// When the least recently used body expires. Calling
    /// [`handle_timeout`](Self::handle_timeout) then frees it sooner; without it, expiry
    /// happens on the next call that takes `now`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cache
            .oldest()
            .map(|at| later(at, self.config.lifetime))
    }

    /// Drops bodies unused for `lifetime`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let n = self.cache.expire(now, self.config.lifetime);
        self.stats.expired += n as u64;
    }

    /// Looks at a request before its handler runs: answers later blocks from the cache.
    pub fn handle_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &Message,
    ) -> Block2Lookup {
        self.handle_request_with(now, peer, request, None)
    }

    /// [`handle_request`](Self::handle_request) over a reliable transport whose peer does
    /// BERT (RFC 8323 §6): `bert` is the most body bytes one message to it may carry, and a
    /// Block2 with SZX 7 asks for the next BERT block (a multiple of 1024 bytes).
    pub fn handle_request_with(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &Message,
        bert: Option<usize>,
    ) -> Block2Lookup {
        self.handle_timeout(now);
        let block = match BlockValue::read(&request.options, OptionNumber::BLOCK2) {
            Ok(Some(block)) => block,
            Ok(None) => return Block2Lookup::Handle,
            Err(e) => {
                let text = format!("Malformed Block2: {e}");
                return Block2Lookup::Respond(response_to(request, Code::BAD_OPTION, &text));
            }
        };
        if block.is_bert() && bert.is_none() {
            // RFC 7959 §2.2: SZX 7 in a request is answered 4.00 (over datagram transports).
            let text = "Block2 SZX 7 (BERT) is reserved over datagram transports";
            return Block2Lookup::Respond(response_to(request, Code::BAD_REQUEST, text));
        }
        if block.num() == 0 {
            return Block2Lookup::Handle;
        }
        let key = RequestKey::block2(request);
        if self.cache.get(peer, &key).is_some() {
            self.stats.from_cache += 1;
            let response = self.serve(now, peer, key, request, block, bert);
            return Block2Lookup::Respond(response);
        }
        if matches!(request.code, Code::GET | Code::FETCH) {
            self.stats.regenerated += 1;
            return Block2Lookup::Regenerate;
        }
        let text = "The response to this request is no longer available: repeat it from block 0";
        Block2Lookup::Respond(response_to(request, Code::REQUEST_ENTITY_INCOMPLETE, text))
    }

    /// Turns the handler's response to `request` into the block the request asked for (block 0
    /// unless it carried Block2), caching the whole body when it spans several blocks. A
    /// response that fits one block, or that already carries Block2, is returned unchanged
    /// (with Block2 0/0 added when the client asked for a block size).
    pub fn respond(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &Message,
        response: Message,
    ) -> Message {
        self.respond_with(now, peer, request, response, None)
    }

    /// [`respond`](Self::respond) over a reliable transport whose peer does BERT (RFC 8323
    /// §6): unless the request asked for a smaller block size, the body goes in BERT blocks
    /// (SZX 7) of as many 1024-byte units as fit in `bert` bytes.
    pub fn respond_with(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        request: &Message,
        mut response: Message,
        bert: Option<usize>,
    ) -> Message {
        self.handle_timeout(now);
        if response.options.contains(OptionNumber::BLOCK2) {
            return response;
        }
        let asked = BlockValue::read(&request.options, OptionNumber::BLOCK2)
            .ok()
            .flatten()
            .filter(|b| bert.is_some() || !b.is_bert());
        let default = self.config.default_szx.min(MAX_SZX);
        let shape = BlockShape::of(asked, default, bert);
        let block = shape.first;
        let offset = asked.map_or(0, |b| b.offset());
        let size = shape.size;
        if offset == 0 && response.payload.len() <= size {
            if asked.is_some() && response.code.is_success() {
                block
                    .with_more(false)
                    .write(&mut response.options, OptionNumber::BLOCK2);
            }
            return response;
        }
        if !response.code.is_success() && response.payload.len() <= size {
            return response;
        }
        if response.code.is_success() && !response.options.contains(OptionNumber::ETAG) {
            let tag = self.etag_hasher.hash_one(&response.payload[..]);
            response.options.set(OptionNumber::ETAG, tag.to_be_bytes());
        }
        self.stats.sliced += 1;
        let mut options = response.options.clone();
        for n in [OptionNumber::OBSERVE, OptionNumber::SIZE2] {
            options.remove(n);
        }
        let key = RequestKey::block2(request);
        let cached = Cached {
            code: response.code,
            options,
            body: response.payload,
        };
        if offset >= cached.body.len() as u64 {
            return self.past_end(request, block, offset, cached.body.len());
        }
        let (slice, more) = slice_at(&cached.body, offset, size);
        let mut out = response_to(request, cached.code, "");
        out.options = response.options;
        out.payload = slice.to_vec();
        let num = offset / size as u64;
        let this = shape.at(offset, more).unwrap_or(block);
        this.write(&mut out.options, OptionNumber::BLOCK2);
        if num == 0 {
            let total = u32::try_from(cached.body.len()).unwrap_or(u32::MAX);
            out.options.set_uint(OptionNumber::SIZE2, total);
        } else {
            out.options.remove(OptionNumber::SIZE2);
        }
        if more {
            self.store(now, peer, key, cached);
        } else {
            self.cache.remove(peer, &key);
        }
        out
    }

    /// Serves a later block from the cache; forgets the body once its last block is out.
    fn serve(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        key: RequestKey,
        request: &Message,
        asked: BlockValue,
        bert: Option<usize>,
    ) -> Message {
        // A server that prefers smaller blocks answers the same offset in its size (§2.4).
        let shape = BlockShape::of(Some(asked), self.config.default_szx.min(MAX_SZX), bert);
        let block = shape.first;
        let (size, offset) = (shape.size, asked.offset());
        let built = self.cache.update(peer, &key, now, |c| {
            if offset >= c.body.len() as u64 {
                return Err(c.body.len());
            }
            let (slice, more) = slice_at(&c.body, offset, size);
            let mut out = response_to(request, c.code, "");
            out.options = c.options.clone();
            out.payload = slice.to_vec();
            Ok((out, more))
        });
        match built {
            Some(Ok((mut out, more))) => {
                let this = shape.at(offset, more).unwrap_or(block);
                this.write(&mut out.options, OptionNumber::BLOCK2);
                if !more {
                    self.cache.remove(peer, &key);
                }
                out
            }
            Some(Err(len)) => self.past_end(request, block, offset, len),
            None => response_to(request, Code::INTERNAL_SERVER_ERROR, ""),
        }
    }

    fn past_end(
        &mut self,
        request: &Message,
        block: BlockValue,
        offset: u64,
        len: usize,
    ) -> Message {
        self.stats.past_end += 1;
        let text =
            format!("Block2 {block} starts at byte {offset}, past the end of the {len}-byte body");
        response_to(request, Code::BAD_OPTION, &text)
    }

    /// Caches a body within the caps, evicting the least recently used first.
    fn store(&mut self, now: Instant, peer: SocketAddr, key: RequestKey, cached: Cached) {
        self.cache.remove(peer, &key);
        let cost = cached.cost() + key.len() + 256;
        if cost > self.config.max_cached_bytes {
            return;
        }
        if self.cache.peer_len(peer) >= self.config.max_cached_per_peer
            && self.cache.remove_oldest_of(peer).is_some()
        {
            self.stats.evicted += 1;
        }
        while self.cache.len() > 0 && self.cache.bytes() + cost > self.config.max_cached_bytes {
            if self.cache.remove_oldest().is_none() {
                break;
            }
            self.stats.evicted += 1;
        }
        self.cache.insert(peer, key, cached, now);
    }
}

/// How a body is cut: the bytes per message and the Block2 values that describe them.
struct BlockShape {
    /// The value a first block would carry.
    first: BlockValue,
    /// Body bytes per message.
    size: usize,
    /// BERT (SZX 7): NUM counts 1024-byte units, and a message carries several.
    bert: bool,
}

impl BlockShape {
    /// The client's size if it asked for one no larger than ours, else ours; BERT when the
    /// transport allows it and the client asked for no smaller size.
    fn of(asked: Option<BlockValue>, default_szx: u8, bert: Option<usize>) -> Self {
        let plain = |szx: u8| {
            let first = BlockValue::initial(szx);
            BlockShape {
                first,
                size: first.size(),
                bert: false,
            }
        };
        match (bert, asked) {
            (Some(max), asked) if asked.is_none_or(|b| b.is_bert() || b.szx() >= MAX_SZX) => {
                let units = (max / 1024).max(1);
                match BlockValue::new(0, false, super::value::BERT_SZX) {
                    Ok(first) => BlockShape {
                        first,
                        size: units * 1024,
                        bert: true,
                    },
                    Err(_) => plain(default_szx),
                }
            }
            (_, Some(b)) if !b.is_bert() => plain(b.szx().min(default_szx)),
            _ => plain(default_szx),
        }
    }

    /// The Block2 value of the block at `offset`.
    fn at(&self, offset: u64, more: bool) -> Option<BlockValue> {
        if self.bert {
            let num = u32::try_from(offset / 1024).ok()?;
            BlockValue::new(num, more, super::value::BERT_SZX).ok()
        } else {
            BlockValue::at_offset(offset, more, self.size).ok()
        }
    }
}

/// The bytes of the block of `size` at `offset` (which must be inside `body`), and whether
/// more follow.
fn slice_at(body: &[u8], offset: u64, size: usize) -> (&[u8], bool) {
    let start = usize::try_from(offset)
        .unwrap_or(body.len())
        .min(body.len());
    let end = start.saturating_add(size).min(body.len());
    (&body[start..end], end < body.len())
}

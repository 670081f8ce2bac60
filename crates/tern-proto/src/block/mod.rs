//! Block-wise transfers (RFC 7959), sans-IO: bodies larger than one datagram carried as a
//! sequence of request/response exchanges, each with a Block1 (request body) or Block2
//! (response body) option.
//!
//! - [`value`]: the option value — NUM, M, SZX (§2.2), BERT flagged (RFC 8323 §6).
//! - [`Block1Assembler`] (server): reassembles request bodies; answers 2.31 Continue, 4.08
//!   Request Entity Incomplete and 4.13 Request Entity Too Large (§2.3, §2.5, §2.9); transfers
//!   are told apart by peer, method, target URI and Request-Tag (RFC 9175 §3).
//! - [`Block2Server`] (server): slices large response bodies, adds Size2 and an ETag, and serves
//!   later blocks from a cache without running the handler again (§2.2, §2.4, §4).
//! - [`Block2Fetch`] and [`Block1Send`] (client): state machines that produce the next request
//!   and check each response (§2.4, §2.5, §3; Observe per RFC 7641 §3.3 and RFC 7959 §2.6).
//!
//! Nothing here sends, receives or reads a clock: the machines take messages and `Instant`s
//! and return messages, and the runtime carries them through the message layer. Every table is
//! capped (per peer and overall) and ages out, with or without timer calls.

mod assembler;
mod fetch;
mod send;
mod server;
mod table;
#[cfg(test)]
mod tests;
pub mod value;

use std::time::Duration;

use crate::code::Code;
use crate::message::{Message, Token};
use crate::option::OptionNumber;

pub use assembler::{Assembled, Block1Action, Block1Assembler, Block1Config, Block1Stats};
pub use fetch::{Block2Fetch, Block2Step};
pub use send::{Block1Send, Block1SendConfig, Block1Step};
pub use server::{Block2Config, Block2Lookup, Block2Server, Block2Stats};
pub use value::{BlockValue, BlockValueError};

/// How long server-side block state is kept after its last use by default: EXCHANGE_LIFETIME
/// with the default transmission parameters (RFC 7252 §4.8.2; RFC 7959 §2.4, §2.5).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(247);

/// What identifies one block-wise transfer of a peer: the method, the target URI (Uri-Host,
/// Uri-Port, Uri-Path, Uri-Query, Proxy-Uri, Proxy-Scheme), the OSCORE option (so that
/// transfers protected with different security contexts stay apart, RFC 8613) and, for request bodies, the
/// Request-Tag (RFC 9175 §3.3), or for response bodies the Accept option and a FETCH body
/// (RFC 8132 §2.3.2).
///
/// Kept as one flat byte string: cheap to hash and compare, and its length is its cost.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestKey(Vec<u8>);

impl std::fmt::Debug for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestKey({} bytes)", self.0.len())
    }
}

/// The options that name a request's target.
const TARGET_OPTIONS: [OptionNumber; 7] = [
    OptionNumber::OSCORE,
    OptionNumber::URI_HOST,
    OptionNumber::URI_PORT,
    OptionNumber::URI_PATH,
    OptionNumber::URI_QUERY,
    OptionNumber::PROXY_URI,
    OptionNumber::PROXY_SCHEME,
];

impl RequestKey {
    fn build(request: &Message, extra: OptionNumber, body: bool) -> Self {
        let mut key = vec![request.code.0];
        for o in request
            .options
            .iter()
            .filter(|o| o.number == extra || TARGET_OPTIONS.contains(&o.number))
        {
            key.extend_from_slice(&o.number.0.to_be_bytes());
            key.extend_from_slice(&(o.value.len() as u32).to_be_bytes());
            key.extend_from_slice(&o.value);
        }
        if body {
            key.push(0xff);
            key.extend_from_slice(&request.payload);
        }
        RequestKey(key)
    }

    /// The key of a request-body transfer: method, target URI and Request-Tag (absent and
    /// empty Request-Tags differ, as RFC 9175 §3.2 asks).
    pub fn block1(request: &Message) -> Self {
        Self::build(request, OptionNumber::REQUEST_TAG, false)
    }

    /// The key of a response-body transfer: method, target URI, Accept, and the payload of a
    /// FETCH (its body selects the representation). Block options, Observe and Size options
    /// are left out, so every block request of one transfer has the same key.
    pub fn block2(request: &Message) -> Self {
        Self::build(request, OptionNumber::ACCEPT, request.code == Code::FETCH)
    }

    /// Its length in bytes (what it costs in a table).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (never: the method is always in it).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a client-side transfer ([`Block2Fetch`], [`Block1Send`]) stopped. Hostile or confused
/// responses end up here; none of them panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// A Block1, Block2, Size1 or Size2 option that cannot be decoded.
    #[error("malformed {option} option: {error}")]
    BadOption {
        /// The option.
        option: OptionNumber,
        /// What is wrong with it.
        error: BlockValueError,
    },
    /// A response without the block option the transfer needs.
    #[error("the response has no {0} option")]
    MissingOption(OptionNumber),
    /// SZX 7 (BERT), which only reliable transports may use (RFC 8323 §6).
    #[error("{0} uses SZX 7 (BERT), which is not valid over datagram transports")]
    Bert(OptionNumber),
    /// A response whose token is not the request's.
    #[error("the response's token {got} is not the request's {expected}")]
    TokenMismatch {
        /// The request's token.
        expected: Token,
        /// The response's.
        got: Token,
    },
    /// A block that is not the one asked for or sent.
    #[error("{option} block {got} (byte {got_offset}) does not match byte {expected_offset}")]
    WrongBlock {
        /// Block1 or Block2.
        option: OptionNumber,
        /// The block received.
        got: BlockValue,
        /// Its first byte.
        got_offset: u64,
        /// The byte the transfer is at.
        expected_offset: u64,
    },
    /// A block whose payload does not fit its size (only the last may be shorter).
    #[error("a block of {len} bytes where its size is {size} (more: {more})")]
    BlockSize {
        /// The payload length.
        len: usize,
        /// The block size.
        size: usize,
        /// The block's more flag.
        more: bool,
    },
    /// The ETag changed between blocks: the representation changed mid-transfer; the caller
    /// may start over.
    #[error("the representation changed during the transfer (ETag differs)")]
    EtagChanged,
    /// The body would exceed the configured limit.
    #[error("the body exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// The limit.
        max: usize,
    },
    /// 4.13 Request Entity Too Large: the server cannot take the body (RFC 7959 §2.9.3).
    #[error("the server refused the body as too large (4.13; it accepts {size1:?} bytes)")]
    EntityTooLarge {
        /// The largest body the server accepts (its Size1), if it said.
        size1: Option<u32>,
        /// A smaller block size exponent the server hinted at (its Block1), if any.
        szx: Option<u8>,
    },
    /// 4.08 Request Entity Incomplete: the server lost or never had the earlier blocks; the
    /// caller may start over (RFC 7959 §2.9.2).
    #[error("the server does not have the earlier blocks (4.08 Request Entity Incomplete)")]
    EntityIncomplete,
    /// An error response in the middle of a response-body transfer.
    #[error("the server answered {0} during the transfer")]
    ErrorResponse(Code),
    /// A message whose code is not a response code.
    #[error("{0} is not a response code")]
    NotAResponse(Code),
    /// 2.31 Continue to the last block.
    #[error("2.31 Continue in answer to the last block")]
    UnexpectedContinue,
    /// The body needs a block number above 2^20 − 1 at this block size.
    #[error("the body needs more than 2^20 blocks of {size} bytes")]
    TooManyBlocks {
        /// The block size.
        size: usize,
    },
    /// A response after the transfer ended (completed or failed).
    #[error("the transfer has already ended")]
    Finished,
}

/// Why a server-side block configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockConfigError {
    /// A capacity of zero.
    #[error("{0} must be at least 1")]
    ZeroCapacity(&'static str),
    /// A size exponent outside 0..=6.
    #[error("{name} must be a block size exponent in 0..=6, not {value}")]
    Szx {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: u8,
    },
    /// Two limits that contradict each other.
    #[error("{0}")]
    Inconsistent(&'static str),
    /// A lifetime of zero or over a day.
    #[error("the lifetime must be between 1 ms and 24 h")]
    Lifetime,
}

fn check_lifetime(lifetime: Duration) -> Result<(), BlockConfigError> {
    if lifetime < Duration::from_millis(1) || lifetime > Duration::from_secs(86_400) {
        return Err(BlockConfigError::Lifetime);
    }
    Ok(())
}

fn check_szx(name: &'static str, value: u8) -> Result<(), BlockConfigError> {
    if value > value::MAX_SZX {
        return Err(BlockConfigError::Szx { name, value });
    }
    Ok(())
}

/// Reads a block option for a client machine, mapping decode errors.
fn read_block(
    message: &Message,
    option: OptionNumber,
) -> Result<Option<BlockValue>, TransferError> {
    BlockValue::read(&message.options, option)
        .map_err(|error| TransferError::BadOption { option, error })
}

/// A response from the server-side machines: code, token of the request and a diagnostic
/// payload. The message layer fills in type and message ID when it sends it.
fn response_to(request: &Message, code: Code, diagnostic: &str) -> Message {
    let mut m = Message::new(crate::code::MessageType::Ack, code);
    m.token = request.token;
    m.payload = diagnostic.as_bytes().to_vec();
    m
}

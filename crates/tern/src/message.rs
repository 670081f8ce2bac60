//! What applications send and receive: client requests and responses, server-side requests.

use std::net::SocketAddr;
use std::time::Duration;

use tern_proto::{CoapOption, Code, ContentFormat, Message, MessageType, OptionNumber};

use crate::error::ErrorResponse;
use crate::oscore::OscoreIdentity;
pub use tern_tls::PeerIdentity;

/// A response, as received by a client or returned by a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    message: Message,
}

impl Response {
    /// A response with a code and nothing else.
    pub fn new(code: Code) -> Self {
        Response {
            message: Message::new(MessageType::Ack, code),
        }
    }

    /// 2.05 Content with a payload.
    pub fn content(payload: impl Into<Vec<u8>>) -> Self {
        Response::new(Code::CONTENT).with_payload(payload)
    }

    /// 2.05 Content with a text/plain payload.
    pub fn text(text: impl Into<String>) -> Self {
        Response::content(text.into().into_bytes()).with_content_format(ContentFormat::TEXT_PLAIN)
    }

    /// An error response with a diagnostic payload (RFC 7252 §5.5.2).
    pub fn error(code: Code, diagnostic: impl Into<String>) -> Self {
        Response::new(code).with_payload(diagnostic.into().into_bytes())
    }

    /// Wraps a received message.
    pub fn from_message(message: Message) -> Self {
        Response { message }
    }

    /// Sets the payload.
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.message.payload = payload.into();
        self
    }

    /// Sets the Content-Format.
    pub fn with_content_format(mut self, cf: ContentFormat) -> Self {
        self.message.set_content_format(cf);
        self
    }

    /// Adds an option.
    pub fn with_option(mut self, number: OptionNumber, value: impl Into<Vec<u8>>) -> Self {
        self.message.options.push(number, value);
        self
    }

    /// Sets Max-Age in seconds.
    pub fn with_max_age(mut self, seconds: u32) -> Self {
        self.message
            .options
            .set_uint(OptionNumber::MAX_AGE, seconds);
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.message.code
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// The Content-Format, if any.
    pub fn content_format(&self) -> Option<ContentFormat> {
        self.message.content_format()
    }

    /// The options.
    pub fn options(&self) -> impl Iterator<Item = &CoapOption> {
        self.message.options.iter()
    }

    /// The first value of an option.
    pub fn option(&self, number: OptionNumber) -> Option<&[u8]> {
        self.message.options.get(number)
    }

    /// The underlying message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Takes the underlying message.
    pub fn into_message(self) -> Message {
        self.message
    }

    /// `Ok(self)` for 2.xx, else the code and diagnostic as an error.
    pub fn error_for_code(self) -> Result<Self, ErrorResponse> {
        if self.code().is_success() {
            Ok(self)
        } else {
            Err(ErrorResponse {
                code: self.code(),
                diagnostic: String::from_utf8_lossy(self.payload()).into_owned(),
            })
        }
    }
}

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) peer: SocketAddr,
    pub(crate) identity: Option<PeerIdentity>,
    pub(crate) oscore: Option<OscoreIdentity>,
    pub(crate) message: Message,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) rest: Option<String>,
}

impl Request {
    /// Who sent it.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Who the peer proved to be over a secure channel (its PSK identity), if any. Resources
    /// can authorize by it.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref()
    }

    /// The OSCORE context the request was protected with (RFC 8613), if it was: the message
    /// seen here is the decrypted inner request. Resources can authorize by it, or require it
    /// with [`Resource::require_oscore`](crate::Resource::require_oscore).
    pub fn oscore(&self) -> Option<&OscoreIdentity> {
        self.oscore.as_ref()
    }

    /// The method code.
    pub fn method(&self) -> Code {
        self.message.code
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// The path segments joined with `/` (`sensors/temp`).
    pub fn path(&self) -> String {
        self.message.path()
    }

    /// The Uri-Query items.
    pub fn queries(&self) -> impl Iterator<Item = &str> {
        self.message.queries()
    }

    /// The value of a `{name}` segment of the route pattern.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What a trailing `*` of the route pattern matched (`a/b` for `/store/*` and `/store/a/b`).
    pub fn rest(&self) -> Option<&str> {
        self.rest.as_deref()
    }

    /// The Content-Format, if any.
    pub fn content_format(&self) -> Option<ContentFormat> {
        self.message.content_format()
    }

    /// The Accept option, if any.
    pub fn accept(&self) -> Option<ContentFormat> {
        self.message
            .options
            .get_uint(OptionNumber::ACCEPT)
            .and_then(|v| u16::try_from(v).ok())
            .map(ContentFormat)
    }

    /// The underlying message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Whether it came as a confirmable message.
    pub fn is_confirmable(&self) -> bool {
        self.message.ty == MessageType::Con
    }
}

/// Per-request client settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// Send as NON instead of CON.
    pub non_confirmable: bool,
    /// Give up after this long (per block of a block-wise transfer); `None` waits as long as
    /// the protocol allows.
    pub timeout: Option<Duration>,
    /// The block size exponent for block-wise transfers (0: 16 bytes … 6: 1024 bytes), asked
    /// of the server for responses and used for request bodies; `None`: 1024 bytes, and
    /// responses in whatever size the server picks.
    pub block_szx: Option<u8>,
    /// The largest response body fetched block-wise (default 64 MiB).
    pub max_body_size: usize,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            non_confirmable: false,
            timeout: None,
            block_szx: None,
            max_body_size: 64 << 20,
        }
    }
}

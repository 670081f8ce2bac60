//! Errors of the runtime and the client API.

use std::io;

use tern_proto::endpoint::RequestError;
use tern_proto::uri::{Scheme, UriError};
use tern_proto::Code;

/// What went wrong with a context or a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URI is not a valid CoAP URI.
    #[error("invalid URI: {0}")]
    Uri(#[from] UriError),
    /// The host name did not resolve.
    #[error("cannot resolve host {host:?}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// The host resolved to no usable address.
    #[error("host {0:?} has no address this context can reach")]
    NoAddress(String),
    /// A scheme this build does not serve yet.
    #[error("the {0} scheme is not supported here")]
    UnsupportedScheme(Scheme),
    /// coaps:// or coaps+tcp:// without credentials.
    #[error(
        "coaps:// and coaps+tcp:// need credentials: give the context a PSK (identity and key) or certificates"
    )]
    NoCredentials,
    /// The security layer refused its configuration.
    #[error(transparent)]
    Tls(#[from] tern_tls::TlsError),
    /// A PSK identity or key out of bounds.
    #[error("invalid credentials: {0}")]
    Credential(#[from] tern_tls::CredentialError),
    /// A block-wise transfer failed (ETag changed, 4.13 with the server's limit, 4.08, ...).
    #[error("block-wise transfer failed: {0}")]
    Block(#[from] tern_proto::block::TransferError),
    /// The request failed at the message layer (time-out, reset, ...).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A socket error.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The context was shut down.
    #[error("the context has shut down")]
    Closed,
    /// The session was closed with [`Session::close`](crate::Session::close).
    #[error("the session is closed")]
    SessionClosed,
    /// The request does not fit the session's MTU.
    #[error("the request is {size} bytes, more than the session's maximum PDU of {max} bytes")]
    TooLarge {
        /// The encoded request (with the longest token).
        size: usize,
        /// [`Session::max_pdu_size`](crate::Session::max_pdu_size).
        max: usize,
    },
    /// OSCORE protection or unprotection failed: a response that does not decrypt, a
    /// replayed notification, sequence numbers used up.
    #[error("OSCORE: {0}")]
    Oscore(#[from] tern_oscore::OscoreError),
    /// An OSCORE context could not be loaded, or its sequence-number mark not stored.
    #[error("OSCORE: {0}")]
    OscoreConfig(#[from] crate::oscore::OscoreConfigError),
    /// The server answered an OSCORE request without protection: it could not process it
    /// as OSCORE (RFC 8613 §8.2; 4.01 for an unknown context or a replay, 4.00 for a request
    /// that did not decrypt, 4.02 from a server without OSCORE). Nothing of the answer but
    /// its code can be trusted.
    #[error("the server answered without OSCORE: {code:?}{}", if diagnostic.is_empty() { String::new() } else { format!(": {diagnostic}") })]
    OscoreRefused {
        /// The unprotected response's code.
        code: Code,
        /// Its diagnostic payload, as text.
        diagnostic: String,
    },
    /// The server started a re-derivation of the OSCORE context (RFC 8613 Appendix B.2) and
    /// the client followed it: the request was not acted on and should be sent again, which
    /// [`RequestBuilder`](crate::RequestBuilder) does by itself.
    #[error("the OSCORE context was re-derived at the server's request; send the request again")]
    OscoreRederived,
    /// The server started a re-derivation of the OSCORE context (RFC 8613 Appendix B.2), as
    /// it does after losing its replay window, and this context does not allow one
    /// ([`OscoreContext::with_rederivation`](crate::oscore::OscoreContext::with_rederivation)).
    #[error("the server started an OSCORE context re-derivation (RFC 8613 Appendix B.2), which this client does not allow")]
    OscoreRederivationNotAllowed,
    /// A value given to a builder is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A response that is not 2.xx, for callers who want `?` on error codes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}{}", if diagnostic.is_empty() { String::new() } else { format!(": {diagnostic}") })]
pub struct ErrorResponse {
    /// The response code.
    pub code: Code,
    /// The diagnostic payload, if it was text.
    pub diagnostic: String,
}

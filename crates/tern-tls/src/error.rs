//! The one error type of the secure channels, DTLS and TLS alike.

use crate::pki::PkiError;

/// What went wrong setting up or running a channel (DTLS or TLS).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// OpenSSL refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] openssl::error::ErrorStack),
    /// A required credential is missing.
    #[error("no credentials: a {0} needs a PSK or certificates")]
    NoCredentials(&'static str),
    /// Certificate settings that cannot be used.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Settings that contradict each other (for example TLS 1.3 only, with a PSK only).
    #[error("unusable settings: {0}")]
    Settings(&'static str),
    /// The handshake failed (alert, bad key, unsupported suite ...).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The channel is closed.
    #[error("the secure channel is closed")]
    Closed,
}

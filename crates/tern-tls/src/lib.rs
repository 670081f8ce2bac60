//! Tern's secure channels, sans-IO: DTLS 1.2 for datagrams and TLS 1.2/1.3 for streams on
//! OpenSSL, driven by bytes in and out and a timer; PSK credentials and the key-store trait
//! servers look keys up through; certificates.
//!
//! Datagram endpoints use a [`SecurityLayer`] ([`PlainLayer`] or [`DtlsLayer`], channels per
//! peer); stream connections use a [`StreamSecurity`] ([`PlainStream`] or [`TlsChannel`], one
//! per connection). Both kinds of context are built from settings with the same credentials
//! ([`Psk`], [`PskStore`], [`PkiSettings`]), applied to OpenSSL by one shared set-up.
#![warn(missing_docs)]

pub mod alert;
pub mod credentials;
pub mod dtls;
mod error;
mod ffi;
mod hmac;
pub mod layer;
mod pipe;
pub mod pki;
pub mod record;
mod ssl_context;
pub mod stream;
pub mod tls;

pub use alert::Alert;
pub use credentials::{CredentialError, Psk, PskMap, PskStore};
pub use dtls::{
    Accept, ChannelEvent, ChannelState, DtlsChannel, DtlsContext, DtlsListener, DtlsSettings, Role,
    TimerPolicy, TlsError,
};
pub use layer::{
    DtlsLayer, DtlsLimits, LayerEvent, LayerUsage, PeerIdentity, PlainLayer, SecurityLayer,
};
pub use pki::{CertificateCheck, PkiError, PkiSettings, Source};
pub use stream::{PlainStream, StreamSecurity};
pub use tls::{TlsChannel, TlsContext, TlsEvent, TlsSettings, TlsVersion};

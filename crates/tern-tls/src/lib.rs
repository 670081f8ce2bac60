//! Tern's secure channels, sans-IO: DTLS 1.2 on OpenSSL driven by datagrams in and out and a
//! timer, PSK credentials and the key-store trait servers look keys up through.
#![warn(missing_docs)]

pub mod alert;
pub mod credentials;
pub mod dtls;
mod ffi;
mod hmac;
pub mod layer;
mod pipe;
pub mod pki;
pub mod record;

pub use alert::Alert;
pub use credentials::{CredentialError, Psk, PskMap, PskStore};
pub use dtls::{
    Accept, ChannelEvent, ChannelState, DtlsChannel, DtlsContext, DtlsListener, DtlsSettings, Role,
    TimerPolicy, TlsError,
};
pub use layer::{DtlsLayer, DtlsLimits, LayerEvent, PeerIdentity, PlainLayer, SecurityLayer};
pub use pki::{CertificateCheck, PkiError, PkiSettings, Source};

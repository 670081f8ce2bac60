//! Sans-IO CoAP (RFC 7252): the message codec, the option registry, URIs, link format, the
//! message layer and block-wise transfers (RFC 7959).
//!
//! Nothing in this crate opens a socket or reads a clock. The message layer takes datagrams and
//! [`Instant`](std::time::Instant)s in and hands out datagrams to send, events and the time of its
//! next timer, so that loss, duplication, reordering and time can be driven exactly in tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod block;
pub mod code;
pub mod dedup;
pub mod endpoint;
pub mod hash;
pub mod link_format;
pub mod message;
pub mod observe;
pub mod option;
pub mod reliability;
pub mod sim;
pub mod stream;
pub mod uri;
pub mod wire;

pub use code::{Code, MessageType};
pub use endpoint::{
    Endpoint, EndpointConfig, Event, IncomingId, NotificationId, RequestId, Transmit,
};
pub use message::{CoapOption, Message, Options, Token};
pub use option::{ContentFormat, OptionNumber};
pub use reliability::TransmissionParams;

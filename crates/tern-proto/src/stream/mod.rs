//! CoAP over reliable byte streams (RFC 8323): TCP and TLS, sans-IO.
//!
//! [`frame`] is the stream framing (§3.2) with an incremental decoder; [`signal`] the
//! signaling messages (§5: CSM, Ping, Pong, Release, Abort) and their options;
//! [`StreamConnection`] the message layer of one connection: the CSM exchange, requests and
//! responses matched by token, keepalive, Max-Message-Size, time-outs. Like the datagram
//! [`Endpoint`](crate::Endpoint) it opens no socket and reads no clock: bytes and `Instant`s
//! in, bytes, events and the next timer out.

pub mod frame;
pub mod signal;

mod connection;

pub use connection::{
    PeerCsm, StreamConfig, StreamConnection, StreamError, StreamEvent, StreamRole, StreamState,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lifecycle;
#[cfg(test)]
mod tests_pair;

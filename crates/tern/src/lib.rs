//! Tern: a secure CoAP stack. This crate is the runtime and the public API on top of the
//! sans-IO protocol core in [`tern_proto`].
//!
//! A [`Context`] owns UDP endpoints, each driven by one task around a sans-IO
//! [`Endpoint`](tern_proto::Endpoint); a [`Router`] maps paths to async handlers.
//!
//! ```no_run
//! use tern::{Context, Request, Response, Router};
//!
//! # async fn demo() -> Result<(), tern::Error> {
//! let router = Router::new()
//!     .get("/hello", |_| async { Response::text("hello") })
//!     .post("/echo", |r: Request| async move { Response::content(r.payload().to_vec()) });
//! let server = Context::builder()
//!     .bind("127.0.0.1:5683".parse().unwrap())
//!     .router(router)
//!     .build()
//!     .await?;
//!
//! let client = Context::client();
//! let response = client.get("coap://127.0.0.1/hello").send().await?;
//! println!("{:?} {}", response.code(), String::from_utf8_lossy(response.payload()));
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod clock;
mod context;
mod driver;
mod echo;
mod error;
mod handling;
mod message;
pub mod netsim;
mod observe;
mod observing;
pub mod oscore;
mod request;
mod router;
mod session;
mod stream;
mod udp;
pub mod usage;

pub use context::{resolve, Context, ContextBuilder};
pub use error::{Error, ErrorResponse};
pub use message::{PeerIdentity, Request, RequestOptions, Response};
pub use observe::Observation;
pub use request::{Progress, RequestBuilder};
pub use router::{
    AccessControl, AccessFuture, BoxFuture, Handler, Resource, ResourceNotifier, Router,
};
pub use session::{
    Session, SessionBuilder, SessionEvent, SessionState, Transport, DEFAULT_MTU, MIN_MTU,
};
pub use stream::{default_server_config, StreamLimits};
pub use tern_oscore;
pub use tern_oscore::credentials;
pub use tern_proto::stream::StreamConfig;
pub use tern_proto::{self as proto, Code, ContentFormat, OptionNumber};
pub use tern_tls::{self as tls, Psk};
pub use usage::{Gauge, Usage};

/// The README's Rust example, compiled as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

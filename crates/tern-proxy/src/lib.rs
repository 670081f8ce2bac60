//! Tern's cross-proxy between CoAP and HTTP.
//!
//! CoAP → HTTP ([`HttpForwarder`]): a CoAP client names an http:// or https:// target in
//! Proxy-Uri (or Proxy-Scheme and Uri-*), and the gateway forwards the request, mapping
//! methods, options and headers, content formats and status codes, within a policy that stops
//! it from being used to reach internal addresses ([`ProxyPolicy`]). Plug it into a router:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tern_proxy::{ForwarderConfig, HttpForwarder};
//! let forwarder = HttpForwarder::new(ForwarderConfig::default())?;
//! let router = tern::Router::new().forward_proxy(move |request| {
//!     let forwarder = forwarder.clone();
//!     async move { forwarder.forward(request).await }
//! });
//! let gateway = tern::Context::builder()
//!     .bind("0.0.0.0:5683".parse()?)
//!     .router(router)
//!     .build()
//!     .await?;
//! # drop(gateway); Ok(()) }
//! ```
//!
//! HTTP → CoAP ([`http2coap`]): an HTTP API (`/providers/{name}/{path}`, `/proxy/{coap-uri}`,
//! bearer token, observe as server-sent events) through which applications call devices.
//!
//! The mapping tables live in [`status`], [`media`] and [`translate`], as plain functions.

pub mod cache;
pub mod coap2http;
pub mod http2coap;
pub mod media;
pub mod policy;
pub mod status;
pub mod translate;

pub use cache::{CacheStats, ResponseCache};
pub use coap2http::{ForwarderConfig, HttpForwarder, PolicyResolver, ProxyError, MAX_TIMEOUT};
pub use http2coap::{ApiConfig, Provider};
pub use policy::{AllowRule, ProxyPolicy, Refusal};

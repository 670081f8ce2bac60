//! Sessions: one ongoing association with one peer, as libcoap's `coap_session` — created from
//! a [`Context`](crate::Context) for a URI, with its own credentials and transmission
//! parameters, refcounted by cloning, closed (close_notify for DTLS) when the last handle is
//! dropped, its waiting requests then failing with a clear error. Events about every session
//! of a context come from [`Context::events`](crate::Context::events).

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tern_proto::uri::{CoapUri, Scheme};
use tern_proto::{Code, TransmissionParams};
use tern_tls::{DtlsContext, DtlsSettings, PkiSettings, Psk};

use crate::context::{resolve, Context, EndpointHandle, RequestBuilder};
use crate::driver::Command;
use crate::error::Error;

/// Something that happened to a session, for subscribers of [`Context::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A DTLS handshake started (a client's first request, or a server's valid cookie).
    HandshakeStarted {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
    /// The handshake completed; the session is established.
    Established {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
    /// The handshake failed.
    HandshakeFailed {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// Why (alert, wrong key, time-out).
        reason: String,
    },
    /// The session closed: close_notify, an error, released locally or freed.
    Closed {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// An idle server session was freed after the idle time-out.
    IdleFreed {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
}

/// Builds a [`Session`]: see [`Context::session`](crate::Context::session).
pub struct SessionBuilder {
    pub(crate) context: Context,
    pub(crate) uri: Result<CoapUri, tern_proto::uri::UriError>,
    pub(crate) psk: Option<Psk>,
    pub(crate) pki: Option<PkiSettings>,
    pub(crate) params: Option<TransmissionParams>,
    pub(crate) dtls: Option<DtlsSettings>,
}

impl SessionBuilder {
    /// This session's PSK, instead of the context's.
    pub fn psk(mut self, psk: Psk) -> Self {
        self.psk = Some(psk);
        self
    }

    /// This session's certificates, instead of the context's.
    pub fn pki(mut self, pki: PkiSettings) -> Self {
        self.pki = Some(pki);
        self
    }

    /// Other DTLS settings (handshake time-out, suites, MTU) for this session.
    pub fn dtls_settings(mut self, settings: DtlsSettings) -> Self {
        self.dtls = Some(settings);
        self
    }

    /// This session's transmission parameters (ACK_TIMEOUT, MAX_RETRANSMIT, NSTART, ...).
    pub fn params(mut self, params: TransmissionParams) -> Self {
        self.params = Some(params);
        self
    }

    /// Resolves the peer and sets the session up; a DTLS handshake starts with the first
    /// request. Credentials are checked here, before any traffic.
    pub async fn build(self) -> Result<Session, Error> {
        let uri = self.uri?;
        let secure = match uri.scheme {
            Scheme::Coap => false,
            Scheme::Coaps => true,
            other => return Err(Error::UnsupportedScheme(other)),
        };
        let peer = resolve(&uri).await?;
        let own_credentials = self.psk.is_some() || self.pki.is_some();
        if own_credentials && !secure {
            return Err(Error::Config(
                "credentials were given for a coap:// session".into(),
            ));
        }
        let endpoint = self
            .context
            .endpoint_for_session(peer, secure, own_credentials)?;
        if own_credentials {
            let base = self.dtls.unwrap_or_default();
            let settings = DtlsSettings {
                psk: self.psk,
                pki: self.pki,
                ..base
            };
            let ctx = DtlsContext::client(settings)?;
            endpoint
                .commands
                .send(Command::PeerCredentials(peer, Some(Box::new(ctx))))
                .map_err(|_| Error::Closed)?;
        }
        if let Some(params) = self.params {
            params
                .validate()
                .map_err(|e| Error::Config(e.to_string()))?;
            endpoint
                .commands
                .send(Command::PeerParams(peer, params))
                .map_err(|_| Error::Closed)?;
        }
        Ok(Session {
            inner: Arc::new(SessionInner {
                context: self.context,
                uri,
                peer,
                secure,
                own_credentials,
                endpoint,
                app_data: Mutex::new(None),
            }),
        })
    }
}

struct SessionInner {
    context: Context,
    uri: CoapUri,
    peer: SocketAddr,
    secure: bool,
    own_credentials: bool,
    endpoint: Arc<EndpointHandle>,
    app_data: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
}

impl Drop for SessionInner {
    /// The last reference is gone: close the association (close_notify for DTLS) and fail
    /// its waiting requests.
    fn drop(&mut self) {
        let commands = &self.endpoint.commands;
        let _ = commands.send(Command::Disconnect(self.peer, "session released".into()));
        if self.own_credentials {
            let _ = commands.send(Command::PeerCredentials(self.peer, None));
        }
    }
}

/// One ongoing association with one peer. Clone it to take another reference.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl Session {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Our address.
    pub fn local(&self) -> SocketAddr {
        self.inner.endpoint.local
    }

    /// Whether the session is protected (DTLS).
    pub fn is_secure(&self) -> bool {
        self.inner.secure
    }

    /// References held to this session.
    pub fn reference_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The largest CoAP message this session sends in one datagram: the path MTU (1280) less
    /// UDP/IP headers, and for DTLS the record overhead (13 header + 8 explicit nonce + 8 tag
    /// for AES-128-CCM-8).
    pub fn max_pdu_size(&self) -> usize {
        let ip_udp = if self.inner.peer.is_ipv4() { 28 } else { 48 };
        let dtls = if self.inner.secure { 29 } else { 0 };
        1280 - ip_udp - dtls
    }

    /// Stores a value for the application (one slot, any type).
    pub fn set_app_data<T: Any + Send + Sync>(&self, value: T) {
        if let Ok(mut slot) = self.inner.app_data.lock() {
            *slot = Some(Arc::new(value));
        }
    }

    /// The value stored with [`set_app_data`](Self::set_app_data), if it is a `T`.
    pub fn app_data<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let slot = self.inner.app_data.lock().ok()?;
        slot.clone()?.downcast::<T>().ok()
    }

    /// A request on this session to `path` (with an optional `?query`).
    pub fn request(&self, method: Code, path: &str) -> RequestBuilder {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut uri = self.inner.uri.clone();
        uri.path = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        uri.query = query
            .split('&')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self.inner
            .context
            .request_uri(method, uri)
            .via_session(self.clone())
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Code::GET, path)
    }

    /// POST to `path`.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Code::POST, path)
    }

    /// PUT to `path`.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Code::PUT, path)
    }

    /// DELETE `path`.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Code::DELETE, path)
    }

    pub(crate) fn target(&self) -> (Arc<EndpointHandle>, SocketAddr) {
        (self.inner.endpoint.clone(), self.inner.peer)
    }
}

impl fmt::Display for Session {
    /// `127.0.0.1:40123 <-> 127.0.0.1:5684 DTLS`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.inner.secure { "DTLS" } else { "UDP" };
        write!(f, "{} <-> {} {proto}", self.local(), self.peer())
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session({self})")
    }
}

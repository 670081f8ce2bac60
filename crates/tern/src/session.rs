//! Sessions: one ongoing association with one peer, as libcoap's `coap_session` — created from
//! a [`Context`](crate::Context) for a URI, with its own socket (optionally bound to a chosen
//! local address), credentials, MTU and transmission parameters; refcounted by cloning, closed
//! (close_notify for DTLS) when the last handle is dropped or [`Session::close`] is called, its
//! waiting requests then failing with a clear error. Events about every session of a context
//! come from [`Context::events`](crate::Context::events).

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tern_proto::uri::{CoapUri, Scheme};
use tern_proto::{Code, TransmissionParams};
use tern_tls::{DtlsContext, DtlsSettings, PkiSettings, Psk};

use crate::context::{resolve, Context, EndpointHandle};
use crate::driver::Command;
use crate::error::Error;
use crate::request::RequestBuilder;

/// The transport under a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// coap:// — plain UDP.
    Udp,
    /// coaps:// — DTLS 1.2 over UDP.
    Dtls,
    /// coap+tcp:// — TCP (RFC 8323).
    Tcp,
    /// coaps+tcp:// — TLS over TCP (RFC 8323).
    Tls,
}

impl Transport {
    /// Whether the transport is a reliable byte stream (TCP or TLS).
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Dtls => "DTLS",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        })
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Set up, no handshake yet: a DTLS handshake starts with the first request.
    Connecting,
    /// The DTLS handshake is running.
    Handshaking,
    /// Traffic flows (a UDP session is established from the start).
    Established,
    /// [`Session::close`] was called; close_notify is on its way.
    Closing,
    /// Closed: released, closed by the peer, failed, or freed. A DTLS session that closed
    /// without [`Session::close`] reconnects on its next request.
    Closed,
}

/// Something that happened to a session, for subscribers of [`Context::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A client session was created ([`SessionBuilder::build`]).
    Created {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// UDP, DTLS, TCP or TLS.
        transport: Transport,
    },
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
    /// The peer sent a TLS alert: close_notify, or a fatal one (the handshake failure or
    /// close it causes follows as its own event).
    AlertReceived {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// The alert.
        alert: tern_tls::Alert,
    },
    /// An idle server session was freed after the idle time-out.
    IdleFreed {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
    /// A server session was created for a new peer (DTLS: after a valid cookie).
    ServerSessionCreated {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
    },
    /// A server session was deleted (closed, failed, idle, or evicted for a newer one).
    ServerSessionDeleted {
        /// Our address.
        local: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// The path MTU assumed unless one is set: the IPv6 minimum (RFC 8200 §5).
pub const DEFAULT_MTU: u16 = 1280;

/// The smallest MTU a session accepts: the IPv4 minimum datagram every host must reassemble
/// (RFC 791), which still leaves room for a CoAP header, token and a few options.
pub const MIN_MTU: u16 = 576;

/// Builds a [`Session`]: see [`Context::session`](crate::Context::session).
pub struct SessionBuilder {
    pub(crate) context: Context,
    pub(crate) uri: Result<CoapUri, tern_proto::uri::UriError>,
    pub(crate) psk: Option<Psk>,
    pub(crate) pki: Option<PkiSettings>,
    pub(crate) params: Option<TransmissionParams>,
    pub(crate) dtls: Option<DtlsSettings>,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) mtu: u16,
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

    /// Other DTLS settings (handshake time-out, suites) for this session.
    pub fn dtls_settings(mut self, settings: DtlsSettings) -> Self {
        self.dtls = Some(settings);
        self
    }

    /// This session's transmission parameters (ACK_TIMEOUT, MAX_RETRANSMIT, NSTART, ...).
    pub fn params(mut self, params: TransmissionParams) -> Self {
        self.params = Some(params);
        self
    }

    /// Binds the session's socket to this local address (port 0: any port); by default an
    /// ephemeral port on the unspecified address of the peer's family.
    pub fn local(mut self, addr: SocketAddr) -> Self {
        self.local = Some(addr);
        self
    }

    /// The path MTU ([`DEFAULT_MTU`] unless set): it bounds
    /// [`Session::max_pdu_size`] and the size of DTLS handshake records.
    pub fn mtu(mut self, mtu: u16) -> Self {
        self.mtu = mtu;
        self
    }

    /// Resolves the peer, binds the session's socket and sets the session up; a DTLS handshake
    /// starts with the first request. Credentials and settings are checked here, before any
    /// traffic.
    pub async fn build(self) -> Result<Session, Error> {
        let uri = self.uri.clone()?;
        let transport = match uri.scheme {
            Scheme::Coap => Transport::Udp,
            Scheme::Coaps => Transport::Dtls,
            Scheme::CoapTcp => Transport::Tcp,
            Scheme::CoapsTcp => Transport::Tls,
        };
        if self.mtu < MIN_MTU {
            return Err(Error::Config(format!(
                "MTU {} is below the minimum of {MIN_MTU}",
                self.mtu
            )));
        }
        let peer = resolve(&uri).await?;
        if let Some(local) = self.local {
            if local.is_ipv4() != peer.is_ipv4() {
                return Err(Error::Config(format!(
                    "local address {local} and peer {peer} are of different address families"
                )));
            }
        }
        if let Some(params) = &self.params {
            params
                .validate()
                .map_err(|e| Error::Config(e.to_string()))?;
        }
        if transport.is_stream() {
            return self.build_stream(uri, peer, transport).await;
        }
        let own_credentials = self.psk.is_some() || self.pki.is_some();
        let (client, record_overhead) = match transport {
            Transport::Udp if own_credentials || self.dtls.is_some() => {
                return Err(Error::Config(
                    "DTLS credentials or settings were given for a coap:// session".into(),
                ))
            }
            Transport::Udp | Transport::Tcp | Transport::Tls => (None, 0),
            Transport::Dtls => {
                let ctx = if own_credentials || self.dtls.is_some() {
                    let mut settings = self
                        .dtls
                        .unwrap_or_else(|| self.context.client_dtls_settings());
                    settings.mtu = u32::from(self.mtu);
                    if own_credentials {
                        // The session's credentials replace the context's, not add to them.
                        settings.psk = self.psk;
                        settings.pki = self.pki;
                    } else if settings.psk.is_none() && settings.pki.is_none() {
                        if let Some(stored) = self.context.client_dtls_for(peer, self.mtu)? {
                            settings.psk = stored.settings().psk.clone();
                            settings.pki = stored.settings().pki.clone();
                        }
                    }
                    if settings.psk.is_none() && settings.pki.is_none() {
                        return Err(Error::NoCredentials);
                    }
                    DtlsContext::client(settings)?
                } else {
                    self.context
                        .client_dtls_for(peer, self.mtu)?
                        .ok_or(Error::NoCredentials)?
                };
                let overhead = record_overhead(&ctx.settings().ciphers);
                (Some(ctx), overhead)
            }
        };
        let state = Arc::new(Mutex::new(match transport {
            Transport::Udp => SessionState::Established,
            _ => SessionState::Connecting,
        }));
        let endpoint =
            self.context
                .spawn_session_endpoint(peer, self.local, client, state.clone())?;
        if let Some(params) = self.params {
            endpoint
                .commands
                .send(Command::PeerParams(peer, params))
                .map_err(|_| Error::Closed)?;
        }
        self.context.emit(SessionEvent::Created {
            local: endpoint.local,
            peer,
            transport,
        });
        Ok(Session {
            inner: Arc::new(SessionInner {
                context: self.context,
                uri,
                peer,
                transport,
                endpoint,
                state,
                closed: AtomicBool::new(false),
                mtu: AtomicU16::new(self.mtu),
                record_overhead,
                peer_max_message_size: None,
                app_data: Mutex::new(None),
            }),
        })
    }

    /// A session over TCP or TLS: its own connection, opened now.
    async fn build_stream(
        self,
        uri: CoapUri,
        peer: SocketAddr,
        transport: Transport,
    ) -> Result<Session, Error> {
        let secure = transport == Transport::Tls;
        if !secure && (self.psk.is_some() || self.pki.is_some() || self.dtls.is_some()) {
            return Err(Error::Config(
                "TLS credentials or settings were given for a coap+tcp:// session".into(),
            ));
        }
        if self.params.is_some() {
            return Err(Error::Config(
                "retransmission parameters mean nothing on a coap+tcp:// or coaps+tcp:// session"
                    .into(),
            ));
        }
        if self.dtls.is_some() {
            return Err(Error::Config(
                "DTLS settings were given for a stream session; TLS takes the context's \
                 tls_client settings"
                    .into(),
            ));
        }
        let tls = if secure {
            let own = (self.psk.is_some() || self.pki.is_some()).then_some((self.psk, self.pki));
            Some(self.context.client_tls_for(peer, own)?)
        } else {
            None
        };
        let state = Arc::new(Mutex::new(SessionState::Connecting));
        // RFC 8323 §5.3.1: 1152 bytes until the peer's CSM says otherwise.
        let peer_max = Arc::new(AtomicU32::new(1152));
        let endpoint = crate::stream::connect(
            peer,
            self.local,
            tls.as_ref(),
            self.context.stream_setup(),
            Some(crate::stream::SessionLink {
                state: state.clone(),
                peer_max_message_size: peer_max.clone(),
            }),
        )
        .await?;
        self.context.track_session_endpoint(&endpoint);
        self.context.emit(SessionEvent::Created {
            local: endpoint.local,
            peer,
            transport,
        });
        Ok(Session {
            inner: Arc::new(SessionInner {
                context: self.context,
                uri,
                peer,
                transport,
                endpoint,
                state,
                closed: AtomicBool::new(false),
                mtu: AtomicU16::new(self.mtu),
                record_overhead: 0,
                peer_max_message_size: Some(peer_max),
                app_data: Mutex::new(None),
            }),
        })
    }
}

/// Bytes a DTLS 1.2 record adds to its plaintext with these suites: the 13-byte header, the
/// 8-byte explicit nonce, and the tag — 8 bytes for the CCM_8 suites, 16 for the other AEADs.
/// Suites that are not AEAD (CBC) are not offered by Tern.
fn record_overhead(ciphers: &str) -> usize {
    let all_ccm8 = ciphers
        .split(':')
        .filter(|c| !c.is_empty())
        .all(|c| c.ends_with("CCM8") || c.ends_with("CCM_8"));
    13 + 8 + if all_ccm8 { 8 } else { 16 }
}

struct SessionInner {
    context: Context,
    uri: CoapUri,
    peer: SocketAddr,
    transport: Transport,
    endpoint: Arc<EndpointHandle>,
    /// Updated by the session's driver as the channel changes state.
    state: Arc<Mutex<SessionState>>,
    /// [`Session::close`] was called: no more requests.
    closed: AtomicBool,
    mtu: AtomicU16,
    record_overhead: usize,
    /// For TCP and TLS: the peer's Max-Message-Size, kept up to date by the driver.
    peer_max_message_size: Option<Arc<AtomicU32>>,
    app_data: Mutex<Option<Arc<dyn Any + Send + Sync>>>,
}

impl SessionInner {
    fn shut(&self, reason: &str) {
        let commands = &self.endpoint.commands;
        let _ = commands.send(Command::Disconnect(self.peer, reason.to_string()));
        let _ = commands.send(Command::Shutdown);
    }
}

impl Drop for SessionInner {
    /// The last reference is gone: close the association (close_notify for DTLS), fail its
    /// waiting requests and stop its socket.
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.shut("session released");
        }
    }
}

/// One ongoing association with one peer, on its own socket. Clone it to take another
/// reference; the last one dropped closes it.
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

    /// UDP, DTLS, TCP or TLS.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// Whether the session is protected (DTLS or TLS).
    pub fn is_secure(&self) -> bool {
        matches!(self.inner.transport, Transport::Dtls | Transport::Tls)
    }

    /// Where the session is in its life.
    pub fn state(&self) -> SessionState {
        self.inner
            .state
            .lock()
            .map(|s| *s)
            .unwrap_or(SessionState::Closed)
    }

    /// References held to this session.
    pub fn reference_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Closes the session now, whoever else holds it: close_notify for DTLS, waiting requests
    /// fail, and later requests fail with [`Error::SessionClosed`].
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut state) = self.inner.state.lock() {
            if *state != SessionState::Closed {
                *state = SessionState::Closing;
            }
        }
        self.inner.shut("session closed");
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The path MTU.
    pub fn mtu(&self) -> u16 {
        self.inner.mtu.load(Ordering::Relaxed)
    }

    /// Sets the path MTU (at least [`MIN_MTU`]): later requests are checked against the new
    /// [`max_pdu_size`](Self::max_pdu_size). DTLS handshake records keep the MTU the session
    /// was built with.
    pub fn set_mtu(&self, mtu: u16) -> Result<(), Error> {
        if mtu < MIN_MTU {
            return Err(Error::Config(format!(
                "MTU {mtu} is below the minimum of {MIN_MTU}"
            )));
        }
        self.inner.mtu.store(mtu, Ordering::Relaxed);
        Ok(())
    }

    /// The largest CoAP message this session sends in one datagram: the MTU less the IP and
    /// UDP headers (28 bytes for IPv4, 48 for IPv6) and, for DTLS, the record overhead of its
    /// cipher suites (29 bytes for AES-128-CCM-8). A larger request fails with
    /// [`Error::TooLarge`] before it is sent. Over TCP and TLS it is the peer's
    /// Max-Message-Size (RFC 8323 §5.3.1: 1152 until the peer's CSM says otherwise).
    pub fn max_pdu_size(&self) -> usize {
        if let Some(max) = &self.inner.peer_max_message_size {
            return max.load(Ordering::Relaxed) as usize;
        }
        let ip_udp = if self.inner.peer.is_ipv4() { 28 } else { 48 };
        usize::from(self.mtu()).saturating_sub(ip_udp + self.inner.record_overhead)
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
        write!(
            f,
            "{} <-> {} {}",
            self.local(),
            self.peer(),
            self.inner.transport
        )
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session({self}, {:?})", self.state())
    }
}

#[cfg(test)]
mod tests {
    use super::record_overhead;

    #[test]
    fn record_overhead_follows_the_tag_length() {
        assert_eq!(
            record_overhead(&tern_tls::DtlsSettings::default().ciphers),
            29
        );
        assert_eq!(record_overhead("PSK-AES128-CCM8:PSK-AES128-GCM-SHA256"), 37);
        assert_eq!(record_overhead("ECDHE-ECDSA-AES128-CCM"), 37);
    }
}

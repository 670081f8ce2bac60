//! DTLS 1.2 (RFC 6347) on OpenSSL, driven sans-IO: datagrams in, datagrams out, a timer.
//!
//! A [`DtlsContext`] holds the configuration (credentials, cipher suites, MTU, retransmission
//! schedule). A client opens a [`DtlsChannel`] with [`DtlsChannel::connect`]; a server offers
//! each datagram from an unknown peer to its [`DtlsListener`], which answers ClientHellos with a
//! HelloVerifyRequest cookie (RFC 6347 §4.2.1) from one reusable SSL object and opens a channel
//! only once a ClientHello returns with a valid cookie — no per-peer state before that.
//!
//! OpenSSL keeps its own clock for the retransmission timer: the schedule is ours (see
//! [`TimerPolicy`]) and [`DtlsChannel::poll_timeout`] reports it, but OpenSSL decides expiry by
//! wall-clock time, so flight-loss tests run on short real timeouts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{
    ErrorCode, NameType, SniError, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions,
    SslStream, SslVersion,
};

use openssl::ssl::SslVerifyMode;

use crate::alert::Alert;
use crate::credentials::{Psk, PskStore};
pub use crate::ffi::TimerPolicy;
use crate::ffi::{self, ListenOutcome};
use crate::pipe::DatagramPipe;
use crate::pki::{CertificateCheck, PkiError, PkiSettings};
use crate::record;

/// The cipher suites RFC 7252 §9 makes mandatory, offered by default (a suite is only used
/// when its credentials are configured).
pub const DEFAULT_CIPHERS: &str = "PSK-AES128-CCM8:ECDHE-ECDSA-AES128-CCM8";

/// What went wrong setting up or running a channel.
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
    /// The handshake failed (alert, bad key, unsupported suite ...).
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
    /// The channel is closed.
    #[error("the DTLS channel is closed")]
    Closed,
}

/// A server's or client's DTLS settings.
#[derive(Clone)]
pub struct DtlsSettings {
    /// The client's PSK (identity and key).
    pub psk: Option<Psk>,
    /// Where a server looks up PSKs by identity.
    pub psk_store: Option<Arc<dyn PskStore>>,
    /// The identity hint a server sends (none when `None` or empty).
    pub identity_hint: Option<Vec<u8>>,
    /// OpenSSL cipher list; the RFC 7252 suites by default.
    pub ciphers: String,
    /// Certificates: ours, and how the peer's are checked.
    pub pki: Option<PkiSettings>,
    /// Path MTU for records (default 1280, the IPv6 minimum).
    pub mtu: u32,
    /// Handshake retransmission schedule (default 1 s doubling to 60 s).
    pub timer: TimerPolicy,
    /// A handshake not complete by then fails (default 30 s). DTLS drops records it cannot
    /// authenticate, so a wrong key shows as a handshake that never finishes: this bounds it,
    /// and bounds how long a server holds a half-open handshake.
    pub handshake_timeout: Duration,
}

impl Default for DtlsSettings {
    fn default() -> Self {
        DtlsSettings {
            psk: None,
            psk_store: None,
            identity_hint: None,
            ciphers: DEFAULT_CIPHERS.to_string(),
            pki: None,
            mtu: 1280,
            timer: TimerPolicy {
                initial_us: 1_000_000,
                max_us: 60_000_000,
            },
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether a context makes clients or servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connects.
    Client,
    /// Accepts.
    Server,
}

/// A configured DTLS context from which channels are made.
#[derive(Clone)]
pub struct DtlsContext {
    ctx: SslContext,
    role: Role,
    settings: DtlsSettings,
}

fn base_builder(role: Role, settings: &DtlsSettings) -> Result<SslContextBuilder, TlsError> {
    let method = match role {
        Role::Client => SslMethod::dtls_client(),
        Role::Server => SslMethod::dtls_server(),
    };
    let mut b = SslContext::builder(method)?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_cipher_list(&settings.ciphers)?;
    // We set the MTU ourselves; there is no socket to ask.
    b.set_options(SslOptions::NO_QUERY_MTU);
    if let Some(pki) = &settings.pki {
        configure_pki(&mut b, role, pki)?;
    }
    Ok(b)
}

/// Loads and checks certificates, the key and trust anchors; sets how the peer is verified.
fn configure_pki(b: &mut SslContextBuilder, role: Role, pki: &PkiSettings) -> Result<(), TlsError> {
    match (&pki.certificate, &pki.private_key) {
        (Some(cert), Some(key)) => {
            let chain = crate::pki::load_certificates(cert, "certificate")?;
            let key = crate::pki::load_key(key, "private key")?;
            let mut chain = chain.into_iter();
            if let Some(leaf) = chain.next() {
                let matches = leaf.public_key().is_ok_and(|public| public.public_eq(&key));
                if !matches {
                    return Err(PkiError::KeyMismatch.into());
                }
                b.set_certificate(&leaf)?;
            }
            for extra in chain {
                b.add_extra_chain_cert(extra)?;
            }
            b.set_private_key(&key)?;
            b.check_private_key().map_err(|_| PkiError::KeyMismatch)?;
        }
        (None, None) if role == Role::Client => {}
        (None, None) => {
            return Err(TlsError::NoCredentials(
                "DTLS server with PKI (a certificate)",
            ))
        }
        _ => return Err(PkiError::Incomplete.into()),
    }
    if let Some(ca) = &pki.ca {
        for cert in crate::pki::load_certificates(ca, "CA certificate")? {
            b.cert_store_mut().add_cert(cert)?;
        }
    }
    // RFC 7252 §9.1.3.3 ECDSA: P-256.
    b.set_groups_list("P-256")?;
    b.set_verify_depth(pki.chain_depth);
    let mode = match (role, pki.verify_peer, pki.require_peer_certificate) {
        (_, false, _) => SslVerifyMode::NONE,
        (Role::Server, true, true) => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        (_, true, _) => SslVerifyMode::PEER,
    };
    let settings = pki.clone();
    b.set_verify_callback(mode, move |preverified, ctx| {
        let mut ok = preverified || crate::pki::excusable(ctx.error(), &settings);
        if let (Some(validate), Some(cert)) = (&settings.validate, ctx.current_cert()) {
            let (common_name, sans) = crate::pki::names(cert);
            let check = CertificateCheck {
                common_name,
                sans,
                der: cert.to_der().unwrap_or_default(),
                depth: ctx.error_depth(),
                validated: ok,
            };
            ok = validate(&check);
        }
        ok
    });
    Ok(())
}

/// Presents another certificate when the client's SNI names one of `pki.by_server_name`.
fn select_certificate_by_sni(
    b: &mut SslContextBuilder,
    settings: &DtlsSettings,
    pki: &PkiSettings,
) -> Result<(), TlsError> {
    if pki.by_server_name.is_empty() {
        return Ok(());
    }
    let mut alternates = Vec::with_capacity(pki.by_server_name.len());
    for (name, certificate, key) in &pki.by_server_name {
        let alternate = DtlsSettings {
            pki: Some(PkiSettings {
                certificate: Some(certificate.clone()),
                private_key: Some(key.clone()),
                by_server_name: Vec::new(),
                ..pki.clone()
            }),
            ..settings.clone()
        };
        let ctx = base_builder(Role::Server, &alternate)?.build();
        alternates.push((name.to_ascii_lowercase(), ctx));
    }
    b.set_servername_callback(move |ssl, _alert| {
        let Some(name) = ssl.servername(NameType::HOST_NAME) else {
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if let Some((_, ctx)) = alternates.iter().find(|(n, _)| *n == name) {
            // Only the certificate and key change; callbacks stay those of the SSL object.
            ssl.set_ssl_context(ctx)
                .map_err(|_| SniError::ALERT_FATAL)?;
        }
        Ok(())
    });
    Ok(())
}

impl DtlsContext {
    /// A client context: needs `settings.psk`.
    pub fn client(settings: DtlsSettings) -> Result<Self, TlsError> {
        if settings.psk.is_none() && settings.pki.is_none() {
            return Err(TlsError::NoCredentials("DTLS client"));
        }
        let mut b = base_builder(Role::Client, &settings)?;
        if let Some(psk) = settings.psk.clone() {
            b.set_psk_client_callback(move |_ssl, _hint, identity_out, key_out| {
                let (identity, key) = (psk.identity(), psk.key());
                // Written as a C string; both fit by construction (128 + NUL, 64).
                if identity.len() >= identity_out.len() || key.len() > key_out.len() {
                    return Ok(0);
                }
                identity_out[..identity.len()].copy_from_slice(identity);
                identity_out[identity.len()] = 0;
                key_out[..key.len()].copy_from_slice(key);
                Ok(key.len())
            });
        }
        Ok(DtlsContext {
            ctx: b.build(),
            role: Role::Client,
            settings,
        })
    }

    /// A server context: needs `settings.psk_store`. Cookies are keyed with a fresh random
    /// secret per context.
    pub fn server(settings: DtlsSettings) -> Result<Self, TlsError> {
        if settings.psk_store.is_none() && settings.pki.is_none() {
            return Err(TlsError::NoCredentials("DTLS server"));
        }
        let mut b = base_builder(Role::Server, &settings)?;
        if let Some(store) = settings.psk_store.clone() {
            b.set_psk_server_callback(move |_ssl, identity, key_out| {
                let Some(identity) = identity else { return Ok(0) };
                match store.key_for(identity) {
                    Some(key) if key.len() <= key_out.len() => {
                        key_out[..key.len()].copy_from_slice(&key);
                        Ok(key.len())
                    }
                    _ => {
                        tracing::debug!(identity = %String::from_utf8_lossy(identity), "unknown PSK identity");
                        Ok(0)
                    }
                }
            });
        }
        if let Some(pki) = &settings.pki {
            select_certificate_by_sni(&mut b, &settings, pki)?;
        }
        ffi::set_identity_hint(&mut b, settings.identity_hint.as_deref())?;
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret)?;
        let cookie_key = PKey::hmac(&secret)?;
        let verify_key = cookie_key.clone();
        b.set_cookie_generate_cb(move |ssl, out| {
            let cookie = cookie_for(&cookie_key, stored_peer(ssl))?;
            let n = cookie.len().min(out.len());
            out[..n].copy_from_slice(&cookie[..n]);
            Ok(n)
        });
        b.set_cookie_verify_cb(move |ssl, cookie| {
            match cookie_for(&verify_key, stored_peer(ssl)) {
                Ok(expected) => {
                    expected.len() == cookie.len() && openssl::memcmp::eq(&expected, cookie)
                }
                Err(_) => false,
            }
        });
        Ok(DtlsContext {
            ctx: b.build(),
            role: Role::Server,
            settings,
        })
    }

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &DtlsSettings {
        &self.settings
    }

    fn new_stream(&self) -> Result<SslStream<DatagramPipe>, TlsError> {
        let mut ssl = Ssl::new(&self.ctx)?;
        ssl.set_mtu(self.settings.mtu)?;
        ffi::set_timer_policy(&mut ssl, self.settings.timer)?;
        match self.role {
            Role::Client => {
                ssl.set_connect_state();
                if let Some(pki) = &self.settings.pki {
                    if let Some(sni) = &pki.sni {
                        ssl.set_hostname(sni)?;
                    }
                    if let Some(name) = &pki.expected_name {
                        let param = ssl.param_mut();
                        match name.parse::<std::net::IpAddr>() {
                            Ok(ip) => param.set_ip(ip)?,
                            Err(_) => param.set_host(name)?,
                        }
                    }
                }
            }
            Role::Server => ssl.set_accept_state(),
        }
        if self.role == Role::Server {
            ssl.set_ex_data(peer_index()?, std::sync::Mutex::new(None));
        }
        Ok(SslStream::new(ssl, DatagramPipe::default())?)
    }
}

/// Where the listener puts the address of the peer it is talking to, for the cookie callbacks.
type PeerSlot = std::sync::Mutex<Option<SocketAddr>>;

/// The index under which the listener stores the peer address for the cookie callbacks.
fn peer_index() -> Result<openssl::ex_data::Index<Ssl, PeerSlot>, openssl::error::ErrorStack> {
    static INDEX: std::sync::OnceLock<openssl::ex_data::Index<Ssl, PeerSlot>> =
        std::sync::OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// The peer address stored for the cookie callbacks.
fn stored_peer(ssl: &openssl::ssl::SslRef) -> Option<SocketAddr> {
    let index = peer_index().ok()?;
    let slot = ssl.ex_data(index)?.lock().ok()?;
    *slot
}

/// HMAC-SHA256 of the peer address (RFC 6347 §4.2.1's Cookie = HMAC(Secret, Client-IP, ...)).
fn cookie_for(
    key: &PKey<openssl::pkey::Private>,
    peer: Option<SocketAddr>,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut signer = Signer::new(MessageDigest::sha256(), key)?;
    signer.update(peer.map(|p| p.to_string()).unwrap_or_default().as_bytes())?;
    let mut mac = signer.sign_to_vec()?;
    mac.truncate(16);
    Ok(mac)
}

/// The state of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelState {
    /// Handshake in progress.
    Handshaking,
    /// Ready for application data.
    Established,
    /// Closed, with the reason.
    Closed(String),
}

/// Something that happened on a channel, for the session's event subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The handshake completed.
    Established,
    /// The handshake failed.
    HandshakeFailed(String),
    /// The peer closed the channel (close_notify) or it failed after the handshake.
    Closed(String),
    /// The peer sent an alert (reported before the failure or close it causes).
    AlertReceived(Alert),
}

/// One DTLS association with one peer, sans-IO.
pub struct DtlsChannel {
    stream: SslStream<DatagramPipe>,
    state: ChannelState,
    received: VecDeque<Vec<u8>>,
    events: VecDeque<ChannelEvent>,
    /// OpenSSL's retransmission timer, as of the last drive.
    timer: Option<Instant>,
    handshake_deadline: Option<Instant>,
    handshake_timeout: Duration,
}

thread_local! {
    /// One scratch buffer per thread for decrypted records, instead of a zeroed allocation per
    /// datagram: the largest DTLS plaintext is 2^14 bytes.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 16_384]);
}

/// Most decrypted datagrams held for the application before the oldest is dropped.
const MAX_RECEIVED: usize = 64;

impl DtlsChannel {
    /// Starts a client handshake; the ClientHello is ready in [`poll_transmit`](Self::poll_transmit).
    pub fn connect(ctx: &DtlsContext, now: Instant) -> Result<Self, TlsError> {
        if ctx.role != Role::Client {
            return Err(TlsError::NoCredentials("client context for connect"));
        }
        let mut channel =
            DtlsChannel::from_stream(ctx.new_stream()?, now, ctx.settings.handshake_timeout);
        channel.drive(now);
        Ok(channel)
    }

    fn from_stream(
        stream: SslStream<DatagramPipe>,
        now: Instant,
        handshake_timeout: Duration,
    ) -> Self {
        DtlsChannel {
            stream,
            state: ChannelState::Handshaking,
            received: VecDeque::new(),
            events: VecDeque::new(),
            timer: None,
            handshake_deadline: now.checked_add(handshake_timeout),
            handshake_timeout,
        }
    }

    /// The state.
    pub fn state(&self) -> &ChannelState {
        &self.state
    }

    /// Whether application data can flow.
    pub fn is_established(&self) -> bool {
        self.state == ChannelState::Established
    }

    /// The PSK identity the peer used (server side) or we used (client side).
    pub fn psk_identity(&self) -> Option<Vec<u8>> {
        self.stream.ssl().psk_identity().map(<[u8]>::to_vec)
    }

    /// The peer certificate's common name and SANs, if it sent one.
    pub fn peer_certificate_names(&self) -> Option<(Option<String>, Vec<String>)> {
        let cert = self.stream.ssl().peer_certificate()?;
        Some(crate::pki::names(&cert))
    }

    /// The negotiated cipher suite.
    pub fn cipher(&self) -> Option<&'static str> {
        self.stream.ssl().current_cipher().map(|c| c.name())
    }

    /// Handles a datagram from the peer.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if matches!(self.state, ChannelState::Closed(_)) {
            return;
        }
        self.stream.get_mut().push_incoming(datagram);
        self.drive(now);
    }

    /// Handles the timer: retransmits the last flight when it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ChannelState::Handshaking
            && self.handshake_deadline.is_some_and(|d| d <= now)
        {
            let secs = self.handshake_timeout.as_secs_f64();
            self.fail(format!(
                "handshake not complete after {secs:.1} s (wrong key, or peer unreachable)"
            ));
            return;
        }
        if self.timer.is_some_and(|t| t <= now) && self.state == ChannelState::Handshaking {
            if ffi::handle_timer(self.stream.ssl()) < 0 {
                self.fail("handshake timed out".into());
                return;
            }
            self.drive(now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != ChannelState::Handshaking {
            return None;
        }
        match (self.timer, self.handshake_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.stream.get_mut().outgoing.pop_front()
    }

    /// The next decrypted datagram from the peer.
    pub fn poll_received(&mut self) -> Option<Vec<u8>> {
        self.received.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ChannelEvent> {
        self.events.pop_front()
    }

    /// Encrypts one datagram of application data.
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), TlsError> {
        if !self.is_established() {
            return Err(TlsError::Closed);
        }
        self.stream
            .ssl_write(plaintext)
            .map(|_| ())
            .map_err(|e| TlsError::Handshake(e.to_string()))
    }

    /// Sends close_notify and closes.
    pub fn close(&mut self) {
        if self.is_established() {
            let _ = self.stream.shutdown();
        }
        if !matches!(self.state, ChannelState::Closed(_)) {
            self.state = ChannelState::Closed("closed locally".into());
        }
        self.timer = None;
    }

    fn fail(&mut self, reason: String) {
        let event = if self.state == ChannelState::Handshaking {
            ChannelEvent::HandshakeFailed(reason.clone())
        } else {
            ChannelEvent::Closed(reason.clone())
        };
        self.events.push_back(event);
        self.state = ChannelState::Closed(reason);
        self.timer = None;
    }

    /// Fails on an OpenSSL error, reporting first the alert the peer sent, if that was the cause.
    fn fail_with(&mut self, e: &openssl::ssl::Error) {
        if let Some(alert) = e.ssl_error().and_then(Alert::from_error_stack) {
            self.events.push_back(ChannelEvent::AlertReceived(alert));
        }
        let reason = e
            .ssl_error()
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        self.fail(reason);
    }

    /// Reads every decrypted record waiting, into `buf` (at least one record's plaintext).
    fn read_records(&mut self, buf: &mut [u8]) {
        loop {
            match self.stream.ssl_read(buf) {
                Ok(n) => {
                    if self.received.len() >= MAX_RECEIVED {
                        self.received.pop_front();
                    }
                    self.received.push_back(buf[..n].to_vec());
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.events
                        .push_back(ChannelEvent::AlertReceived(Alert::CLOSE_NOTIFY));
                    self.fail("peer sent close_notify".into());
                    return;
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                    return
                }
                Err(e) => {
                    // A record that fails to decrypt is dropped by DTLS (RFC 6347 §4.1.2.7);
                    // OpenSSL reports fatal alerts here.
                    self.fail_with(&e);
                    return;
                }
            }
        }
    }

    /// Advances the handshake or reads application data, then re-reads the timer.
    fn drive(&mut self, now: Instant) {
        if self.state == ChannelState::Handshaking {
            match self.stream.do_handshake() {
                Ok(()) => {
                    self.state = ChannelState::Established;
                    self.events.push_back(ChannelEvent::Established);
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
                Err(e) => {
                    self.fail_with(&e);
                    return;
                }
            }
        }
        if self.state == ChannelState::Established {
            READ_BUFFER.with(|buf| self.read_records(&mut buf.borrow_mut()));
        }
        self.timer = match self.state {
            ChannelState::Handshaking => ffi::timer_remaining(self.stream.ssl())
                .map(|d| now + d.min(Duration::from_secs(3600))),
            _ => None,
        };
    }
}

/// What the listener made of a datagram from an unknown peer.
pub enum Accept {
    /// Send this back (a HelloVerifyRequest); nothing was kept.
    Reply(Vec<u8>),
    /// A returning ClientHello with a valid cookie: the new channel, already answering.
    Channel(Box<DtlsChannel>),
    /// Not a ClientHello, or unusable: ignore it.
    Ignore,
}

/// The server side's door: stateless cookie exchange from one reusable SSL object.
pub struct DtlsListener {
    ctx: DtlsContext,
    spare: Option<SslStream<DatagramPipe>>,
}

impl DtlsListener {
    /// A listener for a server context.
    pub fn new(ctx: DtlsContext) -> Result<Self, TlsError> {
        if ctx.role != Role::Server {
            return Err(TlsError::NoCredentials("server context for a listener"));
        }
        Ok(DtlsListener { ctx, spare: None })
    }

    /// Offers a datagram from a peer that has no channel yet.
    pub fn accept(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) -> Accept {
        if !record::is_client_hello(datagram) {
            return Accept::Ignore;
        }
        let mut stream = match self.spare.take() {
            Some(s) => s,
            None => match self.ctx.new_stream() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create a DTLS listener");
                    return Accept::Ignore;
                }
            },
        };
        let Ok(index) = peer_index() else {
            return Accept::Ignore;
        };
        if let Some(Ok(mut slot)) = stream.ssl().ex_data(index).map(|m| m.lock()) {
            *slot = Some(peer);
        }
        stream.get_mut().incoming.clear();
        stream.get_mut().outgoing.clear();
        stream.get_mut().push_incoming(datagram);
        match ffi::listen(stream.ssl()) {
            ListenOutcome::Accepted => {
                let mut channel =
                    DtlsChannel::from_stream(stream, now, self.ctx.settings.handshake_timeout);
                channel.drive(now);
                Accept::Channel(Box::new(channel))
            }
            ListenOutcome::NotYet => {
                let reply = stream.get_mut().outgoing.pop_front();
                stream.get_mut().outgoing.clear();
                self.spare = Some(stream);
                reply.map_or(Accept::Ignore, Accept::Reply)
            }
            ListenOutcome::Failed => Accept::Ignore,
        }
    }
}

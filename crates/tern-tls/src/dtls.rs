//! DTLS 1.2 (RFC 6347) on OpenSSL, driven sans-IO: datagrams in, datagrams out, a timer.
//!
//! A [`DtlsContext`] holds the configuration (credentials, cipher suites, MTU, retransmission
//! schedule). A client opens a [`DtlsChannel`] with [`DtlsChannel::connect`]; a server offers
//! each datagram from an unknown peer to its [`DtlsListener`], which answers ClientHellos with a
//! HelloVerifyRequest cookie (RFC 6347 §4.2.1) from one reusable SSL object and opens a channel
//! only once a ClientHello returns with a valid cookie — no per-peer state before that.
//!
//! Once a handshake is complete with an AEAD suite, the channel protects its records itself
//! with the session's keys and frees OpenSSL's SSL object (see [`DtlsChannel`]), so an idle
//! session costs about 2 KB instead of about 45 KB.
//!
//! OpenSSL keeps its own clock for the retransmission timer: the schedule is ours (see
//! [`TimerPolicy`]) and [`DtlsChannel::poll_timeout`] reports it, but OpenSSL decides expiry by
//! wall-clock time, so flight-loss tests run on short real timeouts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, NameType, SniError, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions,
    SslSessionCacheMode, SslStream, SslVersion,
};
use zeroize::Zeroize;

use openssl::ssl::SslVerifyMode;

use crate::alert::Alert;
use crate::credentials::{Psk, PskStore};
pub use crate::ffi::TimerPolicy;
use crate::ffi::{self, ListenOutcome};
use crate::hmac::Hmac;
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
    /// Whether a server issues session tickets (RFC 5077) so clients can resume (default off).
    /// A ticket costs the server an encryption per full handshake, about 30% of a PSK
    /// handshake's CPU, and Tern's clients do not resume; turn it on for peers that do.
    pub session_tickets: bool,
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
            session_tickets: false,
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
    /// Channels take their records over from OpenSSL once established (off only in tests that
    /// check our record layer against OpenSSL's).
    own_records: bool,
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
    if role == Role::Server {
        // No server-side session cache: it would keep every session's SSL_SESSION (about
        // 1 KB) for up to 20,480 sessions after the channel is gone, and Tern's clients do not
        // resume. Clients that do can resume statelessly with a session ticket where
        // `session_tickets` turns them on.
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        if !settings.session_tickets {
            b.set_options(SslOptions::NO_TICKET);
        }
    }
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
            own_records: true,
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
        let cookie_key = Arc::new(CookieKey(Hmac::new(&secret)));
        secret.zeroize();
        let verify_key = Arc::clone(&cookie_key);
        b.set_cookie_generate_cb(move |ssl, out| {
            let cookie = cookie_key.cookie(stored_peer(ssl));
            let n = cookie.len().min(out.len());
            out[..n].copy_from_slice(&cookie[..n]);
            Ok(n)
        });
        b.set_cookie_verify_cb(move |ssl, cookie| {
            let expected = verify_key.cookie(stored_peer(ssl));
            expected.len() == cookie.len() && openssl::memcmp::eq(&expected, cookie)
        });
        Ok(DtlsContext {
            ctx: b.build(),
            role: Role::Server,
            settings,
            own_records: true,
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

/// The server's cookie secret, as a keyed HMAC-SHA256 made once per context.
struct CookieKey(Hmac<openssl::sha::Sha256>);

impl CookieKey {
    /// Length of a cookie: 128 bits of the MAC are plenty against guessing within the secret's
    /// life, and keep the second ClientHello short.
    const LEN: usize = 16;

    /// RFC 6347 §4.2.1's Cookie = HMAC(Secret, Client-IP, Client-Parameters), over the peer's
    /// address and port (as bytes, without formatting them).
    fn cookie(&self, peer: Option<SocketAddr>) -> [u8; Self::LEN] {
        let mut input = [0u8; 19];
        let used = match peer {
            Some(SocketAddr::V4(a)) => {
                input[0] = 4;
                input[1..5].copy_from_slice(&a.ip().octets());
                input[5..7].copy_from_slice(&a.port().to_be_bytes());
                7
            }
            Some(SocketAddr::V6(a)) => {
                input[0] = 6;
                input[1..17].copy_from_slice(&a.ip().octets());
                input[17..19].copy_from_slice(&a.port().to_be_bytes());
                19
            }
            None => 1,
        };
        let mac = self.0.mac(&[&input[..used]]);
        let mut cookie = [0u8; Self::LEN];
        cookie.copy_from_slice(&mac[..Self::LEN]);
        cookie
    }
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
///
/// OpenSSL runs the handshake. Once it is complete with an AEAD suite (the CoAP suites are
/// AES-CCM-8), the channel takes the session's keys, protects and checks its records itself
/// (`record::Protection`) and frees the SSL object: an established idle session then
/// holds a few hundred bytes instead of OpenSSL's buffers (read and write record buffers, and
/// the handshake message buffer DTLS keeps for retransmissions).
pub struct DtlsChannel {
    engine: Engine,
    state: ChannelState,
    received: VecDeque<Vec<u8>>,
    events: VecDeque<ChannelEvent>,
    /// OpenSSL's retransmission timer, as of the last drive.
    timer: Option<Instant>,
    handshake_deadline: Option<Instant>,
    handshake_timeout: Duration,
    /// Who the peer is and the suite, kept from the end of the handshake.
    info: Option<Box<SessionInfo>>,
    /// Whether the channel may take over the records once established.
    own_records: bool,
    /// Records of a later epoch that came during the handshake (the peer's Finished): OpenSSL
    /// reads them, and the replay window starts from those that authenticate.
    early_records: Vec<Vec<u8>>,
}

/// How a channel's records are protected.
enum Engine {
    /// OpenSSL: during the handshake, and after it for suites not handled here.
    OpenSsl(SslStream<DatagramPipe>),
    /// Established with an AEAD suite: our own record layer; the SSL object is freed.
    Own(Box<OwnRecords>),
}

/// The record layer of an established channel after OpenSSL is gone.
struct OwnRecords {
    protection: record::Protection,
    outgoing: VecDeque<Vec<u8>>,
    /// The flight we sent last in the handshake, if the handshake ended with ours (the server's
    /// ChangeCipherSpec and Finished in a full handshake): if it was lost, the peer resends its
    /// Finished and gets this again (RFC 6347 §4.2.4). Forgotten once the peer's application
    /// data shows that it has it.
    last_flight: Vec<Vec<u8>>,
    resent: u8,
}

/// What a channel keeps about its peer once established.
#[derive(Debug, Default)]
struct SessionInfo {
    psk_identity: Option<Box<[u8]>>,
    certificate_names: Option<(Option<String>, Vec<String>)>,
    cipher: Option<&'static str>,
}

thread_local! {
    /// One scratch buffer per thread for decrypted records, instead of a zeroed allocation per
    /// datagram: the largest DTLS plaintext is 2^14 bytes.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 16_384]);
}

/// Most decrypted datagrams held for the application before the oldest is dropped.
const MAX_RECEIVED: usize = 64;

/// Most later-epoch records kept from a handshake for the replay window.
const MAX_EARLY_RECORDS: usize = 16;

/// Most times the last flight is resent on a repeated Finished.
const MAX_RESENDS: u8 = 8;

/// Record content types.
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
/// The Finished handshake message type.
const HANDSHAKE_FINISHED: u8 = 20;

impl DtlsChannel {
    /// Starts a client handshake; the ClientHello is ready in [`poll_transmit`](Self::poll_transmit).
    pub fn connect(ctx: &DtlsContext, now: Instant) -> Result<Self, TlsError> {
        if ctx.role != Role::Client {
            return Err(TlsError::NoCredentials("client context for connect"));
        }
        let mut channel = DtlsChannel::from_stream(ctx, ctx.new_stream()?, now);
        channel.drive(now);
        Ok(channel)
    }

    fn from_stream(ctx: &DtlsContext, stream: SslStream<DatagramPipe>, now: Instant) -> Self {
        let handshake_timeout = ctx.settings.handshake_timeout;
        DtlsChannel {
            engine: Engine::OpenSsl(stream),
            state: ChannelState::Handshaking,
            received: VecDeque::new(),
            events: VecDeque::new(),
            timer: None,
            handshake_deadline: now.checked_add(handshake_timeout),
            handshake_timeout,
            info: None,
            own_records: ctx.own_records,
            early_records: Vec::new(),
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
        match (&self.info, &self.engine) {
            (Some(info), _) => info.psk_identity.as_deref().map(<[u8]>::to_vec),
            (None, Engine::OpenSsl(s)) => s.ssl().psk_identity().map(<[u8]>::to_vec),
            (None, Engine::Own(_)) => None,
        }
    }

    /// The peer certificate's common name and SANs, if it sent one.
    pub fn peer_certificate_names(&self) -> Option<(Option<String>, Vec<String>)> {
        match (&self.info, &self.engine) {
            (Some(info), _) => info.certificate_names.clone(),
            (None, Engine::OpenSsl(s)) => {
                let cert = s.ssl().peer_certificate()?;
                Some(crate::pki::names(&cert))
            }
            (None, Engine::Own(_)) => None,
        }
    }

    /// The negotiated cipher suite.
    pub fn cipher(&self) -> Option<&'static str> {
        match (&self.info, &self.engine) {
            (Some(info), _) => info.cipher,
            (None, Engine::OpenSsl(s)) => s.ssl().current_cipher().map(|c| c.name()),
            (None, Engine::Own(_)) => None,
        }
    }

    /// Whether the channel protects its records itself (the SSL object is freed).
    pub fn owns_records(&self) -> bool {
        matches!(self.engine, Engine::Own(_))
    }

    /// Handles a datagram from the peer.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if matches!(self.state, ChannelState::Closed(_)) {
            return;
        }
        match &mut self.engine {
            Engine::OpenSsl(stream) => {
                if self.state == ChannelState::Handshaking && self.own_records {
                    for (h, r) in record::records(datagram) {
                        if h.epoch > 0 && self.early_records.len() < MAX_EARLY_RECORDS {
                            self.early_records.push(r.to_vec());
                        }
                    }
                }
                stream.get_mut().push_incoming(datagram);
                self.drive(now);
            }
            Engine::Own(_) => self.read_own(datagram),
        }
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
            let Engine::OpenSsl(stream) = &self.engine else {
                return;
            };
            if ffi::handle_timer(stream.ssl()) < 0 {
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
        match &mut self.engine {
            Engine::OpenSsl(stream) => stream.get_mut().outgoing.pop_front(),
            Engine::Own(own) => own.outgoing.pop_front(),
        }
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
        match &mut self.engine {
            Engine::OpenSsl(stream) => stream
                .ssl_write(plaintext)
                .map(|_| ())
                .map_err(|e| TlsError::Handshake(e.to_string())),
            Engine::Own(own) => {
                if plaintext.len() > record::MAX_PLAINTEXT {
                    return Err(TlsError::Handshake(format!(
                        "{} bytes do not fit in one DTLS record",
                        plaintext.len()
                    )));
                }
                match own.protection.seal(CONTENT_APPLICATION_DATA, plaintext) {
                    Some(r) => {
                        own.outgoing.push_back(r);
                        Ok(())
                    }
                    None => {
                        self.fail("record sequence numbers exhausted or encryption failed".into());
                        Err(TlsError::Closed)
                    }
                }
            }
        }
    }

    /// Sends close_notify and closes.
    pub fn close(&mut self) {
        if self.is_established() {
            match &mut self.engine {
                Engine::OpenSsl(stream) => {
                    let _ = stream.shutdown();
                }
                Engine::Own(own) => {
                    // close_notify: level warning (1), description 0.
                    if let Some(r) = own.protection.seal(CONTENT_ALERT, &[1, 0]) {
                        own.outgoing.push_back(r);
                    }
                }
            }
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

    fn push_received(&mut self, plaintext: Vec<u8>) {
        if self.received.len() >= MAX_RECEIVED {
            self.received.pop_front();
        }
        self.received.push_back(plaintext);
    }

    /// Reads every decrypted record waiting, into `buf` (at least one record's plaintext).
    fn read_records(&mut self, buf: &mut [u8]) {
        loop {
            let Engine::OpenSsl(stream) = &mut self.engine else {
                return;
            };
            match stream.ssl_read(buf) {
                Ok(n) => self.push_received(buf[..n].to_vec()),
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
        let Engine::OpenSsl(stream) = &mut self.engine else {
            return;
        };
        let mut flight_start = None;
        if self.state == ChannelState::Handshaking {
            let before = stream.get_ref().outgoing.len();
            match stream.do_handshake() {
                Ok(()) => {
                    self.state = ChannelState::Established;
                    self.events.push_back(ChannelEvent::Established);
                    flight_start = Some(before);
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
            if let Some(start) = flight_start {
                self.established(start);
            }
        }
        self.timer = match (&self.state, &self.engine) {
            (ChannelState::Handshaking, Engine::OpenSsl(stream)) => {
                ffi::timer_remaining(stream.ssl()).map(|d| now + d.min(Duration::from_secs(3600)))
            }
            _ => None,
        };
    }

    /// Keeps what is needed of a completed handshake, and takes the records over from OpenSSL
    /// when the suite allows: `flight_start` is where the flight written by the last step of
    /// the handshake starts in the outgoing queue.
    fn established(&mut self, flight_start: usize) {
        let Engine::OpenSsl(stream) = &mut self.engine else {
            return;
        };
        let ssl = stream.ssl();
        let cipher = ssl.current_cipher();
        self.info = Some(Box::new(SessionInfo {
            psk_identity: ssl.psk_identity().map(Box::from),
            certificate_names: ssl.peer_certificate().map(|c| crate::pki::names(&c)),
            cipher: cipher.map(|c| c.name()),
        }));
        let early = std::mem::take(&mut self.early_records);
        if !self.own_records || self.state != ChannelState::Established {
            return;
        }
        let Some(aead) = cipher
            .and_then(|c| c.standard_name())
            .and_then(record::Aead::for_suite)
        else {
            return;
        };
        let pipe = stream.get_ref();
        // OpenSSL has read everything queued (the read loop ran until it wanted more).
        if !pipe.incoming.is_empty() || pipe.write_epoch == 0 {
            return;
        }
        let Some(session) = ssl.session() else {
            return;
        };
        let mut master = [0u8; 48];
        let mut client_random = [0u8; 32];
        let mut server_random = [0u8; 32];
        let lens = (
            session.master_key(&mut master),
            ssl.client_random(&mut client_random),
            ssl.server_random(&mut server_random),
        );
        let protection = if lens == (48, 32, 32) {
            record::Protection::new(
                aead,
                ssl.is_server(),
                &master,
                &client_random,
                &server_random,
                pipe.write_epoch,
                pipe.next_write,
            )
            .ok()
        } else {
            None
        };
        master.zeroize();
        let Some(mut protection) = protection else {
            return;
        };
        // The records OpenSSL took in the new epoch start the replay window.
        for r in &early {
            if let Some(h) = record::RecordHeader::parse(r) {
                let _ = protection.open(&h, r, false);
            }
        }
        let outgoing = std::mem::take(&mut stream.get_mut().outgoing);
        let last_flight = outgoing.iter().skip(flight_start).cloned().collect();
        self.engine = Engine::Own(Box::new(OwnRecords {
            protection,
            outgoing,
            last_flight,
            resent: 0,
        }));
    }

    /// Checks and decrypts the records of one datagram with our own record layer.
    fn read_own(&mut self, datagram: &[u8]) {
        for (header, r) in record::records(datagram) {
            let Engine::Own(own) = &mut self.engine else {
                return;
            };
            // Other epochs: the peer's handshake records, repeated (only its Finished, in the
            // current epoch, calls for an answer); dropped as OpenSSL drops them.
            if header.epoch != own.protection.epoch() {
                continue;
            }
            // Records that do not authenticate, or replays, are dropped (RFC 6347 §4.1.2.7).
            let Some((content_type, plaintext)) = own.protection.open(&header, r, true) else {
                continue;
            };
            match content_type {
                CONTENT_APPLICATION_DATA => {
                    own.last_flight = Vec::new();
                    // An empty record carries nothing to deliver (OpenSSL skips them too).
                    if !plaintext.is_empty() {
                        self.push_received(plaintext);
                    }
                }
                // The peer did not get our last flight and repeats its own: resend ours.
                // Other handshake messages (a renegotiation) are not supported: ignored.
                CONTENT_HANDSHAKE
                    if plaintext.first() == Some(&HANDSHAKE_FINISHED)
                        && !own.last_flight.is_empty()
                        && own.resent < MAX_RESENDS =>
                {
                    own.resent += 1;
                    own.outgoing.extend(own.last_flight.iter().cloned());
                }
                CONTENT_ALERT => match plaintext[..] {
                    // level warning, close_notify
                    [1, 0] => {
                        self.events
                            .push_back(ChannelEvent::AlertReceived(Alert::CLOSE_NOTIFY));
                        self.fail("peer sent close_notify".into());
                        return;
                    }
                    [2, description] => {
                        let alert = Alert { description };
                        self.events.push_back(ChannelEvent::AlertReceived(alert));
                        self.fail(format!("peer sent a fatal alert: {alert}"));
                        return;
                    }
                    [1, _] => {} // other warnings: ignored, as OpenSSL does
                    _ => {
                        self.fail("malformed alert from the peer".into());
                        return;
                    }
                },
                _ => {} // ChangeCipherSpec repeated, or unknown: ignored
            }
        }
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
                let mut channel = DtlsChannel::from_stream(&self.ctx, stream, now);
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

#[cfg(test)]
mod tests {
    //! Our record layer against OpenSSL's: one side of each pair may keep OpenSSL's records
    //! after the handshake, so each direction is checked against the reference implementation.
    use super::*;
    use crate::credentials::PskMap;

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);
    const FAST: TimerPolicy = TimerPolicy {
        initial_us: 50_000,
        max_us: 400_000,
    };

    fn contexts(ciphers: &str, client_own: bool, server_own: bool) -> (DtlsContext, DtlsContext) {
        let store = PskMap::new();
        store.insert(Psk::new("device-1", "secret-key").unwrap());
        let mut server = DtlsContext::server(DtlsSettings {
            psk_store: Some(Arc::new(store)),
            ciphers: ciphers.into(),
            timer: FAST,
            ..Default::default()
        })
        .unwrap();
        let mut client = DtlsContext::client(DtlsSettings {
            psk: Some(Psk::new("device-1", "secret-key").unwrap()),
            ciphers: ciphers.into(),
            timer: FAST,
            ..Default::default()
        })
        .unwrap();
        client.own_records = client_own;
        server.own_records = server_own;
        (client, server)
    }

    /// Runs a handshake; `lose` says which server datagrams (by index) the network loses.
    fn handshake(
        client_ctx: &DtlsContext,
        server_ctx: &DtlsContext,
        lose: impl Fn(usize, &[u8]) -> bool,
    ) -> (DtlsChannel, DtlsChannel) {
        let mut listener = DtlsListener::new(server_ctx.clone()).unwrap();
        let mut client = DtlsChannel::connect(client_ctx, Instant::now()).unwrap();
        let mut server: Option<DtlsChannel> = None;
        let mut sent_by_server = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let now = Instant::now();
            let mut moved = 0;
            while let Some(d) = client.poll_transmit() {
                moved += 1;
                match &mut server {
                    Some(s) => s.handle_datagram(now, &d),
                    None => match listener.accept(now, PEER, &d) {
                        Accept::Reply(r) => client.handle_datagram(now, &r),
                        Accept::Channel(c) => server = Some(*c),
                        Accept::Ignore => {}
                    },
                }
            }
            if let Some(s) = &mut server {
                while let Some(d) = s.poll_transmit() {
                    moved += 1;
                    sent_by_server += 1;
                    if !lose(sent_by_server - 1, &d) {
                        client.handle_datagram(now, &d);
                    }
                }
                if client.is_established() && s.is_established() {
                    break;
                }
            }
            if moved == 0 {
                std::thread::sleep(Duration::from_millis(5));
                client.handle_timeout(Instant::now());
                if let Some(s) = &mut server {
                    s.handle_timeout(Instant::now());
                }
            }
        }
        let server = server.expect("the server opened a channel");
        assert!(client.is_established(), "client: {:?}", client.state());
        assert!(server.is_established(), "server: {:?}", server.state());
        (client, server)
    }

    /// Sends `data` from `a` to `b`; what `b` received.
    fn carry(a: &mut DtlsChannel, b: &mut DtlsChannel, data: &[u8]) -> Option<Vec<u8>> {
        a.send(data).unwrap();
        while let Some(d) = a.poll_transmit() {
            assert!(!d.windows(data.len()).any(|w| w == data), "encrypted");
            b.handle_datagram(Instant::now(), &d);
        }
        b.poll_received()
    }

    fn drain_events(c: &mut DtlsChannel) -> Vec<ChannelEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    #[test]
    fn own_records_interoperate_with_openssl_records() {
        let suites = [
            ("PSK-AES128-CCM8", "PSK-AES128-CCM8"),
            ("PSK-AES256-CCM8", "PSK-AES256-CCM8"),
            ("PSK-AES128-CCM", "PSK-AES128-CCM"),
            ("PSK-AES128-GCM-SHA256", "PSK-AES128-GCM-SHA256"),
            ("PSK-AES256-GCM-SHA384", "PSK-AES256-GCM-SHA384"),
        ];
        for (ciphers, name) in suites {
            for (client_own, server_own) in [(true, false), (false, true), (true, true)] {
                let case = format!("{ciphers}, client own {client_own}, server own {server_own}");
                let (cc, sc) = contexts(ciphers, client_own, server_own);
                let (mut client, mut server) = handshake(&cc, &sc, |_, _| false);
                assert_eq!(client.owns_records(), client_own, "{case}");
                assert_eq!(server.owns_records(), server_own, "{case}");
                assert_eq!(server.cipher(), Some(name), "{case}");
                assert_eq!(client.cipher(), Some(name), "{case}");
                assert_eq!(
                    server.psk_identity().as_deref(),
                    Some(&b"device-1"[..]),
                    "{case}"
                );
                assert_eq!(client.psk_identity().as_deref(), Some(&b"device-1"[..]));
                for i in 0..5u8 {
                    let up = [b'u', i].repeat(40 * usize::from(i) + 1);
                    assert_eq!(carry(&mut client, &mut server, &up), Some(up), "{case}");
                    let down = [b'd', i].repeat(300 * usize::from(i) + 1);
                    assert_eq!(carry(&mut server, &mut client, &down), Some(down), "{case}");
                }
                // A full-size record both ways.
                let big = vec![7u8; record::MAX_PLAINTEXT];
                assert_eq!(
                    carry(&mut client, &mut server, &big).map(|b| b.len()),
                    Some(big.len())
                );
                assert_eq!(
                    carry(&mut server, &mut client, &big).map(|b| b.len()),
                    Some(big.len())
                );
                // close_notify from the server.
                drain_events(&mut client);
                server.close();
                while let Some(d) = server.poll_transmit() {
                    client.handle_datagram(Instant::now(), &d);
                }
                let events = drain_events(&mut client);
                assert_eq!(
                    events[0],
                    ChannelEvent::AlertReceived(Alert::CLOSE_NOTIFY),
                    "{case}: {events:?}"
                );
                assert!(
                    matches!(&events[1], ChannelEvent::Closed(r) if r.contains("close_notify")),
                    "{case}: {events:?}"
                );
            }
        }
    }

    #[test]
    fn idle_established_channel_holds_no_ssl_and_still_works() {
        let (cc, sc) = contexts(DEFAULT_CIPHERS, true, true);
        let (mut client, mut server) = handshake(&cc, &sc, |_, _| false);
        // The SSL objects are gone; what the layer asks for is still there.
        assert!(client.owns_records() && server.owns_records());
        assert_eq!(server.psk_identity().as_deref(), Some(&b"device-1"[..]));
        assert_eq!(server.peer_certificate_names(), None);
        assert_eq!(server.cipher(), Some("PSK-AES128-CCM8"));
        assert_eq!(server.poll_timeout(), None, "no timer once established");
        // Idle, then traffic again both ways, then close_notify from the client.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            carry(&mut client, &mut server, b"GET /a"),
            Some(b"GET /a".to_vec())
        );
        assert_eq!(
            carry(&mut server, &mut client, b"2.05 a"),
            Some(b"2.05 a".to_vec())
        );
        client.close();
        assert!(matches!(client.state(), ChannelState::Closed(_)));
        while let Some(d) = client.poll_transmit() {
            server.handle_datagram(Instant::now(), &d);
        }
        let events = drain_events(&mut server);
        assert!(
            events.contains(&ChannelEvent::AlertReceived(Alert::CLOSE_NOTIFY)),
            "{events:?}"
        );
        assert!(matches!(server.state(), ChannelState::Closed(r) if r.contains("close_notify")));
        assert!(server.send(b"late").is_err());
    }

    #[test]
    fn replayed_and_forged_records_are_dropped() {
        let (cc, sc) = contexts(DEFAULT_CIPHERS, true, true);
        let (mut client, mut server) = handshake(&cc, &sc, |_, _| false);
        client.send(b"once").unwrap();
        let datagram = client.poll_transmit().unwrap();
        let now = Instant::now();
        server.handle_datagram(now, &datagram);
        server.handle_datagram(now, &datagram);
        assert_eq!(server.poll_received(), Some(b"once".to_vec()));
        assert_eq!(server.poll_received(), None, "the replay was dropped");
        // A flipped bit, and a forged record with a far sequence number: dropped, and the
        // window is not moved by what does not authenticate.
        client.send(b"twice").unwrap();
        let mut tampered = client.poll_transmit().unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        server.handle_datagram(now, &tampered);
        let mut forged = tampered.clone();
        forged[5..11].copy_from_slice(&[0xff; 6]);
        server.handle_datagram(now, &forged);
        assert_eq!(server.poll_received(), None);
        assert!(server.is_established());
        assert_eq!(
            carry(&mut client, &mut server, b"next"),
            Some(b"next".to_vec())
        );
        // Records that come out of order within the window are taken.
        client.send(b"first").unwrap();
        let first = client.poll_transmit().unwrap();
        client.send(b"second").unwrap();
        let second = client.poll_transmit().unwrap();
        server.handle_datagram(now, &second);
        server.handle_datagram(now, &first);
        assert_eq!(server.poll_received(), Some(b"second".to_vec()));
        assert_eq!(server.poll_received(), Some(b"first".to_vec()));
        // The handshake's own records (the client's Finished) count as seen.
        assert!(server.is_established());
    }

    #[test]
    fn a_lost_last_flight_is_resent_when_the_client_repeats_its_finished() {
        // The server's last flight (ChangeCipherSpec and Finished, in the same datagram or
        // two) is lost once: the server is established and owns its records; the client resends
        // its last flight on its timer, and the server answers with its last flight again.
        for (client_own, server_own) in [(true, true), (false, true)] {
            let (cc, sc) = contexts(DEFAULT_CIPHERS, client_own, server_own);
            let finished_seen = std::cell::Cell::new(0usize);
            let (mut client, mut server) = handshake(&cc, &sc, |_, d| {
                // The server's flight with an epoch-1 record: lose it the first time.
                let has_epoch1 = record::records(d).any(|(h, _)| h.epoch == 1);
                if has_epoch1 {
                    finished_seen.set(finished_seen.get() + 1);
                    return finished_seen.get() == 1;
                }
                false
            });
            assert!(finished_seen.get() >= 2, "the last flight was sent again");
            assert!(server.owns_records());
            assert_eq!(carry(&mut client, &mut server, b"up"), Some(b"up".to_vec()));
            assert_eq!(
                carry(&mut server, &mut client, b"down"),
                Some(b"down".to_vec())
            );
        }
    }

    #[test]
    fn a_fatal_alert_closes_an_own_records_channel() {
        let (cc, sc) = contexts(DEFAULT_CIPHERS, true, true);
        let (mut client, mut server) = handshake(&cc, &sc, |_, _| false);
        let Engine::Own(own) = &mut client.engine else {
            panic!("the client owns its records");
        };
        // internal_error (80), fatal.
        let alert = own.protection.seal(CONTENT_ALERT, &[2, 80]).unwrap();
        server.handle_datagram(Instant::now(), &alert);
        let events = drain_events(&mut server);
        assert!(
            events.contains(&ChannelEvent::AlertReceived(Alert { description: 80 })),
            "{events:?}"
        );
        assert!(matches!(server.state(), ChannelState::Closed(r) if r.contains("internal_error")));
    }

    /// Whether a datagram holds a plaintext NewSessionTicket (handshake type 4 in epoch 0).
    fn holds_ticket(mut datagram: &[u8]) -> bool {
        while datagram.len() >= 13 {
            let length = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
            let epoch = u16::from_be_bytes([datagram[3], datagram[4]]);
            if datagram[0] == 22 && epoch == 0 && datagram.get(13) == Some(&4) {
                return true;
            }
            datagram = datagram.get(13 + length..).unwrap_or_default();
        }
        false
    }

    #[test]
    fn session_tickets_are_issued_only_when_turned_on() {
        for tickets in [false, true] {
            let (client_ctx, mut server_ctx) = contexts(DEFAULT_CIPHERS, true, true);
            let mut settings = server_ctx.settings().clone();
            settings.session_tickets = tickets;
            server_ctx = DtlsContext::server(settings).unwrap();
            let seen = std::cell::Cell::new(false);
            handshake(&client_ctx, &server_ctx, |_, d| {
                seen.set(seen.get() || holds_ticket(d));
                false
            });
            assert_eq!(seen.get(), tickets, "session_tickets = {tickets}");
        }
    }
}

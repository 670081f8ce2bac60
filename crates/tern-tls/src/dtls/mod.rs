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
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVersion,
};
use zeroize::Zeroize;

use crate::alert::Alert;
use crate::credentials::{Psk, PskStore};
pub use crate::error::TlsError;
use crate::ffi;
pub use crate::ffi::TimerPolicy;
use crate::pipe::DatagramPipe;
use crate::pki::PkiSettings;
use crate::record;
use crate::ssl_context;
pub use crate::ssl_context::Role;

mod listener;
pub use listener::{Accept, DtlsListener};

/// The cipher suites RFC 7252 §9 makes mandatory, offered by default (a suite is only used
/// when its credentials are configured).
pub const DEFAULT_CIPHERS: &str = "PSK-AES128-CCM8:ECDHE-ECDSA-AES128-CCM8";

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

/// The OpenSSL context builder for one role: DTLS 1.2 only, our cipher list, the server's
/// session policy, and certificates when configured (groups pinned to P-256 for them).
fn base_builder(role: Role, settings: &DtlsSettings) -> Result<SslContextBuilder, TlsError> {
    let method = match role {
        Role::Client => SslMethod::dtls_client(),
        Role::Server => SslMethod::dtls_server(),
    };
    let mut b = SslContext::builder(method)?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    // RFC 7252 §9.1.3.3 ECDSA: P-256.
    let groups = settings.pki.as_ref().map(|_| "P-256");
    ssl_context::apply_algorithms(&mut b, &settings.ciphers, None, groups)?;
    // We set the MTU ourselves; there is no socket to ask.
    b.set_options(SslOptions::NO_QUERY_MTU);
    ssl_context::apply_session_policy(&mut b, role, settings.session_tickets);
    if let Some(pki) = &settings.pki {
        ssl_context::apply_pki(&mut b, role, pki)?;
    }
    Ok(b)
}

impl DtlsContext {
    /// A client context: needs `settings.psk` or `settings.pki`.
    pub fn client(settings: DtlsSettings) -> Result<Self, TlsError> {
        if settings.psk.is_none() && settings.pki.is_none() {
            return Err(TlsError::NoCredentials("DTLS client"));
        }
        let mut b = base_builder(Role::Client, &settings)?;
        if let Some(psk) = settings.psk.clone() {
            ssl_context::apply_psk_client(&mut b, psk);
        }
        Ok(DtlsContext {
            ctx: b.build(),
            role: Role::Client,
            settings,
            own_records: true,
        })
    }

    /// A server context: needs `settings.psk_store` or `settings.pki`. Cookies are keyed with
    /// a fresh random secret per context.
    pub fn server(settings: DtlsSettings) -> Result<Self, TlsError> {
        if settings.psk_store.is_none() && settings.pki.is_none() {
            return Err(TlsError::NoCredentials("DTLS server"));
        }
        let mut b = base_builder(Role::Server, &settings)?;
        if let Some(store) = settings.psk_store.clone() {
            ssl_context::apply_psk_server(&mut b, store, settings.identity_hint.as_deref())?;
        }
        if let Some(pki) = &settings.pki {
            ssl_context::apply_sni_certificates(&mut b, pki, |alternate| {
                let alternate = DtlsSettings {
                    pki: Some(alternate),
                    ..settings.clone()
                };
                Ok(base_builder(Role::Server, &alternate)?.build())
            })?;
        }
        listener::set_cookie_callbacks(&mut b)?;
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
                ssl_context::apply_client_names(&mut ssl, self.settings.pki.as_ref(), None)?;
            }
            Role::Server => {
                ssl.set_accept_state();
                listener::prepare_peer_slot(&mut ssl)?;
            }
        }
        Ok(SslStream::new(ssl, DatagramPipe::default())?)
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
    /// The peer's certificate, DER (kept with the names once OpenSSL's object is freed).
    certificate_der: Option<Vec<u8>>,
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

    /// The peer's certificate, DER-encoded, if it sent one.
    pub fn peer_certificate_der(&self) -> Option<Vec<u8>> {
        match (&self.info, &self.engine) {
            (Some(info), _) => info.certificate_der.clone(),
            (None, Engine::OpenSsl(s)) => s.ssl().peer_certificate()?.to_der().ok(),
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
            certificate_der: ssl.peer_certificate().and_then(|c| c.to_der().ok()),
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

#[cfg(test)]
mod tests;

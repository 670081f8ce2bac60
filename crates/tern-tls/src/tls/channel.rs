//! One TLS connection, sans-IO: OpenSSL's `SslStream` over an in-memory [`StreamPipe`], the
//! handshake deadline, plaintext held until the handshake is done, and the end of the
//! connection (close_notify, the end of the stream, alerts) told as events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, Ssl, SslRef, SslStream};
use openssl::x509::X509VerifyResult;

use super::{TlsContext, TlsEvent, TlsVersion};
use crate::alert::Alert;
use crate::dtls::ChannelState;
use crate::error::TlsError;
use crate::layer::PeerIdentity;
use crate::pipe::StreamPipe;
use crate::ssl_context::{self, Role};

/// One TLS connection with one peer, sans-IO.
///
/// The caller owns the socket. Bytes read from it go to [`handle_input`](Self::handle_input);
/// whatever [`poll_output`](Self::poll_output) returns is written to it. Plaintext goes in with
/// [`send`](Self::send) (held until the handshake completes) and comes out with
/// [`read_plaintext`](Self::read_plaintext), straight into the caller's buffer. Call
/// `read_plaintext` until it returns 0 after each `handle_input`: records are decrypted (and
/// close_notify, alerts and TLS 1.3 post-handshake messages are noticed) only as they are read.
/// Then drain `poll_output` and [`poll_event`](Self::poll_event).
pub struct TlsChannel {
    stream: SslStream<StreamPipe>,
    state: ChannelState,
    events: VecDeque<TlsEvent>,
    /// Plaintext sent before the handshake completed.
    pending: Vec<u8>,
    deadline: Option<Instant>,
    handshake_timeout: Duration,
    require_alpn: bool,
    /// Whether `HandshakeStarted` was reported.
    started: bool,
}

impl TlsChannel {
    /// Starts a client handshake; the ClientHello is ready in [`poll_output`](Self::poll_output).
    pub fn connect(ctx: &TlsContext, now: Instant) -> Result<Self, TlsError> {
        if ctx.role() != Role::Client {
            return Err(TlsError::Settings("connect needs a client context"));
        }
        let mut ssl = Ssl::new(&ctx.inner.ctx)?;
        ssl.set_connect_state();
        let settings = ctx.settings();
        ssl_context::apply_client_names(
            &mut ssl,
            settings.pki.as_ref(),
            settings.server_name.as_deref(),
        )?;
        let mut channel = Self::new(ctx, ssl, now)?;
        channel.started = true;
        channel.events.push_back(TlsEvent::HandshakeStarted);
        channel.drive();
        Ok(channel)
    }

    /// Opens the server side of an accepted connection; the handshake starts with the client's
    /// first bytes.
    pub fn accept(ctx: &TlsContext, now: Instant) -> Result<Self, TlsError> {
        if ctx.role() != Role::Server {
            return Err(TlsError::Settings("accept needs a server context"));
        }
        let mut ssl = Ssl::new(&ctx.inner.ctx)?;
        ssl.set_accept_state();
        Self::new(ctx, ssl, now)
    }

    fn new(ctx: &TlsContext, ssl: Ssl, now: Instant) -> Result<Self, TlsError> {
        let settings = ctx.settings();
        Ok(TlsChannel {
            stream: SslStream::new(ssl, StreamPipe::default())?,
            state: ChannelState::Handshaking,
            events: VecDeque::new(),
            pending: Vec::new(),
            deadline: now.checked_add(settings.handshake_timeout),
            handshake_timeout: settings.handshake_timeout,
            require_alpn: settings.require_alpn,
            started: false,
        })
    }

    /// The state.
    pub fn state(&self) -> &ChannelState {
        &self.state
    }

    /// Whether application data can flow.
    pub fn is_established(&self) -> bool {
        self.state == ChannelState::Established
    }

    /// Whether the channel is closed (failed, closed by the peer, or locally).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, ChannelState::Closed(_))
    }

    /// Who the peer proved to be once the handshake completed: its certificate's common name
    /// and SANs, or the PSK identity used.
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        let ssl = self.stream.ssl();
        if !ssl.is_init_finished() {
            return None;
        }
        ssl_context::peer_identity(ssl)
    }

    /// The ALPN protocol agreed, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.stream.ssl().selected_alpn_protocol()
    }

    /// The TLS version negotiated.
    pub fn protocol_version(&self) -> Option<TlsVersion> {
        let ssl = self.stream.ssl();
        if !ssl.is_init_finished() {
            return None;
        }
        ssl.version2().and_then(TlsVersion::from_openssl)
    }

    /// The negotiated cipher suite (OpenSSL's name).
    pub fn cipher(&self) -> Option<&'static str> {
        self.stream.ssl().current_cipher().map(|c| c.name())
    }

    /// Ciphertext from the peer not yet processed (it is decrypted as plaintext is read): a
    /// runtime can stop reading the socket while this is large.
    pub fn buffered_input(&self) -> usize {
        self.stream.get_ref().unread()
    }

    /// Ciphertext read from the socket.
    pub fn handle_input(&mut self, _now: Instant, ciphertext: &[u8]) {
        if self.is_closed() || ciphertext.is_empty() {
            return;
        }
        self.stream.get_mut().push_incoming(ciphertext);
        if self.state == ChannelState::Handshaking {
            if !self.started {
                self.started = true;
                self.events.push_back(TlsEvent::HandshakeStarted);
            }
            self.drive();
        }
    }

    /// Encrypts application data, or holds it until the handshake completes.
    pub fn send(&mut self, plaintext: &[u8]) -> Result<(), TlsError> {
        match self.state {
            ChannelState::Closed(_) => Err(TlsError::Closed),
            ChannelState::Handshaking => {
                self.pending.extend_from_slice(plaintext);
                Ok(())
            }
            ChannelState::Established => self.write_all(plaintext),
        }
    }

    /// Ciphertext to write to the socket: everything written since the last call.
    pub fn poll_output(&mut self) -> Option<Vec<u8>> {
        let out = &mut self.stream.get_mut().outgoing;
        (!out.is_empty()).then(|| std::mem::take(out))
    }

    /// Decrypts into `out` what the peer sent; returns how many bytes (0: nothing more now).
    pub fn read_plaintext(&mut self, out: &mut [u8]) -> usize {
        if self.state != ChannelState::Established || out.is_empty() {
            return 0;
        }
        match self.stream.ssl_read(out) {
            Ok(n) => n,
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                self.events
                    .push_back(TlsEvent::AlertReceived(Alert::CLOSE_NOTIFY));
                // Answer with our close_notify (RFC 5246 §7.2.1), for the caller to send.
                let _ = self.stream.shutdown();
                self.fail("peer sent close_notify".into());
                0
            }
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                if self.stream.get_ref().eof {
                    self.fail("peer closed the connection without close_notify".into());
                }
                0
            }
            Err(_) if self.stream.get_ref().eof && self.stream.get_ref().unread() == 0 => {
                self.fail("peer closed the connection without close_notify".into());
                0
            }
            Err(e) => {
                self.fail_with(&e);
                0
            }
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TlsEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due: the handshake deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == ChannelState::Handshaking {
            self.deadline
        } else {
            None
        }
    }

    /// Time passed: fails a handshake past its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == ChannelState::Handshaking && self.deadline.is_some_and(|d| d <= now) {
            let secs = self.handshake_timeout.as_secs_f64();
            self.fail(format!(
                "handshake not complete after {secs:.1} s (peer silent or not speaking TLS)"
            ));
        }
    }

    /// Sends close_notify (if established) and closes; the alert is in
    /// [`poll_output`](Self::poll_output).
    pub fn close(&mut self) {
        if self.is_established() {
            let _ = self.stream.shutdown();
        }
        if !self.is_closed() {
            self.state = ChannelState::Closed("closed locally".into());
        }
        self.pending = Vec::new();
    }

    /// The peer closed its side of the connection (the socket read 0 bytes).
    ///
    /// During the handshake this fails it. Once established, plaintext still buffered can be
    /// read; the channel reports `Closed` when it has been (at once when none is left).
    pub fn handle_eof(&mut self, _now: Instant) {
        if self.is_closed() {
            return;
        }
        self.stream.get_mut().eof = true;
        match self.state {
            ChannelState::Handshaking => {
                self.drive();
                if self.state == ChannelState::Handshaking {
                    self.fail("peer closed the connection during the handshake".into());
                }
            }
            _ => {
                if self.stream.get_ref().unread() == 0 && self.stream.ssl().pending() == 0 {
                    self.fail("peer closed the connection without close_notify".into());
                }
            }
        }
    }

    /// Advances the handshake; on completion checks ALPN and sends what was held.
    fn drive(&mut self) {
        if self.state != ChannelState::Handshaking {
            return;
        }
        match self.stream.do_handshake() {
            Ok(()) => self.established(),
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
            Err(_) if self.stream.get_ref().eof && self.stream.get_ref().unread() == 0 => {
                self.fail("peer closed the connection during the handshake".into());
            }
            Err(e) => self.fail_with(&e),
        }
    }

    fn established(&mut self) {
        if self.require_alpn && self.alpn_protocol().is_none() {
            let _ = self.stream.shutdown();
            self.fail("no ALPN protocol agreed with the peer (require_alpn)".into());
            return;
        }
        self.state = ChannelState::Established;
        self.deadline = None;
        self.events.push_back(TlsEvent::Established);
        let pending = std::mem::take(&mut self.pending);
        let _ = self.write_all(&pending);
    }

    fn write_all(&mut self, mut plaintext: &[u8]) -> Result<(), TlsError> {
        while !plaintext.is_empty() {
            match self.stream.ssl_write(plaintext) {
                Ok(n) => plaintext = &plaintext[n..],
                Err(e) => {
                    let reason = describe(&e, self.stream.ssl());
                    self.fail_with(&e);
                    return Err(TlsError::Handshake(reason));
                }
            }
        }
        Ok(())
    }

    fn fail(&mut self, reason: String) {
        let event = if self.state == ChannelState::Handshaking {
            TlsEvent::HandshakeFailed(reason.clone())
        } else {
            TlsEvent::Closed(reason.clone())
        };
        self.events.push_back(event);
        self.state = ChannelState::Closed(reason);
        self.deadline = None;
        self.pending = Vec::new();
    }

    /// Fails on an OpenSSL error, reporting first the alert the peer sent, if that was the cause.
    fn fail_with(&mut self, e: &openssl::ssl::Error) {
        if let Some(alert) = e.ssl_error().and_then(Alert::from_error_stack) {
            self.events.push_back(TlsEvent::AlertReceived(alert));
        }
        let mut reason = describe(e, self.stream.ssl());
        let undecryptable = [
            "decryption failed or bad record mac",
            "cipher operation failed",
        ];
        if self.state == ChannelState::Handshaking && undecryptable.contains(&reason.as_str()) {
            reason.push_str(" (the peer's Finished did not decrypt: a wrong PSK?)");
        }
        self.fail(reason);
    }
}

/// OpenSSL's reason for an error (without its file and line), with the certificate
/// verification result when that failed.
fn describe(e: &openssl::ssl::Error, ssl: &SslRef) -> String {
    let reason = e
        .ssl_error()
        .and_then(|stack| stack.errors().first())
        .and_then(|error| error.reason())
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
    let verify = ssl.verify_result();
    if verify == X509VerifyResult::OK {
        reason
    } else {
        format!("{reason}: {}", verify.error_string())
    }
}

//! The security of one stream connection (RFC 8323: `coap+tcp://` and `coaps+tcp://`): one
//! sans-IO interface, [`StreamSecurity`], over [`PlainStream`] and [`TlsChannel`], beside the
//! datagram [`SecurityLayer`](crate::SecurityLayer).
//!
//! The runtime owns the TCP socket and moves bytes: what it reads goes to
//! [`handle_input`](StreamSecurity::handle_input), plaintext comes out of
//! [`read_plaintext`](StreamSecurity::read_plaintext) into its frame decoder's buffer; frames go
//! in through [`send`](StreamSecurity::send) and what [`poll_output`](StreamSecurity::poll_output)
//! returns is written to the socket. A plain stream transforms nothing, and says so with
//! [`is_passthrough`](StreamSecurity::is_passthrough): the runtime may then read the socket
//! straight into its decoder buffer and write frames straight to the socket, with no copy.

use std::collections::VecDeque;
use std::time::Instant;

use crate::error::TlsError;
use crate::layer::PeerIdentity;
use crate::tls::{TlsChannel, TlsEvent};

/// One interface over plain and TLS stream connections.
pub trait StreamSecurity: Send + 'static {
    /// Whether traffic is protected.
    fn is_secure(&self) -> bool;
    /// Whether bytes pass through untransformed, so the runtime may bypass
    /// [`handle_input`](Self::handle_input), [`read_plaintext`](Self::read_plaintext),
    /// [`send`](Self::send) and [`poll_output`](Self::poll_output) and move bytes between the
    /// socket and its own buffers directly (it still reports [`handle_eof`](Self::handle_eof)
    /// and [`close`](Self::close), so the state stays right). True only for plain streams.
    fn is_passthrough(&self) -> bool {
        false
    }
    /// Bytes read from the socket.
    fn handle_input(&mut self, now: Instant, input: &[u8]);
    /// Plaintext for the peer (held until established).
    fn send(&mut self, plaintext: &[u8]) -> Result<(), TlsError>;
    /// Bytes to write to the socket.
    fn poll_output(&mut self) -> Option<Vec<u8>>;
    /// Plaintext from the peer into `out`; how many bytes (0: nothing more now). Call it until
    /// it returns 0 after each [`handle_input`](Self::handle_input).
    fn read_plaintext(&mut self, out: &mut [u8]) -> usize;
    /// The next event.
    fn poll_event(&mut self) -> Option<TlsEvent>;
    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Time passed.
    fn handle_timeout(&mut self, now: Instant);
    /// Closes (close_notify for TLS, in [`poll_output`](Self::poll_output)).
    fn close(&mut self);
    /// The peer closed its side (the socket read 0 bytes).
    fn handle_eof(&mut self, now: Instant);
    /// Who the peer proved to be, if anything.
    fn peer_identity(&self) -> Option<PeerIdentity>;
    /// Whether application data can flow.
    fn is_established(&self) -> bool;
}

impl StreamSecurity for TlsChannel {
    fn is_secure(&self) -> bool {
        true
    }
    fn handle_input(&mut self, now: Instant, input: &[u8]) {
        TlsChannel::handle_input(self, now, input);
    }
    fn send(&mut self, plaintext: &[u8]) -> Result<(), TlsError> {
        TlsChannel::send(self, plaintext)
    }
    fn poll_output(&mut self) -> Option<Vec<u8>> {
        TlsChannel::poll_output(self)
    }
    fn read_plaintext(&mut self, out: &mut [u8]) -> usize {
        TlsChannel::read_plaintext(self, out)
    }
    fn poll_event(&mut self) -> Option<TlsEvent> {
        TlsChannel::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        TlsChannel::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        TlsChannel::handle_timeout(self, now);
    }
    fn close(&mut self) {
        TlsChannel::close(self);
    }
    fn handle_eof(&mut self, now: Instant) {
        TlsChannel::handle_eof(self, now);
    }
    fn peer_identity(&self) -> Option<PeerIdentity> {
        TlsChannel::peer_identity(self)
    }
    fn is_established(&self) -> bool {
        TlsChannel::is_established(self)
    }
}

/// coap+tcp://: no protection, established at once, bytes pass through. Its only event is
/// `Closed` when the peer ends the stream.
#[derive(Debug, Default)]
pub struct PlainStream {
    /// Bytes from the socket not yet read as plaintext; `input[..read_at]` was read.
    input: Vec<u8>,
    read_at: usize,
    output: Vec<u8>,
    events: VecDeque<TlsEvent>,
    closed: bool,
}

impl PlainStream {
    /// A plain stream, established.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamSecurity for PlainStream {
    fn is_secure(&self) -> bool {
        false
    }
    fn is_passthrough(&self) -> bool {
        true
    }
    fn handle_input(&mut self, _now: Instant, input: &[u8]) {
        if self.closed {
            return;
        }
        if self.read_at == self.input.len() {
            self.input.clear();
            self.read_at = 0;
        }
        self.input.extend_from_slice(input);
    }
    fn send(&mut self, plaintext: &[u8]) -> Result<(), TlsError> {
        if self.closed {
            return Err(TlsError::Closed);
        }
        self.output.extend_from_slice(plaintext);
        Ok(())
    }
    fn poll_output(&mut self) -> Option<Vec<u8>> {
        (!self.output.is_empty()).then(|| std::mem::take(&mut self.output))
    }
    fn read_plaintext(&mut self, out: &mut [u8]) -> usize {
        let n = (self.input.len() - self.read_at).min(out.len());
        out[..n].copy_from_slice(&self.input[self.read_at..self.read_at + n]);
        self.read_at += n;
        if self.read_at == self.input.len() {
            self.input = Vec::new();
            self.read_at = 0;
        }
        n
    }
    fn poll_event(&mut self) -> Option<TlsEvent> {
        self.events.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn close(&mut self) {
        self.closed = true;
    }
    fn handle_eof(&mut self, _now: Instant) {
        if !self.closed {
            self.closed = true;
            self.events
                .push_back(TlsEvent::Closed("peer closed the connection".into()));
        }
    }
    fn peer_identity(&self) -> Option<PeerIdentity> {
        None
    }
    fn is_established(&self) -> bool {
        !self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_stream_passes_bytes_through_in_order() {
        let now = Instant::now();
        let mut plain = PlainStream::new();
        assert!(!plain.is_secure() && plain.is_passthrough() && plain.is_established());
        plain.handle_input(now, b"hello ");
        plain.handle_input(now, b"world");
        let mut buf = [0u8; 4];
        let mut got = Vec::new();
        loop {
            let n = plain.read_plaintext(&mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello world");
        plain.send(b"a").unwrap();
        plain.send(b"b").unwrap();
        assert_eq!(plain.poll_output(), Some(b"ab".to_vec()));
        assert_eq!(plain.poll_output(), None);
        assert_eq!(plain.poll_event(), None);
        plain.handle_eof(now);
        assert!(matches!(plain.poll_event(), Some(TlsEvent::Closed(_))));
        assert!(!plain.is_established());
        assert!(plain.send(b"late").is_err());
    }

    #[test]
    fn channels_are_usable_as_trait_objects() {
        let boxed: Box<dyn StreamSecurity> = Box::new(PlainStream::new());
        assert_eq!(boxed.poll_timeout(), None);
        assert_eq!(boxed.peer_identity(), None);
    }
}

//! The security layer: one sans-IO interface over every channel a datagram endpoint can use.
//!
//! Between the socket and the CoAP message layer sits a [`SecurityLayer`]: ciphertext datagrams
//! in from the socket, plaintext CoAP datagrams up to the message layer; plaintext down, ciphertext
//! out. [`PlainLayer`] (coap://) passes datagrams through untouched; [`DtlsLayer`] (coaps://)
//! keeps one [`DtlsChannel`] per peer, connects on first use (client), answers ClientHellos
//! through a stateless [`DtlsListener`] (server), and holds plaintext until the handshake is done.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use crate::dtls::{
    Accept, ChannelEvent, ChannelState, DtlsChannel, DtlsContext, DtlsListener, TlsError,
};

/// Who the peer proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The PSK identity the peer used.
    Psk(Vec<u8>),
    /// The certificate the peer presented (and that passed verification).
    Certificate {
        /// Subject common name.
        common_name: Option<String>,
        /// DNS and IP subject alternative names.
        sans: Vec<String>,
    },
}

/// Something that happened on a peer's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEvent {
    /// A handshake started (client: on first send; server: on a valid cookie).
    HandshakeStarted(SocketAddr),
    /// The channel is established.
    Established(SocketAddr),
    /// The handshake failed, with the reason.
    HandshakeFailed(SocketAddr, String),
    /// The channel closed (close_notify, error, or locally), with the reason.
    Closed(SocketAddr, String),
}

/// One interface over plain and secure datagram channels.
pub trait SecurityLayer: Send + 'static {
    /// Whether traffic is protected.
    fn is_secure(&self) -> bool;
    /// A datagram from the socket.
    fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]);
    /// A plaintext datagram from the message layer for `peer` (connects if needed).
    fn send(&mut self, now: Instant, peer: SocketAddr, plaintext: Vec<u8>);
    /// The next plaintext datagram for the message layer.
    fn poll_received(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
    /// The next datagram for the socket.
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
    /// The next event.
    fn poll_event(&mut self) -> Option<LayerEvent>;
    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Time passed.
    fn handle_timeout(&mut self, now: Instant);
    /// Who the peer proved to be, if anything.
    fn peer_identity(&self, peer: SocketAddr) -> Option<PeerIdentity>;
    /// Closes the channel to a peer (close_notify for DTLS).
    fn disconnect(&mut self, now: Instant, peer: SocketAddr);
}

/// coap://: no protection; datagrams pass through.
#[derive(Debug, Default)]
pub struct PlainLayer {
    received: VecDeque<(SocketAddr, Vec<u8>)>,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl SecurityLayer for PlainLayer {
    fn is_secure(&self) -> bool {
        false
    }
    fn handle_datagram(&mut self, _now: Instant, peer: SocketAddr, datagram: &[u8]) {
        self.received.push_back((peer, datagram.to_vec()));
    }
    fn send(&mut self, _now: Instant, peer: SocketAddr, plaintext: Vec<u8>) {
        self.transmit.push_back((peer, plaintext));
    }
    fn poll_received(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.received.pop_front()
    }
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.pop_front()
    }
    fn poll_event(&mut self) -> Option<LayerEvent> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn peer_identity(&self, _peer: SocketAddr) -> Option<PeerIdentity> {
        None
    }
    fn disconnect(&mut self, _now: Instant, _peer: SocketAddr) {}
}

/// Limits of a [`DtlsLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtlsLimits {
    /// Channels held at once (default 10,000); past it the least recently used established
    /// channel is closed to make room.
    pub max_channels: usize,
    /// Channels in handshake at once (default 1,000); past it new handshakes are refused.
    pub max_handshaking: usize,
    /// Plaintext datagrams held per peer while its handshake runs (default 16).
    pub max_pending_per_peer: usize,
}

impl Default for DtlsLimits {
    fn default() -> Self {
        DtlsLimits {
            max_channels: 10_000,
            max_handshaking: 1_000,
            max_pending_per_peer: 16,
        }
    }
}

struct Peer {
    channel: DtlsChannel,
    pending: VecDeque<Vec<u8>>,
    last_used: Instant,
}

/// coaps://: one DTLS channel per peer.
pub struct DtlsLayer {
    client: Option<DtlsContext>,
    listener: Option<DtlsListener>,
    limits: DtlsLimits,
    peers: HashMap<SocketAddr, Peer>,
    received: VecDeque<(SocketAddr, Vec<u8>)>,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<LayerEvent>,
}

impl DtlsLayer {
    /// A layer that connects with `client` and/or accepts with `server` contexts.
    pub fn new(
        client: Option<DtlsContext>,
        server: Option<DtlsContext>,
        limits: DtlsLimits,
    ) -> Result<Self, TlsError> {
        let listener = server.map(DtlsListener::new).transpose()?;
        Ok(DtlsLayer {
            client,
            listener,
            limits,
            peers: HashMap::new(),
            received: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Channels held.
    pub fn channel_count(&self) -> usize {
        self.peers.len()
    }

    fn handshaking(&self) -> usize {
        self.peers
            .values()
            .filter(|p| !p.channel.is_established())
            .count()
    }

    /// Makes room for one more channel: false if the handshake cap is reached.
    fn admit(&mut self, now: Instant) -> bool {
        if self.handshaking() >= self.limits.max_handshaking {
            return false;
        }
        if self.peers.len() >= self.limits.max_channels {
            let victim = self
                .peers
                .iter()
                .filter(|(_, p)| p.channel.is_established())
                .min_by_key(|(_, p)| p.last_used)
                .map(|(a, _)| *a);
            match victim {
                Some(addr) => self.disconnect(now, addr),
                None => return false,
            }
        }
        true
    }

    /// Moves what a peer's channel produced into the layer's queues.
    fn collect(&mut self, peer: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        while let Some(event) = p.channel.poll_event() {
            self.events.push_back(match event {
                ChannelEvent::Established => LayerEvent::Established(peer),
                ChannelEvent::HandshakeFailed(r) => LayerEvent::HandshakeFailed(peer, r),
                ChannelEvent::Closed(r) => LayerEvent::Closed(peer, r),
            });
        }
        if p.channel.is_established() {
            while let Some(plain) = p.pending.pop_front() {
                let _ = p.channel.send(&plain);
            }
        }
        while let Some(plain) = p.channel.poll_received() {
            self.received.push_back((peer, plain));
        }
        while let Some(d) = p.channel.poll_transmit() {
            self.transmit.push_back((peer, d));
        }
        if matches!(p.channel.state(), ChannelState::Closed(_)) {
            self.peers.remove(&peer);
        }
    }
}

impl SecurityLayer for DtlsLayer {
    fn is_secure(&self) -> bool {
        true
    }

    fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_used = now;
            p.channel.handle_datagram(now, datagram);
            self.collect(peer);
            return;
        }
        let Some(listener) = self.listener.as_mut() else {
            return;
        };
        match listener.accept(now, peer, datagram) {
            Accept::Reply(d) => self.transmit.push_back((peer, d)),
            Accept::Channel(channel) => {
                if !self.admit(now) {
                    tracing::debug!(%peer, "DTLS handshake refused: too many channels");
                    return;
                }
                self.events.push_back(LayerEvent::HandshakeStarted(peer));
                self.peers.insert(
                    peer,
                    Peer {
                        channel: *channel,
                        pending: VecDeque::new(),
                        last_used: now,
                    },
                );
                self.collect(peer);
            }
            Accept::Ignore => {}
        }
    }

    fn send(&mut self, now: Instant, peer: SocketAddr, plaintext: Vec<u8>) {
        if !self.peers.contains_key(&peer) {
            let Some(ctx) = self.client.clone() else {
                return; // a server cannot open channels; the peer is gone
            };
            if !self.admit(now) {
                return;
            }
            match DtlsChannel::connect(&ctx, now) {
                Ok(channel) => {
                    self.events.push_back(LayerEvent::HandshakeStarted(peer));
                    self.peers.insert(
                        peer,
                        Peer {
                            channel,
                            pending: VecDeque::new(),
                            last_used: now,
                        },
                    );
                }
                Err(e) => {
                    self.events
                        .push_back(LayerEvent::HandshakeFailed(peer, e.to_string()));
                    return;
                }
            }
        }
        let max_pending = self.limits.max_pending_per_peer;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_used = now;
            if p.channel.is_established() {
                let _ = p.channel.send(&plaintext);
            } else if p.pending.len() < max_pending {
                p.pending.push_back(plaintext);
            }
        }
        self.collect(peer);
    }

    fn poll_received(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.received.pop_front()
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.pop_front()
    }

    fn poll_event(&mut self) -> Option<LayerEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.channel.poll_timeout())
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.channel.poll_timeout().is_some_and(|t| t <= now))
            .map(|(a, _)| *a)
            .collect();
        for peer in due {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.channel.handle_timeout(now);
            }
            self.collect(peer);
        }
    }

    fn peer_identity(&self, peer: SocketAddr) -> Option<PeerIdentity> {
        let p = self.peers.get(&peer)?;
        if !p.channel.is_established() {
            return None;
        }
        if let Some((common_name, sans)) = p.channel.peer_certificate_names() {
            return Some(PeerIdentity::Certificate { common_name, sans });
        }
        p.channel.psk_identity().map(PeerIdentity::Psk)
    }

    fn disconnect(&mut self, _now: Instant, peer: SocketAddr) {
        if let Some(mut p) = self.peers.remove(&peer) {
            p.channel.close();
            while let Some(d) = p.channel.poll_transmit() {
                self.transmit.push_back((peer, d));
            }
            self.events
                .push_back(LayerEvent::Closed(peer, "closed locally".into()));
        }
    }
}

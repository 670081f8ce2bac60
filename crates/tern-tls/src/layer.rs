//! The security layer: one sans-IO interface over every channel a datagram endpoint can use.
//!
//! Between the socket and the CoAP message layer sits a [`SecurityLayer`]: ciphertext datagrams
//! in from the socket, plaintext CoAP datagrams up to the message layer; plaintext down, ciphertext
//! out. [`PlainLayer`] (coap://) passes datagrams through untouched; [`DtlsLayer`] (coaps://)
//! keeps one [`DtlsChannel`] per peer, connects on first use (client), answers ClientHellos
//! through a stateless [`DtlsListener`] (server), and holds plaintext until the handshake is done.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::alert::Alert;
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
        /// The certificate itself, DER-encoded: for what the names do not say (its issuer,
        /// serial, key, fingerprint), as a provisioning service or a hub checking revocation
        /// needs.
        der: Vec<u8>,
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
    /// An idle channel was closed and freed after the idle time-out.
    IdleFreed(SocketAddr),
    /// The peer sent an alert (before the failure or close it causes).
    AlertReceived(SocketAddr, Alert),
    /// A server channel was created for a peer whose ClientHello returned a valid cookie.
    ServerChannelCreated(SocketAddr),
    /// A server channel was freed (closed, failed, idle, or evicted), with the reason.
    ServerChannelFreed(SocketAddr, String),
    /// Plaintext for a peer could not be sent: no channel and no client credentials, or the
    /// channel could not be opened. Requests waiting for that peer should fail now.
    SendFailed(SocketAddr, String),
}

/// What a [`SecurityLayer`] holds against its caps, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerUsage {
    /// Channels held.
    pub channels: usize,
    /// Their cap.
    pub max_channels: usize,
    /// Established channels closed to make room, so far.
    pub channels_evicted: u64,
    /// Channels in handshake.
    pub handshaking: usize,
    /// Their cap.
    pub max_handshaking: usize,
    /// Handshakes refused by the caps, so far.
    pub handshakes_refused: u64,
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
    /// What the layer holds against its caps (nothing, for a layer without channels).
    fn usage(&self) -> LayerUsage {
        LayerUsage::default()
    }
    /// Uses these client credentials for new channels to `peer` (secure layers only).
    fn set_peer_credentials(&mut self, _peer: SocketAddr, _ctx: DtlsContext) {}
    /// Forgets per-peer client credentials; returns whether there were any.
    fn remove_peer_credentials(&mut self, _peer: SocketAddr) -> bool {
        false
    }
    /// Closes the channels authenticated with a PSK identity; returns how many.
    fn disconnect_identity(&mut self, _now: Instant, _identity: &[u8]) -> usize {
        0
    }
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
    /// An established channel unused this long is closed and freed (default 300 s).
    pub idle_timeout: Duration,
}

impl Default for DtlsLimits {
    fn default() -> Self {
        DtlsLimits {
            max_channels: 10_000,
            max_handshaking: 1_000,
            max_pending_per_peer: 16,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

struct Peer {
    channel: DtlsChannel,
    /// Accepted (server side) rather than connected.
    accepted: bool,
    pending: VecDeque<Vec<u8>>,
    last_used: Instant,
}

/// coaps://: one DTLS channel per peer.
pub struct DtlsLayer {
    client: Option<DtlsContext>,
    /// Client credentials for particular peers, used instead of `client` (the key store).
    peer_clients: HashMap<SocketAddr, DtlsContext>,
    listener: Option<DtlsListener>,
    limits: DtlsLimits,
    peers: HashMap<SocketAddr, Peer>,
    /// Peers whose handshake runs: the only channels with timers.
    handshaking: HashSet<SocketAddr>,
    /// When idle channels are next looked for.
    idle_sweep_at: Option<Instant>,
    received: VecDeque<(SocketAddr, Vec<u8>)>,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<LayerEvent>,
    /// Established channels closed to make room for new ones, so far.
    channels_evicted: u64,
    /// Handshakes refused by the caps, so far.
    handshakes_refused: u64,
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
            peer_clients: HashMap::new(),
            listener,
            limits,
            peers: HashMap::new(),
            handshaking: HashSet::new(),
            idle_sweep_at: None,
            received: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            channels_evicted: 0,
            handshakes_refused: 0,
        })
    }

    /// Channels held.
    pub fn channel_count(&self) -> usize {
        self.peers.len()
    }

    /// Channels in handshake.
    pub fn handshaking_count(&self) -> usize {
        self.handshaking.len()
    }

    /// Uses `ctx` (its PSK or certificates) for new channels to `peer`, instead of the
    /// layer's default client context.
    pub fn set_peer_credentials(&mut self, peer: SocketAddr, ctx: DtlsContext) {
        self.peer_clients.insert(peer, ctx);
    }

    /// Forgets the credentials for `peer`: later handshakes use the default ones (or none).
    /// Returns whether there were any.
    pub fn remove_peer_credentials(&mut self, peer: SocketAddr) -> bool {
        self.peer_clients.remove(&peer).is_some()
    }

    /// Closes every channel whose peer authenticated with this PSK identity (after its key was
    /// removed from the store, for instance); returns how many.
    pub fn disconnect_identity(&mut self, now: Instant, identity: &[u8]) -> usize {
        let victims: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.channel.is_established() && p.channel.psk_identity().as_deref() == Some(identity)
            })
            .map(|(a, _)| *a)
            .collect();
        for peer in &victims {
            self.disconnect(now, *peer);
        }
        victims.len()
    }

    fn insert_peer(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        channel: DtlsChannel,
        accepted: bool,
    ) {
        self.handshaking.insert(peer);
        if accepted {
            self.events
                .push_back(LayerEvent::ServerChannelCreated(peer));
        }
        self.peers.insert(
            peer,
            Peer {
                channel,
                accepted,
                pending: VecDeque::new(),
                last_used: now,
            },
        );
        if self.idle_sweep_at.is_none() {
            self.idle_sweep_at = Some(now + self.idle_sweep_interval());
        }
    }

    /// Forgets a peer's channel, reporting a freed server channel.
    fn remove_peer(&mut self, peer: SocketAddr, reason: &str) -> Option<Peer> {
        self.handshaking.remove(&peer);
        let removed = self.peers.remove(&peer)?;
        if removed.accepted {
            self.events
                .push_back(LayerEvent::ServerChannelFreed(peer, reason.to_string()));
        }
        Some(removed)
    }

    fn idle_sweep_interval(&self) -> Duration {
        (self.limits.idle_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// Closes channels unused for the idle time-out.
    fn sweep_idle(&mut self, now: Instant) {
        let idle = self.limits.idle_timeout;
        let victims: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.channel.is_established() && now.saturating_duration_since(p.last_used) >= idle
            })
            .map(|(a, _)| *a)
            .collect();
        for peer in victims {
            if let Some(mut p) = self.remove_peer(peer, "idle") {
                p.channel.close();
                while let Some(d) = p.channel.poll_transmit() {
                    self.transmit.push_back((peer, d));
                }
                self.events.push_back(LayerEvent::IdleFreed(peer));
            }
        }
        self.idle_sweep_at = (!self.peers.is_empty()).then(|| now + self.idle_sweep_interval());
    }

    /// Makes room for one more channel: false if the handshake cap is reached, or if every
    /// channel is in handshake.
    fn admit(&mut self, now: Instant) -> bool {
        if self.handshaking.len() >= self.limits.max_handshaking {
            self.handshakes_refused += 1;
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
                Some(addr) => {
                    self.channels_evicted += 1;
                    self.disconnect(now, addr);
                }
                None => {
                    self.handshakes_refused += 1;
                    return false;
                }
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
                ChannelEvent::AlertReceived(alert) => LayerEvent::AlertReceived(peer, alert),
            });
        }
        if p.channel.is_established() {
            self.handshaking.remove(&peer);
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
        if let ChannelState::Closed(reason) = p.channel.state() {
            let reason = reason.clone();
            self.remove_peer(peer, &reason);
        }
    }
}

impl SecurityLayer for DtlsLayer {
    fn is_secure(&self) -> bool {
        true
    }

    fn usage(&self) -> LayerUsage {
        LayerUsage {
            channels: self.peers.len(),
            max_channels: self.limits.max_channels,
            channels_evicted: self.channels_evicted,
            handshaking: self.handshaking.len(),
            max_handshaking: self.limits.max_handshaking,
            handshakes_refused: self.handshakes_refused,
        }
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
                self.insert_peer(now, peer, *channel, true);
                self.collect(peer);
            }
            Accept::Ignore => {}
        }
    }

    fn send(&mut self, now: Instant, peer: SocketAddr, plaintext: Vec<u8>) {
        if !self.peers.contains_key(&peer) {
            let Some(ctx) = self
                .peer_clients
                .get(&peer)
                .or(self.client.as_ref())
                .cloned()
            else {
                // A server cannot open channels: the peer has to (re)connect first.
                self.events.push_back(LayerEvent::SendFailed(
                    peer,
                    "no DTLS session with this peer and no client credentials to open one".into(),
                ));
                return;
            };
            if !self.admit(now) {
                self.events.push_back(LayerEvent::SendFailed(
                    peer,
                    "too many DTLS sessions or handshakes in progress".into(),
                ));
                return;
            }
            match DtlsChannel::connect(&ctx, now) {
                Ok(channel) => {
                    self.events.push_back(LayerEvent::HandshakeStarted(peer));
                    self.insert_peer(now, peer, channel, false);
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
        let handshakes = self
            .handshaking
            .iter()
            .filter_map(|a| self.peers.get(a))
            .filter_map(|p| p.channel.poll_timeout())
            .min();
        match (handshakes, self.idle_sweep_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.idle_sweep_at.is_some_and(|t| t <= now) {
            self.sweep_idle(now);
        }
        let due: Vec<SocketAddr> = self
            .handshaking
            .iter()
            .filter(|a| {
                self.peers
                    .get(a)
                    .and_then(|p| p.channel.poll_timeout())
                    .is_some_and(|t| t <= now)
            })
            .copied()
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
            let der = p.channel.peer_certificate_der().unwrap_or_default();
            return Some(PeerIdentity::Certificate {
                common_name,
                sans,
                der,
            });
        }
        p.channel.psk_identity().map(PeerIdentity::Psk)
    }

    fn set_peer_credentials(&mut self, peer: SocketAddr, ctx: DtlsContext) {
        DtlsLayer::set_peer_credentials(self, peer, ctx);
    }

    fn remove_peer_credentials(&mut self, peer: SocketAddr) -> bool {
        DtlsLayer::remove_peer_credentials(self, peer)
    }

    fn disconnect_identity(&mut self, now: Instant, identity: &[u8]) -> usize {
        DtlsLayer::disconnect_identity(self, now, identity)
    }

    fn disconnect(&mut self, _now: Instant, peer: SocketAddr) {
        if let Some(mut p) = self.remove_peer(peer, "closed locally") {
            p.channel.close();
            while let Some(d) = p.channel.poll_transmit() {
                self.transmit.push_back((peer, d));
            }
            self.events
                .push_back(LayerEvent::Closed(peer, "closed locally".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DtlsSettings, Psk, PskMap};
    use std::sync::Arc;

    fn layers(idle: Duration) -> (DtlsLayer, DtlsLayer) {
        let store = PskMap::new();
        store.insert(Psk::new("a", "key-a").unwrap());
        let server = DtlsContext::server(DtlsSettings {
            psk_store: Some(Arc::new(store)),
            ..Default::default()
        })
        .unwrap();
        let client = DtlsContext::client(DtlsSettings {
            psk: Some(Psk::new("a", "key-a").unwrap()),
            ..Default::default()
        })
        .unwrap();
        let limits = DtlsLimits {
            idle_timeout: idle,
            ..Default::default()
        };
        (
            DtlsLayer::new(Some(client), None, limits).unwrap(),
            DtlsLayer::new(None, Some(server), limits).unwrap(),
        )
    }

    const C: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
    const S: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);

    fn exchange(now: Instant, client: &mut DtlsLayer, server: &mut DtlsLayer) {
        for _ in 0..20 {
            let mut moved = false;
            while let Some((_, d)) = client.poll_transmit() {
                server.handle_datagram(now, C, &d);
                moved = true;
            }
            while let Some((_, d)) = server.poll_transmit() {
                client.handle_datagram(now, S, &d);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    #[test]
    fn plaintext_waits_for_the_handshake_then_flows() {
        let (mut client, mut server) = layers(Duration::from_secs(300));
        let now = Instant::now();
        client.send(now, S, b"first".to_vec());
        assert_eq!(client.handshaking_count(), 1);
        exchange(now, &mut client, &mut server);
        assert_eq!(server.poll_received(), Some((C, b"first".to_vec())));
        assert_eq!(client.handshaking_count(), 0);
        assert_eq!(
            server.peer_identity(C),
            Some(PeerIdentity::Psk(b"a".to_vec()))
        );
        let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
        assert_eq!(
            events,
            vec![
                LayerEvent::HandshakeStarted(C),
                LayerEvent::ServerChannelCreated(C),
                LayerEvent::Established(C)
            ]
        );
    }

    #[test]
    fn idle_sessions_are_freed_and_identities_can_be_cut_off() {
        let (mut client, mut server) = layers(Duration::from_millis(500));
        let now = Instant::now();
        client.send(now, S, b"x".to_vec());
        exchange(now, &mut client, &mut server);
        assert_eq!(server.channel_count(), 1);
        // Idle for longer than the time-out: freed, with an event, at the next sweep.
        let later = now + Duration::from_secs(2);
        assert!(server.poll_timeout().is_some_and(|t| t <= later));
        server.handle_timeout(later);
        assert_eq!(server.channel_count(), 0);
        let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
        assert!(events.contains(&LayerEvent::IdleFreed(C)), "{events:?}");
        assert!(
            events.contains(&LayerEvent::ServerChannelFreed(C, "idle".into())),
            "{events:?}"
        );
        // A new session, then its identity's key is withdrawn and live sessions closed.
        let (mut client, mut server) = layers(Duration::from_secs(300));
        client.send(now, S, b"y".to_vec());
        exchange(now, &mut client, &mut server);
        assert_eq!(server.disconnect_identity(now, b"a"), 1);
        assert_eq!(server.channel_count(), 0);
        assert_eq!(server.disconnect_identity(now, b"a"), 0);
    }

    #[test]
    fn per_peer_credentials_override_and_can_be_removed() {
        let (_, mut server) = layers(Duration::from_secs(300));
        let mut bare = DtlsLayer::new(None, None, DtlsLimits::default()).unwrap();
        let now = Instant::now();
        bare.send(now, S, b"no credentials".to_vec());
        assert_eq!(bare.channel_count(), 0, "no credentials, no channel");
        assert!(
            matches!(bare.poll_event(), Some(LayerEvent::SendFailed(peer, _)) if peer == S),
            "a send with no credentials fails at once"
        );
        let ctx = DtlsContext::client(DtlsSettings {
            psk: Some(Psk::new("a", "key-a").unwrap()),
            ..Default::default()
        })
        .unwrap();
        bare.set_peer_credentials(S, ctx);
        bare.send(now, S, b"now".to_vec());
        exchange(now, &mut bare, &mut server);
        assert_eq!(server.poll_received(), Some((C, b"now".to_vec())));
        assert!(bare.remove_peer_credentials(S));
        assert!(!bare.remove_peer_credentials(S));
    }
}

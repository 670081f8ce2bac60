//! What a context holds for its peers right now, against the caps that bound it: the metrics
//! of every resource a peer can make the server keep.
//!
//! [`Context::usage`](crate::Context::usage) sums them over the context's endpoints and
//! listeners. Each is a [`Gauge`]: how much is held, the cap, and how often the cap turned
//! something away (a datagram dropped, a request answered 5.03, an entry evicted, a
//! connection closed). A gauge at its cap with `turned_away` rising is the server degrading
//! as designed rather than growing.

use std::fmt;
use std::ops::AddAssign;

/// One capped resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauge {
    /// Held now.
    pub held: u64,
    /// The cap (summed over endpoints or listeners, each of which has its own).
    pub cap: u64,
    /// Times the cap turned something away since the start (refused, dropped or evicted).
    pub turned_away: u64,
}

impl Gauge {
    pub(crate) fn new(held: usize, cap: usize, turned_away: u64) -> Self {
        Gauge {
            held: held as u64,
            cap: cap as u64,
            turned_away,
        }
    }
}

impl AddAssign for Gauge {
    fn add_assign(&mut self, other: Gauge) {
        self.held += other.held;
        self.cap = self.cap.saturating_add(other.cap);
        self.turned_away += other.turned_away;
    }
}

impl fmt::Display for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.held, self.cap)?;
        if self.turned_away > 0 {
            write!(f, " ({} turned away)", self.turned_away)?;
        }
        Ok(())
    }
}

/// The resources a context holds, each against its cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Peers the message layer keeps state for (message IDs, tokens, outgoing requests);
    /// turned away: datagrams dropped because the table was full of busy peers.
    pub peers: Gauge,
    /// Requests being handled; turned away: requests answered 5.03.
    pub pending_requests: Gauge,
    /// Deduplication entries (recent message IDs and their answers); turned away: entries
    /// evicted early for the per-peer or total cap.
    pub dedup_entries: Gauge,
    /// DTLS channels; turned away: established channels closed to make room.
    pub dtls_sessions: Gauge,
    /// DTLS channels in handshake; turned away: handshakes refused.
    pub dtls_handshakes: Gauge,
    /// Observers over datagrams and streams; turned away: registrations served as plain GETs.
    pub observers: Gauge,
    /// Request bodies arriving block by block; turned away: blocks answered 5.03.
    pub block1_transfers: Gauge,
    /// Bytes of response bodies cached for block-wise GETs; turned away: bodies evicted.
    pub block2_cached_bytes: Gauge,
    /// Stream (TCP and TLS) connections accepted; turned away: connections closed at once.
    pub stream_connections: Gauge,
    /// Stream connections in their handshake (TLS, then CSM); turned away: connections closed
    /// at once.
    pub stream_handshakes: Gauge,
    /// Output bytes buffered for stream connections in all (held), against the per-connection
    /// bound times the connections; turned away: times a connection's reading was paused
    /// because its peer was not taking its responses.
    pub stream_buffered_bytes: Gauge,
}

impl AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.peers += o.peers;
        self.pending_requests += o.pending_requests;
        self.dedup_entries += o.dedup_entries;
        self.dtls_sessions += o.dtls_sessions;
        self.dtls_handshakes += o.dtls_handshakes;
        self.observers += o.observers;
        self.block1_transfers += o.block1_transfers;
        self.block2_cached_bytes += o.block2_cached_bytes;
        self.stream_connections += o.stream_connections;
        self.stream_handshakes += o.stream_handshakes;
        self.stream_buffered_bytes += o.stream_buffered_bytes;
    }
}

impl Usage {
    /// Every gauge with its name, in a fixed order (for logs and metrics exporters).
    pub fn gauges(&self) -> [(&'static str, Gauge); 11] {
        [
            ("peers", self.peers),
            ("pending_requests", self.pending_requests),
            ("dedup_entries", self.dedup_entries),
            ("dtls_sessions", self.dtls_sessions),
            ("dtls_handshakes", self.dtls_handshakes),
            ("observers", self.observers),
            ("block1_transfers", self.block1_transfers),
            ("block2_cached_bytes", self.block2_cached_bytes),
            ("stream_connections", self.stream_connections),
            ("stream_handshakes", self.stream_handshakes),
            ("stream_buffered_bytes", self.stream_buffered_bytes),
        ]
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, gauge)) in self.gauges().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name} {gauge}")?;
        }
        Ok(())
    }
}

//! The RFC 7252 message layer for datagram transports, sans-IO (RFC 7252 §4, §5.2, §5.3, §5.4).
//!
//! An [`Endpoint`] serves one local socket: it takes datagrams with [`Endpoint::handle`] and the
//! passing of time with [`Endpoint::handle_timeout`], and hands out datagrams to send
//! ([`Endpoint::poll_transmit`]), events ([`Endpoint::poll_event`]) and the instant of its next
//! timer ([`Endpoint::poll_timeout`]). It plays both roles: requests are started with
//! [`Endpoint::request`], incoming requests surface as [`Event::Request`] and are answered with
//! [`Endpoint::respond`].
//!
//! What it does: confirmable retransmission with exponential back-off, NSTART with queuing,
//! deduplication with cached responses, message IDs per peer, random tokens and token matching,
//! piggybacked and separate responses, RST handling, format errors (RST for CON, silence for NON)
//! and 4.02 for unrecognised critical options. Every table it keeps is capped (see
//! [`EndpointConfig`]).
//!
//! Observe (RFC 7641) at the message layer: a request registering an observation stays open
//! after its first response and delivers later ones as [`Event::Notification`] (`observation`);
//! a server sends notifications outside any exchange with [`Endpoint::notify`] (`notify`).

mod client;
mod notify;
mod observation;
mod server;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_notify;
#[cfg(test)]
mod tests_observe;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};

use crate::code::MessageType;
use crate::dedup::{DedupCache, DedupState};
use crate::hash::{FromRng, HashMap, Hasher};
use crate::message::{Message, Token};
use crate::reliability::TransmissionParams;
use crate::wire::{self, Datagram};

pub use client::{RequestError, RequestParams};
pub use notify::{NotificationFailure, NotifyError};
pub use server::RespondError;

/// Limits and behaviour of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Transmission parameters for peers without their own.
    pub params: TransmissionParams,
    /// How long a handler may take before a CON request gets an empty ACK and the response
    /// follows as a separate CON (default 1 s, below the peer's shortest ACK_TIMEOUT).
    pub separate_response_delay: Duration,
    /// Token length for requests whose token is left empty (default 8, RFC 7252 §5.3.1).
    pub token_len: usize,
    /// Deduplication entries kept per peer (default 1024).
    pub dedup_per_peer: usize,
    /// Deduplication entries kept in all (default 65,536).
    pub dedup_total: usize,
    /// Peers tracked at once (default 10,000); a peer with nothing outstanding is dropped first.
    pub max_peers: usize,
    /// Incoming requests handed to the application and not yet answered (default 10,000);
    /// past this, requests are answered 5.03 Service Unavailable.
    pub max_pending_incoming: usize,
    /// Outgoing requests, active or queued, per peer (default 1,024).
    pub max_requests_per_peer: usize,
    /// Option numbers the application understands beyond the registry; an unknown critical
    /// option in a request is answered 4.02 Bad Option.
    pub extra_known_options: Vec<u16>,
    /// Never reuse a message ID with a peer within EXCHANGE_LIFETIME (RFC 7252 §4.4; default
    /// on). Then at most 65,536 requests per lifetime (about 265/s) go to one peer from one
    /// socket; more fail with [`RequestError::MessageIdsExhausted`]. Turn off only for load
    /// generation, as `tern bench` does.
    pub strict_message_ids: bool,
    /// Options in the registry that this endpoint does not implement yet, treated as
    /// unrecognised (§5.4.1): Block1 and Block2 until block-wise transfer lands, so that a
    /// request carrying them gets 4.02 instead of being handled as if the body were whole,
    /// and a response carrying them is refused instead of silently truncated.
    pub unimplemented_options: Vec<u16>,
    /// How long past a notification's Max-Age an observation waits for the next one before it
    /// ends with [`RequestError::ObservationLapsed`] (default 10 s: room for a notification sent
    /// as Max-Age runs out to arrive after a retransmission or two; RFC 7641 §3.3.1).
    pub observe_lapse_slack: Duration,
    /// How long a NON notification is remembered so that a RST answering it ends the
    /// observation (default 10 s, several round trips). A later RST is not matched; the
    /// observer's next notification draws another one.
    pub notification_reset_window: Duration,
}

/// Why an endpoint configuration cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Bad transmission parameters.
    #[error(transparent)]
    Params(#[from] crate::reliability::ParamsError),
    /// The separate-response delay is zero or over an hour.
    #[error("the separate-response delay must be between 1 ms and 1 h")]
    SeparateResponseDelay,
    /// Token length over 8.
    #[error("the token length must be at most 8 bytes, not {0}")]
    TokenLength(usize),
    /// A capacity of zero.
    #[error("{0} must be at least 1")]
    ZeroCapacity(&'static str),
    /// A duration outside 1 ms – 1 h.
    #[error("{0} must be between 1 ms and 1 h")]
    Duration(&'static str),
}

impl EndpointConfig {
    /// Checks every field: what [`Endpoint::new`] is given should have passed this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.params.validate()?;
        if self.separate_response_delay < Duration::from_millis(1)
            || self.separate_response_delay > Duration::from_secs(3600)
        {
            return Err(ConfigError::SeparateResponseDelay);
        }
        if self.token_len > 8 {
            return Err(ConfigError::TokenLength(self.token_len));
        }
        for (name, value) in [
            ("observe_lapse_slack", self.observe_lapse_slack),
            ("notification_reset_window", self.notification_reset_window),
        ] {
            if value < Duration::from_millis(1) || value > Duration::from_secs(3600) {
                return Err(ConfigError::Duration(name));
            }
        }
        for (name, value) in [
            ("dedup_per_peer", self.dedup_per_peer),
            ("dedup_total", self.dedup_total),
            ("max_peers", self.max_peers),
            ("max_pending_incoming", self.max_pending_incoming),
            ("max_requests_per_peer", self.max_requests_per_peer),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroCapacity(name));
            }
        }
        Ok(())
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            params: TransmissionParams::default(),
            separate_response_delay: Duration::from_secs(1),
            token_len: 8,
            dedup_per_peer: 1024,
            dedup_total: 65_536,
            max_peers: 10_000,
            max_pending_incoming: 10_000,
            max_requests_per_peer: 1024,
            extra_known_options: Vec::new(),
            strict_message_ids: true,
            unimplemented_options: Vec::new(),
            observe_lapse_slack: Duration::from_secs(10),
            notification_reset_window: Duration::from_secs(10),
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// Identifies a request this endpoint sent (client role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies a request this endpoint received and has not yet answered (server role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncomingId(pub u64);

/// Identifies a notification sent with [`Endpoint::notify`] (server role, RFC 7641).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NotificationId(pub u64);

/// What the endpoint reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request to answer with [`Endpoint::respond`].
    Request {
        /// The handle to respond with.
        id: IncomingId,
        /// Who sent it.
        peer: SocketAddr,
        /// The request (type, message ID and token as received).
        request: Message,
    },
    /// The response to a request. For a request that registers an observation (GET or FETCH
    /// with Observe 0), this is the first response; if it is a 2.xx with an Observe option the
    /// observation is established and later responses arrive as [`Event::Notification`].
    Response {
        /// The request it answers.
        id: RequestId,
        /// The response as received.
        response: Message,
    },
    /// A later response of an established observation (RFC 7641 §3.2): fresh (§3.4: stale and
    /// duplicate ones are dropped) and so in Observe order. A notification that is not a 2.xx
    /// with an Observe option (an error, or the server stopped serving the observation) is the
    /// observation's last event ([`observe::continues_observation`](crate::observe::continues_observation)).
    Notification {
        /// The registering request.
        id: RequestId,
        /// The notification as received.
        response: Message,
    },
    /// A request that ended without a response, or an observation that ended without a last
    /// notification ([`RequestError::ObservationLapsed`], say).
    RequestFailed {
        /// The request.
        id: RequestId,
        /// Why.
        error: RequestError,
    },
    /// A confirmable notification was acknowledged: the observer is still listening
    /// ([`ObserverRegistry::confirmed`](crate::observe::ObserverRegistry::confirmed)).
    NotificationAcked(NotificationId),
    /// A notification failed. For [`NotificationFailure::Reset`], [`NotificationFailure::Timeout`]
    /// and [`NotificationFailure::Aborted`], remove the observer (RFC 7641 §3.6, §4.5).
    NotificationFailed {
        /// The notification.
        id: NotificationId,
        /// Why.
        reason: NotificationFailure,
    },
}

/// Counters of what the endpoint has done, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handled.
    pub datagrams_in: u64,
    /// Datagrams queued for sending.
    pub datagrams_out: u64,
    /// CON retransmissions sent.
    pub retransmissions: u64,
    /// Requests and CON notifications that failed by time-out (no ACK, or no response in time).
    pub timeouts: u64,
    /// Duplicates detected.
    pub duplicates: u64,
    /// Malformed datagrams.
    pub format_errors: u64,
    /// RSTs sent.
    pub resets_sent: u64,
    /// Requests answered 4.02 Bad Option by the message layer.
    pub bad_options: u64,
    /// Requests refused 5.03 because too many were pending.
    pub overloaded: u64,
    /// Datagrams dropped because the peer table was full.
    pub peers_refused: u64,
    /// Responses sent with a message ID reused within EXCHANGE_LIFETIME, because every ID was
    /// in use with that peer (requests fail instead).
    pub message_ids_reused: u64,
    /// Notifications received and dropped as stale (RFC 7641 §3.4).
    pub stale_notifications: u64,
    /// Notifications sent with [`Endpoint::notify`] (first transmissions).
    pub notifications_sent: u64,
}

impl std::ops::AddAssign for Stats {
    /// Adds another endpoint's counters (to total a context's endpoints).
    fn add_assign(&mut self, other: Stats) {
        self.datagrams_in += other.datagrams_in;
        self.datagrams_out += other.datagrams_out;
        self.retransmissions += other.retransmissions;
        self.timeouts += other.timeouts;
        self.duplicates += other.duplicates;
        self.format_errors += other.format_errors;
        self.resets_sent += other.resets_sent;
        self.bad_options += other.bad_options;
        self.overloaded += other.overloaded;
        self.peers_refused += other.peers_refused;
        self.message_ids_reused += other.message_ids_reused;
        self.stale_notifications += other.stale_notifications;
        self.notifications_sent += other.notifications_sent;
    }
}

/// Why a CON is being retransmitted, and what to do when it is acknowledged or gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Request(RequestId),
    SeparateResponse,
    /// A notification (CON, retransmitted; or NON, kept for the reset window).
    Notification(NotificationId, Token),
}

/// A CON or NON we sent and may hear back about by message ID (ACK or RST).
#[derive(Debug)]
struct Outgoing {
    purpose: Purpose,
    bytes: Vec<u8>,
    /// Retransmission state: `None` for NON messages.
    retransmit: Option<Retransmit>,
}

#[derive(Debug, Clone, Copy)]
struct Retransmit {
    count: u32,
    timeout: Duration,
    due: Instant,
}

/// What the endpoint knows about one peer.
#[derive(Debug)]
struct Peer {
    next_mid: u16,
    params: TransmissionParams,
    /// Outstanding interactions for NSTART (§4.7).
    outstanding: usize,
    /// Requests waiting for an NSTART slot.
    queue: VecDeque<RequestId>,
    /// CON and NON messages sent, by message ID, until acknowledged, reset or given up.
    outgoing: HashMap<u16, Outgoing>,
    /// Active and queued requests by token.
    tokens: HashMap<Token, RequestId>,
    /// Incoming requests handed to the application and not yet answered.
    pending_incoming: usize,
    /// Notification streams (server role) with a CON notification in flight, by token.
    streams: HashMap<Token, notify::Stream>,
    last_activity: Instant,
    /// When each block of message IDs was last left, once this peer used more than one block.
    mid_blocks: Option<Box<[Option<Instant>; MID_BLOCKS]>>,
}

impl Peer {
    fn is_idle(&self) -> bool {
        self.outgoing.is_empty()
            && self.tokens.is_empty()
            && self.streams.is_empty()
            && self.queue.is_empty()
            && self.pending_incoming == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retransmit(SocketAddr, u16),
    RequestDeadline(RequestId),
    Sweep,
}

/// `now + d`, saturating: a deadline too far to represent becomes "in about a century", which
/// never fires in practice, instead of a panic.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(d.min(CENTURY)).unwrap_or(now)
}

/// Message IDs are guarded against reuse in blocks of this many (§4.4): one time-stamp per
/// block instead of one per ID keeps the guard at about a kilobyte per busy peer.
pub const MID_BLOCK: u16 = 1024;
const MID_BLOCKS: usize = 65_536 / MID_BLOCK as usize;

/// Why no message ID could be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MidError {
    TooManyPeers,
    Exhausted,
}

/// How long new peers are refused without a scan once the table was found full of busy peers.
const NO_ROOM_BACKOFF: Duration = Duration::from_millis(100);

/// How often idle peers and expired deduplication entries are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The sans-IO message layer of one datagram socket. See the module documentation.
pub struct Endpoint {
    config: EndpointConfig,
    peers: HashMap<SocketAddr, Peer>,
    dedup: DedupCache<SocketAddr>,
    requests: HashMap<RequestId, client::ClientRequest>,
    incoming: HashMap<IncomingId, server::PendingIncoming>,
    /// Retransmissions, request deadlines and the sweep, removed when what they time ends, so
    /// the set holds only live timers.
    timers: BTreeSet<(Instant, Timer)>,
    /// When each CON request still being handled gets its empty ACK. Every request waits the
    /// same delay, so arrival order is deadline order: a FIFO instead of a heap entry per
    /// request, trimmed from the front as requests are answered (assumes `now` never goes back).
    separate_acks: VecDeque<(Instant, IncomingId)>,
    /// When each NON notification stops being matched against RSTs: every one waits
    /// [`EndpointConfig::notification_reset_window`], so a FIFO as for `separate_acks`.
    non_notifications: VecDeque<(Instant, SocketAddr, u16, NotificationId)>,
    sweep_scheduled: bool,
    /// After a scan found no idle peer to evict, new peers are refused without scanning.
    no_room_until: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    rng: ChaCha12Rng,
    /// Keyed from the seed: attackers choose addresses, message IDs and tokens, so the maps use
    /// a keyed hash, and tests stay deterministic.
    hasher: Hasher,
    next_id: u64,
    stats: Stats,
}

impl Endpoint {
    /// An endpoint whose tokens, message IDs and retransmission jitter come from `seed`.
    /// The runtime seeds from the operating system; tests seed for replayable runs.
    pub fn new(config: EndpointConfig, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha12Rng::from_seed(seed);
        let hasher = Hasher::from_rng(&mut rng);
        let dedup = DedupCache::new(config.dedup_per_peer, config.dedup_total, hasher.clone());
        Endpoint {
            config,
            peers: HashMap::with_hasher(hasher.clone()),
            dedup,
            requests: HashMap::with_hasher(hasher.clone()),
            incoming: HashMap::with_hasher(hasher.clone()),
            hasher,
            timers: BTreeSet::new(),
            separate_acks: VecDeque::new(),
            non_notifications: VecDeque::new(),
            sweep_scheduled: false,
            no_room_until: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            next_id: 0,
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Peers currently tracked.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Deduplication entries currently held.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// Deduplication entries dropped early by the per-peer or total cap so far.
    pub fn dedup_evicted(&self) -> u64 {
        self.dedup.evicted()
    }

    /// Incoming requests not yet answered.
    pub fn pending_incoming(&self) -> usize {
        self.incoming.len()
    }

    /// Outgoing requests active or queued.
    pub fn active_requests(&self) -> usize {
        self.requests.len()
    }

    /// Sets the transmission parameters used with one peer from now on.
    pub fn set_peer_params(&mut self, now: Instant, peer: SocketAddr, params: TransmissionParams) {
        if let Some(p) = self.peer_mut(now, peer) {
            p.params = params;
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(at, _)| *at);
        let ack = self.separate_acks.front().map(|(at, _)| *at);
        let non = self.non_notifications.front().map(|(at, ..)| *at);
        [timer, ack, non].into_iter().flatten().min()
    }

    /// Handles one received datagram.
    pub fn handle(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        let message = match Datagram::new_checked(datagram) {
            Ok(d) => d,
            Err(error) => {
                self.stats.format_errors += 1;
                // §4.2/§4.3: a CON with a format error is rejected with RST; anything else is
                // silently ignored. Only a version-1 header is trusted for the type and ID.
                if let Some(h) = wire::peek_header(datagram) {
                    let version_ok = datagram.first().is_some_and(|b| b >> 6 == 1);
                    if version_ok && h.ty == MessageType::Con {
                        tracing::debug!(%peer, %error, "malformed CON, sending RST");
                        self.send_reset(peer, h.mid);
                    }
                }
                return;
            }
        };
        if !self.peers.contains_key(&peer) && !self.make_room_for_peer(now) {
            self.stats.peers_refused += 1;
            return;
        }
        let code = message.code();
        match message.ty() {
            // §4.2: an ACK carries nothing or a response; a RST is always empty. Anything else
            // is a format error, and ACK and RST are never answered.
            MessageType::Ack if code.is_empty() || code.is_response() => {
                self.handle_ack(now, peer, &message)
            }
            MessageType::Rst if code.is_empty() => self.handle_reset(now, peer, message.mid()),
            MessageType::Ack | MessageType::Rst => self.stats.format_errors += 1,
            _ if code.is_request() => self.handle_request(now, peer, &message),
            ty if code.is_response() => self.handle_separate_response(now, peer, &message, ty),
            MessageType::Con => {
                // An empty CON is a ping (§4.3): answered with RST.
                self.send_reset(peer, message.mid());
            }
            _ => {}
        }
        self.schedule_sweep(now);
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.separate_acks.front() {
            if at > now {
                break;
            }
            self.separate_acks.pop_front();
            self.on_separate_ack_timer(now, id);
        }
        while let Some(&(at, peer, mid, id)) = self.non_notifications.front() {
            if at > now {
                break;
            }
            self.non_notifications.pop_front();
            self.forget_non_notification(peer, mid, id);
        }
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Retransmit(peer, mid) => self.on_retransmit_timer(now, peer, mid),
                Timer::RequestDeadline(id) => self.on_request_deadline(now, id),
                Timer::Sweep => {
                    self.sweep_scheduled = false;
                    self.sweep(now);
                }
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn set_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.insert((at, timer));
    }

    fn cancel_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.remove(&(at, timer));
    }

    /// Forgets a message we sent, with its retransmission timer.
    fn remove_outgoing(&mut self, peer: SocketAddr, mid: u16) -> Option<Outgoing> {
        let out = self.peers.get_mut(&peer)?.outgoing.remove(&mid)?;
        if let Some(rt) = out.retransmit {
            self.cancel_timer(rt.due, Timer::Retransmit(peer, mid));
        }
        Some(out)
    }

    /// Live timers (for tests of boundedness).
    #[cfg(test)]
    pub(crate) fn timer_count(&self) -> usize {
        self.timers.len()
    }

    fn queue_transmit(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit {
            destination,
            contents,
        });
    }

    fn send_reset(&mut self, peer: SocketAddr, mid: u16) {
        self.stats.resets_sent += 1;
        self.queue_transmit(peer, wire::empty_message(MessageType::Rst, mid).to_vec());
    }

    /// A uniform random number in `[0, 1)`.
    fn unit_random(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn peer_mut(&mut self, now: Instant, addr: SocketAddr) -> Option<&mut Peer> {
        if !self.peers.contains_key(&addr) {
            if !self.make_room_for_peer(now) {
                return None;
            }
            let next_mid = self.rng.next_u32() as u16;
            self.peers.insert(
                addr,
                Peer {
                    next_mid,
                    params: self.config.params,
                    outstanding: 0,
                    queue: VecDeque::new(),
                    outgoing: HashMap::with_hasher(self.hasher.clone()),
                    tokens: HashMap::with_hasher(self.hasher.clone()),
                    pending_incoming: 0,
                    streams: HashMap::with_hasher(self.hasher.clone()),
                    last_activity: now,
                    mid_blocks: None,
                },
            );
            self.schedule_sweep(now);
        }
        let peer = self.peers.get_mut(&addr)?;
        peer.last_activity = now;
        Some(peer)
    }

    /// At the peer cap, drops the least recently active tenth of idle peers. False when no
    /// room can be made (every peer has something outstanding).
    fn make_room_for_peer(&mut self, now: Instant) -> bool {
        if self.peers.len() < self.config.max_peers {
            return true;
        }
        // When every peer is busy, a flood of new addresses must not cost a scan each.
        if self.no_room_until.is_some_and(|until| now < until) {
            return false;
        }
        let mut idle: Vec<(Instant, SocketAddr)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_idle())
            .map(|(a, p)| (p.last_activity, *a))
            .collect();
        if idle.is_empty() {
            self.no_room_until = Some(later(now, NO_ROOM_BACKOFF));
            return false;
        }
        let evict = (self.config.max_peers / 10).clamp(1, idle.len());
        idle.select_nth_unstable(evict - 1);
        for (_, addr) in &idle[..evict] {
            self.peers.remove(addr);
        }
        true
    }

    fn schedule_sweep(&mut self, now: Instant) {
        if !self.sweep_scheduled {
            self.sweep_scheduled = true;
            self.set_timer(later(now, SWEEP_INTERVAL), Timer::Sweep);
        }
    }

    /// Expires deduplication entries and forgets idle peers whose message IDs can no longer
    /// collide (nothing remembered from them and nothing of ours outstanding).
    fn sweep(&mut self, now: Instant) {
        self.dedup.expire(now);
        let dedup = &self.dedup;
        self.peers.retain(|addr, p| {
            !(p.is_idle()
                && dedup.peer_len(*addr) == 0
                && now.saturating_duration_since(p.last_activity) >= p.params.exchange_lifetime())
        });
        if !self.peers.is_empty() || !self.dedup.is_empty() {
            self.schedule_sweep(now);
        }
    }

    /// The next message ID for `peer` (§4.4). With [`EndpointConfig::strict_message_ids`], an
    /// ID whose block of [`MID_BLOCK`] was last used within EXCHANGE_LIFETIME is refused when
    /// `strict` (requests, which fail with a clear error) and reused with a count in
    /// [`Stats::message_ids_reused`] otherwise (responses, which are never dropped).
    pub(super) fn allocate_mid(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        strict: bool,
    ) -> Result<u16, MidError> {
        let guard = self.config.strict_message_ids;
        let p = self.peer_mut(now, peer).ok_or(MidError::TooManyPeers)?;
        let mid = p.next_mid;
        let mut reused = false;
        if mid % MID_BLOCK == 0 {
            let block = usize::from(mid / MID_BLOCK);
            let lifetime = p.params.exchange_lifetime();
            let blocks = p
                .mid_blocks
                .get_or_insert_with(|| Box::new([None; MID_BLOCKS]));
            if guard && blocks[block].is_some_and(|left| now < later(left, lifetime)) {
                if strict {
                    return Err(MidError::Exhausted);
                }
                reused = true;
            }
            // Entering this block leaves the previous one: its IDs are free a lifetime from now.
            blocks[(block + MID_BLOCKS - 1) % MID_BLOCKS] = Some(now);
        }
        p.next_mid = mid.wrapping_add(1);
        if reused {
            self.stats.message_ids_reused += 1;
        }
        Ok(mid)
    }

    /// Sends a message we may need to match by message ID later; CONs are retransmitted.
    fn send_tracked(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        bytes: Vec<u8>,
        purpose: Purpose,
        confirmable: bool,
    ) {
        let retransmit = if confirmable {
            let params = self
                .peers
                .get(&peer)
                .map_or(self.config.params, |p| p.params);
            let timeout = params.initial_timeout(self.unit_random());
            self.set_timer(later(now, timeout), Timer::Retransmit(peer, mid));
            Some(Retransmit {
                count: 0,
                timeout,
                due: later(now, timeout),
            })
        } else {
            None
        };
        self.queue_transmit(peer, bytes.clone());
        if let Some(p) = self.peers.get_mut(&peer) {
            p.outgoing.insert(
                mid,
                Outgoing {
                    purpose,
                    bytes,
                    retransmit,
                },
            );
        }
    }

    fn on_retransmit_timer(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        if self.notification_takes_over(now, peer, mid) {
            return; // RFC 7641 §4.5.2: a newer notification went out in this one's place
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let max_retransmit = p.params.max_retransmit;
        let Some(out) = p.outgoing.get_mut(&mid) else {
            return;
        };
        let Some(rt) = out.retransmit.as_mut() else {
            return;
        };
        if rt.due != now && rt.due > now {
            return; // a stale timer for a rescheduled transmission
        }
        if rt.count < max_retransmit {
            rt.count += 1;
            rt.timeout = rt.timeout.saturating_mul(2);
            rt.due = later(now, rt.timeout);
            let (due, bytes) = (rt.due, out.bytes.clone());
            self.stats.retransmissions += 1;
            self.queue_transmit(peer, bytes);
            self.set_timer(due, Timer::Retransmit(peer, mid));
            return;
        }
        // Give up: MAX_RETRANSMIT reached and the last timeout ran out.
        let Some(out) = p.outgoing.remove(&mid) else {
            return;
        };
        match out.purpose {
            Purpose::Request(id) => {
                let transmissions = max_retransmit + 1;
                self.stats.timeouts += 1;
                self.finish_request(now, id, Err(RequestError::Unacknowledged { transmissions }));
            }
            Purpose::SeparateResponse => {
                tracing::debug!(%peer, mid, "separate response never acknowledged");
            }
            Purpose::Notification(id, token) => {
                self.stats.timeouts += 1;
                self.fail_stream(peer, token, Some(id), NotificationFailure::Timeout);
            }
        }
    }

    /// Remembers a received message ID for deduplication.
    fn remember(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        ty: MessageType,
        state: DedupState,
    ) {
        let params = self
            .peers
            .get(&peer)
            .map_or(self.config.params, |p| p.params);
        let lifetime = if ty == MessageType::Con {
            params.exchange_lifetime()
        } else {
            params.non_lifetime()
        };
        self.dedup.insert(peer, mid, later(now, lifetime), state);
    }

    fn empty(ty: MessageType, mid: u16) -> Vec<u8> {
        wire::empty_message(ty, mid).to_vec()
    }
}

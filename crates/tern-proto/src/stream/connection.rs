//! The message layer of one CoAP-over-stream connection (RFC 8323 §3–§5, §7.1).
//!
//! A [`StreamConnection`] takes the bytes of one TCP or TLS stream and the passing of time,
//! and hands out bytes to write, events and its next timer. It does on its own what RFC 8323
//! leaves to the connection:
//!
//! - *CSM exchange* (§5.3): ours is the first thing queued; the peer's must be the first
//!   message it sends, within [`StreamConfig::csm_timeout`]. Requests made before it arrives
//!   wait (counted against [`StreamConfig::max_outstanding_requests`]) and are sent, or fail
//!   when larger than the peer's Max-Message-Size, when it does. Later CSMs update the
//!   peer's values; an unknown critical CSM option is answered with Abort and
//!   Bad-CSM-Option.
//! - *Requests and responses* (§3, §4): matched by token, tokens random from the seed, each
//!   request with a deadline; a response to an unknown token is dropped (streams have no
//!   RST). An observation (RFC 7641 over streams, §7.1) stays open after a 2.xx with Observe
//!   and its later responses are [`StreamEvent::Notification`]s, in order, until it is
//!   cancelled or [deregistered](StreamConnection::deregister) (GET Observe 1). An incoming
//!   request with an unrecognised critical option is answered 4.02, one past
//!   [`StreamConfig::max_unanswered_requests`] 5.03, by the connection itself. Empty
//!   messages (0.00) are ignored (§3.4).
//! - *Ping and Pong* (§5.4): a Ping is answered with a Pong (Custody echoed); our Pings
//!   expect a Pong within [`StreamConfig::pong_timeout`]; keepalive Pings when quiet.
//! - *Idle time-out*: with nothing outstanding either way, and no observers served (as the
//!   application says with [`StreamConnection::set_observers`]), the connection is released
//!   after [`StreamConfig::idle_timeout`].
//! - *Release and Abort* (§5.5, §5.6): Release (either way) stops new requests and closes
//!   once nothing is outstanding; Abort fails everything and closes. Frames over our
//!   Max-Message-Size, malformed frames, a missing CSM, a stalled frame and a missing Pong
//!   end the connection with an Abort carrying a diagnostic.
//!
//! Memory is bounded: the input buffer by one maximal frame
//! ([`FrameDecoder::capacity`](super::frame::FrameDecoder::capacity)), requests by
//! [`StreamConfig::max_outstanding_requests`], incoming requests by
//! [`StreamConfig::max_unanswered_requests`], output the connection writes on its own (Pong,
//! 4.02, 5.03) by [`StreamConfig::max_queued_output`]. Events are produced only by calls
//! and are meant to be drained after each.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};

use super::frame::{self, FrameDecoder};
use super::signal::{Abort, Csm, Ping, Release, DEFAULT_MAX_MESSAGE_SIZE};
use crate::code::{Code, MessageType};
use crate::endpoint::{later, IncomingId, RequestError, RequestId, RequestParams};
use crate::hash::{FromRng, HashMap, Hasher};
use crate::message::{EncodeError, Message, Token};
use crate::observe;

mod receive;

/// Which side of the connection this is: the client connected, the server accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRole {
    /// Opened the connection.
    Client,
    /// Accepted it.
    Server,
}

/// Settings of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Max-Message-Size this side announces in its CSM and enforces on what it receives: a
    /// frame larger than this is answered by Abort and the connection closes.
    pub max_message_size: u32,
    /// Whether this side announces Block-Wise-Transfer in its CSM (RFC 8323 §5.3.2).
    pub block_wise_transfer: bool,
    /// How long to wait for the peer's CSM before aborting the connection.
    pub csm_timeout: Duration,
    /// Send a Ping after this long without receiving anything (`None`: no keepalive).
    pub keepalive: Option<Duration>,
    /// A Ping not answered by a Pong within this closes the connection.
    pub pong_timeout: Duration,
    /// How long a request waits for its response when its `RequestParams` give no time-out.
    pub request_timeout: Duration,
    /// A frame begun but not completed within this closes the connection (a stalled peer).
    pub stall_timeout: Duration,
    /// With nothing outstanding and nothing received for this long, the connection is
    /// released (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Requests this side may have outstanding (sent or waiting for the peer's CSM).
    pub max_outstanding_requests: usize,
    /// Requests received and not yet answered; past it new requests get 5.03.
    pub max_unanswered_requests: usize,
    /// Token length for requests this side sends (1–8; more is taken as 8).
    pub token_len: usize,
    /// Output the connection queues on its own (Pong, 4.02, 5.03) is not added past this
    /// many unsent bytes: the connection aborts instead, as a peer that keeps asking
    /// without reading the answers would otherwise grow the queue without bound.
    pub max_queued_output: usize,
}

impl Default for StreamConfig {
    /// The defaults, and why:
    /// - `max_message_size` 1,049,600 (1 MiB + 1 KiB): a 1 MiB body fits in one message
    ///   with a kilobyte for header, token and options, so typical firmware images and
    ///   documents need no block-wise transfer; it is also the input buffer's bound.
    /// - `block_wise_transfer` on: the runtime does block-wise (and BERT) over streams.
    /// - `csm_timeout` 10 s: a CSM is the peer's first message; a peer that has not sent
    ///   one by then is not speaking CoAP.
    /// - `keepalive` none: TCP keeps the connection; NAT keepalive is the application's
    ///   choice.
    /// - `pong_timeout` 10 s: a round trip on any working path.
    /// - `request_timeout` 93 s: MAX_TRANSMIT_WAIT of RFC 7252 §4.8.2, the time a datagram
    ///   request may take, so a request waits as long over either transport.
    /// - `stall_timeout` 30 s: a 1 MiB frame needs 35 KB/s to arrive in time; a peer
    ///   slower than that holding a buffer is treated as hostile (slowloris).
    /// - `idle_timeout` none: the runtime chooses (its server default is 300 s).
    /// - `max_outstanding_requests` and `max_unanswered_requests` 1,024: the datagram
    ///   endpoint's per-peer limit.
    /// - `token_len` 4: tokens only need to be unique on this connection, and a random
    ///   32-bit token among at most 1,024 in use is found at the first draw.
    /// - `max_queued_output` 8 MiB: several maximal messages.
    fn default() -> Self {
        StreamConfig {
            max_message_size: 1_048_576 + 1024,
            block_wise_transfer: true,
            csm_timeout: Duration::from_secs(10),
            keepalive: None,
            pong_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(93),
            stall_timeout: Duration::from_secs(30),
            idle_timeout: None,
            max_outstanding_requests: 1024,
            max_unanswered_requests: 1024,
            token_len: 4,
            max_queued_output: 8 << 20,
        }
    }
}

/// What the peer announced in its CSM (the RFC 8323 §5.3 defaults until it arrives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCsm {
    /// The largest message the peer accepts (default 1152).
    pub max_message_size: u32,
    /// Whether the peer supports block-wise transfer (and BERT) over this connection.
    pub block_wise_transfer: bool,
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Our CSM is sent; the peer's has not arrived.
    AwaitingCsm,
    /// Both CSMs exchanged.
    Open,
    /// A Release was sent or received: no new requests; outstanding ones finish.
    Releasing,
    /// Closed (Abort sent or received, time-out, local close, end of stream): flush the
    /// output, then close the socket.
    Closed,
}

/// Why a connection failed or refused something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The connection is closed or releasing.
    #[error("the connection is closed")]
    Closed,
    /// No such incoming request (already answered, or unknown).
    #[error("no such request to answer")]
    UnknownRequest,
    /// The message is larger than the peer's Max-Message-Size.
    #[error("message of {size} bytes exceeds the peer's Max-Message-Size of {max}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The peer's limit.
        max: u32,
    },
    /// [`StreamConnection::respond`] or [`StreamConnection::notify`] was given a code that
    /// is not a response (2.xx–5.xx); the request stays unanswered.
    #[error("{0:?} is not a response code")]
    NotAResponse(Code),
    /// The message cannot be encoded; the request stays unanswered.
    #[error("cannot encode the message: {0}")]
    Encode(EncodeError),
}

/// What the connection reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer's CSM arrived: the connection is open.
    Established(PeerCsm),
    /// A request to answer with [`StreamConnection::respond`].
    Request {
        /// The handle to respond with.
        id: IncomingId,
        /// The request as received.
        request: Message,
    },
    /// The response to a request (the first one, for an Observe registration).
    Response {
        /// The request it answers.
        id: RequestId,
        /// The response.
        response: Message,
    },
    /// A later response of an observation (a request with Observe 0 whose first response was
    /// a 2.xx with Observe): notifications on a stream arrive in order (RFC 8323 §7.1).
    Notification {
        /// The registering request.
        id: RequestId,
        /// The notification.
        response: Message,
    },
    /// A request ended without a response.
    RequestFailed {
        /// The request.
        id: RequestId,
        /// Why.
        error: RequestError,
    },
    /// A Pong answered our Ping.
    Pong,
    /// The peer sent Release (§5.5).
    Released {
        /// Where the peer suggests reconnecting.
        alternative_address: Option<String>,
        /// How long the peer asks to wait before reconnecting.
        hold_off: Option<Duration>,
    },
    /// The connection is closed: flush [`StreamConnection::poll_output`], then close the
    /// socket. Every outstanding request has had its `RequestFailed` first.
    Closed {
        /// Why (peer's Abort with its diagnostic, time-out, end of stream, local close ...).
        reason: String,
    },
}

/// At most this many of our Pings wait for their Pong; [`StreamConnection::ping`] sends no
/// more until one is answered.
const MAX_PINGS: usize = 16;

/// A request this side sent, or will send once the peer's CSM arrives.
#[derive(Debug)]
struct Outgoing {
    token: Token,
    /// Held until the peer's CSM arrives.
    message: Option<Message>,
    /// Removed once an observation is established.
    deadline: Option<Instant>,
    /// A GET or FETCH with Observe 0: the request, kept to deregister with.
    registration: Option<Box<Message>>,
    /// The first response was a 2.xx with Observe: later ones are notifications.
    observing: bool,
}

/// The message layer of one stream connection.
pub struct StreamConnection {
    role: StreamRole,
    config: StreamConfig,
    state: StreamState,
    decoder: FrameDecoder,
    output: Vec<u8>,
    events: VecDeque<StreamEvent>,
    rng: ChaCha12Rng,
    next_id: u64,
    peer: PeerCsm,
    csm_received: bool,
    csm_deadline: Instant,
    requests: BTreeMap<RequestId, Outgoing>,
    /// Keyed from the seed, like every table of the datagram endpoint.
    tokens: HashMap<Token, RequestId>,
    /// Requests waiting for the peer's CSM, in order.
    queued: VecDeque<RequestId>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    incoming: BTreeMap<IncomingId, Token>,
    /// Deadlines of our Pings waiting for a Pong, oldest first (Pongs come in order).
    pings: VecDeque<Instant>,
    last_received: Instant,
    /// Last input, request sent or response given: what the idle time-out counts from.
    last_activity: Instant,
    /// When the partial frame in the input buffer began.
    frame_started: Option<Instant>,
    released_by_us: bool,
    /// Observers this side serves on the connection: while there are any, it is not idle.
    observers: usize,
}

impl std::fmt::Debug for StreamConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConnection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("peer", &self.peer)
            .field("requests", &self.requests.len())
            .field("incoming", &self.incoming.len())
            .field("buffered", &self.decoder.buffered())
            .field("output", &self.output.len())
            .finish_non_exhaustive()
    }
}

impl StreamConnection {
    /// A new connection; our CSM is queued for output at once (§5.3.1: it is the first
    /// message each side sends).
    pub fn new(role: StreamRole, config: StreamConfig, now: Instant, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha12Rng::from_seed(seed);
        let hasher = Hasher::from_rng(&mut rng);
        let mut config = config;
        config.token_len = config.token_len.min(8);
        let mut conn = StreamConnection {
            role,
            decoder: FrameDecoder::new(config.max_message_size as usize),
            state: StreamState::AwaitingCsm,
            output: Vec::new(),
            events: VecDeque::new(),
            rng,
            next_id: 1,
            peer: PeerCsm {
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                block_wise_transfer: false,
            },
            csm_received: false,
            csm_deadline: later(now, config.csm_timeout),
            requests: BTreeMap::new(),
            tokens: HashMap::with_hasher(hasher),
            queued: VecDeque::new(),
            deadlines: BTreeSet::new(),
            incoming: BTreeMap::new(),
            pings: VecDeque::new(),
            last_received: now,
            last_activity: now,
            frame_started: None,
            released_by_us: false,
            observers: 0,
            config,
        };
        let csm = Csm {
            max_message_size: Some(conn.config.max_message_size),
            block_wise_transfer: conn.config.block_wise_transfer,
        };
        conn.write(&csm.to_message());
        conn
    }

    /// Which side this is.
    pub fn role(&self) -> StreamRole {
        self.role
    }

    /// The settings in use.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// Bytes received from the stream (TCP bytes, or TLS plaintext).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == StreamState::Closed || bytes.is_empty() {
            return;
        }
        self.touch_input(now);
        let mut rest = bytes;
        while !rest.is_empty() && self.state != StreamState::Closed {
            let n = self.decoder.extend(rest);
            rest = &rest[n..];
            self.decode_frames(now);
            if n == 0 {
                break; // cannot happen once frames are drained; never spin
            }
        }
    }

    /// Spare room in the input buffer to read the socket into (at least `min` bytes), so TCP
    /// bytes land where frames are decoded without another copy; follow with
    /// [`commit_input`](Self::commit_input). Fewer than `min` only when `min` would take the
    /// buffer past one maximal frame plus a header; never empty.
    pub fn input_buffer(&mut self, min: usize) -> &mut [u8] {
        self.decoder.input_buffer(min)
    }

    /// `n` bytes were read into [`input_buffer`](Self::input_buffer): decode what is complete.
    pub fn commit_input(&mut self, now: Instant, n: usize) {
        if self.state == StreamState::Closed || n == 0 {
            return;
        }
        self.decoder.commit(n);
        self.touch_input(now);
        self.decode_frames(now);
    }

    /// Frees the input buffer if no partial frame is in it (for a connection gone quiet: the
    /// runtime calls this a while after the last input, so idle connections hold no buffer).
    pub fn release_idle_buffers(&mut self) {
        self.decoder.release_if_empty();
        if self.output.is_empty() {
            self.output = Vec::new();
        }
    }

    /// The peer closed its side of the stream.
    pub fn handle_eof(&mut self, _now: Instant) {
        if self.state == StreamState::Closed {
            return;
        }
        let reason = if self.decoder.buffered() > 0 {
            "the peer closed the stream in the middle of a frame"
        } else {
            "the peer closed the stream"
        };
        self.close_inner(reason.to_string());
    }

    /// Sends a request (code, options, payload; type and message ID are ignored). The token
    /// is assigned here unless the message has one. Queued until the peer's CSM arrives.
    ///
    /// Fails at once when the connection is releasing or closed (`ChannelFailed`), with
    /// [`max_outstanding_requests`](StreamConfig::max_outstanding_requests) outstanding
    /// (`TooManyRequests`), and when the peer's CSM has come and the request is larger than
    /// its Max-Message-Size (`TooLarge`, naming the sizes). The deadline is
    /// `params.timeout` or [`request_timeout`](StreamConfig::request_timeout), from now.
    pub fn request(
        &mut self,
        now: Instant,
        message: Message,
        params: RequestParams,
    ) -> Result<RequestId, RequestError> {
        let mut message = message;
        match self.state {
            StreamState::Closed => {
                return Err(RequestError::ChannelFailed(
                    "the connection is closed".into(),
                ))
            }
            StreamState::Releasing => {
                return Err(RequestError::ChannelFailed(
                    "the connection is released: no new requests".into(),
                ))
            }
            StreamState::AwaitingCsm | StreamState::Open => {}
        }
        if !message.code.is_request() {
            return Err(RequestError::NotARequest(format!("{:?}", message.code)));
        }
        if let Some(o) = message
            .options
            .iter()
            .find(|o| o.value.len() > crate::wire::MAX_OPTION_VALUE_LEN)
        {
            return Err(RequestError::Encode(EncodeError::OptionTooLong(o.number)));
        }
        if self.requests.len() >= self.config.max_outstanding_requests {
            return Err(RequestError::TooManyRequests(self.requests.len()));
        }
        if message.token.is_empty() && self.config.token_len > 0 {
            message.token = self.fresh_token()?;
        }
        if self.tokens.contains_key(&message.token) {
            return Err(RequestError::TokenInUse(message.token));
        }
        message.ty = MessageType::Con;
        message.mid = 0;
        let deadline = later(now, params.timeout.unwrap_or(self.config.request_timeout));
        let id = RequestId(self.next_id());
        let queued = if self.csm_received {
            self.send_request(&message)?;
            None
        } else {
            self.queued.push_back(id);
            Some(message.clone())
        };
        self.tokens.insert(message.token, id);
        self.deadlines.insert((deadline, id));
        self.requests.insert(
            id,
            Outgoing {
                token: message.token,
                message: queued,
                deadline: Some(deadline),
                registration: observe::is_registration(&message).then(|| Box::new(message.clone())),
                observing: false,
            },
        );
        self.last_activity = now;
        Ok(id)
    }

    /// Stops waiting for a request's response (or an observation's notifications); a
    /// request still waiting for the peer's CSM is never sent. Responses that come later
    /// are dropped. No event follows.
    pub fn cancel(&mut self, id: RequestId) {
        if self.finish_request(id) {
            self.maybe_finish_release();
        }
    }

    /// Answers a request. The response gets the request's token; its type and message ID
    /// are ignored. On an error the request stays unanswered, so another response (a
    /// smaller one, or 5.00) can be sent.
    pub fn respond(
        &mut self,
        now: Instant,
        id: IncomingId,
        response: Message,
    ) -> Result<(), StreamError> {
        if self.state == StreamState::Closed {
            return Err(StreamError::Closed);
        }
        let Some(&token) = self.incoming.get(&id) else {
            return Err(StreamError::UnknownRequest);
        };
        let mut response = response;
        response.token = token;
        self.send_response(&response)?;
        self.incoming.remove(&id);
        self.last_activity = now;
        self.maybe_finish_release();
        Ok(())
    }

    /// Sends a notification (a response on an observer's token, server role). Refused
    /// while releasing or closed, and like [`respond`](Self::respond) when it is not a
    /// response or larger than the peer takes.
    pub fn notify(
        &mut self,
        now: Instant,
        token: Token,
        response: Message,
    ) -> Result<(), StreamError> {
        if self.state != StreamState::Open && self.state != StreamState::AwaitingCsm {
            return Err(StreamError::Closed);
        }
        let mut response = response;
        response.token = token;
        self.send_response(&response)?;
        self.last_activity = now;
        Ok(())
    }

    /// Ends an observation with a GET Observe 1 on the registration's token and with its
    /// options (RFC 7641 §3.6): the observation is forgotten, as by [`cancel`](Self::cancel),
    /// and the deregistration is a new request whose response comes as usual. Fails with
    /// `NotObserving` unless the request is an established observation, and like
    /// [`request`](Self::request).
    pub fn deregister(&mut self, now: Instant, id: RequestId) -> Result<RequestId, RequestError> {
        self.deregister_with(now, id, None)
    }

    /// [`deregister`](Self::deregister), sending `message` (the registration's token is
    /// used) instead of the registration with Observe 1: for an OSCORE registration, whose
    /// deregistration must be protected anew.
    pub fn deregister_with(
        &mut self,
        now: Instant,
        id: RequestId,
        message: Option<Message>,
    ) -> Result<RequestId, RequestError> {
        let Some(registration) = self
            .requests
            .get(&id)
            .filter(|r| r.observing)
            .and_then(|r| r.registration.as_deref())
        else {
            return Err(RequestError::NotObserving);
        };
        let message = observe::deregistration(registration, message);
        // Frees the token for the deregistration.
        self.finish_request(id);
        self.request(now, message, RequestParams::default())
    }

    /// How many observers this side serves on the connection (server role, kept by the
    /// application, which knows who observes what): while there are any, the connection is
    /// not released for idleness, since a resource may change rarely.
    pub fn set_observers(&mut self, observers: usize) {
        self.observers = observers;
    }

    /// Sends a Ping (with Custody if asked); a missing Pong closes the connection. Nothing
    /// is sent when closed, or when 16 Pings already wait for their Pong.
    pub fn ping(&mut self, now: Instant, custody: bool) {
        if self.state == StreamState::Closed || self.pings.len() >= MAX_PINGS {
            return;
        }
        self.write(&Ping { custody }.to_ping());
        self.pings.push_back(later(now, self.config.pong_timeout));
    }

    /// Sends Release: no new requests from either side; closes once nothing is outstanding.
    /// Requests still waiting for the peer's CSM, and established observations (which
    /// would never finish), fail at once.
    pub fn release(
        &mut self,
        _now: Instant,
        alternative_address: Option<&str>,
        hold_off: Option<Duration>,
    ) {
        if self.state == StreamState::Closed || self.released_by_us {
            return;
        }
        let release = Release {
            alternative_address: alternative_address.map(str::to_string),
            hold_off,
            diagnostic: String::new(),
        };
        self.write(&release.to_message());
        self.released_by_us = true;
        self.enter_releasing("the connection was released");
    }

    /// Sends Abort with a diagnostic and closes.
    pub fn abort(&mut self, _now: Instant, diagnostic: &str) {
        self.abort_with(Abort::new(diagnostic));
    }

    /// Closes without telling the peer (the socket failed); outstanding requests fail.
    /// Output queued before stays queued.
    pub fn close(&mut self, _now: Instant, reason: &str) {
        if self.state != StreamState::Closed {
            self.close_inner(reason.to_string());
        }
    }

    /// Bytes to write to the stream, in order; `None` when nothing is queued. Everything
    /// queued comes out as one buffer.
    pub fn poll_output(&mut self) -> Option<Vec<u8>> {
        if self.output.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.output))
        }
    }

    /// Bytes queued for output and not yet taken.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == StreamState::Closed {
            return None;
        }
        let keepalive = self
            .config
            .keepalive
            .filter(|_| self.pings.is_empty())
            .map(|d| later(self.last_received, d));
        let idle = self
            .config
            .idle_timeout
            .filter(|_| self.state == StreamState::Open && self.is_idle())
            .map(|d| later(self.last_activity, d));
        [
            (!self.csm_received).then_some(self.csm_deadline),
            self.pings.front().copied(),
            self.deadlines.first().map(|&(at, _)| at),
            self.frame_started
                .map(|t| later(t, self.config.stall_timeout)),
            keepalive,
            idle,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == StreamState::Closed {
            return;
        }
        if !self.csm_received && now >= self.csm_deadline {
            let diagnostic = format!("no CSM within {:?}", self.config.csm_timeout);
            return self.abort(now, &diagnostic);
        }
        if self
            .frame_started
            .is_some_and(|t| now >= later(t, self.config.stall_timeout))
        {
            let diagnostic = format!(
                "a frame was not completed within {:?}",
                self.config.stall_timeout
            );
            return self.abort(now, &diagnostic);
        }
        if self.pings.front().is_some_and(|&at| now >= at) {
            let diagnostic = format!("no Pong within {:?}", self.config.pong_timeout);
            return self.abort(now, &diagnostic);
        }
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.finish_request(id);
            self.events.push_back(StreamEvent::RequestFailed {
                id,
                error: RequestError::Timeout,
            });
        }
        self.maybe_finish_release();
        if self.state == StreamState::Closed {
            return;
        }
        if let Some(d) = self.config.keepalive {
            if self.pings.is_empty() && now >= later(self.last_received, d) {
                self.ping(now, false);
            }
        }
        if let Some(d) = self.config.idle_timeout {
            if self.state == StreamState::Open
                && self.is_idle()
                && now >= later(self.last_activity, d)
            {
                self.release(now, None, None);
            }
        }
    }

    /// Where the connection is.
    pub fn state(&self) -> StreamState {
        self.state
    }

    /// What the peer announced (defaults until its CSM arrives).
    pub fn peer_csm(&self) -> PeerCsm {
        self.peer
    }

    /// The largest message that may be sent to the peer now: its Max-Message-Size, compared
    /// with [`frame::encoded_len`] (the whole frame).
    pub fn max_send_size(&self) -> usize {
        self.peer.max_message_size as usize
    }

    /// Requests sent or queued and not finished (observations included).
    pub fn outstanding_requests(&self) -> usize {
        self.requests.len()
    }

    /// Requests received and not yet answered.
    pub fn unanswered_requests(&self) -> usize {
        self.incoming.len()
    }

    /// Input bytes buffered (a partial frame).
    pub fn buffered_input(&self) -> usize {
        self.decoder.buffered()
    }

    // --- internals ------------------------------------------------------------------------

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn fresh_token(&mut self) -> Result<Token, RequestError> {
        // A few draws suffice unless short tokens are nearly all in use.
        for _ in 0..16 {
            let mut bytes = [0u8; 8];
            self.rng.fill_bytes(&mut bytes);
            let token = Token::new(&bytes[..self.config.token_len]).unwrap_or_default();
            if !self.tokens.contains_key(&token) {
                return Ok(token);
            }
        }
        Err(RequestError::TokensExhausted)
    }

    fn touch_input(&mut self, now: Instant) {
        self.last_received = now;
        self.last_activity = now;
    }

    /// Nothing sent waits for an answer and nothing received waits for ours.
    fn is_quiet(&self) -> bool {
        self.requests.is_empty() && self.incoming.is_empty()
    }

    /// Quiet, and serving no observers: what the idle time-out waits for.
    fn is_idle(&self) -> bool {
        self.is_quiet() && self.observers == 0
    }

    /// Appends a message the connection itself produced (always encodable).
    fn write(&mut self, message: &Message) {
        if let Err(e) = frame::encode(message, &mut self.output) {
            tracing::error!(error = %e, "stream: an internal message did not encode");
        }
    }

    /// Writes an answer the peer asked for (Pong, 4.02, 5.03), unless the peer is not
    /// reading what it asked for.
    fn write_reply(&mut self, now: Instant, message: &Message) {
        if self.output.len() > self.config.max_queued_output {
            let diagnostic = format!(
                "more than {} bytes of output queued: the peer is not reading",
                self.config.max_queued_output
            );
            return self.abort(now, &diagnostic);
        }
        self.write(message);
    }

    fn check_size(&self, message: &Message) -> Result<(), StreamError> {
        let size = frame::encoded_len(message);
        if size > self.max_send_size() {
            return Err(StreamError::TooLarge {
                size,
                max: self.peer.max_message_size,
            });
        }
        Ok(())
    }

    fn send_request(&mut self, message: &Message) -> Result<(), RequestError> {
        self.check_size(message).map_err(|e| match e {
            // Without Block-Wise-Transfer in its CSM the peer cannot take the body in blocks
            // either (RFC 8323 §5.3.2): the request cannot be sent at all.
            StreamError::TooLarge { size, max } if !self.peer.block_wise_transfer => {
                RequestError::TooLargeForPeer { size, max }
            }
            StreamError::TooLarge { size, max } => RequestError::TooLarge { size, max },
            other => RequestError::ChannelFailed(other.to_string()),
        })?;
        frame::encode(message, &mut self.output).map_err(RequestError::Encode)
    }

    fn send_response(&mut self, response: &Message) -> Result<(), StreamError> {
        if !response.code.is_response() {
            return Err(StreamError::NotAResponse(response.code));
        }
        self.check_size(response)?;
        frame::encode(response, &mut self.output).map_err(StreamError::Encode)
    }

    /// Forgets a request; whether it existed.
    fn finish_request(&mut self, id: RequestId) -> bool {
        let Some(request) = self.requests.remove(&id) else {
            return false;
        };
        self.tokens.remove(&request.token);
        if let Some(at) = request.deadline {
            self.deadlines.remove(&(at, id));
        }
        if request.message.is_some() {
            self.queued.retain(|&q| q != id);
        }
        true
    }

    fn fail_request(&mut self, id: RequestId, error: RequestError) {
        if self.finish_request(id) {
            self.events
                .push_back(StreamEvent::RequestFailed { id, error });
        }
    }

    /// Release sent or received: requests that can never finish now fail.
    fn enter_releasing(&mut self, why: &str) {
        if self.state == StreamState::Closed {
            return;
        }
        self.state = StreamState::Releasing;
        let doomed: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.message.is_some() || r.observing)
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            self.fail_request(id, RequestError::ChannelFailed(why.to_string()));
        }
        self.maybe_finish_release();
    }

    fn maybe_finish_release(&mut self) {
        if self.state == StreamState::Releasing && self.is_quiet() {
            self.close_inner("the connection was released".to_string());
        }
    }

    fn abort_with(&mut self, abort: Abort) {
        if self.state == StreamState::Closed {
            return;
        }
        self.write(&abort.to_message());
        self.close_inner(abort.diagnostic);
    }

    fn close_inner(&mut self, reason: String) {
        self.state = StreamState::Closed;
        let ids: Vec<RequestId> = self.requests.keys().copied().collect();
        for id in ids {
            self.events.push_back(StreamEvent::RequestFailed {
                id,
                error: RequestError::ChannelFailed(reason.clone()),
            });
        }
        self.requests.clear();
        self.tokens.clear();
        self.queued.clear();
        self.deadlines.clear();
        self.incoming.clear();
        self.pings.clear();
        self.decoder.clear();
        self.frame_started = None;
        self.events.push_back(StreamEvent::Closed { reason });
    }
}

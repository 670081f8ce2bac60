//! The client role of the message layer: starting requests, NSTART queuing, token matching and
//! piggybacked or separate responses (RFC 7252 §4.7, §5.2, §5.3).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::observation::ObserveRole;
use super::{later, Endpoint, Event, MidError, Purpose, RequestId, Timer};
use crate::code::MessageType;
use crate::dedup::DedupState;
use crate::message::{EncodeError, Message, Token};
use crate::option::OptionNumber;
use crate::wire::{Datagram, MAX_OPTION_VALUE_LEN};

/// Why a request ended without a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A CON was sent `transmissions` times and never acknowledged.
    #[error("no acknowledgement after {transmissions} transmissions")]
    Unacknowledged {
        /// How often it was sent.
        transmissions: u32,
    },
    /// No response arrived before the request's deadline.
    #[error("no response within the time-out")]
    Timeout,
    /// The peer answered with RST: it could not process the request.
    #[error("the peer reset the request")]
    Reset,
    /// The message is not a request (code 0.01–0.31, type CON or NON).
    #[error("not a request: {0}")]
    NotARequest(String),
    /// The token is already in use with this peer.
    #[error("token {0} is already in use with this peer")]
    TokenInUse(Token),
    /// The secure channel to the peer failed or closed (handshake failure, alert, close_notify).
    #[error("secure channel failed: {0}")]
    ChannelFailed(String),
    /// Every message ID was used with this peer within EXCHANGE_LIFETIME (§4.4).
    #[error(
        "every message ID was used with this peer within EXCHANGE_LIFETIME; send from more sockets"
    )]
    MessageIdsExhausted,
    /// No unused token of the configured length could be found for this peer.
    #[error("no free token: too many requests in flight for the configured token length")]
    TokensExhausted,
    /// The per-peer limit on active and queued requests was reached.
    #[error("too many requests to this peer ({0} active or queued)")]
    TooManyRequests(usize),
    /// The peer table is full of peers with outstanding work.
    #[error("too many peers with outstanding exchanges")]
    TooManyPeers,
    /// The request cannot be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
    /// The response carried a critical option this endpoint does not understand (§5.4.1).
    #[error("the response carries an unrecognised critical option {0}")]
    BadResponseOption(OptionNumber),
    /// An observation heard nothing fresh for its last notification's Max-Age plus
    /// [`EndpointConfig::observe_lapse_slack`](super::EndpointConfig::observe_lapse_slack): the
    /// server may have forgotten it; register again (RFC 7641 §3.3.1).
    #[error("no notification within Max-Age: the observation lapsed")]
    ObservationLapsed,
    /// [`Endpoint::deregister`] was given a request that is not an established observation.
    #[error("not an established observation")]
    NotObserving,
    /// The request is larger than the peer takes in one message (its Max-Message-Size over
    /// TCP or TLS, RFC 8323 §5.3.1): send it block-wise.
    #[error("request of {size} bytes exceeds the peer's Max-Message-Size of {max}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The peer's limit.
        max: u32,
    },
    /// The request does not fit the peer's Max-Message-Size, and the peer announced no
    /// Block-Wise-Transfer in its CSM (RFC 8323 §5.3.2), so it cannot go in blocks either.
    #[error(
        "request of {size} bytes exceeds the peer's Max-Message-Size of {max}, and the peer does not do block-wise transfer"
    )]
    TooLargeForPeer {
        /// Encoded size.
        size: usize,
        /// The peer's limit.
        max: u32,
    },
}

/// Per-request settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestParams {
    /// How long to wait for a response in all; `None` waits as long as the protocol allows
    /// (retransmissions, then EXCHANGE_LIFETIME after an empty ACK, or NON_LIFETIME).
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Queued,
    AwaitingAck,
    AwaitingResponse,
    /// An observation after its first response (RFC 7641): no NSTART slot, no request deadline.
    Observing,
}

#[derive(Debug)]
pub(super) struct ClientRequest {
    pub(super) peer: SocketAddr,
    pub(super) token: Token,
    /// Held while queued; taken when the request is first sent.
    pub(super) message: Option<Message>,
    pub(super) mid: Option<u16>,
    pub(super) state: State,
    /// Whether this request holds one of the peer's NSTART slots.
    pub(super) counted: bool,
    /// The request deadline, or for an observation the time it lapses.
    pub(super) deadline: Option<Instant>,
    /// Whether this request registers or cancels an observation (RFC 7641).
    pub(super) role: ObserveRole,
}

impl Endpoint {
    /// Starts a request to `peer`. The message's code must be a method and its type CON or NON;
    /// its message ID is assigned here, and an empty token is replaced by a random one.
    /// The outcome arrives as [`Event::Response`] or [`Event::RequestFailed`].
    ///
    /// A GET or FETCH with Observe 0 registers an observation (RFC 7641 §3.1): if its response
    /// is a 2.xx with an Observe option, the request stays open after that [`Event::Response`],
    /// without an NSTART slot or its deadline, and later responses with its token arrive as
    /// [`Event::Notification`] until the server ends it, [`cancel`](Self::cancel),
    /// [`deregister`](Self::deregister), or [`RequestError::ObservationLapsed`].
    pub fn request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mut message: Message,
        params: RequestParams,
    ) -> Result<RequestId, RequestError> {
        if !message.code.is_request() || !matches!(message.ty, MessageType::Con | MessageType::Non)
        {
            return Err(RequestError::NotARequest(format!(
                "{} {}",
                message.ty, message.code
            )));
        }
        if let Some(o) = message
            .options
            .iter()
            .find(|o| o.value.len() > MAX_OPTION_VALUE_LEN)
        {
            return Err(EncodeError::OptionTooLong(o.number).into());
        }
        let token_len = self.config.token_len.min(8);
        let max_requests = self.config.max_requests_per_peer;
        let in_use = self.peers.get(&peer).map_or(0, |p| p.tokens.len());
        if in_use >= max_requests {
            return Err(RequestError::TooManyRequests(in_use));
        }
        if message.token.is_empty() && token_len > 0 {
            // A few tries suffice unless short tokens are nearly all in use with this peer.
            for _ in 0..16 {
                let mut bytes = [0u8; 8];
                self.rng.fill_bytes(&mut bytes);
                let token = Token::new(&bytes[..token_len]).unwrap_or_default();
                if !self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.tokens.contains_key(&token))
                {
                    message.token = token;
                    break;
                }
            }
            if message.token.is_empty() {
                return Err(RequestError::TokensExhausted);
            }
        }
        let id = RequestId(self.next_id());
        let token = message.token;
        let p = self.peer_mut(now, peer).ok_or(RequestError::TooManyPeers)?;
        if p.tokens.len() >= max_requests {
            return Err(RequestError::TooManyRequests(p.tokens.len()));
        }
        if p.tokens.contains_key(&token) {
            return Err(RequestError::TokenInUse(token));
        }
        p.tokens.insert(token, id);
        let start_now = p.outstanding < p.params.nstart;
        if !start_now {
            p.queue.push_back(id);
        }
        let role = ObserveRole::of(&message);
        let deadline = params.timeout.map(|t| later(now, t));
        if let Some(at) = deadline {
            self.set_timer(at, Timer::RequestDeadline(id));
        }
        self.requests.insert(
            id,
            ClientRequest {
                peer,
                token,
                message: Some(message),
                mid: None,
                state: State::Queued,
                counted: false,
                deadline,
                role,
            },
        );
        if start_now {
            self.start_request(now, id);
        }
        Ok(id)
    }

    /// Ends every request and observation to `peer` with `error` (its secure channel failed,
    /// say), and every notification to it with
    /// [`NotificationFailure::Aborted`](super::NotificationFailure::Aborted).
    pub fn abort_peer(&mut self, now: Instant, peer: SocketAddr, error: RequestError) {
        self.abort_notifications(peer);
        let ids: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, r)| r.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.finish_request(now, id, Err(error.clone()));
        }
    }

    /// Abandons a request: no more retransmissions and no event. Returns false if it had
    /// already ended. For an observation this is the passive cancellation of RFC 7641 §3.6:
    /// the token is forgotten, so the server's next notification is answered with RST.
    pub fn cancel(&mut self, now: Instant, id: RequestId) -> bool {
        self.end_request(now, id).is_some()
    }

    /// Sends a queued request for the first time.
    fn start_request(&mut self, now: Instant, id: RequestId) {
        let Some(peer) = self.requests.get(&id).map(|r| r.peer) else {
            return;
        };
        let mid = match self.allocate_mid(now, peer, true) {
            Ok(mid) => mid,
            Err(e) => {
                let error = match e {
                    MidError::Exhausted => RequestError::MessageIdsExhausted,
                    MidError::TooManyPeers => RequestError::TooManyPeers,
                };
                self.finish_request(now, id, Err(error));
                return;
            }
        };
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        let Some(mut message) = req.message.take() else {
            return;
        };
        message.mid = mid;
        let confirmable = message.ty == MessageType::Con;
        let bytes = match message.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                self.finish_request(now, id, Err(e.into()));
                return;
            }
        };
        req.mid = Some(mid);
        req.counted = true;
        req.state = if confirmable {
            State::AwaitingAck
        } else {
            State::AwaitingResponse
        };
        let no_deadline = req.deadline.is_none();
        let params = match self.peers.get_mut(&peer) {
            Some(p) => {
                p.outstanding += 1;
                p.params
            }
            None => return,
        };
        if !confirmable && no_deadline {
            self.set_deadline(id, later(now, params.non_lifetime()));
        }
        self.send_tracked(now, peer, mid, bytes, Purpose::Request(id), confirmable);
    }

    pub(super) fn set_deadline(&mut self, id: RequestId, at: Instant) {
        if let Some(r) = self.requests.get_mut(&id) {
            let old = r.deadline.replace(at);
            if let Some(old) = old {
                self.cancel_timer(old, Timer::RequestDeadline(id));
            }
            self.set_timer(at, Timer::RequestDeadline(id));
        }
    }

    pub(super) fn on_request_deadline(&mut self, now: Instant, id: RequestId) {
        let due = self.requests.get(&id).and_then(|r| r.deadline);
        if due.is_some_and(|at| at <= now) {
            let observing = self
                .requests
                .get(&id)
                .is_some_and(|r| r.state == State::Observing);
            let error = if observing {
                RequestError::ObservationLapsed
            } else {
                self.stats.timeouts += 1;
                RequestError::Timeout
            };
            self.finish_request(now, id, Err(error));
        }
    }

    /// Removes a request and everything that refers to it; frees its NSTART slot.
    pub(super) fn end_request(&mut self, now: Instant, id: RequestId) -> Option<ClientRequest> {
        let req = self.requests.remove(&id)?;
        if let Some(at) = req.deadline {
            self.cancel_timer(at, Timer::RequestDeadline(id));
        }
        if let Some(mid) = req.mid {
            let ours = self
                .peers
                .get(&req.peer)
                .and_then(|p| p.outgoing.get(&mid))
                .is_some_and(|o| o.purpose == Purpose::Request(id));
            if ours {
                self.remove_outgoing(req.peer, mid);
            }
        }
        if let Some(p) = self.peers.get_mut(&req.peer) {
            p.tokens.remove(&req.token);
            if req.counted {
                p.outstanding = p.outstanding.saturating_sub(1);
            }
            if req.state == State::Queued {
                p.queue.retain(|q| *q != id);
            }
        }
        self.pump_queue(now, req.peer);
        Some(req)
    }

    pub(super) fn finish_request(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<Message, RequestError>,
    ) {
        if self.end_request(now, id).is_none() {
            return;
        }
        self.events.push_back(match result {
            Ok(response) => Event::Response { id, response },
            Err(error) => Event::RequestFailed { id, error },
        });
    }

    /// Starts queued requests while NSTART allows.
    pub(super) fn pump_queue(&mut self, now: Instant, peer: SocketAddr) {
        loop {
            let next = match self.peers.get_mut(&peer) {
                Some(p) if p.outstanding < p.params.nstart => p.queue.pop_front(),
                _ => None,
            };
            match next {
                Some(id) => self.start_request(now, id),
                None => break,
            }
        }
    }

    /// An ACK: ends retransmission of the CON it acknowledges; may carry a response.
    pub(super) fn handle_ack<T: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        d: &Datagram<T>,
    ) {
        let mid = d.mid();
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        // Only a CON is acknowledged (§4.3): an ACK matching a NON we sent is ignored.
        let Some(purpose) = p
            .outgoing
            .get(&mid)
            .filter(|o| o.retransmit.is_some())
            .map(|o| o.purpose)
        else {
            return; // a late or duplicate ACK
        };
        if let Purpose::Request(id) = purpose {
            let token_matches = self
                .requests
                .get(&id)
                .is_some_and(|r| r.token.as_bytes() == d.token());
            if !d.code().is_empty() && !token_matches {
                // A piggybacked response for another token answers nothing of ours (§5.3.2):
                // the ACK is rejected, i.e. ignored, and retransmission goes on.
                return;
            }
        }
        self.remove_outgoing(peer, mid);
        if let Purpose::Notification(id, token) = purpose {
            self.notification_acked(now, peer, token, id);
            return;
        }
        let Purpose::Request(id) = purpose else {
            return; // our separate response was acknowledged
        };
        if d.code().is_empty() {
            self.request_acknowledged(now, id);
            return;
        }
        match self.unrecognized_critical(d) {
            Some(number) => {
                self.finish_request(now, id, Err(RequestError::BadResponseOption(number)))
            }
            None => self.deliver_response(now, id, Message::from_datagram(d), false),
        }
    }

    /// An empty ACK: the response will come separately (§5.2.2).
    fn request_acknowledged(&mut self, now: Instant, id: RequestId) {
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        req.state = State::AwaitingResponse;
        let peer = req.peer;
        let counted = std::mem::replace(&mut req.counted, false);
        let needs_deadline = req.deadline.is_none();
        let mut lifetime = None;
        if let Some(p) = self.peers.get_mut(&peer) {
            if counted {
                p.outstanding = p.outstanding.saturating_sub(1);
            }
            lifetime = Some(p.params.exchange_lifetime());
        }
        if let (true, Some(lifetime)) = (needs_deadline, lifetime) {
            self.set_deadline(id, later(now, lifetime));
        }
        self.pump_queue(now, peer);
    }

    /// A RST: the peer rejected one of our messages.
    pub(super) fn handle_reset(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(out) = self.remove_outgoing(peer, mid) else {
            return;
        };
        match out.purpose {
            Purpose::Request(id) => self.finish_request(now, id, Err(RequestError::Reset)),
            Purpose::Notification(id, token) => {
                self.fail_stream(peer, token, Some(id), super::NotificationFailure::Reset)
            }
            Purpose::SeparateResponse => {}
        }
    }

    /// A response in its own CON or NON message (separate response, or a NON request's answer).
    pub(super) fn handle_separate_response<T: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        d: &Datagram<T>,
        ty: MessageType,
    ) {
        let mid = d.mid();
        if let Some(state) = self.dedup.get_mut(peer, mid, now) {
            self.stats.duplicates += 1;
            if let (DedupState::Answered(bytes), MessageType::Con) = (&*state, ty) {
                let bytes = bytes.clone();
                self.queue_transmit(peer, bytes);
            }
            return;
        }
        let token = Token::new(d.token()).unwrap_or_default();
        let id = self
            .peers
            .get(&peer)
            .and_then(|p| p.tokens.get(&token))
            .copied()
            .filter(|id| {
                self.requests
                    .get(id)
                    .is_some_and(|r| r.state != State::Queued)
            });
        let bad_option = self.unrecognized_critical(d);
        let Some(id) = id.filter(|_| bad_option.is_none()) else {
            // No request matches (§5.3.2), or a critical option we cannot understand (§5.4.1).
            let rst = Self::empty(MessageType::Rst, mid);
            self.remember(now, peer, mid, ty, DedupState::Answered(rst));
            self.send_reset(peer, mid);
            if let (Some(id), Some(number)) = (id, bad_option) {
                if self
                    .requests
                    .get(&id)
                    .is_some_and(|r| r.state == State::Observing)
                {
                    // The RST ends the observation at the server (RFC 7641 §3.6): here too.
                    self.finish_request(now, id, Err(RequestError::BadResponseOption(number)));
                }
            }
            return;
        };
        if ty == MessageType::Con {
            let ack = Self::empty(MessageType::Ack, mid);
            self.remember(now, peer, mid, ty, DedupState::Answered(ack.clone()));
            self.queue_transmit(peer, ack);
        } else {
            self.remember(now, peer, mid, ty, DedupState::Done);
        }
        self.deliver_response(now, id, Message::from_datagram(d), true);
    }
}

//! The client role of observing at the message layer (RFC 7641 §3): a registering request that
//! stays open after its first response, notifications in order, cancellation and lapse.
//!
//! - A GET or FETCH with Observe 0 whose first response is a 2.xx with Observe becomes an
//!   observation: that response is its [`Event::Response`]; its NSTART slot is freed and its
//!   request deadline dropped (§3.3.1: an observation lives as long as notifications come).
//! - Later responses with the token, CON or NON, from the peer are notifications: CONs are
//!   acknowledged and duplicates answered from the deduplication cache as for any response;
//!   fresh ones (§3.4, [`NotificationOrder`]) are delivered as [`Event::Notification`], stale
//!   ones dropped. One that is not a 2.xx with Observe ends the observation (§3.2).
//! - Each fresh notification sets when the observation lapses: its Max-Age (default 60 s)
//!   plus [`EndpointConfig::observe_lapse_slack`](super::EndpointConfig::observe_lapse_slack).
//!   Then [`RequestError::ObservationLapsed`] lets the application register again (§3.3.1).
//! - [`Endpoint::cancel`] forgets the token, so the next notification is answered with RST
//!   (§3.6, §3.5: a CON or NON notification with an unknown token gets RST);
//!   [`Endpoint::deregister`] sends GET with Observe 1 and the same token and options (§3.6).

use std::time::{Duration, Instant};

use super::client::State;
use super::{later, Endpoint, Event, Purpose, RequestError, RequestId};
use crate::code::MessageType;
use crate::message::Message;
use crate::observe::{self, NotificationOrder};
use crate::option::OptionNumber;

/// Max-Age when a response has none (RFC 7252 §5.10.5).
const DEFAULT_MAX_AGE: u32 = 60;

/// What a request is to observing.
#[derive(Debug)]
pub(super) enum ObserveRole {
    /// A plain request.
    Plain,
    /// Registers an observation: the request as given (for deregistering with the same options)
    /// and the order of its notifications.
    Register {
        request: Box<Message>,
        order: NotificationOrder,
    },
    /// Cancels an observation (Observe 1).
    Deregister,
}

impl ObserveRole {
    pub(super) fn of(request: &Message) -> Self {
        if observe::is_registration(request) {
            ObserveRole::Register {
                request: Box::new(request.clone()),
                order: NotificationOrder::new(),
            }
        } else if observe::observe_value(request) == Some(observe::DEREGISTER) {
            ObserveRole::Deregister
        } else {
            ObserveRole::Plain
        }
    }
}

/// When an observation lapses without a fresh notification after `response`.
fn lapse_at(now: Instant, response: &Message, slack: Duration) -> Instant {
    let max_age = response
        .options
        .get_uint(OptionNumber::MAX_AGE)
        .unwrap_or(DEFAULT_MAX_AGE);
    later(
        now,
        Duration::from_secs(u64::from(max_age)).saturating_add(slack),
    )
}

impl Endpoint {
    /// Hands a matched response to its request: ends it, establishes an observation, or
    /// delivers a notification. `separate` is false for a response piggybacked on our ACK.
    pub(super) fn deliver_response(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Message,
        separate: bool,
    ) {
        let Some(req) = self.requests.get(&id) else {
            return;
        };
        match (&req.role, req.state) {
            (_, State::Observing) => self.on_notification(now, id, response),
            (ObserveRole::Register { .. }, _) if observe::continues_observation(&response) => {
                self.start_observation(now, id, response)
            }
            (ObserveRole::Deregister, _)
                if separate && observe::observe_value(&response).is_some() =>
            {
                // A notification of the observation being cancelled, still on its way: not
                // the answer to the deregistration, which carries no Observe (§3.6).
                tracing::debug!(?id, "notification during deregistration ignored");
            }
            _ => self.finish_request(now, id, Ok(response)),
        }
    }

    /// The first response of a registration carried Observe: the observation is established.
    fn start_observation(&mut self, now: Instant, id: RequestId, response: Message) {
        let slack = self.config.observe_lapse_slack;
        let Some(req) = self.requests.get_mut(&id) else {
            return;
        };
        if let ObserveRole::Register { order, .. } = &mut req.role {
            order.accept(observe::observe_value(&response).unwrap_or(0), now);
        }
        req.state = State::Observing;
        let peer = req.peer;
        let counted = std::mem::replace(&mut req.counted, false);
        // A separate response can overtake the ACK of a CON request: stop retransmitting it.
        if let Some(mid) = req.mid.take() {
            let ours = self
                .peers
                .get(&peer)
                .and_then(|p| p.outgoing.get(&mid))
                .is_some_and(|o| o.purpose == Purpose::Request(id));
            if ours {
                self.remove_outgoing(peer, mid);
            }
        }
        if counted {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.outstanding = p.outstanding.saturating_sub(1);
            }
        }
        self.set_deadline(id, lapse_at(now, &response, slack));
        self.events.push_back(Event::Response { id, response });
        self.pump_queue(now, peer);
    }

    /// A later response of an established observation.
    fn on_notification(&mut self, now: Instant, id: RequestId, response: Message) {
        if !observe::continues_observation(&response) {
            // The server ended the observation (an error, or no Observe): the last event.
            if self.end_request(now, id).is_some() {
                self.events.push_back(Event::Notification { id, response });
            }
            return;
        }
        let value = observe::observe_value(&response).unwrap_or(0);
        let fresh = match self.requests.get_mut(&id).map(|r| &mut r.role) {
            Some(ObserveRole::Register { order, .. }) => order.accept(value, now),
            _ => true,
        };
        if !fresh {
            self.stats.stale_notifications += 1;
            tracing::debug!(?id, value, "stale notification dropped");
            return;
        }
        let slack = self.config.observe_lapse_slack;
        self.set_deadline(id, lapse_at(now, &response, slack));
        self.events.push_back(Event::Notification { id, response });
    }

    /// Cancels an established observation actively (RFC 7641 §3.6): ends it here, with no
    /// event, and sends a CON GET (or FETCH) with Observe 1, the same token and the same
    /// options as the registration. Returns the new request, whose answer arrives as
    /// [`Event::Response`]; notifications still on their way are acknowledged and dropped.
    /// If the deregistration cannot be started (the error says why), the observation is still
    /// ended here, so the server's next notification draws a RST instead.
    pub fn deregister(&mut self, now: Instant, id: RequestId) -> Result<RequestId, RequestError> {
        self.deregister_with(now, id, None)
    }

    /// [`deregister`](Self::deregister), sending `message` (its code, options and payload;
    /// the registration's token is used) instead of the registration with Observe 1: for a
    /// registration that was protected end to end (OSCORE), whose deregistration must be
    /// protected anew rather than repeat the registration's bytes.
    pub fn deregister_with(
        &mut self,
        now: Instant,
        id: RequestId,
        message: Option<Message>,
    ) -> Result<RequestId, RequestError> {
        let Some(req) = self
            .requests
            .get(&id)
            .filter(|r| r.state == State::Observing)
        else {
            return Err(RequestError::NotObserving);
        };
        let ObserveRole::Register { request, .. } = &req.role else {
            return Err(RequestError::NotObserving);
        };
        let mut message = observe::deregistration(request, message);
        message.ty = MessageType::Con;
        message.mid = 0;
        let peer = req.peer;
        // Frees the token for the deregistration.
        self.end_request(now, id);
        self.request(now, peer, message, super::RequestParams::default())
    }

    /// Established observations (for tests).
    #[cfg(test)]
    pub(crate) fn observations(&self) -> usize {
        self.requests
            .values()
            .filter(|r| r.state == State::Observing)
            .count()
    }
}

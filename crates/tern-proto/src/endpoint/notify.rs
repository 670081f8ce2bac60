//! The server role of observing at the message layer: notifications sent outside any request
//! exchange, and what their acknowledgements, resets and time-outs mean (RFC 7641 §3.6, §4.5).
//!
//! [`Endpoint::notify`] sends one notification to one observer, a (peer, token) pair. Its
//! outcome is reported as events:
//!
//! - a CON notification ends with [`Event::NotificationAcked`], or with
//!   [`Event::NotificationFailed`] and [`NotificationFailure::Timeout`] once its retransmissions
//!   ran out (§4.5: remove the observer);
//! - a RST answering a notification, CON or NON, ends it with [`NotificationFailure::Reset`]
//!   (§3.6: remove the observer). A NON notification is matched against RSTs for
//!   [`EndpointConfig::notification_reset_window`](super::EndpointConfig::notification_reset_window)
//!   and otherwise reports nothing.
//!
//! One CON notification per (peer, token) is in flight at a time (§4.5.2). A notification for
//! that pair sent meanwhile waits; a still newer one replaces it, and the replaced one reports
//! nothing. When the in-flight one is acknowledged, the waiting one goes out as asked (CON or
//! NON). When instead its current transmission attempt ends unacknowledged, the waiting one is
//! sent in place of the retransmission that was due, always as CON, keeping the count and
//! back-off that retransmission would have had, and the old one is not sent again. So a
//! resource that changes faster than the observer acknowledges cannot keep a dead observer
//! alive: the chain gives up after MAX_RETRANSMIT attempts like any CON. When a stream fails,
//! its waiting notification fails with it.

use std::net::SocketAddr;
use std::time::Instant;

use super::{
    later, Endpoint, Event, MidError, NotificationId, Outgoing, Purpose, Retransmit, Timer,
};
use crate::code::MessageType;
use crate::message::{EncodeError, Message, Token};
use crate::wire::MAX_OPTION_VALUE_LEN;

/// Why a notification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotificationFailure {
    /// The observer answered with RST: it no longer knows the observation (RFC 7641 §3.6).
    /// Remove it.
    #[error("the observer reset the notification")]
    Reset,
    /// A CON notification was never acknowledged (RFC 7641 §4.5). Remove the observer.
    #[error("the notification was never acknowledged")]
    Timeout,
    /// [`Endpoint::abort_peer`] ended it (the peer's secure channel failed, say). Remove the
    /// observer.
    #[error("the peer was aborted")]
    Aborted,
    /// A waiting notification could not be sent when its turn came: every message ID was used
    /// with this peer within EXCHANGE_LIFETIME, or the peer table was full. The observer may
    /// stay; a later notification may go through.
    #[error("the notification could not be sent")]
    NotSent,
}

/// Why [`Endpoint::notify`] refused a notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The message's code is not a response code.
    #[error("not a response: {0}")]
    NotAResponse(String),
    /// The notification cannot be encoded.
    #[error("cannot encode the notification: {0}")]
    Encode(#[from] EncodeError),
    /// Every message ID was used with this peer within EXCHANGE_LIFETIME (RFC 7252 §4.4): a
    /// reused one would be taken for a duplicate.
    #[error("every message ID was used with this peer within EXCHANGE_LIFETIME")]
    MessageIdsExhausted,
    /// The peer table is full of peers with outstanding exchanges.
    #[error("too many peers with outstanding exchanges")]
    TooManyPeers,
}

impl From<MidError> for NotifyError {
    fn from(e: MidError) -> Self {
        match e {
            MidError::Exhausted => NotifyError::MessageIdsExhausted,
            MidError::TooManyPeers => NotifyError::TooManyPeers,
        }
    }
}

/// The notifications of one (peer, token) while a CON one is in flight.
#[derive(Debug, Default)]
pub(super) struct Stream {
    /// The CON notification in flight: its message ID and id.
    in_flight: Option<(u16, NotificationId)>,
    /// The newest notification waiting for the in-flight one's attempt to end.
    waiting: Option<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    id: NotificationId,
    message: Message,
    confirmable: bool,
}

impl Endpoint {
    /// Sends a notification to the observer `(peer, token)`: `message` is the response (code,
    /// options including Observe, payload); its type, message ID and token are filled in here.
    /// See the module documentation for how CON notifications to one observer follow each
    /// other (RFC 7641 §4.5.2) and which events report the outcome.
    ///
    /// Which notifications must be CON (one at least every 24 hours, §4.5) and the Observe
    /// values are the application's, with [`ObserverRegistry`](crate::observe::ObserverRegistry);
    /// so is the pace (§4.5.1: on average at most one NON notification per round trip).
    pub fn notify(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        mut message: Message,
        confirmable: bool,
    ) -> Result<NotificationId, NotifyError> {
        if !message.code.is_response() {
            return Err(NotifyError::NotAResponse(message.code.to_string()));
        }
        if let Some(o) = message
            .options
            .iter()
            .find(|o| o.value.len() > MAX_OPTION_VALUE_LEN)
        {
            return Err(EncodeError::OptionTooLong(o.number).into());
        }
        message.token = token;
        message.ty = if confirmable {
            MessageType::Con
        } else {
            MessageType::Non
        };
        // Fail now rather than when a waiting notification's turn comes.
        message.to_bytes()?;
        let id = NotificationId(self.next_id());
        let busy = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.streams.get_mut(&token))
            .filter(|s| s.in_flight.is_some());
        if let Some(stream) = busy {
            stream.waiting = Some(Waiting {
                id,
                message,
                confirmable,
            });
            return Ok(id);
        }
        let mid = self.allocate_mid(now, peer, true)?;
        self.transmit_notification(now, peer, token, id, message, mid, confirmable, None)?;
        Ok(id)
    }

    /// Sends a notification with its message ID; CONs become the stream's in-flight one.
    /// `takeover` is the retransmission state of the attempt it replaces (§4.5.2).
    #[allow(clippy::too_many_arguments)]
    fn transmit_notification(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        id: NotificationId,
        mut message: Message,
        mid: u16,
        confirmable: bool,
        takeover: Option<Retransmit>,
    ) -> Result<(), EncodeError> {
        message.mid = mid;
        message.ty = if confirmable {
            MessageType::Con
        } else {
            MessageType::Non
        };
        let bytes = message.to_bytes()?;
        self.stats.notifications_sent += 1;
        let purpose = Purpose::Notification(id, token);
        if !confirmable {
            self.queue_transmit(peer, bytes);
            let until = later(now, self.config.notification_reset_window);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.outgoing.insert(
                    mid,
                    Outgoing {
                        purpose,
                        bytes: Vec::new(),
                        retransmit: None,
                    },
                );
                self.non_notifications.push_back((until, peer, mid, id));
            }
            return Ok(());
        }
        match takeover {
            None => self.send_tracked(now, peer, mid, bytes, purpose, true),
            Some(rt) => {
                // In place of the retransmission that was due: its count and back-off.
                let timeout = rt.timeout.saturating_mul(2);
                let retransmit = Retransmit {
                    count: rt.count + 1,
                    timeout,
                    due: later(now, timeout),
                };
                self.set_timer(retransmit.due, Timer::Retransmit(peer, mid));
                self.queue_transmit(peer, bytes.clone());
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.outgoing.insert(
                        mid,
                        Outgoing {
                            purpose,
                            bytes,
                            retransmit: Some(retransmit),
                        },
                    );
                }
            }
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.streams.entry(token).or_default().in_flight = Some((mid, id));
        }
        Ok(())
    }

    /// At a CON notification's retransmission timer: if a newer notification waits, this
    /// attempt is over and the newer one goes out in its place, or, if the attempts ran out,
    /// the stream fails. Returns false when the timer is not for such a notification (or no
    /// message ID is free: then the old one is retransmitted as usual).
    pub(super) fn notification_takes_over(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
    ) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        let Some((id, token, rt)) = p.outgoing.get(&mid).and_then(|o| match o.purpose {
            Purpose::Notification(id, token) => Some((id, token, o.retransmit?)),
            _ => None,
        }) else {
            return false;
        };
        if rt.due > now || p.streams.get(&token).is_none_or(|s| s.waiting.is_none()) {
            return false;
        }
        if rt.count >= p.params.max_retransmit {
            // The attempts ran out: the observer is gone, and the waiting one fails with it.
            self.remove_outgoing(peer, mid);
            self.stats.timeouts += 1;
            self.fail_stream(peer, token, Some(id), NotificationFailure::Timeout);
            return true;
        }
        let Ok(new_mid) = self.allocate_mid(now, peer, true) else {
            return false;
        };
        self.remove_outgoing(peer, mid);
        let waiting = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.streams.get_mut(&token))
            .and_then(|s| {
                s.in_flight = None;
                s.waiting.take()
            });
        if let Some(w) = waiting {
            tracing::debug!(%peer, old = mid, new = new_mid, "a newer notification takes over");
            if self
                .transmit_notification(now, peer, token, w.id, w.message, new_mid, true, Some(rt))
                .is_err()
            {
                self.fail_stream(peer, token, Some(w.id), NotificationFailure::NotSent);
            }
        }
        self.tidy_stream(peer, token);
        true
    }

    /// A CON notification was acknowledged: report it, and send the one waiting, if any.
    pub(super) fn notification_acked(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        id: NotificationId,
    ) {
        self.events.push_back(Event::NotificationAcked(id));
        let waiting = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.streams.get_mut(&token))
            .filter(|s| s.in_flight.is_some_and(|(_, i)| i == id))
            .and_then(|s| {
                s.in_flight = None;
                s.waiting.take()
            });
        if let Some(w) = waiting {
            let sent = match self.allocate_mid(now, peer, true) {
                Ok(mid) => self
                    .transmit_notification(
                        now,
                        peer,
                        token,
                        w.id,
                        w.message,
                        mid,
                        w.confirmable,
                        None,
                    )
                    .is_ok(),
                Err(_) => false,
            };
            if !sent {
                self.events.push_back(Event::NotificationFailed {
                    id: w.id,
                    reason: NotificationFailure::NotSent,
                });
            }
        }
        self.tidy_stream(peer, token);
    }

    /// Ends a (peer, token) stream: `trigger` (whose message the caller already forgot), the
    /// CON in flight and the one waiting all fail with `reason`.
    pub(super) fn fail_stream(
        &mut self,
        peer: SocketAddr,
        token: Token,
        trigger: Option<NotificationId>,
        reason: NotificationFailure,
    ) {
        let mut failed: Vec<NotificationId> = trigger.into_iter().collect();
        let stream = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.streams.remove(&token));
        if let Some(stream) = stream {
            if let Some((mid, id)) = stream.in_flight.filter(|(_, id)| Some(*id) != trigger) {
                self.remove_outgoing(peer, mid);
                failed.push(id);
            }
            failed.extend(stream.waiting.map(|w| w.id));
        }
        for id in failed {
            self.events
                .push_back(Event::NotificationFailed { id, reason });
        }
    }

    /// Ends every notification stream to `peer` with [`NotificationFailure::Aborted`] and
    /// forgets its NON notifications.
    pub(super) fn abort_notifications(&mut self, peer: SocketAddr) {
        let tokens: Vec<Token> = self
            .peers
            .get(&peer)
            .map(|p| p.streams.keys().copied().collect())
            .unwrap_or_default();
        for token in tokens {
            self.fail_stream(peer, token, None, NotificationFailure::Aborted);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            // Only NON notifications are left: they have no timers.
            p.outgoing
                .retain(|_, o| !matches!(o.purpose, Purpose::Notification(..)));
        }
    }

    /// A NON notification's reset window ended: a RST no longer refers to it.
    pub(super) fn forget_non_notification(
        &mut self,
        peer: SocketAddr,
        mid: u16,
        id: NotificationId,
    ) {
        if let Some(p) = self.peers.get_mut(&peer) {
            let ours = p.outgoing.get(&mid).is_some_and(|o| {
                o.retransmit.is_none()
                    && matches!(o.purpose, Purpose::Notification(i, _) if i == id)
            });
            if ours {
                p.outgoing.remove(&mid);
            }
        }
    }

    /// Drops a stream with nothing in flight.
    fn tidy_stream(&mut self, peer: SocketAddr, token: Token) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.streams
                .get(&token)
                .is_some_and(|s| s.in_flight.is_none() && s.waiting.is_none())
            {
                p.streams.remove(&token);
            }
        }
    }

    /// CON notifications in flight (for tests).
    #[cfg(test)]
    pub(crate) fn notifications_in_flight(&self) -> usize {
        self.peers
            .values()
            .flat_map(|p| p.streams.values())
            .filter(|s| s.in_flight.is_some())
            .count()
    }
}

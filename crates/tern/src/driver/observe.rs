//! Observe (RFC 7641) in the datagram driver, both roles, on top of the sans-IO core's
//! [`Endpoint::notify`](tern_proto::Endpoint::notify) (server) and its observations (client);
//! who observes what, and what a notification carries, is [`crate::observing`]'s.
//!
//! What is the datagram's own: a notification goes CON when the observer has not acknowledged
//! one within the registry's confirm interval (24 h by default, §4.5), NON otherwise; one that
//! is reset, never acknowledged or aborted (the session ended) removes the observer (§3.6,
//! §4.5). Client notifications come fresh and in order (§3.4, the core's
//! [`NotificationOrder`](tern_proto::observe::NotificationOrder)).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern_proto::endpoint::{NotificationFailure, NotificationId};
use tern_proto::message::Token;
use tern_proto::{Message, RequestId};
use tern_tls::SecurityLayer;

use super::Driver;
use crate::handling::BlockExchange;
use crate::observing::{self, Notification, Observers};
use crate::router::Router;

/// How long a CON notification's id is remembered for its outcome: longer than its
/// retransmissions can last (EXCHANGE_LIFETIME, 247 s). A NON one is remembered for the
/// endpoint's `notification_reset_window` (plus a second), the time a RST can answer it.
const CON_OUTCOME_WINDOW: Duration = Duration::from_secs(300);

/// Sent notifications remembered before old ones are first pruned.
const OUTCOMES_PRUNE_AT: usize = 4096;

/// A sent notification whose outcome may still be reported.
struct Sent {
    peer: SocketAddr,
    token: Token,
    at: Instant,
    confirmable: bool,
}

/// The server role's observe state of one driver.
pub(crate) struct ServerObserve {
    /// Observers, each with its registration request.
    pub(super) observers: Observers,
    /// Which observer each sent notification went to, and when.
    sent: std::collections::HashMap<NotificationId, Sent>,
    /// When `sent` is next pruned (doubling with what is left, so pruning stays amortized O(1)).
    prune_at: usize,
}

impl ServerObserve {
    pub(crate) fn new(router: &Router) -> Self {
        ServerObserve {
            observers: Observers::new(router),
            sent: std::collections::HashMap::new(),
            prune_at: OUTCOMES_PRUNE_AT,
        }
    }
}

impl<L: SecurityLayer> Driver<L> {
    /// Registers or deregisters an observer as the response to its request says, and adds
    /// the Observe value to the response of a registration (server role).
    pub(super) fn observe_response(
        &mut self,
        now: Instant,
        exchange: &BlockExchange,
        response: &mut Message,
    ) {
        if let (Some(state), Some(router)) = (self.observe.as_mut(), self.router.as_ref()) {
            state
                .observers
                .respond(router, now, exchange.peer, exchange, response);
        }
    }

    /// A resource changed: runs its GET handler for every observer and notifies them.
    pub(super) fn on_change(&mut self, path: String) {
        let now = crate::clock::now();
        let (Some(state), Some(router)) = (self.observe.as_mut(), self.router.as_ref()) else {
            return;
        };
        let layer = &self.layer;
        let ready = state.observers.changed(
            router,
            &path,
            |peer| layer.peer_identity(peer),
            self.handler_timeout,
            &self.command_tx,
        );
        for notification in ready {
            self.send_notification(now, notification);
        }
    }

    /// Sends one observer its notification: 2.xx with the Observe value, or an error response
    /// that ends the observation (§4.2).
    pub(super) fn send_notification(&mut self, now: Instant, mut notification: Notification) {
        let Some(state) = self.observe.as_mut() else {
            return;
        };
        let (peer, token) = (notification.peer, notification.token);
        // Asked before `prepare`, which may end the observation.
        let confirmable = state.observers.registry().should_confirm(now, peer, token);
        if !state.observers.prepare(&mut notification) {
            return;
        }
        let block_size = self.blocks.block_size();
        state
            .observers
            .slice(&mut self.blocks, now, &mut notification, block_size, None);
        if !observing::seal(
            &mut notification,
            self.router.as_deref().and_then(Router::oscore_server),
        ) {
            state.observers.registry_mut().deregister(peer, token);
        }
        let non_window = self
            .endpoint
            .config()
            .notification_reset_window
            .saturating_add(Duration::from_secs(1));
        match self
            .endpoint
            .notify(now, peer, token, notification.response, confirmable)
        {
            Ok(id) => {
                if state.sent.len() >= state.prune_at {
                    state.sent.retain(|_, s| {
                        let window = if s.confirmable {
                            CON_OUTCOME_WINDOW
                        } else {
                            non_window
                        };
                        now.saturating_duration_since(s.at) < window
                    });
                    state.prune_at = OUTCOMES_PRUNE_AT.max(state.sent.len().saturating_mul(2));
                }
                let sent = Sent {
                    peer,
                    token,
                    at: now,
                    confirmable,
                };
                state.sent.insert(id, sent);
            }
            Err(e) => tracing::warn!(%peer, error = %e, "notification not sent"),
        }
    }

    /// The outcome of a notification (server role).
    pub(super) fn notification_outcome(
        &mut self,
        id: NotificationId,
        failure: Option<NotificationFailure>,
    ) {
        let Some(state) = self.observe.as_mut() else {
            return;
        };
        let Some(Sent { peer, token, .. }) = state.sent.remove(&id) else {
            return;
        };
        let registry = state.observers.registry_mut();
        match failure {
            None => registry.confirmed(crate::clock::now(), peer, token),
            Some(NotificationFailure::NotSent) => {}
            Some(reason) => {
                if registry.deregister(peer, token).is_some() {
                    tracing::debug!(%peer, ?token, %reason, "observer removed");
                }
            }
        }
    }

    /// A peer's session ended: its observations end with it.
    pub(super) fn forget_observer_peer(&mut self, peer: SocketAddr) {
        if let Some(state) = self.observe.as_mut() {
            let n = state.observers.registry_mut().remove_peer(peer);
            if n > 0 {
                tracing::debug!(%peer, observers = n, "observers of a closed session removed");
            }
        }
    }

    /// Observers registered with this driver (for stats and tests).
    pub(super) fn observer_count(&self) -> usize {
        self.observe
            .as_ref()
            .map_or(0, |s| s.observers.registry().len())
    }

    /// Ends a client observation: with a GET Observe 1 (`deregister`: `Some`, with the
    /// message to send if it is not the registration repeated), or by forgetting it so that
    /// the next notification is answered with RST (§3.6).
    pub(super) fn end_observation(
        &mut self,
        now: Instant,
        ticket: u64,
        deregister: Option<Option<Message>>,
    ) {
        let Some(id): Option<RequestId> = self.observations.end(ticket) else {
            return;
        };
        self.waiting.remove(&id);
        if let Some(message) = deregister {
            match self.endpoint.deregister_with(now, id, message) {
                Ok(_) => return,
                Err(e) => tracing::debug!(?id, error = %e, "not deregistered"),
            }
        }
        self.endpoint.cancel(now, id);
    }
}

//! Observe (RFC 7641) in the driver, both roles, on top of the sans-IO core's
//! [`ObserverRegistry`] and [`Endpoint::notify`](tern_proto::Endpoint::notify) (server) and its
//! observations (client).
//!
//! Server: a GET with Observe 0 to a resource marked [`Resource::obs`](crate::Resource::obs)
//! whose handler answers 2.xx registers the (peer, token) with the registration request, and
//! the response carries an Observe value (§3.1, §4.1); past the registry's caps it is served
//! as a plain GET. A GET with Observe 1, or a registration answered 4.xx/5.xx, removes it
//! (§3.6, §4.1). When the application announces a change with
//! [`ResourceNotifier::notify`](crate::ResourceNotifier::notify), the GET handler runs again
//! for every observer with its registration request, and the responses go out as
//! notifications with the resource's next Observe value (§4.2, §4.4): CON when the observer
//! has not acknowledged one within the registry's confirm interval (24 h by default, §4.5),
//! NON otherwise. A notification that is reset, never acknowledged or aborted (the session
//! ended) removes the observer (§3.6, §4.5); an error response is the observer's last
//! notification (§4.2).
//!
//! Client: an observation's notifications, fresh and in order (§3.4, the core's
//! [`NotificationOrder`](tern_proto::observe::NotificationOrder)), go to the
//! [`Observation`](crate::Observation)'s channel; a full channel drops the notification (a
//! later one supersedes it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern_proto::endpoint::{NotificationFailure, NotificationId, RequestError};
use tern_proto::message::Token;
use tern_proto::observe::{self, ObserverRegistry};
use tern_proto::{Message, OptionNumber, RequestId};
use tern_tls::SecurityLayer;
use tokio::sync::{broadcast, mpsc};

use super::{Command, Driver};
use crate::handling::{run_handler, seed, BlockExchange};
use crate::message::Request;
use crate::router::{normalize, Router};

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

/// Where a client observation's notifications go.
pub(crate) type NotificationSender = mpsc::Sender<Result<Message, RequestError>>;

/// The server role's observe state of one driver.
pub(crate) struct ServerObserve {
    /// Observers, each with its registration request.
    registry: ObserverRegistry<Message>,
    /// Which observer each sent notification went to, and when.
    sent: std::collections::HashMap<NotificationId, Sent>,
    /// When `sent` is next pruned (doubling with what is left, so pruning stays amortized O(1)).
    prune_at: usize,
    /// Changes announced by the application.
    changes: broadcast::Receiver<String>,
}

impl ServerObserve {
    pub(crate) fn new(router: &Router) -> Self {
        ServerObserve {
            registry: ObserverRegistry::new(router.observe_config().clone(), seed()),
            sent: std::collections::HashMap::new(),
            prune_at: OUTCOMES_PRUNE_AT,
            changes: router.subscribe(),
        }
    }
}

/// The next change announced to a driver; never resolves for a driver without a router.
pub(crate) async fn next_change(observe: &mut Option<ServerObserve>) -> String {
    let Some(state) = observe else {
        return std::future::pending().await;
    };
    loop {
        match state.changes.recv().await {
            Ok(path) => return path,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "resource changes missed");
            }
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
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
        let request = &exchange.request;
        let Some(value) = observe::observe_value(request) else {
            return;
        };
        let (Some(state), Some(router)) = (self.observe.as_mut(), self.router.as_ref()) else {
            return;
        };
        let peer = exchange.peer;
        let token = request.token;
        let registering = observe::is_registration(request)
            && response.code.is_success()
            && router.is_observable(&request.path_segments().collect::<Vec<_>>());
        if !registering {
            let ends = value == observe::DEREGISTER || response.code.class() >= 4;
            if ends && state.registry.deregister(peer, token).is_some() {
                tracing::debug!(%peer, ?token, "observer deregistered");
            }
            response.options.remove(OptionNumber::OBSERVE);
            return;
        }
        let path = normalize(&request.path_segments().collect::<Vec<_>>().join("/"));
        match state
            .registry
            .register(now, peer, token, &path, request.clone())
        {
            Ok(how) => {
                tracing::debug!(%peer, ?token, resource = %path, ?how, "observer registered");
                let value = state.registry.next_observe_value(&path).unwrap_or(0);
                response.options.set_uint(OptionNumber::OBSERVE, value);
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "observation refused; served as a plain GET");
                response.options.remove(OptionNumber::OBSERVE);
            }
        }
    }

    /// A resource changed: runs its GET handler for every observer and notifies them.
    pub(super) fn on_change(&mut self, path: String) {
        let now = Instant::now();
        let (Some(state), Some(router)) = (self.observe.as_mut(), self.router.clone()) else {
            return;
        };
        let observers: Vec<(SocketAddr, Token, Message)> = state
            .registry
            .observers(&path)
            .map(|o| (o.peer, o.token, o.data.clone()))
            .collect();
        let Some(value) = state.registry.next_observe_value(&path) else {
            return;
        };
        tracing::trace!(resource = %path, value, observers = observers.len(), "resource changed");
        for (peer, token, message) in observers {
            let request = Request {
                peer,
                identity: self.layer.peer_identity(peer),
                message,
                params: Vec::new(),
                rest: None,
            };
            let ready = run_handler(
                router.dispatch(request),
                peer,
                self.handler_timeout,
                &self.command_tx,
                (),
                move |response, ()| Command::Notification {
                    peer,
                    token,
                    value,
                    response: response.into_message(),
                },
            );
            let Some((response, ())) = ready else {
                continue;
            };
            self.send_notification(now, peer, token, value, response.into_message());
        }
    }

    /// Sends one observer its notification: 2.xx with the Observe value, or an error response
    /// that ends the observation (§4.2).
    pub(super) fn send_notification(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        value: u32,
        mut response: Message,
    ) {
        let Some(state) = self.observe.as_mut() else {
            return;
        };
        if state.registry.get(peer, token).is_none() {
            // Deregistered while its handler ran.
            return;
        }
        let confirmable = state.registry.should_confirm(now, peer, token);
        let non_window = self
            .endpoint
            .config()
            .notification_reset_window
            .saturating_add(Duration::from_secs(1));
        if response.code.is_success() {
            response.options.set_uint(OptionNumber::OBSERVE, value);
        } else {
            response.options.remove(OptionNumber::OBSERVE);
            state.registry.deregister(peer, token);
            tracing::debug!(%peer, code = %response.code, "observation ended by an error response");
        }
        match self
            .endpoint
            .notify(now, peer, token, response, confirmable)
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
        match failure {
            None => state.registry.confirmed(Instant::now(), peer, token),
            Some(NotificationFailure::NotSent) => {}
            Some(reason) => {
                if state.registry.deregister(peer, token).is_some() {
                    tracing::debug!(%peer, ?token, %reason, "observer removed");
                }
            }
        }
    }

    /// A peer's session ended: its observations end with it.
    pub(super) fn forget_observer_peer(&mut self, peer: SocketAddr) {
        if let Some(state) = self.observe.as_mut() {
            let n = state.registry.remove_peer(peer);
            if n > 0 {
                tracing::debug!(%peer, observers = n, "observers of a closed session removed");
            }
        }
    }

    /// Observers registered with this driver (for stats and tests).
    pub(super) fn observer_count(&self) -> usize {
        self.observe.as_ref().map_or(0, |s| s.registry.len())
    }

    /// A client observation's first response: keeps its channel if the observation is
    /// established.
    pub(super) fn observation_started(&mut self, id: RequestId, response: &Message) {
        if !observe::continues_observation(response) {
            if let Some((ticket, _)) = self.streams.remove(&id) {
                self.observe_tickets.remove(&ticket);
            }
        }
    }

    /// A client observation's notification, or its end.
    pub(super) fn observation_event(&mut self, id: RequestId, item: Result<Message, RequestError>) {
        let last = match &item {
            Ok(response) => !observe::continues_observation(response),
            Err(_) => true,
        };
        let Some((ticket, tx)) = self.streams.get(&id) else {
            return;
        };
        let ticket = *ticket;
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(item) {
            tracing::debug!(?id, "notification dropped: the observer is not reading");
        }
        if last {
            self.streams.remove(&id);
            self.observe_tickets.remove(&ticket);
        }
    }

    /// Ends a client observation: with a GET Observe 1 (`deregister`), or by forgetting it so
    /// that the next notification is answered with RST (§3.6).
    pub(super) fn end_observation(&mut self, now: Instant, ticket: u64, deregister: bool) {
        let Some(id) = self.observe_tickets.remove(&ticket) else {
            return;
        };
        self.streams.remove(&id);
        self.waiting.remove(&id);
        if deregister {
            match self.endpoint.deregister(now, id) {
                Ok(_) => return,
                Err(e) => tracing::debug!(?id, error = %e, "not deregistered"),
            }
        }
        self.endpoint.cancel(now, id);
    }
}

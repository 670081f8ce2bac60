//! Observe (RFC 7641) as both drivers do it, datagram ([`crate::driver`]) and stream
//! ([`crate::stream`]); each adds only how its transport sends a notification.
//!
//! Server, [`Observers`]: a GET with Observe 0 to a resource marked
//! [`Resource::obs`](crate::Resource::obs) whose handler answers 2.xx registers the (peer,
//! token) with the registration request, and the response carries the resource's next Observe
//! value (§3.1, §4.1); past the registry's caps it is served as a plain GET. A GET with
//! Observe 1, or a registration answered 4.xx/5.xx, removes it (§3.6, §4.1). A change
//! announced with [`ResourceNotifier::notify`](crate::ResourceNotifier::notify) re-runs the GET
//! handler for every observer with its registration request (so Accept and queries hold per
//! observer), all with the same new Observe value (§4.4); an error response is an observer's
//! last notification (§4.2). Changes are received only while there are observers, so a driver
//! (or stream connection) without any is never woken by them.
//!
//! Client, [`ClientObservations`]: each observation's notification channel, kept from its
//! first response while that continues the observation, fed until a notification that does
//! not (or an error) ends it; a full channel drops the notification (a later one supersedes
//! it, §3.4).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_proto::endpoint::RequestError;
use tern_proto::message::Token;
use tern_proto::observe::{self, ObserverRegistry};
use tern_proto::{Message, OptionNumber, RequestId};
use tern_tls::PeerIdentity;
use tokio::sync::{broadcast, mpsc};

use crate::driver::Command;
use crate::handling::{run_handler, seed, BlockExchange, BlockTables};
use crate::message::{Request, Response};
use crate::oscore::{OscoreServer, Protection};
use crate::router::{normalize, Router};
use crate::usage::Gauge;

/// Where a client observation's notifications go.
pub(crate) type NotificationSender = mpsc::Sender<Result<Message, RequestError>>;

/// A notification whose handler answered, to be sent by the driver.
pub(crate) struct Notification {
    pub(crate) peer: SocketAddr,
    pub(crate) token: Token,
    pub(crate) value: u32,
    pub(crate) response: Message,
    /// For an observation registered with OSCORE: what the notification is protected with.
    pub(crate) protection: Option<Protection>,
}

/// What an observer registered with: the (inner) registration request, and for OSCORE
/// what its notifications are protected with (RFC 8613 §4.1.3.5: each with its own Partial
/// IV, bound to the registration).
pub(crate) struct Registration {
    request: Message,
    protection: Option<Protection>,
}

/// The observers of one driver (server role), each with its registration request.
pub(crate) struct Observers {
    registry: ObserverRegistry<Registration>,
    /// Changes announced by the application; subscribed while there are observers.
    changes: Option<broadcast::Receiver<String>>,
    /// Registrations refused by the caps (served as plain GETs), so far.
    refused: u64,
}

impl Observers {
    pub(crate) fn new(router: &Router) -> Self {
        Observers {
            registry: ObserverRegistry::new(router.observe_config().clone(), seed()),
            changes: None,
            refused: 0,
        }
    }

    /// Registrations refused by the caps so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// Observers held, against the registry's total cap.
    pub(crate) fn usage(&self) -> Gauge {
        let cap = self.registry.config().max_total;
        Gauge::new(self.registry.len(), cap, self.refused)
    }

    pub(crate) fn registry(&self) -> &ObserverRegistry<Registration> {
        &self.registry
    }

    pub(crate) fn registry_mut(&mut self) -> &mut ObserverRegistry<Registration> {
        &mut self.registry
    }

    /// Registers or deregisters an observer as the response to its `request` says, and adds
    /// the Observe value to the response of a registration (or removes the option otherwise).
    pub(crate) fn respond(
        &mut self,
        router: &Router,
        now: Instant,
        peer: SocketAddr,
        exchange: &BlockExchange,
        response: &mut Message,
    ) {
        let request = &exchange.request;
        let Some(value) = observe::observe_value(request) else {
            return;
        };
        let token = request.token;
        let segments: Vec<&str> = request.path_segments().collect();
        let registering = observe::is_registration(request)
            && response.code.is_success()
            && router.is_observable(&segments);
        if !registering {
            let ends = value == observe::DEREGISTER || response.code.class() >= 4;
            if ends && self.registry.deregister(peer, token).is_some() {
                tracing::debug!(%peer, ?token, "observer deregistered");
            }
            response.options.remove(OptionNumber::OBSERVE);
            return;
        }
        let path = normalize(&segments.join("/"));
        let registration = Registration {
            request: request.clone(),
            protection: exchange.oscore.as_ref().map(|o| o.protection.clone()),
        };
        match self
            .registry
            .register(now, peer, token, &path, registration)
        {
            Ok(how) => {
                tracing::debug!(%peer, ?token, resource = %path, ?how, "observer registered");
                let value = self.registry.next_observe_value(&path).unwrap_or(0);
                response.options.set_uint(OptionNumber::OBSERVE, value);
                if self.changes.is_none() {
                    self.changes = Some(router.subscribe());
                }
            }
            Err(e) => {
                self.refused += 1;
                tracing::info!(%peer, error = %e, "observation refused; served as a plain GET");
                response.options.remove(OptionNumber::OBSERVE);
            }
        }
    }

    /// The resource at `path` changed: runs its GET handler for every observer with its
    /// registration request (and the peer's identity). Handlers that answer at once give the
    /// returned notifications; those that wait answer later as [`Command::Notification`].
    pub(crate) fn changed(
        &mut self,
        router: &Arc<Router>,
        path: &str,
        identity: impl Fn(SocketAddr) -> Option<PeerIdentity>,
        limit: Duration,
        commands: &mpsc::UnboundedSender<Command>,
    ) -> Vec<Notification> {
        let observers: Vec<(SocketAddr, Token, Message, Option<Protection>)> = self
            .registry
            .observers(path)
            .map(|o| {
                let r = &o.data;
                (o.peer, o.token, r.request.clone(), r.protection.clone())
            })
            .collect();
        let Some(value) = self.registry.next_observe_value(path) else {
            return Vec::new();
        };
        tracing::trace!(resource = %path, value, observers = observers.len(), "resource changed");
        let mut ready = Vec::new();
        for (peer, token, message, protection) in observers {
            let request = Request {
                peer,
                identity: identity(peer),
                oscore: protection.as_ref().map(Protection::identity),
                message,
                params: Vec::new(),
                rest: None,
            };
            let notification = move |response: Response, protection| Notification {
                peer,
                token,
                value,
                response: response.into_message(),
                protection,
            };
            let answered = run_handler(
                router.dispatch(request),
                peer,
                limit,
                commands,
                protection,
                move |response, protection| {
                    Command::Notification(notification(response, protection))
                },
            );
            if let Some((response, protection)) = answered {
                ready.push(notification(response, protection));
            }
        }
        ready
    }

    /// Readies a notification for sending: 2.xx gets the Observe value; an error response
    /// loses it and ends the observation (§4.2). False when the observer is gone
    /// (deregistered while its handler ran): nothing is to be sent. Then the driver slices it
    /// if it is large ([`slice_notification`]) and [`seal`]s it.
    pub(crate) fn prepare(&mut self, notification: &mut Notification) -> bool {
        let Notification {
            peer,
            token,
            value,
            response,
            ..
        } = notification;
        if self.registry.get(*peer, *token).is_none() {
            return false;
        }
        if response.code.is_success() {
            response.options.set_uint(OptionNumber::OBSERVE, *value);
        } else {
            response.options.remove(OptionNumber::OBSERVE);
            self.registry.deregister(*peer, *token);
            tracing::debug!(%peer, code = %response.code, "observation ended by an error response");
        }
        true
    }
}

impl Observers {
    /// Slices a notification larger than `max_payload` into its first block (RFC 7959 §2.6),
    /// as the response to its observer's registration: the rest is kept in `blocks` for the
    /// observer's GETs of the later blocks, which repeat the registration without Observe.
    pub(crate) fn slice(
        &self,
        blocks: &mut BlockTables,
        now: Instant,
        notification: &mut Notification,
        max_payload: usize,
        bert: Option<usize>,
    ) {
        if notification.response.payload.len() <= max_payload {
            return;
        }
        let Some((_, observer)) = self.registry.get(notification.peer, notification.token) else {
            return;
        };
        slice_as_response(
            blocks,
            now,
            notification,
            &observer.data.request,
            max_payload,
            bert,
        );
    }
}

fn slice_as_response(
    blocks: &mut BlockTables,
    now: Instant,
    notification: &mut Notification,
    registration: &Message,
    max_payload: usize,
    bert: Option<usize>,
) {
    let exchange = BlockExchange {
        peer: notification.peer,
        request: registration.clone(),
        block1: None,
        request_len: 0,
        bert,
        oscore: None,
    };
    let placeholder = Message::new(notification.response.ty, notification.response.code);
    let response = std::mem::replace(&mut notification.response, placeholder);
    notification.response = blocks.slice(now, response, &exchange, max_payload);
}

/// Protects a notification of an OSCORE observation with the observation's context, under a
/// Partial IV of its own (RFC 8613 §4.1.3.5.2); others are left as they are. False when it
/// could not be protected (its context was removed, say): the notification is then an
/// unprotected 5.00, and the observation must end.
pub(crate) fn seal(notification: &mut Notification, oscore: Option<&OscoreServer>) -> bool {
    let Some(protection) = &notification.protection else {
        return true;
    };
    let response = &mut notification.response;
    let plain = std::mem::replace(response, Message::new(response.ty, response.code));
    *response = match oscore {
        Some(server) => server.protect(protection, &plain, true),
        // Never sent in the clear; unreachable, as the registration was unprotected with
        // these contexts.
        None => {
            let mut error = Message::new(plain.ty, tern_proto::Code::INTERNAL_SERVER_ERROR);
            error.mid = plain.mid;
            error.token = plain.token;
            error
        }
    };
    response.options.contains(tern_proto::OptionNumber::OSCORE)
}

impl Observers {}

/// The next change announced to a driver's observers; never resolves while there are none
/// (the subscription is dropped then).
pub(crate) async fn next_change(observers: Option<&mut Observers>) -> String {
    let Some(observers) = observers else {
        return std::future::pending().await;
    };
    if observers.registry.is_empty() {
        observers.changes = None;
    }
    let Some(changes) = observers.changes.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match changes.recv().await {
            Ok(path) => return path,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "resource changes missed");
            }
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// A driver's client observations: where their notifications go, and the ticket that ends
/// each.
#[derive(Default)]
pub(crate) struct ClientObservations {
    channels: HashMap<RequestId, (u64, NotificationSender)>,
    tickets: HashMap<u64, RequestId>,
}

impl ClientObservations {
    /// A registration was sent as request `id`.
    pub(crate) fn insert(&mut self, id: RequestId, ticket: u64, notifications: NotificationSender) {
        self.channels.insert(id, (ticket, notifications));
        self.tickets.insert(ticket, id);
    }

    /// A registration's first response: its channel is kept if the observation is
    /// established.
    pub(crate) fn started(&mut self, id: RequestId, response: &Message) {
        if !observe::continues_observation(response) {
            self.forget(id);
        }
    }

    /// An observation's notification, or its end (an error, or a response that does not
    /// continue it).
    pub(crate) fn event(&mut self, id: RequestId, item: Result<Message, RequestError>) {
        let last = match &item {
            Ok(response) => !observe::continues_observation(response),
            Err(_) => true,
        };
        let Some((_, tx)) = self.channels.get(&id) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(item) {
            tracing::debug!(?id, "notification dropped: the observer is not reading");
        }
        if last {
            self.forget(id);
        }
    }

    /// Ends the observation `ticket` names; its request, if it was still going.
    pub(crate) fn end(&mut self, ticket: u64) -> Option<RequestId> {
        let id = self.tickets.remove(&ticket)?;
        self.channels.remove(&id);
        Some(id)
    }

    fn forget(&mut self, id: RequestId) {
        if let Some((ticket, _)) = self.channels.remove(&id) {
            self.tickets.remove(&ticket);
        }
    }
}

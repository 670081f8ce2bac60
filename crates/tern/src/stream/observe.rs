//! Observe (RFC 7641) over one stream connection, both roles, with the rules of RFC 8323 §7
//! for reliable transports; who observes what, and what a notification carries, is
//! [`crate::observing`]'s.
//!
//! Server: the connection keeps its own observers (they are its peer's), made on the first
//! request with Observe. A notification is a response on the observer's token, with the
//! Observe value as usual (§7.1); there is no CON or NON and no confirm interval, since the
//! stream is reliable. The connection closing removes its observers; while it has any, it is
//! not released as idle. A notification the connection cannot carry (larger than the peer's
//! Max-Message-Size) ends its observation with 5.00.
//!
//! Client: the first response answers the registration; later responses arrive in order
//! (§7.1), so every one is passed on (none is stale). Streams have no RST (§7.4): an
//! observation the application drops is deregistered with GET Observe 1, like one it
//! cancels, rather than forgotten. An observation does not lapse on Max-Age here: it lasts as
//! long as the connection, and the connection closing ends it with an error.

use std::time::Instant;

use tern_proto::endpoint::{RequestError, RequestParams};
use tern_proto::{Code, Message, MessageType, OptionNumber};
use tokio::sync::oneshot;

use super::driver::StreamDriver;
use crate::handling::BlockExchange;
use crate::observing::{self, Notification, NotificationSender, Observers};

impl StreamDriver {
    /// Registers or deregisters an observer as the response to its request says, and adds
    /// the Observe value to the response of a registration (server role).
    pub(super) fn observe_response(
        &mut self,
        now: Instant,
        exchange: &BlockExchange,
        response: &mut Message,
    ) {
        let Some(router) = self.config.router.as_ref() else {
            return;
        };
        if !exchange.request.options.contains(OptionNumber::OBSERVE) {
            return;
        }
        self.observers
            .get_or_insert_with(|| Observers::new(router))
            .respond(router, now, self.peer, exchange, response);
        self.observers_changed();
    }

    /// A resource changed: runs its GET handler for every observer on this connection and
    /// notifies them.
    pub(super) fn on_change(&mut self, path: String) {
        let (Some(observers), Some(router)) =
            (self.observers.as_mut(), self.config.router.as_ref())
        else {
            return;
        };
        let channel = &self.channel;
        let ready = observers.changed(
            router,
            &path,
            |_| channel.peer_identity(),
            self.config.handler_timeout,
            &self.command_tx,
        );
        let now = crate::clock::now();
        for notification in ready {
            self.send_notification(now, notification);
        }
    }

    /// Sends one observer its notification.
    pub(super) fn send_notification(&mut self, now: Instant, mut notification: Notification) {
        let Some(observers) = self.observers.as_mut() else {
            return;
        };
        if !observers.prepare(&mut notification) {
            return;
        }
        // Larger than the peer takes in one message: in blocks, if the peer does block-wise.
        let protected = notification.protection.is_some();
        let max_payload = self.max_payload(&notification.response, protected);
        if self.conn.peer_csm().block_wise_transfer {
            let bert = self.bert(max_payload);
            if let (Some(observers), Ok(mut blocks)) =
                (self.observers.as_ref(), self.config.blocks.lock())
            {
                observers.slice(&mut blocks, now, &mut notification, max_payload, bert);
            }
        }
        let sealed = observing::seal(
            &mut notification,
            self.config
                .router
                .as_deref()
                .and_then(crate::Router::oscore_server),
        );
        let Some(observers) = self.observers.as_mut() else {
            return;
        };
        if !sealed {
            observers
                .registry_mut()
                .deregister(self.peer, notification.token);
        }
        let token = notification.token;
        if let Err(e) = self.conn.notify(now, token, notification.response) {
            tracing::warn!(peer = %self.peer, error = %e, "notification not sent; observation ended");
            if observers
                .registry_mut()
                .deregister(self.peer, token)
                .is_some()
            {
                let end = Message::new(MessageType::Con, Code::INTERNAL_SERVER_ERROR);
                let _ = self.conn.notify(now, token, end);
            }
        }
        self.observers_changed();
    }

    /// The connection closed: its observers go with it.
    pub(super) fn forget_observers(&mut self) {
        if let Some(observers) = self.observers.take() {
            let n = observers.registry().len();
            if n > 0 {
                tracing::debug!(peer = %self.peer, observers = n, "observers of a closed connection removed");
            }
        }
        self.observers_changed();
    }

    /// Observers on this connection.
    pub(super) fn observer_count(&self) -> usize {
        self.observers.as_ref().map_or(0, |o| o.registry().len())
    }

    /// Tells the connection (for its idle time-out) and the listener (for
    /// [`Context::observer_count`](crate::Context::observer_count)) how many observers there are.
    fn observers_changed(&mut self) {
        let n = self.observer_count();
        let refused = self.observers.as_ref().map_or(0, |o| o.refused());
        self.conn.set_observers(n);
        if let Some(slot) = self.config.slot.as_mut() {
            slot.set_observers(n);
            slot.set_observers_refused(refused);
        }
    }

    /// Sends a registration (client role): the first response answers `reply`, later ones
    /// go to `notifications`.
    pub(super) fn start_observation(
        &mut self,
        now: Instant,
        ticket: u64,
        message: Message,
        params: RequestParams,
        reply: oneshot::Sender<Result<Message, RequestError>>,
        notifications: NotificationSender,
    ) {
        match self.conn.request(now, message, params) {
            Ok(id) => {
                self.waiting.insert(id, (ticket, reply));
                self.observations.insert(id, ticket, notifications);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Ends a client observation: an established one with a GET Observe 1 (§7.4), one not
    /// yet answered by forgetting it.
    pub(super) fn end_observation(&mut self, now: Instant, ticket: u64, message: Option<Message>) {
        let Some(id) = self.observations.end(ticket) else {
            return;
        };
        self.waiting.remove(&id);
        if let Err(e) = self.conn.deregister_with(now, id, message) {
            tracing::debug!(?id, error = %e, "not deregistered; forgotten");
            self.conn.cancel(id);
        }
    }
}

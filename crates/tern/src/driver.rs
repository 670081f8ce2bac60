//! The task that drives one sans-IO [`Endpoint`] over one UDP socket: datagrams in batches from
//! the socket, commands from the application, timers from the endpoint; datagrams out in
//! batches, events to handlers and waiting callers.
//!
//! Between socket and endpoint sits a [`SecurityLayer`]: for a secure layer (DTLS) every
//! datagram goes through it; a plain layer is skipped altogether, so coap:// pays nothing.
//!
//! Observe (RFC 7641), both roles, is in [`observe`].

mod observe;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_proto::endpoint::{RequestError, RequestParams, Stats};
use tern_proto::{
    Code, Endpoint, Event, IncomingId, Message, OptionNumber, RequestId, TransmissionParams,
};
use tern_tls::{DtlsContext, LayerEvent, SecurityLayer};

use crate::session::{SessionEvent, SessionState};
use tokio::sync::{mpsc, oneshot};

use crate::message::Request;
use crate::observing::{self, ClientObservations, Notification, NotificationSender};
use crate::router::Router;
use crate::udp::{self, DatagramSocket, RecvBatch};
use crate::usage::{Gauge, Usage};
use observe::ServerObserve;

use crate::echo::{VerifiedAddresses, ADDRESS_PROOF_AGE};
use crate::handling::{run_handler, BlockExchange, BlockTables};

/// What the application asks of a driver.
pub(crate) enum Command {
    Request {
        /// Chosen by the caller, to cancel the request if the caller goes away.
        ticket: u64,
        peer: SocketAddr,
        message: Message,
        params: RequestParams,
        reply: oneshot::Sender<Result<Message, RequestError>>,
    },
    Respond {
        id: IncomingId,
        response: Message,
        /// What the block-wise layer needs to finish the response.
        exchange: Box<BlockExchange>,
    },
    /// Registers an observation (RFC 7641): the first response answers `reply`, the later
    /// ones go to `notifications`.
    Observe {
        ticket: u64,
        peer: SocketAddr,
        message: Message,
        params: RequestParams,
        reply: oneshot::Sender<Result<Message, RequestError>>,
        notifications: NotificationSender,
    },
    /// A notification whose handler ran as a task (server role).
    Notification(Notification),
    /// Cancels a request, or forgets an observation (its next notification draws a RST; a
    /// stream, which has no RST, deregisters it instead).
    Cancel(u64),
    /// Ends an observation with a GET Observe 1 (RFC 7641 §3.6): the registration repeated
    /// with Observe 1, or the message given (an OSCORE deregistration, protected anew).
    Deregister(u64, Option<Box<Message>>),
    /// Answers how many observers this endpoint has (server role).
    ObserverCount(oneshot::Sender<usize>),
    /// Closes the session with a peer; its waiting requests fail with the reason.
    Disconnect(SocketAddr, String),
    /// Sets (or, with `None`, removes) the client credentials for a peer.
    PeerCredentials(SocketAddr, Option<Box<DtlsContext>>),
    /// Closes every session authenticated with a PSK identity; answers how many.
    DisconnectIdentity(Vec<u8>, oneshot::Sender<usize>),
    Stats(oneshot::Sender<Stats>),
    /// What the endpoint holds against its caps.
    Usage(oneshot::Sender<Usage>),
    PeerParams(SocketAddr, TransmissionParams),
    Shutdown,
}

/// Receive batches handled before the driver looks at commands and timers again, so that a
/// flood of datagrams cannot starve them.
const MAX_BATCHES_PER_WAKE: usize = 8;

pub(crate) struct Driver<L: SecurityLayer> {
    socket: DatagramSocket,
    endpoint: Endpoint,
    layer: L,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Handed to slow handlers to send their response back.
    command_tx: mpsc::UnboundedSender<Command>,
    router: Option<Arc<Router>>,
    handler_timeout: Duration,
    waiting: HashMap<RequestId, (u64, oneshot::Sender<Result<Message, RequestError>>)>,
    tickets: HashMap<u64, RequestId>,
    outbox: Vec<(SocketAddr, Vec<u8>)>,
    events: tokio::sync::broadcast::Sender<SessionEvent>,
    local: SocketAddr,
    /// For a session's own endpoint: the session's state, kept up to date here.
    session_state: Option<Arc<Mutex<SessionState>>>,
    /// Request bodies arriving in blocks, large response bodies served block by block.
    blocks: BlockTables,
    /// Observers of this endpoint's observable resources (with a router).
    observe: Option<ServerObserve>,
    /// Client observations: where their notifications go, and the ticket that ends them.
    observations: ClientObservations,
    /// Addresses that echoed a challenge (amplification limits, RFC 9175 §2.4).
    verified: VerifiedAddresses,
}

impl<L: SecurityLayer> Driver<L> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        socket: DatagramSocket,
        endpoint: Endpoint,
        layer: L,
        commands: mpsc::UnboundedReceiver<Command>,
        command_tx: mpsc::UnboundedSender<Command>,
        router: Option<Arc<Router>>,
        handler_timeout: Duration,
        events: tokio::sync::broadcast::Sender<SessionEvent>,
        session_state: Option<Arc<Mutex<SessionState>>>,
    ) -> Self {
        let local = socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let observe = router.as_deref().map(ServerObserve::new);
        let blocks = BlockTables::new(router.as_deref());
        Driver {
            socket,
            endpoint,
            layer,
            commands,
            command_tx,
            router,
            handler_timeout,
            waiting: HashMap::new(),
            tickets: HashMap::new(),
            outbox: Vec::with_capacity(udp::BATCH),
            events,
            local,
            session_state,
            blocks,
            observe,
            observations: ClientObservations::default(),
            verified: VerifiedAddresses::default(),
        }
    }

    fn set_session_state(&self, state: SessionState) {
        if let Some(Ok(mut current)) = self.session_state.as_ref().map(|s| s.lock()) {
            *current = state;
        }
    }

    pub(crate) async fn run(mut self) {
        let mut batch = RecvBatch::default();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            self.process_events();
            self.flush().await;
            let next = match (self.endpoint.poll_timeout(), self.layer.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if next != armed {
                if let Some(at) = next {
                    sleep.as_mut().reset(at.into());
                }
                armed = next;
            }
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    if !self.command(command) {
                        break;
                    }
                    while let Ok(command) = self.commands.try_recv() {
                        if !self.command(command) {
                            return self.finish().await;
                        }
                    }
                }
                ready = self.socket.readable() => {
                    if let Err(e) = ready {
                        tracing::warn!(error = %e, "socket failed");
                        break;
                    }
                    self.receive(&mut batch);
                }
                path = observing::next_change(self.observe.as_mut().map(|s| &mut s.observers)) => self.on_change(path),
                () = &mut sleep, if armed.is_some() => {
                    let now = crate::clock::now();
                    self.layer.handle_timeout(now);
                    self.drain_layer(now);
                    self.endpoint.handle_timeout(now);
                    armed = None;
                }
            }
        }
        self.finish().await;
    }

    async fn finish(mut self) {
        self.process_events();
        self.flush().await;
        // Dropping the senders tells waiting callers the context is closed.
        self.waiting.clear();
        self.tickets.clear();
    }

    fn receive(&mut self, batch: &mut RecvBatch) {
        for _ in 0..MAX_BATCHES_PER_WAKE {
            match self.socket.try_recv_batch(batch) {
                Ok(0) => break,
                Ok(_) => {
                    let now = crate::clock::now();
                    let secure = self.layer.is_secure();
                    for (peer, datagram) in batch.iter() {
                        if secure {
                            self.layer.handle_datagram(now, peer, datagram);
                        } else {
                            self.endpoint.handle(now, peer, datagram);
                        }
                    }
                    if secure {
                        self.drain_layer(now);
                    }
                    // Answer what can be answered at once before taking more from the socket.
                    self.process_events();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on some systems; they concern one peer only.
                    tracing::debug!(error = %e, "receive error");
                    break;
                }
            }
        }
    }

    /// Returns false on shutdown.
    fn command(&mut self, command: Command) -> bool {
        let now = crate::clock::now();
        match command {
            Command::Request {
                ticket,
                peer,
                message,
                params,
                reply,
            } => match self.endpoint.request(now, peer, message, params) {
                Ok(id) => {
                    self.waiting.insert(id, (ticket, reply));
                    self.tickets.insert(ticket, id);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Respond {
                id,
                response,
                exchange,
            } => self.answer(now, id, response, *exchange),
            Command::Observe {
                ticket,
                peer,
                message,
                params,
                reply,
                notifications,
            } => match self.endpoint.request(now, peer, message, params) {
                Ok(id) => {
                    self.waiting.insert(id, (ticket, reply));
                    self.observations.insert(id, ticket, notifications);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Notification(notification) => self.send_notification(now, notification),
            Command::Cancel(ticket) => {
                if let Some(id) = self.tickets.remove(&ticket) {
                    self.waiting.remove(&id);
                    self.endpoint.cancel(now, id);
                } else {
                    self.end_observation(now, ticket, None);
                }
            }
            Command::Deregister(ticket, message) => {
                self.end_observation(now, ticket, Some(message.map(|m| *m)))
            }
            Command::ObserverCount(reply) => {
                let _ = reply.send(self.observer_count());
            }
            Command::Disconnect(peer, reason) => {
                self.layer.disconnect(now, peer);
                if self.session_state.is_some() && !self.layer.is_secure() {
                    // A UDP session has no channel to report its close: report it here.
                    let local = self.local;
                    let closed = SessionEvent::Closed {
                        local,
                        peer,
                        reason: reason.clone(),
                    };
                    let _ = self.events.send(closed);
                }
                self.endpoint
                    .abort_peer(now, peer, RequestError::ChannelFailed(reason));
                self.forget_observer_peer(peer);
                self.drain_layer(now);
                self.set_session_state(SessionState::Closed);
            }
            Command::PeerCredentials(peer, Some(ctx)) => {
                self.layer.set_peer_credentials(peer, *ctx)
            }
            Command::PeerCredentials(peer, None) => {
                self.layer.remove_peer_credentials(peer);
            }
            Command::DisconnectIdentity(identity, reply) => {
                let closed = self.layer.disconnect_identity(now, &identity);
                self.drain_layer(now);
                let _ = reply.send(closed);
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.endpoint.stats());
            }
            Command::Usage(reply) => {
                let _ = reply.send(self.usage());
            }
            Command::PeerParams(peer, params) => self.endpoint.set_peer_params(now, peer, params),
            Command::Shutdown => return false,
        }
        true
    }

    /// What this endpoint holds against its caps.
    fn usage(&self) -> Usage {
        let config = self.endpoint.config();
        let stats = self.endpoint.stats();
        let layer = self.layer.usage();
        let (block1, block2) = self.blocks.usage();
        Usage {
            peers: Gauge::new(
                self.endpoint.peer_count(),
                config.max_peers,
                stats.peers_refused,
            ),
            pending_requests: Gauge::new(
                self.endpoint.pending_incoming(),
                config.max_pending_incoming,
                stats.overloaded,
            ),
            dedup_entries: Gauge::new(
                self.endpoint.dedup_len(),
                config.dedup_total,
                self.endpoint.dedup_evicted(),
            ),
            dtls_sessions: Gauge::new(layer.channels, layer.max_channels, layer.channels_evicted),
            dtls_handshakes: Gauge::new(
                layer.handshaking,
                layer.max_handshaking,
                layer.handshakes_refused,
            ),
            observers: self
                .observe
                .as_ref()
                .map(|o| o.observers.usage())
                .unwrap_or_default(),
            block1_transfers: block1,
            block2_cached_bytes: block2,
            ..Usage::default()
        }
    }

    fn process_events(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Request { id, peer, request } => self.dispatch(id, peer, request),
                Event::Response { id, response } => {
                    self.observations.started(id, &response);
                    if let Some((ticket, reply)) = self.waiting.remove(&id) {
                        self.tickets.remove(&ticket);
                        let _ = reply.send(Ok(response));
                    }
                }
                Event::RequestFailed { id, error } => {
                    if let Some((ticket, reply)) = self.waiting.remove(&id) {
                        self.tickets.remove(&ticket);
                        let _ = reply.send(Err(error.clone()));
                    }
                    self.observations.event(id, Err(error));
                }
                Event::Notification { id, response } => self.observations.event(id, Ok(response)),
                Event::NotificationAcked(id) => self.notification_outcome(id, None),
                Event::NotificationFailed { id, reason } => {
                    self.notification_outcome(id, Some(reason))
                }
            }
        }
    }

    /// Runs the handler. Most handlers finish without waiting: they are polled once in place
    /// and answered piggybacked without a task. The others run as tasks and answer through the
    /// command channel; the message layer sends the empty ACK if they are slow.
    fn dispatch(&mut self, id: IncomingId, peer: SocketAddr, message: Message) {
        let now = crate::clock::now();
        let Some(router) = self.router.clone() else {
            let _ = self
                .endpoint
                .respond(now, id, Message::new(message.ty, Code::NOT_FOUND));
            return;
        };
        // Block-wise (RFC 7959): a request body arriving in blocks is reassembled before the
        // handler sees it; later blocks of a large response come from the cache. OSCORE
        // (RFC 8613) requests are unprotected on the way.
        let block_size = self.blocks.block_size();
        let request_len = message.encoded_len();
        let before = self.blocks.before_handler(
            now,
            peer,
            message,
            router.oscore_server(),
            block_size,
            None,
        );
        let (message, mut exchange) = match before {
            Ok(ready) => ready,
            Err(reply) => {
                if let Err(e) = self.endpoint.respond(now, id, reply) {
                    tracing::warn!(error = %e, "response not sent");
                }
                return;
            }
        };
        exchange.request_len = request_len;
        if let Some(echo) = message.options.get(OptionNumber::ECHO) {
            if router.echo().verify(now, peer, echo, ADDRESS_PROOF_AGE) {
                self.verified.insert(peer);
            }
        }
        let request = Request {
            peer,
            identity: self.layer.peer_identity(peer),
            oscore: exchange.oscore_identity(),
            message,
            params: Vec::new(),
            rest: None,
        };
        let ready = run_handler(
            router.dispatch(request),
            peer,
            self.handler_timeout,
            &self.command_tx,
            exchange,
            move |response, exchange| Command::Respond {
                id,
                response: response.into_message(),
                exchange: Box::new(exchange),
            },
        );
        if let Some((response, exchange)) = ready {
            self.answer(crate::clock::now(), id, response.into_message(), exchange);
        }
    }

    /// Sends a handler's response: sliced into blocks when large, acknowledging the request's
    /// last Block1 block when it came block-wise.
    fn answer(
        &mut self,
        now: Instant,
        id: IncomingId,
        mut response: Message,
        exchange: BlockExchange,
    ) {
        let block_size = self.blocks.block_size();
        // Before slicing: a body sliced would be cached, and its later blocks served from the
        // cache to whoever asks in that address's name.
        self.limit_amplification(now, &exchange, &mut response);
        response = self.blocks.slice(now, response, &exchange, block_size);
        self.observe_response(now, &exchange, &mut response);
        let oscore = self.router.as_deref().and_then(Router::oscore_server);
        response = self
            .blocks
            .seal(now, response, &exchange, oscore, block_size);
        if let Err(e) = self.endpoint.respond(now, id, response) {
            tracing::warn!(error = %e, "response not sent");
        }
    }

    /// RFC 9175 §2.4: to an address not yet verified (plain UDP only), a response more than
    /// three times its request's size becomes a 4.01 with an Echo challenge, when the router
    /// asks for it. Decided before the response is protected, so an OSCORE response is never
    /// protected twice under the request's nonce.
    fn limit_amplification(
        &mut self,
        now: Instant,
        exchange: &BlockExchange,
        response: &mut Message,
    ) {
        let Some(router) = self.router.as_deref() else {
            return;
        };
        if !router.limits_amplification()
            || self.layer.is_secure()
            || self.verified.contains(exchange.peer)
        {
            return;
        }
        let oscore = if exchange.oscore.is_some() {
            crate::oscore::OSCORE_OVERHEAD
        } else {
            0
        };
        if response.encoded_len() + oscore <= exchange.request_len.saturating_mul(3) {
            return;
        }
        tracing::debug!(peer = %exchange.peer, "large response to an unverified address: Echo challenge");
        let mut challenge = Message::new(response.ty, Code::UNAUTHORIZED);
        challenge.mid = response.mid;
        challenge.token = response.token;
        challenge.options.set(
            OptionNumber::ECHO,
            router.echo().challenge(now, exchange.peer),
        );
        *response = challenge;
    }

    async fn flush(&mut self) {
        let secure = self.layer.is_secure();
        let now = crate::clock::now();
        while let Some(t) = self.endpoint.poll_transmit() {
            if secure {
                self.layer.send(now, t.destination, t.contents);
                continue;
            }
            self.outbox.push((t.destination, t.contents));
            if self.outbox.len() >= udp::BATCH {
                self.send_outbox().await;
            }
        }
        if secure {
            // Handshake messages, records, and what the layer learnt while sending.
            self.drain_layer(now);
            while let Some((peer, datagram)) = self.layer.poll_transmit() {
                self.outbox.push((peer, datagram));
                if self.outbox.len() >= udp::BATCH {
                    self.send_outbox().await;
                }
            }
        }
        self.send_outbox().await;
    }

    /// Takes what the security layer decrypted up to the message layer, and reports its events.
    fn drain_layer(&mut self, now: Instant) {
        while let Some((peer, plaintext)) = self.layer.poll_received() {
            self.endpoint.handle(now, peer, &plaintext);
        }
        let local = self.local;
        while let Some(event) = self.layer.poll_event() {
            let session_event = match event {
                LayerEvent::HandshakeStarted(peer) => {
                    tracing::debug!(%peer, "DTLS handshake started");
                    self.set_session_state(SessionState::Handshaking);
                    SessionEvent::HandshakeStarted { local, peer }
                }
                LayerEvent::Established(peer) => {
                    tracing::info!(%peer, "DTLS session established");
                    self.set_session_state(SessionState::Established);
                    SessionEvent::Established { local, peer }
                }
                LayerEvent::HandshakeFailed(peer, reason) => {
                    tracing::warn!(%peer, %reason, "DTLS handshake failed");
                    self.set_session_state(SessionState::Closed);
                    // Requests waiting for this peer fail now rather than at their time-out.
                    self.endpoint.abort_peer(
                        now,
                        peer,
                        RequestError::ChannelFailed(reason.clone()),
                    );
                    SessionEvent::HandshakeFailed {
                        local,
                        peer,
                        reason,
                    }
                }
                LayerEvent::Closed(peer, reason) => {
                    tracing::info!(%peer, %reason, "DTLS session closed");
                    self.set_session_state(SessionState::Closed);
                    self.forget_observer_peer(peer);
                    self.endpoint.abort_peer(
                        now,
                        peer,
                        RequestError::ChannelFailed(reason.clone()),
                    );
                    SessionEvent::Closed {
                        local,
                        peer,
                        reason,
                    }
                }
                LayerEvent::IdleFreed(peer) => {
                    tracing::debug!(%peer, "idle DTLS session freed");
                    self.set_session_state(SessionState::Closed);
                    SessionEvent::IdleFreed { local, peer }
                }
                LayerEvent::AlertReceived(peer, alert) => {
                    tracing::debug!(%peer, %alert, "DTLS alert received");
                    SessionEvent::AlertReceived { local, peer, alert }
                }
                LayerEvent::ServerChannelCreated(peer) => {
                    SessionEvent::ServerSessionCreated { local, peer }
                }
                LayerEvent::ServerChannelFreed(peer, reason) => {
                    self.forget_observer_peer(peer);
                    SessionEvent::ServerSessionDeleted {
                        local,
                        peer,
                        reason,
                    }
                }
                LayerEvent::SendFailed(peer, reason) => {
                    tracing::debug!(%peer, %reason, "nothing sent");
                    // Requests for the peer fail now rather than at their time-out.
                    self.endpoint
                        .abort_peer(now, peer, RequestError::ChannelFailed(reason));
                    continue;
                }
            };
            // Nobody listening is fine; a slow listener loses the oldest events.
            let _ = self.events.send(session_event);
        }
    }

    async fn send_outbox(&mut self) {
        let mut sent = 0;
        while sent < self.outbox.len() {
            match self.socket.try_send_batch(&self.outbox[sent..]) {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    // One unreachable or invalid destination must not block the others.
                    tracing::debug!(error = %e, peer = %self.outbox[sent].0, "send failed");
                    sent += 1;
                }
            }
        }
        self.outbox.clear();
    }
}

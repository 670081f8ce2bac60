//! The task that drives one CoAP-over-stream connection (RFC 8323): bytes from the TCP socket
//! (through TLS for coaps+tcp://) into the sans-IO [`StreamConnection`], commands from the
//! application, its timers; bytes out in order. Both roles: a client connection sends the
//! context's requests, a server connection runs the router.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_proto::endpoint::{RequestError, Stats};
use tern_proto::stream::{StreamConnection, StreamEvent, StreamState};
use tern_proto::{Code, IncomingId, Message, RequestId};
use tern_tls::{PeerIdentity, StreamSecurity, TlsEvent};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::driver::Command;
use crate::handling::{run_handler, BlockExchange, BlockTables};
use crate::message::Request;
use crate::observing::{self, ClientObservations, Observers};
use crate::router::Router;
use crate::session::{SessionEvent, SessionState};
use crate::usage::Usage;

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 16 * 1024;

/// Output not yet taken by the socket above which the driver stops reading: a peer that
/// sends requests but does not read its responses cannot make the server buffer without
/// bound.
pub(crate) const MAX_PENDING_OUTPUT: usize = 1 << 20;

/// How long after its last input a connection gives back its read and write buffers: an idle
/// connection (of thousands) then holds none, a busy one keeps them.
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// What a connection is for.
pub(crate) struct StreamDriverConfig {
    pub(crate) router: Option<Arc<Router>>,
    pub(crate) handler_timeout: Duration,
    pub(crate) events: broadcast::Sender<SessionEvent>,
    /// For a session's own connection: what the session shows, kept up to date here.
    pub(crate) session: Option<super::SessionLink>,
    /// Block-wise state of a listener, shared by its connections so that its caps hold for
    /// the listener as a whole; a client connection has its own.
    pub(crate) blocks: Arc<Mutex<BlockTables>>,
    /// Released when the connection ends (a listener counts its connections with it).
    pub(crate) slot: Option<super::listener::ConnectionSlot>,
    /// A server connection reports its creation and deletion.
    pub(crate) server: bool,
    /// A client connection's flag for its handle: set when it takes no new requests.
    pub(crate) retired: Option<Arc<super::Retirement>>,
    /// Becomes true when the context shuts down.
    pub(crate) shutdown: tokio::sync::watch::Receiver<bool>,
}

pub(crate) struct StreamDriver {
    socket: TcpStream,
    pub(super) conn: StreamConnection,
    pub(super) channel: Box<dyn StreamSecurity>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Handed to slow handlers to send their response back.
    pub(super) command_tx: mpsc::UnboundedSender<Command>,
    pub(super) config: StreamDriverConfig,
    local: SocketAddr,
    pub(super) peer: SocketAddr,
    pub(super) waiting: HashMap<RequestId, (u64, oneshot::Sender<Result<Message, RequestError>>)>,
    tickets: HashMap<u64, RequestId>,
    /// This connection's observers (server role), from its first request with Observe.
    pub(super) observers: Option<Observers>,
    /// Client observations (see [`super::observe`]).
    pub(super) observations: ClientObservations,
    /// Bytes for the socket, from `written` on.
    output: Vec<u8>,
    written: usize,
    /// Whether the CSM exchange was reported.
    established: bool,
    /// Why the connection ended, once it has.
    closed: Option<String>,
    /// Whether the channel was told to close (close_notify queued).
    channel_closed: bool,
    stats: Stats,
    /// When the buffers are next given back, if the connection stays quiet until then.
    trim_at: Option<Instant>,
    /// TLS input arrived that may hold plaintext not yet read out.
    fed: bool,
}

impl StreamDriver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        socket: TcpStream,
        conn: StreamConnection,
        channel: Box<dyn StreamSecurity>,
        commands: mpsc::UnboundedReceiver<Command>,
        command_tx: mpsc::UnboundedSender<Command>,
        config: StreamDriverConfig,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Self {
        StreamDriver {
            socket,
            conn,
            channel,
            commands,
            command_tx,
            config,
            local,
            peer,
            waiting: HashMap::new(),
            tickets: HashMap::new(),
            observers: None,
            observations: ClientObservations::default(),
            output: Vec::new(),
            written: 0,
            established: false,
            closed: None,
            channel_closed: false,
            stats: Stats::default(),
            trim_at: None,
            fed: false,
        }
    }

    fn set_session_state(&self, state: SessionState) {
        if let Some(Ok(mut current)) = self.config.session.as_ref().map(|s| s.state.lock()) {
            *current = state;
        }
    }

    fn emit(&self, event: SessionEvent) {
        // Nobody listening is fine; a slow listener loses the oldest events.
        let _ = self.config.events.send(event);
    }

    pub(crate) async fn run(mut self) {
        let (local, peer) = (self.local, self.peer);
        if self.config.server {
            self.emit(SessionEvent::ServerSessionCreated { local, peer });
        }
        if self.channel.is_secure() {
            self.emit(SessionEvent::HandshakeStarted { local, peer });
            self.set_session_state(SessionState::Handshaking);
        }
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let mut commands_open = true;
        let mut shutdown = self.config.shutdown.clone();
        let mut shutting_down = false;
        // Whether the last turn read from the socket, to count each pause once.
        let mut reading = true;
        loop {
            let now = crate::clock::now();
            self.process(now);
            if self.closed.is_some() && self.pending_output() == 0 {
                break;
            }
            let next = [
                self.conn.poll_timeout(),
                self.channel.poll_timeout(),
                self.trim_at,
            ]
            .into_iter()
            .flatten()
            .min();
            if next != armed {
                if let Some(at) = next {
                    sleep.as_mut().reset(at.into());
                }
                armed = next;
            }
            let pending = self.pending_output();
            let want_write = pending > 0;
            let want_read = self.closed.is_none() && pending < MAX_PENDING_OUTPUT;
            if let Some(slot) = self.config.slot.as_mut() {
                slot.set_buffered(pending);
                if !want_read && reading && self.closed.is_none() {
                    slot.paused();
                }
            }
            reading = want_read;
            tokio::select! {
                biased;
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.command(command),
                    None => {
                        // Every handle is gone: nobody can use this client connection.
                        commands_open = false;
                        if !self.config.server {
                            self.conn.release(crate::clock::now(), None, None);
                        }
                    }
                },
                ready = self.socket.writable(), if want_write => {
                    if ready.is_err() {
                        self.fail("socket failed");
                        break;
                    }
                    self.write();
                }
                ready = self.socket.readable(), if want_read => {
                    if ready.is_err() {
                        self.fail("socket failed");
                    } else {
                        self.read();
                    }
                }
                path = observing::next_change(self.observers.as_mut()) => self.on_change(path),
                _ = shutdown.wait_for(|down| *down), if !shutting_down => {
                    shutting_down = true;
                    self.command(Command::Shutdown);
                }
                () = &mut sleep, if armed.is_some() => {
                    let now = crate::clock::now();
                    self.trim(now);
                    self.channel.handle_timeout(now);
                    self.conn.handle_timeout(now);
                    armed = None;
                }
            }
        }
        self.finish().await;
    }

    /// Gives the buffers back once the connection has been quiet for [`TRIM_AFTER`].
    fn trim(&mut self, now: Instant) {
        if self.trim_at.is_some_and(|at| at <= now) {
            self.trim_at = None;
            self.conn.release_idle_buffers();
            if self.pending_output() == 0 {
                self.output = Vec::new();
                self.written = 0;
            }
        }
    }

    fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    /// The connection failed under us: what is outstanding fails with the reason.
    fn fail(&mut self, reason: &str) {
        self.retire();
        self.conn.close(crate::clock::now(), reason);
        self.output.clear();
        self.written = 0;
        self.process(crate::clock::now());
        if self.closed.is_none() {
            self.closed = Some(reason.to_string());
        }
    }

    async fn finish(mut self) {
        use tokio::io::AsyncWriteExt;
        let reason = self.closed.take().unwrap_or_else(|| "closed".into());
        let _ = self.socket.shutdown().await;
        self.set_session_state(SessionState::Closed);
        let (local, peer) = (self.local, self.peer);
        tracing::debug!(%peer, %reason, "stream connection closed");
        self.emit(SessionEvent::Closed {
            local,
            peer,
            reason: reason.clone(),
        });
        if self.config.server {
            self.emit(SessionEvent::ServerSessionDeleted {
                local,
                peer,
                reason,
            });
        }
        // Dropping the senders tells waiting callers the connection is gone.
        self.waiting.clear();
    }

    fn read(&mut self) {
        let now = crate::clock::now();
        let result = if self.channel.is_passthrough() {
            // Plain TCP: the socket reads straight into the frame decoder's buffer.
            let buffer = self.conn.input_buffer(READ_CHUNK);
            match self.socket.try_read(buffer) {
                Ok(0) => Ok(0),
                Ok(n) => {
                    self.conn.commit_input(now, n);
                    Ok(n)
                }
                Err(e) => Err(e),
            }
        } else {
            let mut buffer = [0u8; READ_CHUNK];
            match self.socket.try_read(&mut buffer) {
                Ok(n) => {
                    if n > 0 {
                        self.channel.handle_input(now, &buffer[..n]);
                        self.fed = true;
                    }
                    Ok(n)
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(0) => {
                self.retire();
                self.channel.handle_eof(now);
                self.conn.handle_eof(now);
            }
            Ok(_) => self.trim_at = Some(now + TRIM_AFTER),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.fail(&format!("read failed: {e}")),
        }
    }

    fn write(&mut self) {
        while self.pending_output() > 0 {
            match self.socket.try_write(&self.output[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.fail(&format!("write failed: {e}"));
                    return;
                }
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
    }

    /// Moves bytes and events between the channel, the connection and the application until
    /// nothing moves, then writes what it can without waiting.
    fn process(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            // TLS plaintext up to the connection, decrypted straight into its input buffer.
            // Only after input: asking for room would otherwise allocate the read buffer
            // again on every pass, undoing `trim` for idle TLS connections.
            if !self.channel.is_passthrough() && std::mem::take(&mut self.fed) {
                loop {
                    let n = self
                        .channel
                        .read_plaintext(self.conn.input_buffer(READ_CHUNK));
                    if n == 0 {
                        break;
                    }
                    self.conn.commit_input(now, n);
                    moved = true;
                }
            }
            while let Some(event) = self.channel.poll_event() {
                self.channel_event(now, event);
                moved = true;
            }
            while let Some(event) = self.conn.poll_event() {
                self.connection_event(now, event);
                moved = true;
            }
            // Frames down through the channel.
            while let Some(bytes) = self.conn.poll_output() {
                if self.channel.is_passthrough() {
                    if self.output.is_empty() {
                        self.output = bytes;
                    } else {
                        self.output.extend_from_slice(&bytes);
                    }
                } else if let Err(e) = self.channel.send(&bytes) {
                    tracing::debug!(peer = %self.peer, error = %e, "nothing sent");
                }
                moved = true;
            }
            if self.closed.is_some() && !self.channel_closed {
                // TLS: close_notify follows the connection's last frames.
                self.channel_closed = true;
                self.channel.close();
            }
            while let Some(bytes) = self.channel.poll_output() {
                self.output.extend_from_slice(&bytes);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        if self.pending_output() > 0 {
            self.write();
        }
    }

    fn channel_event(&mut self, now: Instant, event: TlsEvent) {
        let (local, peer) = (self.local, self.peer);
        match event {
            // Reported by `run` when the connection starts.
            TlsEvent::HandshakeStarted => {}
            TlsEvent::Established => {
                tracing::debug!(%peer, "TLS handshake completed");
            }
            TlsEvent::HandshakeFailed(reason) => {
                tracing::warn!(%peer, %reason, "TLS handshake failed");
                self.emit(SessionEvent::HandshakeFailed {
                    local,
                    peer,
                    reason: reason.clone(),
                });
                self.conn
                    .close(now, &format!("TLS handshake failed: {reason}"));
            }
            TlsEvent::AlertReceived(alert) => {
                self.emit(SessionEvent::AlertReceived { local, peer, alert });
            }
            TlsEvent::Closed(reason) => {
                self.retire();
                self.conn.close(now, &reason);
            }
        }
    }

    fn connection_event(&mut self, now: Instant, event: StreamEvent) {
        match event {
            StreamEvent::Established(csm) => {
                tracing::debug!(peer = %self.peer, ?csm, "CSM exchanged");
                self.established = true;
                if let Some(link) = &self.config.session {
                    let max = &link.peer_max_message_size;
                    max.store(csm.max_message_size, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(slot) = self.config.slot.as_mut() {
                    slot.established();
                }
                self.set_session_state(SessionState::Established);
                let (local, peer) = (self.local, self.peer);
                self.emit(SessionEvent::Established { local, peer });
            }
            StreamEvent::Request { id, request } => {
                self.dispatch(now, id, request);
            }
            StreamEvent::Response { id, response } => {
                self.observations.started(id, &response);
                if let Some((ticket, reply)) = self.waiting.remove(&id) {
                    self.tickets.remove(&ticket);
                    let _ = reply.send(Ok(response));
                }
            }
            StreamEvent::Notification { id, response } => {
                self.observations.event(id, Ok(response));
            }
            StreamEvent::RequestFailed { id, error } => {
                if error == RequestError::Timeout {
                    self.stats.timeouts += 1;
                }
                if let Some((ticket, reply)) = self.waiting.remove(&id) {
                    self.tickets.remove(&ticket);
                    let _ = reply.send(Err(error.clone()));
                }
                self.observations.event(id, Err(error));
            }
            StreamEvent::Pong => {}
            StreamEvent::Released {
                alternative_address,
                hold_off,
            } => {
                tracing::debug!(peer = %self.peer, ?alternative_address, ?hold_off, "peer released the connection");
                match &self.config.retired {
                    Some(retired) => retired.released(now, alternative_address, hold_off),
                    None => self.retire(),
                }
            }
            StreamEvent::Closed { reason } => {
                self.retire();
                self.forget_observers();
                if self.closed.is_none() {
                    self.closed = Some(reason);
                }
            }
        }
    }

    /// Marks a client connection as taking no new requests.
    fn retire(&self) {
        if let Some(retired) = &self.config.retired {
            retired.retire();
        }
    }

    fn command(&mut self, command: Command) {
        let now = crate::clock::now();
        match command {
            Command::Request {
                ticket,
                message,
                params,
                reply,
                ..
            } => match self.conn.request(now, message, params) {
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
                message,
                params,
                reply,
                notifications,
                ..
            } => self.start_observation(now, ticket, message, params, reply, notifications),
            Command::Notification(notification) => self.send_notification(now, notification),
            Command::Cancel(ticket) => {
                if let Some(id) = self.tickets.remove(&ticket) {
                    self.waiting.remove(&id);
                    self.conn.cancel(id);
                } else {
                    self.end_observation(now, ticket, None);
                }
            }
            Command::Deregister(ticket, message) => {
                self.end_observation(now, ticket, message.map(|m| *m))
            }
            Command::ObserverCount(reply) => {
                let _ = reply.send(self.observer_count());
            }
            Command::Disconnect(_, reason) => {
                self.conn.release(now, None, None);
                self.conn.close(now, &reason);
            }
            Command::DisconnectIdentity(identity, reply) => {
                let matches = matches!(self.channel.peer_identity(),
                    Some(PeerIdentity::Psk(ref id)) if *id == identity);
                if matches {
                    self.conn.abort(now, "the peer's key was removed");
                }
                let _ = reply.send(usize::from(matches));
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats);
            }
            // What a connection holds is counted by its listener (server side) and is one
            // connection's worth on the client side: nothing a peer can grow.
            Command::Usage(reply) => {
                let _ = reply.send(Usage::default());
            }
            // Credentials and transmission parameters are per connection here, fixed at
            // connect time; retransmission parameters mean nothing on a reliable stream.
            Command::PeerCredentials(..) | Command::PeerParams(..) => {}
            Command::Shutdown => {
                self.conn.release(now, None, None);
                self.conn.close(now, "the context shut down");
            }
        }
    }

    fn dispatch(&mut self, now: Instant, id: IncomingId, message: Message) {
        let peer = self.peer;
        let Some(router) = self.config.router.clone() else {
            let _ = self
                .conn
                .respond(now, id, Message::new(message.ty, Code::NOT_FOUND));
            return;
        };
        let max_payload = self.max_payload(&message, false);
        let before = match self.config.blocks.lock() {
            Ok(mut blocks) => {
                let bert = self.bert(max_payload);
                blocks.before_handler(
                    now,
                    peer,
                    message,
                    router.oscore_server(),
                    max_payload,
                    bert,
                )
            }
            Err(_) => Err(Message::new(message.ty, Code::INTERNAL_SERVER_ERROR)),
        };
        let (message, exchange) = match before {
            Ok(ready) => ready,
            Err(reply) => {
                self.send_response(now, id, reply);
                return;
            }
        };
        let request = Request {
            peer,
            identity: self.channel.peer_identity(),
            oscore: exchange.oscore_identity(),
            message,
            params: Vec::new(),
            rest: None,
        };
        let ready = run_handler(
            router.dispatch(request),
            peer,
            self.config.handler_timeout,
            &self.command_tx,
            exchange,
            move |response, exchange| Command::Respond {
                id,
                response: response.into_message(),
                exchange: Box::new(exchange),
            },
        );
        if let Some((response, exchange)) = ready {
            self.answer(now, id, response.into_message(), exchange);
        }
    }

    /// Sends a handler's response: sliced into blocks when it is larger than the peer takes
    /// in one message (or the request asked for blocks), acknowledging the request's last
    /// Block1 block when it came block-wise.
    fn answer(
        &mut self,
        now: Instant,
        id: IncomingId,
        mut response: Message,
        exchange: BlockExchange,
    ) {
        let max_payload = self.max_payload(&response, exchange.oscore.is_some());
        // A peer without Block-Wise-Transfer in its CSM (RFC 8323 §5.3.2) cannot fetch a
        // body in blocks, unless it asked for them.
        let peer_blocks = self.conn.peer_csm().block_wise_transfer
            || exchange
                .request
                .options
                .contains(tern_proto::OptionNumber::BLOCK2);
        if !peer_blocks && response.payload.len() > max_payload {
            tracing::debug!(peer = %self.peer, size = response.payload.len(), "response too large for a peer without block-wise transfer");
            response = Message::new(response.ty, Code::INTERNAL_SERVER_ERROR);
            response.payload = b"the response is larger than your Max-Message-Size, and you do not do block-wise transfer".to_vec();
        }
        let mut response = match self.config.blocks.lock() {
            Ok(mut blocks) => blocks.slice(now, response, &exchange, max_payload),
            Err(_) => Message::new(response.ty, Code::INTERNAL_SERVER_ERROR),
        };
        self.observe_response(now, &exchange, &mut response);
        let oscore = self
            .config
            .router
            .as_deref()
            .and_then(Router::oscore_server);
        let response = match self.config.blocks.lock() {
            Ok(mut blocks) => blocks.seal(now, response, &exchange, oscore, max_payload),
            Err(_) => Message::new(response.ty, Code::INTERNAL_SERVER_ERROR),
        };
        self.send_response(now, id, response);
    }

    /// The largest payload a response like `message` may carry in one message to this peer;
    /// with `protected`, room is left for OSCORE's own bytes (the OSCORE option, the inner
    /// code and options, the AEAD tag).
    /// The BERT block size for this peer (RFC 8323 §6), when it does block-wise transfer and
    /// at least two 1024-byte units fit in a message to it (with one, ordinary 1024-byte
    /// blocks say the same).
    pub(super) fn bert(&self, max_payload: usize) -> Option<usize> {
        (self.conn.peer_csm().block_wise_transfer && max_payload >= 2048).then_some(max_payload)
    }

    pub(super) fn max_payload(&self, message: &Message, protected: bool) -> usize {
        let overhead = tern_proto::stream::frame::encoded_len(message) - message.payload.len();
        let oscore = if protected {
            crate::oscore::OSCORE_OVERHEAD
        } else {
            0
        };
        self.conn.max_send_size().saturating_sub(overhead + oscore)
    }

    fn send_response(&mut self, now: Instant, id: IncomingId, response: Message) {
        if let Err(e) = self.conn.respond(now, id, response) {
            tracing::warn!(peer = %self.peer, error = %e, "response not sent");
            // The request must not stay unanswered: tell the peer what went wrong.
            let _ = self.conn.respond(
                now,
                id,
                Message::new(tern_proto::MessageType::Con, Code::INTERNAL_SERVER_ERROR),
            );
        }
    }

    /// Whether the connection's CSM exchange completed.
    #[allow(dead_code)]
    pub(crate) fn is_established(&self) -> bool {
        self.established && self.conn.state() == StreamState::Open
    }
}

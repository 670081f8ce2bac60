//! The [`Context`]: owns the endpoints (one UDP socket and driver task each), the stream
//! listeners and client connections, the router, and the client API. Built by
//! [`ContextBuilder`] (`builder.rs`); the client key store is in `keys.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tern_proto::endpoint::{RequestError, RequestParams, Stats};
use tern_proto::uri::{CoapUri, Host, Scheme};
use tern_proto::{Code, Endpoint, EndpointConfig, Message, TransmissionParams};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use tern_tls::{
    DtlsContext, DtlsLayer, DtlsLimits, DtlsSettings, PkiSettings, PlainLayer, Psk, SecurityLayer,
    TlsContext, TlsSettings,
};

use crate::driver::{Command, Driver};
use crate::error::Error;
use crate::message::{RequestOptions, Response};
use crate::netsim::SimNetwork;
use crate::request::RequestBuilder;
use crate::router::Router;
use crate::udp::DatagramSocket;
use crate::usage::Usage;

mod builder;
mod keys;

use crate::session::{SessionBuilder, SessionEvent, SessionState, DEFAULT_MTU};
use crate::stream::{self, default_server_config, Listener, Retirement, StreamLimits, StreamSetup};
use builder::{spawn_driver, Sockets};
pub use builder::{ContextBuilder, DEFAULT_HANDLER_TIMEOUT};
use tern_proto::stream::StreamConfig;
use tokio::sync::broadcast;

pub(crate) struct EndpointHandle {
    pub(crate) local: SocketAddr,
    /// DTLS (coaps://) rather than plain UDP (coap://).
    secure: bool,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Set by a stream connection's driver once the connection takes no new requests
    /// (released or closed), so that the next request opens a new one.
    pub(crate) retired: Arc<Retirement>,
}

impl EndpointHandle {
    pub(crate) fn new(
        local: SocketAddr,
        secure: bool,
        commands: mpsc::UnboundedSender<Command>,
        task: JoinHandle<()>,
        retired: Arc<Retirement>,
    ) -> Self {
        EndpointHandle {
            local,
            secure,
            commands,
            task: Mutex::new(Some(task)),
            retired,
        }
    }
}

struct Inner {
    config: EndpointConfig,
    /// Session events for every endpoint; bounded, so a slow subscriber loses the oldest.
    events: broadcast::Sender<SessionEvent>,
    /// Client-side DTLS, when the context has a PSK.
    client_dtls: Option<DtlsContext>,
    /// The settings `client_dtls` was made from (suites, timers), the base of sessions' own.
    client_dtls_settings: DtlsSettings,
    /// The client key store: credentials per peer, used instead of `client_dtls`.
    peer_keys: Mutex<HashMap<SocketAddr, DtlsContext>>,
    /// The endpoints of live sessions (each session owns its own).
    sessions: Mutex<Vec<Weak<EndpointHandle>>>,
    dtls_limits: DtlsLimits,
    handler_timeout: Duration,
    next_ticket: std::sync::atomic::AtomicU64,
    router: Option<Arc<Router>>,
    bound: Vec<Arc<EndpointHandle>>,
    /// Ephemeral client endpoints, made on first use per address family.
    ephemeral: Mutex<Vec<Arc<EndpointHandle>>>,
    /// Per-peer transmission parameters, applied to endpoints made later too.
    peer_params: Mutex<Vec<(SocketAddr, TransmissionParams)>>,
    /// What stream connections (coap+tcp://, coaps+tcp://) share.
    stream: Arc<StreamSetup>,
    /// Listening stream sockets.
    listeners: Vec<Listener>,
    /// Client stream connections, one per peer and security, made on first use.
    stream_clients: Mutex<HashMap<(SocketAddr, bool), Arc<EndpointHandle>>>,
    /// Held while a client stream connection is being set up.
    connecting: tokio::sync::Mutex<()>,
    /// Client-side TLS with the context's credentials, if it has any.
    tls_client: Option<TlsContext>,
    /// The settings `tls_client` was made from, the base of per-peer and sessions' own.
    tls_client_settings: TlsSettings,
    /// Where UDP sockets are bound: the operating system, or a simulated network.
    sockets: Sockets,
}

impl Drop for Inner {
    /// The context is gone: its stream connections and listeners end too (its datagram
    /// drivers end when their command channels close).
    fn drop(&mut self) {
        self.stream.shut_down();
    }
}

/// Session events kept for a slow subscriber before the oldest are dropped.
const EVENT_BACKLOG: usize = 1024;

/// A CoAP context: endpoints, their router, and the client API.
///
/// ```no_run
/// # async fn demo() -> Result<(), tern::Error> {
/// use tern::{Context, Response, Router};
/// let server = Context::builder()
///     .bind("127.0.0.1:5683".parse().unwrap())
///     .router(Router::new().get("/hello", |_| async { Response::text("hi") }))
///     .build()
///     .await?;
/// let client = Context::client();
/// let response = client.get("coap://127.0.0.1/hello").send().await?;
/// assert_eq!(response.payload(), b"hi");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

impl Context {
    /// Starts building a context.
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// A client-only context; sockets are bound on first use.
    pub fn client() -> Context {
        let events = broadcast::channel(EVENT_BACKLOG).0;
        let stream = Arc::new(StreamSetup::new(
            None,
            DEFAULT_HANDLER_TIMEOUT,
            events.clone(),
            default_server_config(),
            StreamConfig::default(),
            StreamLimits::default(),
        ));
        Context {
            inner: Arc::new(Inner {
                stream,
                listeners: Vec::new(),
                stream_clients: Mutex::new(HashMap::new()),
                connecting: tokio::sync::Mutex::new(()),
                tls_client: None,
                tls_client_settings: TlsSettings::default(),
                events,
                next_ticket: Default::default(),
                handler_timeout: DEFAULT_HANDLER_TIMEOUT,
                client_dtls: None,
                client_dtls_settings: DtlsSettings::default(),
                peer_keys: Mutex::new(HashMap::new()),
                sessions: Mutex::new(Vec::new()),
                dtls_limits: DtlsLimits::default(),
                config: EndpointConfig::default(),
                router: None,
                bound: Vec::new(),
                ephemeral: Mutex::new(Vec::new()),
                peer_params: Mutex::new(Vec::new()),
                sockets: Sockets::Os,
            }),
        }
    }

    /// Subscribes to session events (handshakes, establishment, closes, idle frees) of every
    /// endpoint of this context.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Starts building a session with the peer of `uri` (coap:// or coaps://), with its own
    /// credentials and parameters if given.
    pub fn session(&self, uri: &str) -> SessionBuilder {
        SessionBuilder {
            context: self.clone(),
            uri: CoapUri::parse(uri),
            psk: None,
            pki: None,
            params: None,
            dtls: None,
            local: None,
            mtu: DEFAULT_MTU,
        }
    }

    /// Closes every DTLS session whose peer authenticated with this PSK identity (after its
    /// key was removed from the server's store, say); returns how many were closed.
    pub async fn close_sessions_with_identity(&self, identity: &[u8]) -> usize {
        let mut closed = 0;
        for endpoint in self.all_endpoints().into_iter().filter(|e| e.secure) {
            let (tx, rx) = oneshot::channel();
            if endpoint
                .commands
                .send(Command::DisconnectIdentity(identity.to_vec(), tx))
                .is_ok()
            {
                closed += rx.await.unwrap_or(0);
            }
        }
        closed
    }

    /// The UDP addresses this context listens on (coap:// and coaps://).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.bound.iter().map(|e| e.local).collect()
    }

    /// The addresses this context listens on for one scheme.
    pub fn listen_addrs(&self, scheme: Scheme) -> Vec<SocketAddr> {
        match scheme {
            Scheme::Coap | Scheme::Coaps => {
                let secure = scheme == Scheme::Coaps;
                let bound = self.inner.bound.iter().filter(|e| e.secure == secure);
                bound.map(|e| e.local).collect()
            }
            Scheme::CoapTcp | Scheme::CoapsTcp => {
                let secure = scheme == Scheme::CoapsTcp;
                let listening = self.inner.listeners.iter().filter(|l| l.secure == secure);
                listening.map(|l| l.local).collect()
            }
        }
    }

    /// Stream connections open now on this context's listeners.
    pub fn open_connections(&self) -> usize {
        self.inner
            .listeners
            .iter()
            .map(|l| l.open_connections())
            .sum()
    }

    /// The client connection to a stream peer: the open one, else a new one.
    pub(crate) async fn stream_endpoint(
        &self,
        peer: SocketAddr,
        secure: bool,
    ) -> Result<Arc<EndpointHandle>, Error> {
        if matches!(self.inner.sockets, Sockets::Sim(..)) {
            return Err(Error::Config(
                "a context on a simulated network cannot connect over TCP or TLS".into(),
            ));
        }
        let key = (peer, secure);
        let open = |clients: &HashMap<_, Arc<EndpointHandle>>| {
            clients
                .get(&key)
                .filter(|e| !e.commands.is_closed() && !e.retired.is_retired())
                .cloned()
        };
        if let Some(e) = open(
            &*self
                .inner
                .stream_clients
                .lock()
                .map_err(|_| Error::Closed)?,
        ) {
            return Ok(e);
        }
        // One connection set-up at a time, so that concurrent first requests to a peer share
        // one connection rather than each opening their own.
        let _connecting = self.inner.connecting.lock().await;
        if let Some(e) = open(
            &*self
                .inner
                .stream_clients
                .lock()
                .map_err(|_| Error::Closed)?,
        ) {
            return Ok(e);
        }
        // The last connection's Release (RFC 8323 §5.5): wait out its Hold-Off, and go to its
        // Alternative-Address if it gave one.
        let advice = {
            let clients = self
                .inner
                .stream_clients
                .lock()
                .map_err(|_| Error::Closed)?;
            clients.get(&key).and_then(|e| e.retired.advice())
        };
        let mut target = peer;
        if let Some(advice) = advice {
            let now = crate::clock::now();
            if let Some(wait) = advice
                .not_before
                .and_then(|at| at.checked_duration_since(now))
            {
                return Err(Error::Request(RequestError::ChannelFailed(format!(
                    "{peer} released the connection and asked for {:.1} s more before a new one (Hold-Off)",
                    wait.as_secs_f64()
                ))));
            }
            if let Some(alternative) = advice.alternative {
                target = resolve_alternative(&alternative, peer).await?;
                tracing::debug!(%peer, %target, "reconnecting to the Alternative-Address");
            }
        }
        let tls = if secure {
            Some(self.client_tls_for(peer, None)?)
        } else {
            None
        };
        let handle = stream::connect(target, None, tls.as_ref(), &self.inner.stream, None).await?;
        let mut clients = self
            .inner
            .stream_clients
            .lock()
            .map_err(|_| Error::Closed)?;
        clients.insert(key, handle.clone());
        Ok(handle)
    }

    /// What a stream session's own connection is set up with.
    pub(crate) fn stream_setup(&self) -> &StreamSetup {
        &self.inner.stream
    }

    /// Registers a session's own endpoint, so that shutdown and stats reach it.
    pub(crate) fn track_session_endpoint(&self, handle: &Arc<EndpointHandle>) {
        if let Ok(mut sessions) = self.inner.sessions.lock() {
            sessions.retain(|s| s.strong_count() > 0);
            sessions.push(Arc::downgrade(handle));
        }
    }

    /// A GET request builder.
    pub fn get(&self, uri: &str) -> RequestBuilder {
        self.request(Code::GET, uri)
    }

    /// A POST request builder.
    pub fn post(&self, uri: &str) -> RequestBuilder {
        self.request(Code::POST, uri)
    }

    /// A PUT request builder.
    pub fn put(&self, uri: &str) -> RequestBuilder {
        self.request(Code::PUT, uri)
    }

    /// A DELETE request builder.
    pub fn delete(&self, uri: &str) -> RequestBuilder {
        self.request(Code::DELETE, uri)
    }

    /// A FETCH request builder.
    pub fn fetch(&self, uri: &str) -> RequestBuilder {
        self.request(Code::FETCH, uri)
    }

    /// A PATCH request builder.
    pub fn patch(&self, uri: &str) -> RequestBuilder {
        self.request(Code::PATCH, uri)
    }

    /// An iPATCH request builder.
    pub fn ipatch(&self, uri: &str) -> RequestBuilder {
        self.request(Code::IPATCH, uri)
    }

    /// A request builder for an already parsed URI.
    pub fn request_uri(&self, method: Code, uri: CoapUri) -> RequestBuilder {
        RequestBuilder {
            context: self.clone(),
            method,
            uri: Ok(uri),
            payload: Vec::new(),
            options: Vec::new(),
            request_options: RequestOptions::default(),
            session: None,
            oscore: None,
            proxy: None,
            progress: None,
        }
    }

    /// A request builder for any method.
    pub fn request(&self, method: Code, uri: &str) -> RequestBuilder {
        RequestBuilder {
            session: None,
            oscore: None,
            proxy: None,
            progress: None,
            context: self.clone(),
            method,
            uri: CoapUri::parse(uri),
            payload: Vec::new(),
            options: Vec::new(),
            request_options: RequestOptions::default(),
        }
    }

    /// Sends a prepared message (code, options, payload; type CON or NON) to a peer over plain
    /// UDP and waits for the response.
    pub async fn send(
        &self,
        peer: SocketAddr,
        message: Message,
        params: RequestParams,
    ) -> Result<Response, Error> {
        self.send_via(peer, false, message, params).await
    }

    /// The same over DTLS (coaps://), with this context's PSK; the session is set up on first
    /// use and kept for later requests.
    pub async fn send_secure(
        &self,
        peer: SocketAddr,
        message: Message,
        params: RequestParams,
    ) -> Result<Response, Error> {
        self.send_via(peer, true, message, params).await
    }

    /// Sends a prepared message to a peer over the transport of `scheme`: UDP, DTLS (with
    /// this context's credentials), or this context's TCP or TLS connection to the peer
    /// (opened on first use). Waits for the response.
    pub async fn send_over(
        &self,
        scheme: Scheme,
        peer: SocketAddr,
        message: Message,
        params: RequestParams,
    ) -> Result<Response, Error> {
        let endpoint = match scheme {
            Scheme::Coap => self.endpoint_for(peer, false)?,
            Scheme::Coaps => self.endpoint_for(peer, true)?,
            Scheme::CoapTcp => self.stream_endpoint(peer, false).await?,
            Scheme::CoapsTcp => self.stream_endpoint(peer, true).await?,
        };
        self.send_on(&endpoint, peer, message, params).await
    }

    pub(crate) async fn send_via(
        &self,
        peer: SocketAddr,
        secure: bool,
        message: Message,
        params: RequestParams,
    ) -> Result<Response, Error> {
        let endpoint = self.endpoint_for(peer, secure)?;
        self.send_on(&endpoint, peer, message, params).await
    }

    /// A fresh ticket naming a request to its driver.
    pub(crate) fn next_ticket(&self) -> u64 {
        self.inner
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Observers registered with this context's bound endpoints and the connections its
    /// listeners accepted (server role, RFC 7641).
    pub async fn observer_count(&self) -> usize {
        let mut total: usize = self.inner.listeners.iter().map(|l| l.observers()).sum();
        for endpoint in &self.inner.bound {
            let (reply, count) = oneshot::channel();
            if endpoint
                .commands
                .send(Command::ObserverCount(reply))
                .is_ok()
            {
                total += count.await.unwrap_or(0);
            }
        }
        total
    }

    /// Sends on a given endpoint (a session's).
    pub(crate) async fn send_on(
        &self,
        endpoint: &Arc<EndpointHandle>,
        peer: SocketAddr,
        message: Message,
        params: RequestParams,
    ) -> Result<Response, Error> {
        let (reply, response) = oneshot::channel();
        let ticket = self
            .inner
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        endpoint
            .commands
            .send(Command::Request {
                ticket,
                peer,
                message,
                params,
                reply,
            })
            .map_err(|_| Error::Closed)?;
        // If this future is dropped before the answer, the request is cancelled: no more
        // retransmissions for a caller who is gone.
        let mut guard = CancelOnDrop {
            commands: &endpoint.commands,
            ticket,
            armed: true,
        };
        let result = response.await;
        guard.armed = false;
        let message = result.map_err(|_| Error::Closed)??;
        Ok(Response::from_message(message))
    }

    /// Uses other transmission parameters (ACK_TIMEOUT, MAX_RETRANSMIT, NSTART, ...) with one
    /// peer from now on, on every endpoint of this context; the context's own stay the default.
    pub fn set_peer_params(
        &self,
        peer: SocketAddr,
        params: TransmissionParams,
    ) -> Result<(), Error> {
        params
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        for endpoint in self.all_endpoints() {
            let _ = endpoint.commands.send(Command::PeerParams(peer, params));
        }
        Ok(())
    }

    /// Message-layer counters summed over every endpoint.
    pub async fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for endpoint in self.all_endpoints() {
            let (tx, rx) = oneshot::channel();
            if endpoint.commands.send(Command::Stats(tx)).is_ok() {
                if let Ok(s) = rx.await {
                    total += s;
                }
            }
        }
        total
    }

    /// What the context holds for its peers now, against the caps that bound it, summed over
    /// its endpoints and listeners: see [`Usage`].
    pub async fn usage(&self) -> Usage {
        let mut total = Usage::default();
        for endpoint in self.all_endpoints() {
            let (tx, rx) = oneshot::channel();
            if endpoint.commands.send(Command::Usage(tx)).is_ok() {
                if let Ok(u) = rx.await {
                    total += u;
                }
            }
        }
        for listener in &self.inner.listeners {
            total += listener.usage();
        }
        total
    }

    /// Stops every endpoint after sending what is queued; waiting requests fail with
    /// [`Error::Closed`].
    pub async fn shutdown(&self) {
        self.inner.stream.shut_down();
        for listener in &self.inner.listeners {
            listener.stopped().await;
        }
        for endpoint in self.all_endpoints() {
            let _ = endpoint.commands.send(Command::Shutdown);
            let task = endpoint.task.lock().ok().and_then(|mut t| t.take());
            if let Some(task) = task {
                let _ = task.await;
            }
        }
    }

    fn all_endpoints(&self) -> Vec<Arc<EndpointHandle>> {
        let mut all = self.inner.bound.clone();
        if let Ok(e) = self.inner.ephemeral.lock() {
            all.extend(e.iter().cloned());
        }
        if let Ok(clients) = self.inner.stream_clients.lock() {
            all.extend(clients.values().cloned());
        }
        if let Ok(mut sessions) = self.inner.sessions.lock() {
            sessions.retain(|s| s.strong_count() > 0);
            all.extend(sessions.iter().filter_map(Weak::upgrade));
        }
        all
    }

    /// Sends an event to subscribers (nobody listening is fine).
    pub(crate) fn emit(&self, event: SessionEvent) {
        let _ = self.inner.events.send(event);
    }

    /// A session's own endpoint: its own socket (bound to `local`, or ephemeral) and driver,
    /// which keeps `state` up to date.
    pub(crate) fn spawn_session_endpoint(
        &self,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        client: Option<DtlsContext>,
        state: Arc<Mutex<SessionState>>,
    ) -> Result<Arc<EndpointHandle>, Error> {
        let local = local.unwrap_or_else(|| unspecified(peer));
        let socket = self.inner.sockets.bind(local)?;
        let (config, router, timeout, events) = (
            &self.inner.config,
            self.inner.router.clone(),
            self.inner.handler_timeout,
            self.inner.events.clone(),
        );
        let handle = match client {
            Some(ctx) => {
                let layer = DtlsLayer::new(Some(ctx), None, self.inner.dtls_limits)?;
                spawn_driver(socket, config, router, timeout, layer, events, Some(state))?
            }
            None => {
                let layer = PlainLayer::default();
                spawn_driver(socket, config, router, timeout, layer, events, Some(state))?
            }
        };
        if let Ok(mut sessions) = self.inner.sessions.lock() {
            sessions.retain(|s| s.strong_count() > 0);
            sessions.push(Arc::downgrade(&handle));
        }
        Ok(handle)
    }

    /// A bound endpoint of the peer's address family, else an ephemeral one made on demand.
    pub(crate) fn endpoint_for(
        &self,
        peer: SocketAddr,
        secure: bool,
    ) -> Result<Arc<EndpointHandle>, Error> {
        if secure && self.inner.client_dtls.is_none() {
            let stored = self
                .inner
                .peer_keys
                .lock()
                .map_err(|_| Error::Closed)?
                .contains_key(&peer);
            if !stored {
                return Err(Error::NoCredentials);
            }
        }
        let same_family = |e: &&Arc<EndpointHandle>| {
            e.local.is_ipv4() == peer.is_ipv4() && e.secure == secure && !e.commands.is_closed()
        };
        if let Some(e) = self.inner.bound.iter().find(same_family) {
            return Ok(e.clone());
        }
        let mut ephemeral = self.inner.ephemeral.lock().map_err(|_| Error::Closed)?;
        if let Some(e) = ephemeral.iter().find(same_family) {
            return Ok(e.clone());
        }
        let socket = self.inner.sockets.bind(unspecified(peer))?;
        let (config, router, timeout, events) = (
            &self.inner.config,
            self.inner.router.clone(),
            self.inner.handler_timeout,
            self.inner.events.clone(),
        );
        let handle = if secure {
            let layer =
                DtlsLayer::new(self.inner.client_dtls.clone(), None, self.inner.dtls_limits)?;
            let handle = spawn_driver(socket, config, router, timeout, layer, events, None)?;
            if let Ok(keys) = self.inner.peer_keys.lock() {
                for (peer, ctx) in keys.iter() {
                    let credentials = Some(Box::new(ctx.clone()));
                    let _ = handle
                        .commands
                        .send(Command::PeerCredentials(*peer, credentials));
                }
            }
            handle
        } else {
            let layer = PlainLayer::default();
            spawn_driver(socket, config, router, timeout, layer, events, None)?
        };
        if let Ok(all) = self.inner.peer_params.lock() {
            for (peer, params) in all.iter() {
                let _ = handle.commands.send(Command::PeerParams(*peer, *params));
            }
        }
        ephemeral.push(handle.clone());
        Ok(handle)
    }
}

/// The unspecified address of the peer's family, any port.
fn unspecified(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

struct CancelOnDrop<'a> {
    commands: &'a mpsc::UnboundedSender<Command>,
    ticket: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.commands.send(Command::Cancel(self.ticket));
        }
    }
}

/// Resolves a Release's Alternative-Address (`host`, `host:port` or `[v6]:port`; the port of
/// `peer` when it names none).
async fn resolve_alternative(alternative: &str, peer: SocketAddr) -> Result<SocketAddr, Error> {
    if let Ok(addr) = alternative.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let host = alternative.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, peer.port()));
    }
    let with_port = if alternative.contains(':') {
        alternative.to_string()
    } else {
        format!("{alternative}:{}", peer.port())
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(with_port)
        .await
        .map_err(|source| Error::Resolve {
            host: alternative.to_string(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4() == peer.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| Error::NoAddress(alternative.to_string()))
}

/// Resolves the destination of a URI. Names that resolve to both families use IPv4 first,
/// which is where most servers on a name like `localhost` listen.
pub async fn resolve(uri: &CoapUri) -> Result<SocketAddr, Error> {
    let port = uri.effective_port();
    match &uri.host {
        Host::Ipv4(ip) => Ok(SocketAddr::new(IpAddr::V4(*ip), port)),
        Host::Ipv6(ip) => Ok(SocketAddr::new(IpAddr::V6(*ip), port)),
        Host::Name(name) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|source| Error::Resolve {
                    host: name.clone(),
                    source,
                })?
                .collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| Error::NoAddress(name.clone()))
        }
    }
}

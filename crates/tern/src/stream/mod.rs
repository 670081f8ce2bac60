//! CoAP over TCP and TLS (RFC 8323): `coap+tcp://` and `coaps+tcp://`. Listeners accept
//! connections for a context's router; client connections are made on first use per peer and
//! kept for later requests, or owned by a [`Session`](crate::Session). Each connection is one
//! task driving a sans-IO [`StreamConnection`](tern_proto::stream::StreamConnection).

mod driver;
mod listener;
mod observe;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_proto::stream::{StreamConfig, StreamConnection, StreamRole};
use tern_tls::{PlainStream, StreamSecurity, TlsChannel, TlsContext};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::context::EndpointHandle;
use crate::error::Error;
use crate::handling::{seed, BlockTables};
use crate::router::Router;
use crate::session::{SessionEvent, SessionState};
use crate::usage::Usage;
use driver::{StreamDriver, StreamDriverConfig};
use listener::ConnectionCounts;

/// Caps on a listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Connections open at once (default 16,384); past it new ones are closed at once.
    pub max_connections: usize,
    /// Connections whose handshake (TLS, then the CSM exchange) is not over (default 256);
    /// past it new ones are closed at once, so slow or silent peers cannot hold every slot.
    pub max_handshaking: usize,
    /// How long a client waits for the TCP connection to be set up (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_connections: 16_384,
            max_handshaking: 256,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// How a server connection is configured unless the context says otherwise: as a client's,
/// but released after 300 s without traffic (the idle time of DTLS server sessions).
pub fn default_server_config() -> StreamConfig {
    StreamConfig {
        idle_timeout: Some(Duration::from_secs(300)),
        ..StreamConfig::default()
    }
}

/// Everything a context's stream connections share.
pub(crate) struct StreamSetup {
    pub(crate) router: Option<Arc<Router>>,
    pub(crate) handler_timeout: Duration,
    pub(crate) events: broadcast::Sender<SessionEvent>,
    pub(crate) server_config: StreamConfig,
    pub(crate) client_config: StreamConfig,
    pub(crate) limits: StreamLimits,
    /// Set when the context shuts down: every connection and listener of it ends.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// The TLS context of coaps+tcp:// listeners.
    pub(crate) tls_server: Option<TlsContext>,
}

impl StreamSetup {
    pub(crate) fn new(
        router: Option<Arc<Router>>,
        handler_timeout: Duration,
        events: broadcast::Sender<SessionEvent>,
        server_config: StreamConfig,
        client_config: StreamConfig,
        limits: StreamLimits,
    ) -> Self {
        StreamSetup {
            router,
            handler_timeout,
            events,
            server_config,
            client_config,
            limits,
            shutdown: tokio::sync::watch::channel(false).0,
            tls_server: None,
        }
    }

    /// Ends every connection and listener made with this setup.
    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// The channel for a connection a listener accepted.
    pub(crate) fn server_channel(
        &self,
        secure: bool,
        now: Instant,
    ) -> Result<Box<dyn StreamSecurity>, Error> {
        if !secure {
            return Ok(Box::new(PlainStream::new()));
        }
        let ctx = self.tls_server.as_ref().ok_or(Error::NoCredentials)?;
        Ok(Box::new(TlsChannel::accept(ctx, now)?))
    }
}

/// What a client connection leaves for its handle: whether it still takes new requests, and
/// what the peer's Release asked of the next connection (RFC 8323 §5.5).
#[derive(Default)]
pub(crate) struct Retirement {
    retired: std::sync::atomic::AtomicBool,
    release: Mutex<Option<ReleaseAdvice>>,
}

/// A peer's Release: where and when to reconnect.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReleaseAdvice {
    /// Not before this (Hold-Off).
    pub(crate) not_before: Option<Instant>,
    /// There instead (Alternative-Address: host, or host:port).
    pub(crate) alternative: Option<String>,
}

impl Retirement {
    /// The connection takes no new requests.
    pub(crate) fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The peer released the connection, with its advice for the next one.
    pub(crate) fn released(
        &self,
        now: Instant,
        alternative: Option<String>,
        hold_off: Option<Duration>,
    ) {
        self.retire();
        if let Ok(mut release) = self.release.lock() {
            *release = Some(ReleaseAdvice {
                not_before: hold_off.map(|d| now + d),
                alternative,
            });
        }
    }

    /// What the peer's Release asked, if it sent one.
    pub(crate) fn advice(&self) -> Option<ReleaseAdvice> {
        self.release.lock().ok()?.clone()
    }
}

/// What a session's own connection keeps up to date for the [`Session`](crate::Session).
pub(crate) struct SessionLink {
    pub(crate) state: Arc<Mutex<SessionState>>,
    /// The peer's Max-Message-Size, from its CSM.
    pub(crate) peer_max_message_size: Arc<std::sync::atomic::AtomicU32>,
}

/// A listening socket and its accept task.
pub(crate) struct Listener {
    pub(crate) local: SocketAddr,
    pub(crate) secure: bool,
    counts: Arc<ConnectionCounts>,
    /// The listener's block-wise state, shared by its connections so that its caps hold for
    /// all of them.
    blocks: Arc<Mutex<BlockTables>>,
    limits: StreamLimits,
    /// Each connection's cap on its observers (the router's).
    observers_per_connection: usize,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Listener {
    /// Connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.counts.open()
    }

    /// Observers on the connections open now (RFC 7641).
    pub(crate) fn observers(&self) -> usize {
        self.counts.observers()
    }

    /// What the listener's connections hold against its caps.
    pub(crate) fn usage(&self) -> Usage {
        let mut usage = self.counts.usage(
            &self.limits,
            driver::MAX_PENDING_OUTPUT,
            self.observers_per_connection,
        );
        if let Ok(blocks) = self.blocks.lock() {
            let (block1, block2) = blocks.usage();
            usage.block1_transfers = block1;
            usage.block2_cached_bytes = block2;
        }
        usage
    }

    /// Waits until the accept task has ended (after [`StreamSetup::shut_down`]), so that the
    /// port is free again.
    pub(crate) async fn stopped(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

/// Listens on `addr` for coap+tcp:// (or coaps+tcp:// when `secure`).
pub(crate) fn listen(
    addr: SocketAddr,
    secure: bool,
    setup: Arc<StreamSetup>,
) -> Result<Listener, Error> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let listener = TcpListener::from_std(socket.into())?;
    let local = listener.local_addr()?;
    let counts = Arc::new(ConnectionCounts::default());
    let blocks = Arc::new(Mutex::new(BlockTables::for_streams(
        setup.router.as_deref(),
    )));
    let limits = setup.limits;
    let observers_per_connection = setup
        .router
        .as_ref()
        .map_or(0, |r| r.observe_config().max_total);
    let task = tokio::spawn(listener::accept_loop(
        listener,
        setup,
        secure,
        counts.clone(),
        blocks.clone(),
    ));
    tracing::debug!(%local, secure, "stream listener started");
    Ok(Listener {
        local,
        secure,
        counts,
        blocks,
        limits,
        observers_per_connection,
        task: Mutex::new(Some(task)),
    })
}

/// Opens a client connection to `peer` (over TLS with `tls`) and starts its driver.
pub(crate) async fn connect(
    peer: SocketAddr,
    local: Option<SocketAddr>,
    tls: Option<&TlsContext>,
    setup: &StreamSetup,
    session: Option<SessionLink>,
) -> Result<Arc<EndpointHandle>, Error> {
    let secure = tls.is_some();
    let socket = match local {
        Some(local) => {
            let socket = if local.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(local)?;
            tokio::time::timeout(setup.limits.connect_timeout, socket.connect(peer)).await
        }
        None => tokio::time::timeout(setup.limits.connect_timeout, TcpStream::connect(peer)).await,
    };
    let socket = match socket {
        Ok(Ok(socket)) => socket,
        Ok(Err(e)) => {
            return Err(Error::Request(
                tern_proto::endpoint::RequestError::ChannelFailed(format!(
                    "cannot connect to {peer}: {e}"
                )),
            ))
        }
        Err(_) => {
            return Err(Error::Request(
                tern_proto::endpoint::RequestError::ChannelFailed(format!(
                    "cannot connect to {peer}: no answer within {:?}",
                    setup.limits.connect_timeout
                )),
            ))
        }
    };
    let _ = socket.set_nodelay(true);
    let local = socket.local_addr()?;
    let now = crate::clock::now();
    let channel: Box<dyn StreamSecurity> = match tls {
        Some(ctx) => Box::new(TlsChannel::connect(ctx, now)?),
        None => Box::new(PlainStream::new()),
    };
    let conn = StreamConnection::new(StreamRole::Client, setup.client_config.clone(), now, seed());
    let (tx, rx) = mpsc::unbounded_channel();
    let retired = Arc::new(Retirement::default());
    let config = StreamDriverConfig {
        retired: Some(retired.clone()),
        router: setup.router.clone(),
        handler_timeout: setup.handler_timeout,
        events: setup.events.clone(),
        session,
        blocks: Arc::new(Mutex::new(BlockTables::for_streams(
            setup.router.as_deref(),
        ))),
        slot: None,
        server: false,
        shutdown: setup.shutdown.subscribe(),
    };
    let driver = StreamDriver::new(socket, conn, channel, rx, tx.clone(), config, local, peer);
    let task = tokio::spawn(driver.run());
    tracing::debug!(%local, %peer, secure, "stream connection opened");
    Ok(Arc::new(EndpointHandle::new(
        local, secure, tx, task, retired,
    )))
}

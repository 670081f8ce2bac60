//! [`ContextBuilder`]: binds the sockets and listeners and starts their drivers.

use super::*;

/// How long a handler may run before its request is answered 5.03 (default).
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds a [`Context`].
pub struct ContextBuilder {
    binds: Vec<SocketAddr>,
    dtls_binds: Vec<SocketAddr>,
    dtls_server: Option<DtlsSettings>,
    dtls_client: DtlsSettings,
    dtls_limits: DtlsLimits,
    router: Option<Router>,
    config: EndpointConfig,
    handler_timeout: Duration,
    tcp_binds: Vec<SocketAddr>,
    tls_binds: Vec<SocketAddr>,
    tls_server: Option<TlsSettings>,
    tls_client: Option<TlsSettings>,
    stream_client: StreamConfig,
    stream_server: StreamConfig,
    stream_limits: StreamLimits,
    sockets: Sockets,
}

impl Default for ContextBuilder {
    fn default() -> Self {
        ContextBuilder {
            binds: Vec::new(),
            dtls_binds: Vec::new(),
            dtls_server: None,
            dtls_client: DtlsSettings::default(),
            dtls_limits: DtlsLimits::default(),
            router: None,
            config: EndpointConfig::default(),
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
            tcp_binds: Vec::new(),
            tls_binds: Vec::new(),
            tls_server: None,
            tls_client: None,
            stream_client: StreamConfig::default(),
            stream_server: default_server_config(),
            stream_limits: StreamLimits::default(),
            sockets: Sockets::Os,
        }
    }
}

impl ContextBuilder {
    /// Listens on a UDP address (repeatable; port 0 for an ephemeral port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.binds.push(addr);
        self
    }

    /// Listens for DTLS (coaps://) on a UDP address (repeatable); needs
    /// [`dtls_server`](Self::dtls_server) settings.
    pub fn bind_dtls(mut self, addr: SocketAddr) -> Self {
        self.dtls_binds.push(addr);
        self
    }

    /// Server-side DTLS settings: the PSK store and identity hint, cipher suites, MTU.
    pub fn dtls_server(mut self, settings: DtlsSettings) -> Self {
        self.dtls_server = Some(settings);
        self
    }

    /// The PSK this context's clients use for coaps:// (checked before any traffic).
    pub fn psk(mut self, psk: Psk) -> Self {
        self.dtls_client.psk = Some(psk);
        self
    }

    /// Certificates this context's clients use for coaps:// (and how servers are verified).
    pub fn pki(mut self, pki: PkiSettings) -> Self {
        self.dtls_client.pki = Some(pki);
        self
    }

    /// Client-side DTLS settings (handshake time-out, cipher suites, MTU); a PSK or
    /// certificates given here, or with [`psk`](Self::psk) or [`pki`](Self::pki), enable
    /// coaps://.
    pub fn dtls_client(mut self, settings: DtlsSettings) -> Self {
        let psk = settings.psk.clone().or(self.dtls_client.psk.take());
        let pki = settings.pki.clone().or(self.dtls_client.pki.take());
        self.dtls_client = DtlsSettings {
            psk,
            pki,
            ..settings
        };
        self
    }

    /// Caps on DTLS channels and handshakes per endpoint.
    pub fn dtls_limits(mut self, limits: DtlsLimits) -> Self {
        self.dtls_limits = limits;
        self
    }

    /// Listens for coap+tcp:// on a TCP address (repeatable; port 0 for an ephemeral port).
    pub fn bind_tcp(mut self, addr: SocketAddr) -> Self {
        self.tcp_binds.push(addr);
        self
    }

    /// Listens for coaps+tcp:// (TLS) on a TCP address (repeatable); needs
    /// [`tls_server`](Self::tls_server) settings, or takes the credentials of
    /// [`dtls_server`](Self::dtls_server).
    pub fn bind_tls(mut self, addr: SocketAddr) -> Self {
        self.tls_binds.push(addr);
        self
    }

    /// Server-side TLS settings for coaps+tcp:// (PSK store, certificates, versions, ALPN).
    pub fn tls_server(mut self, settings: TlsSettings) -> Self {
        self.tls_server = Some(settings);
        self
    }

    /// Client-side TLS settings for coaps+tcp:// (versions, suites, ALPN, time-outs). Without
    /// credentials of their own they take the context's ([`psk`](Self::psk),
    /// [`pki`](Self::pki)), which coaps:// and coaps+tcp:// share.
    pub fn tls_client(mut self, settings: TlsSettings) -> Self {
        self.tls_client = Some(settings);
        self
    }

    /// Settings of the stream connections this context opens as a client (Max-Message-Size,
    /// keepalive, time-outs).
    pub fn stream_client_config(mut self, config: StreamConfig) -> Self {
        self.stream_client = config;
        self
    }

    /// Settings of the stream connections this context's listeners accept (by default as a
    /// client's, released after 300 s idle: [`default_server_config`]).
    pub fn stream_server_config(mut self, config: StreamConfig) -> Self {
        self.stream_server = config;
        self
    }

    /// Caps on the connections each listener holds.
    pub fn stream_limits(mut self, limits: StreamLimits) -> Self {
        self.stream_limits = limits;
        self
    }

    /// Binds this context's UDP sockets on a simulated network instead of the operating
    /// system's, at `host` (addresses given with an unspecified IP, and client sockets, get
    /// it): see [`netsim`](crate::netsim). Such a context cannot use TCP or TLS.
    pub fn simulated(mut self, network: &SimNetwork, host: IpAddr) -> Self {
        self.sockets = Sockets::Sim(network.clone(), host);
        self
    }

    /// Serves requests with a router.
    pub fn router(mut self, router: Router) -> Self {
        self.router = Some(router);
        self
    }

    /// Sets the message-layer configuration (limits, separate-response delay, ...).
    pub fn endpoint_config(mut self, config: EndpointConfig) -> Self {
        self.config = config;
        self
    }

    /// How long a handler may run before its request is answered 5.03 Service Unavailable.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Sets the default transmission parameters (ACK_TIMEOUT, MAX_RETRANSMIT, NSTART, ...).
    pub fn transmission_params(mut self, params: TransmissionParams) -> Self {
        self.config.params = params;
        self
    }

    /// Binds the sockets and starts their drivers. Needs a Tokio runtime.
    pub async fn build(self) -> Result<Context, Error> {
        self.config
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if matches!(self.sockets, Sockets::Sim(..))
            && !(self.tcp_binds.is_empty() && self.tls_binds.is_empty())
        {
            return Err(Error::Config(
                "a context on a simulated network has no TCP or TLS listeners".into(),
            ));
        }
        let router = self.router.map(Arc::new);
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let client_dtls = if self.dtls_client.psk.is_some() || self.dtls_client.pki.is_some() {
            Some(DtlsContext::client(self.dtls_client.clone())?)
        } else {
            None
        };
        let server_dtls = match (&self.dtls_server, self.dtls_binds.is_empty()) {
            (Some(settings), _) => Some(DtlsContext::server(settings.clone())?),
            (None, true) => None,
            (None, false) => {
                return Err(Error::Config(
                    "bind_dtls needs dtls_server settings (a PSK store or certificates)".into(),
                ))
            }
        };
        let mut bound = Vec::new();
        for addr in &self.binds {
            let socket = self.sockets.bind(*addr)?;
            bound.push(spawn_driver(
                socket,
                &self.config,
                router.clone(),
                self.handler_timeout,
                PlainLayer::default(),
                events.clone(),
                None,
            )?);
        }
        for addr in &self.dtls_binds {
            let socket = self.sockets.bind(*addr)?;
            let layer = DtlsLayer::new(client_dtls.clone(), server_dtls.clone(), self.dtls_limits)?;
            bound.push(spawn_driver(
                socket,
                &self.config,
                router.clone(),
                self.handler_timeout,
                layer,
                events.clone(),
                None,
            )?);
        }
        let mut setup = StreamSetup::new(
            router.clone(),
            self.handler_timeout,
            events.clone(),
            self.stream_server,
            self.stream_client,
            self.stream_limits,
        );
        let tls_server = self.tls_server.clone().or_else(|| {
            self.dtls_server.as_ref().map(|d| TlsSettings {
                psk_store: d.psk_store.clone(),
                identity_hint: d.identity_hint.clone(),
                pki: d.pki.clone(),
                ..TlsSettings::default()
            })
        });
        match tls_server {
            Some(settings) => setup.tls_server = Some(TlsContext::server(settings)?),
            None if !self.tls_binds.is_empty() => return Err(Error::Config(
                "bind_tls needs tls_server or dtls_server settings (a PSK store or certificates)"
                    .into(),
            )),
            None => {}
        }
        let mut tls_client = self.tls_client.clone().unwrap_or_default();
        if tls_client.psk.is_none() && tls_client.pki.is_none() {
            tls_client.psk = self.dtls_client.psk.clone();
            tls_client.pki = self.dtls_client.pki.clone();
        }
        let tls_client_ctx = if tls_client.psk.is_some() || tls_client.pki.is_some() {
            Some(TlsContext::client(tls_client.clone())?)
        } else {
            None
        };
        let stream = Arc::new(setup);
        let mut listeners = Vec::new();
        for addr in &self.tcp_binds {
            listeners.push(stream::listen(*addr, false, stream.clone())?);
        }
        for addr in &self.tls_binds {
            listeners.push(stream::listen(*addr, true, stream.clone())?);
        }
        Ok(Context {
            inner: Arc::new(Inner {
                stream,
                listeners,
                stream_clients: Mutex::new(HashMap::new()),
                connecting: tokio::sync::Mutex::new(()),
                tls_client: tls_client_ctx,
                tls_client_settings: tls_client,
                events: events.clone(),
                next_ticket: Default::default(),
                handler_timeout: self.handler_timeout,
                client_dtls,
                client_dtls_settings: self.dtls_client,
                peer_keys: Mutex::new(HashMap::new()),
                sessions: Mutex::new(Vec::new()),
                dtls_limits: self.dtls_limits,
                config: self.config,
                router,
                bound,
                ephemeral: Mutex::new(Vec::new()),
                peer_params: Mutex::new(Vec::new()),
                sockets: self.sockets,
            }),
        })
    }
}

/// Where a context's UDP sockets are bound.
#[derive(Clone)]
pub(super) enum Sockets {
    /// The operating system's.
    Os,
    /// A simulated network's, at a host address.
    Sim(SimNetwork, IpAddr),
}

impl Sockets {
    pub(super) fn bind(&self, addr: SocketAddr) -> Result<DatagramSocket, Error> {
        match self {
            Sockets::Os => bind_os_socket(addr).map(DatagramSocket::Os),
            Sockets::Sim(network, host) => Ok(DatagramSocket::Sim(network.bind(addr, *host)?)),
        }
    }
}

fn bind_os_socket(addr: SocketAddr) -> Result<UdpSocket, Error> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack sockets would make [::]:5683 collide with 0.0.0.0:5683.
        socket.set_only_v6(true)?;
    }
    // A larger receive buffer absorbs bursts between two batches.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into())?)
}

pub(super) fn spawn_driver<L: SecurityLayer>(
    socket: DatagramSocket,
    config: &EndpointConfig,
    router: Option<Arc<Router>>,
    handler_timeout: Duration,
    layer: L,
    events: broadcast::Sender<SessionEvent>,
    session_state: Option<Arc<Mutex<SessionState>>>,
) -> Result<Arc<EndpointHandle>, Error> {
    let secure = layer.is_secure();
    let local = socket.local_addr()?;
    let seed = socket.endpoint_seed()?;
    let endpoint = Endpoint::new(config.clone(), seed);
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = Driver::new(
        socket,
        endpoint,
        layer,
        rx,
        tx.clone(),
        router,
        handler_timeout,
        events,
        session_state,
    );
    let task = tokio::spawn(driver.run());
    tracing::debug!(%local, secure, "endpoint started");
    Ok(Arc::new(EndpointHandle {
        local,
        secure,
        commands: tx,
        task: Mutex::new(Some(task)),
        retired: Default::default(),
    }))
}

//! The runtime on a simulated network: contexts whose UDP sockets are bound to an in-memory
//! network instead of the operating system's, so that tests of the Tokio code paths (drivers,
//! requests, block-wise, observe, OSCORE) can lose, duplicate, delay, reorder, corrupt and
//! partition traffic deterministically, in virtual time.
//!
//! The faults are those of the sans-IO simulator, [`tern_proto::sim::Network`], driven here by
//! Tokio's clock: in a current-thread runtime with paused time (`start_paused`), Tokio jumps the
//! clock to the next timer whenever every task is idle, so a minute of retransmissions takes
//! milliseconds and a run is repeated by its seed. (The endpoints' message IDs and tokens are
//! seeded from the network as well.)
//!
//! ```no_run
//! # async fn demo() -> Result<(), tern::Error> {
//! use std::net::Ipv4Addr;
//! use tern::netsim::{LinkConfig, SimNetwork};
//! let net = SimNetwork::new(7);
//! net.set_default_link(LinkConfig { loss: 0.2, ..LinkConfig::default() });
//! let server = tern::Context::builder()
//!     .simulated(&net, Ipv4Addr::new(10, 0, 0, 1).into())
//!     .bind("10.0.0.1:5683".parse().unwrap())
//!     .build()
//!     .await?;
//! let client = tern::Context::builder()
//!     .simulated(&net, Ipv4Addr::new(10, 0, 0, 2).into())
//!     .build()
//!     .await?;
//! let response = client.get("coap://10.0.0.1/.well-known/core").send().await?;
//! # drop((server, response)); Ok(()) }
//! ```
//!
//! Only datagram transports are simulated: a context on a simulated network cannot listen on
//! or connect over TCP. DTLS works on it, but OpenSSL keeps its handshake retransmission timers
//! on the real clock, so DTLS runs belong to the sans-IO simulations of `tern-tls`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use tern_proto::sim::Network;
pub use tern_proto::sim::{LinkConfig, NetStats};
use tern_proto::Transmit;

use crate::clock;
use crate::udp::{RecvBatch, BATCH};

/// Datagrams a simulated socket holds before it drops more, like a socket receive buffer.
pub const SOCKET_QUEUE: usize = 4096;

/// First port handed out for port 0 (the IANA dynamic range).
const EPHEMERAL_PORTS: u16 = 49152;

/// An in-memory network with seeded faults, shared by the contexts bound to it (clone it to
/// share). Made inside a Tokio runtime, whose clock it follows; it lives as long as that
/// runtime.
#[derive(Clone)]
pub struct SimNetwork {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Woken when a datagram is put on the wire, so the delivery task recomputes its deadline.
    sent: Notify,
}

struct State {
    net: Network,
    sockets: HashMap<SocketAddr, Inbox>,
    next_port: u16,
    /// Datagrams dropped because the receiving socket's queue was full.
    overflowed: u64,
}

struct Inbox {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    ready: Arc<Notify>,
}

impl SimNetwork {
    /// A network whose faults come from `seed`, with the default link (no faults, 10 ms one
    /// way). Must be called within a Tokio runtime: it starts the task that delivers datagrams.
    pub fn new(seed: u64) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                net: Network::new(seed, clock::now()),
                sockets: HashMap::new(),
                next_port: EPHEMERAL_PORTS,
                overflowed: 0,
            }),
            sent: Notify::new(),
        });
        tokio::spawn(deliver(shared.clone()));
        SimNetwork { shared }
    }

    /// Faults for every direction without its own.
    pub fn set_default_link(&self, link: LinkConfig) {
        self.shared.lock().net.set_default_link(link);
    }

    /// Faults for traffic from `from` to `to`.
    pub fn set_link(&self, from: SocketAddr, to: SocketAddr, link: LinkConfig) {
        self.shared.lock().net.set_link(from, to, link);
    }

    /// Cuts (or restores) traffic from `from` to `to`.
    pub fn set_partition(&self, from: SocketAddr, to: SocketAddr, cut: bool) {
        self.shared.lock().net.set_partition(from, to, cut);
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.shared.lock().net.stats()
    }

    /// Datagrams dropped because the receiving socket had [`SOCKET_QUEUE`] waiting.
    pub fn overflowed(&self) -> u64 {
        self.shared.lock().overflowed
    }

    /// Binds a socket at `addr`; an unspecified IP means `host`, port 0 a free port.
    pub(crate) fn bind(&self, addr: SocketAddr, host: IpAddr) -> io::Result<SimSocket> {
        let mut state = self.shared.lock();
        let ip = if addr.ip().is_unspecified() {
            host
        } else {
            addr.ip()
        };
        let local = if addr.port() == 0 {
            let mut port = None;
            for _ in EPHEMERAL_PORTS..=u16::MAX {
                let candidate = state.next_port;
                state.next_port = candidate.checked_add(1).unwrap_or(EPHEMERAL_PORTS);
                if !state.sockets.contains_key(&SocketAddr::new(ip, candidate)) {
                    port = Some(candidate);
                    break;
                }
            }
            let port = port.ok_or_else(|| io::Error::from(io::ErrorKind::AddrInUse))?;
            SocketAddr::new(ip, port)
        } else {
            SocketAddr::new(ip, addr.port())
        };
        if state.sockets.contains_key(&local) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{local} is already bound on the simulated network"),
            ));
        }
        let ready = Arc::new(Notify::new());
        state.sockets.insert(
            local,
            Inbox {
                queue: VecDeque::new(),
                ready: ready.clone(),
            },
        );
        Ok(SimSocket {
            shared: self.shared.clone(),
            local,
            ready,
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done that later users could trip
        // over (every update is a single push or pop), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Moves datagrams from the wire to their sockets when they are due, sleeping until the next
/// arrival or until something new is sent.
async fn deliver(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut state = shared.lock();
            let state = &mut *state;
            state.net.advance_to(clock::now());
            while let Some((from, to, contents)) = state.net.take_due() {
                match state.sockets.get_mut(&to) {
                    Some(inbox) if inbox.queue.len() < SOCKET_QUEUE => {
                        inbox.queue.push_back((from, contents));
                        inbox.ready.notify_one();
                    }
                    Some(_) => state.overflowed += 1,
                    // Nobody bound there: lost, as UDP to a closed port is.
                    None => {}
                }
            }
            state.net.next_arrival()
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = shared.sent.notified() => {}
                }
            }
            None => shared.sent.notified().await,
        }
    }
}

/// A socket on a [`SimNetwork`]; unbound when dropped.
pub(crate) struct SimSocket {
    shared: Arc<Shared>,
    local: SocketAddr,
    ready: Arc<Notify>,
}

impl SimSocket {
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits until a datagram is queued for this socket.
    pub(crate) async fn readable(&self) {
        loop {
            let waiting = self
                .shared
                .lock()
                .sockets
                .get(&self.local)
                .is_some_and(|inbox| !inbox.queue.is_empty());
            if waiting {
                return;
            }
            // A notification between the check and here is kept as a permit, so none is lost.
            self.ready.notified().await;
        }
    }

    /// Takes up to [`BATCH`] queued datagrams; `WouldBlock` when none is waiting.
    pub(crate) fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.clear();
        let mut state = self.shared.lock();
        let Some(inbox) = state.sockets.get_mut(&self.local) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        while batch.len() < BATCH {
            let Some((from, contents)) = inbox.queue.pop_front() else {
                break;
            };
            batch.push(from, &contents);
        }
        match batch.len() {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// Puts every datagram on the wire (the simulated network never pushes back).
    pub(crate) fn send_batch(&self, datagrams: &[(SocketAddr, Vec<u8>)]) -> usize {
        {
            let mut state = self.shared.lock();
            state.net.advance_to(clock::now());
            for (destination, contents) in datagrams {
                let transmit = Transmit {
                    destination: *destination,
                    contents: contents.clone(),
                };
                state.net.send(self.local, transmit);
            }
        }
        self.shared.sent.notify_one();
        datagrams.len()
    }

    /// A seed for the endpoint on this socket, drawn from the network's seed.
    pub(crate) fn endpoint_seed(&self) -> [u8; 32] {
        self.shared.lock().net.node_seed()
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        self.shared.lock().sockets.remove(&self.local);
    }
}

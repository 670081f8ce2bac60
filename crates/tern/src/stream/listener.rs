//! Accepting CoAP-over-stream connections: one task per listening socket, one driver task per
//! connection, with caps on connections and on connections still in their handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tern_proto::stream::{StreamConnection, StreamRole};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::driver::{StreamDriver, StreamDriverConfig};
use super::{StreamLimits, StreamSetup};
use crate::handling::{seed, BlockTables};

/// Connections of one listener, counted.
#[derive(Default)]
pub(crate) struct ConnectionCounts {
    open: AtomicUsize,
    handshaking: AtomicUsize,
    refused: AtomicUsize,
    observers: AtomicUsize,
}

/// A connection's place in its listener's counts, given back when the connection ends.
pub(crate) struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    handshaking: bool,
    /// The connection's observers, as counted in `counts`.
    observers: usize,
}

impl ConnectionSlot {
    /// The connection's handshake (TLS, then the CSM exchange) is over.
    pub(crate) fn established(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.counts.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The connection has `n` observers now.
    pub(crate) fn set_observers(&mut self, n: usize) {
        let observers = &self.counts.observers;
        if n > self.observers {
            observers.fetch_add(n - self.observers, Ordering::Relaxed);
        } else {
            observers.fetch_sub(self.observers - n, Ordering::Relaxed);
        }
        self.observers = n;
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.established();
        self.set_observers(0);
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a slot if the caps allow.
fn take_slot(counts: &Arc<ConnectionCounts>, limits: &StreamLimits) -> Option<ConnectionSlot> {
    if counts.open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
        counts.open.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    if counts.handshaking.fetch_add(1, Ordering::Relaxed) >= limits.max_handshaking {
        counts.handshaking.fetch_sub(1, Ordering::Relaxed);
        counts.open.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(ConnectionSlot {
        counts: counts.clone(),
        handshaking: true,
        observers: 0,
    })
}

/// Accepts connections until the listener is dropped (its task aborted).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    setup: Arc<StreamSetup>,
    secure: bool,
    counts: Arc<ConnectionCounts>,
) {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // One block-wise state for the listener, so that its caps hold for all connections.
    let blocks = Arc::new(Mutex::new(BlockTables::for_streams()));
    let mut shutdown = setup.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|down| *down) => return,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(%local, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = take_slot(&counts, &setup.limits) else {
            let refused = counts.refused.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::debug!(%peer, refused, "connection refused: at the connection cap");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let _ = socket2::SockRef::from(&socket).set_keepalive(true);
        let channel = match setup.server_channel(secure, crate::clock::now()) {
            Ok(channel) => channel,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot start the channel");
                continue;
            }
        };
        let conn = StreamConnection::new(
            StreamRole::Server,
            setup.server_config.clone(),
            crate::clock::now(),
            seed(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let config = StreamDriverConfig {
            retired: None,
            router: setup.router.clone(),
            handler_timeout: setup.handler_timeout,
            events: setup.events.clone(),
            session: None,
            blocks: blocks.clone(),
            slot: Some(slot),
            server: true,
            shutdown: setup.shutdown.subscribe(),
        };
        let driver = StreamDriver::new(socket, conn, channel, rx, tx, config, local, peer);
        tokio::spawn(driver.run());
    }
}

impl ConnectionCounts {
    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Observers on the open connections.
    pub(crate) fn observers(&self) -> usize {
        self.observers.load(Ordering::Relaxed)
    }
}

//! Accepting CoAP-over-stream connections: one task per listening socket, one driver task per
//! connection, with caps on connections and on connections still in their handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tern_proto::stream::{StreamConnection, StreamRole};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::driver::{StreamDriver, StreamDriverConfig};
use super::{StreamLimits, StreamSetup};
use crate::handling::{seed, BlockTables};
use crate::usage::{Gauge, Usage};

/// Connections of one listener, counted.
#[derive(Default)]
pub(crate) struct ConnectionCounts {
    open: AtomicUsize,
    handshaking: AtomicUsize,
    /// Connections closed at once because `open` was at its cap.
    refused: AtomicU64,
    /// Connections closed at once because `handshaking` was at its cap.
    handshakes_refused: AtomicU64,
    observers: AtomicUsize,
    /// Registrations the connections' registries refused.
    observers_refused: AtomicU64,
    /// Output bytes the open connections hold, not yet taken by their sockets.
    buffered: AtomicUsize,
    /// Times a connection stopped reading because its peer was not taking its output.
    paused: AtomicU64,
}

/// A connection's place in its listener's counts, given back when the connection ends.
pub(crate) struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    handshaking: bool,
    /// The connection's observers, as counted in `counts`.
    observers: usize,
    /// The connection's buffered output, as counted in `counts`.
    buffered: usize,
    /// The connection's refused registrations, as counted in `counts`.
    observers_refused: u64,
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

    /// The connection's registry has refused `n` registrations in all.
    pub(crate) fn set_observers_refused(&mut self, n: u64) {
        let new = n.saturating_sub(self.observers_refused);
        self.counts
            .observers_refused
            .fetch_add(new, Ordering::Relaxed);
        self.observers_refused = self.observers_refused.max(n);
    }

    /// The connection holds `n` bytes of output not yet written.
    pub(crate) fn set_buffered(&mut self, n: usize) {
        let buffered = &self.counts.buffered;
        if n > self.buffered {
            buffered.fetch_add(n - self.buffered, Ordering::Relaxed);
        } else {
            buffered.fetch_sub(self.buffered - n, Ordering::Relaxed);
        }
        self.buffered = n;
    }

    /// The connection stopped reading: its peer is not taking its output.
    pub(crate) fn paused(&self) {
        self.counts.paused.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.established();
        self.set_observers(0);
        self.set_buffered(0);
        self.counts.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a slot if the caps allow; counts the refusal otherwise.
fn take_slot(counts: &Arc<ConnectionCounts>, limits: &StreamLimits) -> Option<ConnectionSlot> {
    if counts.open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
        counts.open.fetch_sub(1, Ordering::Relaxed);
        counts.refused.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if counts.handshaking.fetch_add(1, Ordering::Relaxed) >= limits.max_handshaking {
        counts.handshaking.fetch_sub(1, Ordering::Relaxed);
        counts.open.fetch_sub(1, Ordering::Relaxed);
        counts.handshakes_refused.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    Some(ConnectionSlot {
        counts: counts.clone(),
        handshaking: true,
        observers: 0,
        buffered: 0,
        observers_refused: 0,
    })
}

/// Accepts connections until the listener is dropped (its task aborted).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    setup: Arc<StreamSetup>,
    secure: bool,
    counts: Arc<ConnectionCounts>,
    blocks: Arc<Mutex<BlockTables>>,
) {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
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
            tracing::debug!(%peer, "connection refused: at the connection or handshake cap");
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

    /// Connections and their handshakes and buffers, against the caps.
    pub(crate) fn usage(
        &self,
        limits: &StreamLimits,
        per_connection_output: usize,
        per_connection_observers: usize,
    ) -> Usage {
        let open = self.open();
        Usage {
            observers: Gauge::new(
                self.observers(),
                open.saturating_mul(per_connection_observers),
                self.observers_refused.load(Ordering::Relaxed),
            ),
            stream_connections: Gauge::new(
                open,
                limits.max_connections,
                self.refused.load(Ordering::Relaxed),
            ),
            stream_handshakes: Gauge::new(
                self.handshaking.load(Ordering::Relaxed),
                limits.max_handshaking,
                self.handshakes_refused.load(Ordering::Relaxed),
            ),
            stream_buffered_bytes: Gauge::new(
                self.buffered.load(Ordering::Relaxed),
                open.saturating_mul(per_connection_output),
                self.paused.load(Ordering::Relaxed),
            ),
            ..Usage::default()
        }
    }
}

//! Batched datagram I/O: one system call receives or sends many datagrams (`recvmmsg` and
//! `sendmmsg` on Linux), so that a loaded server pays the syscall cost once per batch.
//! Elsewhere it falls back to one datagram per call.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::netsim::SimSocket;

/// Datagrams taken from the socket per call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram. A datagram longer than this is dropped as truncated.
pub const MAX_DATAGRAM: usize = 4096;

/// Receive buffers for one batch.
pub struct RecvBatch {
    buffers: Vec<[u8; MAX_DATAGRAM]>,
    lens: [usize; BATCH],
    peers: [Option<SocketAddr>; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            buffers: vec![[0u8; MAX_DATAGRAM]; BATCH],
            lens: [0; BATCH],
            peers: [None; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams received by the last call, with their senders.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        (0..self.count).filter_map(move |i| {
            let peer = self.peers[i]?;
            Some((peer, &self.buffers[i][..self.lens[i]]))
        })
    }
}

impl RecvBatch {
    /// Empties the batch before a receive.
    pub(crate) fn clear(&mut self) {
        self.count = 0;
    }

    /// Datagrams in the batch.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Adds a datagram (when the batch has room); one longer than [`MAX_DATAGRAM`] is kept as
    /// truncated, which [`iter`](Self::iter) skips, as a socket's would be.
    pub(crate) fn push(&mut self, peer: SocketAddr, datagram: &[u8]) {
        if self.count == BATCH {
            return;
        }
        let i = self.count;
        let len = datagram.len().min(MAX_DATAGRAM);
        self.buffers[i][..len].copy_from_slice(&datagram[..len]);
        self.lens[i] = len;
        self.peers[i] = (datagram.len() <= MAX_DATAGRAM).then_some(peer);
        self.count += 1;
    }
}

/// A bound datagram socket: the operating system's, or one on a
/// [simulated network](crate::netsim).
pub(crate) enum DatagramSocket {
    Os(UdpSocket),
    Sim(SimSocket),
}

impl DatagramSocket {
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            DatagramSocket::Os(s) => s.local_addr(),
            DatagramSocket::Sim(s) => Ok(s.local_addr()),
        }
    }

    /// Waits until a datagram may be waiting.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            DatagramSocket::Os(s) => s.readable().await,
            DatagramSocket::Sim(s) => {
                s.readable().await;
                Ok(())
            }
        }
    }

    /// Waits until the socket may take more.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            DatagramSocket::Os(s) => s.writable().await,
            DatagramSocket::Sim(_) => Ok(()),
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; `WouldBlock` when none is waiting.
    pub(crate) fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        match self {
            DatagramSocket::Os(s) => try_recv_batch(s, batch),
            DatagramSocket::Sim(s) => s.try_recv_batch(batch),
        }
    }

    /// Sends as many of `datagrams` as the socket takes without blocking; returns how many.
    pub(crate) fn try_send_batch(&self, datagrams: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
        match self {
            DatagramSocket::Os(s) => try_send_batch(s, datagrams),
            DatagramSocket::Sim(s) => Ok(s.send_batch(datagrams)),
        }
    }

    /// A seed for the endpoint on this socket: random, or drawn from the simulated network's
    /// seed so that a simulated run repeats exactly.
    pub(crate) fn endpoint_seed(&self) -> io::Result<[u8; 32]> {
        match self {
            DatagramSocket::Os(_) => {
                let mut seed = [0u8; 32];
                getrandom::getrandom(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
                Ok(seed)
            }
            DatagramSocket::Sim(s) => Ok(s.endpoint_seed()),
        }
    }
}

/// Receives up to [`BATCH`] datagrams without blocking; `WouldBlock` when none is waiting.
fn try_recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.count = 0;
    let n = socket.try_io(Interest::READABLE, || sys::recv_batch(socket, batch))?;
    batch.count = n;
    Ok(n)
}

/// Sends as many of `datagrams` as the socket takes without blocking; returns how many went.
/// `WouldBlock` when the socket buffer is full before the first one.
fn try_send_batch(socket: &UdpSocket, datagrams: &[(SocketAddr, Vec<u8>)]) -> io::Result<usize> {
    if datagrams.is_empty() {
        return Ok(0);
    }
    socket.try_io(Interest::WRITABLE, || sys::send_batch(socket, datagrams))
}

#[cfg(target_os = "linux")]
mod sys {
    //! The only unsafe code of the runtime: the `recvmmsg`/`sendmmsg` FFI calls.
    use super::{RecvBatch, BATCH, MAX_DATAGRAM};
    use std::io;
    use std::mem::MaybeUninit;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use socket2::SockAddr;
    use tokio::net::UdpSocket;

    pub fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut addrs: [libc::sockaddr_storage; BATCH] =
            unsafe { MaybeUninit::zeroed().assume_init() };
        let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: batch.buffers[i].as_mut_ptr().cast(),
            iov_len: MAX_DATAGRAM,
        });
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value, then filled below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for i in 0..BATCH {
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovecs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every msg_hdr points at a live sockaddr_storage and a live iovec over a live
        // buffer of MAX_DATAGRAM bytes, all of which outlive the call; the kernel writes at most
        // msg_namelen and iov_len bytes into them. MSG_DONTWAIT keeps it non-blocking.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            batch.lens[i] = (msgs[i].msg_len as usize).min(MAX_DATAGRAM);
            // SAFETY: the kernel filled addrs[i] with msg_namelen bytes of a socket address.
            let addr = unsafe { SockAddr::new(addrs[i], msgs[i].msg_hdr.msg_namelen) };
            batch.peers[i] = if truncated { None } else { addr.as_socket() };
        }
        Ok(n)
    }

    pub fn send_batch(
        socket: &UdpSocket,
        datagrams: &[(SocketAddr, Vec<u8>)],
    ) -> io::Result<usize> {
        let count = datagrams.len().min(BATCH);
        let addrs: Vec<SockAddr> = datagrams[..count]
            .iter()
            .map(|(a, _)| SockAddr::from(*a))
            .collect();
        let mut iovecs: Vec<libc::iovec> = datagrams[..count]
            .iter()
            .map(|(_, d)| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value, then filled below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for i in 0..count {
            msgs[i].msg_hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = addrs[i].len();
            msgs[i].msg_hdr.msg_iov = &mut iovecs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `count` headers point at live addresses and iovecs over live
        // buffers that outlive the call; sendmmsg only reads them.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::{RecvBatch, MAX_DATAGRAM};
    use std::io;
    use std::net::SocketAddr;
    use tokio::net::UdpSocket;

    pub fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        let (len, peer) = socket.try_recv_from(&mut batch.buffers[0])?;
        batch.lens[0] = len.min(MAX_DATAGRAM);
        batch.peers[0] = Some(peer);
        Ok(1)
    }

    pub fn send_batch(
        socket: &UdpSocket,
        datagrams: &[(SocketAddr, Vec<u8>)],
    ) -> io::Result<usize> {
        let (peer, d) = &datagrams[0];
        socket.try_send_to(d, *peer)?;
        Ok(1)
    }
}

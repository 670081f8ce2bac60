//! In-memory datagram queues between OpenSSL and the caller: OpenSSL reads and writes through
//! them as if they were a socket, so the engine is driven by bytes in and bytes out.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Most datagrams queued in either direction; past this the oldest incoming one is dropped (a
/// peer flooding one channel cannot grow memory).
pub const MAX_QUEUED: usize = 64;

/// Datagrams waiting to be read by OpenSSL, and datagrams OpenSSL wrote.
#[derive(Debug, Default)]
pub struct DatagramPipe {
    pub(crate) incoming: VecDeque<Vec<u8>>,
    pub(crate) outgoing: VecDeque<Vec<u8>>,
    /// The latest epoch OpenSSL wrote records in, and the next sequence number in it: where a
    /// channel's own record layer carries on after the handshake.
    pub(crate) write_epoch: u16,
    pub(crate) next_write: u64,
}

impl DatagramPipe {
    pub(crate) fn push_incoming(&mut self, datagram: &[u8]) {
        if self.incoming.len() >= MAX_QUEUED {
            self.incoming.pop_front();
        }
        self.incoming.push_back(datagram.to_vec());
    }
}

impl Read for DatagramPipe {
    /// One datagram per read, as a datagram socket does; `WouldBlock` when none is queued.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for DatagramPipe {
    /// Each write is one datagram.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for (h, _) in crate::record::records(buf) {
            if h.epoch > self.write_epoch {
                (self.write_epoch, self.next_write) = (h.epoch, h.sequence + 1);
            } else if h.epoch == self.write_epoch {
                self.next_write = self.next_write.max(h.sequence + 1);
            }
        }
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

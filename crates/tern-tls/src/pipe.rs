//! In-memory pipes between OpenSSL and the caller: OpenSSL reads and writes through them as if
//! they were a socket, so the engines are driven by bytes in and bytes out. DTLS gets datagram
//! queues ([`DatagramPipe`]), TLS a byte stream each way ([`StreamPipe`]).

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

/// A byte stream each way between OpenSSL and a TLS channel. Both buffers are freed whenever
/// they are drained, so an idle connection holds none.
#[derive(Debug, Default)]
pub struct StreamPipe {
    /// Ciphertext from the peer; OpenSSL has read `incoming[..read_at]`.
    incoming: Vec<u8>,
    read_at: usize,
    /// Ciphertext OpenSSL wrote, for the socket.
    pub(crate) outgoing: Vec<u8>,
    /// The peer closed its side: reads past the buffered bytes see the end of the stream.
    pub(crate) eof: bool,
}

impl StreamPipe {
    /// Appends ciphertext from the peer (after what OpenSSL has not read yet).
    pub(crate) fn push_incoming(&mut self, bytes: &[u8]) {
        if self.read_at > 0 {
            self.incoming.drain(..self.read_at);
            self.read_at = 0;
        }
        self.incoming.extend_from_slice(bytes);
    }

    /// Ciphertext from the peer that OpenSSL has not read yet.
    pub(crate) fn unread(&self) -> usize {
        self.incoming.len() - self.read_at
    }
}

impl Read for StreamPipe {
    /// As much as is buffered; `WouldBlock` when nothing is (or `Ok(0)` once the peer closed).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.unread() == 0 {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = self.unread().min(buf.len());
        buf[..n].copy_from_slice(&self.incoming[self.read_at..self.read_at + n]);
        self.read_at += n;
        if self.read_at == self.incoming.len() {
            self.incoming = Vec::new();
            self.read_at = 0;
        }
        Ok(n)
    }
}

impl Write for StreamPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::StreamPipe;
    use std::io::{ErrorKind, Read, Write};

    #[test]
    fn stream_pipe_reads_what_was_pushed_then_would_block_then_ends() {
        let mut pipe = StreamPipe::default();
        let mut buf = [0u8; 4];
        assert_eq!(
            pipe.read(&mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        pipe.push_incoming(b"abcdef");
        assert_eq!(pipe.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        pipe.push_incoming(b"gh");
        assert_eq!(pipe.unread(), 4);
        assert_eq!(pipe.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"efgh");
        assert_eq!(pipe.incoming.capacity(), 0, "freed once drained");
        pipe.eof = true;
        assert_eq!(pipe.read(&mut buf).unwrap(), 0);
        pipe.write_all(b"out").unwrap();
        assert_eq!(pipe.outgoing, b"out");
    }
}

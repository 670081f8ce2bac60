//! The DTLS server's door (RFC 6347 §4.2.1): ClientHellos from unknown peers are answered with
//! a HelloVerifyRequest cookie from one reusable SSL object, and a channel is opened only once
//! a ClientHello returns with a valid cookie, so a spoofed source costs the server no state.
//! The cookie is an HMAC-SHA256 over the peer's address bytes under a per-context random secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use openssl::ssl::{Ssl, SslContextBuilder, SslStream};
use zeroize::Zeroize;

use super::{DtlsChannel, DtlsContext, Role, TlsError};
use crate::ffi::{self, ListenOutcome};
use crate::hmac::Hmac;
use crate::pipe::DatagramPipe;
use crate::record;

/// Where the listener puts the address of the peer it is talking to, for the cookie callbacks.
type PeerSlot = std::sync::Mutex<Option<SocketAddr>>;

/// The index under which the listener stores the peer address for the cookie callbacks.
fn peer_index() -> Result<openssl::ex_data::Index<Ssl, PeerSlot>, openssl::error::ErrorStack> {
    static INDEX: std::sync::OnceLock<openssl::ex_data::Index<Ssl, PeerSlot>> =
        std::sync::OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// The peer address stored for the cookie callbacks.
fn stored_peer(ssl: &openssl::ssl::SslRef) -> Option<SocketAddr> {
    let index = peer_index().ok()?;
    let slot = ssl.ex_data(index)?.lock().ok()?;
    *slot
}

/// The server's cookie secret, as a keyed HMAC-SHA256 made once per context.
struct CookieKey(Hmac<openssl::sha::Sha256>);

impl CookieKey {
    /// Length of a cookie: 128 bits of the MAC are plenty against guessing within the secret's
    /// life, and keep the second ClientHello short.
    const LEN: usize = 16;

    /// RFC 6347 §4.2.1's Cookie = HMAC(Secret, Client-IP, Client-Parameters), over the peer's
    /// address and port (as bytes, without formatting them).
    fn cookie(&self, peer: Option<SocketAddr>) -> [u8; Self::LEN] {
        let mut input = [0u8; 19];
        let used = match peer {
            Some(SocketAddr::V4(a)) => {
                input[0] = 4;
                input[1..5].copy_from_slice(&a.ip().octets());
                input[5..7].copy_from_slice(&a.port().to_be_bytes());
                7
            }
            Some(SocketAddr::V6(a)) => {
                input[0] = 6;
                input[1..17].copy_from_slice(&a.ip().octets());
                input[17..19].copy_from_slice(&a.port().to_be_bytes());
                19
            }
            None => 1,
        };
        let mac = self.0.mac(&[&input[..used]]);
        let mut cookie = [0u8; Self::LEN];
        cookie.copy_from_slice(&mac[..Self::LEN]);
        cookie
    }
}

/// Gives a server SSL object the slot the listener writes the peer's address into.
pub(super) fn prepare_peer_slot(ssl: &mut Ssl) -> Result<(), TlsError> {
    ssl.set_ex_data(peer_index()?, std::sync::Mutex::new(None));
    Ok(())
}

/// Installs the cookie callbacks of a server context, keyed with a fresh random secret.
pub(super) fn set_cookie_callbacks(b: &mut SslContextBuilder) -> Result<(), TlsError> {
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret)?;
    let cookie_key = Arc::new(CookieKey(Hmac::new(&secret)));
    secret.zeroize();
    let verify_key = Arc::clone(&cookie_key);
    b.set_cookie_generate_cb(move |ssl, out| {
        let cookie = cookie_key.cookie(stored_peer(ssl));
        let n = cookie.len().min(out.len());
        out[..n].copy_from_slice(&cookie[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(move |ssl, cookie| {
        let expected = verify_key.cookie(stored_peer(ssl));
        expected.len() == cookie.len() && openssl::memcmp::eq(&expected, cookie)
    });
    Ok(())
}

/// What the listener made of a datagram from an unknown peer.
pub enum Accept {
    /// Send this back (a HelloVerifyRequest); nothing was kept.
    Reply(Vec<u8>),
    /// A returning ClientHello with a valid cookie: the new channel, already answering.
    Channel(Box<DtlsChannel>),
    /// Not a ClientHello, or unusable: ignore it.
    Ignore,
}

/// The server side's door: stateless cookie exchange from one reusable SSL object.
pub struct DtlsListener {
    ctx: DtlsContext,
    spare: Option<SslStream<DatagramPipe>>,
}

impl DtlsListener {
    /// A listener for a server context.
    pub fn new(ctx: DtlsContext) -> Result<Self, TlsError> {
        if ctx.role != Role::Server {
            return Err(TlsError::NoCredentials("server context for a listener"));
        }
        Ok(DtlsListener { ctx, spare: None })
    }

    /// Offers a datagram from a peer that has no channel yet.
    pub fn accept(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) -> Accept {
        if !record::is_client_hello(datagram) {
            return Accept::Ignore;
        }
        let mut stream = match self.spare.take() {
            Some(s) => s,
            None => match self.ctx.new_stream() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create a DTLS listener");
                    return Accept::Ignore;
                }
            },
        };
        let Ok(index) = peer_index() else {
            return Accept::Ignore;
        };
        if let Some(Ok(mut slot)) = stream.ssl().ex_data(index).map(|m| m.lock()) {
            *slot = Some(peer);
        }
        stream.get_mut().incoming.clear();
        stream.get_mut().outgoing.clear();
        stream.get_mut().push_incoming(datagram);
        match ffi::listen(stream.ssl()) {
            ListenOutcome::Accepted => {
                let mut channel = DtlsChannel::from_stream(&self.ctx, stream, now);
                channel.drive(now);
                Accept::Channel(Box::new(channel))
            }
            ListenOutcome::NotYet => {
                let reply = stream.get_mut().outgoing.pop_front();
                stream.get_mut().outgoing.clear();
                self.spare = Some(stream);
                reply.map_or(Accept::Ignore, Accept::Reply)
            }
            ListenOutcome::Failed => Accept::Ignore,
        }
    }
}

//! TLS 1.2 (RFC 5246) and 1.3 (RFC 8446) on OpenSSL for CoAP over TLS (RFC 8323,
//! `coaps+tcp://`), driven sans-IO: ciphertext bytes in, ciphertext bytes out, a handshake
//! deadline.
//!
//! A [`TlsContext`] holds the configuration (credentials, versions, suites, ALPN). A client
//! opens a [`TlsChannel`] with [`TlsChannel::connect`], a server with [`TlsChannel::accept`]
//! for each accepted TCP connection; the caller moves bytes between the channel and the socket:
//!
//! ```no_run
//! # use std::time::Instant;
//! # use tern_tls::{Psk, TlsChannel, TlsContext, TlsSettings};
//! # fn socket_read() -> Vec<u8> { Vec::new() }
//! # fn socket_write(_: &[u8]) {}
//! let ctx = TlsContext::client(TlsSettings {
//!     psk: Some(Psk::new("device-1", "secret-key")?),
//!     ..Default::default()
//! })?;
//! let mut tls = TlsChannel::connect(&ctx, Instant::now())?;
//! tls.send(b"CoAP frames")?; // held until the handshake is done
//! let mut plaintext = [0u8; 4096];
//! while !tls.is_closed() {
//!     while let Some(ciphertext) = tls.poll_output() {
//!         socket_write(&ciphertext);
//!     }
//!     tls.handle_input(Instant::now(), &socket_read());
//!     let n = tls.read_plaintext(&mut plaintext); // CoAP frames from the server
//! #   let _ = n;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! An idle established channel keeps OpenSSL's SSL object, without its record buffers
//! (`SSL_MODE_RELEASE_BUFFERS`) and without the handshake buffer, which TLS (unlike DTLS) frees
//! after the handshake. Servers keep no session cache and issue no session tickets unless
//! [`TlsSettings::session_tickets`] is set.

use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{
    AlpnError, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslVersion,
};

use crate::credentials::{Psk, PskStore};
use crate::error::TlsError;
use crate::pki::PkiSettings;
use crate::ssl_context::{self, Role};

mod channel;
pub use channel::TlsChannel;

/// The TLS 1.2 cipher list offered by default: ECDHE with ECDSA or RSA certificates and
/// AES-GCM or ChaCha20-Poly1305, then the PSK suites (AES-GCM, ChaCha20-Poly1305, and the
/// AES-CCM-8 and AES-CCM suites of RFC 7252 §9.1.3.1). libcoap 4.3.1 (`coap-server-openssl`,
/// `coap-client-openssl`) accepts and offers each PSK suite here over TLS; a suite is only used
/// when its credentials are configured.
pub const DEFAULT_TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-CCM8:\
PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-CHACHA20-POLY1305:PSK-AES128-CCM8:\
PSK-AES128-CCM";

/// The TLS 1.3 cipher suites offered by default: OpenSSL's three, and AES-128-CCM.
pub const DEFAULT_TLS13_CIPHERSUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256";

/// Key-exchange groups offered, in order (P-256 is the one RFC 7252 §9.1.3.3 requires of
/// ECDSA certificates).
const GROUPS: &str = "X25519:P-256:P-384";

/// The ALPN protocol ID of CoAP over TLS (RFC 8323 §4.3).
pub const ALPN_COAP: &[u8] = b"coap";

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl TlsVersion {
    fn openssl(self) -> SslVersion {
        match self {
            TlsVersion::Tls12 => SslVersion::TLS1_2,
            TlsVersion::Tls13 => SslVersion::TLS1_3,
        }
    }

    fn from_openssl(version: SslVersion) -> Option<Self> {
        if version == SslVersion::TLS1_2 {
            Some(TlsVersion::Tls12)
        } else if version == SslVersion::TLS1_3 {
            Some(TlsVersion::Tls13)
        } else {
            None
        }
    }
}

/// A server's or client's TLS settings.
#[derive(Clone)]
pub struct TlsSettings {
    /// The client's PSK (identity and key).
    pub psk: Option<Psk>,
    /// Where a server looks up PSKs by identity.
    pub psk_store: Option<Arc<dyn PskStore>>,
    /// The identity hint a server sends in TLS 1.2 (none when `None` or empty).
    pub identity_hint: Option<Vec<u8>>,
    /// Certificates: ours, and how the peer's are checked.
    pub pki: Option<PkiSettings>,
    /// OpenSSL cipher list for TLS 1.2 ([`DEFAULT_TLS12_CIPHERS`] by default).
    pub ciphers: String,
    /// OpenSSL cipher suites for TLS 1.3 ([`DEFAULT_TLS13_CIPHERSUITES`] by default).
    pub ciphersuites: String,
    /// Lowest version accepted (default TLS 1.2).
    pub min_version: TlsVersion,
    /// Highest version offered or accepted (default TLS 1.3).
    ///
    /// A context with a PSK but no certificates is capped at TLS 1.2: PSKs are offered on
    /// TLS 1.2 only. The PSK suites CoAP names (RFC 7252 §9.1.3.1, RFC 7925) are TLS 1.2
    /// suites; TLS 1.3 has no identity hint, and OpenSSL runs TLS 1.3 external PSKs through its
    /// TLS 1.2 callbacks only with SHA-256 suites and resumption-style binders, which peers
    /// implement unevenly. With certificates the context goes up to this version, and a PSK is
    /// used on TLS 1.2 when the peer negotiates it.
    pub max_version: TlsVersion,
    /// ALPN protocols, most preferred first (default `["coap"]`, RFC 8323 §4.3). A client
    /// offers them; a server selects the first of its list the client offers. Empty: no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// Fail the handshake unless an ALPN protocol is agreed (default off: libcoap 4.3.1 neither
    /// sends ALPN as a client nor selects one as a server).
    pub require_alpn: bool,
    /// A handshake not complete by then fails (default 30 s); it bounds how long a server holds
    /// a connection that never finishes its handshake.
    pub handshake_timeout: Duration,
    /// Client: the server name sent in SNI (RFC 6066 §3); when `None`, the PKI settings' `sni`.
    pub server_name: Option<String>,
    /// Whether a server issues session tickets (RFC 5077, RFC 8446 §4.6.1) so clients can
    /// resume (default off: a ticket costs an encryption per handshake, and Tern's clients do
    /// not resume).
    pub session_tickets: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            psk: None,
            psk_store: None,
            identity_hint: None,
            pki: None,
            ciphers: DEFAULT_TLS12_CIPHERS.to_string(),
            ciphersuites: DEFAULT_TLS13_CIPHERSUITES.to_string(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            alpn: vec![ALPN_COAP.to_vec()],
            require_alpn: false,
            handshake_timeout: Duration::from_secs(30),
            server_name: None,
            session_tickets: false,
        }
    }
}

impl TlsSettings {
    /// The versions a context made from these settings uses: `max_version` capped at TLS 1.2
    /// without certificates (see [`max_version`](Self::max_version)).
    pub fn effective_versions(&self) -> Result<(TlsVersion, TlsVersion), TlsError> {
        let max = if self.pki.is_none() {
            self.max_version.min(TlsVersion::Tls12)
        } else {
            self.max_version
        };
        if self.min_version > max {
            return Err(TlsError::Settings(
                "the lowest TLS version is above the highest (PSKs are offered on TLS 1.2 only)",
            ));
        }
        Ok((self.min_version, max))
    }

    /// The ALPN list in wire format (each ID prefixed by its length).
    fn alpn_wire(&self) -> Result<Vec<u8>, TlsError> {
        let mut wire = Vec::new();
        for id in &self.alpn {
            let len = u8::try_from(id.len())
                .ok()
                .filter(|&n| n > 0)
                .ok_or(TlsError::Settings(
                    "an ALPN protocol ID must be 1-255 bytes",
                ))?;
            wire.push(len);
            wire.extend_from_slice(id);
        }
        Ok(wire)
    }
}

/// Something that happened on a TLS (or plain) stream channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsEvent {
    /// The handshake started (client: at connect; server: on the first bytes from the client).
    HandshakeStarted,
    /// The handshake completed: application data flows.
    Established,
    /// The handshake failed, with the reason. The channel may have an alert for the peer in
    /// [`TlsChannel::poll_output`]; send it, then close the connection.
    HandshakeFailed(String),
    /// The peer sent an alert (reported before the failure or close it causes).
    AlertReceived(crate::Alert),
    /// The channel closed after the handshake, with the reason: close_notify from the peer,
    /// the end of the stream, or an error. In TLS 1.3 a client is established before the
    /// server has checked its certificate, so the server's rejection comes as this.
    Closed(String),
}

/// A configured TLS context from which channels are made; cheap to clone.
#[derive(Clone)]
pub struct TlsContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    ctx: SslContext,
    role: Role,
    settings: TlsSettings,
    versions: (TlsVersion, TlsVersion),
}

/// The OpenSSL context builder for one role: versions, suites, groups, record buffers released
/// when empty, the server's session policy, certificates and ALPN selection.
fn builder(role: Role, settings: &TlsSettings) -> Result<SslContextBuilder, TlsError> {
    let (min, max) = settings.effective_versions()?;
    let method = match role {
        Role::Client => SslMethod::tls_client(),
        Role::Server => SslMethod::tls_server(),
    };
    let mut b = SslContext::builder(method)?;
    b.set_min_proto_version(Some(min.openssl()))?;
    b.set_max_proto_version(Some(max.openssl()))?;
    let suites = (max == TlsVersion::Tls13).then_some(settings.ciphersuites.as_str());
    ssl_context::apply_algorithms(&mut b, &settings.ciphers, suites, Some(GROUPS))?;
    b.set_mode(SslMode::RELEASE_BUFFERS);
    // TLS 1.2 renegotiation: nothing in CoAP needs it, and a peer could make us repeat
    // handshakes on one connection.
    b.set_options(SslOptions::NO_RENEGOTIATION);
    ssl_context::apply_session_policy(&mut b, role, settings.session_tickets);
    if role == Role::Server && !settings.session_tickets {
        b.set_num_tickets(0)?;
    }
    if let Some(pki) = &settings.pki {
        ssl_context::apply_pki(&mut b, role, pki)?;
    }
    let alpn = settings.alpn_wire()?;
    match role {
        Role::Client if !alpn.is_empty() => b.set_alpn_protos(&alpn)?,
        Role::Client => {}
        Role::Server => {
            let require = settings.require_alpn;
            let ours = settings.alpn.clone();
            b.set_alpn_select_callback(move |_ssl, offered| match select_alpn(&ours, offered) {
                Some(chosen) => Ok(chosen),
                None if require => Err(AlpnError::ALERT_FATAL),
                None => Err(AlpnError::NOACK),
            });
        }
    }
    Ok(b)
}

/// The first of `ours` that the client offers (`offered` in wire format), as a slice of
/// `offered`.
fn select_alpn<'a>(ours: &[Vec<u8>], offered: &'a [u8]) -> Option<&'a [u8]> {
    let mut ids = Vec::new();
    let mut rest = offered;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || tail.len() < len {
            return None; // malformed: OpenSSL checks this too
        }
        ids.push(&tail[..len]);
        rest = &tail[len..];
    }
    ours.iter()
        .find_map(|want| ids.iter().find(|id| **id == want.as_slice()).copied())
}

impl TlsContext {
    /// A client context: needs `settings.psk` or `settings.pki`.
    pub fn client(settings: TlsSettings) -> Result<Self, TlsError> {
        if settings.psk.is_none() && settings.pki.is_none() {
            return Err(TlsError::NoCredentials("TLS client"));
        }
        let mut b = builder(Role::Client, &settings)?;
        if let Some(psk) = settings.psk.clone() {
            ssl_context::apply_psk_client(&mut b, psk);
        }
        Self::new(b.build(), Role::Client, settings)
    }

    /// A server context: needs `settings.psk_store` or `settings.pki` (with a certificate).
    pub fn server(settings: TlsSettings) -> Result<Self, TlsError> {
        if settings.psk_store.is_none() && settings.pki.is_none() {
            return Err(TlsError::NoCredentials("TLS server"));
        }
        let mut b = builder(Role::Server, &settings)?;
        if let Some(store) = settings.psk_store.clone() {
            ssl_context::apply_psk_server(&mut b, store, settings.identity_hint.as_deref())?;
        }
        if let Some(pki) = &settings.pki {
            ssl_context::apply_sni_certificates(&mut b, pki, |alternate| {
                let alternate = TlsSettings {
                    pki: Some(alternate),
                    ..settings.clone()
                };
                Ok(builder(Role::Server, &alternate)?.build())
            })?;
        }
        Self::new(b.build(), Role::Server, settings)
    }

    fn new(ctx: SslContext, role: Role, settings: TlsSettings) -> Result<Self, TlsError> {
        let versions = settings.effective_versions()?;
        Ok(TlsContext {
            inner: Arc::new(ContextInner {
                ctx,
                role,
                settings,
                versions,
            }),
        })
    }

    /// Client or server.
    pub fn role(&self) -> Role {
        self.inner.role
    }

    /// The settings it was made from.
    pub fn settings(&self) -> &TlsSettings {
        &self.inner.settings
    }

    /// The lowest and highest TLS versions it negotiates (see [`TlsSettings::max_version`]).
    pub fn versions(&self) -> (TlsVersion, TlsVersion) {
        self.inner.versions
    }
}

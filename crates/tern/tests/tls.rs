//! CoAP over TLS (coaps+tcp://) and the stream session model end to end on loopback: PSK and
//! certificates with the identity visible to handlers, credentials from the context, the key
//! store or the session, handshake failures as events and clear errors, keepalive without
//! Pong, idle server connections reaped, and pending requests failing when the peer goes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tern::proto::stream::StreamConfig;
use tern::proto::uri::Scheme;
use tern::tls::{DtlsSettings, PkiSettings, PskMap, PskStore, Source, TlsSettings};
use tern::{
    default_server_config, Code, Context, Error, PeerIdentity, Psk, Request, Response, Router,
    SessionEvent, SessionState, Transport,
};
use tokio::sync::broadcast;

fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-runtime-tls-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-certs.sh");
        let ok = std::process::Command::new("bash")
            .arg(script)
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "make-test-certs.sh failed");
        dir
    })
}

fn file(name: &str) -> Source {
    Source::File(certs().join(name))
}

fn router() -> Router {
    Router::new()
        .get("/whoami", |r: Request| async move {
            Response::text(match r.peer_identity() {
                Some(PeerIdentity::Psk(id)) => format!("psk:{}", String::from_utf8_lossy(id)),
                Some(PeerIdentity::Certificate { common_name, .. }) => {
                    format!("cert:{}", common_name.clone().unwrap_or_default())
                }
                None => "anonymous".into(),
            })
        })
        .get("/never", |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::text("too late")
        })
}

fn psk(identity: &str, key: &str) -> Psk {
    Psk::new(identity.as_bytes(), key.as_bytes().to_vec()).unwrap()
}

async fn psk_server(config: StreamConfig) -> (Context, SocketAddr) {
    let store = PskMap::new();
    store.insert(psk("dev1", "secret1"));
    let ctx = Context::builder()
        .bind_tls("127.0.0.1:0".parse().unwrap())
        .tls_server(TlsSettings {
            psk_store: Some(Arc::new(store) as Arc<dyn PskStore>),
            ..TlsSettings::default()
        })
        .stream_server_config(config)
        .router(router())
        .build()
        .await
        .unwrap();
    let addr = ctx.listen_addrs(Scheme::CoapsTcp)[0];
    (ctx, addr)
}

async fn pki_server(require_client_cert: bool) -> (Context, SocketAddr) {
    let mut pki = PkiSettings::new(file("server.pem"), file("server.key"), Some(file("ca.pem")));
    pki.require_peer_certificate = require_client_cert;
    // The TLS server takes the DTLS server's credentials when it has none of its own.
    let ctx = Context::builder()
        .bind_tls("127.0.0.1:0".parse().unwrap())
        .dtls_server(DtlsSettings {
            pki: Some(pki),
            ..DtlsSettings::default()
        })
        .router(router())
        .build()
        .await
        .unwrap();
    let addr = ctx.listen_addrs(Scheme::CoapsTcp)[0];
    (ctx, addr)
}

fn client_pki(with_cert: bool) -> PkiSettings {
    let mut pki = if with_cert {
        PkiSettings::new(file("client.pem"), file("client.key"), Some(file("ca.pem")))
    } else {
        PkiSettings::verify_only(Some(file("ca.pem")))
    };
    pki.sni = Some("localhost".into());
    pki
}

/// Events until one matches `want` (bounded).
async fn wait_event(
    events: &mut broadcast::Receiver<SessionEvent>,
    want: impl Fn(&SessionEvent) -> bool,
) -> Vec<SessionEvent> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            let done = want(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
    panic!("event not seen; got {seen:?}");
}

#[tokio::test]
async fn psk_over_tls_with_context_credentials_and_the_identity_seen_by_handlers() {
    let (srv, addr) = psk_server(default_server_config()).await;
    let client = Context::builder()
        .psk(psk("dev1", "secret1"))
        .build()
        .await
        .unwrap();
    let r = client
        .get(&format!("coaps+tcp://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!((r.code(), r.payload()), (Code::CONTENT, &b"psk:dev1"[..]));
    srv.shutdown().await;
}

#[tokio::test]
async fn a_wrong_psk_is_a_handshake_failure_event_and_a_clear_error() {
    let (srv, addr) = psk_server(default_server_config()).await;
    let mut server_events = srv.events();
    let client = Context::builder()
        .psk(psk("dev1", "not-the-key"))
        .build()
        .await
        .unwrap();
    let mut events = client.events();
    let e = client
        .get(&format!("coaps+tcp://{addr}/whoami"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    wait_event(&mut events, |e| {
        matches!(e, SessionEvent::HandshakeFailed { .. })
    })
    .await;
    wait_event(&mut server_events, |e| {
        matches!(e, SessionEvent::HandshakeFailed { .. })
    })
    .await;
    srv.shutdown().await;
}

#[tokio::test]
async fn the_key_store_and_session_credentials_override_the_context() {
    let (srv, addr) = psk_server(default_server_config()).await;
    let uri = format!("coaps+tcp://{addr}");
    // No context credentials: nothing to connect with.
    let client = Context::client();
    assert!(matches!(
        client.get(&format!("{uri}/whoami")).send().await,
        Err(Error::NoCredentials)
    ));
    // The key store's entry for the peer.
    client
        .add_peer_psk(&uri, psk("dev1", "secret1"))
        .await
        .unwrap();
    let r = client.get(&format!("{uri}/whoami")).send().await.unwrap();
    assert_eq!(r.payload(), b"psk:dev1");
    // A session's own credentials replace the store's.
    let session = client
        .session(&uri)
        .psk(psk("dev1", "wrong"))
        .build()
        .await
        .unwrap();
    assert_eq!(session.transport(), Transport::Tls);
    assert!(session.is_secure());
    assert!(session
        .get("/whoami")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_err());
    srv.shutdown().await;
}

#[tokio::test]
async fn certificates_over_tls_mutual_and_server_only() {
    let (srv, addr) = pki_server(true).await;
    let client = Context::builder()
        .pki(client_pki(true))
        .build()
        .await
        .unwrap();
    let session = client
        .session(&format!("coaps+tcp://{addr}"))
        .build()
        .await
        .unwrap();
    let r = session.get("/whoami").send().await.unwrap();
    assert_eq!(r.payload(), b"cert:tern-test-client");
    assert_eq!(session.state(), SessionState::Established);
    // Without a client certificate, a server that requires one refuses.
    let anonymous = Context::builder()
        .pki(client_pki(false))
        .build()
        .await
        .unwrap();
    assert!(anonymous
        .get(&format!("coaps+tcp://{addr}/whoami"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_err());
    srv.shutdown().await;
    // A server that does not require one serves it.
    let (srv, addr) = pki_server(false).await;
    let r = anonymous
        .get(&format!("coaps+tcp://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), b"anonymous");
    srv.shutdown().await;
}

#[tokio::test]
async fn keepalive_without_pong_closes_the_connection_with_an_event() {
    // A raw peer that answers the CSM exchange but never a Ping.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(&[0x00, 0xe1]).await.unwrap();
        let mut buf = [0u8; 1024];
        // Read (and ignore) until the client closes, at most 10 s.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
    });
    let client = Context::builder()
        .stream_client_config(StreamConfig {
            keepalive: Some(Duration::from_millis(200)),
            pong_timeout: Duration::from_millis(300),
            ..StreamConfig::default()
        })
        .build()
        .await
        .unwrap();
    let mut events = client.events();
    let session = client
        .session(&format!("coap+tcp://{addr}"))
        .build()
        .await
        .unwrap();
    let seen = wait_event(&mut events, |e| matches!(e, SessionEvent::Closed { .. })).await;
    let reason = match seen.last() {
        Some(SessionEvent::Closed { reason, .. }) => reason.clone(),
        _ => unreachable!(),
    };
    assert!(reason.to_lowercase().contains("pong"), "{reason}");
    assert_eq!(session.state(), SessionState::Closed);
    peer.abort();
}

#[tokio::test]
async fn idle_server_connections_are_released_and_reported() {
    let config = StreamConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..default_server_config()
    };
    let (srv, addr) = psk_server(config).await;
    let mut server_events = srv.events();
    let client = Context::builder()
        .psk(psk("dev1", "secret1"))
        .build()
        .await
        .unwrap();
    let r = client
        .get(&format!("coaps+tcp://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(srv.open_connections(), 1);
    wait_event(&mut server_events, |e| {
        matches!(e, SessionEvent::ServerSessionDeleted { .. })
    })
    .await;
    assert_eq!(srv.open_connections(), 0);
    // The client reconnects on its next request.
    let r = client
        .get(&format!("coaps+tcp://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), b"psk:dev1");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_pending_request_fails_at_once_when_the_server_goes() {
    let (srv, addr) = psk_server(default_server_config()).await;
    let client = Context::builder()
        .psk(psk("dev1", "secret1"))
        .build()
        .await
        .unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .get(&format!("coaps+tcp://{addr}/never"))
                .timeout(Duration::from_secs(60))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    srv.shutdown().await;
    drop(srv);
    let e = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the pending request should end")
        .unwrap()
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(
        !matches!(
            e,
            Error::Request(tern::proto::endpoint::RequestError::Timeout)
        ),
        "{e}"
    );
}

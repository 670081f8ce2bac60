//! coaps:// end to end through the runtime: PSK sessions, the peer identity seen by handlers,
//! and clear failures for wrong keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern::proto::endpoint::RequestError;
use tern::{Code, Context, Error, PeerIdentity, Request, Response, Router};
use tern_tls::{DtlsSettings, Psk, PskMap};

async fn dtls_server() -> (Context, std::net::SocketAddr) {
    let store = PskMap::new();
    store.insert(Psk::new("sensor-7", "s3cret").unwrap());
    let router = Router::new().get("/whoami", |r: Request| async move {
        match r.peer_identity() {
            Some(PeerIdentity::Psk(id)) => Response::text(String::from_utf8_lossy(id).into_owned()),
            Some(PeerIdentity::Certificate { .. }) | None => {
                Response::error(Code::UNAUTHORIZED, "no PSK identity")
            }
        }
    });
    let ctx = Context::builder()
        .bind_dtls("127.0.0.1:0".parse().unwrap())
        .dtls_server(DtlsSettings {
            psk_store: Some(Arc::new(store)),
            handshake_timeout: Duration::from_secs(2),
            ..Default::default()
        })
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    (ctx, addr)
}

#[tokio::test]
async fn coaps_get_with_psk_and_the_handler_sees_the_identity() {
    let (server, addr) = dtls_server().await;
    let client = Context::builder()
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .build()
        .await
        .unwrap();
    let r = client
        .get(&format!("coaps://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!((r.code(), r.payload()), (Code::CONTENT, &b"sensor-7"[..]));
    // The session is kept: a second request needs no new handshake and is quick.
    let start = Instant::now();
    let r = client
        .get(&format!("coaps://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert!(start.elapsed() < Duration::from_millis(500));
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_fails_with_a_channel_error() {
    let (server, addr) = dtls_server().await;
    let client = Context::builder()
        .dtls_client(DtlsSettings {
            psk: Some(Psk::new("sensor-7", "wrong").unwrap()),
            handshake_timeout: Duration::from_secs(3),
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    let start = Instant::now();
    let e = client
        .get(&format!("coaps://{addr}/whoami"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Request(RequestError::ChannelFailed(_))),
        "{e}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "failed at the handshake time-out, not the request's"
    );
    // The server keeps serving the right key.
    let good = Context::builder()
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .build()
        .await
        .unwrap();
    let r = good
        .get(&format!("coaps://{addr}/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    server.shutdown().await;
}

#[tokio::test]
async fn plain_coap_does_not_reach_a_dtls_endpoint() {
    let (server, addr) = dtls_server().await;
    let e = Context::client()
        .get(&format!("coap://{addr}/whoami"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Request(RequestError::Timeout)), "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn sessions_have_their_own_credentials_refcounts_and_events() {
    let (server, addr) = dtls_server().await;
    let mut server_events = server.events();
    // A context with no credentials of its own; the session brings its PSK.
    let client = Context::client();
    let session = client
        .session(&format!("coaps://{addr}"))
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .build()
        .await
        .unwrap();
    let mut client_events = client.events();
    assert!(session.is_secure());
    assert!(session.max_pdu_size() < 1280);
    let r = session.get("/whoami").send().await.unwrap();
    assert_eq!(r.payload(), b"sensor-7");
    assert!(
        session.to_string().ends_with(&format!("<-> {addr} DTLS")),
        "{session}"
    );
    session.set_app_data(42u32);
    assert_eq!(session.app_data::<u32>().as_deref(), Some(&42));
    assert!(session.app_data::<String>().is_none());
    // The server saw the handshake start and complete.
    let first = tokio::time::timeout(Duration::from_secs(2), server_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, tern::SessionEvent::HandshakeStarted { .. }),
        "{first:?}"
    );
    let second = tokio::time::timeout(Duration::from_secs(2), server_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(second, tern::SessionEvent::Established { .. }),
        "{second:?}"
    );
    // Two references; dropping one keeps the session, dropping the last closes it (close_notify).
    let other = session.clone();
    assert_eq!(session.reference_count(), 2);
    drop(other);
    let r = session.get("/whoami").send().await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    drop(session);
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(tern::SessionEvent::Closed { reason, .. }) = client_events.recv().await {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(closed.contains("closed locally"), "{closed}");
    let server_closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(tern::SessionEvent::Closed { reason, .. }) = server_events.recv().await {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(server_closed.contains("close_notify"), "{server_closed}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_closes_the_sessions_of_a_withdrawn_identity() {
    let (server, addr) = dtls_server().await;
    let client = Context::builder()
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .build()
        .await
        .unwrap();
    assert_eq!(
        client
            .get(&format!("coaps://{addr}/whoami"))
            .send()
            .await
            .unwrap()
            .code(),
        Code::CONTENT
    );
    assert_eq!(server.close_sessions_with_identity(b"sensor-7").await, 1);
    assert_eq!(server.close_sessions_with_identity(b"sensor-7").await, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn coap_sessions_need_no_credentials_and_refuse_them() {
    let plain = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(Router::new().get("/x", |_| async { Response::text("x") }))
        .build()
        .await
        .unwrap();
    let addr = plain.local_addrs()[0];
    let client = Context::client();
    let session = client
        .session(&format!("coap://{addr}"))
        .build()
        .await
        .unwrap();
    assert_eq!(session.get("/x").send().await.unwrap().payload(), b"x");
    assert!(session.to_string().ends_with("UDP"));
    let e = client
        .session(&format!("coap://{addr}"))
        .psk(Psk::new("a", "b").unwrap())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    let e = client
        .session(&format!("coaps://{addr}"))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoCredentials), "{e}");
    plain.shutdown().await;
}

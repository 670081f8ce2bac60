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

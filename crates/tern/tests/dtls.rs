//! coaps:// end to end through the runtime: PSK sessions, the peer identity seen by handlers,
//! and clear failures for wrong keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern::proto::endpoint::RequestError;
use tern::{
    Code, Context, Error, PeerIdentity, Request, Response, Router, SessionEvent, SessionState,
    Transport,
};
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

/// The next event matching `pick`, skipping others; panics after two seconds.
async fn next_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<SessionEvent>,
    mut pick: impl FnMut(SessionEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(found) = events.recv().await.ok().and_then(&mut pick) {
                return found;
            }
        }
    })
    .await
    .expect("no such event within 2 s")
}

#[tokio::test]
async fn sessions_have_their_own_credentials_refcounts_and_events() {
    let (server, addr) = dtls_server().await;
    let mut server_events = server.events();
    // A context with no credentials of its own; the session brings its PSK.
    let client = Context::client();
    let mut client_events = client.events();
    let session = client
        .session(&format!("coaps://{addr}"))
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .local("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let local = session.local();
    assert_eq!(local.ip(), addr.ip(), "bound where asked");
    let created = next_event(&mut client_events, |e| match e {
        SessionEvent::Created {
            local, transport, ..
        } => Some((local, transport)),
        _ => None,
    })
    .await;
    assert_eq!(created, (local, Transport::Dtls));
    assert!(session.is_secure());
    assert_eq!(session.state(), SessionState::Connecting);
    let r = session.get("/whoami").send().await.unwrap();
    assert_eq!(r.payload(), b"sensor-7");
    assert_eq!(session.state(), SessionState::Established);
    assert_eq!(session.to_string(), format!("{local} <-> {addr} DTLS"));
    session.set_app_data(42u32);
    assert_eq!(session.app_data::<u32>().as_deref(), Some(&42));
    assert!(session.app_data::<String>().is_none());
    // The server saw a session created for this peer, the handshake start and complete.
    let mut seen = Vec::new();
    next_event(&mut server_events, |e| {
        let established = matches!(e, SessionEvent::Established { .. });
        seen.push(e);
        established.then_some(())
    })
    .await;
    assert_eq!(
        seen,
        vec![
            SessionEvent::HandshakeStarted {
                local: addr,
                peer: local
            },
            SessionEvent::ServerSessionCreated {
                local: addr,
                peer: local
            },
            SessionEvent::Established {
                local: addr,
                peer: local
            },
        ]
    );
    // Two references; dropping one keeps the session, dropping the last closes it (close_notify).
    let other = session.clone();
    assert_eq!(session.reference_count(), 2);
    drop(other);
    let r = session.get("/whoami").send().await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    drop(session);
    let closed = next_event(&mut client_events, |e| match e {
        SessionEvent::Closed { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(closed.contains("closed locally"), "{closed}");
    let server_closed = next_event(&mut server_events, |e| match e {
        SessionEvent::Closed { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(server_closed.contains("close_notify"), "{server_closed}");
    let deleted = next_event(&mut server_events, |e| match e {
        SessionEvent::ServerSessionDeleted { peer, reason, .. } => Some((peer, reason)),
        _ => None,
    })
    .await;
    assert_eq!(deleted.0, local);
    assert!(deleted.1.contains("close_notify"), "{}", deleted.1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_closed_session_refuses_requests_and_the_mtu_bounds_them() {
    let (server, addr) = dtls_server().await;
    let client = Context::client();
    let session = client
        .session(&format!("coaps://{addr}"))
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .mtu(1000)
        .build()
        .await
        .unwrap();
    // 1000 less 28 (IPv4 and UDP) less 29 (DTLS record with AES-128-CCM-8).
    assert_eq!(session.max_pdu_size(), 943);
    let big = vec![b'x'; 1200];
    let e = session
        .put("/whoami")
        .payload(big)
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { max: 943, .. }), "{e}");
    assert!(session.set_mtu(200).is_err(), "below the minimum");
    session.set_mtu(1500).unwrap();
    assert_eq!(session.max_pdu_size(), 1443);
    // A request that fits goes.
    let r = session.get("/whoami").send().await.unwrap();
    assert_eq!(r.payload(), b"sensor-7");
    // Closed while another handle is held: both refuse requests from now on.
    let other = session.clone();
    session.close();
    assert!(matches!(
        session.state(),
        SessionState::Closing | SessionState::Closed
    ));
    let e = other.get("/whoami").send().await.unwrap_err();
    assert!(matches!(e, Error::SessionClosed), "{e}");
    tokio::time::timeout(Duration::from_secs(2), async {
        while other.state() != SessionState::Closed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the session reaches Closed");
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_cannot_reach_a_peer_without_a_session_and_says_so_at_once() {
    let (server, _addr) = dtls_server().await;
    // The server endpoint has no client credentials: a request to a peer it has no session
    // with fails at once with a reason, not after the retransmission time-out.
    let bound = server.local_addrs()[0];
    let started = Instant::now();
    let e = server
        .send_secure(
            "127.0.0.1:9".parse().unwrap(),
            tern::proto::Message::new(tern::proto::MessageType::Con, Code::GET),
            Default::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoCredentials), "{e} (via {bound})");
    assert!(started.elapsed() < Duration::from_secs(1));
    server.shutdown().await;
}

#[tokio::test]
async fn the_client_key_store_adds_and_removes_keys_per_peer() {
    let (server, addr) = dtls_server().await;
    let client = Context::client();
    let uri = format!("coaps://{addr}/whoami");
    // No key for the peer: refused before any traffic.
    let e = client.get(&uri).send().await.unwrap_err();
    assert!(matches!(e, Error::NoCredentials), "{e}");
    client
        .add_peer_psk(
            &format!("coaps://{addr}"),
            Psk::new("sensor-7", "s3cret").unwrap(),
        )
        .await
        .unwrap();
    let r = client.get(&uri).send().await.unwrap();
    assert_eq!(r.payload(), b"sensor-7");
    // Sessions made for that peer without credentials of their own use the stored key.
    let session = client
        .session(&format!("coaps://{addr}"))
        .build()
        .await
        .unwrap();
    assert_eq!(
        session.get("/whoami").send().await.unwrap().payload(),
        b"sensor-7"
    );
    // Removed and live channels closed: the next request has no key.
    let mut events = client.events();
    assert!(client
        .remove_peer_credentials(&format!("coaps://{addr}"), true)
        .await
        .unwrap());
    let reason = next_event(&mut events, |e| match e {
        SessionEvent::Closed { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert!(reason.contains("closed locally"), "{reason}");
    let e = client.get(&uri).send().await.unwrap_err();
    assert!(matches!(e, Error::NoCredentials), "{e}");
    let e = client
        .add_peer_psk("coap://127.0.0.1", Psk::new("a", "b").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
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

#[tokio::test]
async fn alerts_from_the_peer_are_reported() {
    let (server, addr) = dtls_server().await;
    let mut server_events = server.events();
    let client = Context::client();
    let mut client_events = client.events();
    // An identity the server does not know: it answers with a fatal alert.
    let stranger = client
        .session(&format!("coaps://{addr}"))
        .psk(Psk::new("stranger", "s3cret").unwrap())
        .build()
        .await
        .unwrap();
    let e = stranger
        .get("/whoami")
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Request(RequestError::ChannelFailed(_))),
        "{e}"
    );
    let alert = next_event(&mut client_events, |e| match e {
        SessionEvent::AlertReceived { alert, .. } => Some(alert),
        _ => None,
    })
    .await;
    assert_eq!(alert.name(), "unknown_psk_identity", "{alert}");
    assert!(alert.is_fatal());
    // A session released cleanly: the server receives close_notify.
    let session = client
        .session(&format!("coaps://{addr}"))
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .build()
        .await
        .unwrap();
    session.get("/whoami").send().await.unwrap();
    drop(session);
    let alert = next_event(&mut server_events, |e| match e {
        SessionEvent::AlertReceived { alert, .. } => Some(alert),
        _ => None,
    })
    .await;
    assert_eq!(alert, tern_tls::Alert::CLOSE_NOTIFY);
    server.shutdown().await;
}

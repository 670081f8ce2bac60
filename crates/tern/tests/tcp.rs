//! CoAP over TCP (RFC 8323) end to end on loopback: a server context listening on TCP and
//! client contexts and sessions connecting to it; large bodies whole and block-wise,
//! handlers that wait, connection reuse and reconnection, caps, stalled and silent peers,
//! and session events.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern::proto::stream::StreamConfig;
use tern::proto::uri::Scheme;
use tern::{
    default_server_config, Code, Context, Error, Request, Response, Router, SessionEvent,
    SessionState, StreamLimits, Transport,
};

fn router() -> Router {
    Router::new()
        .get("/hello", |_| async { Response::text("hello over tcp") })
        .post("/echo", |r: Request| async move {
            Response::new(Code::CHANGED).with_payload(r.payload().to_vec())
        })
        .get("/big", |_| async {
            Response::new(Code::CONTENT).with_payload(pattern(300_000))
        })
        .get("/slow", |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Response::text("finally")
        })
        .get("/never", |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::text("too late")
        })
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn server_with(config: StreamConfig, limits: StreamLimits) -> (Context, SocketAddr) {
    let ctx = Context::builder()
        .bind_tcp("127.0.0.1:0".parse().unwrap())
        .stream_server_config(config)
        .stream_limits(limits)
        .router(router())
        .build()
        .await
        .unwrap();
    let addr = ctx.listen_addrs(Scheme::CoapTcp)[0];
    (ctx, addr)
}

async fn server() -> (Context, SocketAddr) {
    server_with(default_server_config(), StreamLimits::default()).await
}

#[tokio::test]
async fn get_post_and_not_found() {
    let (srv, addr) = server().await;
    let client = Context::client();
    let r = client
        .get(&format!("coap+tcp://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.code(), r.payload()),
        (Code::CONTENT, &b"hello over tcp"[..])
    );
    let r = client
        .post(&format!("coap+tcp://{addr}/echo"))
        .payload("ping")
        .send()
        .await
        .unwrap();
    assert_eq!((r.code(), r.payload()), (Code::CHANGED, &b"ping"[..]));
    let r = client
        .get(&format!("coap+tcp://{addr}/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::NOT_FOUND);
    // One connection carried all three.
    assert_eq!(srv.open_connections(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn large_bodies_go_whole_and_block_wise() {
    let (srv, addr) = server().await;
    let client = Context::client();
    // 300 kB fits the default Max-Message-Size: one message each way.
    let r = client
        .get(&format!("coap+tcp://{addr}/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), &pattern(300_000)[..]);
    let body = pattern(200_000);
    let r = client
        .post(&format!("coap+tcp://{addr}/echo"))
        .payload(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!((r.code(), r.payload().len()), (Code::CHANGED, body.len()));
    assert_eq!(r.payload(), &body[..]);
    // With a block size asked for, both directions go in blocks of that size.
    let r = client
        .post(&format!("coap+tcp://{addr}/echo"))
        .payload(body.clone())
        .block_size(512)
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), &body[..]);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_small_max_message_size_makes_the_server_slice_responses() {
    let (srv, addr) = server().await;
    let client = Context::builder()
        .stream_client_config(StreamConfig {
            max_message_size: 1152,
            ..StreamConfig::default()
        })
        .build()
        .await
        .unwrap();
    let r = client
        .get(&format!("coap+tcp://{addr}/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), &pattern(300_000)[..]);
    srv.shutdown().await;
}

/// BERT (RFC 8323 §6): to a client whose Max-Message-Size holds several 1024-byte units, a
/// larger response goes in BERT blocks of as many units as fit, so a 300 kB body takes about
/// 300/7 round trips instead of 300.
#[tokio::test]
async fn responses_larger_than_the_clients_max_message_size_go_in_bert_blocks() {
    let (srv, addr) = server().await;
    let client = Context::builder()
        .stream_client_config(StreamConfig {
            max_message_size: 8192,
            ..StreamConfig::default()
        })
        .build()
        .await
        .unwrap();
    let trips = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = trips.clone();
    let r = client
        .get(&format!("coap+tcp://{addr}/big"))
        .on_progress(move |_| {
            t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), &pattern(300_000)[..]);
    let trips = trips.load(std::sync::atomic::Ordering::SeqCst);
    assert!((40..=50).contains(&trips), "{trips} round trips");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_body_larger_than_the_servers_max_message_size_goes_block_wise() {
    let config = StreamConfig {
        max_message_size: 1152,
        ..default_server_config()
    };
    let (srv, addr) = server_with(config, StreamLimits::default()).await;
    let client = Context::client();
    let body = pattern(50_000);
    let r = client
        .post(&format!("coap+tcp://{addr}/echo"))
        .payload(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!((r.code(), r.payload()), (Code::CHANGED, &body[..]));
    srv.shutdown().await;
}

/// RFC 8323 §5.3.2: a peer without Block-Wise-Transfer in its CSM gets nothing in blocks. A
/// server answers a response larger than such a client's Max-Message-Size with 5.00; a client
/// does not split a body larger than such a server's Max-Message-Size, it fails clearly.
#[tokio::test]
async fn peers_without_block_wise_transfer_get_no_blocks() {
    let (srv, addr) = server().await;
    let no_blocks = StreamConfig {
        max_message_size: 1152,
        block_wise_transfer: false,
        ..StreamConfig::default()
    };
    let client = Context::builder()
        .stream_client_config(no_blocks)
        .build()
        .await
        .unwrap();
    let r = client
        .get(&format!("coap+tcp://{addr}/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::INTERNAL_SERVER_ERROR);
    // Small responses are unaffected.
    let r = client
        .get(&format!("coap+tcp://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    srv.shutdown().await;

    let config = StreamConfig {
        max_message_size: 1152,
        block_wise_transfer: false,
        ..default_server_config()
    };
    let (srv, addr) = server_with(config, StreamLimits::default()).await;
    let e = Context::client()
        .post(&format!("coap+tcp://{addr}/echo"))
        .payload(pattern(50_000))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            tern::Error::Request(tern::proto::endpoint::RequestError::TooLargeForPeer { .. })
        ),
        "{e}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn slow_handlers_answer_later_and_concurrent_requests_share_the_connection() {
    let (srv, addr) = server().await;
    let client = Context::client();
    let slow = client.get(&format!("coap+tcp://{addr}/slow")).send();
    let fast = client.get(&format!("coap+tcp://{addr}/hello")).send();
    let (slow, fast) = tokio::join!(slow, fast);
    assert_eq!(slow.unwrap().payload(), b"finally");
    assert_eq!(fast.unwrap().payload(), b"hello over tcp");
    assert_eq!(srv.open_connections(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_request_times_out_and_the_connection_stays_usable() {
    let (srv, addr) = server().await;
    let client = Context::client();
    let started = Instant::now();
    let e = client
        .get(&format!("coap+tcp://{addr}/never"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Request(tern::proto::endpoint::RequestError::Timeout)
        ),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = client
        .get(&format!("coap+tcp://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    srv.shutdown().await;
}

#[tokio::test]
async fn no_server_is_a_clear_error() {
    // A port nobody listens on: bind one, note it, close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Context::client();
    let e = client
        .get(&format!("coap+tcp://{addr}/hello"))
        .send()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");
}

#[tokio::test]
async fn a_client_reconnects_after_the_server_closed_its_connection() {
    let (srv, addr) = server().await;
    let client = Context::client();
    let uri = format!("coap+tcp://{addr}/hello");
    assert_eq!(client.get(&uri).send().await.unwrap().code(), Code::CONTENT);
    srv.shutdown().await;
    drop(srv);
    // A new server on the same port; the old connection is gone.
    let srv = Context::builder()
        .bind_tcp(addr)
        .router(router())
        .build()
        .await
        .unwrap();
    let mut last = None;
    for _ in 0..20 {
        match client.get(&uri).send().await {
            Ok(r) => {
                last = Some(r.code());
                break;
            }
            Err(e) => {
                // The first request may still go to the dead connection and fail clearly.
                let text = e.to_string();
                assert!(
                    text.contains("closed")
                        || text.contains("connection")
                        || text.contains("reset"),
                    "{text}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(last, Some(Code::CONTENT));
    srv.shutdown().await;
}

#[tokio::test]
async fn the_connection_cap_refuses_more_connections() {
    let limits = StreamLimits {
        max_connections: 2,
        ..StreamLimits::default()
    };
    let (srv, addr) = server_with(default_server_config(), limits).await;
    let mut sessions = Vec::new();
    let client = Context::client();
    for _ in 0..2 {
        let s = client
            .session(&format!("coap+tcp://{addr}"))
            .build()
            .await
            .unwrap();
        assert_eq!(s.get("/hello").send().await.unwrap().code(), Code::CONTENT);
        sessions.push(s);
    }
    assert_eq!(srv.open_connections(), 2);
    let third = client
        .session(&format!("coap+tcp://{addr}"))
        .build()
        .await
        .unwrap();
    let e = third
        .get("/hello")
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .unwrap_err();
    assert!(!e.to_string().is_empty());
    let usage = srv.usage().await;
    assert_eq!(usage.stream_connections.held, 2, "{usage}");
    assert!(usage.stream_connections.turned_away >= 1, "{usage}");
    // The first two still work.
    for s in &sessions {
        assert_eq!(s.get("/hello").send().await.unwrap().code(), Code::CONTENT);
    }
    srv.shutdown().await;
}

/// Reads from a raw socket until `deadline`, returning what arrived and whether the server
/// closed the connection.
fn read_until_closed(stream: &mut std::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// An empty CSM frame: Len 0, TKL 0, code 7.01.
const CSM: [u8; 2] = [0x00, 0xe1];

#[tokio::test]
async fn a_peer_that_stalls_mid_frame_is_cut_off() {
    let config = StreamConfig {
        stall_timeout: Duration::from_millis(300),
        ..default_server_config()
    };
    let (srv, addr) = server_with(config, StreamLimits::default()).await;
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(&CSM).unwrap();
    // The start of a GET frame with 10 bytes of options promised and none sent.
    raw.write_all(&[0xa0, 0x01]).unwrap();
    let (_, closed) =
        tokio::task::spawn_blocking(move || read_until_closed(&mut raw, Duration::from_secs(5)))
            .await
            .unwrap();
    assert!(closed, "the stalled connection should be closed");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_peer_without_a_csm_is_aborted() {
    let config = StreamConfig {
        csm_timeout: Duration::from_millis(300),
        ..default_server_config()
    };
    let (srv, addr) = server_with(config, StreamLimits::default()).await;
    // Connects and says nothing.
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    // Connects and sends a GET first, not a CSM.
    let mut rude = std::net::TcpStream::connect(addr).unwrap();
    rude.write_all(&[0x00, 0x01]).unwrap();
    let (silent_closed, rude_got) = tokio::task::spawn_blocking(move || {
        let (_, silent_closed) = read_until_closed(&mut silent, Duration::from_secs(5));
        let (got, rude_closed) = read_until_closed(&mut rude, Duration::from_secs(5));
        assert!(rude_closed);
        (silent_closed, got)
    })
    .await
    .unwrap();
    assert!(silent_closed, "a connection without a CSM should be closed");
    // The server's CSM, then an Abort (7.05 = 0xe5) before the close.
    assert!(rude_got.windows(1).count() >= 4, "{rude_got:02x?}");
    assert!(
        rude_got.iter().skip(1).any(|&b| b == 0xe5),
        "expected an Abort in {rude_got:02x?}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_is_aborted() {
    let config = StreamConfig {
        max_message_size: 2048,
        ..default_server_config()
    };
    let (srv, addr) = server_with(config, StreamLimits::default()).await;
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(&CSM).unwrap();
    // Len 14: a two-byte extended length of 269 + 60000 bytes announced.
    let extended = (60_000u16).to_be_bytes();
    raw.write_all(&[0xe0, extended[0], extended[1], 0x02])
        .unwrap();
    let (got, closed) =
        tokio::task::spawn_blocking(move || read_until_closed(&mut raw, Duration::from_secs(5)))
            .await
            .unwrap();
    assert!(closed);
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("Max-Message-Size"), "{got:02x?}");
    srv.shutdown().await;
}

#[tokio::test]
async fn sessions_over_tcp_report_events_and_release_on_drop() {
    let (srv, addr) = server().await;
    let mut server_events = srv.events();
    let client = Context::client();
    let mut events = client.events();
    let session = client
        .session(&format!("coap+tcp://{addr}"))
        .build()
        .await
        .unwrap();
    assert_eq!(session.transport(), Transport::Tcp);
    assert!(!session.is_secure());
    assert!(
        session.to_string().ends_with(&format!("{addr} TCP")),
        "{session}"
    );
    let r = session.get("/hello").send().await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(session.state(), SessionState::Established);
    // The server announced its Max-Message-Size in its CSM.
    assert_eq!(
        session.max_pdu_size(),
        default_server_config().max_message_size as usize
    );
    let copy = session.clone();
    assert_eq!(session.reference_count(), 2);
    drop(copy);
    drop(session);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Ok(Ok(e)) => {
                let closed = matches!(e, SessionEvent::Closed { .. });
                seen.push(e);
                if closed {
                    break;
                }
            }
            _ => continue,
        }
    }
    assert!(
        matches!(seen.first(), Some(SessionEvent::Created { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, SessionEvent::Established { .. })),
        "{seen:?}"
    );
    assert!(
        matches!(seen.last(), Some(SessionEvent::Closed { .. })),
        "{seen:?}"
    );
    // The server saw the connection come and go.
    let mut created = false;
    let mut deleted = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !(created && deleted) {
        match tokio::time::timeout(Duration::from_millis(200), server_events.recv()).await {
            Ok(Ok(SessionEvent::ServerSessionCreated { .. })) => created = true,
            Ok(Ok(SessionEvent::ServerSessionDeleted { .. })) => deleted = true,
            _ => {}
        }
    }
    assert!(created && deleted);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_closed_session_fails_its_requests_clearly() {
    let (srv, addr) = server().await;
    let client = Context::client();
    let session = client
        .session(&format!("coap+tcp://{addr}"))
        .build()
        .await
        .unwrap();
    let pending = {
        let s = session.clone();
        tokio::spawn(async move { s.get("/never").send().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    session.close();
    let e = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the pending request should end")
        .unwrap()
        .unwrap_err();
    assert!(!e.to_string().is_empty());
    assert!(matches!(
        session.get("/hello").send().await,
        Err(Error::SessionClosed)
    ));
    srv.shutdown().await;
}

#[tokio::test]
async fn the_handshake_cap_refuses_connections_while_silent_ones_hold_it() {
    let limits = StreamLimits {
        max_handshaking: 2,
        ..StreamLimits::default()
    };
    let config = StreamConfig {
        csm_timeout: Duration::from_millis(500),
        ..default_server_config()
    };
    let (srv, addr) = server_with(config, limits).await;
    // Two connections that never send their CSM hold both handshake slots.
    let silent: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third is closed at once: it reads the end of the stream, not a CSM.
    let mut third = std::net::TcpStream::connect(addr).unwrap();
    let (got, closed) =
        tokio::task::spawn_blocking(move || read_until_closed(&mut third, Duration::from_secs(3)))
            .await
            .unwrap();
    assert!(closed && got.is_empty(), "{got:02x?}");
    let usage = srv.usage().await;
    assert_eq!(usage.stream_handshakes.held, 2, "{usage}");
    assert_eq!(usage.stream_handshakes.turned_away, 1, "{usage}");
    // Once the silent ones time out, clients get in again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let client = Context::client();
    let r = client
        .get(&format!("coap+tcp://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    drop(silent);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_release_with_hold_off_and_alternative_address_is_honoured() {
    use tern::proto::stream::{frame, signal::Release};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The real server the peer sends clients to.
    let (srv, alternative) = server().await;
    // A peer that exchanges CSMs, then releases every connection: come back in 1 s, elsewhere.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Release {
        alternative_address: Some(alternative.to_string()),
        hold_off: Some(Duration::from_secs(1)),
        diagnostic: String::new(),
    };
    let release = frame::to_bytes(&release.to_message()).unwrap();
    let peer = tokio::spawn(async move {
        // Bounded: the test makes one connection here.
        if let Ok((mut socket, _)) = listener.accept().await {
            socket.write_all(&CSM).await.unwrap();
            let mut buf = [0u8; 256];
            let _ = socket.read(&mut buf).await;
            socket.write_all(&release).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
        }
    });
    let client = Context::client();
    let uri = format!("coap+tcp://{addr}/hello");
    // The first request meets the Release; the retry finds the Hold-Off still running.
    let e = client
        .get(&uri)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Hold-Off"), "{e}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // After it, the next connection goes to the Alternative-Address.
    let r = client.get(&uri).send().await.unwrap();
    assert_eq!(
        (r.code(), r.payload()),
        (Code::CONTENT, &b"hello over tcp"[..])
    );
    assert_eq!(srv.open_connections(), 1);
    peer.abort();
    srv.shutdown().await;
}

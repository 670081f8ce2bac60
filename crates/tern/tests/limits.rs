//! Every resource a peer can make the server hold, pushed past its cap on loopback: the cap
//! holds, [`Context::usage`] shows it held and counts what was turned away, and the server
//! keeps serving (graceful degradation rather than growth).
//!
//! Covered here: message-layer peers, requests being handled, deduplication entries, DTLS
//! sessions and handshakes, observers, Block1 transfers, the Block2 cache, and bytes buffered
//! for a stream connection whose peer does not read. Stream connections and stream
//! handshakes are pushed past their caps in `tcp.rs`, which checks the same gauges.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern::proto::block::{Block1Config, Block2Config};
use tern::proto::observe::{observe_value, RegistryConfig};
use tern::proto::uri::Scheme;
use tern::proto::{Code, EndpointConfig, Message, MessageType, OptionNumber, Token};
use tern::tls::{DtlsChannel, DtlsContext, DtlsLimits, DtlsSettings, Psk, PskMap};
use tern::{Context, Request, Resource, Response, Router};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 % 251) as u8).collect()
}

/// `/hello`, `/slow` (answers after 2 s), `/obs` (observable), `/big` (GET 8 kB), `/sink`
/// (PUT: answers the body's length).
fn router() -> Router {
    Router::new()
        .get("/hello", |_| async { Response::text("hello") })
        .get("/slow", |_| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Response::text("finally")
        })
        .resource(
            "/obs",
            Resource::new()
                .get(|_| async { Response::text("now") })
                .obs(),
        )
        .get("/big", |_| async { Response::content(body(8192)) })
        .put("/sink", |r: Request| async move {
            Response::new(Code::CHANGED).with_payload(r.payload().len().to_string().into_bytes())
        })
}

async fn udp_server(config: EndpointConfig, router: Router) -> (Context, SocketAddr) {
    let ctx = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .endpoint_config(config)
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    (ctx, addr)
}

/// A CON request from a raw socket.
fn con(mid: u16, token: u8, code: Code, path: &str) -> Message {
    let mut m = Message::new(MessageType::Con, code);
    m.mid = mid;
    m.token = Token::new(&[token]).unwrap();
    m.set_path(path);
    m
}

async fn raw_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn send(socket: &UdpSocket, to: SocketAddr, m: &Message) {
    socket.send_to(&m.to_bytes().unwrap(), to).await.unwrap();
}

/// The next message on a raw socket, if one arrives within `wait`.
async fn receive(socket: &UdpSocket, wait: Duration) -> Option<Message> {
    let mut buf = [0u8; 2048];
    let (n, _) = timeout(wait, socket.recv_from(&mut buf)).await.ok()?.ok()?;
    Message::decode(&buf[..n]).ok()
}

/// The server still answers a fresh client at once.
async fn still_serves(addr: SocketAddr) {
    let client = Context::client();
    let r = timeout(WAIT, client.get(&format!("coap://{addr}/hello")).send())
        .await
        .expect("the server stopped answering")
        .unwrap();
    assert_eq!(r.payload(), b"hello");
}

#[tokio::test]
async fn the_peer_table_drops_new_peers_while_full_of_busy_ones() {
    let config = EndpointConfig {
        max_peers: 4,
        ..EndpointConfig::default()
    };
    let (srv, addr) = udp_server(config, router()).await;
    // Eight peers ask for /slow at once: four are held (busy until answered), four dropped.
    let mut sockets = Vec::new();
    for i in 0..8u16 {
        let s = raw_socket().await;
        send(&s, addr, &con(i, 1, Code::GET, "slow")).await;
        sockets.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let usage = srv.usage().await;
    assert_eq!(usage.peers.cap, 4);
    assert_eq!(usage.peers.held, 4, "{usage}");
    assert!(usage.peers.turned_away >= 4, "{usage}");
    // The four held get their answers; the table then has room again (idle peers go first).
    let mut answered = 0;
    for s in &sockets[..4] {
        // An empty ACK first, then the response as a CON of its own, which we acknowledge
        // (until then the server is still busy with the peer, retransmitting it).
        for _ in 0..2 {
            if let Some(m) = receive(s, WAIT).await {
                if m.code == Code::CONTENT {
                    let mut ack = Message::new(MessageType::Ack, Code::EMPTY);
                    ack.mid = m.mid;
                    send(s, addr, &ack).await;
                    answered += 1;
                    break;
                }
            }
        }
    }
    assert_eq!(answered, 4);
    still_serves(addr).await;
    assert!(srv.usage().await.peers.held <= 4);
}

#[tokio::test]
async fn requests_past_the_pending_cap_get_5_03() {
    let config = EndpointConfig {
        max_pending_incoming: 3,
        ..EndpointConfig::default()
    };
    let (srv, addr) = udp_server(config, router()).await;
    let mut sockets = Vec::new();
    for i in 0..8u16 {
        let s = raw_socket().await;
        send(&s, addr, &con(i, 1, Code::GET, "slow")).await;
        sockets.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let usage = srv.usage().await;
    assert_eq!(usage.pending_requests.held, 3, "{usage}");
    assert_eq!(usage.pending_requests.turned_away, 5, "{usage}");
    // Five got 5.03 Service Unavailable at once (piggybacked).
    let mut unavailable = 0;
    for s in &sockets {
        if let Some(m) = receive(s, Duration::from_millis(300)).await {
            if m.code == Code::SERVICE_UNAVAILABLE {
                unavailable += 1;
            }
        }
    }
    assert_eq!(unavailable, 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    still_serves(addr).await;
}

#[tokio::test]
async fn deduplication_entries_are_evicted_past_their_caps() {
    let config = EndpointConfig {
        dedup_per_peer: 8,
        dedup_total: 20,
        ..EndpointConfig::default()
    };
    let (srv, addr) = udp_server(config, router()).await;
    // Four peers, 30 requests each with fresh message IDs: each answered, each remembered.
    for p in 0..4u16 {
        let s = raw_socket().await;
        for i in 0..30u16 {
            send(&s, addr, &con(p * 100 + i, 1, Code::GET, "hello")).await;
            let m = receive(&s, WAIT).await.expect("answer");
            assert_eq!(m.code, Code::CONTENT);
        }
    }
    let usage = srv.usage().await;
    assert!(usage.dedup_entries.held <= 20, "{usage}");
    assert_eq!(usage.dedup_entries.cap, 20);
    // 120 remembered, at most 20 kept.
    assert!(usage.dedup_entries.turned_away >= 100, "{usage}");
    still_serves(addr).await;
}

fn psk_store() -> Arc<PskMap> {
    let store = PskMap::new();
    for i in 0..8 {
        store.insert(Psk::new(format!("device-{i}"), "secret").unwrap());
    }
    Arc::new(store)
}

async fn dtls_server(limits: DtlsLimits) -> (Context, SocketAddr) {
    let ctx = Context::builder()
        .bind_dtls("127.0.0.1:0".parse().unwrap())
        .dtls_server(DtlsSettings {
            psk_store: Some(psk_store()),
            handshake_timeout: Duration::from_secs(30),
            ..Default::default()
        })
        .dtls_limits(limits)
        .router(router())
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    (ctx, addr)
}

async fn dtls_client(i: usize) -> Context {
    Context::builder()
        .psk(Psk::new(format!("device-{i}"), "secret").unwrap())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn dtls_sessions_past_the_cap_evict_the_least_recently_used() {
    let limits = DtlsLimits {
        max_channels: 2,
        ..DtlsLimits::default()
    };
    let (srv, addr) = dtls_server(limits).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        let c = dtls_client(i).await;
        let r = c
            .get(&format!("coaps://{addr}/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.payload(), b"hello");
        clients.push(c);
    }
    let usage = srv.usage().await;
    assert_eq!(usage.dtls_sessions.held, 2, "{usage}");
    assert_eq!(usage.dtls_sessions.turned_away, 2, "{usage}");
    // The newest sessions work; an evicted client handshakes again and gets in (evicting).
    let r = clients[3]
        .get(&format!("coaps://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), b"hello");
    let r = timeout(
        Duration::from_secs(20),
        clients[0].get(&format!("coaps://{addr}/hello")).send(),
    )
    .await
    .expect("an evicted client gets back in")
    .unwrap();
    assert_eq!(r.payload(), b"hello");
    assert!(srv.usage().await.dtls_sessions.held <= 2);
}

/// Starts a DTLS handshake over a raw socket and stops after the server has taken it on (the
/// cookie exchange passed and the server's flight arrived), holding a handshake slot; returns
/// whether the server answered the second ClientHello.
async fn stalled_handshake(socket: &UdpSocket, addr: SocketAddr, identity: &str) -> bool {
    let ctx = DtlsContext::client(DtlsSettings {
        psk: Some(Psk::new(identity, "secret").unwrap()),
        ..Default::default()
    })
    .unwrap();
    let mut channel = DtlsChannel::connect(&ctx, tern_now()).unwrap();
    // Flight 1 (ClientHello) → HelloVerifyRequest → flight 3 (ClientHello with the cookie).
    for flight in 0..2 {
        while let Some(d) = channel.poll_transmit() {
            socket.send_to(&d, addr).await.unwrap();
        }
        let mut buf = [0u8; 4096];
        let Ok(Ok((n, _))) = timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await
        else {
            return false;
        };
        if flight == 1 {
            // The server's flight 4 (ServerHello...): it holds a channel for us now.
            return n > 0;
        }
        channel.handle_datagram(tern_now(), &buf[..n]);
    }
    false
}

fn tern_now() -> std::time::Instant {
    std::time::Instant::now()
}

#[tokio::test]
async fn dtls_handshakes_past_the_cap_are_refused_while_sessions_keep_working() {
    let limits = DtlsLimits {
        max_handshaking: 2,
        ..DtlsLimits::default()
    };
    let (srv, addr) = dtls_server(limits).await;
    let established = dtls_client(0).await;
    let hello = format!("coaps://{addr}/hello");
    assert_eq!(
        established.get(&hello).send().await.unwrap().payload(),
        b"hello"
    );
    // Two handshakes that stop half-way hold both slots; a third gets no answer.
    let sockets = [raw_socket().await, raw_socket().await, raw_socket().await];
    assert!(stalled_handshake(&sockets[0], addr, "device-1").await);
    assert!(stalled_handshake(&sockets[1], addr, "device-2").await);
    assert!(!stalled_handshake(&sockets[2], addr, "device-3").await);
    let usage = srv.usage().await;
    assert_eq!(usage.dtls_handshakes.held, 2, "{usage}");
    assert!(usage.dtls_handshakes.turned_away >= 1, "{usage}");
    // The established session is unaffected.
    assert_eq!(
        established.get(&hello).send().await.unwrap().payload(),
        b"hello"
    );
}

#[tokio::test]
async fn observers_past_the_cap_are_served_without_observe() {
    let router = router().observe_limits(RegistryConfig {
        max_total: 3,
        ..RegistryConfig::default()
    });
    let (srv, addr) = udp_server(EndpointConfig::default(), router).await;
    let mut observed = 0;
    for i in 0..5u16 {
        let s = raw_socket().await;
        let mut m = con(i, 7, Code::GET, "obs");
        m.options.set_uint(OptionNumber::OBSERVE, 0);
        send(&s, addr, &m).await;
        let answer = receive(&s, WAIT).await.expect("answer");
        assert_eq!(answer.code, Code::CONTENT);
        if observe_value(&answer).is_some() {
            observed += 1;
        }
    }
    assert_eq!(observed, 3);
    let usage = srv.usage().await;
    assert_eq!(usage.observers.held, 3, "{usage}");
    assert_eq!(usage.observers.turned_away, 2, "{usage}");
    still_serves(addr).await;
}

#[tokio::test]
async fn block1_transfers_past_the_cap_get_5_03_and_complete_ones_still_work() {
    let router = router().block_limits(
        Block1Config {
            max_transfers: 3,
            ..Block1Config::default()
        },
        Block2Config::default(),
    );
    let (srv, addr) = udp_server(EndpointConfig::default(), router).await;
    // Five peers each send the first of several blocks and stop.
    let mut codes = Vec::new();
    for i in 0..5u16 {
        let s = raw_socket().await;
        let mut m = con(i, 3, Code::PUT, "sink");
        // Block1: NUM 0, M set, SZX 2 (64 bytes).
        m.options.set_uint(OptionNumber::BLOCK1, 0b1010);
        m.payload = vec![0x42; 64];
        send(&s, addr, &m).await;
        codes.push(receive(&s, WAIT).await.expect("answer").code);
    }
    assert_eq!(
        codes.iter().filter(|c| **c == Code::CONTINUE).count(),
        3,
        "{codes:?}"
    );
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Code::SERVICE_UNAVAILABLE)
            .count(),
        2,
        "{codes:?}"
    );
    let usage = srv.usage().await;
    assert_eq!(usage.block1_transfers.held, 3, "{usage}");
    assert_eq!(usage.block1_transfers.turned_away, 2, "{usage}");
    // A whole body that fits in one request still goes through.
    let client = Context::client();
    let r = client
        .put(&format!("coap://{addr}/sink"))
        .payload(vec![1u8; 500])
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), b"500");
}

#[tokio::test]
async fn the_block2_cache_evicts_past_its_byte_cap_and_bodies_are_regenerated() {
    let router = router().block_limits(
        Block1Config::default(),
        Block2Config {
            max_cached_bytes: 20_000,
            ..Block2Config::default()
        },
    );
    let (srv, addr) = udp_server(EndpointConfig::default(), router).await;
    // Eight peers fetch the first block of the 8 kB body and stop: each body is cached.
    for i in 0..8u16 {
        let s = raw_socket().await;
        send(&s, addr, &con(i, 5, Code::GET, "big")).await;
        let m = receive(&s, WAIT).await.expect("answer");
        assert_eq!(m.code, Code::CONTENT);
    }
    let usage = srv.usage().await;
    assert!(usage.block2_cached_bytes.held <= 20_000, "{usage}");
    assert!(usage.block2_cached_bytes.turned_away >= 5, "{usage}");
    // A whole block-wise GET still gets the whole body.
    let client = Context::client();
    let r = client
        .get(&format!("coap://{addr}/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), body(8192).as_slice());
}

#[tokio::test]
async fn a_stream_peer_that_does_not_read_stops_being_read_and_others_are_served() {
    use std::io::Write;
    let ctx = Context::builder()
        .bind_tcp("127.0.0.1:0".parse().unwrap())
        .router(router())
        .build()
        .await
        .unwrap();
    let addr = ctx.listen_addrs(Scheme::CoapTcp)[0];
    // A raw connection: CSM, then GET /big requests as fast as the socket takes them, never
    // reading a response.
    let writer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        // An empty CSM: length 0, TKL 0, code 7.01.
        stream.write_all(&[0x00, 0xe1]).unwrap();
        let mut request = Message::new(MessageType::Con, Code::GET);
        request.set_path("big");
        let mut frame = Vec::new();
        tern::proto::stream::frame::encode(&request, &mut frame).unwrap();
        let mut written = 0usize;
        // Bounded: stops when the server stops reading (the write times out) or at 64 MiB.
        while written < 64 << 20 {
            match stream.write(&frame) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        (stream, written)
    });
    let (stream, written) = timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer is bounded")
        .unwrap();
    let usage = ctx.usage().await;
    eprintln!("wrote {written} bytes of requests without reading; {usage}");
    assert!(
        usage.stream_buffered_bytes.turned_away >= 1,
        "wrote {written} bytes; {usage}"
    );
    // Held output stays near the per-connection bound (1 MiB), plus what one read's worth of
    // requests produced before the check (measured: 1.06 MiB).
    assert!(
        usage.stream_buffered_bytes.held <= 2 << 20,
        "wrote {written} bytes; {usage}"
    );
    assert!(written < 64 << 20, "the server kept reading: {usage}");
    // Another connection is served meanwhile.
    let client = Context::client();
    let r = timeout(WAIT, client.get(&format!("coap+tcp://{addr}/hello")).send())
        .await
        .expect("served while the other peer stalls")
        .unwrap();
    assert_eq!(r.payload(), b"hello");
    drop(stream);
}

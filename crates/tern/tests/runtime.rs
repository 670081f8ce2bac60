//! The runtime end to end on loopback: a server context and a client context talking over real
//! UDP sockets, covering piggybacked, separate and NON responses, errors and shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern::proto::endpoint::RequestError;
use tern::proto::EndpointConfig;
use tern::{Code, ContentFormat, Context, Error, Request, Resource, Response, Router};

async fn server(config: EndpointConfig) -> (Context, SocketAddr) {
    let router = Router::new()
        .resource(
            "/hello",
            Resource::new()
                .get(|_| async { Response::text("hello") })
                .rt("greeting"),
        )
        .post("/echo", |r: Request| async move {
            Response::new(Code::CHANGED).with_payload(r.payload().to_vec())
        })
        .get("/slow", |_| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Response::text("finally")
        })
        .get("/peer", |r: Request| async move {
            Response::text(r.peer().to_string())
        })
        .get("/panic", |_| async { panic!("handler bug") });
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

#[tokio::test]
async fn get_post_and_well_known_core() {
    let (srv, addr) = server(EndpointConfig::default()).await;
    let client = Context::client();
    let r = client
        .get(&format!("coap://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!((r.code(), r.payload()), (Code::CONTENT, &b"hello"[..]));
    assert_eq!(r.content_format(), Some(ContentFormat::TEXT_PLAIN));
    let r = client
        .post(&format!("coap://{addr}/echo"))
        .payload("ping")
        .send()
        .await
        .unwrap();
    assert_eq!((r.code(), r.payload()), (Code::CHANGED, &b"ping"[..]));
    let r = client
        .get(&format!("coap://{addr}/.well-known/core?rt=greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(r.payload()),
        "</hello>;rt=\"greeting\""
    );
    let r = client
        .get(&format!("coap://{addr}/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::NOT_FOUND);
    assert!(r.clone().error_for_code().is_err());
    let r = client
        .delete(&format!("coap://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::METHOD_NOT_ALLOWED);
    srv.shutdown().await;
    client.shutdown().await;
}

#[tokio::test]
async fn non_requests_get_non_responses() {
    let (srv, addr) = server(EndpointConfig::default()).await;
    let client = Context::client();
    let r = client
        .get(&format!("coap://{addr}/hello"))
        .non()
        .send()
        .await
        .unwrap();
    assert_eq!(r.message().ty, tern::proto::MessageType::Non);
    assert_eq!(r.payload(), b"hello");
    srv.shutdown().await;
}

#[tokio::test]
async fn slow_handler_answers_separately() {
    let config = EndpointConfig {
        separate_response_delay: Duration::from_millis(100),
        ..Default::default()
    };
    let (srv, addr) = server(config).await;
    let client = Context::client();
    let start = Instant::now();
    let r = client
        .get(&format!("coap://{addr}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), b"finally");
    assert!(start.elapsed() >= Duration::from_millis(400));
    // A separate response arrives in its own CON message, not in the ACK.
    assert_eq!(r.message().ty, tern::proto::MessageType::Con);
    let stats = client.stats().await;
    assert_eq!(
        stats.retransmissions, 0,
        "the empty ACK stopped retransmission"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn handler_panic_becomes_5_00_and_the_server_keeps_serving() {
    let (srv, addr) = server(EndpointConfig::default()).await;
    let client = Context::client();
    let r = client
        .get(&format!("coap://{addr}/panic"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::INTERNAL_SERVER_ERROR);
    let r = client
        .get(&format!("coap://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    srv.shutdown().await;
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let (srv, addr) = server(EndpointConfig::default()).await;
    let client = Context::client();
    let r = client
        .get(&format!("coap://{addr}/peer"))
        .send()
        .await
        .unwrap();
    let peer: SocketAddr = String::from_utf8_lossy(r.payload()).parse().unwrap();
    assert_eq!(peer.ip(), addr.ip());
    srv.shutdown().await;
}

#[tokio::test]
async fn timeouts_and_bad_uris_are_clear_errors() {
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let client = Context::client();
    let e = client
        .get(&format!("coap://{addr}/x"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Request(RequestError::Timeout)), "{e}");
    let e = client.get("coap://[::1/x").send().await.unwrap_err();
    assert!(matches!(e, Error::Uri(_)), "{e}");
    assert!(e.to_string().starts_with("invalid URI"), "{e}");
    let e = client.get("coaps://127.0.0.1/x").send().await.unwrap_err();
    assert!(matches!(e, Error::NoCredentials), "{e}");
    let e = client
        .get("coaps+tcp://127.0.0.1/x")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoCredentials), "{e}");
}

#[tokio::test]
async fn per_peer_transmission_parameters() {
    // A peer that never answers, given a short ACK_TIMEOUT and one retransmission: the request
    // fails after two transmissions in well under the default 93 s.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let client = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .build()
        .await
        .unwrap();
    let fast = tern::proto::TransmissionParams {
        ack_timeout: Duration::from_millis(50),
        max_retransmit: 1,
        ..Default::default()
    };
    client.set_peer_params(addr, fast).unwrap();
    let start = Instant::now();
    let e = client
        .get(&format!("coap://{addr}/x"))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Request(RequestError::Unacknowledged { transmissions: 2 })
        ),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    let bad = tern::proto::TransmissionParams {
        nstart: 0,
        ..Default::default()
    };
    assert!(matches!(
        client.set_peer_params(addr, bad),
        Err(Error::Config(_))
    ));
}

#[tokio::test]
async fn ipv6_loopback() {
    let Ok(probe) = std::net::UdpSocket::bind("[::1]:0") else {
        eprintln!("skipping: no IPv6 loopback on this machine");
        return;
    };
    drop(probe);
    let ctx = Context::builder()
        .bind("[::1]:0".parse().unwrap())
        .router(Router::new().get("/v6", |_| async { Response::text("six") }))
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    let r = Context::client()
        .get(&format!("coap://{addr}/v6"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), b"six");
    ctx.shutdown().await;
}

#[tokio::test]
async fn shutdown_fails_waiting_requests_with_closed() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let client = Context::client();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.get(&format!("coap://{addr}/x")).send().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.shutdown().await;
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
}

#[tokio::test]
async fn dropping_a_request_cancels_its_retransmissions() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = silent.local_addr().unwrap();
    let client = Context::client();
    let fast = tern::proto::TransmissionParams {
        ack_timeout: Duration::from_millis(100),
        ack_random_factor: 1.0,
        ..Default::default()
    };
    client.set_peer_params(addr, fast).unwrap();
    let request = client.get(&format!("coap://{addr}/x")).send();
    // Give up after the first transmission.
    assert!(tokio::time::timeout(Duration::from_millis(50), request)
        .await
        .is_err());
    let mut buf = [0u8; 64];
    let first = silent.recv(&mut buf);
    assert!(first.is_ok(), "the request was sent once");
    // Nothing more arrives: the retransmissions due at 100, 300 and 700 ms were cancelled.
    tokio::task::spawn_blocking(move || {
        silent
            .set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        assert!(
            silent.recv(&mut buf).is_err(),
            "a cancelled request was retransmitted"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_hung_handler_is_answered_5_03_after_the_handler_timeout() {
    let router = Router::new().get("/hang", |_| async {
        std::future::pending::<()>().await;
        Response::text("never")
    });
    let srv = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .handler_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let addr = srv.local_addrs()[0];
    let r = Context::client()
        .get(&format!("coap://{addr}/hang"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::SERVICE_UNAVAILABLE);
    srv.shutdown().await;
}

#[tokio::test]
async fn large_bodies_go_block_wise_both_ways() {
    let stored = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (put, get) = (stored.clone(), stored.clone());
    let router = tern::Router::new()
        .put("/big", move |r: tern::Request| {
            let stored = put.clone();
            async move {
                *stored.lock().unwrap() = r.payload().to_vec();
                tern::Response::new(tern::Code::CHANGED)
            }
        })
        .get("/big", move |_| {
            let stored = get.clone();
            async move { tern::Response::content(stored.lock().unwrap().clone()) }
        });
    let server = tern::Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let client = tern::Context::client();
    let uri = format!("coap://{addr}/big");
    let r = client.put(&uri).payload(body.clone()).send().await.unwrap();
    assert_eq!(r.code(), tern::Code::CHANGED);
    assert_eq!(
        stored.lock().unwrap().len(),
        body.len(),
        "reassembled whole"
    );
    let r = client.get(&uri).send().await.unwrap();
    assert_eq!(r.code(), tern::Code::CONTENT);
    assert!(r.payload() == body.as_slice(), "fetched byte-exact");
    // A client asking for small blocks gets them (early negotiation), and the body still
    // arrives whole.
    let small: Vec<u8> = body[..5000].to_vec();
    client
        .put(&uri)
        .payload(small.clone())
        .block_size(64)
        .send()
        .await
        .unwrap();
    let r = client.get(&uri).block_size(64).send().await.unwrap();
    assert!(r.payload() == small.as_slice());
    server.shutdown().await;
}

#[tokio::test]
async fn a_block_wise_get_starts_over_when_the_representation_changes() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use tern::proto::block::{Block1Config, Block2Config};
    // No cache: every later block regenerates the body, and the second generation differs.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let router = Router::new()
        .get("/changing", move |_| {
            let version = (c.fetch_add(1, Ordering::SeqCst) + 1).min(2) as u8;
            async move { Response::content(vec![version; 3000]) }
        })
        .block_limits(
            Block1Config::default(),
            Block2Config {
                max_cached_bytes: 0,
                ..Block2Config::default()
            },
        );
    let ctx = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    let client = Context::client();
    let r = client
        .get(&format!("coap://{addr}/changing"))
        .block_size(1024)
        .send()
        .await
        .unwrap();
    // Never a mix of the two versions: the second, whole.
    assert_eq!(r.payload(), vec![2u8; 3000].as_slice());
    assert!(
        calls.load(Ordering::SeqCst) >= 4,
        "the transfer started over"
    );
}

#[tokio::test]
async fn a_block_wise_fetch_repeats_its_body_for_every_block() {
    // The answer depends on the FETCH body; later blocks must be asked with the same body.
    let router = Router::new().method("/query", Code::FETCH, |r: Request| async move {
        let n: usize = String::from_utf8_lossy(r.payload()).parse().unwrap_or(0);
        Response::content(vec![n as u8; 3000])
    });
    let ctx = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    let client = Context::client();
    let r = client
        .fetch(&format!("coap://{addr}/query"))
        .payload("7")
        .block_size(1024)
        .send()
        .await
        .unwrap();
    assert!(
        r.payload() == vec![7u8; 3000].as_slice(),
        "{} bytes, first {:?}",
        r.payload().len(),
        r.payload().first()
    );
}

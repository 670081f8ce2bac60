//! Echo and Request-Tag (RFC 9175) through the runtime on loopback: a resource that demands
//! fresh unsafe requests challenges them with 4.01 + Echo and acts only on the repeat (Tern's
//! client answers by itself; an old, altered or another address's Echo is challenged again); a
//! router that limits amplification answers a large response to an unverified address with a
//! small challenge and serves the address once it echoed one; concurrent block-wise request
//! bodies from one endpoint to one resource arrive intact, kept apart by their Request-Tags.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern::proto::endpoint::RequestParams;
use tern::proto::{Message, MessageType, OptionNumber};
use tern::{Code, Context, Resource, Response, Router};

fn params() -> RequestParams {
    RequestParams {
        timeout: Some(Duration::from_secs(5)),
    }
}

fn put(path: &str, echo: Option<&[u8]>) -> Message {
    let mut m = Message::new(MessageType::Con, Code::PUT);
    m.set_path(path);
    m.payload = b"open".to_vec();
    if let Some(echo) = echo {
        m.options.set(OptionNumber::ECHO, echo.to_vec());
    }
    m
}

#[tokio::test]
async fn unsafe_requests_to_a_fresh_resource_need_a_recent_echo() {
    let acted = Arc::new(AtomicU32::new(0));
    let a = acted.clone();
    let router = Router::new().resource(
        "/valve",
        Resource::new()
            .put(move |_| {
                a.fetch_add(1, Ordering::SeqCst);
                async { Response::new(Code::CHANGED) }
            })
            .get(|_| async { Response::text("closed") })
            .require_echo(Duration::from_millis(800)),
    );
    let server = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let client = Context::client();

    // Tern's client answers the challenge by itself: one action.
    let r = client
        .put(&format!("coap://{addr}/valve"))
        .payload("open")
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    assert_eq!(acted.load(Ordering::SeqCst), 1);
    // GET is safe: no challenge.
    let r = client
        .get(&format!("coap://{addr}/valve"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), b"closed");

    // By hand: the challenge, then the repeat with it.
    let challenged = client
        .send(addr, put("/valve", None), params())
        .await
        .unwrap();
    assert_eq!(challenged.code(), Code::UNAUTHORIZED);
    let echo = challenged.option(OptionNumber::ECHO).unwrap().to_vec();
    assert_eq!(echo.len(), 16);
    assert_eq!(
        acted.load(Ordering::SeqCst),
        1,
        "a challenged request does not act"
    );
    let r = client
        .send(addr, put("/valve", Some(&echo)), params())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    assert_eq!(acted.load(Ordering::SeqCst), 2);
    // An altered Echo, and one from another address, are challenged again.
    let mut altered = echo.clone();
    altered[15] ^= 0x80;
    let r = client
        .send(addr, put("/valve", Some(&altered)), params())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::UNAUTHORIZED);
    let elsewhere = Context::client();
    let r = elsewhere
        .send(addr, put("/valve", Some(&echo)), params())
        .await
        .unwrap();
    assert_eq!(
        r.code(),
        Code::UNAUTHORIZED,
        "the Echo is bound to its address"
    );
    // Too old.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = client
        .send(addr, put("/valve", Some(&echo)), params())
        .await
        .unwrap();
    assert_eq!(r.code(), Code::UNAUTHORIZED);
    assert_eq!(acted.load(Ordering::SeqCst), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn large_responses_wait_for_a_verified_address() {
    let router = Router::new()
        .get("/big", |_| async { Response::content(vec![b'x'; 600]) })
        .get("/small", |_| async { Response::text("ok") })
        .limit_amplification(true);
    let server = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = server.local_addrs()[0];
    let get = |path: &str, echo: Option<&[u8]>| {
        let mut m = Message::new(MessageType::Con, Code::GET);
        m.set_path(path);
        if let Some(echo) = echo {
            m.options.set(OptionNumber::ECHO, echo.to_vec());
        }
        m
    };
    let client = Context::client();
    // Small answers go to anyone.
    let r = client
        .send(addr, get("/small", None), params())
        .await
        .unwrap();
    assert_eq!(r.payload(), b"ok");
    // A large one to an unverified address: a challenge within three times the request.
    let request = get("/big", None);
    // As sent: with the token the client's endpoint adds (at most 8 bytes).
    let request_len = request.encoded_len() + 8;
    let r = client.send(addr, request, params()).await.unwrap();
    assert_eq!(r.code(), Code::UNAUTHORIZED);
    assert!(
        r.message().encoded_len() <= 3 * request_len,
        "{} bytes for a {request_len}-byte request",
        r.message().encoded_len()
    );
    let echo = r.option(OptionNumber::ECHO).unwrap().to_vec();
    let r = client
        .send(addr, get("/big", Some(&echo)), params())
        .await
        .unwrap();
    assert_eq!((r.code(), r.payload().len()), (Code::CONTENT, 600));
    // Verified now: no more challenges.
    let r = client
        .send(addr, get("/big", None), params())
        .await
        .unwrap();
    assert_eq!(r.payload().len(), 600);
    // Another address starts unverified; Tern's client gets through by itself.
    let other = Context::client();
    let r = other
        .get(&format!("coap://{addr}/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload().len(), 600);
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_block_wise_bodies_to_one_resource_stay_apart() {
    let router = Router::new().put("/sink", |r: tern::Request| async move {
        // Each body is one byte value repeated: a mix of two bodies would show.
        let first = r.payload().first().copied().unwrap_or(0);
        let pure = r.payload().iter().all(|&b| b == first);
        Response::new(Code::CHANGED)
            .with_payload(format!("{} {} {pure}", first, r.payload().len()).into_bytes())
    });
    let server = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let uri = format!("coap://{}/sink", server.local_addrs()[0]);
    let client = Context::client();
    let mut tasks = Vec::new();
    for n in 1..=4u8 {
        let request = client
            .put(&uri)
            .payload(vec![n; 5000 + usize::from(n) * 100])
            .block_size(256);
        tasks.push(tokio::spawn(request.send()));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let n = i + 1;
        let r = task.await.unwrap().unwrap();
        assert_eq!(r.code(), Code::CHANGED);
        assert_eq!(
            String::from_utf8_lossy(r.payload()),
            format!("{n} {} true", 5000 + n * 100)
        );
    }
    server.shutdown().await;
}

//! OSCORE (RFC 8613) through the runtime on loopback, over UDP and TCP: a router with an
//! `OscoreServer` serves protected requests (handlers see the context), refuses unprotected
//! ones where a resource requires OSCORE, answers §8.2's errors (unknown kid, wrong key,
//! replay), recovers a lost replay state with Echo (Appendix B.1.2), moves large bodies with
//! inner block-wise both ways, protects notifications, and deregisters a protected
//! observation; a server without contexts answers 4.02.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern::oscore::{OscoreClient, OscoreContext, OscoreServer};
use tern::proto::uri::Scheme;
use tern::tern_oscore::{ContextParams, SecurityContext};
use tern::{Code, Context, Error, Request, Resource, ResourceNotifier, Response, Router};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

fn params(secret: &[u8], sender: &[u8], recipient: &[u8]) -> SecurityContext {
    let mut p = ContextParams::new(secret, sender, recipient);
    p.master_salt = vec![0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];
    SecurityContext::derive(&p).unwrap()
}

/// The client's and the server's halves of one context (client Sender ID `kid`).
fn pair(kid: &[u8]) -> (OscoreClient, OscoreContext) {
    let client = OscoreClient::new(OscoreContext::in_memory(params(&SECRET, kid, b"S")));
    let server = OscoreContext::in_memory(params(&SECRET, b"S", kid));
    (client, server)
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// `/secret` (OSCORE only; answers with the kid), `/open` (anyone), `/big` (GET 5000 bytes,
/// PUT echoes the body's length), `/count` (observable, OSCORE only).
fn router(oscore: Option<OscoreServer>) -> (Router, ResourceNotifier, Arc<AtomicU32>) {
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    let router = Router::new()
        .resource(
            "/secret",
            Resource::new()
                .get(|r: Request| async move {
                    let kid = r.oscore().map(|o| o.kid.clone()).unwrap_or_default();
                    Response::text(format!("hello {}", String::from_utf8_lossy(&kid)))
                })
                .require_oscore(),
        )
        .get("/open", |r: Request| async move {
            Response::text(if r.oscore().is_some() {
                "protected"
            } else {
                "plain"
            })
        })
        .resource(
            "/big",
            Resource::new()
                .get(|_| async { Response::content(body(5000)) })
                .put(|r: Request| async move {
                    let ok = r.payload() == body(r.payload().len()).as_slice();
                    Response::new(Code::CHANGED)
                        .with_payload(format!("{} {}", r.payload().len(), ok).into_bytes())
                }),
        )
        .resource(
            "/count",
            Resource::new()
                .get(move |_| {
                    let n = c.load(Ordering::SeqCst);
                    async move { Response::text(n.to_string()) }
                })
                .obs()
                .require_oscore(),
        );
    let router = match oscore {
        Some(server) => router.oscore(server),
        None => router,
    };
    let notifier = router.notifier();
    (router, notifier, count)
}

struct Server {
    ctx: Context,
    notifier: ResourceNotifier,
    count: Arc<AtomicU32>,
    oscore: OscoreServer,
}

impl Server {
    async fn start(contexts: Vec<OscoreContext>) -> Server {
        let oscore = OscoreServer::new();
        for c in contexts {
            oscore.add(c).unwrap();
        }
        let (router, notifier, count) = router(Some(oscore.clone()));
        let ctx = Context::builder()
            .bind("127.0.0.1:0".parse().unwrap())
            .bind_tcp("127.0.0.1:0".parse().unwrap())
            .router(router)
            .build()
            .await
            .unwrap();
        Server {
            ctx,
            notifier,
            count,
            oscore,
        }
    }

    fn uri(&self, scheme: Scheme, path: &str) -> String {
        let addr: SocketAddr = self.ctx.listen_addrs(scheme)[0];
        let name = if scheme == Scheme::Coap {
            "coap"
        } else {
            "coap+tcp"
        };
        format!("{name}://{addr}{path}")
    }
}

const SCHEMES: [Scheme; 2] = [Scheme::Coap, Scheme::CoapTcp];

#[tokio::test]
async fn protected_requests_reach_handlers_with_their_context() {
    let (client, server_half) = pair(b"c1");
    let server = Server::start(vec![server_half]).await;
    let ctx = Context::client();
    for scheme in SCHEMES {
        let r = ctx
            .get(&server.uri(scheme, "/secret"))
            .oscore(&client)
            .send()
            .await
            .unwrap();
        assert_eq!(r.code(), Code::CONTENT, "{scheme:?}");
        assert_eq!(r.payload(), b"hello c1");
        // The resource requires OSCORE: unprotected, 4.01.
        let r = ctx
            .get(&server.uri(scheme, "/secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.code(), Code::UNAUTHORIZED);
        // Others serve both.
        let r = ctx.get(&server.uri(scheme, "/open")).send().await.unwrap();
        assert_eq!(r.payload(), b"plain");
        let r = ctx
            .get(&server.uri(scheme, "/open"))
            .oscore(&client)
            .send()
            .await
            .unwrap();
        assert_eq!(r.payload(), b"protected");
    }
    server.ctx.shutdown().await;
}

#[tokio::test]
async fn failures_get_the_errors_of_section_8_2() {
    let (client, server_half) = pair(b"c1");
    let server = Server::start(vec![server_half]).await;
    let ctx = Context::client();
    let uri = server.uri(Scheme::Coap, "/secret");
    // An unknown kid: 4.01, unprotected.
    let (stranger, _) = pair(b"zz");
    match ctx.get(&uri).oscore(&stranger).send().await {
        Err(Error::OscoreRefused { code, .. }) => assert_eq!(code, Code::UNAUTHORIZED),
        other => panic!("unknown kid: {other:?}"),
    }
    // The right kid with the wrong key: 4.00.
    let wrong = OscoreClient::new(OscoreContext::in_memory(params(&[9; 16], b"c1", b"S")));
    match ctx.get(&uri).oscore(&wrong).send().await {
        Err(Error::OscoreRefused { code, .. }) => assert_eq!(code, Code::BAD_REQUEST),
        other => panic!("wrong key: {other:?}"),
    }
    // A replayed request: a fresh client half starting at sequence number 0 again, after
    // the real one used it.
    ctx.get(&uri).oscore(&client).send().await.unwrap();
    let replayer = OscoreClient::new(OscoreContext::in_memory(params(&SECRET, b"c1", b"S")));
    match ctx.get(&uri).oscore(&replayer).send().await {
        Err(Error::OscoreRefused { code, .. }) => assert_eq!(code, Code::UNAUTHORIZED),
        other => panic!("replay: {other:?}"),
    }
    // The real client goes on.
    let r = ctx.get(&uri).oscore(&client).send().await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    server.ctx.shutdown().await;
}

#[tokio::test]
async fn a_server_without_contexts_answers_bad_option() {
    let (router, _, _) = router(None);
    let server = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let (client, _) = pair(b"c1");
    let uri = format!("coap://{}/open", server.local_addrs()[0]);
    match Context::client().get(&uri).oscore(&client).send().await {
        Err(Error::OscoreRefused { code, .. }) => assert_eq!(code, Code::BAD_OPTION),
        other => panic!("no OSCORE server: {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_lost_replay_state_is_recovered_with_echo() {
    let (client, _) = pair(b"c1");
    // The server restarted without its replay window (Appendix B.1.2).
    let mut restarted = params(&SECRET, b"S", b"c1");
    restarted.forget_replay_state();
    let server_half = OscoreContext::in_memory(restarted);
    let server = Server::start(vec![server_half]).await;
    let ctx = Context::client();
    for _ in 0..3 {
        let r = ctx
            .get(&server.uri(Scheme::Coap, "/secret"))
            .oscore(&client)
            .send()
            .await
            .unwrap();
        assert_eq!(r.code(), Code::CONTENT);
        assert_eq!(r.payload(), b"hello c1");
    }
    // The first request was challenged and repeated: four numbers for three requests.
    assert_eq!(client.sender_sequence(), 4);
    server.ctx.shutdown().await;
}

#[tokio::test]
async fn large_bodies_go_block_wise_inside_oscore() {
    let (client, server_half) = pair(b"c1");
    let server = Server::start(vec![server_half]).await;
    let ctx = Context::client();
    for scheme in SCHEMES {
        let uri = server.uri(scheme, "/big");
        let r = ctx
            .get(&uri)
            .oscore(&client)
            .block_size(256)
            .send()
            .await
            .unwrap();
        assert_eq!(r.code(), Code::CONTENT, "{scheme:?}");
        assert_eq!(r.payload(), body(5000).as_slice());
        let r = ctx
            .put(&uri)
            .payload(body(20_000))
            .oscore(&client)
            .block_size(512)
            .send()
            .await
            .unwrap();
        assert_eq!(r.code(), Code::CHANGED);
        assert_eq!(r.payload(), b"20000 true");
        // Over UDP with the default block size, too.
        if scheme == Scheme::Coap {
            let r = ctx.get(&uri).oscore(&client).send().await.unwrap();
            assert_eq!(r.payload(), body(5000).as_slice());
        }
    }
    server.ctx.shutdown().await;
}

#[tokio::test]
async fn notifications_are_protected_and_deregistration_too() {
    let (client, server_half) = pair(b"c1");
    let server = Server::start(vec![server_half]).await;
    let ctx = Context::client();
    for scheme in SCHEMES {
        server.count.store(0, Ordering::SeqCst);
        let mut observation = ctx
            .get(&server.uri(scheme, "/count"))
            .oscore(&client)
            .observe()
            .await
            .unwrap();
        let first = timeout(WAIT, observation.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.payload(), b"0", "{scheme:?}");
        for n in 1..=3u32 {
            server.count.store(n, Ordering::SeqCst);
            // Announced until it is seen: the first change may race the registration.
            let got = timeout(WAIT, async {
                loop {
                    server.notifier.notify("/count");
                    if let Ok(Some(item)) =
                        timeout(Duration::from_millis(300), observation.next()).await
                    {
                        return item;
                    }
                }
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(got.payload(), n.to_string().as_bytes());
        }
        assert_eq!(server.ctx.observer_count().await, 1);
        observation.cancel();
        timeout(WAIT, async {
            while server.ctx.observer_count().await > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the protected deregistration removes the observer");
    }
    server.ctx.shutdown().await;
}

/// OSCORE inside DTLS and TLS (PSK): both layers hold, and the handler sees both identities.
#[tokio::test]
async fn oscore_inside_dtls_and_tls() {
    let (client, server_half) = pair(b"c1");
    let oscore = OscoreServer::new();
    oscore.add(server_half).unwrap();
    let router = Router::new()
        .get("/both", |r: Request| async move {
            let psk = match r.peer_identity() {
                Some(tern::PeerIdentity::Psk(id)) => String::from_utf8_lossy(id).into_owned(),
                _ => "none".into(),
            };
            let kid = r
                .oscore()
                .map(|o| String::from_utf8_lossy(&o.kid).into_owned());
            Response::text(format!("{psk} {}", kid.unwrap_or_default()))
        })
        .oscore(oscore);
    let psk = tern::Psk::new(b"dev".to_vec(), b"dtls-secret".to_vec()).unwrap();
    let store = tern::tls::PskMap::new();
    store.insert(psk.clone());
    let server = Context::builder()
        .bind_dtls("127.0.0.1:0".parse().unwrap())
        .bind_tls("127.0.0.1:0".parse().unwrap())
        .dtls_server(tern::tls::DtlsSettings {
            psk_store: Some(Arc::new(store)),
            ..Default::default()
        })
        .router(router)
        .build()
        .await
        .unwrap();
    let ctx = Context::builder()
        .psk(psk.clone())
        .tls_client(tern::tls::TlsSettings {
            psk: Some(psk),
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    for (scheme, name) in [(Scheme::Coaps, "coaps"), (Scheme::CoapsTcp, "coaps+tcp")] {
        let addr = server.listen_addrs(scheme)[0];
        let uri = format!("{name}://{addr}/both");
        let r = timeout(WAIT, ctx.get(&uri).oscore(&client).send())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.payload(), b"dev c1", "{name}");
    }
    ctx.shutdown().await;
    server.shutdown().await;
}

/// Outer block-wise (RFC 8613 §4.1.3.4.2), as a proxy that fragments protected messages would
/// do it: the protected request goes in Block1 blocks of its ciphertext, the server reassembles
/// them before unprotecting, and its protected final response acknowledges the last block.
#[tokio::test]
async fn outer_block_wise_is_reassembled_before_unprotecting() {
    use tern::proto::block::{Block1Send, Block1SendConfig, Block1Step};
    use tern::proto::endpoint::RequestParams;
    use tern::proto::{Message, MessageType, OptionNumber};

    let (client, server_half) = pair(b"c1");
    let server = Server::start(vec![server_half]).await;
    let peer = server.ctx.local_addrs()[0];
    let mut inner = Message::new(MessageType::Con, Code::PUT);
    inner.set_path("/big");
    inner.payload = body(3000);
    let (outer, binding) = client.protect(&inner).unwrap();
    let config = Block1SendConfig {
        szx: 4, // 256-byte blocks of the ciphertext
        ..Block1SendConfig::default()
    };
    let (mut sender, mut next) = Block1Send::start(outer, config).unwrap();
    let ctx = Context::client();
    let params = RequestParams {
        timeout: Some(WAIT),
    };
    let mut blocks = 0;
    let last = loop {
        blocks += 1;
        assert!(blocks < 64, "the transfer does not end");
        let response = ctx.send(peer, next, params).await.unwrap().into_message();
        match sender.handle_response(response).unwrap() {
            Block1Step::Send(m) => next = m,
            Block1Step::Done(m) => break m,
            Block1Step::Fetch(..) => panic!("no Block2 expected"),
        }
    };
    assert!(
        blocks >= 12,
        "{blocks} blocks for 3000 bytes in 256-byte blocks"
    );
    assert!(
        last.options.contains(OptionNumber::BLOCK1),
        "the last block is acknowledged"
    );
    let response = client.unprotect(&binding, &last).unwrap();
    assert_eq!(response.code, Code::CHANGED);
    assert_eq!(response.payload, b"3000 true");
    server.ctx.shutdown().await;
}

/// A request that copies the shape of an inner request (an OSCORE option with the kid but no
/// Partial IV, the path, a later Block2) must not be served a cached block of a protected
/// response: it is refused (4.02) before any block-wise table is looked at.
#[tokio::test]
async fn a_forged_oscore_option_cannot_read_cached_blocks() {
    use tern::proto::endpoint::RequestParams;
    use tern::proto::{Message, MessageType, OptionNumber};
    use tern::tern_oscore::OscoreOption;

    let (client, server_half) = pair(b"c1");
    let server = Server::start(vec![server_half]).await;
    let peer = server.ctx.local_addrs()[0];
    let ctx = Context::client();
    let params = RequestParams {
        timeout: Some(WAIT),
    };
    // A protected GET of block 0 only: the rest of the body stays cached for this address.
    let mut inner = Message::new(MessageType::Con, Code::GET);
    inner.set_path("/big");
    tern::proto::block::BlockValue::new(0, false, 4)
        .unwrap()
        .write(&mut inner.options, OptionNumber::BLOCK2);
    let (outer, binding) = client.protect(&inner).unwrap();
    let first = ctx.send(peer, outer, params).await.unwrap();
    let first = client.unprotect(&binding, first.message()).unwrap();
    assert_eq!(first.payload.len(), 256);
    // The forgery: plain, with the marker's bytes as OSCORE option.
    let marker = OscoreOption {
        partial_iv: None,
        kid_context: None,
        kid: Some(b"c1".to_vec()),
    };
    let mut forged = Message::new(MessageType::Con, Code::GET);
    forged.set_path("/big");
    forged
        .options
        .set(OptionNumber::OSCORE, marker.encode().unwrap());
    tern::proto::block::BlockValue::new(1, false, 4)
        .unwrap()
        .write(&mut forged.options, OptionNumber::BLOCK2);
    let r = ctx.send(peer, forged, params).await.unwrap();
    assert_eq!(r.code(), Code::BAD_OPTION, "{:?}", r.payload());
    assert!(r.payload().len() < 64, "no body comes back");
    server.ctx.shutdown().await;
}

/// A client that leaves its kid context out finds the one context with its kid and an ID
/// Context; with two such contexts it must say which (4.01 otherwise).
#[tokio::test]
async fn a_missing_kid_context_finds_the_only_context_with_that_kid() {
    let with_context = |id: &[u8], sender: &[u8], recipient: &[u8]| {
        let mut p = ContextParams::new(&SECRET, sender, recipient);
        p.id_context = Some(id.to_vec());
        SecurityContext::derive(&p).unwrap()
    };
    let server = Server::start(vec![OscoreContext::in_memory(with_context(
        b"g1", b"S", b"c1",
    ))])
    .await;
    let client = OscoreClient::new(OscoreContext::in_memory(with_context(b"g1", b"c1", b"S")))
        .without_kid_context();
    let ctx = Context::client();
    let uri = server.uri(Scheme::Coap, "/secret");
    let r = ctx.get(&uri).oscore(&client).send().await.unwrap();
    assert_eq!(r.payload(), b"hello c1");
    server.ctx.shutdown().await;

    let two = Server::start(vec![
        OscoreContext::in_memory(with_context(b"g1", b"S", b"c1")),
        OscoreContext::in_memory(with_context(b"g2", b"S", b"c1")),
    ])
    .await;
    match ctx
        .get(&two.uri(Scheme::Coap, "/secret"))
        .oscore(&client)
        .send()
        .await
    {
        Err(Error::OscoreRefused { code, .. }) => assert_eq!(code, Code::UNAUTHORIZED),
        other => panic!("ambiguous kid: {other:?}"),
    }
    two.ctx.shutdown().await;
}

/// A context removed while it has observers: their next notification cannot be protected, so
/// it is their last (an unprotected 5.00), and they are deregistered rather than sent 5.00s
/// on every change.
#[tokio::test]
async fn removing_a_context_ends_its_observations() {
    let (client, server_half) = pair(b"c1");
    let server = Server::start(vec![server_half]).await;
    let ctx = Context::client();
    let mut observation = ctx
        .get(&server.uri(Scheme::Coap, "/count"))
        .oscore(&client)
        .observe()
        .await
        .unwrap();
    timeout(WAIT, observation.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(server.ctx.observer_count().await, 1);
    assert!(server.oscore.remove(b"c1", None));
    server.notifier.notify("/count");
    timeout(WAIT, async {
        while server.ctx.observer_count().await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the observer is removed");
    server.ctx.shutdown().await;
}

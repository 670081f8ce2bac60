//! CoAP → HTTP through a Tern gateway on loopback, against a real HTTP server (hyper, in
//! process): methods, status codes, content formats, ETag revalidation, Max-Age, Location,
//! large bodies both ways (block-wise on the CoAP side), the time-out, an oversized response,
//! refused targets, credentials over plain coap, and the identity header over coaps and
//! OSCORE (which counts only where it protects the target: the fixed path's query).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tern::proto::{Code, ContentFormat, OptionNumber};
use tern::tls::{DtlsSettings, Psk, PskMap};
use tern::{Context, Router};
use tern_proxy::{AllowRule, ForwarderConfig, HttpForwarder, ProxyPolicy};

fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Full answers and 304s of `/counted`.
static FULL: AtomicU32 = AtomicU32::new(0);
static NOT_MODIFIED: AtomicU32 = AtomicU32::new(0);

/// The HTTP backend. Its answers depend on the path:
/// - `/json`: JSON with an ETag and max-age; 304 to a matching If-None-Match;
/// - `/items` POST: 201 with a Location; `/items/7` PUT 204, DELETE 204, PATCH 200;
/// - `/status/N`: status N with an empty body;
/// - `/echo`: the request's method, headers and body, as text;
/// - `/slow`: answers after 5 s; `/large`: 300 kB; `/huge`: 3 MB;
/// - `/counted`: counts its answers; max-age 1, an ETag, 304 to a matching If-None-Match.
async fn handle(
    request: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let (head, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = head.uri.path().to_string();
    let mut response = http::Response::builder();
    let reply = |r: http::response::Builder, status: u16, body: Vec<u8>| {
        Ok(r.status(status).body(Full::new(Bytes::from(body))).unwrap())
    };
    match (head.method.as_str(), path.as_str()) {
        ("GET", "/json") => {
            if head
                .headers
                .get("if-none-match")
                .is_some_and(|v| v == "\"0a0b\"")
            {
                return reply(response.header("etag", "\"0a0b\""), 304, Vec::new());
            }
            response = response
                .header("content-type", "application/json; charset=utf-8")
                .header("etag", "\"0a0b\"")
                .header("cache-control", "public, max-age=30");
            reply(response, 200, br#"{"t":21.5}"#.to_vec())
        }
        ("POST", "/items") => reply(
            response
                .header("location", "/items/7?v=1")
                .header("content-type", "text/plain"),
            201,
            body.to_vec(),
        ),
        ("PUT", "/items/7") | ("DELETE", "/items/7") => reply(response, 204, Vec::new()),
        ("PATCH", "/items/7") => reply(response, 200, b"patched".to_vec()),
        ("FETCH", _) => reply(response, 405, Vec::new()),
        (_, p) if p.starts_with("/status/") => {
            let n: u16 = p[8..].parse().unwrap_or(500);
            reply(response, n, Vec::new())
        }
        (method, "/echo") => {
            let mut text = format!("{method}\n");
            let mut names: Vec<_> = head.headers.iter().collect();
            names.sort_by_key(|(n, _)| n.as_str().to_string());
            for (name, value) in names {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            text.push_str(&format!("body {}", body.len()));
            reply(
                response.header("content-type", "text/plain"),
                200,
                text.into_bytes(),
            )
        }
        ("GET", "/slow") => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply(response, 200, b"late".to_vec())
        }
        ("GET", "/large") => reply(
            response.header("content-type", "application/octet-stream"),
            200,
            big(300_000),
        ),
        ("PUT", "/large") => {
            let ok = body.as_ref() == big(body.len()).as_slice();
            reply(response, 200, format!("{} {ok}", body.len()).into_bytes())
        }
        ("GET", "/huge") => reply(response, 200, big(3 << 20)),
        ("GET", "/counted") => {
            let response = response
                .header("etag", "\"c1\"")
                .header("cache-control", "max-age=1");
            if head
                .headers
                .get("if-none-match")
                .is_some_and(|v| v == "\"c1\"")
            {
                NOT_MODIFIED.fetch_add(1, Ordering::SeqCst);
                return reply(response, 304, Vec::new());
            }
            FULL.fetch_add(1, Ordering::SeqCst);
            reply(
                response.header("content-type", "text/plain"),
                200,
                b"counted".to_vec(),
            )
        }
        _ => reply(response, 404, Vec::new()),
    }
}

async fn http_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
    addr
}

struct Setup {
    backend: SocketAddr,
    gateway: SocketAddr,
    dtls_gateway: SocketAddr,
    _ctx: Context,
}

async fn setup(config: ForwarderConfig) -> Setup {
    let backend = http_backend().await;
    let forwarder = HttpForwarder::new(config).unwrap();
    let router = Router::new().forward_proxy(move |request| {
        let forwarder = forwarder.clone();
        async move { forwarder.forward(request).await }
    });
    let store = PskMap::new();
    store.insert(Psk::new("device-9", "gateway-key").unwrap());
    let ctx = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .bind_dtls("127.0.0.1:0".parse().unwrap())
        .dtls_server(DtlsSettings {
            psk_store: Some(Arc::new(store)),
            ..Default::default()
        })
        .router(router)
        .build()
        .await
        .unwrap();
    let addrs = ctx.local_addrs();
    Setup {
        backend,
        gateway: addrs[0],
        dtls_gateway: addrs[1],
        _ctx: ctx,
    }
}

/// The loopback backend listed explicitly (loopback is refused otherwise).
fn loopback_allowed() -> ForwarderConfig {
    ForwarderConfig {
        policy: ProxyPolicy {
            allow: vec![AllowRule::parse("127.0.0.1").unwrap()],
            ..ProxyPolicy::default()
        },
        identity_header: Some("X-Coap-Identity".into()),
        ..ForwarderConfig::default()
    }
}

impl Setup {
    fn target(&self, path: &str) -> String {
        format!("http://{}{path}", self.backend)
    }

    fn via(&self, client: &Context, method: Code, path: &str) -> tern::RequestBuilder {
        client
            .request(method, &format!("coap://{}", self.gateway))
            .option(OptionNumber::PROXY_URI, self.target(path).into_bytes())
    }
}

#[tokio::test]
async fn get_maps_content_format_etag_max_age_and_revalidates() {
    let s = setup(loopback_allowed()).await;
    let client = Context::client();
    let r = s.via(&client, Code::GET, "/json").send().await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(r.payload(), br#"{"t":21.5}"#);
    assert_eq!(r.content_format(), Some(ContentFormat::JSON));
    assert_eq!(r.option(OptionNumber::ETAG), Some(&[0x0a, 0x0b][..]));
    assert_eq!(
        r.message().options.get_uint(OptionNumber::MAX_AGE),
        Some(30)
    );
    // Revalidation: the client's ETag goes as If-None-Match, 304 comes back as 2.03 Valid.
    let r = s
        .via(&client, Code::GET, "/json")
        .option(OptionNumber::ETAG, vec![0x0a, 0x0b])
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::VALID);
    assert!(r.payload().is_empty());
}

#[tokio::test]
async fn methods_and_locations() {
    let s = setup(loopback_allowed()).await;
    let client = Context::client();
    let r = s
        .via(&client, Code::POST, "/items")
        .payload("new")
        .content_format(ContentFormat::TEXT_PLAIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CREATED);
    let location: Vec<&[u8]> = r
        .message()
        .options
        .get_all(OptionNumber::LOCATION_PATH)
        .collect();
    assert_eq!(location, vec![&b"items"[..], &b"7"[..]]);
    let query: Vec<&[u8]> = r
        .message()
        .options
        .get_all(OptionNumber::LOCATION_QUERY)
        .collect();
    assert_eq!(query, vec![&b"v=1"[..]]);
    let rows = [
        (Code::PUT, "/items/7", Code::CHANGED),
        (Code::DELETE, "/items/7", Code::DELETED),
        (Code::PATCH, "/items/7", Code::CHANGED),
        (Code::IPATCH, "/items/7", Code::CHANGED),
        (Code::FETCH, "/items/7", Code::METHOD_NOT_ALLOWED),
        (Code::GET, "/nothing", Code::NOT_FOUND),
    ];
    for (method, path, code) in rows {
        let r = s.via(&client, method, path).send().await.unwrap();
        assert_eq!(r.code(), code, "{method:?} {path}");
    }
}

#[tokio::test]
async fn every_status_row_end_to_end() {
    let s = setup(loopback_allowed()).await;
    let client = Context::client();
    let rows = [
        (200, Code::CONTENT),
        (201, Code::CONTENT), // to a GET: 2.01 is for the methods that create
        (204, Code::CONTENT),
        (301, Code::BAD_GATEWAY),
        (400, Code::BAD_REQUEST),
        (401, Code::UNAUTHORIZED),
        (403, Code::FORBIDDEN),
        (404, Code::NOT_FOUND),
        (405, Code::METHOD_NOT_ALLOWED),
        (406, Code::NOT_ACCEPTABLE),
        (409, Code::CONFLICT),
        (412, Code::PRECONDITION_FAILED),
        (413, Code::REQUEST_ENTITY_TOO_LARGE),
        (415, Code::UNSUPPORTED_CONTENT_FORMAT),
        (418, Code::BAD_REQUEST),
        (422, Code::UNPROCESSABLE_ENTITY),
        (429, Code::TOO_MANY_REQUESTS),
        (500, Code::INTERNAL_SERVER_ERROR),
        (501, Code::NOT_IMPLEMENTED),
        (502, Code::BAD_GATEWAY),
        (503, Code::SERVICE_UNAVAILABLE),
        (504, Code::GATEWAY_TIMEOUT),
        (505, Code::INTERNAL_SERVER_ERROR),
    ];
    for (status, code) in rows {
        let sent = s
            .via(&client, Code::GET, &format!("/status/{status}"))
            .send()
            .await;
        match sent {
            Ok(r) => assert_eq!(r.code(), code, "HTTP {status}"),
            // Tern's client takes 4.13 as the server's block-size limit (RFC 7959 §2.9.3)
            // and reports it as such.
            Err(tern::Error::Block(tern::proto::block::TransferError::EntityTooLarge {
                ..
            })) if code == Code::REQUEST_ENTITY_TOO_LARGE => {}
            Err(e) => panic!("HTTP {status}: {e}"),
        }
    }
}

#[tokio::test]
async fn request_headers_reach_the_http_server() {
    let s = setup(loopback_allowed()).await;
    let client = Context::client();
    let r = s
        .via(&client, Code::PUT, "/echo")
        .payload(vec![1u8; 10])
        .content_format(ContentFormat::CBOR)
        .accept(ContentFormat::TEXT_PLAIN)
        .option(OptionNumber::IF_MATCH, vec![0xbe, 0xef])
        .send()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(r.payload()).into_owned();
    assert!(text.starts_with("PUT\n"), "{text}");
    assert!(text.contains("content-type: application/cbor\n"), "{text}");
    assert!(
        text.contains("accept: text/plain; charset=utf-8\n"),
        "{text}"
    );
    assert!(text.contains("if-match: \"beef\"\n"), "{text}");
    assert!(text.ends_with("body 10"), "{text}");
    // Over plain coap there is no identity to pass on.
    assert!(!text.contains("x-coap-identity"), "{text}");
    assert_eq!(r.content_format(), Some(ContentFormat::TEXT_PLAIN));
}

#[tokio::test]
async fn large_bodies_go_block_wise_on_the_coap_side() {
    let s = setup(loopback_allowed()).await;
    let client = Context::client();
    let r = s.via(&client, Code::GET, "/large").send().await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(r.payload(), big(300_000).as_slice());
    let r = s
        .via(&client, Code::PUT, "/large")
        .payload(big(200_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), b"200000 true");
}

#[tokio::test]
async fn a_slow_server_gets_5_04_and_an_oversized_answer_5_02() {
    let s = setup(ForwarderConfig {
        timeout: Duration::from_secs(1),
        ..loopback_allowed()
    })
    .await;
    let client = Context::client();
    let started = std::time::Instant::now();
    let r = s.via(&client, Code::GET, "/slow").send().await.unwrap();
    assert_eq!(r.code(), Code::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(4));
    let r = s.via(&client, Code::GET, "/huge").send().await.unwrap();
    assert_eq!(r.code(), Code::BAD_GATEWAY);
    // Nobody listening: 5.02.
    let r = client
        .get(&format!("coap://{}", s.gateway))
        .option(OptionNumber::PROXY_URI, &b"http://127.0.0.1:1/x"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::BAD_GATEWAY);
}

#[tokio::test]
async fn refused_targets() {
    // Default policy: loopback is internal, so refused; other schemes get 5.05.
    let s = setup(ForwarderConfig::default()).await;
    let client = Context::client();
    let r = s.via(&client, Code::GET, "/json").send().await.unwrap();
    assert_eq!(r.code(), Code::FORBIDDEN);
    for target in [
        "http://localhost:9/x",
        "http://[::1]:9/x",
        "http://169.254.169.254/latest",
    ] {
        let r = client
            .get(&format!("coap://{}", s.gateway))
            .option(OptionNumber::PROXY_URI, target.as_bytes().to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.code(), Code::FORBIDDEN, "{target}");
    }
    let r = client
        .get(&format!("coap://{}", s.gateway))
        .option(OptionNumber::PROXY_URI, &b"ftp://example.com/x"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::PROXYING_NOT_SUPPORTED);
    // An allow-list refuses what it does not name.
    let s = setup(ForwarderConfig {
        policy: ProxyPolicy {
            allow: vec![AllowRule::parse("api.example.com").unwrap()],
            ..ProxyPolicy::default()
        },
        ..ForwarderConfig::default()
    })
    .await;
    let r = s.via(&client, Code::GET, "/json").send().await.unwrap();
    assert_eq!(r.code(), Code::FORBIDDEN);
    // No gateway for CoAP targets: a router without a forward proxy answers 5.05.
    let plain = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(Router::new())
        .build()
        .await
        .unwrap();
    let r = client
        .get(&format!("coap://{}", plain.local_addrs()[0]))
        .option(OptionNumber::PROXY_URI, &b"http://example.com/"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::PROXYING_NOT_SUPPORTED);
}

#[tokio::test]
async fn credentials_need_a_secure_leg_and_the_identity_is_passed_on() {
    let s = setup(loopback_allowed()).await;
    let plain = Context::client();
    let with_token = format!("{}?token=s3cret", s.target("/echo"));
    let r = plain
        .get(&format!("coap://{}", s.gateway))
        .option(OptionNumber::PROXY_URI, with_token.clone().into_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::FORBIDDEN);
    assert!(!String::from_utf8_lossy(r.payload()).contains("s3cret"));
    let userinfo = format!("http://user:pw@{}/echo", s.backend);
    let r = plain
        .get(&format!("coap://{}", s.gateway))
        .option(OptionNumber::PROXY_URI, userinfo.clone().into_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::FORBIDDEN);

    // Over coaps the same requests go through, userinfo as Basic authorization, and the
    // device's PSK identity in the configured header.
    let secure = Context::builder()
        .psk(Psk::new("device-9", "gateway-key").unwrap())
        .build()
        .await
        .unwrap();
    let r = secure
        .get(&format!("coaps://{}", s.dtls_gateway))
        .option(OptionNumber::PROXY_URI, userinfo.into_bytes())
        .send()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(r.payload()).into_owned();
    assert_eq!(r.code(), Code::CONTENT, "{text}");
    assert!(
        text.contains("authorization: Basic dXNlcjpwdw==\n"),
        "{text}"
    );
    assert!(text.contains("x-coap-identity: psk:device-9\n"), "{text}");
    let r = secure
        .get(&format!("coaps://{}", s.dtls_gateway))
        .option(OptionNumber::PROXY_URI, with_token.into_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
}

/// OSCORE counts as a secure leg only where it protects the target too: the fixed path's
/// `?target=` query is Class E (encrypted, integrity-protected), so a token in it is forwarded
/// and the context named in the identity header; Proxy-Uri's scheme and authority travel in
/// outer options anyone on the path could rewrite, so a token there is refused as over coap.
#[tokio::test]
async fn oscore_counts_as_secure_only_with_the_target_inside_it() {
    use tern::oscore::{OscoreClient, OscoreContext, OscoreServer};
    use tern::tern_oscore::{ContextParams, SecurityContext};
    use tern::Resource;

    let context = |sender: &[u8], recipient: &[u8]| {
        let mut p = ContextParams::new(&[7; 16], sender, recipient);
        p.id_context = Some(vec![0xc0, 0x01]);
        OscoreContext::in_memory(SecurityContext::derive(&p).unwrap())
    };
    let oscore = OscoreServer::new();
    oscore.add(context(b"G", b"d1")).unwrap();
    let device = OscoreClient::new(context(b"d1", b"G"));

    let backend = http_backend().await;
    let forwarder = HttpForwarder::new(loopback_allowed()).unwrap();
    let proxied = forwarder.clone();
    let router = Router::new()
        .forward_proxy(move |request| {
            let forwarder = proxied.clone();
            async move { forwarder.forward(request).await }
        })
        .resource(
            "/coap2http",
            Resource::new().get(move |request| {
                let forwarder = forwarder.clone();
                async move { forwarder.forward_from_query(request).await }
            }),
        )
        .oscore(oscore);
    let gateway = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let at = format!("coap://{}", gateway.local_addrs()[0]);
    let with_token = format!("http://{backend}/echo?token=s3cret");
    let client = Context::client();

    // Fixed path under OSCORE: forwarded, with the context as the identity.
    let r = client
        .get(&format!("{at}/coap2http"))
        .option(
            OptionNumber::URI_QUERY,
            format!("target={with_token}").into_bytes(),
        )
        .oscore(&device)
        .send()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(r.payload()).into_owned();
    assert_eq!(r.code(), Code::CONTENT, "{text}");
    assert!(
        text.contains("x-coap-identity: oscore:6431.c001\n"),
        "{text}"
    );

    // The same without OSCORE: refused.
    let r = client
        .get(&format!("{at}/coap2http"))
        .option(
            OptionNumber::URI_QUERY,
            format!("target={with_token}").into_bytes(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::FORBIDDEN);

    // Through the forward proxy under OSCORE (Proxy-Scheme, Uri-Host and Uri-Port outer, the
    // path and query inside; Proxy-Uri itself cannot name http:// under OSCORE): refused, and
    // no identity vouched for on a tokenless one.
    let via_proxy = |query: Option<&str>| {
        let mut request = client
            .get(&at)
            .option(OptionNumber::PROXY_SCHEME, b"http".to_vec())
            .option(
                OptionNumber::URI_HOST,
                backend.ip().to_string().into_bytes(),
            )
            .option(
                OptionNumber::URI_PORT,
                backend.port().to_be_bytes().to_vec(),
            )
            .option(OptionNumber::URI_PATH, b"echo".to_vec());
        if let Some(query) = query {
            request = request.option(OptionNumber::URI_QUERY, query.as_bytes().to_vec());
        }
        request.oscore(&device)
    };
    let r = via_proxy(Some("token=s3cret")).send().await.unwrap();
    assert_eq!(r.code(), Code::FORBIDDEN);
    assert!(!String::from_utf8_lossy(r.payload()).contains("s3cret"));
    let r = via_proxy(None).send().await.unwrap();
    let text = String::from_utf8_lossy(r.payload()).into_owned();
    assert_eq!(r.code(), Code::CONTENT, "{text}");
    assert!(!text.contains("x-coap-identity"), "{text}");
}

#[tokio::test]
async fn fresh_answers_come_from_the_cache_and_stale_ones_are_revalidated() {
    let s = setup(loopback_allowed()).await;
    let client = Context::client();
    let get = || async { s.via(&client, Code::GET, "/counted").send().await.unwrap() };
    let first = get().await;
    let second = get().await;
    assert_eq!(
        (first.payload(), second.payload()),
        (&b"counted"[..], &b"counted"[..])
    );
    assert_eq!(
        FULL.load(Ordering::SeqCst),
        1,
        "the second GET came from the cache"
    );
    assert!(second.message().options.get_uint(OptionNumber::MAX_AGE) <= Some(1));
    // Stale after a second: revalidated with If-None-Match, the 304 answered from the cache.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = get().await;
    assert_eq!(third.code(), Code::CONTENT);
    assert_eq!(third.payload(), b"counted");
    assert_eq!(third.content_format(), Some(ContentFormat::TEXT_PLAIN));
    assert_eq!(
        (
            FULL.load(Ordering::SeqCst),
            NOT_MODIFIED.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    // A client that revalidates itself goes to the server (and gets 2.03 with its tag).
    let r = s
        .via(&client, Code::GET, "/counted")
        .option(OptionNumber::ETAG, vec![0xc1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::VALID);
    assert_eq!(NOT_MODIFIED.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn past_the_in_flight_cap_clients_are_told_to_come_back() {
    let s = setup(ForwarderConfig {
        max_in_flight: 1,
        timeout: Duration::from_secs(3),
        ..loopback_allowed()
    })
    .await;
    let slow = {
        let client = Context::client();
        let request = s.via(&client, Code::GET, "/slow");
        tokio::spawn(async move { request.send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = Context::client();
    let r = s.via(&client, Code::GET, "/json").send().await.unwrap();
    assert_eq!(r.code(), Code::SERVICE_UNAVAILABLE);
    assert_eq!(r.message().options.get_uint(OptionNumber::MAX_AGE), Some(5));
    // The slow one ends (5.04 after 3 s) and frees its place.
    assert_eq!(slow.await.unwrap().unwrap().code(), Code::GATEWAY_TIMEOUT);
    let r = s.via(&client, Code::GET, "/json").send().await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
}

//! aiocoap's OSCORE plugtest suite (contrib/oscore-plugtest of the aiocoap sdist, installed by
//! scripts/install-peers.sh) both ways, over UDP on loopback:
//!
//! - its `plugtest-client` against a Tern server that holds the plugtest resources and the
//!   server halves of its contexts (RFC 8613 C.1 and C.3, loaded from aiocoap context
//!   folders): tests 0–15 and 17; test 16 (an OSCORE request to a server without OSCORE)
//!   against a Tern server without contexts; tests 1 and 2 once more against a server that
//!   lost its replay state, which aiocoap's client must get through by answering Echo;
//! - Tern's client, with the client halves, against its `plugtest-server`: the same requests
//!   and checks as each test, 0–15 (test 16 needs a server without OSCORE: libcoap's, which has
//!   none; 17 checks that the server refuses an unprotected request, which aiocoap's
//!   plugtest server does not do — its own client fails it too — so it is not run there), and
//!   the Echo recovery against `plugtest-server --state-was-lost`.
//!
//! A plugtest-client run passes when it prints at least one passed check and no failed one.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    free_port, locate_peer, require_peer, run_command_with_timeout, start_libcoap_server,
    wait_ready, ChildGuard,
};
use tern::oscore::{OscoreClient, OscoreContext, OscoreServer};
use tern::proto::message::Token;
use tern::proto::observe::REGISTER;
use tern::proto::OptionNumber;
use tern::tern_oscore::{ContextParams, SecurityContext};
use tern::{Code, ContentFormat, Context, Error, Request, Resource, Response, Router};

const HELLO: &str = "Hello World!";

/// The plugtest's folder and aiocoap's Python, or `None` (skip) when they are not installed.
fn plugtest() -> Option<(PathBuf, PathBuf)> {
    require_peer("aiocoap-client")?;
    let python = locate_peer("aiocoap-client")?.with_file_name("python");
    let peers = std::env::var_os("TERN_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/tern-peers")
        });
    let dir = peers.join("oscore-plugtest");
    if !dir.join("plugtest-client").exists() || !dir.join("common-context/d").exists() {
        assert!(
            !common::peers_required(),
            "the OSCORE plugtest is not in {} (run scripts/install-peers.sh)",
            dir.display()
        );
        eprintln!("skipping: the OSCORE plugtest is not installed");
        return None;
    }
    Some((dir, python))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Fresh copies of the plugtest's context folders `names` under `base`.
fn contexts(plugtest: &Path, base: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|name| {
            let dir = base.join(name);
            let _ = std::fs::remove_dir_all(&dir);
            copy_dir(&plugtest.join("common-context").join(name), &dir);
            dir
        })
        .collect()
}

fn hello() -> Response {
    Response::text(HELLO).with_content_format(ContentFormat::TEXT_PLAIN)
}

/// The observation of `/oscore/observe1` and `/oscore/observe2`: "one", "two" 2 s after the
/// registration, then a 5.00 that ends it 2 s later.
#[derive(Default)]
struct ObserveScript {
    current: Option<(Token, Instant)>,
}

/// The plugtest-server's resources (the suite's test descriptions), with the ones for
/// protected access requiring OSCORE.
fn plugtest_router() -> Router {
    let script = Arc::new(Mutex::new(ObserveScript::default()));
    let router = Router::new()
        .get("/oscore/hello/coap", |_| async { hello() })
        .resource(
            "/oscore/hello/1",
            Resource::new().get(|_| async { hello() }).require_oscore(),
        )
        .resource(
            "/oscore/hello/2",
            Resource::new()
                .get(|_| async { hello().with_option(OptionNumber::ETAG, vec![0x2b]) })
                .require_oscore(),
        )
        .resource(
            "/oscore/hello/3",
            Resource::new()
                .get(|_| async { hello().with_max_age(5) })
                .require_oscore(),
        )
        .resource(
            "/oscore/hello/6",
            Resource::new()
                .post(|r: Request| async move {
                    Response::new(Code::CHANGED)
                        .with_payload(r.payload().to_vec())
                        .with_content_format(ContentFormat::TEXT_PLAIN)
                })
                .require_oscore(),
        )
        .resource(
            "/oscore/hello/7",
            Resource::new()
                .put(|r: Request| async move {
                    if r.message().options.contains(OptionNumber::IF_NONE_MATCH) {
                        Response::new(Code::PRECONDITION_FAILED)
                    } else {
                        Response::new(Code::CHANGED)
                    }
                })
                .require_oscore(),
        )
        .resource(
            "/oscore/test",
            Resource::new()
                .delete(|_| async { Response::new(Code::DELETED) })
                .require_oscore(),
        );
    let notifier = router.notifier();
    let mut router = router;
    for path in ["/oscore/observe1", "/oscore/observe2"] {
        let script = script.clone();
        let notifier = notifier.clone();
        let handler = move |r: Request| {
            let token = r.message().token;
            let registering = r.message().options.get_uint(OptionNumber::OBSERVE) == Some(REGISTER);
            let mut s = script.lock().unwrap();
            let new = registering && s.current.is_none_or(|(t, _)| t != token);
            if new {
                s.current = Some((token, Instant::now()));
                let notifier = notifier.clone();
                tokio::spawn(async move {
                    for _ in 0..2 {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        notifier.notify(path);
                    }
                });
            }
            let elapsed = s.current.map_or(Duration::ZERO, |(_, at)| at.elapsed());
            // A notification's handler runs just after its tick: 1.9 s is well past it.
            let response = if elapsed < Duration::from_millis(1900) {
                Response::text("one")
            } else if elapsed < Duration::from_millis(3900) {
                Response::text("two")
            } else {
                Response::error(Code::INTERNAL_SERVER_ERROR, "Terminate Observe")
                    .with_content_format(ContentFormat::TEXT_PLAIN)
            };
            async move { response }
        };
        router = router.resource(path, Resource::new().get(handler).obs().require_oscore());
    }
    router
}

/// A Tern plugtest server on loopback with the server halves `folders` (none: no OSCORE).
async fn tern_server(folders: &[PathBuf]) -> (Context, SocketAddr, OscoreServer) {
    let mut router = plugtest_router();
    let oscore = OscoreServer::new();
    if !folders.is_empty() {
        for dir in folders {
            oscore
                .add(OscoreContext::from_folder(dir, 64).unwrap())
                .unwrap();
        }
        router = router.oscore(oscore.clone());
    }
    let ctx = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    (ctx, addr, oscore)
}

/// Runs `plugtest-client ADDR STATE TEST` and checks its verdicts.
async fn run_client(plugtest: &Path, python: &Path, addr: SocketAddr, state: &Path, test: u32) {
    let mut cmd = Command::new(python);
    cmd.arg(plugtest.join("plugtest-client"))
        .arg(addr.to_string())
        .arg(state)
        .arg(test.to_string());
    let out =
        tokio::task::spawn_blocking(move || run_command_with_timeout(cmd, Duration::from_secs(30)))
            .await
            .unwrap();
    let text = out.all_output();
    if std::env::var_os("TERN_PLUGTEST_VERBOSE").is_some() {
        eprintln!("--- plugtest test {test} ---\n{text}");
    }
    let failed = text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("Additional verify failed")
            || l.starts_with("Failed")
            || l.starts_with("Expectation failed")
            || l.starts_with("Dubious")
            || l.starts_with("Test failed")
            || l.starts_with("Traceback")
    });
    let passed = text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("Additional verify passed")
            || l.starts_with("Check passed")
            || l.starts_with("Passed")
    });
    assert!(
        out.success() && passed && !failed,
        "plugtest test {test} against Tern's server:\n{}",
        out.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiocoap_plugtest_client_against_tern_server() {
    let Some((plugtest, python)) = plugtest() else {
        return;
    };
    let base = common::tempdir("plugtest-tern-server");
    let servers = contexts(&plugtest, &base.join("server"), &["b", "d"]);
    let client_state = base.join("client");
    let (server, addr, _) = tern_server(&servers).await;
    for test in (0..=15).chain([17]) {
        run_client(&plugtest, &python, addr, &client_state, test).await;
    }
    server.shutdown().await;

    // Test 16: an OSCORE request to a server that does not do OSCORE gets 4.02.
    let (plain, addr, _) = tern_server(&[]).await;
    run_client(&plugtest, &python, addr, &client_state, 16).await;
    plain.shutdown().await;

    // A server whose replay window was lost (the folder says so) challenges with Echo, and
    // aiocoap's client answers (Appendix B.1.2).
    let lost = contexts(&plugtest, &base.join("lost"), &["b", "d"]);
    for dir in &lost {
        std::fs::write(
            dir.join("sequence.json"),
            r#"{"next-to-send": 100, "received": "unknown"}"#,
        )
        .unwrap();
    }
    let (server, addr, oscore) = tern_server(&lost).await;
    for test in [1, 2, 1] {
        run_client(&plugtest, &python, addr, &client_state, test).await;
    }
    // Each context sent an Echo challenge, under a Partial IV of its own past the mark.
    let sequences = oscore.sender_sequences();
    assert_eq!(sequences.len(), 2);
    for (identity, next) in sequences {
        assert!(next > 100, "{identity:?} sent no challenge (next {next})");
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}

// ---------------------------------------------------------------------------
// Tern's client against aiocoap's plugtest-server

/// `plugtest-server --bind ADDR STATE [extra]`, ready.
fn aiocoap_server(
    plugtest: &Path,
    python: &Path,
    state: &Path,
    extra: &[&str],
) -> (ChildGuard, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(python);
    cmd.arg(plugtest.join("plugtest-server"))
        .arg("--bind")
        .arg(addr.to_string())
        .arg(state)
        .args(extra);
    let mut server = ChildGuard::spawn("plugtest-server", cmd);
    wait_ready(&mut server, addr, None);
    (server, addr)
}

/// A client half of the C.1 context (sender ID empty, recipient ID 01) with the given
/// changes, continuing at sequence number `from`.
fn c1_variant(secret: &[u8], sender: &[u8], recipient: &[u8], from: u64) -> OscoreClient {
    let mut params = ContextParams::new(secret, sender, recipient);
    params.master_salt = vec![0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];
    let mut context = SecurityContext::derive(&params).unwrap();
    context.resume_sender_sequence(from);
    OscoreClient::new(OscoreContext::in_memory(context))
}

const C1_SECRET: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// The options of a response, as (number, value) pairs.
fn options_of(r: &Response) -> Vec<(u16, Vec<u8>)> {
    r.options().map(|o| (o.number.0, o.value.clone())).collect()
}

fn cf_text() -> (u16, Vec<u8>) {
    (OptionNumber::CONTENT_FORMAT.0, Vec::new())
}

fn refused_code(result: Result<Response, Error>, what: &str) -> Code {
    match result {
        Err(Error::OscoreRefused { code, .. }) => code,
        other => panic!("{what}: expected an unprotected refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_client_against_aiocoap_plugtest_server() {
    let Some((plugtest, python)) = plugtest() else {
        return;
    };
    let base = common::tempdir("plugtest-aiocoap-server");
    let (_server, addr) = aiocoap_server(&plugtest, &python, &base.join("server"), &[]);
    let folders = contexts(&plugtest, &base.join("client"), &["a", "c"]);
    let ab = OscoreClient::new(OscoreContext::from_folder(&folders[0], 64).unwrap());
    let cd = OscoreClient::new(OscoreContext::from_folder(&folders[1], 64).unwrap());
    let ctx = Context::client();
    let uri = |path: &str| format!("coap://{addr}{path}");

    // 0: plain CoAP.
    let r = ctx.get(&uri("/oscore/hello/coap")).send().await.unwrap();
    assert_eq!(
        (r.code(), r.payload()),
        (Code::CONTENT, HELLO.as_bytes()),
        "test 0"
    );
    assert_eq!(options_of(&r), vec![cf_text()], "test 0");
    // 1, 2: protected GET with either context (2 has an ID Context, sent as kid context).
    for (test, client) in [(1, &ab), (2, &cd)] {
        let r = ctx
            .get(&uri("/oscore/hello/1"))
            .oscore(client)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.code(), r.payload()),
            (Code::CONTENT, HELLO.as_bytes()),
            "test {test}"
        );
        assert_eq!(options_of(&r), vec![cf_text()], "test {test}");
    }
    // 3: a query; the response has an ETag.
    let r = ctx
        .get(&uri("/oscore/hello/2?first=1"))
        .oscore(&ab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), HELLO.as_bytes(), "test 3");
    assert_eq!(
        options_of(&r),
        vec![(OptionNumber::ETAG.0, vec![0x2b]), cf_text()],
        "test 3"
    );
    // 4: Accept; the response has Max-Age 5.
    let r = ctx
        .get(&uri("/oscore/hello/3"))
        .accept(ContentFormat::TEXT_PLAIN)
        .oscore(&ab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.payload(), HELLO.as_bytes(), "test 4");
    assert_eq!(
        options_of(&r),
        vec![cf_text(), (OptionNumber::MAX_AGE.0, vec![5])],
        "test 4"
    );
    // 5: observing a resource that is not observable: a plain response, and the end.
    let mut o = ctx
        .get(&uri("/oscore/hello/1"))
        .oscore(&ab)
        .observe()
        .await
        .unwrap();
    let first = o.next().await.unwrap().unwrap();
    assert_eq!(first.code(), Code::CONTENT, "test 5");
    assert!(first.option(OptionNumber::OBSERVE).is_none(), "test 5");
    assert!(o.next().await.is_none(), "test 5");
    // 6, 7: protected notifications: "one", "two", then (6) a 5.00 that ends it, or (7) a
    // cancellation after "two".
    for (test, path) in [(6, "/oscore/observe1"), (7, "/oscore/observe2")] {
        let mut o = ctx.get(&uri(path)).oscore(&ab).observe().await.unwrap();
        let mut payloads = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(10), o.next())
            .await
            .unwrap_or_else(|_| panic!("test {test}: a notification is late"))
        {
            let r = item.unwrap();
            payloads.push(String::from_utf8_lossy(r.payload()).into_owned());
            if r.code().is_success() {
                assert!(r.option(OptionNumber::OBSERVE).is_some(), "test {test}");
            }
            if test == 7 && payloads.len() == 2 {
                break;
            }
        }
        let expected: &[&str] = if test == 6 {
            &["one", "two", "Terminate Observe"]
        } else {
            &["one", "two"]
        };
        assert_eq!(payloads, expected, "test {test}");
        o.cancel();
    }
    // 8: POST.
    let r = ctx
        .post(&uri("/oscore/hello/6"))
        .payload(vec![0x4a])
        .content_format(ContentFormat::TEXT_PLAIN)
        .oscore(&ab)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.code(), r.payload()),
        (Code::CHANGED, &[0x4a][..]),
        "test 8"
    );
    assert_eq!(options_of(&r), vec![cf_text()], "test 8");
    // 9: PUT with If-Match.
    let r = ctx
        .put(&uri("/oscore/hello/7"))
        .payload(vec![0x7a])
        .content_format(ContentFormat::TEXT_PLAIN)
        .option(OptionNumber::IF_MATCH, vec![0x7b])
        .oscore(&ab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CHANGED, "test 9");
    assert!(
        options_of(&r).is_empty() && r.payload().is_empty(),
        "test 9"
    );
    // 10: PUT with If-None-Match: 4.12.
    let r = ctx
        .put(&uri("/oscore/hello/7"))
        .payload(vec![0x8a])
        .content_format(ContentFormat::TEXT_PLAIN)
        .option(OptionNumber::IF_NONE_MATCH, Vec::new())
        .oscore(&ab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::PRECONDITION_FAILED, "test 10");
    assert!(options_of(&r).is_empty(), "test 10");
    // 11: DELETE.
    let r = ctx
        .delete(&uri("/oscore/test"))
        .oscore(&ab)
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::DELETED, "test 11");
    assert!(options_of(&r).is_empty(), "test 11");
    // 12: an unknown Sender ID: unprotected 4.01.
    let next = ab.sender_sequence();
    let spam = c1_variant(&C1_SECRET, b"spam", &[1], next);
    let code = refused_code(
        ctx.get(&uri("/oscore/hello/1")).oscore(&spam).send().await,
        "test 12",
    );
    assert_eq!(code, Code::UNAUTHORIZED, "test 12");
    // 13: a wrong Sender Key: unprotected 4.00 (ahead of the real numbers, so not a replay).
    let wrong_key = c1_variant(&[0xee; 16], b"", &[1], next + 10);
    let code = refused_code(
        ctx.get(&uri("/oscore/hello/1"))
            .oscore(&wrong_key)
            .send()
            .await,
        "test 13",
    );
    assert_eq!(code, Code::BAD_REQUEST, "test 13");
    // 14: a wrong Recipient Key (from another Recipient ID): the request passes, its response
    // does not verify.
    let wrong_recipient = c1_variant(&C1_SECRET, b"", &[2], next + 20);
    match ctx
        .get(&uri("/oscore/hello/1"))
        .oscore(&wrong_recipient)
        .send()
        .await
    {
        Err(Error::Oscore(e)) => assert_eq!(e, tern::tern_oscore::OscoreError::Decrypt, "test 14"),
        other => panic!("test 14: expected a response that does not verify, got {other:?}"),
    }
    // 15: a replay (the number test 14 used, accepted there): unprotected 4.01.
    let replay = c1_variant(&C1_SECRET, b"", &[1], next + 20);
    let code = refused_code(
        ctx.get(&uri("/oscore/hello/1"))
            .oscore(&replay)
            .send()
            .await,
        "test 15",
    );
    assert_eq!(code, Code::UNAUTHORIZED, "test 15");
    drop(_server);

    // A server that lost its replay state challenges with Echo; Tern's client answers once
    // and gets its response (Appendix B.1.2).
    let (_lost, addr) = aiocoap_server(
        &plugtest,
        &python,
        &base.join("lost"),
        &["--state-was-lost"],
    );
    let folders = contexts(&plugtest, &base.join("client-lost"), &["a"]);
    let client = OscoreClient::new(OscoreContext::from_folder(&folders[0], 64).unwrap());
    let r = ctx
        .get(&format!("coap://{addr}/oscore/hello/1"))
        .oscore(&client)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.code(), r.payload()),
        (Code::CONTENT, HELLO.as_bytes()),
        "Echo recovery"
    );
    assert_eq!(
        client.sender_sequence(),
        2,
        "the request went twice: plain, then with Echo"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// Test 16 from Tern's side: an OSCORE request to a server without OSCORE (libcoap's, built
/// without it) gets 4.02 Bad Option, unprotected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_client_against_a_server_without_oscore() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let client = c1_variant(&C1_SECRET, b"", &[1], 0);
    let result = Context::client()
        .get(&format!("coap://{addr}/"))
        .oscore(&client)
        .send()
        .await;
    assert_eq!(refused_code(result, "test 16"), Code::BAD_OPTION);
}

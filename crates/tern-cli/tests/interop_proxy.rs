//! `tern proxy` (CoAP → HTTP) with real peers on both sides: an HTTP backend (python3's
//! `http.server`), libcoap's `coap-client -P` over coap:// and coaps:// (PSK), and aiocoap
//! through its library API (aiocoap-client 0.4.17's `--proxy` only takes CoAP targets: its
//! ProxyForwarder needs a CoAP remote, which an http:// URI does not give it).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The client succeeded and printed the backend's `hello.txt`.
#[track_caller]
fn expect_hello(out: &RunOutput) {
    assert!(out.success(), "{}", out.describe());
    assert_eq!(
        out.stdout.trim_end(),
        "hello from http",
        "{}",
        out.describe()
    );
}

/// python3 serving a directory on 127.0.0.1 over HTTP.
fn http_backend(dir: &Path) -> (ChildGuard, SocketAddr) {
    let port = free_port_tcp();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .current_dir(dir);
    let guard = ChildGuard::spawn("python3 http.server", cmd);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = std::time::Instant::now() + SERVER_READY_TIMEOUT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTP backend did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (guard, addr)
}

fn free_port_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory with `hello.txt` and a 200 kB `big.bin`.
fn content() -> (tempdir::Dir, Vec<u8>) {
    let dir = tempdir::Dir::new();
    std::fs::write(dir.path().join("hello.txt"), "hello from http\n").unwrap();
    let big: Vec<u8> = (0..200_000).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    (dir, big)
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A fresh directory under the system's temporary one, removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "tern-proxy-interop-{}-{}",
                std::process::id(),
                super::random_text(8)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `tern proxy` on 127.0.0.1 (coap, and coaps with a PSK), the backend listed.
fn start_gateway(extra: &[&str]) -> (ChildGuard, SocketAddr, SocketAddr) {
    let port = free_port();
    let dtls_port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dtls: SocketAddr = ([127, 0, 0, 1], dtls_port).into();
    let mut cmd = Command::new(tern_bin());
    cmd.args(["proxy", "--bind", &addr.to_string(), "--no-tcp"]);
    cmd.args(["--dtls-bind", &dtls.to_string(), "--no-tls"]);
    cmd.args(["--psk-identity", "device-3", "--psk-key", "gw-secret"]);
    cmd.args([
        "--allow",
        "127.0.0.1",
        "--identity-header",
        "X-Coap-Identity",
    ]);
    cmd.args(extra);
    let mut gateway = ChildGuard::spawn("tern proxy", cmd);
    wait_ready(&mut gateway, addr, Some("listening on"));
    (gateway, addr, dtls)
}

#[test]
fn libcoap_client_through_tern_proxy_to_http() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (dir, big) = content();
    let (_backend, http) = http_backend(dir.path());
    let (_gateway, gw, _) = start_gateway(&[]);
    let proxy = format!("coap://{gw}");
    let run = |args: &[String]| run_with_timeout(&client, args, CLIENT_TIMEOUT);

    let out = run(&[
        "-P".into(),
        proxy.clone(),
        format!("http://{http}/hello.txt"),
    ]);
    expect_hello(&out);

    // 200 kB: Block2 between libcoap and the gateway.
    let out = run(&[
        "-P".into(),
        proxy.clone(),
        "-b".into(),
        "1024".into(),
        format!("http://{http}/big.bin"),
    ]);
    assert!(out.success(), "{}", out.describe());
    assert!(
        out.stdout.trim_end().as_bytes() == &big[..],
        "got {} bytes of {}, stderr: {}",
        out.stdout.len(),
        big.len(),
        out.stderr
    );

    // A missing file: 404 → 4.04, which coap-client prints.
    let out = run(&["-P".into(), proxy.clone(), format!("http://{http}/missing")]);
    assert!(out.all_output().contains("4.04"), "{}", out.describe());

    // A target with a token over plain coap: refused (4.03).
    let out = run(&[
        "-P".into(),
        proxy,
        format!("http://{http}/hello.txt?token=abc"),
    ]);
    assert!(out.all_output().contains("4.03"), "{}", out.describe());
}

#[test]
fn libcoap_client_over_coaps_may_send_credentials() {
    let Some(client) = require_peer("coap-client-openssl") else {
        return;
    };
    let (dir, _) = content();
    let (_backend, http) = http_backend(dir.path());
    let (_gateway, _, dtls) = start_gateway(&[]);
    let out = run_with_timeout(
        &client,
        [
            "-u".to_string(),
            "device-3".into(),
            "-k".into(),
            "gw-secret".into(),
            "-P".into(),
            format!("coaps://{dtls}"),
            format!("http://{http}/hello.txt?token=abc"),
        ],
        CLIENT_TIMEOUT,
    );
    expect_hello(&out);
}

/// aiocoap's python, beside aiocoap-client in the peers' venv.
fn aiocoap_python() -> Option<PathBuf> {
    require_peer("aiocoap-client")?;
    let client = locate_peer("aiocoap-client")?;
    let python = client.with_file_name("python3");
    assert!(python.exists(), "{} is missing", python.display());
    Some(python)
}

#[test]
fn aiocoap_through_tern_proxy_to_http() {
    let Some(python) = aiocoap_python() else {
        return;
    };
    let (dir, big) = content();
    let (_backend, http) = http_backend(dir.path());
    let (_gateway, gw, _) = start_gateway(&[]);
    let script = r#"
import asyncio, sys
import aiocoap
async def main():
    ctx = await aiocoap.Context.create_client_context()
    for target in sys.argv[2:]:
        msg = aiocoap.Message(code=aiocoap.GET, uri=sys.argv[1])
        msg.opt.proxy_uri = target
        r = await ctx.request(msg).response
        print(r.code, r.opt.content_format, len(r.payload), r.payload[:20])
    await ctx.shutdown()
asyncio.run(main())
"#;
    let out = run_with_timeout(
        &python,
        [
            "-c".to_string(),
            script.into(),
            format!("coap://{gw}"),
            format!("http://{http}/hello.txt"),
            format!("http://{http}/big.bin"),
            format!("http://{http}/missing"),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(out.success(), "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.describe());
    assert!(
        lines[0].starts_with("2.05 Content TEXT 16 b'hello from http"),
        "{}",
        out.describe()
    );
    assert!(
        lines[1].starts_with(&format!("2.05 Content None {} ", big.len()))
            || lines[1].starts_with(&format!("2.05 Content OCTETSTREAM {} ", big.len())),
        "{}",
        out.describe()
    );
    assert!(lines[2].starts_with("4.04 Not Found"), "{}", out.describe());
}

#[test]
fn a_fixed_path_serves_clients_that_cannot_set_proxy_uri() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (dir, _) = content();
    let (_backend, http) = http_backend(dir.path());
    let (_gateway, gw, _) = start_gateway(&["--path", "/coap2http"]);
    let out = run_with_timeout(
        &client,
        [format!(
            "coap://{gw}/coap2http?target=http://{http}/hello.txt"
        )],
        CLIENT_TIMEOUT,
    );
    expect_hello(&out);
    // Without a target: 4.00.
    let out = run_with_timeout(&client, [format!("coap://{gw}/coap2http")], CLIENT_TIMEOUT);
    assert!(out.all_output().contains("4.00"), "{}", out.describe());
}

#[test]
fn a_psk_derived_from_a_password() {
    // The gateway stores SHA-256("pass phrase") as the key of device-5; a client giving the
    // same derivation gets in, and one giving the password itself as the key does not.
    let (dir, _) = content();
    let (_backend, http) = http_backend(dir.path());
    let port = free_port();
    let dtls: SocketAddr = ([127, 0, 0, 1], port).into();
    let plain: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = Command::new(tern_bin());
    cmd.args([
        "proxy",
        "--bind",
        &plain.to_string(),
        "--no-tcp",
        "--no-tls",
    ]);
    cmd.args(["--dtls-bind", &dtls.to_string(), "--allow", "127.0.0.1"]);
    cmd.args([
        "--psk-identity",
        "device-5",
        "--psk-key",
        "sha256:pass phrase",
    ]);
    let mut gateway = ChildGuard::spawn("tern proxy", cmd);
    wait_ready(&mut gateway, plain, Some("listening on"));
    let get = |key: &str| {
        run_with_timeout(
            &tern_bin(),
            [
                "get".to_string(),
                "--timeout".into(),
                "5".into(),
                "-u".into(),
                "device-5".into(),
                "-k".into(),
                key.into(),
                "-O".into(),
                format!("35,http://{http}/hello.txt"),
                format!("coaps://{dtls}"),
            ],
            CLIENT_TIMEOUT,
        )
    };
    let out = get("sha256:pass phrase");
    expect_hello(&out);
    let out = get("pass phrase");
    assert!(!out.success(), "{}", out.describe());
}

/// `openssl s_server -www` (its status page over HTTPS) with the test server certificate.
fn openssl_https_server() -> Option<(ChildGuard, SocketAddr)> {
    let openssl = require_peer("openssl")?;
    let dir = certs();
    let port = free_port_tcp();
    let mut cmd = Command::new(openssl);
    cmd.args(["s_server", "-www", "-accept", &port.to_string()]);
    cmd.arg("-cert").arg(dir.join("server.pem"));
    cmd.arg("-key").arg(dir.join("server.key"));
    let guard = ChildGuard::spawn("openssl s_server", cmd);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = std::time::Instant::now() + SERVER_READY_TIMEOUT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some((guard, addr))
}

#[test]
fn https_targets_are_verified() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let Some((_server, https)) = openssl_https_server() else {
        return;
    };
    let ca = certs().join("ca.pem").to_string_lossy().into_owned();
    // With the test CA the gateway verifies s_server and forwards its page.
    let (_gateway, gw, _) = start_gateway(&["--http-ca-file", &ca]);
    let out = run_with_timeout(
        &client,
        [
            "-P".to_string(),
            format!("coap://{gw}"),
            format!("https://127.0.0.1:{}/", https.port()),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(out.stdout.contains("s_server"), "{}", out.describe());
    // Without it the server cannot be verified: 5.02.
    let (_plain_gateway, gw, _) = start_gateway(&[]);
    let out = run_with_timeout(
        &client,
        [
            "-P".to_string(),
            format!("coap://{gw}"),
            format!("https://127.0.0.1:{}/", https.port()),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(out.all_output().contains("5.02"), "{}", out.describe());
}

#[test]
fn libcoap_client_over_coap_tcp_through_tern_proxy() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (dir, _) = content();
    let (_backend, http) = http_backend(dir.path());
    // The gateway listens on TCP beside UDP, as tern serve does.
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(tern_bin());
    cmd.args(["proxy", "--bind", &addr.to_string(), "--allow", "127.0.0.1"]);
    let mut gateway = ChildGuard::spawn("tern proxy", cmd);
    wait_ready(&mut gateway, addr, Some("(coap+tcp)"));
    let out = run_with_timeout(
        &client,
        [
            "-P".to_string(),
            format!("coap+tcp://{addr}"),
            format!("http://{http}/hello.txt"),
        ],
        CLIENT_TIMEOUT,
    );
    expect_hello(&out);
}

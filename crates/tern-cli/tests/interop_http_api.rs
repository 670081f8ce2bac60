//! The gateway's HTTP → CoAP API with real peers: curl on the HTTP side, and on the CoAP side
//! libcoap's `coap-server-openssl` with a PSK (a provider with credentials of its own) and
//! `tern serve` (methods, status codes, Location, observe as server-sent events).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use common::*;

const TOKEN: &str = "a-long-enough-bearer-token";

struct Gateway {
    _guard: ChildGuard,
    http: SocketAddr,
    _token_dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._token_dir);
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tern proxy` with the HTTP API on 127.0.0.1 and these providers.
fn start_gateway(extra: &[String]) -> Gateway {
    let dir = std::env::temp_dir().join(format!(
        "tern-http-api-{}-{}",
        std::process::id(),
        random_text(8)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let coap: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let http: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
    let mut cmd = Command::new(tern_bin());
    cmd.args([
        "proxy",
        "--bind",
        &coap.to_string(),
        "--no-tcp",
        "--allow",
        "127.0.0.1",
    ]);
    cmd.args(["--http-bind", &http.to_string(), "--http-token-file"]);
    cmd.arg(&token_file);
    cmd.args(extra);
    let mut guard = ChildGuard::spawn("tern proxy", cmd);
    wait_ready(&mut guard, coap, Some("HTTP API listening on"));
    Gateway {
        _guard: guard,
        http,
        _token_dir: dir,
    }
}

/// curl with the bearer token; `-i` so the status line and headers come too.
fn curl(args: &[&str]) -> RunOutput {
    let curl = PathBuf::from("curl");
    let mut all = vec!["-s", "-i", "--max-time", "20", "-H"];
    let auth = format!("Authorization: Bearer {TOKEN}");
    all.push(&auth);
    all.extend_from_slice(args);
    run_with_timeout(&curl, all, CLIENT_TIMEOUT)
}

fn status_of(out: &RunOutput) -> u16 {
    out.stdout
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_of(out: &RunOutput) -> &str {
    out.stdout
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
}

#[test]
fn curl_through_the_gateway_to_libcoap_with_psk() {
    let Some(server) = require_peer("coap-server-openssl") else {
        return;
    };
    if find_in_path("curl").is_none() {
        assert!(!peers_required(), "curl is missing");
        return;
    }
    let (_libcoap, secure) =
        start_libcoap_secure_server(&server, &["-k", "provider-key", "-h", "libcoap"]);
    let gw = start_gateway(&[
        "--provider".into(),
        format!("lamp=coaps://{secure}"),
        "--provider-psk".into(),
        "lamp=tern-gw:provider-key".into(),
    ]);
    // libcoap's server answers its banner at `/`, 4.04 elsewhere.
    let out = curl(&[&format!("http://{}/providers/lamp/", gw.http)]);
    assert_eq!(status_of(&out), 200, "{}", out.describe());
    assert!(body_of(&out).contains("libcoap"), "{}", out.describe());
    let out = curl(&[&format!("http://{}/providers/lamp/nothing-here", gw.http)]);
    assert_eq!(status_of(&out), 404, "{}", out.describe());
    // /time on libcoap's server is observable too, but observe is tested against tern serve.
    let out = curl(&[&format!("http://{}/providers/nobody/x", gw.http)]);
    assert_eq!(status_of(&out), 404, "{}", out.describe());
}

#[test]
fn curl_through_the_gateway_to_tern_serve() {
    if find_in_path("curl").is_none() {
        assert!(!peers_required(), "curl is missing");
        return;
    }
    let (_device, device) = start_tern_server_with(&["--no-tcp"]);
    let gw = start_gateway(&[
        "--provider".into(),
        format!("dev=coap://{device}"),
        "--http-proxy-path".into(),
    ]);
    let base = format!("http://{}/providers/dev", gw.http);
    // PUT creates (2.01 → 201), GET reads back with its Content-Type.
    let out = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "--data",
        "{\"t\":1}",
        &format!("{base}/store/k"),
    ]);
    assert_eq!(status_of(&out), 201, "{}", out.describe());
    let out = curl(&[&format!("{base}/store/k")]);
    assert_eq!(status_of(&out), 200, "{}", out.describe());
    assert!(
        out.stdout
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        out.describe()
    );
    assert_eq!(body_of(&out), "{\"t\":1}", "{}", out.describe());
    // POST /echo: 2.04 → 200 with the body back.
    let out = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: text/plain",
        "--data",
        "ping",
        &format!("{base}/echo"),
    ]);
    assert_eq!(
        (status_of(&out), body_of(&out)),
        (200, "ping"),
        "{}",
        out.describe()
    );
    // DELETE then GET: 404.
    let out = curl(&["-X", "DELETE", &format!("{base}/store/k")]);
    assert_eq!(status_of(&out), 204, "{}", out.describe());
    let out = curl(&[&format!("{base}/store/k")]);
    assert_eq!(status_of(&out), 404, "{}", out.describe());
    // NON and a short time-out are per request.
    let out = curl(&[
        "-H",
        "X-Coap-Type: NON",
        "-H",
        "X-Coap-Timeout: 5",
        &format!("{base}/time"),
    ]);
    assert_eq!(status_of(&out), 200, "{}", out.describe());
    let out = curl(&["-H", "X-Coap-Timeout: 90", &format!("{base}/time")]);
    assert_eq!(status_of(&out), 400, "{}", out.describe());
    // An unknown Content-Type: 415.
    let out = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: image/png",
        "--data",
        "x",
        &format!("{base}/store/p"),
    ]);
    assert_eq!(status_of(&out), 415, "{}", out.describe());
    // /proxy/ with a full CoAP URI.
    let out = curl(&[&format!("http://{}/proxy/coap://{device}/time", gw.http)]);
    assert_eq!(status_of(&out), 200, "{}", out.describe());
    // No token, a wrong token: 401.
    let curl_bin = PathBuf::from("curl");
    let out = run_with_timeout(
        &curl_bin,
        ["-s", "-i", &format!("{base}/time")],
        CLIENT_TIMEOUT,
    );
    assert_eq!(status_of(&out), 401, "{}", out.describe());
    let out = run_with_timeout(
        &curl_bin,
        [
            "-s",
            "-i",
            "-H",
            "Authorization: Bearer wrong-token-of-some-length",
            &format!("{base}/time"),
        ],
        CLIENT_TIMEOUT,
    );
    assert_eq!(status_of(&out), 401, "{}", out.describe());
    // A device that does not answer: 504 after the time-out.
    let silent: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let out = curl(&[
        "-H",
        "X-Coap-Timeout: 2",
        &format!("http://{}/proxy/coap://{silent}/x", gw.http),
    ]);
    assert_eq!(status_of(&out), 504, "{}", out.describe());
}

#[test]
fn observe_as_server_sent_events() {
    if find_in_path("curl").is_none() {
        assert!(!peers_required(), "curl is missing");
        return;
    }
    let (_device, device) = start_tern_server_with(&["--no-tcp"]);
    let gw = start_gateway(&["--provider".into(), format!("dev=coap://{device}")]);
    // /time notifies once a second; curl stops after 3.5 s (exit 28 is its time-out).
    let curl_bin = PathBuf::from("curl");
    let out = run_with_timeout(
        &curl_bin,
        [
            "-s",
            "-N",
            "--max-time",
            "3.5",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "-H",
            "Accept: text/event-stream",
            &format!("http://{}/providers/dev/time", gw.http),
        ],
        CLIENT_TIMEOUT,
    );
    let events: Vec<&str> = out
        .stdout
        .split("\n\n")
        .filter(|e| e.contains("event: notification"))
        .collect();
    assert!(events.len() >= 3, "{}", out.describe());
    let ids: Vec<u32> = events
        .iter()
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("id: ")))
        .filter_map(|id| id.parse().ok())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "Observe values in order: {ids:?}"
    );
    assert!(events[0].contains("data: 20"), "{}", out.describe());
}

#[test]
fn the_api_over_https() {
    if find_in_path("curl").is_none() {
        assert!(!peers_required(), "curl is missing");
        return;
    }
    let (_device, device) = start_tern_server_with(&["--no-tcp"]);
    let dir = certs();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let gw = start_gateway(&[
        "--provider".into(),
        format!("dev=coap://{device}"),
        "--http-cert".into(),
        file("server.pem"),
        "--http-key".into(),
        file("server.key"),
    ]);
    let url = format!("https://{}/providers/dev/time", gw.http);
    let out = curl(&["--cacert", &file("ca.pem"), &url]);
    assert_eq!(status_of(&out), 200, "{}", out.describe());
    // Without the CA curl cannot verify the server (exit 60), and plain HTTP gets nowhere.
    let out = curl(&[&url]);
    assert!(!out.success(), "{}", out.describe());
    let out = curl(&[&url.replacen("https", "http", 1)]);
    assert_eq!(status_of(&out), 0, "{}", out.describe());
}

#[test]
fn curl_through_the_gateway_to_libcoap_with_certificates() {
    let Some(server) = require_peer("coap-server-openssl") else {
        return;
    };
    if find_in_path("curl").is_none() {
        assert!(!peers_required(), "curl is missing");
        return;
    }
    let dir = certs();
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // libcoap requires and verifies the gateway's client certificate; the gateway verifies
    // libcoap's server certificate against the test CA.
    let (_libcoap, secure) = start_libcoap_secure_server(
        &server,
        &[
            "-c",
            &file("server.pem"),
            "-j",
            &file("server.key"),
            "-C",
            &file("ca.pem"),
        ],
    );
    let gw = start_gateway(&[
        "--provider".into(),
        format!("lamp=coaps://{secure}"),
        "--provider-cert".into(),
        format!(
            "lamp={},{},{}",
            file("client.pem"),
            file("client.key"),
            file("ca.pem")
        ),
        "--provider".into(),
        format!("stranger=coaps://{secure}"),
        "--provider-cert".into(),
        format!(
            "stranger={},{},{}",
            file("client.pem"),
            file("client.key"),
            file("other-ca.pem")
        ),
    ]);
    let out = curl(&[&format!("http://{}/providers/lamp/", gw.http)]);
    assert_eq!(status_of(&out), 200, "{}", out.describe());
    assert!(body_of(&out).contains("libcoap"), "{}", out.describe());
    // A provider that does not trust the device's CA cannot reach it: 502.
    let out = curl(&[&format!("http://{}/providers/stranger/", gw.http)]);
    assert_eq!(status_of(&out), 502, "{}", out.describe());
}

//! `tern stream-load`: pipelined requests over coap+tcp://, TLS handshakes and idle connections
//! over coaps+tcp:// against `tern serve`, and its refusals of bad arguments.

mod common;

use common::{free_port, start_tern_server_with, tern};

/// The integer value of `"key":N` in a one-line JSON report.
fn field(json: &str, key: &str) -> u64 {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 3;
    json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

#[test]
fn stream_load_requests_over_tcp_are_all_answered() {
    let (_server, addr) = start_tern_server_with(&[]);
    let out = tern([
        "stream-load",
        "requests",
        &format!("coap+tcp://{addr}/"),
        "-c",
        "2",
        "-w",
        "8",
        "-d",
        "1",
        "--json",
    ]);
    assert!(out.success(), "{}", out.describe());
    assert!(field(&out.stdout, "requests") > 0, "{}", out.stdout);
    assert_eq!(field(&out.stdout, "errors"), 0, "{}", out.stdout);
    assert_eq!(field(&out.stdout, "timeouts"), 0, "{}", out.stdout);
    assert_eq!(
        field(&out.stdout, "failed_connections"),
        0,
        "{}",
        out.stdout
    );
}

#[test]
fn stream_load_over_tls_psk_handshakes_and_holds_connections() {
    let tls: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (_server, _addr) = start_tern_server_with(&[
        "--dtls-bind",
        &tls.to_string(),
        "--psk-identity",
        "load",
        "--psk-key",
        "load-secret",
    ]);
    let uri = format!("coaps+tcp://{tls}/");
    let creds = ["-u", "load", "-k", "load-secret"];

    let out = tern(
        [
            "stream-load",
            "requests",
            &uri,
            "-c",
            "1",
            "-w",
            "4",
            "-d",
            "0.5",
            "--json",
        ]
        .into_iter()
        .chain(creds),
    );
    assert!(out.success(), "{}", out.describe());
    assert!(field(&out.stdout, "requests") > 0, "{}", out.stdout);
    assert!(out.stdout.contains("TLSv1.2"), "{}", out.stdout);

    let out = tern(
        [
            "stream-load",
            "handshakes",
            &uri,
            "-c",
            "2",
            "-d",
            "0.5",
            "--csm",
            "--json",
        ]
        .into_iter()
        .chain(creds),
    );
    assert!(out.success(), "{}", out.describe());
    assert!(field(&out.stdout, "handshakes") > 0, "{}", out.stdout);
    assert_eq!(field(&out.stdout, "failures"), 0, "{}", out.stdout);

    let out = tern(
        [
            "stream-load",
            "idle",
            &uri,
            "-n",
            "20",
            "-c",
            "4",
            "--hold",
            "0.2",
        ]
        .into_iter()
        .chain(creds),
    );
    assert!(out.success(), "{}", out.describe());
    assert_eq!(field(&out.stdout, "connections"), 20, "{}", out.stdout);
    assert_eq!(field(&out.stdout, "still_open"), 20, "{}", out.stdout);
}

#[test]
fn stream_load_refuses_bad_arguments() {
    let out = tern(["stream-load", "requests", "coap://127.0.0.1:9/", "-d", "1"]);
    assert!(!out.success());
    assert!(out.stderr.contains("coap+tcp://"), "{}", out.describe());

    let out = tern([
        "stream-load",
        "requests",
        "coap+tcp://127.0.0.1:9/",
        "-w",
        "0",
    ]);
    assert!(!out.success());
    assert!(out.stderr.contains("window must be"), "{}", out.describe());

    let out = tern(["stream-load", "handshakes", "coaps+tcp://127.0.0.1:9/"]);
    assert!(!out.success());
    assert!(out.stderr.contains("needs a PSK"), "{}", out.describe());
}

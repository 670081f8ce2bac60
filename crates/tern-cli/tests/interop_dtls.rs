//! coaps:// (DTLS 1.2, PSK, TLS_PSK_WITH_AES_128_CCM_8) between `tern` and libcoap's OpenSSL
//! build, both ways. Judge coap-client by its output, never its exit code.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

const ID: &str = "dev1";
const KEY: &str = "secret1";

fn coaps(addr: SocketAddr, path: &str) -> String {
    format!("coaps://{addr}{path}")
}

/// `tern serve` with plain UDP and DTLS listeners; returns the guard and the DTLS address.
fn tern_dtls_server() -> (ChildGuard, SocketAddr) {
    let dtls: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (server, _plain) = start_tern_server_with(&[
        "--dtls-bind",
        &dtls.to_string(),
        "--psk-identity",
        ID,
        "--psk-key",
        KEY,
        "--psk-hint",
        "tern",
    ]);
    (server, dtls)
}

fn coap_client(bin: &std::path::Path, args: &[&str]) -> RunOutput {
    run_with_timeout(bin, args, Duration::from_secs(20))
}

#[test]
fn libcoap_client_gets_and_puts_over_dtls_psk_and_the_handler_sees_the_identity() {
    let Some(bin) = require_peer("coap-client-openssl") else {
        return;
    };
    let (_server, dtls) = tern_dtls_server();
    let out = coap_client(
        &bin,
        &["-B", "5", "-u", ID, "-k", KEY, &coaps(dtls, "/whoami")],
    );
    assert!(
        out.stdout.contains("psk:dev1"),
        "GET /whoami over coaps\n{}",
        out.describe()
    );
    let text = random_text(12);
    let put = coap_client(
        &bin,
        &[
            "-B",
            "5",
            "-u",
            ID,
            "-k",
            KEY,
            "-m",
            "put",
            "-e",
            &text,
            &coaps(dtls, "/store/k"),
        ],
    );
    assert!(
        !has_error_code_line(&put.all_output()),
        "PUT over coaps\n{}",
        put.describe()
    );
    let get = coap_client(
        &bin,
        &["-B", "5", "-u", ID, "-k", KEY, &coaps(dtls, "/store/k")],
    );
    assert!(
        get.stdout.contains(&text),
        "GET back over coaps\n{}",
        get.describe()
    );
}

#[test]
fn a_wrong_key_gets_nothing_and_the_server_keeps_serving() {
    let Some(bin) = require_peer("coap-client-openssl") else {
        return;
    };
    let (_server, dtls) = tern_dtls_server();
    let bad = coap_client(
        &bin,
        &[
            "-B",
            "3",
            "-u",
            ID,
            "-k",
            "not-the-key",
            &coaps(dtls, "/whoami"),
        ],
    );
    assert!(
        !bad.stdout.contains("psk:"),
        "a wrong key was answered\n{}",
        bad.describe()
    );
    let good = coap_client(
        &bin,
        &["-B", "5", "-u", ID, "-k", KEY, &coaps(dtls, "/whoami")],
    );
    assert!(
        good.stdout.contains("psk:dev1"),
        "after a failed handshake\n{}",
        good.describe()
    );
}

/// `coap-server-openssl` with a PSK (and hint); its DTLS port is the plain port + 1.
fn libcoap_dtls_server(bin: &std::path::Path, hint: &str) -> (ChildGuard, SocketAddr) {
    start_libcoap_secure_server(bin, &["-k", KEY, "-h", hint])
}

#[test]
fn tern_client_gets_and_puts_to_libcoap_over_dtls_psk_with_and_without_hint() {
    let Some(bin) = require_peer("coap-server-openssl") else {
        return;
    };
    for hint in ["libcoap-hint", ""] {
        let (_server, dtls) = libcoap_dtls_server(&bin, hint);
        let out = tern([
            "get",
            "-u",
            ID,
            "-k",
            KEY,
            "--timeout",
            "10",
            &coaps(dtls, "/time"),
        ]);
        assert!(
            out.success() && !out.stdout.trim().is_empty(),
            "GET /time (hint {hint:?})\n{}",
            out.describe()
        );
        let text = random_text(10);
        let put = tern([
            "put",
            "-u",
            ID,
            "-k",
            KEY,
            "--timeout",
            "10",
            "-e",
            &text,
            &coaps(dtls, "/example_data"),
        ]);
        assert!(put.success(), "PUT /example_data\n{}", put.describe());
        let get = tern([
            "get",
            "-u",
            ID,
            "-k",
            KEY,
            "--timeout",
            "10",
            &coaps(dtls, "/example_data"),
        ]);
        assert!(
            get.stdout.contains(&text),
            "GET /example_data\n{}",
            get.describe()
        );
    }
}

#[test]
fn tern_client_with_a_wrong_key_fails_with_a_clear_reason() {
    let Some(bin) = require_peer("coap-server-openssl") else {
        return;
    };
    let (_server, dtls) = libcoap_dtls_server(&bin, "h");
    let out = tern([
        "get",
        "-u",
        ID,
        "-k",
        "wrong",
        "--timeout",
        "4",
        &coaps(dtls, "/time"),
    ]);
    assert!(!out.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("handshake"),
        "the reason names the handshake\n{}",
        out.describe()
    );
}

/// RFC 7641 over coaps://: `coap-client-openssl -s 5` observes `tern serve`'s `/time` through a
/// DTLS-PSK session and gets the first response and at least three notifications.
#[test]
fn libcoap_client_observes_time_on_tern_over_dtls_psk() {
    let Some(bin) = require_peer("coap-client-openssl") else {
        return;
    };
    let (server, dtls) = tern_dtls_server();
    let out = coap_client(
        &bin,
        &["-s", "5", "-u", ID, "-k", KEY, &coaps(dtls, "/time")],
    );
    assert_libcoap_observed_tern_times(&out, &server);
}

/// RFC 7641 over coaps://: `tern get -s 5` observes `coap-server-openssl`'s `/time` through a
/// DTLS-PSK session.
#[test]
fn tern_observes_time_on_libcoap_over_dtls_psk() {
    let Some(bin) = require_peer("coap-server-openssl") else {
        return;
    };
    let (_server, dtls) = libcoap_dtls_server(&bin, "hint");
    let out = tern([
        "get",
        "-s",
        "5",
        "-u",
        ID,
        "-k",
        KEY,
        "--timeout",
        "10",
        &coaps(dtls, "/time"),
    ]);
    assert_tern_observed_libcoap_time(&out);
}

//! coaps:// with certificates (ECDHE-ECDSA-AES128-CCM8) between `tern` and libcoap's OpenSSL
//! build, both ways, client certificate required and not. Certificates are made fresh by
//! scripts/make-test-certs.sh.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;

fn coaps(addr: SocketAddr, path: &str) -> String {
    format!("coaps://{addr}{path}")
}

fn tern_pki_server(require_client_cert: bool) -> (ChildGuard, SocketAddr) {
    let dtls: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut args = vec![
        "--dtls-bind".to_string(),
        dtls.to_string(),
        "--cert".into(),
        cert("server.pem"),
        "--key".into(),
        cert("server.key"),
        "--ca".into(),
        cert("ca.pem"),
    ];
    if require_client_cert {
        args.push("--require-client-cert".into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (server, _) = start_tern_server_with(&refs);
    (server, dtls)
}

#[test]
fn libcoap_client_with_a_certificate_reaches_tern_which_requires_one() {
    let Some(bin) = require_peer("coap-client-openssl") else {
        return;
    };
    let (_server, dtls) = tern_pki_server(true);
    let uri = coaps(dtls, "/whoami");
    let out = run_with_timeout(
        &bin,
        [
            "-B",
            "5",
            "-c",
            &cert("client.pem"),
            "-j",
            &cert("client.key"),
            "-C",
            &cert("ca.pem"),
            &uri,
        ],
        Duration::from_secs(20),
    );
    assert!(
        out.stdout.contains("cert:tern-test-client"),
        "GET /whoami with a client certificate\n{}",
        out.describe()
    );
    // Without a client certificate, a server that requires one answers nothing.
    let none = run_with_timeout(
        &bin,
        ["-B", "3", "-C", &cert("ca.pem"), &uri],
        Duration::from_secs(20),
    );
    assert!(
        !none.stdout.contains("cert:") && !none.stdout.contains("anonymous"),
        "{}",
        none.describe()
    );
}

#[test]
fn libcoap_client_without_a_certificate_reaches_tern_that_does_not_require_one() {
    let Some(bin) = require_peer("coap-client-openssl") else {
        return;
    };
    let (_server, dtls) = tern_pki_server(false);
    let out = run_with_timeout(
        &bin,
        ["-B", "5", "-C", &cert("ca.pem"), &coaps(dtls, "/whoami")],
        Duration::from_secs(20),
    );
    assert!(out.stdout.contains("anonymous"), "{}", out.describe());
}

/// `coap-server-openssl` with certificates; `-C` makes it require a client certificate.
fn libcoap_pki_server(bin: &Path) -> (ChildGuard, SocketAddr) {
    let (server, ca) = (cert("server.pem"), cert("ca.pem"));
    start_libcoap_secure_server(bin, &["-c", &server, "-j", &cert("server.key"), "-C", &ca])
}

#[test]
fn tern_client_with_a_certificate_gets_from_libcoap_which_requires_one() {
    let Some(bin) = require_peer("coap-server-openssl") else {
        return;
    };
    let (_server, dtls) = libcoap_pki_server(&bin);
    let out = tern([
        "get",
        "-c",
        &cert("client.pem"),
        "-j",
        &cert("client.key"),
        "-C",
        &cert("ca.pem"),
        "--timeout",
        "10",
        &coaps(dtls, "/time"),
    ]);
    assert!(
        out.success() && !out.stdout.trim().is_empty(),
        "{}",
        out.describe()
    );
    // Trusting another CA, the client refuses libcoap's certificate.
    let wrong_ca = tern([
        "get",
        "-c",
        &cert("client.pem"),
        "-j",
        &cert("client.key"),
        "-C",
        &cert("other-ca.pem"),
        "--timeout",
        "4",
        &coaps(dtls, "/time"),
    ]);
    assert!(!wrong_ca.success(), "{}", wrong_ca.describe());
}

#[test]
fn bad_certificate_flags_are_named() {
    let out = tern([
        "get",
        "-c",
        "/nonexistent.pem",
        "-j",
        &cert("client.key"),
        "-C",
        &cert("ca.pem"),
        "coaps://127.0.0.1:1/x",
    ]);
    assert!(!out.success());
    assert!(
        out.stderr.contains("certificate") && out.stderr.contains("/nonexistent.pem"),
        "{}",
        out.describe()
    );
    let out = tern([
        "get",
        "-c",
        &cert("server.pem"),
        "-j",
        &cert("client.key"),
        "-C",
        &cert("ca.pem"),
        "coaps://127.0.0.1:1/x",
    ]);
    assert!(out.stderr.contains("does not match"), "{}", out.describe());
}

//! coaps+tcp:// (CoAP over TLS, RFC 8323) with real peers, both ways: libcoap's OpenSSL build
//! with a PSK and with certificates, and `aiocoap-client` with the server's certificate.
//! libcoap's server listens for TLS on its plain port + 1; `tern serve` takes its DTLS
//! address for TLS too. Certificates come from scripts/make-test-certs.sh.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const ID: &str = "dev1";
const KEY: &str = "secret1";

fn tls(addr: SocketAddr, path: &str) -> String {
    format!("coaps+tcp://{addr}{path}")
}

fn client(bin: &Path, args: &[&str]) -> RunOutput {
    run_with_timeout(bin, args, Duration::from_secs(20))
}

/// `tern serve` with a PSK; returns the guard and the TLS address.
fn tern_psk_server() -> (ChildGuard, SocketAddr) {
    let secure: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (server, _) = start_tern_server_with(&[
        "--dtls-bind",
        &secure.to_string(),
        "--psk-identity",
        ID,
        "--psk-key",
        KEY,
    ]);
    wait_tcp(secure);
    (server, secure)
}

/// `tern serve` with certificates; returns the guard and the TLS address.
fn tern_pki_server(require_client_cert: bool) -> (ChildGuard, SocketAddr) {
    let secure: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut args = vec![
        "--dtls-bind".to_string(),
        secure.to_string(),
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
    wait_tcp(secure);
    (server, secure)
}

/// Waits until something accepts TCP connections on `addr` (bounded).
fn wait_tcp(addr: SocketAddr) {
    for _ in 0..100 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr} (TCP)");
}

/// `coap-server-openssl` with a PSK, or with certificates (then requiring a client's).
fn libcoap_server(bin: &Path, pki: bool) -> (ChildGuard, SocketAddr) {
    let (server, key, ca) = (cert("server.pem"), cert("server.key"), cert("ca.pem"));
    let args: Vec<&str> = if pki {
        vec!["-c", &server, "-j", &key, "-C", &ca]
    } else {
        vec!["-k", KEY]
    };
    let (guard, secure) = start_libcoap_secure_server(bin, &args);
    wait_tcp(secure);
    (guard, secure)
}

#[test]
fn libcoap_client_over_tls_psk_to_tern_and_the_handler_sees_the_identity() {
    let Some(bin) = require_peer("coap-client-openssl") else {
        return;
    };
    let (server, addr) = tern_psk_server();
    let psk = ["-B", "5", "-u", ID, "-k", KEY];
    let who = client(&bin, &[&psk[..], &[&tls(addr, "/whoami")]].concat());
    assert!(
        who.stdout.contains("psk:dev1"),
        "GET /whoami over coaps+tcp\n{}\n{}",
        who.describe(),
        server.output()
    );
    let text = random_text(20);
    let put = client(
        &bin,
        &[
            &psk[..],
            &["-m", "put", "-e", &text, &tls(addr, "/store/s")],
        ]
        .concat(),
    );
    assert!(
        !has_error_code_line(&put.all_output()),
        "PUT\n{}",
        put.describe()
    );
    let get = client(&bin, &[&psk[..], &[&tls(addr, "/store/s")]].concat());
    assert_eq!(get.stdout.trim(), text, "GET back\n{}", get.describe());
    let nf = client(&bin, &[&psk[..], &[&tls(addr, "/no/such")]].concat());
    assert!(
        nf.stderr.lines().any(|l| l.trim().starts_with("4.04")),
        "4.04\n{}",
        nf.describe()
    );
    // A wrong key gets nothing, and the server keeps serving.
    let bad = client(
        &bin,
        &["-B", "3", "-u", ID, "-k", "wrong", &tls(addr, "/whoami")],
    );
    assert!(!bad.stdout.contains("psk:"), "{}", bad.describe());
    let again = client(&bin, &[&psk[..], &[&tls(addr, "/whoami")]].concat());
    assert!(again.stdout.contains("psk:dev1"), "{}", again.describe());
}

#[test]
fn libcoap_client_over_tls_with_a_certificate_to_tern_which_requires_one() {
    let Some(bin) = require_peer("coap-client-openssl") else {
        return;
    };
    let (server, addr) = tern_pki_server(true);
    let out = client(
        &bin,
        &[
            "-B",
            "5",
            "-c",
            &cert("client.pem"),
            "-j",
            &cert("client.key"),
            "-C",
            &cert("ca.pem"),
            &tls(addr, "/whoami"),
        ],
    );
    assert!(
        out.stdout.contains("cert:tern-test-client"),
        "GET /whoami over coaps+tcp with a client certificate\n{}\n{}",
        out.describe(),
        server.output()
    );
    let none = client(
        &bin,
        &["-B", "3", "-C", &cert("ca.pem"), &tls(addr, "/whoami")],
    );
    assert!(
        !none.stdout.contains("cert:") && !none.stdout.contains("anonymous"),
        "a server requiring a certificate answered a client without one\n{}",
        none.describe()
    );
}

#[test]
fn tern_over_tls_psk_to_libcoap() {
    let Some(bin) = require_peer("coap-server-openssl") else {
        return;
    };
    let (_server, addr) = libcoap_server(&bin, false);
    let text = random_text(16);
    let put = tern([
        "put",
        "-u",
        ID,
        "-k",
        KEY,
        "-e",
        &text,
        "--timeout",
        "10",
        &tls(addr, "/example_data"),
    ]);
    assert!(put.success(), "PUT over coaps+tcp\n{}", put.describe());
    let get = tern([
        "get",
        "-u",
        ID,
        "-k",
        KEY,
        "--timeout",
        "10",
        &tls(addr, "/example_data"),
    ]);
    assert_eq!(get.stdout.trim(), text, "GET back\n{}", get.describe());
    let bad = tern([
        "get",
        "-u",
        ID,
        "-k",
        "wrong",
        "--timeout",
        "5",
        &tls(addr, "/time"),
    ]);
    assert!(
        !bad.success(),
        "a wrong key was answered\n{}",
        bad.describe()
    );
    assert!(
        bad.stderr.to_lowercase().contains("tls") || bad.stderr.contains("handshake"),
        "the failure should name TLS\n{}",
        bad.describe()
    );
}

#[test]
fn tern_over_tls_with_certificates_to_libcoap() {
    let Some(bin) = require_peer("coap-server-openssl") else {
        return;
    };
    let (_server, addr) = libcoap_server(&bin, true);
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
        &tls(addr, "/time"),
    ]);
    assert!(
        out.success() && !out.stdout.trim().is_empty(),
        "GET /time over coaps+tcp with certificates\n{}",
        out.describe()
    );
    let wrong_ca = tern([
        "get",
        "-c",
        &cert("client.pem"),
        "-j",
        &cert("client.key"),
        "-C",
        &cert("other-ca.pem"),
        "--timeout",
        "5",
        &tls(addr, "/time"),
    ]);
    assert!(!wrong_ca.success(), "{}", wrong_ca.describe());
}

#[test]
fn aiocoap_client_over_tls_to_tern_with_the_server_certificate() {
    let Some(bin) = require_peer("aiocoap-client") else {
        return;
    };
    let (server, addr) = tern_pki_server(false);
    // aiocoap checks the server against the system's trust store: point it at the test CA.
    // The name checked is the URI's host, which the certificate carries as a SAN.
    let uri = format!("coaps+tcp://localhost:{}/whoami", addr.port());
    let mut cmd = Command::new(&bin);
    cmd.args(["--no-pretty-print", "--no-color", &uri])
        .env("SSL_CERT_FILE", cert("ca.pem"));
    let out = run_command_with_timeout(cmd, Duration::from_secs(20));
    assert!(
        out.success() && out.stdout.contains("anonymous"),
        "aiocoap-client over coaps+tcp\n{}\n{}",
        out.describe(),
        server.output()
    );
}

//! CoAP over TCP (RFC 8323, coap+tcp://) with real peers: libcoap's `coap-client-notls` and
//! `aiocoap-client` against `tern serve`, and `tern get|put` against libcoap's
//! `coap-server-notls` (which listens on TCP beside UDP on its port); observe both ways
//! (`coap-client-notls -s`, `tern get -s`).

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;

fn tcp_uri(addr: SocketAddr, path: &str) -> String {
    format!("coap+tcp://{addr}{path}")
}

fn coap_client(bin: &Path, extra: &[&str], uri: &str) -> RunOutput {
    let mut args: Vec<&str> = vec!["-B", "5"];
    args.extend_from_slice(extra);
    args.push(uri);
    run_with_timeout(bin, args, CLIENT_TIMEOUT)
}

fn aiocoap(bin: &Path, extra: &[&str], uri: &str) -> RunOutput {
    let mut args: Vec<&str> = vec!["--no-pretty-print", "--no-color"];
    args.extend_from_slice(extra);
    args.push(uri);
    run_with_timeout(bin, args, CLIENT_TIMEOUT)
}

#[test]
fn libcoap_client_over_tcp_to_tern() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = coap_client(&client, &[], &tcp_uri(addr, "/time"));
    assert!(
        !has_error_code_line(&out.all_output()) && !out.stdout.trim().is_empty(),
        "GET /time over TCP\n{}\n{}",
        out.describe(),
        server.output()
    );
    let text = random_text(32);
    let put = coap_client(
        &client,
        &["-m", "put", "-e", &text],
        &tcp_uri(addr, "/store/t"),
    );
    assert!(
        !has_error_code_line(&put.all_output()),
        "PUT\n{}",
        put.describe()
    );
    let get = coap_client(&client, &[], &tcp_uri(addr, "/store/t"));
    assert_eq!(get.stdout.trim(), text, "GET back\n{}", get.describe());
    let nf = coap_client(&client, &[], &tcp_uri(addr, "/no/such/thing"));
    assert!(
        nf.stderr.lines().any(|l| l.trim().starts_with("4.04")),
        "4.04\n{}",
        nf.describe()
    );
}

#[test]
fn libcoap_client_over_tcp_moves_a_large_body_through_tern() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let dir = tempdir("tcp-files");
    let (server, addr) = start_tern_server_with(&["--files", dir.to_str().unwrap()]);
    let body = random_text(200_000);
    let file = dir.join("upload.src");
    std::fs::write(&file, &body).unwrap();
    let put = coap_client(
        &client,
        &["-m", "put", "-f", file.to_str().unwrap()],
        &tcp_uri(addr, "/files/big.txt"),
    );
    assert!(
        !has_error_code_line(&put.all_output()),
        "PUT\n{}\n{}",
        put.describe(),
        server.output()
    );
    assert_eq!(std::fs::read_to_string(dir.join("big.txt")).unwrap(), body);
    let get = coap_client(&client, &[], &tcp_uri(addr, "/files/big.txt"));
    assert_eq!(get.stdout.trim_end(), body, "GET\n{}", get.stderr);
}

#[test]
fn aiocoap_client_over_tcp_to_tern() {
    let Some(client) = require_peer("aiocoap-client") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = aiocoap(&client, &[], &tcp_uri(addr, "/time"));
    assert!(
        out.success() && !out.stdout.trim().is_empty(),
        "GET /time over TCP\n{}\n{}",
        out.describe(),
        server.output()
    );
    let text = random_text(32);
    let put = aiocoap(
        &client,
        &["-m", "PUT", "--payload", &text],
        &tcp_uri(addr, "/store/a"),
    );
    assert!(put.success(), "PUT\n{}", put.describe());
    let get = aiocoap(&client, &[], &tcp_uri(addr, "/store/a"));
    assert_eq!(get.stdout.trim(), text, "GET back\n{}", get.describe());
    let nf = aiocoap(&client, &[], &tcp_uri(addr, "/no/such/thing"));
    assert!(
        nf.stderr.contains("4.04 Not Found"),
        "4.04\n{}",
        nf.describe()
    );
}

#[test]
fn tern_over_tcp_to_libcoap_server() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let core = tern([
        "get",
        &tcp_uri(addr, "/.well-known/core"),
        "--timeout",
        "10",
    ]);
    assert!(
        core.success() && core.stdout.contains("</time>"),
        "GET /.well-known/core\n{}",
        core.describe()
    );
    let text = random_text(24);
    let put = tern([
        "put",
        &tcp_uri(addr, "/example_data"),
        "-e",
        &text,
        "--timeout",
        "10",
    ]);
    assert!(put.success(), "PUT\n{}", put.describe());
    let get = tern(["get", &tcp_uri(addr, "/example_data"), "--timeout", "10"]);
    assert_eq!(get.stdout.trim(), text, "GET back\n{}", get.describe());
    let nf = tern(["get", &tcp_uri(addr, "/no/such/thing"), "--timeout", "10"]);
    assert!(!nf.success(), "4.04 should fail\n{}", nf.describe());
    assert!(nf.stderr.contains("4.04"), "\n{}", nf.describe());
}

#[test]
fn tern_over_tcp_moves_a_large_body_through_libcoap_server() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let dir = tempdir("tcp-libcoap");
    let body = random_text(100_000);
    let file = dir.join("body.txt");
    std::fs::write(&file, &body).unwrap();
    let put = tern([
        "put",
        &tcp_uri(addr, "/example_data"),
        "-f",
        file.to_str().unwrap(),
        "--timeout",
        "20",
    ]);
    assert!(put.success(), "PUT\n{}", put.describe());
    let get = tern(["get", &tcp_uri(addr, "/example_data"), "--timeout", "20"]);
    assert!(get.success(), "GET\n{}", get.describe());
    assert_eq!(get.stdout.trim_end(), body, "GET back differs");
}

/// RFC 7641 over TCP (RFC 8323 §7): `coap-client-notls -s 5` observes `tern serve`'s `/time`.
#[test]
fn libcoap_client_observes_time_on_tern_over_tcp() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let args = ["-s", "5", &tcp_uri(addr, "/time")];
    let out = run_with_timeout(&client, args, CLIENT_TIMEOUT);
    assert_libcoap_observed_tern_times(&out, &server);
}

/// RFC 7641 over TCP: `tern get -s 5` observes libcoap's `/time`.
#[test]
fn tern_observes_time_on_libcoap_over_tcp() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let out = tern(["get", "-s", "5", &tcp_uri(addr, "/time"), "--timeout", "10"]);
    assert_tern_observed_libcoap_time(&out);
}

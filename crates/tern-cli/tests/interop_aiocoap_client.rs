//! aiocoap's `aiocoap-client` against `tern serve`.
//!
//! aiocoap-client prints the payload on stdout (no newline added when stdout
//! is not a terminal) and exits 0 on success; on 4.xx/5.xx it exits 1 and
//! prints `4.04 Not Found` (then any diagnostic payload) on stderr.
//! It is found via `TERN_AIOCOAP_CLIENT` or on `PATH`.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;

fn aiocoap(bin: &Path, extra: &[&str], uri: &str) -> RunOutput {
    let mut args: Vec<&str> = vec!["--no-pretty-print", "--no-color"];
    args.extend_from_slice(extra);
    args.push(uri);
    run_with_timeout(bin, args, CLIENT_TIMEOUT)
}

fn uri(addr: SocketAddr, path: &str) -> String {
    format!("coap://{addr}{path}")
}

/// The behaviour the tests below rely on, checked against libcoap's server.
#[test]
fn aiocoap_client_output_format_against_libcoap_server() {
    let Some(client) = require_peer("aiocoap-client") else {
        return;
    };
    let Some(server_bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&server_bin);
    let ok = aiocoap(&client, &[], &uri(addr, "/async?1"));
    assert!(ok.success(), "\n{}", ok.describe());
    assert_eq!(ok.stdout.trim(), "done", "\n{}", ok.describe());
    let nf = aiocoap(&client, &[], &uri(addr, "/does-not-exist"));
    assert!(!nf.success() && !nf.timed_out(), "\n{}", nf.describe());
    assert!(nf.stderr.contains("4.04 Not Found"), "\n{}", nf.describe());
}

#[test]
fn aiocoap_client_get_time_from_tern() {
    let Some(client) = require_peer("aiocoap-client") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = aiocoap(&client, &[], &uri(addr, "/time"));
    assert!(
        out.success(),
        "aiocoap-client failed\n{}\n{}",
        out.describe(),
        server.output()
    );
    assert!(
        !out.stdout.trim().is_empty(),
        "empty /time payload\n{}\n{}",
        out.describe(),
        server.output()
    );
}

#[test]
fn aiocoap_client_put_then_get_store_on_tern() {
    let Some(client) = require_peer("aiocoap-client") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let text = random_text(24);
    let put = aiocoap(
        &client,
        &["-m", "PUT", "--payload", &text],
        &uri(addr, "/store/x"),
    );
    assert!(
        put.success(),
        "PUT failed\n{}\n{}",
        put.describe(),
        server.output()
    );
    let get = aiocoap(&client, &[], &uri(addr, "/store/x"));
    assert!(
        get.success(),
        "GET failed\n{}\n{}",
        get.describe(),
        server.output()
    );
    assert_eq!(
        get.stdout.trim_end_matches(['\r', '\n']),
        text,
        "round trip differs\n{}\n{}",
        get.describe(),
        server.output()
    );
}

#[test]
fn aiocoap_client_get_missing_on_tern_is_4_04() {
    let Some(client) = require_peer("aiocoap-client") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = aiocoap(&client, &[], &uri(addr, "/nope"));
    assert!(!out.timed_out(), "aiocoap-client hung\n{}", out.describe());
    assert!(
        !out.success(),
        "aiocoap-client exited 0 for a missing resource\n{}\n{}",
        out.describe(),
        server.output()
    );
    assert!(
        out.all_output().contains("4.04"),
        "no 4.04 in output\n{}\n{}",
        out.describe(),
        server.output()
    );
}

#[test]
fn aiocoap_client_get_well_known_core_from_tern() {
    let Some(client) = require_peer("aiocoap-client") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = aiocoap(&client, &[], &uri(addr, "/.well-known/core"));
    assert!(
        out.success(),
        "aiocoap-client failed\n{}\n{}",
        out.describe(),
        server.output()
    );
    for link in ["</time>", "</echo>"] {
        assert!(
            out.stdout.contains(link),
            "/.well-known/core lacks {link}\n{}\n{}",
            out.describe(),
            server.output()
        );
    }
}

//! Tern's client (`tern get|put ...`) against libcoap's `coap-server-notls`.
//!
//! libcoap's example server has `/`, `/time`, `/async?N` (separate response
//! "done" after N seconds) and `/example_data` (PUT/GET).

mod common;

use common::*;
use std::time::Duration;

fn uri(addr: std::net::SocketAddr, path: &str) -> String {
    format!("coap://{addr}{path}")
}

#[test]
fn tern_get_well_known_core_from_libcoap() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let out = tern(["get", &uri(addr, "/.well-known/core"), "--timeout", "10"]);
    assert!(out.success(), "tern get failed\n{}", out.describe());
    assert!(
        out.stdout.contains("</time>"),
        "link format lacks </time>\n{}",
        out.describe()
    );
}

#[test]
fn tern_get_time_from_libcoap() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let out = tern(["get", &uri(addr, "/time"), "--timeout", "10", "-v"]);
    assert!(out.success(), "tern get /time failed\n{}", out.describe());
    assert!(
        !out.stdout.trim().is_empty(),
        "empty /time payload\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("2.05"),
        "-v output does not show 2.05\n{}",
        out.describe()
    );
}

#[test]
fn tern_put_then_get_example_data_on_libcoap() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let text = random_text(24);
    let put = tern([
        "put",
        &uri(addr, "/example_data"),
        "-e",
        &text,
        "--timeout",
        "10",
    ]);
    assert!(put.success(), "tern put failed\n{}", put.describe());
    let get = tern(["get", &uri(addr, "/example_data"), "--timeout", "10"]);
    assert!(get.success(), "tern get failed\n{}", get.describe());
    assert_eq!(
        get.stdout.trim_end_matches(['\r', '\n']),
        text,
        "round trip differs\n{}",
        get.describe()
    );
}

#[test]
fn tern_get_async_separate_response_from_libcoap() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    // libcoap ACKs at once (empty ACK) and sends the 2.05 "done" as a
    // separate CON response one second later.
    let out = tern(["get", &uri(addr, "/async?1"), "--timeout", "10"]);
    assert!(
        out.success(),
        "tern get /async?1 failed\n{}",
        out.describe()
    );
    assert_eq!(
        out.stdout.trim_end_matches(['\r', '\n']),
        "done",
        "unexpected separate-response payload\n{}",
        out.describe()
    );
    assert!(
        out.elapsed >= Duration::from_millis(900),
        "answer came before libcoap's 1 s delay: not the separate response?\n{}",
        out.describe()
    );
}

#[test]
fn tern_get_missing_resource_on_libcoap_is_4_04() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let out = tern(["get", &uri(addr, "/does-not-exist"), "--timeout", "10"]);
    assert!(!out.timed_out(), "tern hung\n{}", out.describe());
    assert!(!out.success(), "tern exited 0 on 4.04\n{}", out.describe());
    assert!(
        out.stderr.contains("4.04"),
        "stderr does not mention 4.04\n{}",
        out.describe()
    );
}

#[test]
fn tern_block_wise_put_then_get_of_100_kb_on_libcoap() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let dir = std::env::temp_dir().join(format!("tern-blocks-srv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.txt");
    let output = dir.join("out.txt");
    let text = random_text(100 * 1024);
    std::fs::write(&input, &text).unwrap();
    let put = tern([
        "put",
        &uri(addr, "/example_data"),
        "-f",
        input.to_str().unwrap(),
        "-b",
        "1024",
        "--timeout",
        "10",
    ]);
    assert!(put.success(), "tern put failed\n{}", put.describe());
    let get = tern([
        "get",
        &uri(addr, "/example_data"),
        "-b",
        "256",
        "-o",
        output.to_str().unwrap(),
        "--timeout",
        "10",
    ]);
    assert!(get.success(), "tern get failed\n{}", get.describe());
    let fetched = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(
        fetched == text,
        "fetched {} bytes, not the {} stored\n{}",
        fetched.len(),
        text.len(),
        get.describe()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// RFC 7641: `tern get -s 5` observes libcoap's `/time` (observable, changing once a second)
/// and prints each notification on its own line, then deregisters and exits 0.
#[test]
fn tern_observes_time_on_libcoap() {
    let Some(bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&bin);
    let out = tern(["get", "-s", "5", &uri(addr, "/time"), "--timeout", "10"]);
    assert_tern_observed_libcoap_time(&out);
}

//! libcoap's `coap-client-notls` against `tern serve`.
//!
//! coap-client exits 0 even when a request failed, so it is judged by its
//! output only: the payload goes to stdout, an error response is printed on
//! stderr as `4.04 Not Found` (code, space, reason phrase).

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;

fn coap_client(bin: &Path, extra: &[&str], uri: &str) -> RunOutput {
    let mut args: Vec<&str> = vec!["-B", "5"];
    args.extend_from_slice(extra);
    args.push(uri);
    run_with_timeout(bin, args, CLIENT_TIMEOUT)
}

fn uri(addr: SocketAddr, path: &str) -> String {
    format!("coap://{addr}{path}")
}

/// The output format the tests below rely on, checked against libcoap's own
/// server: a successful GET prints the payload on stdout; a 4.04 prints
/// `4.04 Not Found` on stderr.
#[test]
fn libcoap_client_output_format_against_libcoap_server() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let Some(server_bin) = require_peer("coap-server-notls") else {
        return;
    };
    let (_server, addr) = start_libcoap_server(&server_bin);
    let ok = coap_client(&client, &[], &uri(addr, "/async?1"));
    assert_eq!(ok.stdout.trim(), "done", "\n{}", ok.describe());
    assert!(!has_error_code_line(&ok.stderr), "\n{}", ok.describe());
    let nf = coap_client(&client, &[], &uri(addr, "/does-not-exist"));
    assert!(nf.stdout.trim().is_empty(), "\n{}", nf.describe());
    assert!(
        nf.stderr.lines().any(|l| l.trim() == "4.04 Not Found"),
        "\n{}",
        nf.describe()
    );
}

#[test]
fn libcoap_client_get_time_from_tern() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = coap_client(&client, &[], &uri(addr, "/time"));
    assert!(!out.timed_out(), "coap-client hung\n{}", out.describe());
    assert!(
        !has_error_code_line(&out.all_output()),
        "error response\n{}\n{}",
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
fn libcoap_client_put_then_get_store_on_tern() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let text = random_text(24);
    let put = coap_client(&client, &["-m", "put", "-e", &text], &uri(addr, "/store/x"));
    assert!(
        !has_error_code_line(&put.all_output()),
        "PUT failed\n{}\n{}",
        put.describe(),
        server.output()
    );
    let get = coap_client(&client, &[], &uri(addr, "/store/x"));
    assert_eq!(
        get.stdout.trim_end_matches(['\r', '\n']),
        text,
        "round trip differs\n{}\n{}",
        get.describe(),
        server.output()
    );
    assert!(!has_error_code_line(&get.stderr), "\n{}", get.describe());
}

#[test]
fn libcoap_client_get_missing_on_tern_is_4_04() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = coap_client(&client, &[], &uri(addr, "/nope"));
    assert!(!out.timed_out(), "coap-client hung\n{}", out.describe());
    assert!(
        out.all_output()
            .lines()
            .any(|l| l.trim_start().starts_with("4.04")),
        "no 4.04 line\n{}\n{}",
        out.describe(),
        server.output()
    );
}

#[test]
fn libcoap_client_get_well_known_core_from_tern() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = coap_client(&client, &[], &uri(addr, "/.well-known/core"));
    assert!(
        !has_error_code_line(&out.all_output()),
        "error response\n{}\n{}",
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

/// A body of `len` bytes that is not a repetition of a short pattern.
fn body(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            // Printable, so that coap-client's output handling cannot mangle it.
            b'!' + (state % 90) as u8
        })
        .collect()
}

#[test]
fn libcoap_client_block_wise_put_then_get_of_1_mb_on_tern() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("tern-blocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = dir.join("served");
    let (server, addr) = start_tern_server_with(&["--files", files.to_str().unwrap()]);
    let data = body(1_000_000);
    let input = dir.join("in.bin");
    let output = dir.join("out.bin");
    std::fs::write(&input, &data).unwrap();
    let limit = std::time::Duration::from_secs(120);
    let target = uri(addr, "/files/big.bin");
    let put = run_with_timeout(
        &client,
        [
            "-b",
            "64",
            "-m",
            "put",
            "-f",
            input.to_str().unwrap(),
            &target,
        ],
        limit,
    );
    assert!(!put.timed_out(), "PUT hung\n{}", put.describe());
    assert!(
        !has_error_code_line(&put.all_output()),
        "PUT failed\n{}\n{}",
        put.describe(),
        server.output()
    );
    let stored = std::fs::read(files.join("big.bin")).unwrap_or_default();
    assert!(
        stored == data,
        "stored {} bytes, not the 1 MB sent",
        stored.len()
    );
    let get = run_with_timeout(
        &client,
        ["-b", "64", "-o", output.to_str().unwrap(), &target],
        limit,
    );
    assert!(!get.timed_out(), "GET hung\n{}", get.describe());
    let fetched = std::fs::read(&output).unwrap_or_default();
    assert!(
        fetched == data,
        "fetched {} bytes, not the 1 MB stored\n{}\n{}",
        fetched.len(),
        get.describe(),
        server.output()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// RFC 7641: `coap-client -s 5` observes `tern serve`'s `/time`, which notifies once a
/// second; libcoap prints each notification's payload.
#[test]
fn libcoap_client_observes_time_on_tern() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = run_with_timeout(&client, ["-s", "5", &uri(addr, "/time")], CLIENT_TIMEOUT);
    assert_libcoap_observed_tern_times(&out, &server);
}

/// Echo (RFC 9175) with libcoap's client, which answers a 4.01 with Echo by repeating the
/// request: `tern serve --require-echo` acts on a PUT only after the repeat (the stored value
/// shows it did), and `--limit-amplification` serves `/.well-known/core`, far larger than the
/// request, once the address echoed a challenge. aiocoap-client 0.4.17 does not answer Echo
/// outside OSCORE, so it gets the 4.01 (checked too, so that the challenge is known to happen).
#[test]
fn libcoap_client_answers_tern_echo_challenges() {
    let Some(client) = require_peer("coap-client-notls") else {
        return;
    };
    let (_server, addr) =
        start_tern_server_with(&["--no-tcp", "--require-echo", "10", "--limit-amplification"]);
    let key = random_text(8);
    let put = coap_client(
        &client,
        &["-m", "put", "-e", &key],
        &uri(addr, "/store/echo"),
    );
    assert!(
        !has_error_code_line(&put.all_output()),
        "\n{}",
        put.describe()
    );
    let get = coap_client(&client, &[], &uri(addr, "/store/echo"));
    assert_eq!(get.stdout.trim(), key, "\n{}", get.describe());
    let wk = coap_client(&client, &[], &uri(addr, "/.well-known/core"));
    assert!(wk.stdout.contains("</time>"), "\n{}", wk.describe());
    if let Some(aiocoap) = locate_peer("aiocoap-client") {
        let out = run_with_timeout(
            &aiocoap,
            ["-m", "PUT", "--payload", "x", &uri(addr, "/store/aio")],
            CLIENT_TIMEOUT,
        );
        assert!(out.all_output().contains("4.01"), "\n{}", out.describe());
    }
}

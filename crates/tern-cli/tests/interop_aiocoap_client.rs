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

/// The Python interpreter `aiocoap-client` runs on (its `#!` line), to drive aiocoap's library.
fn aiocoap_python(client: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(client).ok()?;
    let shebang = text.lines().next()?.strip_prefix("#!")?.trim();
    let python = std::path::PathBuf::from(shebang.split_whitespace().next()?);
    python.is_file().then_some(python)
}

/// Observes URI with aiocoap's library for at most LIMIT seconds or WANT notifications,
/// printing `first CODE PAYLOAD` and then `notification CODE OBSERVE PAYLOAD` lines.
const AIOCOAP_OBSERVE: &str = r#"
import asyncio, sys
import aiocoap

async def main(uri, want, limit):
    ctx = await aiocoap.Context.create_client_context()
    req = aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0)
    pr = ctx.request(req)
    r = await pr.response
    print("first", r.code, r.payload.decode(), flush=True)
    n = 0
    async def notifications():
        nonlocal n
        async for r in pr.observation:
            n += 1
            print("notification", r.code, r.opt.observe, r.payload.decode(), flush=True)
            if n >= want:
                break
    try:
        await asyncio.wait_for(notifications(), limit)
    except asyncio.TimeoutError:
        pass
    pr.observation.cancel()
    await ctx.shutdown()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"#;

/// RFC 7641: `aiocoap-client --observe` registers with `tern serve`'s `/time` and keeps
/// observing until killed. aiocoap-client 0.4.17 prints only the first response
/// (chrysn/aiocoap#395: its observation is cancelled locally after the first response), so
/// the notifications themselves are checked with aiocoap's library in the test after this.
#[test]
fn aiocoap_client_observe_registers_on_tern() {
    let Some(client) = require_peer("aiocoap-client") else {
        return;
    };
    let (server, addr) = start_tern_server();
    let out = run_with_timeout(
        &client,
        [
            "--no-pretty-print",
            "--no-color",
            "--observe",
            &uri(addr, "/time"),
        ],
        std::time::Duration::from_secs(4),
    );
    assert!(
        out.timed_out(),
        "aiocoap-client --observe ended: the registration was refused?\n{}\n{}",
        out.describe(),
        server.output()
    );
    assert_eq!(tern_times(&out.stdout).len(), 1, "\n{}", out.describe());
}

/// RFC 7641: aiocoap's observation client gets several notifications of `/time` from
/// `tern serve`, in increasing Observe order, each a new time.
#[test]
fn aiocoap_observes_time_on_tern() {
    let Some(client) = require_peer("aiocoap-client") else {
        return;
    };
    let Some(python) = aiocoap_python(&client) else {
        if peers_required() {
            panic!("no Python interpreter in {}'s #! line", client.display());
        }
        eprintln!("skipping: no Python interpreter for aiocoap");
        return;
    };
    let (server, addr) = start_tern_server();
    let out = run_with_timeout(
        &python,
        ["-c", AIOCOAP_OBSERVE, &uri(addr, "/time"), "3", "8"],
        CLIENT_TIMEOUT,
    );
    assert!(out.success(), "\n{}\n{}", out.describe(), server.output());
    let values: Vec<u32> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("notification 2.05 Content "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(values.len(), 3, "\n{}\n{}", out.describe(), server.output());
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    assert!(tern_times(&out.stdout).len() >= 3, "\n{}", out.describe());
}

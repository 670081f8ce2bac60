//! aiocoap's DTLS client → `tern serve` over coaps:// (DTLS 1.2, PSK,
//! TLS_PSK_WITH_AES_128_CCM_8, the only suite tinydtls has).
//!
//! aiocoap 0.4.17 does coaps:// with tinydtls through the `DTLSSocket` package
//! (built from source; `scripts/install-peers.sh` installs it into the peers
//! venv). Credentials go in a JSON file, `aiocoap-client --credentials FILE`,
//! mapping a URI pattern to
//! `{"dtls": {"client-identity": {"ascii": ID}, "psk": {"ascii"|"hex": KEY}}}`.
//!
//! `aiocoap-client` is found via `TERN_AIOCOAP_CLIENT` or on `PATH`; whether
//! it has DTLS support is asked of aiocoap itself (`python -m
//! aiocoap.cli.defaults`, with the interpreter of its `#!` line). Without it
//! these tests skip, or fail when `TERN_REQUIRE_PEERS=1`.
//!
//! A wrong key makes no alert (DTLS drops what it cannot authenticate), so
//! aiocoap gives up only when its CoAP retransmissions run out: 62–93 s
//! (ACK_TIMEOUT 2 s × 31 × random factor up to 1.5). That test is bounded at
//! `WRONG_KEY_LIMIT`; an unknown identity gets an alert and fails at once.
//!
//! tinydtls takes PSKs of at most 16 bytes and identities of at most 32.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::*;

const ID: &str = "aio-dev1";
const KEY: &str = "aiocoap-secret-1";

/// Longer than aiocoap's longest give-up time (93 s) for a request nobody answers.
const WRONG_KEY_LIMIT: Duration = Duration::from_secs(120);

fn coaps(addr: SocketAddr, path: &str) -> String {
    format!("coaps://{addr}{path}")
}

// ---------------------------------------------------------------------------
// aiocoap with DTLS

/// The interpreter named on the `#!` line of `script` (`#!/usr/bin/env python3` too).
fn interpreter_of(script: &Path) -> Option<PathBuf> {
    let text = fs::read(script).ok()?;
    let first = text.split(|&b| b == b'\n').next()?;
    let first = String::from_utf8_lossy(first);
    let mut words = first.strip_prefix("#!")?.split_whitespace();
    let prog = words.next()?;
    if Path::new(prog).file_name().is_some_and(|n| n == "env") {
        let name = words.find(|w| !w.starts_with('-'))?;
        return find_in_path(name);
    }
    Some(PathBuf::from(prog))
}

/// `aiocoap-client`, if it is installed and its aiocoap has the tinydtls transport.
/// Skips (returns `None`) otherwise, or panics when `TERN_REQUIRE_PEERS=1`.
#[track_caller]
fn aiocoap_with_dtls() -> Option<PathBuf> {
    let client = require_peer("aiocoap-client")?;
    let why_not = match interpreter_of(&client) {
        None => format!("cannot tell which Python runs {}", client.display()),
        Some(python) => {
            let out = run_with_timeout(
                &python,
                ["-m", "aiocoap.cli.defaults"],
                Duration::from_secs(30),
            );
            let dtls = out.stdout.lines().any(|l| {
                l.starts_with("Selected client transports:")
                    && l.split([':', ' ']).any(|t| t == "tinydtls")
            });
            if dtls {
                return Some(client);
            }
            // aiocoap's own summary line, `    dtls: missing DTLSSocket`
            match out
                .stdout
                .lines()
                .find(|l| l.trim_start().starts_with("dtls:"))
            {
                Some(line) if out.success() => format!(
                    "aiocoap-client ({}) has no DTLS (tinydtls) client transport ({})",
                    client.display(),
                    line.trim()
                ),
                _ => format!(
                    "cannot tell whether aiocoap-client ({}) has DTLS support\n{}",
                    client.display(),
                    out.describe()
                ),
            }
        }
    };
    if peers_required() {
        panic!(
            "{why_not}\nTERN_REQUIRE_PEERS=1: run scripts/install-peers.sh (it installs DTLSSocket \
             into the aiocoap venv)"
        );
    }
    eprintln!("skipping: {why_not}");
    None
}

/// A credentials file for `aiocoap-client --credentials`, removed on drop.
struct Credentials {
    dir: PathBuf,
    file: PathBuf,
}

impl Credentials {
    /// `identity` and `psk` are JSON values such as `{"ascii": "x"}` or `{"hex": "00ff"}`.
    fn new(dtls: SocketAddr, identity: &str, psk: &str) -> Credentials {
        let dir = std::env::temp_dir().join(format!(
            "tern-aiocoap-dtls-{}-{}",
            std::process::id(),
            random_text(12)
        ));
        fs::create_dir_all(&dir).expect("create credentials dir");
        let file = dir.join("credentials.json");
        let json = format!(
            "{{\"coaps://{dtls}/*\": {{\"dtls\": {{\"client-identity\": {identity}, \"psk\": {psk}}}}}}}\n"
        );
        fs::write(&file, json).expect("write credentials file");
        Credentials { dir, file }
    }

    fn ascii(dtls: SocketAddr, identity: &str, key: &str) -> Credentials {
        Credentials::new(
            dtls,
            &format!("{{\"ascii\": \"{identity}\"}}"),
            &format!("{{\"ascii\": \"{key}\"}}"),
        )
    }

    fn path(&self) -> &str {
        self.file.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn aiocoap(
    bin: &Path,
    creds: &Credentials,
    extra: &[&str],
    uri: &str,
    limit: Duration,
) -> RunOutput {
    let mut args: Vec<&str> = vec![
        "--no-pretty-print",
        "--no-color",
        "--credentials",
        creds.path(),
    ];
    args.extend_from_slice(extra);
    args.push(uri);
    run_with_timeout(bin, args, limit)
}

/// `tern serve` with a plain and a DTLS listener and one PSK (`key` as `--psk-key` takes it);
/// returns the guard and the DTLS address.
fn tern_dtls_server(key: &str) -> (ChildGuard, SocketAddr) {
    let dtls: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let (server, _plain) = start_tern_server_with(&[
        "--dtls-bind",
        &dtls.to_string(),
        "--psk-identity",
        ID,
        "--psk-key",
        key,
    ]);
    (server, dtls)
}

// ---------------------------------------------------------------------------

#[test]
fn aiocoap_dtls_client_gets_whoami_and_the_handler_sees_the_psk_identity() {
    let Some(client) = aiocoap_with_dtls() else {
        return;
    };
    let (server, dtls) = tern_dtls_server(KEY);
    let creds = Credentials::ascii(dtls, ID, KEY);
    let out = aiocoap(
        &client,
        &creds,
        &[],
        &coaps(dtls, "/whoami"),
        CLIENT_TIMEOUT,
    );
    assert!(
        out.success() && out.stdout.contains(&format!("psk:{ID}")),
        "GET /whoami over coaps\n{}\n{}",
        out.describe(),
        server.output()
    );
    let wkc = aiocoap(
        &client,
        &creds,
        &[],
        &coaps(dtls, "/.well-known/core"),
        CLIENT_TIMEOUT,
    );
    assert!(
        wkc.success() && wkc.stdout.contains("</whoami>"),
        "GET /.well-known/core over coaps\n{}\n{}",
        wkc.describe(),
        server.output()
    );
}

#[test]
fn aiocoap_dtls_client_puts_then_gets_under_store_with_a_hex_key() {
    let Some(client) = aiocoap_with_dtls() else {
        return;
    };
    // A key that is not text, given to both sides as hex: bytes 0xf0..=0xff. 16 bytes, the most
    // tinydtls takes (DTLS_PSK_MAX_KEY_LEN); with a longer key its client aborts the handshake
    // with an internal_error alert.
    let hex: String = (0xf0u8..=0xff).map(|b| format!("{b:02x}")).collect();
    let (server, dtls) = tern_dtls_server(&format!("hex:{hex}"));
    let creds = Credentials::new(
        dtls,
        &format!("{{\"ascii\": \"{ID}\"}}"),
        &format!("{{\"hex\": \"{hex}\"}}"),
    );
    // a short value, and one near the largest single-message payload (1,024 bytes: aiocoap
    // switches to block-wise transfer above that), and one that goes block-wise both ways)
    for (key, len) in [("small", 24), ("large", 1000), ("blocks", 5000)] {
        let text = random_text(len);
        let uri = coaps(dtls, &format!("/store/{key}"));
        let put = aiocoap(
            &client,
            &creds,
            &["-m", "PUT", "--payload", &text],
            &uri,
            CLIENT_TIMEOUT,
        );
        assert!(
            put.success(),
            "PUT {uri}\n{}\n{}",
            put.describe(),
            server.output()
        );
        let get = aiocoap(&client, &creds, &[], &uri, CLIENT_TIMEOUT);
        assert!(
            get.success(),
            "GET {uri}\n{}\n{}",
            get.describe(),
            server.output()
        );
        assert_eq!(
            get.stdout.trim_end_matches(['\r', '\n']),
            text,
            "round trip of {len} bytes differs\n{}\n{}",
            get.describe(),
            server.output()
        );
    }
}

#[test]
fn aiocoap_dtls_client_with_a_wrong_key_fails_and_others_are_served_meanwhile() {
    let Some(client) = aiocoap_with_dtls() else {
        return;
    };
    let (server, dtls) = tern_dtls_server(KEY);
    let bad_creds = Credentials::ascii(dtls, ID, "not-the-key");
    let bad = {
        let client = client.clone();
        let uri = coaps(dtls, "/whoami");
        thread::spawn(move || aiocoap(&client, &bad_creds, &[], &uri, WRONG_KEY_LIMIT))
    };
    // While that handshake hangs, a client with the right key is served.
    thread::sleep(Duration::from_millis(500));
    let good_creds = Credentials::ascii(dtls, ID, KEY);
    let good = aiocoap(
        &client,
        &good_creds,
        &[],
        &coaps(dtls, "/whoami"),
        CLIENT_TIMEOUT,
    );
    assert!(
        good.success() && good.stdout.contains(&format!("psk:{ID}")),
        "the right key, during another client's failed handshake\n{}\n{}",
        good.describe(),
        server.output()
    );
    let bad = bad.join().expect("wrong-key client thread");
    assert!(
        !bad.stdout.contains("psk:"),
        "a wrong key was answered\n{}\n{}",
        bad.describe(),
        server.output()
    );
    assert!(
        !bad.timed_out() && !bad.success(),
        "aiocoap-client with a wrong key should exit non-zero (after its retransmissions)\n{}\n{}",
        bad.describe(),
        server.output()
    );
}

#[test]
fn aiocoap_dtls_client_with_an_unknown_identity_fails_at_once() {
    let Some(client) = aiocoap_with_dtls() else {
        return;
    };
    let (server, dtls) = tern_dtls_server(KEY);
    let creds = Credentials::ascii(dtls, "nobody", KEY);
    let out = aiocoap(
        &client,
        &creds,
        &[],
        &coaps(dtls, "/whoami"),
        CLIENT_TIMEOUT,
    );
    assert!(
        !out.timed_out() && !out.success() && !out.stdout.contains("psk:"),
        "an unknown identity should end the handshake with an alert\n{}\n{}",
        out.describe(),
        server.output()
    );
    // The server goes on serving.
    let creds = Credentials::ascii(dtls, ID, KEY);
    let good = aiocoap(
        &client,
        &creds,
        &[],
        &coaps(dtls, "/whoami"),
        CLIENT_TIMEOUT,
    );
    assert!(
        good.success() && good.stdout.contains(&format!("psk:{ID}")),
        "after a rejected identity\n{}\n{}",
        good.describe(),
        server.output()
    );
}

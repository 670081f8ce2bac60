//! Replays fuzz inputs on stable `cargo test`: every file under `fuzz/regressions/<target>/` (past
//! crashes, kept once fixed) and `fuzz/corpus/<target>/` (the seed corpora) goes through the same
//! checks the cargo-fuzz target of that name makes (`fuzz/fuzz_targets/<target>.rs`).
//!
//! A new crash found by `scripts/fuzz-ci.sh` becomes a regression test by copying the input to
//! `fuzz/regressions/<target>/`. Files named `seed-*` there are valid inputs that must get past
//! parsing, so that the round-trip checks below are known to run.
//!
//! Keep the `check_*` functions in step with the fuzz targets; `every_fuzz_target_has_a_replay`
//! fails when a target is added without one. The `options` target's checks are not copied here
//! but shared with it (`tests/options_fuzz_check/mod.rs`, which the target `include!`s).

mod options_fuzz_check;

use std::fs;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tern_proto::block::value::size_of_szx;
use tern_proto::block::{
    Block1Action, Block1Assembler, Block1Config, Block1Send, Block1SendConfig, Block1Step,
    Block2Config, Block2Fetch, Block2Lookup, Block2Server, Block2Step, BlockValue,
};
use tern_proto::link_format::{filter, parse, serialize};
use tern_proto::uri::CoapUri;
use tern_proto::wire::{peek_header, Datagram};
use tern_proto::{Code, Message, MessageType, OptionNumber};

/// What a check did with an input.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The input was rejected by the parser (fine for a fuzz input, not for a seed).
    Rejected,
    /// The input parsed and every round-trip assertion held.
    Checked,
}

/// `fuzz/fuzz_targets/datagram.rs`.
fn check_datagram(data: &[u8]) -> Outcome {
    let _ = peek_header(data);
    let view = Datagram::new_checked(data);
    let owned = Message::decode(data);
    assert_eq!(view.is_ok(), owned.is_ok());
    let (Ok(view), Ok(message)) = (view, owned) else {
        return Outcome::Rejected;
    };
    let _ = (
        view.ty(),
        view.code(),
        view.mid(),
        view.token(),
        view.payload(),
    );
    let mut count = 0;
    for option in view.options() {
        assert!(option.is_ok(), "a checked datagram yielded {option:?}");
        count += 1;
    }
    assert_eq!(count, message.options.len());
    let bytes = message.to_bytes().expect("a decoded message encodes");
    assert_eq!(bytes.len(), message.encoded_len());
    assert_eq!(bytes, data, "re-encoding changed the bytes");
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(&message));
    Outcome::Checked
}

/// `fuzz/fuzz_targets/uri.rs` (libFuzzer skips inputs that are not UTF-8 for `&str` targets).
fn check_uri(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Rejected;
    };
    let Ok(uri) = CoapUri::parse(text) else {
        return Outcome::Rejected;
    };
    let shown = uri.to_string();
    assert_eq!(
        CoapUri::parse(&shown).as_ref(),
        Ok(&uri),
        "{text:?} displayed as {shown:?}"
    );
    let options = uri.request_options();
    let composed = CoapUri::from_options(
        uri.scheme,
        &uri.host,
        uri.effective_port(),
        options.iter().map(|(n, v)| (*n, v.as_slice())),
    );
    assert_eq!(composed.as_ref(), Ok(&uri));
    Outcome::Checked
}

/// `fuzz/fuzz_targets/link_format.rs`.
fn check_link_format(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Outcome::Rejected;
    };
    let Ok(links) = parse(text) else {
        return Outcome::Rejected;
    };
    let shown = serialize(&links);
    assert_eq!(
        parse(&shown).as_ref(),
        Ok(&links),
        "{text:?} serialized as {shown:?}"
    );
    let query: Vec<String> = text.split('&').take(4).map(str::to_owned).collect();
    let kept = filter(&links, &query);
    assert!(kept.len() <= links.len());
    Outcome::Checked
}

const BLOCK_MAX_BODY: usize = 4096;
const BLOCK_MAX_BUFFERED: usize = 12_000;
const BLOCK_MAX_CACHED: usize = 8000;

/// `fuzz/fuzz_targets/block.rs` (its `check`; inputs with no decodable record are rejected).
fn check_block(mut data: &[u8]) -> Outcome {
    let t0 = Instant::now();
    let lifetime = Duration::from_secs(100);
    let mut assembler = Block1Assembler::new(
        Block1Config {
            max_body_size: BLOCK_MAX_BODY,
            max_transfers_per_peer: 2,
            max_transfers: 6,
            max_buffered_bytes: BLOCK_MAX_BUFFERED,
            lifetime,
            ..Block1Config::default()
        },
        [1; 32],
    );
    let mut server = Block2Server::new(
        Block2Config {
            max_cached_bytes: BLOCK_MAX_CACHED,
            max_cached_per_peer: 2,
            lifetime,
            ..Block2Config::default()
        },
        [2; 32],
    );
    let mut get = Message::new(MessageType::Con, Code::GET);
    get.set_path("/f");
    let mut fetch = Block2Fetch::new(&get, BLOCK_MAX_BODY);
    let mut put = get.clone();
    put.code = Code::PUT;
    put.payload = (0..1000u32).map(|i| i as u8).collect();
    let settings = Block1SendConfig {
        szx: 2,
        request_tag: Some(vec![7]),
        ..Block1SendConfig::default()
    };
    let Ok((mut send, _)) = Block1Send::start(put, settings) else {
        panic!("a 1000-byte body in 64-byte blocks must start");
    };
    let mut now = t0;
    let mut decoded = 0;
    while data.len() >= 3 {
        let op = data[0];
        let len = usize::from(u16::from_be_bytes([data[1], data[2]])).min(data.len() - 3);
        let (record, rest) = data[3..].split_at(len);
        data = rest;
        now += Duration::from_secs(16 * u64::from(op >> 4));
        let Ok(message) = Message::decode(record) else {
            continue;
        };
        decoded += 1;
        let peer = SocketAddr::from(([192, 0, 2, 1], u16::from(op >> 2 & 3)));
        match op & 3 {
            0 => {
                match assembler.handle(now, peer, message) {
                    Block1Action::Continue(r) => {
                        assert_eq!(r.code, Code::CONTINUE);
                        let b = BlockValue::read(&r.options, OptionNumber::BLOCK1);
                        assert!(b.is_ok_and(|b| b.is_some_and(|b| b.more())));
                    }
                    Block1Action::Complete(done) => {
                        assert!(done.request.payload.len() <= BLOCK_MAX_BODY);
                        if done.block1.is_some() {
                            assert!(!done.request.options.contains(OptionNumber::BLOCK1));
                        }
                    }
                    Block1Action::Reject(r) => assert!(
                        [
                            Code::BAD_REQUEST,
                            Code::BAD_OPTION,
                            Code::REQUEST_ENTITY_INCOMPLETE,
                            Code::REQUEST_ENTITY_TOO_LARGE,
                            Code::SERVICE_UNAVAILABLE,
                        ]
                        .contains(&r.code),
                        "{r:?}"
                    ),
                }
                assert!(assembler.len() <= 6);
                assert!(assembler.buffered_bytes() <= BLOCK_MAX_BUFFERED);
            }
            1 => {
                let response = match server.handle_request(now, peer, &message) {
                    Block2Lookup::Respond(r) => r,
                    Block2Lookup::Handle | Block2Lookup::Regenerate => {
                        let mut r = Message::new(MessageType::Ack, Code::CONTENT);
                        let head = &message.payload[..message.payload.len().min(128)];
                        r.payload = head.repeat(40);
                        server.respond(now, peer, &message, r)
                    }
                };
                assert!(response.payload.len() <= 1024 || !response.code.is_success());
                assert!(server.cached_bytes() <= BLOCK_MAX_CACHED);
                assert!(server.len() <= 8);
            }
            2 => match fetch.handle_response(message) {
                Ok(Block2Step::Send(next)) => {
                    let b = BlockValue::read(&next.options, OptionNumber::BLOCK2);
                    assert!(b.is_ok_and(|b| b.is_some_and(|b| !b.more() && !b.is_bert())));
                }
                Ok(Block2Step::Done(_)) | Err(_) => {
                    fetch.restart();
                }
            },
            _ => match send.handle_response(message) {
                Ok(Block1Step::Send(next)) => {
                    assert!(next.payload.len() <= size_of_szx(2));
                    let b = BlockValue::read(&next.options, OptionNumber::BLOCK1);
                    assert!(b.is_ok_and(|b| b.is_some()));
                }
                Ok(Block1Step::Fetch(mut f, next)) => {
                    assert!(next.options.contains(OptionNumber::BLOCK2));
                    assert!(!f.is_finished());
                    f.restart();
                    send.restart();
                }
                Ok(Block1Step::Done(_)) | Err(_) => {
                    send.restart();
                }
            },
        }
    }
    assembler.handle_timeout(now + lifetime);
    server.handle_timeout(now + lifetime);
    assert!(assembler.is_empty() && server.is_empty());
    if decoded == 0 {
        Outcome::Rejected
    } else {
        Outcome::Checked
    }
}

/// `fuzz/fuzz_targets/options.rs` (its checks: `tests/options_fuzz_check/mod.rs`).
fn check_options(data: &[u8]) -> Outcome {
    match options_fuzz_check::check(data) {
        options_fuzz_check::Outcome::Rejected => Outcome::Rejected,
        options_fuzz_check::Outcome::Checked => Outcome::Checked,
    }
}

type Check = fn(&[u8]) -> Outcome;

const TARGETS: &[(&str, Check)] = &[
    ("datagram", check_datagram),
    ("uri", check_uri),
    ("link_format", check_link_format),
    ("block", check_block),
    ("options", check_options),
];

/// Targets whose inputs another test file replays (tern-oscore and tern-tls depend on
/// tern-proto, not the reverse; `stream_frame` shares its check with the fuzz target through
/// `include!`).
const REPLAYED_ELSEWHERE: &[(&str, &str)] = &[
    ("oscore", "crates/tern-oscore/tests/fuzz_regressions.rs"),
    (
        "config",
        "crates/tern-oscore/tests/config_fuzz_regressions.rs",
    ),
    (
        "stream_frame",
        "crates/tern-proto/tests/stream_fuzz_regressions.rs",
    ),
    (
        "dtls_record",
        "crates/tern-tls/tests/record_fuzz_regressions.rs",
    ),
    (
        "dps_protocol",
        "crates/tern-dps/tests/protocol_fuzz_regressions.rs",
    ),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Regular files in `dir`, sorted; none when it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs every file of `fuzz/<kind>/<target>/` through the target's check; returns how many
/// were checked past parsing, and collects failures as readable lines.
fn replay(kind: &str, target: &str, check: Check, failures: &mut Vec<String>) -> (usize, usize) {
    let (mut files, mut checked) = (0, 0);
    for path in files_in(&fuzz_dir().join(kind).join(target)) {
        let data = fs::read(&path).expect("readable fuzz input");
        files += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match catch_unwind(AssertUnwindSafe(|| check(&data))) {
            Ok(Outcome::Checked) => checked += 1,
            Ok(Outcome::Rejected) if kind == "regressions" && name.starts_with("seed-") => {
                failures.push(format!(
                    "fuzz/{kind}/{target}/{name}: a seed input was rejected by the parser \
                     (seeds must be valid so that the round-trip checks run); hex {}",
                    hex(&data)
                ));
            }
            Ok(Outcome::Rejected) => {}
            Err(_) => failures.push(format!(
                "fuzz/{kind}/{target}/{name}: the {target} check panicked (message above); \
                 hex {}",
                hex(&data)
            )),
        }
    }
    (files, checked)
}

#[test]
fn regressions_and_corpora_pass_the_fuzz_checks() {
    let mut failures = Vec::new();
    for (target, check) in TARGETS {
        for kind in ["regressions", "corpus"] {
            let (files, checked) = replay(kind, target, *check, &mut failures);
            println!("fuzz/{kind}/{target}: {files} files, {checked} past parsing");
        }
    }
    assert!(
        failures.is_empty(),
        "{} fuzz inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fuzz_target_has_a_replay() {
    for (target, replay) in REPLAYED_ELSEWHERE {
        assert!(
            fuzz_dir().join("..").join(replay).is_file(),
            "fuzz target {target}: its replay {replay} is missing"
        );
    }
    let known: Vec<&str> = TARGETS
        .iter()
        .map(|(t, _)| *t)
        .chain(REPLAYED_ELSEWHERE.iter().map(|(t, _)| *t))
        .collect();
    let targets: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!targets.is_empty(), "no fuzz targets found");
    for target in &targets {
        assert!(
            known.contains(&target.as_str()),
            "fuzz target {target} has no check in tests/fuzz_regressions.rs"
        );
    }
    // A regressions directory must belong to a target, or its files would never run.
    if let Ok(entries) = fs::read_dir(fuzz_dir().join("regressions")) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    known.contains(&name.as_str()),
                    "fuzz/regressions/{name}/ matches no fuzz target"
                );
            }
        }
    }
}

/// The checks themselves must be able to fail, or a regression could never be caught.
#[test]
fn the_checks_reject_what_they_should() {
    assert_eq!(check_datagram(&[0x40, 0x01, 0x00, 0x01]), Outcome::Checked);
    assert_eq!(check_datagram(&[0x40]), Outcome::Rejected);
    // Token length 9 is a format error (RFC 7252 §3).
    assert_eq!(check_datagram(&[0x49, 0x01, 0, 1]), Outcome::Rejected);
    assert_eq!(check_uri(b"coap://h/a"), Outcome::Checked);
    assert_eq!(check_uri(b"http://h/a"), Outcome::Rejected);
    assert_eq!(check_uri(&[0xff, 0xfe]), Outcome::Rejected);
    assert_eq!(check_link_format(b"</a>;rt=\"x\""), Outcome::Checked);
    assert_eq!(check_block(&[]), Outcome::Rejected);
    assert_eq!(check_block(&[0, 0, 1, 0x40]), Outcome::Rejected);
    assert_eq!(check_block(&[0, 0, 4, 0x40, 0x01, 0, 1]), Outcome::Checked);
    // Uri-Path "a"; then a value running past the end; then option nibble 15.
    assert_eq!(check_options(&[0xb1, b'a']), Outcome::Checked);
    assert_eq!(check_options(&[0xb5, b'a']), Outcome::Rejected);
    assert_eq!(check_options(&[0xf0]), Outcome::Rejected);
    let mut failures = Vec::new();
    let (files, _) = replay("regressions", "no-such-target", check_uri, &mut failures);
    assert_eq!((files, failures.len()), (0, 0));
    // A panicking check is reported per file, not swallowed.
    let (files, _) = replay(
        "regressions",
        "datagram",
        |_| panic!("injected"),
        &mut failures,
    );
    assert!(files > 0, "fuzz/regressions/datagram/ holds a seed input");
    assert_eq!(failures.len(), files);
}

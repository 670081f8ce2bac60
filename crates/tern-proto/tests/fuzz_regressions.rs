//! Replays fuzz inputs on stable `cargo test`: every file under `fuzz/regressions/<target>/` (past
//! crashes, kept once fixed) and `fuzz/corpus/<target>/` (the seed corpora) goes through the same
//! checks the cargo-fuzz target of that name makes (`fuzz/fuzz_targets/<target>.rs`).
//!
//! A new crash found by `scripts/fuzz-ci.sh` becomes a regression test by copying the input to
//! `fuzz/regressions/<target>/`. Files named `seed-*` there are valid inputs that must get past
//! parsing, so that the round-trip checks below are known to run.
//!
//! Keep the `check_*` functions in step with the fuzz targets; `every_fuzz_target_has_a_replay`
//! fails when a target is added without one.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use tern_proto::link_format::{filter, parse, serialize};
use tern_proto::uri::CoapUri;
use tern_proto::wire::{peek_header, Datagram};
use tern_proto::Message;

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

type Check = fn(&[u8]) -> Outcome;

const TARGETS: &[(&str, Check)] = &[
    ("datagram", check_datagram),
    ("uri", check_uri),
    ("link_format", check_link_format),
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
    let known: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
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

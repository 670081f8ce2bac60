//! Replays the `dps_protocol` fuzz target's inputs on stable `cargo test`: every file under
//! `fuzz/regressions/dps_protocol/` (past crashes, kept once fixed) and
//! `fuzz/corpus/dps_protocol/` (seeds: each one whole message) goes through the checks the fuzz
//! target makes (`tests/protocol_fuzz_check/mod.rs`).

mod protocol_fuzz_check;

use std::path::Path;

use protocol_fuzz_check::{check, Outcome};
use tern_dps::protocol::{AclsResponse, TimeResponse};

#[test]
fn dps_protocol_fuzz_inputs_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let (mut seen, mut checked) = (0, 0);
    for kind in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join("dps_protocol")) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            let data = std::fs::read(&path).expect("readable fuzz input");
            let outcome = check(&data);
            if kind == "corpus" {
                assert_eq!(outcome, Outcome::Checked, "{}", path.display());
            }
            checked += usize::from(outcome == Outcome::Checked);
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "the dps_protocol seed corpus is missing ({seen} files)"
    );
    assert!(checked >= 4, "too few seeds decode ({checked} of {seen})");
}

/// The checks must be able to tell a message from bytes that are none.
#[test]
fn messages_are_checked_and_garbage_rejected() {
    let time = TimeResponse {
        unix_seconds: 1_800_000_000,
    }
    .encode();
    assert_eq!(check(&time), Outcome::Checked);
    assert_eq!(
        check(&AclsResponse { acls: Vec::new() }.encode()),
        Outcome::Checked
    );
    assert_eq!(check(&time[..time.len() - 1]), Outcome::Rejected);
    assert_eq!(check(&[0xff]), Outcome::Rejected);
    assert_eq!(check(&[]), Outcome::Rejected);
}

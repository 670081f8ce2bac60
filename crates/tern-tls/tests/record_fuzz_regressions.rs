//! Replays the `dtls_record` fuzz target's inputs on stable `cargo test`: every file under
//! `fuzz/regressions/dtls_record/` (past crashes, kept once fixed; `seed-*` files must hold a
//! whole record so that the round-trip checks are known to run) and `fuzz/corpus/dtls_record/`
//! goes through the checks the fuzz target makes (`tests/record_fuzz_check/mod.rs`).

mod record_fuzz_check;

use std::path::Path;

use record_fuzz_check::{check, Outcome};

#[test]
fn dtls_record_fuzz_inputs_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let (mut seen, mut checked) = (0, 0);
    for kind in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join("dtls_record")) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            let data = std::fs::read(&path).expect("readable fuzz input");
            let outcome = check(&data);
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if kind == "regressions" && name.starts_with("seed-") {
                assert_eq!(outcome, Outcome::Checked, "{}", path.display());
            }
            checked += usize::from(outcome == Outcome::Checked);
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "the dtls_record seed corpus is missing ({seen} files)"
    );
    assert!(
        checked >= 3,
        "too few seeds hold a whole record ({checked} of {seen})"
    );
}

/// The checks must be able to tell a whole record from a broken one.
#[test]
fn records_are_checked_and_broken_ones_rejected() {
    // Application data, epoch 1, sequence 7, a 1-byte fragment; then the same record twice.
    let one = [23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7, 0, 1, 9];
    assert_eq!(check(&one), Outcome::Checked);
    assert_eq!(check(&[one, one].concat()), Outcome::Checked);
    // Header only, and a fragment shorter than announced.
    assert_eq!(check(&one[..13]), Outcome::Rejected);
    assert_eq!(check(&one[..12]), Outcome::Rejected);
    assert_eq!(check(&[]), Outcome::Rejected);
}

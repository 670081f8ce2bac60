//! Replays the `stream_frame` fuzz target's inputs on stable `cargo test`: every file under
//! `fuzz/regressions/stream_frame/` (past crashes, kept once fixed; `seed-*` files must
//! decode at least one frame so that the round-trip checks are known to run) and
//! `fuzz/corpus/stream_frame/` goes through the checks the fuzz target makes
//! (`tests/stream_fuzz_check/mod.rs`).

mod stream_fuzz_check;

use std::path::Path;

use stream_fuzz_check::{check, Outcome};

#[test]
fn stream_frame_fuzz_inputs_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let (mut seen, mut checked) = (0, 0);
    for kind in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join("stream_frame")) else {
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
        "the stream_frame seed corpus is missing ({seen} files)"
    );
    assert!(
        checked >= 3,
        "too few seeds decode a frame ({checked} of {seen})"
    );
}

/// The checks must be able to fail: a decoder bug would otherwise go unnoticed.
#[test]
fn hostile_inputs_are_checked_not_skipped() {
    // A CSM then a GET split byte by byte (seed 1, pieces of 1 byte).
    let data = [0x01, 0x00, 0x21, 0x01, 0x42, 0xb1, b'a'];
    assert_eq!(check(&data), Outcome::Checked);
    // A Len-15 header announcing 4 GB: refused from the header.
    assert_eq!(
        check(&[0x00, 0x05, 0xf0, 0xff, 0xff, 0xff, 0xff]),
        Outcome::Rejected
    );
}

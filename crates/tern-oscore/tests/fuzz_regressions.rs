//! Replays the `oscore` fuzz target's inputs on stable `cargo test`: every file under
//! `fuzz/regressions/oscore/` (past crashes, kept once fixed; `seed-*` files must get past the
//! parsers and the AEAD so that the round-trip checks are known to run) and
//! `fuzz/corpus/oscore/` goes through the same checks the fuzz target makes.

mod fuzz_check;

use std::path::Path;

use fuzz_check::{check, Outcome};

#[test]
fn oscore_fuzz_inputs_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut seen = 0;
    for kind in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join("oscore")) else {
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
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "the oscore seed corpus is missing ({seen} files)"
    );
}

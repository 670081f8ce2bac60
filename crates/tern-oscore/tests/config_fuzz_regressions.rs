//! Replays the `config` fuzz target's inputs on stable `cargo test`: every file under
//! `fuzz/regressions/config/` (past crashes, kept once fixed; `seed-*` files must load, so
//! that the checks on loaded files are known to run) and `fuzz/corpus/config/` goes through
//! the same checks the fuzz target makes.

mod config_fuzz_check;

use std::path::Path;

use config_fuzz_check::{check, Outcome};

#[test]
fn config_fuzz_inputs_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut seen = 0;
    for kind in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join("config")) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            let data = std::fs::read(&path).expect("readable fuzz input");
            let outcome = check(&data);
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("seed-") {
                assert_eq!(outcome, Outcome::Checked, "{}", path.display());
            }
            seen += 1;
        }
    }
    assert!(
        seen > 0,
        "no config fuzz inputs found under {}",
        fuzz.display()
    );
}

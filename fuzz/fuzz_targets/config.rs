//! Configuration and credential files: aiocoap-format credentials files and OSCORE context
//! folders (settings.json, secret.json, sequence.json) never panic, and a folder that loads
//! gives a context that protects. The checks live in
//! `crates/tern-oscore/tests/config_fuzz_check/mod.rs`, shared with the stable replay of the
//! corpus (`crates/tern-oscore/tests/config_fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../../crates/tern-oscore/tests/config_fuzz_check/mod.rs");

fuzz_target!(|data: &[u8]| {
    let _ = check(data);
});

//! OSCORE (RFC 8613): arbitrary option values and protected messages never panic; an option
//! value that decodes re-encodes to one that decodes the same; a request that unprotects can
//! be answered. The checks live in `crates/tern-oscore/tests/fuzz_check/mod.rs`, shared with
//! the stable replay of the corpus (`crates/tern-oscore/tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../../crates/tern-oscore/tests/fuzz_check/mod.rs");

fuzz_target!(|data: &[u8]| {
    let _ = check(data);
});

//! The provisioning protocol's messages (CBOR): decoding never panics, and whatever decodes
//! encodes to bytes that decode to the same message. The checks live in
//! `crates/tern-dps/tests/protocol_fuzz_check/mod.rs`, shared with the stable replay of the
//! corpus (`crates/tern-dps/tests/protocol_fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../../crates/tern-dps/tests/protocol_fuzz_check/mod.rs");

fuzz_target!(|bytes: &[u8]| {
    let _ = check(bytes);
});

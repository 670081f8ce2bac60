//! CoAP options (RFC 7252 §3.1, §5.4, §5.10, §12.3; RFC 7959 §2.2): the option iterator never
//! panics and agrees with an independent reading of the encoding, decode → encode gives the
//! input's bytes and decode → encode → decode the same options, typed values (uint, Block1/
//! Block2, Content-Format) re-encode to themselves, and options built in any order encode to
//! bytes that decode back to them. The checks live in
//! `crates/tern-proto/tests/options_fuzz_check/mod.rs`, shared with the stable replay of the
//! corpus (`crates/tern-proto/tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../../crates/tern-proto/tests/options_fuzz_check/mod.rs");

fuzz_target!(|data: &[u8]| {
    let _ = check(data);
});

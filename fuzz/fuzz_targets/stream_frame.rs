//! CoAP over TCP/TLS framing (RFC 8323 §3.2) and the stream connection: arbitrary bytes cut
//! at arbitrary points never panic, never grow the decoder past its cap, decode the same
//! however they are cut, and decoded frames re-encode to the same message. The checks live
//! in `crates/tern-proto/tests/stream_fuzz_check/mod.rs`, shared with the stable replay of
//! the corpus (`crates/tern-proto/tests/stream_fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../../crates/tern-proto/tests/stream_fuzz_check/mod.rs");

fuzz_target!(|data: &[u8]| {
    let _ = check(data);
});

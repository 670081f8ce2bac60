//! DTLS record headers (RFC 6347 §4.1): parsing a header, classifying a ClientHello and
//! iterating over the records of a datagram never panic; a parsed header written back gives
//! the datagram's bytes, and the records lie one after another inside the datagram, the
//! iterator stopping where no whole record is left. The checks live in
//! `crates/tern-tls/tests/record_fuzz_check/mod.rs`, shared with the stable replay of the
//! corpus (`crates/tern-tls/tests/record_fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../../crates/tern-tls/tests/record_fuzz_check/mod.rs");

fuzz_target!(|data: &[u8]| {
    let _ = check(data);
});

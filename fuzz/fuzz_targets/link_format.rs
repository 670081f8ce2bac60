//! CoRE Link Format (RFC 6690): parsing never panics, what parses serializes to text that parses
//! back to the same links, and filtering never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_proto::link_format::{filter, parse, serialize};

fuzz_target!(|text: &str| {
    let Ok(links) = parse(text) else {
        return;
    };
    let shown = serialize(&links);
    assert_eq!(
        parse(&shown).as_ref(),
        Ok(&links),
        "{text:?} serialized as {shown:?}"
    );
    let query: Vec<String> = text.split('&').take(4).map(str::to_owned).collect();
    let kept = filter(&links, &query);
    assert!(kept.len() <= links.len());
});

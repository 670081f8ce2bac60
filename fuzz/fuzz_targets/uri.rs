//! CoAP URIs (RFC 7252 §6): parsing never panics, and whatever parses displays to a URI that
//! parses back to the same value and whose request options compose back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_proto::uri::CoapUri;

fuzz_target!(|text: &str| {
    let Ok(uri) = CoapUri::parse(text) else {
        return;
    };
    let shown = uri.to_string();
    assert_eq!(
        CoapUri::parse(&shown).as_ref(),
        Ok(&uri),
        "{text:?} displayed as {shown:?}"
    );
    let options = uri.request_options();
    let composed = CoapUri::from_options(
        uri.scheme,
        &uri.host,
        uri.effective_port(),
        options.iter().map(|(n, v)| (*n, v.as_slice())),
    );
    assert_eq!(composed.as_ref(), Ok(&uri));
});

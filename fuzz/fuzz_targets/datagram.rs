//! Datagram codec (RFC 7252 §3): the checked view and the owned decoder never panic, agree on
//! what is valid, and decode∘encode reproduces the input bytes exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_proto::wire::{peek_header, Datagram};
use tern_proto::Message;

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    let view = Datagram::new_checked(data);
    let owned = Message::decode(data);
    assert_eq!(view.is_ok(), owned.is_ok());
    let (Ok(view), Ok(message)) = (view, owned) else {
        return;
    };
    let _ = (
        view.ty(),
        view.code(),
        view.mid(),
        view.token(),
        view.payload(),
    );
    let mut count = 0;
    for option in view.options() {
        assert!(option.is_ok(), "a checked datagram yielded {option:?}");
        count += 1;
    }
    assert_eq!(count, message.options.len());
    let bytes = message.to_bytes().expect("a decoded message encodes");
    assert_eq!(bytes.len(), message.encoded_len());
    assert_eq!(bytes, data, "re-encoding changed the bytes");
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(&message));
});

// The checks of the `oscore` fuzz target, shared word for word by `fuzz/fuzz_targets/oscore.rs`
// (which `include!`s this file) and by `tests/fuzz_regressions.rs` (which replays the seed
// corpus and past crashes on stable `cargo test`).
//
// Input: the first byte picks the check (even: an OSCORE option value; odd: a datagram
// unprotected as a request, then as a response, then taken through the re-derivation steps),
// the rest is the value or datagram.

/// What a check did with an input.
#[derive(Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Outcome {
    /// Rejected by a parser or by the AEAD (fine for a fuzz input, not for a seed).
    Rejected,
    /// Decoded or unprotected, and every round-trip assertion held.
    Checked,
}

/// Runs the checks; panics when an invariant breaks.
pub fn check(data: &[u8]) -> Outcome {
    use tern_oscore::{
        protect_response, unprotect_request, unprotect_response, ContextParams, OscoreOption,
        RequestBinding, SecurityContext,
    };
    use tern_proto::Message;

    let Some((&mode, rest)) = data.split_first() else {
        return Outcome::Rejected;
    };
    if mode % 2 == 0 {
        let Ok(option) = OscoreOption::decode(rest) else {
            return Outcome::Rejected;
        };
        let encoded = option.encode().expect("a decoded option re-encodes");
        assert_eq!(OscoreOption::decode(&encoded).as_ref(), Ok(&option));
        return Outcome::Checked;
    }
    let Ok(message) = Message::decode(rest) else {
        return Outcome::Rejected;
    };
    // The contexts of RFC 8613 C.1 (client Sender ID empty, server 01).
    let secret: Vec<u8> = (1..=16).collect();
    let salt = vec![0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];
    let mut server_params = ContextParams::new(&secret, &[1], &[]);
    server_params.master_salt = salt.clone();
    let mut server = SecurityContext::derive(&server_params).expect("the C.1 server context");
    let mut outcome = Outcome::Rejected;
    if let Ok((inner, binding)) = unprotect_request(&mut server, &message) {
        assert!(inner.code.is_request());
        let mut response = Message::new(inner.ty, tern_proto::Code::CONTENT);
        response.payload = inner.payload.clone();
        protect_response(&mut server, &binding, &response, false).expect("a response protects");
        outcome = Outcome::Checked;
    }
    // The binding of the C.4 request.
    let binding = RequestBinding {
        kid: vec![],
        partial_iv: vec![0x14],
        nonce: vec![
            0x46, 0x22, 0xd4, 0xdd, 0x6d, 0x94, 0x41, 0x68, 0xee, 0xfb, 0x54, 0x98, 0x68,
        ],
    };
    let mut client_params = ContextParams::new(&secret, &[], &[1]);
    client_params.master_salt = salt;
    let mut client = SecurityContext::derive(&client_params).expect("the C.1 client context");
    if let Ok(inner) = unprotect_response(&mut client, &binding, &message) {
        assert!(inner.code.is_response());
        outcome = Outcome::Checked;
    }
    // The re-derivation steps (Appendix B.2) on the same datagram: as a server's Request #1 or
    // #2, and as a client's Response #1 or a server-initiated one.
    let r2 = [7u8; tern_oscore::rederive::NONCE_LEN];
    if let Some(wire) = tern_oscore::request_option(&message)
        .ok()
        .and_then(|option| option.kid_context)
    {
        let mut issued = tern_oscore::rederive::IssuedNonces::new();
        issued.issue(&[], r2);
        match issued.classify(&[], &wire) {
            Some(tern_oscore::rederive::Incoming::First { id1 }) => {
                let _ = tern_oscore::rederive::first_response(&server, &id1, &message, r2);
            }
            Some(tern_oscore::rederive::Incoming::Second { id_context }) => {
                let _ =
                    tern_oscore::rederive::accept_second_request(&server, &id_context, &message);
            }
            None => {}
        }
    }
    if tern_oscore::rederive::is_server_initiated(&message) {
        let _ = tern_oscore::rederive::answer_server_initiated(&client, &binding, &message, r2);
    }
    outcome
}

//! RFC 8613 Appendix C.4–C.8 reproduced byte-exact (vectors: ../shared/vectors), both ways:
//! our protection gives the RFC's bytes, and the RFC's bytes unprotect to the original.

use proptest::prelude::*;
use tern_oscore::{
    protect_request, protect_response, unprotect_request, unprotect_response, ContextParams,
    OscoreError, Replay, SecurityContext,
};
use tern_proto::{Code, Message, MessageType};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const SECRET: &str = "0102030405060708090a0b0c0d0e0f10";
const SALT: &str = "9e7ca92223786340";
const ID_CONTEXT: &str = "37cbf3210017a2d3";

/// (client, server) contexts of C.1, C.2 or C.3.
fn contexts(
    salt: &str,
    id_context: Option<&str>,
    client_id: &str,
) -> (SecurityContext, SecurityContext) {
    let make = |sender: &str, recipient: &str| {
        let mut p = ContextParams::new(&hex(SECRET), &hex(sender), &hex(recipient));
        p.master_salt = hex(salt);
        p.id_context = id_context.map(hex);
        SecurityContext::derive(&p).unwrap()
    };
    (make(client_id, "01"), make("01", client_id))
}

fn decode(s: &str) -> Message {
    Message::decode(&hex(s)).unwrap()
}

#[test]
fn c4_c5_c6_requests() {
    let cases = [
        (SALT, None, "", false, "44015d1f00003974396c6f63616c686f737483747631", "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e"),
        ("", None, "00", false, "440171c30000b932396c6f63616c686f737483747631", "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0"),
        (SALT, Some(ID_CONTEXT), "", true, "44012f8eef9bbf7a396c6f63616c686f737483747631", "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3"),
    ];
    for (salt, id_context, client_id, send_context, plain, protected) in cases {
        let (mut client, mut server) = contexts(salt, id_context, client_id);
        client.resume_sender_sequence(20);
        let request = decode(plain);
        let (outer, binding) = protect_request(&mut client, &request, send_context).unwrap();
        assert_eq!(
            outer.to_bytes().unwrap(),
            hex(protected),
            "protecting {plain}"
        );
        assert_eq!(binding.partial_iv, vec![0x14]);
        let (inner, server_binding) = unprotect_request(&mut server, &decode(protected)).unwrap();
        assert_eq!(inner.to_bytes().unwrap(), hex(plain));
        assert_eq!(server_binding, binding);
        // Replayed: refused, and the window is not disturbed.
        assert_eq!(
            unprotect_request(&mut server, &decode(protected)).unwrap_err(),
            OscoreError::Replay(Replay::Duplicate(20))
        );
    }
}

#[test]
fn c7_c8_responses() {
    let (mut client, mut server) = contexts(SALT, None, "");
    client.resume_sender_sequence(20);
    let request = decode("44015d1f00003974396c6f63616c686f737483747631");
    let (outer, client_binding) = protect_request(&mut client, &request, false).unwrap();
    let (_, binding) = unprotect_request(&mut server, &outer).unwrap();
    let response = decode("64455d1f00003974ff48656c6c6f20576f726c6421");

    // C.7: no Partial IV, the request's nonce.
    let c7 = protect_response(&mut server, &binding, &response, false).unwrap();
    assert_eq!(
        c7.to_bytes().unwrap(),
        hex("64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106")
    );
    let back = unprotect_response(&mut client, &client_binding, &c7).unwrap();
    assert_eq!(back.to_bytes().unwrap(), response.to_bytes().unwrap());

    // C.8: the server's sequence number 0 as Partial IV.
    let (_, mut server) = contexts(SALT, None, "");
    let c8 = protect_response(&mut server, &binding, &response, true).unwrap();
    assert_eq!(
        c8.to_bytes().unwrap(),
        hex("64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e")
    );
    let back = unprotect_response(&mut client, &client_binding, &c8).unwrap();
    assert_eq!(back.payload, b"Hello World!");
    // The same response again: its Partial IV was seen.
    assert!(matches!(
        unprotect_response(&mut client, &client_binding, &c8),
        Err(OscoreError::Replay(_))
    ));
}

#[test]
fn wrong_context_and_missing_fields_give_the_rfc_codes() {
    let (mut client, mut server) = contexts(SALT, None, "");
    let (_, mut stranger) = contexts("", None, "");
    let mut request = Message::new(MessageType::Con, Code::GET);
    request.set_path("/x");
    let (outer, _) = protect_request(&mut client, &request, false).unwrap();
    // A server holding different keys for the same kid cannot decrypt: 4.00.
    let err = unprotect_request(&mut stranger, &outer).unwrap_err();
    assert_eq!(err, OscoreError::Decrypt);
    assert_eq!(err.response_code().0, Code::BAD_REQUEST);
    // The right server can, even after the failed attempt elsewhere.
    assert!(unprotect_request(&mut server, &outer).is_ok());
    // An OSCORE option without kid: 4.02.
    let mut bare = outer.clone();
    bare.options
        .set(tern_proto::OptionNumber::OSCORE, vec![0x01, 0x05]);
    let err = unprotect_request(&mut server, &bare).unwrap_err();
    assert_eq!(err.response_code().0, Code::BAD_OPTION);
    // Not OSCORE at all.
    assert_eq!(
        unprotect_request(&mut server, &request).unwrap_err(),
        OscoreError::NotProtected
    );
    // Proxy-Uri with Uri-* options is refused rather than left in the clear.
    let mut proxied = request.clone();
    proxied
        .options
        .set(tern_proto::OptionNumber::PROXY_URI, b"coap://h/p".to_vec());
    assert!(matches!(
        protect_request(&mut client, &proxied, false),
        Err(OscoreError::Unprotectable(_))
    ));
}

/// §4.1.3.3: a Proxy-Uri is decomposed, the proxy's part (Proxy-Scheme, Uri-Host, Uri-Port)
/// outside, the path and query encrypted; a URI of another scheme cannot be.
#[test]
fn proxy_uri_is_decomposed() {
    use tern_proto::OptionNumber as O;
    let (mut client, mut server) = contexts(SALT, None, "");
    let mut request = Message::new(MessageType::Con, Code::GET);
    request.options.set(
        O::PROXY_URI,
        b"coap://sensor.example:5700/temp/now?unit=c".to_vec(),
    );
    let (outer, _) = protect_request(&mut client, &request, false).unwrap();
    assert_eq!(outer.options.get(O::PROXY_SCHEME), Some(&b"coap"[..]));
    assert_eq!(outer.options.get(O::URI_HOST), Some(&b"sensor.example"[..]));
    assert_eq!(outer.options.get_uint(O::URI_PORT), Some(5700));
    for hidden in [O::URI_PATH, O::URI_QUERY, O::PROXY_URI] {
        assert!(!outer.options.contains(hidden), "{hidden:?} left outside");
    }
    let (inner, _) = unprotect_request(&mut server, &outer).unwrap();
    assert_eq!(inner.path(), "temp/now");
    assert_eq!(inner.queries().collect::<Vec<_>>(), ["unit=c"]);
    // The default port is left out, as RFC 7252 §6.4 does.
    let mut default_port = Message::new(MessageType::Con, Code::GET);
    default_port
        .options
        .set(O::PROXY_URI, b"coap://[::1]/x".to_vec());
    let (outer, _) = protect_request(&mut client, &default_port, false).unwrap();
    assert_eq!(outer.options.get(O::URI_HOST), Some(&b"::1"[..]));
    assert!(!outer.options.contains(O::URI_PORT));
    let mut http = Message::new(MessageType::Con, Code::GET);
    http.options.set(O::PROXY_URI, b"http://h/x".to_vec());
    assert!(matches!(
        protect_request(&mut client, &http, false),
        Err(OscoreError::Unprotectable(_))
    ));
}

fn message_strategy() -> impl Strategy<Value = Message> {
    (
        prop_oneof![
            Just(Code::GET),
            Just(Code::POST),
            Just(Code::PUT),
            Just(Code::DELETE)
        ],
        proptest::collection::vec("[a-z0-9]{0,12}", 0..4),
        proptest::option::of("[a-z]{1,20}"),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..=8),
    )
        .prop_map(|(code, path, host, payload, mid, token)| {
            let mut m = Message::new(MessageType::Con, code);
            m.mid = mid;
            m.token = tern_proto::Token::new(&token).unwrap();
            m.set_path(&path.join("/"));
            if let Some(host) = host {
                m.options
                    .set(tern_proto::OptionNumber::URI_HOST, host.into_bytes());
            }
            m.payload = payload;
            m
        })
}

proptest! {
    /// Unprotect ∘ protect is the identity, for requests and responses.
    #[test]
    fn protect_then_unprotect_is_identity(request in message_strategy(), payload in proptest::collection::vec(any::<u8>(), 0..200), fresh in any::<bool>()) {
        let (mut client, mut server) = contexts(SALT, None, "");
        let (outer, binding) = protect_request(&mut client, &request, false).unwrap();
        let (inner, server_binding) = unprotect_request(&mut server, &outer).unwrap();
        prop_assert_eq!(inner.to_bytes().unwrap(), request.to_bytes().unwrap());
        let mut response = Message::new(MessageType::Ack, Code::CONTENT);
        response.mid = request.mid;
        response.token = request.token;
        response.payload = payload;
        let protected = protect_response(&mut server, &server_binding, &response, fresh).unwrap();
        let back = unprotect_response(&mut client, &binding, &protected).unwrap();
        prop_assert_eq!(back.to_bytes().unwrap(), response.to_bytes().unwrap());
    }

    /// Any flipped bit in the ciphertext makes unprotection fail.
    #[test]
    fn a_flipped_bit_always_fails(request in message_strategy(), bit in any::<proptest::sample::Index>()) {
        let (mut client, mut server) = contexts(SALT, None, "");
        let (mut outer, _) = protect_request(&mut client, &request, false).unwrap();
        let i = bit.index(outer.payload.len() * 8);
        outer.payload[i / 8] ^= 1 << (i % 8);
        prop_assert_eq!(unprotect_request(&mut server, &outer).unwrap_err(), OscoreError::Decrypt);
    }

    /// Hostile outer messages never panic.
    #[test]
    fn hostile_requests_never_panic(option in proptest::collection::vec(any::<u8>(), 0..40), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (_, mut server) = contexts(SALT, None, "");
        let mut m = Message::new(MessageType::Con, Code::POST);
        m.options.set(tern_proto::OptionNumber::OSCORE, option);
        m.payload = payload;
        let _ = unprotect_request(&mut server, &m);
    }
}

/// Appendix B.1.2: a server that lost its replay state challenges the first request with a
/// protected 4.01 + Echo, accepts the repeat that echoes it, and refuses the old request after.
#[test]
fn lost_replay_state_is_recovered_with_echo() {
    use tern_oscore::echo_challenge;
    use tern_proto::OptionNumber;
    let (mut client, mut server) = contexts(SALT, None, "");
    let mut request = Message::new(MessageType::Con, Code::PUT);
    request.set_path("/valve");
    request.payload = b"open".to_vec();
    let (first, _) = protect_request(&mut client, &request, false).unwrap();
    // Before the restart the server saw it; after, it remembers nothing.
    unprotect_request(&mut server, &first).unwrap();
    server.forget_replay_state();
    assert!(!server.replay_state_known());
    // The old request comes again (a replay): it decrypts but is not trusted.
    let binding = match unprotect_request(&mut server, &first) {
        Err(OscoreError::FreshnessUnknown(binding)) => binding,
        other => panic!("expected FreshnessUnknown, got {other:?}"),
    };
    let challenge = echo_challenge(&mut server, &binding, &first, vec![0xec; 8]).unwrap();
    assert_eq!(challenge.code, Code::CHANGED, "the 4.01 is inside");
    // A genuine client gets the challenge: the replayed request's binding is the client's own
    // for `first`, so it can read the 4.01 and its Echo.
    let (_, client_binding) = {
        let mut replayed_client = contexts(SALT, None, "").0;
        protect_request(&mut replayed_client, &request, false).unwrap()
    };
    let inner = unprotect_response(&mut client, &client_binding, &challenge).unwrap();
    assert_eq!(inner.code, Code::UNAUTHORIZED);
    let echo = inner.options.get(OptionNumber::ECHO).unwrap().to_vec();
    // A new request without the Echo is still challenged.
    let (plain_retry, _) = protect_request(&mut client, &request, false).unwrap();
    assert!(matches!(
        unprotect_request(&mut server, &plain_retry),
        Err(OscoreError::FreshnessUnknown(_))
    ));
    // The repeat with the Echo is accepted and restores the window.
    let mut with_echo = request.clone();
    with_echo.options.set(OptionNumber::ECHO, echo);
    let (retry, _) = protect_request(&mut client, &with_echo, false).unwrap();
    let (accepted, _) = unprotect_request(&mut server, &retry).unwrap();
    assert_eq!(accepted.payload, b"open");
    assert!(server.replay_state_known());
    // Everything older is refused now, the replayed first request included.
    assert!(matches!(
        unprotect_request(&mut server, &first),
        Err(OscoreError::Replay(_))
    ));
    assert!(matches!(
        unprotect_request(&mut server, &plain_retry),
        Err(OscoreError::Replay(_))
    ));
    // A wrong Echo value does not pass.
    let (_, mut fresh_server) = contexts(SALT, None, "");
    fresh_server.forget_replay_state();
    let mut wrong = request.clone();
    wrong.options.set(OptionNumber::ECHO, vec![1, 2, 3]);
    let (wrong, _) = protect_request(&mut client, &wrong, false).unwrap();
    assert!(matches!(
        unprotect_request(&mut fresh_server, &wrong),
        Err(OscoreError::FreshnessUnknown(_))
    ));
}

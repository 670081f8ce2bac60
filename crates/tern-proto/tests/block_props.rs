//! Property tests for block-wise transfers (RFC 7959): the option value codec, client and server
//! machines driving each other to byte-exact bodies, and hostile input that never panics and
//! never lets the server-side tables grow past their caps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tern_proto::block::value::{size_of_szx, MAX_NUM};
use tern_proto::block::{
    Block1Action, Block1Assembler, Block1Config, Block1Send, Block1SendConfig, Block1Step,
    Block2Config, Block2Fetch, Block2Lookup, Block2Server, Block2Step, BlockValue, TransferError,
};
use tern_proto::{Code, Message, MessageType, OptionNumber, Token};

const SEED: [u8; 32] = [3; 32];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 7], port))
}

fn body(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every valid value encodes in minimal form to at most 3 bytes and decodes back.
    #[test]
    fn block_values_round_trip(num in 0..=MAX_NUM, more: bool, szx in 0u8..=7) {
        let v = BlockValue::new(num, more, szx).unwrap();
        let bytes = v.encode();
        let bytes = bytes.as_ref();
        prop_assert!(bytes.len() <= 3);
        prop_assert!(bytes.first() != Some(&0), "not minimal: {:02x?}", bytes);
        prop_assert_eq!(BlockValue::decode(bytes), Ok(v));
        prop_assert_eq!(v.offset(), u64::from(num) * v.size() as u64);
        prop_assert_eq!(v.is_bert(), szx == 7);
    }

    /// Any bytes decode without panicking; at most 3 decode, and what decodes re-encodes to
    /// the same value.
    #[test]
    fn block_values_decode_anything(bytes in prop::collection::vec(any::<u8>(), 0..8)) {
        match BlockValue::decode(&bytes) {
            Ok(v) => {
                prop_assert!(bytes.len() <= 3);
                prop_assert_eq!(BlockValue::decode(v.encode().as_ref()), Ok(v));
            }
            Err(_) => prop_assert!(bytes.len() > 3),
        }
    }

    /// A body sent with Block1Send through a Block1Assembler arrives byte-exact, whatever the
    /// client's and the server's block sizes, and with some requests delivered twice.
    #[test]
    fn block1_bodies_arrive_whole(
        len in 0usize..12_000,
        client_szx in 0u8..=6,
        server_szx in 0u8..=6,
        repeats in prop::collection::vec(any::<bool>(), 64),
        tag in prop::option::of(prop::collection::vec(any::<u8>(), 0..=8)),
    ) {
        let t0 = Instant::now();
        let config = Block1Config { preferred_szx: server_szx, ..Block1Config::default() };
        let mut server = Block1Assembler::new(config, SEED);
        let data = body(len, 1);
        let mut put = Message::new(MessageType::Con, Code::PUT);
        put.set_path("/upload");
        put.payload = data.clone();
        let settings = Block1SendConfig {
            szx: client_szx,
            request_tag: tag,
            ..Block1SendConfig::default()
        };
        let (mut send, mut request) = Block1Send::start(put, settings).unwrap();
        let mut handled = None;
        for i in 0.. {
            prop_assert!(i <= len / 16 + 2, "too many requests");
            let last = !BlockValue::read(&request.options, OptionNumber::BLOCK1)
                .unwrap()
                .is_some_and(|b| b.more());
            // A retried non-final block reaches the server twice.
            if !last && repeats[i % repeats.len()] {
                let first = server.handle(t0, addr(1), request.clone());
                prop_assert!(matches!(first, Block1Action::Continue(_)), "{:?}", first);
            }
            let response = match server.handle(t0, addr(1), request) {
                Block1Action::Continue(r) | Block1Action::Reject(r) => r,
                Block1Action::Complete(done) => {
                    prop_assert!(handled.is_none(), "the handler ran twice");
                    handled = Some(done.request.payload.clone());
                    let mut r = Message::new(MessageType::Ack, Code::CHANGED);
                    done.acknowledge(&mut r);
                    r
                }
            };
            match send.handle_response(response) {
                Ok(Block1Step::Send(next)) => {
                    prop_assert!(next.payload.len() <= size_of_szx(client_szx));
                    request = next;
                }
                Ok(Block1Step::Done(r)) => {
                    prop_assert_eq!(r.code, Code::CHANGED);
                    break;
                }
                other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
            }
        }
        prop_assert_eq!(handled, Some(data));
        prop_assert!(server.is_empty());
        prop_assert_eq!(server.buffered_bytes(), 0);
    }

    /// A body sliced by a Block2Server and fetched with Block2Fetch arrives byte-exact, with
    /// the handler run once, whatever block size the client asks for.
    #[test]
    fn block2_bodies_arrive_whole(
        len in 0usize..12_000,
        asked in prop::option::of(0u8..=6),
        server_szx in 0u8..=6,
        method in prop::sample::select(vec![Code::GET, Code::FETCH, Code::POST]),
    ) {
        let t0 = Instant::now();
        let config = Block2Config { default_szx: server_szx, ..Block2Config::default() };
        let mut server = Block2Server::new(config, SEED);
        let data = body(len, 2);
        let mut request = Message::new(MessageType::Con, method);
        request.set_path("/download");
        if method == Code::FETCH {
            request.payload = b"query".to_vec();
        }
        if let Some(szx) = asked {
            BlockValue::initial(szx).write(&mut request.options, OptionNumber::BLOCK2);
        }
        let mut fetch = Block2Fetch::new(&request, 1 << 20);
        let mut runs = 0;
        for i in 0.. {
            prop_assert!(i <= len / 16 + 2, "too many requests");
            let response = match server.handle_request(t0, addr(1), &request) {
                Block2Lookup::Respond(r) => r,
                Block2Lookup::Handle | Block2Lookup::Regenerate => {
                    runs += 1;
                    let mut r = Message::new(MessageType::Ack, Code::CONTENT);
                    r.payload = data.clone();
                    server.respond(t0, addr(1), &request, r)
                }
            };
            match fetch.handle_response(response) {
                Ok(Block2Step::Send(next)) => request = next,
                Ok(Block2Step::Done(r)) => {
                    prop_assert_eq!(&r.payload, &data);
                    break;
                }
                Err(e) => return Err(TestCaseError::fail(format!("fetch failed: {e}"))),
            }
        }
        prop_assert_eq!(runs, 1);
        prop_assert!(server.is_empty());
    }

    /// Arbitrary responses never panic the client machines; once one fails or ends, every
    /// later response gets `Finished`.
    #[test]
    fn client_machines_survive_hostile_responses(
        responses in prop::collection::vec(arb_response(), 1..24),
        len in 0usize..5000,
        szx in 0u8..=6,
    ) {
        let mut get = Message::new(MessageType::Con, Code::GET);
        get.token = Token::new(&[1]).unwrap();
        let mut fetch = Block2Fetch::new(&get, 4096);
        let mut put = Message::new(MessageType::Con, Code::PUT);
        put.payload = body(len, 3);
        let config = Block1SendConfig { szx, ..Block1SendConfig::default() };
        let (mut send, _) = Block1Send::start(put, config).unwrap();
        let (mut fetch_ended, mut send_ended) = (false, false);
        for r in responses {
            let f = fetch.handle_response(r.clone());
            if fetch_ended {
                prop_assert_eq!(&f, &Err(TransferError::Finished));
            }
            fetch_ended |= !matches!(f, Ok(Block2Step::Send(_)));
            if let Ok(Block2Step::Send(next)) = &f {
                let b = BlockValue::read(&next.options, OptionNumber::BLOCK2).unwrap().unwrap();
                prop_assert!(!b.more() && !b.is_bert());
            }
            let s = send.handle_response(r);
            if send_ended {
                prop_assert!(matches!(s, Err(TransferError::Finished)));
            }
            send_ended |= !matches!(s, Ok(Block1Step::Send(_)));
            if let Ok(Block1Step::Send(next)) = &s {
                prop_assert!(next.payload.len() <= size_of_szx(szx));
            }
        }
    }

    /// Arbitrary requests from a few peers never panic the server machines, and their tables
    /// stay within every cap.
    #[test]
    fn server_machines_stay_bounded(
        requests in prop::collection::vec((0u16..4, arb_request(), 0u64..200_000), 1..64),
    ) {
        let t0 = Instant::now();
        let b1 = Block1Config {
            max_body_size: 3000,
            max_transfers_per_peer: 2,
            max_transfers: 5,
            max_buffered_bytes: 8000,
            lifetime: Duration::from_secs(100),
            ..Block1Config::default()
        };
        let mut assembler = Block1Assembler::new(b1, SEED);
        let b2 = Block2Config {
            max_cached_bytes: 6000,
            max_cached_per_peer: 2,
            lifetime: Duration::from_secs(100),
            ..Block2Config::default()
        };
        let mut server = Block2Server::new(b2, SEED);
        let mut now = t0;
        for (port, request, advance) in requests {
            now += Duration::from_millis(advance);
            let peer = addr(port);
            match assembler.handle(now, peer, request.clone()) {
                Block1Action::Complete(done) => {
                    prop_assert!(done.request.payload.len() <= 3000);
                    prop_assert!(!done.request.options.contains(OptionNumber::BLOCK1)
                        || done.block1.is_none());
                }
                Block1Action::Continue(r) => prop_assert_eq!(r.code, Code::CONTINUE),
                Block1Action::Reject(r) => prop_assert!(
                    [Code::BAD_REQUEST, Code::BAD_OPTION, Code::REQUEST_ENTITY_INCOMPLETE,
                     Code::REQUEST_ENTITY_TOO_LARGE, Code::SERVICE_UNAVAILABLE].contains(&r.code),
                    "{:?}", r
                ),
            }
            prop_assert!(assembler.len() <= 5);
            prop_assert!(assembler.buffered_bytes() <= 8000, "{}", assembler.buffered_bytes());
            if server.handle_request(now, peer, &request) != Block2Lookup::Handle {
                continue;
            }
            let mut r = Message::new(MessageType::Ack, Code::CONTENT);
            r.payload = body(request.payload.len() * 3, 4);
            let out = server.respond(now, peer, &request, r);
            prop_assert!(out.payload.len() <= 1024);
            prop_assert!(server.cached_bytes() <= 6000, "{}", server.cached_bytes());
            prop_assert!(server.len() <= 8);
        }
        assembler.handle_timeout(now + Duration::from_secs(100));
        server.handle_timeout(now + Duration::from_secs(100));
        prop_assert!(assembler.is_empty() && server.is_empty());
    }
}

/// A block option value: mostly valid, sometimes BERT, too long or empty.
fn arb_block_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (0u32..64, any::<bool>(), 0u8..=6)
            .prop_map(|(n, m, s)| BlockValue::new(n, m, s).unwrap().encode().as_ref().to_vec()),
        1 => (0u32..64, any::<bool>()).prop_map(|(n, m)| BlockValue::new(n, m, 7)
            .unwrap().encode().as_ref().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ]
}

fn arb_options(message: &mut Message, options: Vec<(u16, Vec<u8>)>) {
    for (n, v) in options {
        message.options.push(OptionNumber(n), v);
    }
}

fn arb_block_options() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    let number = prop::sample::select(vec![4u16, 6, 11, 23, 27, 28, 60, 292]);
    prop::collection::vec(
        (number, arb_block_value()).prop_map(|(n, v)| match n {
            4 | 292 => (n, v.into_iter().take(2).collect()),
            11 => (n, b"p".to_vec()),
            _ => (n, v),
        }),
        0..5,
    )
}

fn arb_response() -> impl Strategy<Value = Message> {
    let code = prop::sample::select(vec![
        Code::CONTENT,
        Code::CHANGED,
        Code::CONTINUE,
        Code::BAD_OPTION,
        Code::REQUEST_ENTITY_INCOMPLETE,
        Code::REQUEST_ENTITY_TOO_LARGE,
        Code::NOT_FOUND,
        Code::GET,
        Code(0xff),
    ]);
    let token = prop::sample::select(vec![vec![], vec![1], vec![2]]);
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (0usize..3).prop_map(|k| vec![7; [16, 64, 1024][k]]),
    ];
    (code, token, arb_block_options(), payload).prop_map(|(code, token, options, payload)| {
        let mut m = Message::new(MessageType::Ack, code);
        m.token = Token::new(&token).unwrap();
        arb_options(&mut m, options);
        m.payload = payload;
        m
    })
}

fn arb_request() -> impl Strategy<Value = Message> {
    let method = prop::sample::select(vec![Code::GET, Code::PUT, Code::POST, Code::FETCH]);
    let path = prop::sample::select(vec!["a", "b", "c"]);
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (0usize..4).prop_map(|k| vec![7; [16, 64, 256, 1024][k]]),
    ];
    (method, path, arb_block_options(), payload).prop_map(|(method, path, options, payload)| {
        let mut m = Message::new(MessageType::Con, method);
        m.set_path(path);
        arb_options(&mut m, options);
        m.payload = payload;
        m
    })
}

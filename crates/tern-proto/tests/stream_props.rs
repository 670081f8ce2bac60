//! Property tests for CoAP over streams (RFC 8323): frame encode∘decode is the identity,
//! a stream of frames decodes the same however it is cut, arbitrary bytes never panic nor
//! grow the decoder past its cap, and two connections back to back deliver every request
//! and response whatever the cuts between them.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use tern_proto::endpoint::RequestParams;
use tern_proto::stream::frame::{self, FrameDecoder};
use tern_proto::stream::{StreamConfig, StreamConnection, StreamEvent, StreamRole, StreamState};
use tern_proto::{Code, Message, MessageType, OptionNumber, Token};

/// Requests, responses and signaling codes (classes 0, 2, 4, 5, 7; not 0.00).
fn arb_code() -> impl Strategy<Value = Code> {
    prop_oneof![
        (1u8..32).prop_map(|d| Code::new(0, d).unwrap()),
        (2u8..6, 0u8..32)
            .prop_filter("class 3", |(c, _)| *c != 3)
            .prop_map(|(c, d)| Code::new(c, d).unwrap()),
        (0u8..32).prop_map(|d| Code::new(7, d).unwrap()),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        arb_code(),
        proptest::collection::vec(any::<u8>(), 0..=8),
        proptest::collection::vec(
            (
                prop_oneof![0u16..40, 0u16..=u16::MAX],
                proptest::collection::vec(any::<u8>(), 0..300),
            ),
            0..6,
        ),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..70_000),
        ],
    )
        .prop_map(|(code, token, options, payload)| {
            let mut m = Message::new(MessageType::Con, code);
            m.token = Token::new(&token).unwrap();
            for (number, value) in options {
                m.options.push(OptionNumber(number), value);
            }
            m.payload = payload;
            m
        })
}

fn decode_cut(stream: &[u8], cuts: &[usize], max: usize) -> Vec<Message> {
    let mut d = FrameDecoder::new(max);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts[i % cuts.len()].clamp(1, rest.len());
        i += 1;
        let mut piece = &rest[..n];
        rest = &rest[n..];
        while !piece.is_empty() {
            let k = if i % 2 == 0 {
                d.extend(piece)
            } else {
                let buf = d.input_buffer(piece.len());
                let k = buf.len().min(piece.len());
                buf[..k].copy_from_slice(&piece[..k]);
                d.commit(k);
                k
            };
            piece = &piece[k..];
            assert!(d.allocated() <= d.capacity());
            while let Some(m) = d.next_frame().unwrap() {
                out.push(m);
            }
        }
    }
    assert_eq!(d.buffered(), 0);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encode_then_decode_is_identity(m in arb_message()) {
        let bytes = frame::to_bytes(&m).unwrap();
        prop_assert_eq!(bytes.len(), frame::encoded_len(&m));
        prop_assert_eq!(frame::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn cut_streams_decode_the_same(
        messages in proptest::collection::vec(arb_message(), 1..8),
        cuts in proptest::collection::vec(1usize..5000, 1..20),
    ) {
        let mut stream = Vec::new();
        for m in &messages {
            frame::encode(m, &mut stream).unwrap();
        }
        let max = messages.iter().map(frame::encoded_len).max().unwrap();
        prop_assert_eq!(decode_cut(&stream, &cuts, max), messages);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overgrow(
        bytes in proptest::collection::vec(any::<u8>(), 0..3000),
        cut in 1usize..200,
        max in 2usize..2000,
    ) {
        let mut d = FrameDecoder::new(max);
        for piece in bytes.chunks(cut) {
            let mut piece = piece;
            while !piece.is_empty() {
                let n = d.extend(piece);
                prop_assert!(n > 0);
                piece = &piece[n..];
                prop_assert!(d.allocated() <= d.capacity());
                prop_assert!(d.buffered() <= max + frame::MAX_HEADER_LEN);
                loop {
                    match d.next_frame() {
                        Ok(Some(m)) => {
                            prop_assert!(frame::encoded_len(&m) <= max || m.code == Code::EMPTY);
                        }
                        Ok(None) => break,
                        Err(_) => break,
                    }
                }
            }
        }
    }

    #[test]
    fn connections_back_to_back_deliver_everything(
        sizes in proptest::collection::vec(0usize..20_000, 1..12),
        cuts in proptest::collection::vec(1usize..3000, 1..16),
    ) {
        let t0 = Instant::now();
        let mut client = StreamConnection::new(StreamRole::Client, StreamConfig::default(), t0, [1; 32]);
        let mut server = StreamConnection::new(StreamRole::Server, StreamConfig::default(), t0, [2; 32]);
        let mut want = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let mut m = Message::new(MessageType::Con, Code::POST);
            m.payload = vec![i as u8; len];
            let id = client.request(t0, m, RequestParams::default()).unwrap();
            want.push((id, len));
        }
        let (mut to_server, mut to_client) = (Vec::<u8>::new(), Vec::<u8>::new());
        let mut got = Vec::new();
        let mut now = t0;
        let mut k = 0;
        for _ in 0..100_000 {
            while let Some(b) = client.poll_output() { to_server.extend_from_slice(&b); }
            while let Some(b) = server.poll_output() { to_client.extend_from_slice(&b); }
            if to_server.is_empty() && to_client.is_empty() { break; }
            now += Duration::from_millis(1);
            for (pending, to) in [(&mut to_server, &mut server), (&mut to_client, &mut client)] {
                if pending.is_empty() { continue; }
                let n = cuts[k % cuts.len()].min(pending.len());
                k += 1;
                let bytes: Vec<u8> = pending.drain(..n).collect();
                to.handle_input(now, &bytes);
            }
            while let Some(e) = server.poll_event() {
                if let StreamEvent::Request { id, request } = e {
                    let mut r = Message::new(MessageType::Con, Code::CHANGED);
                    r.payload = request.payload;
                    server.respond(now, id, r).unwrap();
                }
            }
            while let Some(e) = client.poll_event() {
                if let StreamEvent::Response { id, response } = e {
                    got.push((id, response.payload.len()));
                }
            }
        }
        got.sort();
        prop_assert_eq!(got, want);
        prop_assert_eq!(client.state(), StreamState::Open);
        prop_assert_eq!(server.state(), StreamState::Open);
    }
}

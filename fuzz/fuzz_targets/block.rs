//! Block-wise transfers (RFC 7959): arbitrary messages fed to the server-side Block1Assembler
//! and Block2Server and to the client-side Block2Fetch and Block1Send never panic, every answer
//! is one the protocol allows, and the server-side tables stay within their caps.
//!
//! Input: records of `[op][len: u16 big-endian][datagram]`. The low two bits of `op` pick the
//! machine (assembler, Block2 server, fetch, send), the next two the peer, and the high four
//! advance the clock by that many 16-second steps, so that expiry runs too.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tern_proto::block::value::size_of_szx;
use tern_proto::block::{
    Block1Action, Block1Assembler, Block1Config, Block1Send, Block1SendConfig, Block1Step,
    Block2Config, Block2Fetch, Block2Lookup, Block2Server, Block2Step, BlockValue,
};
use tern_proto::{Code, Message, MessageType, OptionNumber};

fuzz_target!(|data: &[u8]| {
    let _ = check(data);
});

const MAX_BODY: usize = 4096;
const MAX_BUFFERED: usize = 12_000;
const MAX_CACHED: usize = 8000;

/// Returns how many records decoded into messages.
fn check(mut data: &[u8]) -> usize {
    let t0 = Instant::now();
    let lifetime = Duration::from_secs(100);
    let mut assembler = Block1Assembler::new(
        Block1Config {
            max_body_size: MAX_BODY,
            max_transfers_per_peer: 2,
            max_transfers: 6,
            max_buffered_bytes: MAX_BUFFERED,
            lifetime,
            ..Block1Config::default()
        },
        [1; 32],
    );
    let mut server = Block2Server::new(
        Block2Config {
            max_cached_bytes: MAX_CACHED,
            max_cached_per_peer: 2,
            lifetime,
            ..Block2Config::default()
        },
        [2; 32],
    );
    let mut get = Message::new(MessageType::Con, Code::GET);
    get.set_path("/f");
    let mut fetch = Block2Fetch::new(&get, MAX_BODY);
    let mut put = get.clone();
    put.code = Code::PUT;
    put.payload = (0..1000u32).map(|i| i as u8).collect();
    let settings = Block1SendConfig {
        szx: 2,
        request_tag: Some(vec![7]),
        ..Block1SendConfig::default()
    };
    let Ok((mut send, _)) = Block1Send::start(put, settings) else {
        panic!("a 1000-byte body in 64-byte blocks must start");
    };
    let mut now = t0;
    let mut decoded = 0;
    while data.len() >= 3 {
        let op = data[0];
        let len = usize::from(u16::from_be_bytes([data[1], data[2]])).min(data.len() - 3);
        let (record, rest) = data[3..].split_at(len);
        data = rest;
        now += Duration::from_secs(16 * u64::from(op >> 4));
        let Ok(message) = Message::decode(record) else {
            continue;
        };
        decoded += 1;
        let peer = SocketAddr::from(([192, 0, 2, 1], u16::from(op >> 2 & 3)));
        match op & 3 {
            0 => {
                match assembler.handle(now, peer, message) {
                    Block1Action::Continue(r) => {
                        assert_eq!(r.code, Code::CONTINUE);
                        let b = BlockValue::read(&r.options, OptionNumber::BLOCK1);
                        assert!(b.is_ok_and(|b| b.is_some_and(|b| b.more())));
                    }
                    Block1Action::Complete(done) => {
                        assert!(done.request.payload.len() <= MAX_BODY);
                        if done.block1.is_some() {
                            assert!(!done.request.options.contains(OptionNumber::BLOCK1));
                        }
                    }
                    Block1Action::Reject(r) => assert!(
                        [
                            Code::BAD_REQUEST,
                            Code::BAD_OPTION,
                            Code::REQUEST_ENTITY_INCOMPLETE,
                            Code::REQUEST_ENTITY_TOO_LARGE,
                            Code::SERVICE_UNAVAILABLE,
                        ]
                        .contains(&r.code),
                        "{r:?}"
                    ),
                }
                assert!(assembler.len() <= 6);
                assert!(assembler.buffered_bytes() <= MAX_BUFFERED);
            }
            1 => {
                let response = match server.handle_request(now, peer, &message) {
                    Block2Lookup::Respond(r) => r,
                    Block2Lookup::Handle | Block2Lookup::Regenerate => {
                        let mut r = Message::new(MessageType::Ack, Code::CONTENT);
                        let head = &message.payload[..message.payload.len().min(128)];
                        r.payload = head.repeat(40);
                        server.respond(now, peer, &message, r)
                    }
                };
                assert!(response.payload.len() <= 1024 || !response.code.is_success());
                assert!(server.cached_bytes() <= MAX_CACHED);
                assert!(server.len() <= 8);
            }
            2 => match fetch.handle_response(message) {
                Ok(Block2Step::Send(next)) => {
                    let b = BlockValue::read(&next.options, OptionNumber::BLOCK2);
                    assert!(b.is_ok_and(|b| b.is_some_and(|b| !b.more() && !b.is_bert())));
                }
                Ok(Block2Step::Done(_)) | Err(_) => {
                    fetch.restart();
                }
            },
            _ => match send.handle_response(message) {
                Ok(Block1Step::Send(next)) => {
                    assert!(next.payload.len() <= size_of_szx(2));
                    let b = BlockValue::read(&next.options, OptionNumber::BLOCK1);
                    assert!(b.is_ok_and(|b| b.is_some()));
                }
                Ok(Block1Step::Fetch(mut f, next)) => {
                    assert!(next.options.contains(OptionNumber::BLOCK2));
                    assert!(!f.is_finished());
                    f.restart();
                    send.restart();
                }
                Ok(Block1Step::Done(_)) | Err(_) => {
                    send.restart();
                }
            },
        }
    }
    assembler.handle_timeout(now + lifetime);
    server.handle_timeout(now + lifetime);
    assert!(assembler.is_empty() && server.is_empty());
    decoded
}

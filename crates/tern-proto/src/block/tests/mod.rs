//! Tests of the block-wise machines, alone and driving each other: `server.rs` (Block1Assembler,
//! Block2Server), `client.rs` (Block2Fetch, Block1Send, and both ends together), and the helpers
//! they share here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::code::MessageType;
use crate::message::Token;

const SEED: [u8; 32] = [7; 32];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn block(num: u32, more: bool, szx: u8) -> BlockValue {
    BlockValue::new(num, more, szx).unwrap()
}

/// A PUT to `/f` carrying one block of `data` at `num`/`szx`.
fn put_block(data: &[u8], num: u32, szx: u8) -> Message {
    let size = value::size_of_szx(szx);
    let start = (num as usize * size).min(data.len());
    let end = (start + size).min(data.len());
    let mut m = Message::new(MessageType::Con, Code::PUT);
    m.set_path("/f");
    block(num, end < data.len(), szx).write(&mut m.options, OptionNumber::BLOCK1);
    m.payload = data[start..end].to_vec();
    m
}

fn block_of(m: &Message, option: OptionNumber) -> BlockValue {
    BlockValue::read(&m.options, option).unwrap().unwrap()
}

fn expect_continue(action: Block1Action) -> BlockValue {
    match action {
        Block1Action::Continue(r) => {
            assert_eq!(r.code, Code::CONTINUE);
            block_of(&r, OptionNumber::BLOCK1)
        }
        other => panic!("expected 2.31, got {other:?}"),
    }
}

fn expect_reject(action: Block1Action, code: Code) -> Message {
    match action {
        Block1Action::Reject(r) if r.code == code => r,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn get(path: &str, block2: Option<BlockValue>) -> Message {
    let mut m = Message::new(MessageType::Con, Code::GET);
    m.set_path(path);
    if let Some(b) = block2 {
        b.write(&mut m.options, OptionNumber::BLOCK2);
    }
    m
}

fn content(payload: Vec<u8>) -> Message {
    let mut m = Message::new(MessageType::Ack, Code::CONTENT);
    m.payload = payload;
    m
}

fn expect_respond(lookup: Block2Lookup) -> Message {
    match lookup {
        Block2Lookup::Respond(m) => m,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn put(data: &[u8]) -> Message {
    let mut m = Message::new(MessageType::Con, Code::PUT);
    m.set_path("/f");
    m.payload = data.to_vec();
    m
}

mod client;
mod server;

//! Tests of the block-wise machines, alone and driving each other.

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

// --- Block1Assembler ------------------------------------------------------------------------

#[test]
fn assembles_in_order_and_acknowledges_the_last_block() {
    let t0 = Instant::now();
    let mut a = Block1Assembler::new(Block1Config::default(), SEED);
    let data = body(2500);
    let mut first = put_block(&data, 0, 6);
    first.options.set_uint(OptionNumber::SIZE1, 2500);
    assert_eq!(
        expect_continue(a.handle(t0, addr(1), first)),
        block(0, true, 6)
    );
    assert_eq!(
        expect_continue(a.handle(t0, addr(1), put_block(&data, 1, 6))),
        block(1, true, 6)
    );
    assert_eq!(a.len(), 1);
    let Block1Action::Complete(done) = a.handle(t0, addr(1), put_block(&data, 2, 6)) else {
        panic!("not complete");
    };
    assert_eq!(done.request.payload, data);
    assert_eq!(done.request.path(), "f");
    assert!(!done.request.options.contains(OptionNumber::BLOCK1));
    assert!(!done.request.options.contains(OptionNumber::SIZE1));
    assert_eq!(done.block1, Some(block(2, false, 6)));
    let mut response = Message::new(MessageType::Ack, Code::CHANGED);
    done.acknowledge(&mut response);
    assert_eq!(
        block_of(&response, OptionNumber::BLOCK1),
        block(2, false, 6)
    );
    assert!(a.is_empty() && a.buffered_bytes() == 0);
    assert_eq!(a.stats().completed, 1);
}

#[test]
fn requests_without_block1_pass_and_single_blocks_complete_at_once() {
    let t0 = Instant::now();
    let mut a = Block1Assembler::new(Block1Config::default(), SEED);
    let mut plain = Message::new(MessageType::Con, Code::POST);
    plain.payload = b"hi".to_vec();
    let Block1Action::Complete(done) = a.handle(t0, addr(1), plain.clone()) else {
        panic!()
    };
    assert_eq!((done.request, done.block1), (plain, None));
    let Block1Action::Complete(done) = a.handle(t0, addr(1), put_block(b"small", 0, 6)) else {
        panic!()
    };
    assert_eq!(done.request.payload, b"small");
    assert_eq!(done.block1, Some(block(0, false, 6)));
    assert!(a.is_empty());
}

#[test]
fn early_negotiation_asks_for_smaller_blocks() {
    let t0 = Instant::now();
    let config = Block1Config {
        preferred_szx: 4,
        ..Block1Config::default()
    };
    let mut a = Block1Assembler::new(config, SEED);
    let data = body(2000);
    // Block 0 of 1024 bytes is kept whole; the client goes on with 256-byte blocks at byte 1024.
    assert_eq!(
        expect_continue(a.handle(t0, addr(1), put_block(&data, 0, 6))),
        block(0, true, 4)
    );
    assert_eq!(
        expect_continue(a.handle(t0, addr(1), put_block(&data, 4, 4))),
        block(4, true, 4)
    );
    for num in 5..7 {
        expect_continue(a.handle(t0, addr(1), put_block(&data, num, 4)));
    }
    let Block1Action::Complete(done) = a.handle(t0, addr(1), put_block(&data, 7, 4)) else {
        panic!()
    };
    assert_eq!(done.request.payload, data);
}

#[test]
fn out_of_order_blocks_get_4_08_and_repeats_are_acknowledged_again() {
    let t0 = Instant::now();
    let mut a = Block1Assembler::new(Block1Config::default(), SEED);
    let data = body(64 * 5);
    let r = expect_reject(
        a.handle(t0, addr(1), put_block(&data, 1, 2)),
        Code::REQUEST_ENTITY_INCOMPLETE,
    );
    assert!(String::from_utf8_lossy(&r.payload).contains("block 0"));
    expect_continue(a.handle(t0, addr(1), put_block(&data, 0, 2)));
    expect_continue(a.handle(t0, addr(1), put_block(&data, 1, 2)));
    // A retried request for block 1 is acknowledged again and not appended twice.
    expect_continue(a.handle(t0, addr(1), put_block(&data, 1, 2)));
    assert_eq!(a.stats().repeated, 1);
    // Skipping block 2 is refused; the transfer stays for the client to go on.
    expect_reject(
        a.handle(t0, addr(1), put_block(&data, 3, 2)),
        Code::REQUEST_ENTITY_INCOMPLETE,
    );
    // Block 0 again is not a repeat but a restart.
    let mut tampered = put_block(&data, 1, 2);
    tampered.payload[0] ^= 1;
    expect_reject(
        a.handle(t0, addr(1), tampered),
        Code::REQUEST_ENTITY_INCOMPLETE,
    );
    for num in 2..4 {
        expect_continue(a.handle(t0, addr(1), put_block(&data, num, 2)));
    }
    let Block1Action::Complete(done) = a.handle(t0, addr(1), put_block(&data, 4, 2)) else {
        panic!()
    };
    assert_eq!(done.request.payload, data);
}

#[test]
fn block_zero_restarts_atomically() {
    let t0 = Instant::now();
    let mut a = Block1Assembler::new(Block1Config::default(), SEED);
    let old = vec![b'o'; 64 * 3];
    let new = vec![b'n'; 64 * 2];
    expect_continue(a.handle(t0, addr(1), put_block(&old, 0, 2)));
    expect_continue(a.handle(t0, addr(1), put_block(&old, 1, 2)));
    expect_continue(a.handle(t0, addr(1), put_block(&new, 0, 2)));
    let Block1Action::Complete(done) = a.handle(t0, addr(1), put_block(&new, 1, 2)) else {
        panic!()
    };
    assert_eq!(done.request.payload, new);
    assert!(a.is_empty());
}

#[test]
fn request_tags_methods_and_peers_keep_transfers_apart() {
    let t0 = Instant::now();
    let mut a = Block1Assembler::new(Block1Config::default(), SEED);
    let x = vec![b'x'; 64 * 2];
    let y = vec![b'y'; 64 * 2];
    let tagged = |data: &[u8], num: u32, tag: Option<&[u8]>| {
        let mut m = put_block(data, num, 2);
        if let Some(tag) = tag {
            m.options.set(OptionNumber::REQUEST_TAG, tag.to_vec());
        }
        m
    };
    expect_continue(a.handle(t0, addr(1), tagged(&x, 0, None)));
    expect_continue(a.handle(t0, addr(1), tagged(&y, 0, Some(b""))));
    expect_continue(a.handle(t0, addr(2), tagged(&y, 0, None)));
    let mut post = tagged(&y, 0, None);
    post.code = Code::POST;
    expect_continue(a.handle(t0, addr(1), post));
    assert_eq!(a.len(), 4);
    let Block1Action::Complete(dy) = a.handle(t0, addr(1), tagged(&y, 1, Some(b""))) else {
        panic!()
    };
    let Block1Action::Complete(dx) = a.handle(t0, addr(1), tagged(&x, 1, None)) else {
        panic!()
    };
    assert_eq!((dx.request.payload, dy.request.payload), (x, y));
    assert_eq!(a.len(), 2);
}

#[test]
fn bodies_over_the_limit_get_4_13_with_size1() {
    let t0 = Instant::now();
    let config = Block1Config {
        max_body_size: 100,
        ..Block1Config::default()
    };
    let mut a = Block1Assembler::new(config, SEED);
    let data = body(64 * 3);
    let mut announced = put_block(&data, 0, 2);
    announced.options.set_uint(OptionNumber::SIZE1, 192);
    let r = expect_reject(
        a.handle(t0, addr(1), announced),
        Code::REQUEST_ENTITY_TOO_LARGE,
    );
    assert_eq!(r.options.get_uint(OptionNumber::SIZE1), Some(100));
    assert!(a.is_empty());
    // Without Size1 the limit is found on the second block, and the transfer is dropped.
    expect_continue(a.handle(t0, addr(1), put_block(&data, 0, 2)));
    expect_reject(
        a.handle(t0, addr(1), put_block(&data, 1, 2)),
        Code::REQUEST_ENTITY_TOO_LARGE,
    );
    assert!(a.is_empty());
    // A plain request over the limit too.
    let mut plain = Message::new(MessageType::Con, Code::PUT);
    plain.payload = vec![0; 101];
    expect_reject(a.handle(t0, addr(1), plain), Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(a.stats().too_large, 3);
}

#[test]
fn malformed_blocks_are_refused() {
    let t0 = Instant::now();
    let mut a = Block1Assembler::new(Block1Config::default(), SEED);
    let mut m = put_block(&body(100), 0, 2);
    m.options.set(OptionNumber::BLOCK1, vec![0, 0, 0, 0x0a]);
    expect_reject(a.handle(t0, addr(1), m), Code::BAD_OPTION);
    let mut m = put_block(&body(100), 0, 2);
    m.options.set(OptionNumber::BLOCK1, vec![0x0f]);
    let r = expect_reject(a.handle(t0, addr(1), m), Code::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&r.payload).contains("BERT"));
    // M=1 with a short payload, or any block longer than its size.
    let mut m = put_block(&body(100), 0, 2);
    m.payload.pop();
    expect_reject(a.handle(t0, addr(1), m), Code::BAD_REQUEST);
    let mut m = put_block(&body(10), 0, 0);
    m.payload = vec![0; 17];
    expect_reject(a.handle(t0, addr(1), m), Code::BAD_REQUEST);
    assert!(a.is_empty());
}

#[test]
fn caps_evict_per_peer_and_refuse_overall() {
    let t0 = Instant::now();
    let config = Block1Config {
        max_transfers_per_peer: 2,
        max_transfers: 3,
        ..Block1Config::default()
    };
    let mut a = Block1Assembler::new(config, SEED);
    let data = body(64 * 2);
    let at = |path: &str, num: u32| {
        let mut m = put_block(&data, num, 2);
        m.set_path(path);
        m
    };
    let sec = Duration::from_secs(1);
    expect_continue(a.handle(t0, addr(1), at("a", 0)));
    expect_continue(a.handle(t0 + sec, addr(1), at("b", 0)));
    // A third transfer of peer 1 pushes out its oldest ("a").
    expect_continue(a.handle(t0 + 2 * sec, addr(1), at("c", 0)));
    assert_eq!((a.len(), a.stats().evicted), (2, 1));
    expect_reject(
        a.handle(t0 + 2 * sec, addr(1), at("a", 1)),
        Code::REQUEST_ENTITY_INCOMPLETE,
    );
    expect_continue(a.handle(t0 + 3 * sec, addr(2), at("a", 0)));
    // The table is full: another peer is refused, with Max-Age until "b" expires.
    let r = expect_reject(
        a.handle(t0 + 4 * sec, addr(3), at("a", 0)),
        Code::SERVICE_UNAVAILABLE,
    );
    assert_eq!(r.options.get_uint(OptionNumber::MAX_AGE), Some(245));
    assert_eq!(a.len(), 3);
}

#[test]
fn buffered_bytes_are_capped() {
    let t0 = Instant::now();
    let config = Block1Config {
        max_body_size: 4096,
        max_buffered_bytes: 4500,
        ..Block1Config::default()
    };
    let mut a = Block1Assembler::new(config, SEED);
    let data = body(4000);
    for num in 0..3 {
        expect_continue(a.handle(t0, addr(1), put_block(&data, num, 6)));
    }
    assert!(a.buffered_bytes() <= 4500, "{}", a.buffered_bytes());
    // A second peer's body cannot fit beside it.
    let mut refused = 0;
    for num in 0..3 {
        let mut m = put_block(&data, num, 6);
        m.set_path("g");
        if let Block1Action::Reject(r) = a.handle(t0, addr(2), m) {
            assert_eq!(r.code, Code::SERVICE_UNAVAILABLE);
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1);
    assert!(a.buffered_bytes() <= 4500, "{}", a.buffered_bytes());
    // The first body still completes.
    let Block1Action::Complete(done) = a.handle(t0, addr(1), put_block(&data, 3, 6)) else {
        panic!()
    };
    assert_eq!(done.request.payload, data);
}

#[test]
fn transfers_expire_lazily_and_by_timer() {
    let t0 = Instant::now();
    let mut a = Block1Assembler::new(Block1Config::default(), SEED);
    let data = body(64 * 3);
    expect_continue(a.handle(t0, addr(1), put_block(&data, 0, 2)));
    assert_eq!(a.poll_timeout(), Some(t0 + DEFAULT_LIFETIME));
    a.handle_timeout(t0 + DEFAULT_LIFETIME - Duration::from_millis(1));
    assert_eq!(a.len(), 1);
    // No timer call: the next request past the lifetime finds the transfer gone.
    expect_reject(
        a.handle(t0 + DEFAULT_LIFETIME, addr(1), put_block(&data, 1, 2)),
        Code::REQUEST_ENTITY_INCOMPLETE,
    );
    assert_eq!((a.len(), a.stats().expired, a.poll_timeout()), (0, 1, None));
}

#[test]
fn configurations_are_checked() {
    assert_eq!(Block1Config::default().validate(), Ok(()));
    assert_eq!(Block2Config::default().validate(), Ok(()));
    let bad = Block1Config {
        max_buffered_bytes: 10,
        ..Block1Config::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(BlockConfigError::Inconsistent(_))
    ));
    let bad = Block1Config {
        preferred_szx: 7,
        ..Block1Config::default()
    };
    assert!(matches!(bad.validate(), Err(BlockConfigError::Szx { .. })));
    let bad = Block2Config {
        lifetime: Duration::ZERO,
        ..Block2Config::default()
    };
    assert_eq!(bad.validate(), Err(BlockConfigError::Lifetime));
    let bad = Block2Config {
        max_cached_per_peer: 0,
        ..Block2Config::default()
    };
    assert_eq!(
        bad.validate(),
        Err(BlockConfigError::ZeroCapacity("max_cached_per_peer"))
    );
}

// --- Block2Server ---------------------------------------------------------------------------

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

#[test]
fn slices_caches_and_serves_later_blocks() {
    let t0 = Instant::now();
    let mut s = Block2Server::new(Block2Config::default(), SEED);
    let data = body(2500);
    let request = get("big", None);
    assert_eq!(
        s.handle_request(t0, addr(1), &request),
        Block2Lookup::Handle
    );
    let first = s.respond(t0, addr(1), &request, content(data.clone()));
    assert_eq!(block_of(&first, OptionNumber::BLOCK2), block(0, true, 6));
    assert_eq!(first.options.get_uint(OptionNumber::SIZE2), Some(2500));
    let etag = first.options.get(OptionNumber::ETAG).unwrap().to_vec();
    assert_eq!(etag.len(), 8);
    assert_eq!(first.payload, data[..1024]);
    assert_eq!(s.len(), 1);
    let second =
        expect_respond(s.handle_request(t0, addr(1), &get("big", Some(block(1, false, 6)))));
    assert_eq!(block_of(&second, OptionNumber::BLOCK2), block(1, true, 6));
    assert_eq!(second.options.get(OptionNumber::ETAG), Some(&etag[..]));
    assert!(!second.options.contains(OptionNumber::SIZE2));
    assert_eq!(second.payload, data[1024..2048]);
    // Another peer asking for block 1 has nothing cached: its handler runs again.
    assert_eq!(
        s.handle_request(t0, addr(2), &get("big", Some(block(1, false, 6)))),
        Block2Lookup::Regenerate
    );
    let last = expect_respond(s.handle_request(t0, addr(1), &get("big", Some(block(2, false, 6)))));
    assert_eq!(block_of(&last, OptionNumber::BLOCK2), block(2, false, 6));
    assert_eq!(last.payload, data[2048..]);
    // Serving the last block releases the body.
    assert!(s.is_empty() && s.cached_bytes() == 0);
    assert_eq!(s.stats().from_cache, 2);
}

#[test]
fn block_sizes_follow_the_client_or_the_server_whichever_is_smaller() {
    let t0 = Instant::now();
    let config = Block2Config {
        default_szx: 5,
        ..Block2Config::default()
    };
    let mut s = Block2Server::new(config, SEED);
    let data = body(3000);
    // The client asks for 256-byte blocks.
    let r = get("x", Some(block(0, false, 4)));
    let first = s.respond(t0, addr(1), &r, content(data.clone()));
    assert_eq!(block_of(&first, OptionNumber::BLOCK2), block(0, true, 4));
    // A client asking for 1024-byte block 1 gets byte 1024 in the server's 512-byte blocks.
    let r = get("x", Some(block(1, false, 6)));
    let b = expect_respond(s.handle_request(t0, addr(1), &r));
    assert_eq!(block_of(&b, OptionNumber::BLOCK2), block(2, true, 5));
    assert_eq!(b.payload, data[1024..1536]);
    // Past the end: 4.02.
    let r = get("x", Some(block(6, false, 5)));
    let b = expect_respond(s.handle_request(t0, addr(1), &r));
    assert_eq!(b.code, Code::BAD_OPTION);
    assert_eq!(s.stats().past_end, 1);
}

#[test]
fn small_responses_pass_and_handler_blocks_are_kept() {
    let t0 = Instant::now();
    let mut s = Block2Server::new(Block2Config::default(), SEED);
    let small = content(b"short".to_vec());
    assert_eq!(
        s.respond(t0, addr(1), &get("s", None), small.clone()),
        small
    );
    let with = s.respond(
        t0,
        addr(1),
        &get("s", Some(block(0, false, 2))),
        small.clone(),
    );
    assert_eq!(block_of(&with, OptionNumber::BLOCK2), block(0, false, 2));
    // A handler that sliced its own body is left alone.
    let mut own = content(body(2000));
    block(0, true, 6).write(&mut own.options, OptionNumber::BLOCK2);
    assert_eq!(s.respond(t0, addr(1), &get("s", None), own.clone()), own);
    // An error response that fits is never sliced, whatever block was asked for.
    let mut err = content(b"gone".to_vec());
    err.code = Code::NOT_FOUND;
    let r = get("s", Some(block(3, false, 6)));
    assert_eq!(s.respond(t0, addr(1), &r, err.clone()), err);
    assert!(s.is_empty());
}

#[test]
fn regenerated_blocks_keep_the_etag_and_other_methods_are_not_rerun() {
    let t0 = Instant::now();
    let mut s = Block2Server::new(Block2Config::default(), SEED);
    let mut other = Block2Server::new(Block2Config::default(), SEED);
    let data = body(3000);
    let first = s.respond(t0, addr(1), &get("r", None), content(data.clone()));
    let r = get("r", Some(block(1, false, 6)));
    assert_eq!(
        other.handle_request(t0, addr(1), &r),
        Block2Lookup::Regenerate
    );
    let again = other.respond(t0, addr(1), &r, content(data.clone()));
    assert_eq!(block_of(&again, OptionNumber::BLOCK2), block(1, true, 6));
    assert_eq!(again.payload, data[1024..2048]);
    assert_eq!(
        again.options.get(OptionNumber::ETAG),
        first.options.get(OptionNumber::ETAG)
    );
    // The regenerated body is cached for the next block.
    assert_eq!(other.len(), 1);
    let mut post = get("r", Some(block(1, false, 6)));
    post.code = Code::POST;
    let b = expect_respond(s.handle_request(t0, addr(1), &post));
    assert_eq!(b.code, Code::REQUEST_ENTITY_INCOMPLETE);
    // A handler's own ETag is kept; a changed body gets a different generated one.
    let mut tagged = content(data.clone());
    tagged.options.set(OptionNumber::ETAG, b"v1".to_vec());
    let t = s.respond(t0, addr(1), &get("t", None), tagged);
    assert_eq!(t.options.get(OptionNumber::ETAG), Some(&b"v1"[..]));
    let mut changed = data.clone();
    changed[2999] ^= 1;
    let c = s.respond(t0, addr(1), &get("r", None), content(changed));
    assert_ne!(
        c.options.get(OptionNumber::ETAG),
        first.options.get(OptionNumber::ETAG)
    );
}

#[test]
fn observe_stays_on_block_zero_only() {
    let t0 = Instant::now();
    let mut s = Block2Server::new(Block2Config::default(), SEED);
    let mut register = get("obs", None);
    register.options.set_uint(OptionNumber::OBSERVE, 0);
    let mut notification = content(body(1500));
    notification.options.set_uint(OptionNumber::OBSERVE, 12);
    let first = s.respond(t0, addr(1), &register, notification);
    assert_eq!(first.options.get_uint(OptionNumber::OBSERVE), Some(12));
    // The follow-up GET has no Observe; the key matches all the same.
    let next = expect_respond(s.handle_request(t0, addr(1), &get("obs", Some(block(1, false, 6)))));
    assert!(!next.options.contains(OptionNumber::OBSERVE));
    assert_eq!(next.payload.len(), 1500 - 1024);
}

#[test]
fn hostile_block2_requests_get_errors() {
    let t0 = Instant::now();
    let mut s = Block2Server::new(Block2Config::default(), SEED);
    let mut m = get("x", None);
    m.options.set(OptionNumber::BLOCK2, vec![1, 2, 3, 4]);
    assert_eq!(
        expect_respond(s.handle_request(t0, addr(1), &m)).code,
        Code::BAD_OPTION
    );
    let m = get("x", Some(block(0, false, 7)));
    assert_eq!(
        expect_respond(s.handle_request(t0, addr(1), &m)).code,
        Code::BAD_REQUEST
    );
    // A BERT request that reaches respond() anyway gets the default size.
    let r = s.respond(t0, addr(1), &m, content(body(2000)));
    assert_eq!(block_of(&r, OptionNumber::BLOCK2), block(0, true, 6));
    let m = get("x", Some(block(MAX_NUM_FOR_TESTS, false, 6)));
    let r = s.respond(t0, addr(1), &m, content(body(2000)));
    assert_eq!(r.code, Code::BAD_OPTION);
}

const MAX_NUM_FOR_TESTS: u32 = value::MAX_NUM;

#[test]
fn the_cache_is_bounded_and_expires() {
    let t0 = Instant::now();
    let config = Block2Config {
        max_cached_bytes: 10_000,
        max_cached_per_peer: 2,
        ..Block2Config::default()
    };
    let mut s = Block2Server::new(config, SEED);
    let sec = Duration::from_secs(1);
    for (i, path) in ["a", "b", "c"].iter().enumerate() {
        s.respond(
            t0 + sec * i as u32,
            addr(1),
            &get(path, None),
            content(body(3000)),
        );
    }
    // Per peer: "a" went.
    assert_eq!((s.len(), s.stats().evicted), (2, 1));
    for (i, port) in [2u16, 3].iter().enumerate() {
        s.respond(
            t0 + sec * (3 + i as u32),
            addr(*port),
            &get("a", None),
            content(body(3000)),
        );
        assert!(s.cached_bytes() <= 10_000, "{}", s.cached_bytes());
    }
    assert!(s.len() <= 3);
    // A body larger than the whole cache is served but not kept.
    s.respond(t0, addr(4), &get("huge", None), content(body(20_000)));
    assert!(s.cached_bytes() <= 10_000);
    let oldest = s.poll_timeout().unwrap();
    s.handle_timeout(oldest);
    assert!(s.stats().expired >= 1);
    s.handle_timeout(t0 + DEFAULT_LIFETIME * 2);
    assert!(s.is_empty() && s.poll_timeout().is_none());
}

// --- Block2Fetch -----------------------------------------------------------------------------

/// Drives a fetch of `request` against `server` with `data` as the handler's body.
fn fetch_through(
    server: &mut Block2Server,
    request: &Message,
    data: &[u8],
    max: usize,
) -> (Result<Message, TransferError>, usize) {
    let t0 = Instant::now();
    let mut fetch = Block2Fetch::new(request, max);
    let mut next = request.clone();
    let mut exchanges = 0;
    loop {
        exchanges += 1;
        let response = match server.handle_request(t0, addr(1), &next) {
            Block2Lookup::Respond(r) => r,
            _ => server.respond(t0, addr(1), &next, content(data.to_vec())),
        };
        match fetch.handle_response(response) {
            Ok(Block2Step::Send(r)) => next = r,
            Ok(Block2Step::Done(r)) => return (Ok(r), exchanges),
            Err(e) => return (Err(e), exchanges),
        }
    }
}

#[test]
fn fetch_reassembles_and_drops_observe_from_follow_ups() {
    let mut s = Block2Server::new(Block2Config::default(), SEED);
    let data = body(5000);
    let mut request = get("f", None);
    request.token = Token::new(&[1, 2]).unwrap();
    request.options.set_uint(OptionNumber::OBSERVE, 0);
    let mut fetch = Block2Fetch::new(&request, 1 << 20);
    let mut first = s.respond(Instant::now(), addr(1), &request, content(data.clone()));
    first.options.set_uint(OptionNumber::OBSERVE, 5);
    first.token = request.token;
    let Ok(Block2Step::Send(next)) = fetch.handle_response(first) else {
        panic!()
    };
    assert!(!next.options.contains(OptionNumber::OBSERVE));
    assert!(next.token.is_empty(), "the observation keeps its token");
    assert_eq!(block_of(&next, OptionNumber::BLOCK2), block(1, false, 6));
    let (done, exchanges) = fetch_through(&mut s, &get("f", None), &data, 1 << 20);
    let done = done.unwrap();
    assert_eq!(done.payload, data);
    assert_eq!(exchanges, 5);
    assert!(!done.options.contains(OptionNumber::BLOCK2));
    assert!(!done.options.contains(OptionNumber::SIZE2));
}

#[test]
fn fetch_follows_a_smaller_size_by_offset() {
    let data = body(4096);
    let mut fetch = Block2Fetch::new(&get("f", None), 1 << 20);
    let mut r = content(data[..1024].to_vec());
    block(0, true, 6).write(&mut r.options, OptionNumber::BLOCK2);
    let Ok(Block2Step::Send(next)) = fetch.handle_response(r) else {
        panic!()
    };
    assert_eq!(block_of(&next, OptionNumber::BLOCK2), block(1, false, 6));
    // The server answers byte 1024 in 256-byte blocks (NUM 4).
    let mut r = content(data[1024..1280].to_vec());
    block(4, true, 4).write(&mut r.options, OptionNumber::BLOCK2);
    let Ok(Block2Step::Send(next)) = fetch.handle_response(r) else {
        panic!()
    };
    assert_eq!(block_of(&next, OptionNumber::BLOCK2), block(5, false, 4));
    // A larger size again, where the offset is not on its boundary: the client stays smaller.
    let mut r = content(data[1280..1536].to_vec());
    block(5, true, 4).write(&mut r.options, OptionNumber::BLOCK2);
    fetch.handle_response(r).unwrap();
    let mut r = content(data[1536..2048].to_vec());
    block(3, true, 5).write(&mut r.options, OptionNumber::BLOCK2);
    let Ok(Block2Step::Send(next)) = fetch.handle_response(r) else {
        panic!()
    };
    assert_eq!(block_of(&next, OptionNumber::BLOCK2), block(4, false, 5));
    assert_eq!(fetch.received(), 2048);
}

/// The first response to `get("f")` for a body of `len` with 64-byte blocks.
fn first_block(data: &[u8]) -> Message {
    let mut r = content(data[..64].to_vec());
    block(0, true, 2).write(&mut r.options, OptionNumber::BLOCK2);
    r.options.set(OptionNumber::ETAG, b"e1".to_vec());
    r
}

fn second_block(data: &[u8]) -> Message {
    let mut r = content(data[64..128].to_vec());
    block(1, true, 2).write(&mut r.options, OptionNumber::BLOCK2);
    r.options.set(OptionNumber::ETAG, b"e1".to_vec());
    r
}

fn fetch_error(second: impl FnOnce(&mut Message), max: usize) -> TransferError {
    let data = body(1000);
    let mut fetch = Block2Fetch::new(&get("f", None), max);
    fetch.handle_response(first_block(&data)).unwrap();
    let mut r = second_block(&data);
    second(&mut r);
    let e = fetch.handle_response(r).unwrap_err();
    assert!(fetch.is_finished());
    assert_eq!(
        fetch.handle_response(second_block(&data)),
        Err(TransferError::Finished)
    );
    e
}

#[test]
fn fetch_refuses_what_does_not_fit_the_transfer() {
    assert_eq!(
        fetch_error(|r| r.options.set(OptionNumber::ETAG, b"e2".to_vec()), 1000),
        TransferError::EtagChanged
    );
    assert_eq!(
        fetch_error(|r| r.options.remove(OptionNumber::ETAG), 1000),
        TransferError::EtagChanged
    );
    assert!(matches!(
        fetch_error(
            |r| block(2, true, 2).write(&mut r.options, OptionNumber::BLOCK2),
            1000
        ),
        TransferError::WrongBlock {
            expected_offset: 64,
            got_offset: 128,
            ..
        }
    ));
    assert_eq!(
        fetch_error(
            |r| block(1, true, 7).write(&mut r.options, OptionNumber::BLOCK2),
            1000
        ),
        TransferError::Bert(OptionNumber::BLOCK2)
    );
    assert_eq!(
        fetch_error(|r| r.options.remove(OptionNumber::BLOCK2), 1000),
        TransferError::MissingOption(OptionNumber::BLOCK2)
    );
    assert!(matches!(
        fetch_error(|r| r.options.set(OptionNumber::BLOCK2, vec![0; 4]), 1000),
        TransferError::BadOption { .. }
    ));
    assert_eq!(
        fetch_error(
            |r| {
                r.payload.pop();
            },
            1000
        ),
        TransferError::BlockSize {
            len: 63,
            size: 64,
            more: true
        }
    );
    assert_eq!(
        fetch_error(|_| {}, 100),
        TransferError::BodyTooLarge { max: 100 }
    );
    assert_eq!(
        fetch_error(|r| r.code = Code::NOT_FOUND, 1000),
        TransferError::ErrorResponse(Code::NOT_FOUND)
    );
    assert_eq!(
        fetch_error(|r| r.code = Code::GET, 1000),
        TransferError::NotAResponse(Code::GET)
    );
}

#[test]
fn fetch_checks_tokens_and_size2_and_passes_plain_responses() {
    let data = body(1000);
    let mut request = get("f", None);
    request.token = Token::new(&[9]).unwrap();
    let mut fetch = Block2Fetch::new(&request, 1000);
    let e = fetch.handle_response(first_block(&data)).unwrap_err();
    assert!(matches!(e, TransferError::TokenMismatch { .. }));
    let mut fetch = Block2Fetch::new(&get("f", None), 500);
    let mut r = first_block(&data);
    r.options.set_uint(OptionNumber::SIZE2, 1000);
    assert_eq!(
        fetch.handle_response(r),
        Err(TransferError::BodyTooLarge { max: 500 })
    );
    // Not block-wise, or an error to the first request: handed back as it is.
    let plain = content(b"x".to_vec());
    let mut fetch = Block2Fetch::new(&get("f", None), 500);
    assert_eq!(
        fetch.handle_response(plain.clone()),
        Ok(Block2Step::Done(plain))
    );
    let mut err = content(Vec::new());
    err.code = Code::NOT_FOUND;
    let mut fetch = Block2Fetch::new(&get("f", None), 500);
    assert_eq!(
        fetch.handle_response(err.clone()),
        Ok(Block2Step::Done(err))
    );
    // A restart goes back to the original request.
    let request = fetch.restart();
    assert!(!request.options.contains(OptionNumber::BLOCK2));
    assert!(!fetch.is_finished());
}

// --- Block1Send ------------------------------------------------------------------------------

fn put(data: &[u8]) -> Message {
    let mut m = Message::new(MessageType::Con, Code::PUT);
    m.set_path("/f");
    m.payload = data.to_vec();
    m
}

#[test]
fn send_drives_the_assembler_and_follows_early_negotiation() {
    let t0 = Instant::now();
    let config = Block1Config {
        preferred_szx: 4,
        ..Block1Config::default()
    };
    let mut a = Block1Assembler::new(config, SEED);
    let data = body(3000);
    let settings = Block1SendConfig {
        request_tag: Some(b"t1".to_vec()),
        ..Block1SendConfig::default()
    };
    let (mut send, mut request) = Block1Send::start(put(&data), settings).unwrap();
    assert_eq!(request.options.get_uint(OptionNumber::SIZE1), Some(3000));
    assert_eq!(send.total(), 3000);
    let mut sent = Vec::new();
    let response = loop {
        assert_eq!(
            request.options.get(OptionNumber::REQUEST_TAG),
            Some(&b"t1"[..])
        );
        sent.push(block_of(&request, OptionNumber::BLOCK1));
        let response = match a.handle(t0, addr(1), request) {
            Block1Action::Continue(r) | Block1Action::Reject(r) => r,
            Block1Action::Complete(done) => {
                assert_eq!(done.request.payload, data);
                let mut r = Message::new(MessageType::Ack, Code::CHANGED);
                done.acknowledge(&mut r);
                r
            }
        };
        match send.handle_response(response).unwrap() {
            Block1Step::Send(r) => {
                assert!(!r.options.contains(OptionNumber::SIZE1));
                request = r;
            }
            Block1Step::Done(r) => break r,
            Block1Step::Fetch(..) => panic!("no response body"),
        }
    };
    assert_eq!(response.code, Code::CHANGED);
    // 1024 bytes first, then 256-byte blocks from byte 1024 (NUM 4) to the end (NUM 11).
    assert_eq!(sent[0], block(0, true, 6));
    assert_eq!(sent[1], block(4, true, 4));
    assert_eq!(*sent.last().unwrap(), block(11, false, 4));
    assert_eq!(sent.len(), 9);
    assert!(send.is_finished());
}

#[test]
fn send_reports_4_13_and_4_08_and_protocol_errors() {
    let data = body(300);
    let small = Block1SendConfig {
        szx: 2,
        ..Block1SendConfig::default()
    };
    let reply = |code: Code, b: Option<BlockValue>| {
        let mut r = Message::new(MessageType::Ack, code);
        if let Some(b) = b {
            b.write(&mut r.options, OptionNumber::BLOCK1);
        }
        r
    };
    let (mut send, _) = Block1Send::start(put(&data), small.clone()).unwrap();
    let mut r = reply(Code::REQUEST_ENTITY_TOO_LARGE, Some(block(0, false, 1)));
    r.options.set_uint(OptionNumber::SIZE1, 128);
    assert_eq!(
        send.handle_response(r).unwrap_err(),
        TransferError::EntityTooLarge {
            size1: Some(128),
            szx: Some(1)
        }
    );
    let (mut send, _) = Block1Send::start(put(&data), small.clone()).unwrap();
    assert_eq!(
        send.handle_response(reply(Code::REQUEST_ENTITY_INCOMPLETE, None))
            .unwrap_err(),
        TransferError::EntityIncomplete
    );
    // A restart begins at block 0 again.
    let again = send.restart();
    assert_eq!(block_of(&again, OptionNumber::BLOCK1), block(0, true, 2));
    // A 2.31 that acknowledges another block, lacks Block1, or uses BERT.
    assert!(matches!(
        send.handle_response(reply(Code::CONTINUE, Some(block(3, true, 2)))),
        Err(TransferError::WrongBlock { .. })
    ));
    let (mut send, _) = Block1Send::start(put(&data), small.clone()).unwrap();
    assert_eq!(
        send.handle_response(reply(Code::CONTINUE, None))
            .unwrap_err(),
        TransferError::MissingOption(OptionNumber::BLOCK1)
    );
    let (mut send, _) = Block1Send::start(put(&data), small.clone()).unwrap();
    assert_eq!(
        send.handle_response(reply(Code::CONTINUE, Some(block(0, true, 7))))
            .unwrap_err(),
        TransferError::Bert(OptionNumber::BLOCK1)
    );
    // 2.31 to the last block.
    let (mut send, _) = Block1Send::start(put(&data[..64]), small.clone()).unwrap();
    assert_eq!(
        send.handle_response(reply(Code::CONTINUE, Some(block(0, true, 2))))
            .unwrap_err(),
        TransferError::UnexpectedContinue
    );
    // An error response is the final answer.
    let (mut send, _) = Block1Send::start(put(&data), small.clone()).unwrap();
    assert!(matches!(
        send.handle_response(reply(Code::NOT_FOUND, None)),
        Ok(Block1Step::Done(r)) if r.code == Code::NOT_FOUND
    ));
    assert_eq!(
        send.handle_response(reply(Code::CHANGED, None))
            .unwrap_err(),
        TransferError::Finished
    );
    // BERT cannot be asked for, and a body that fits goes as a plain request.
    let bert = Block1SendConfig {
        szx: 7,
        ..Block1SendConfig::default()
    };
    assert!(Block1Send::start(put(&data), bert).is_err());
    let (_, plain) = Block1Send::start(put(&data), Block1SendConfig::default()).unwrap();
    assert_eq!(plain.payload, data);
    assert!(!plain.options.contains(OptionNumber::BLOCK1));
    assert!(!plain.options.contains(OptionNumber::SIZE1));
    // A body too large for 2^20 blocks of 16 bytes.
    let tiny = Block1SendConfig {
        szx: 0,
        ..Block1SendConfig::default()
    };
    assert!(matches!(
        Block1Send::start(put(&vec![0; 16 << 20 | 1]), tiny),
        Err(TransferError::TooManyBlocks { size: 16 })
    ));
}

#[test]
fn send_keeps_the_token_for_the_first_request_only() {
    let data = body(200);
    let config = Block1SendConfig {
        szx: 2,
        ..Block1SendConfig::default()
    };
    let mut request = put(&data);
    request.token = Token::new(&[4, 2]).unwrap();
    request.mid = 77;
    let (mut send, first) = Block1Send::start(request, config).unwrap();
    assert_eq!((first.token, first.mid), (Token::new(&[4, 2]).unwrap(), 0));
    let mut r = Message::new(MessageType::Ack, Code::CONTINUE);
    block(0, true, 2).write(&mut r.options, OptionNumber::BLOCK1);
    let wrong = send.clone().handle_response(r.clone()).unwrap_err();
    assert!(matches!(wrong, TransferError::TokenMismatch { .. }));
    r.token = first.token;
    let Ok(Block1Step::Send(next)) = send.handle_response(r) else {
        panic!()
    };
    assert!(next.token.is_empty());
    // Any token is taken for a request the message layer tokenised.
    let mut r = Message::new(MessageType::Ack, Code::CONTINUE);
    block(1, true, 2).write(&mut r.options, OptionNumber::BLOCK1);
    r.token = Token::new(&[9]).unwrap();
    assert!(matches!(send.handle_response(r), Ok(Block1Step::Send(_))));
}

#[test]
fn send_goes_on_when_the_server_processes_blocks_as_they_come() {
    let data = body(200);
    let config = Block1SendConfig {
        szx: 2,
        ..Block1SendConfig::default()
    };
    let (mut send, first) = Block1Send::start(put(&data), config).unwrap();
    let mut r = Message::new(MessageType::Ack, Code::CHANGED);
    block_of(&first, OptionNumber::BLOCK1)
        .with_more(false)
        .write(&mut r.options, OptionNumber::BLOCK1);
    let Ok(Block1Step::Send(next)) = send.handle_response(r) else {
        panic!()
    };
    assert_eq!(block_of(&next, OptionNumber::BLOCK1), block(1, true, 2));
    assert_eq!(send.acknowledged(), 64);
}

#[test]
fn a_post_with_large_bodies_both_ways_hands_over_to_a_fetch() {
    let t0 = Instant::now();
    let mut a = Block1Assembler::new(Block1Config::default(), SEED);
    let mut s = Block2Server::new(Block2Config::default(), SEED);
    let up = body(3000);
    let down: Vec<u8> = body(5000).into_iter().rev().collect();
    let mut post = put(&up);
    post.code = Code::POST;
    let (mut send, mut request) = Block1Send::start(post, Block1SendConfig::default()).unwrap();
    let (mut fetch, mut request) = loop {
        let response = match a.handle(t0, addr(1), request) {
            Block1Action::Continue(r) | Block1Action::Reject(r) => r,
            Block1Action::Complete(done) => {
                assert_eq!(done.request.payload, up);
                assert_eq!(
                    s.handle_request(t0, addr(1), &done.request),
                    Block2Lookup::Handle
                );
                let mut r = s.respond(t0, addr(1), &done.request, content(down.clone()));
                done.acknowledge(&mut r);
                r
            }
        };
        match send.handle_response(response).unwrap() {
            Block1Step::Send(r) => request = r,
            Block1Step::Fetch(fetch, r) => break (fetch, r),
            Block1Step::Done(r) => panic!("expected a block-wise response, got {r:?}"),
        }
    };
    // Follow-ups are POSTs with Block2 and no payload, answered from the cache.
    let result = loop {
        assert_eq!(request.code, Code::POST);
        assert!(request.payload.is_empty());
        assert!(!request.options.contains(OptionNumber::BLOCK1));
        let response = match a.handle(t0, addr(1), request.clone()) {
            Block1Action::Complete(done) => {
                expect_respond(s.handle_request(t0, addr(1), &done.request))
            }
            other => panic!("{other:?}"),
        };
        match fetch.handle_response(response).unwrap() {
            Block2Step::Send(r) => request = r,
            Block2Step::Done(r) => break r,
        }
    };
    assert_eq!(result.payload, down);
    assert!(s.is_empty() && a.is_empty());
}

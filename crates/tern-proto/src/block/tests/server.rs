//! Tests of the server-side machines: Block1Assembler and Block2Server.

use super::*;

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

/// A BERT block of `units` 1024-byte units at unit `num` (RFC 8323 §6).
fn bert_block(data: &[u8], num: u32, units: usize) -> Message {
    let start = (num as usize * 1024).min(data.len());
    let end = (start + units * 1024).min(data.len());
    let mut m = Message::new(MessageType::Con, Code::PUT);
    m.set_path("/f");
    block(num, end < data.len(), value::BERT_SZX).write(&mut m.options, OptionNumber::BLOCK1);
    m.payload = data[start..end].to_vec();
    m
}

#[test]
fn bert_blocks_are_assembled_when_enabled() {
    let t0 = Instant::now();
    let config = Block1Config {
        bert: true,
        ..Block1Config::default()
    };
    let mut a = Block1Assembler::new(config, SEED);
    let data = body(10_000);
    // Four units, then four more, then the short rest: acknowledged as BERT throughout.
    let ack = expect_continue(a.handle(t0, addr(1), bert_block(&data, 0, 4)));
    assert!(ack.is_bert() && ack.more() && ack.num() == 0);
    let ack = expect_continue(a.handle(t0, addr(1), bert_block(&data, 4, 4)));
    assert!(ack.is_bert() && ack.num() == 4);
    let Block1Action::Complete(done) = a.handle(t0, addr(1), bert_block(&data, 8, 4)) else {
        panic!("not complete");
    };
    assert_eq!(done.request.payload, data);
    // A non-final BERT block must be whole units.
    let mut m = bert_block(&data, 0, 2);
    m.payload.pop();
    expect_reject(a.handle(t0, addr(1), m), Code::BAD_REQUEST);
    // Without the setting BERT stays refused.
    let mut plain = Block1Assembler::new(Block1Config::default(), SEED);
    expect_reject(
        plain.handle(t0, addr(1), bert_block(&data, 0, 4)),
        Code::BAD_REQUEST,
    );
}

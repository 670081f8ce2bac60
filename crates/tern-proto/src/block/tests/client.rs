//! Tests of the client-side machines, Block2Fetch and Block1Send, alone and against the
//! server-side ones.

use super::*;

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

/// BERT (RFC 8323 §6) end to end: a server allowed 4096 bytes per message sends SZX 7 blocks
/// of four 1024-byte units, and a fetch that accepts BERT asks for the next by unit number
/// and reassembles the body; a fetch that does not accept BERT refuses them.
#[test]
fn bert_blocks_go_by_units_and_reassemble() {
    let t0 = Instant::now();
    let mut s = Block2Server::new(Block2Config::default(), SEED);
    let data = body(20_000);
    let request = get("bert", None);
    let first = s.respond_with(t0, addr(1), &request, content(data.clone()), Some(4096));
    let b = block_of(&first, OptionNumber::BLOCK2);
    assert!(b.is_bert() && b.more() && b.num() == 0, "{b}");
    assert_eq!(first.payload.len(), 4096);
    assert_eq!(first.options.get_uint(OptionNumber::SIZE2), Some(20_000));
    // Without BERT support the fetch refuses SZX 7.
    let mut plain = Block2Fetch::new(&request, 1 << 20);
    assert_eq!(
        plain.handle_response(first.clone()),
        Err(TransferError::Bert(OptionNumber::BLOCK2))
    );
    let mut fetch = Block2Fetch::new(&request, 1 << 20).with_bert(true);
    let mut step = fetch.handle_response(first).unwrap();
    let mut exchanges = 1;
    let whole = loop {
        match step {
            Block2Step::Send(next) => {
                let asked = block_of(&next, OptionNumber::BLOCK2);
                assert!(asked.is_bert());
                assert_eq!(
                    asked.num() as usize,
                    exchanges * 4,
                    "NUM counts 1024-byte units"
                );
                let Block2Lookup::Respond(r) =
                    s.handle_request_with(t0, addr(1), &next, Some(4096))
                else {
                    panic!("later BERT blocks come from the cache")
                };
                exchanges += 1;
                step = fetch.handle_response(r).unwrap();
            }
            Block2Step::Done(m) => break m,
        }
    };
    assert_eq!(whole.payload, data);
    assert_eq!(exchanges, 5, "20,000 bytes in 4096-byte BERT blocks");
    // Over a datagram transport a BERT request is still a 4.00.
    let mut bert_request = get("bert", None);
    block(4, false, 7).write(&mut bert_request.options, OptionNumber::BLOCK2);
    let Block2Lookup::Respond(r) = s.handle_request(t0, addr(1), &bert_request) else {
        panic!()
    };
    assert_eq!(r.code, Code::BAD_REQUEST);
}

//! Message-layer tests: exact scenarios on a virtual clock, and seeded simulations with loss,
//! duplication and reordering.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ConfigError;
use super::*;
use crate::code::Code;
use crate::option::OptionNumber;
use crate::sim::{LinkConfig, World};

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], n))
}

fn endpoint(seed: u8) -> Endpoint {
    Endpoint::new(EndpointConfig::default(), [seed; 32])
}

fn get(path: &str, ty: MessageType) -> Message {
    let mut m = Message::new(ty, Code::GET);
    m.set_path(path);
    m
}

fn content(body: &[u8]) -> Message {
    let mut m = Message::new(MessageType::Ack, Code::CONTENT);
    m.payload = body.to_vec();
    m
}

fn transmits(ep: &mut Endpoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ep.poll_transmit()).collect()
}

fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

/// Delivers everything `from` has queued to `to`.
fn deliver(now: Instant, from: (SocketAddr, &mut Endpoint), to: &mut Endpoint) -> usize {
    let ts = transmits(from.1);
    for t in &ts {
        to.handle(now, from.0, &t.contents);
    }
    ts.len()
}

fn single_request(ep: &mut Endpoint) -> (IncomingId, Message) {
    let evs = events(ep);
    assert_eq!(evs.len(), 1, "{evs:?}");
    match evs.into_iter().next() {
        Some(Event::Request { id, request, .. }) => (id, request),
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn piggybacked_response() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(1), endpoint(2));
    let id = client
        .request(
            t0,
            addr(2),
            get("/a/b", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    assert_eq!(deliver(t0, (addr(1), &mut client), &mut server), 1);
    let (iid, req) = single_request(&mut server);
    assert_eq!(req.path(), "a/b");
    assert_eq!(req.token.len(), 8);
    server.respond(t0, iid, content(b"hi")).unwrap();
    let ts = transmits(&mut server);
    assert_eq!(ts.len(), 1);
    let ack = Message::decode(&ts[0].contents).unwrap();
    assert_eq!(
        (ack.ty, ack.mid, ack.token),
        (MessageType::Ack, req.mid, req.token)
    );
    client.handle(t0, addr(2), &ts[0].contents);
    match events(&mut client).as_slice() {
        [Event::Response { id: rid, response }] => {
            assert_eq!(*rid, id);
            assert_eq!(response.payload, b"hi");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.active_requests(), 0);
    // Nothing left to retransmit.
    client.handle_timeout(t0 + Duration::from_secs(100));
    assert!(transmits(&mut client).is_empty());
}

#[test]
fn con_retransmits_with_exponential_backoff_then_fails() {
    let t0 = Instant::now();
    let mut client = endpoint(3);
    let id = client
        .request(
            t0,
            addr(9),
            get("/x", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let first = transmits(&mut client);
    assert_eq!(first.len(), 1);
    let mut sent_at = vec![t0];
    let mut now = t0;
    while let Some(next) = client.poll_timeout() {
        if next > t0 + Duration::from_secs(200) {
            break;
        }
        now = next;
        client.handle_timeout(now);
        for t in transmits(&mut client) {
            assert_eq!(
                t.contents, first[0].contents,
                "retransmissions are identical"
            );
            sent_at.push(now);
        }
        if !events(&mut client).is_empty() {
            break;
        }
    }
    assert_eq!(sent_at.len(), 5, "1 transmission + MAX_RETRANSMIT 4");
    let gaps: Vec<Duration> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    let initial = gaps[0];
    assert!(initial >= Duration::from_secs(2) && initial <= Duration::from_secs(3));
    for (i, g) in gaps.iter().enumerate() {
        assert_eq!(*g, initial * (1 << i));
    }
    // Gives up one doubled timeout after the last retransmission: 31 × the initial timeout.
    assert_eq!(now - t0, initial * 31);
    assert_eq!(client.stats().retransmissions, 4);
    let _ = id;
}

#[test]
fn failure_event_after_max_retransmit() {
    let t0 = Instant::now();
    let mut client = endpoint(4);
    let id = client
        .request(
            t0,
            addr(9),
            get("/x", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let mut evs = Vec::new();
    while let Some(at) = client
        .poll_timeout()
        .filter(|t| *t <= t0 + Duration::from_secs(200))
    {
        client.handle_timeout(at);
        evs.extend(events(&mut client));
    }
    assert_eq!(
        evs,
        vec![Event::RequestFailed {
            id,
            error: RequestError::Unacknowledged { transmissions: 5 }
        }]
    );
}

#[test]
fn duplicate_con_request_gets_cached_response_and_handler_runs_once() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(5), endpoint(6));
    client
        .request(
            t0,
            addr(2),
            get("/d", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let req = transmits(&mut client).remove(0);
    server.handle(t0, addr(1), &req.contents);
    let (iid, _) = single_request(&mut server);
    server.respond(t0, iid, content(b"once")).unwrap();
    let answer = transmits(&mut server).remove(0);
    // The ACK was lost; the client retransmits; the server answers from its cache.
    server.handle(t0 + Duration::from_secs(2), addr(1), &req.contents);
    assert!(events(&mut server).is_empty(), "handler not invoked again");
    assert_eq!(transmits(&mut server), vec![answer]);
    assert_eq!(server.stats().duplicates, 1);
}

#[test]
fn slow_handler_gets_empty_ack_then_separate_con_response() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(7), endpoint(8));
    let id = client
        .request(
            t0,
            addr(2),
            get("/slow", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let req = transmits(&mut client).remove(0);
    server.handle(t0, addr(1), &req.contents);
    let (iid, request) = single_request(&mut server);
    let t1 = t0 + Duration::from_secs(1);
    server.handle_timeout(t1);
    let ack = transmits(&mut server).remove(0);
    assert_eq!(
        ack.contents,
        wire::empty_message(MessageType::Ack, request.mid).to_vec()
    );
    client.handle(t1, addr(2), &ack.contents);
    assert!(events(&mut client).is_empty());
    // The client stops retransmitting after the empty ACK.
    client.handle_timeout(t0 + Duration::from_secs(10));
    assert!(transmits(&mut client).is_empty());
    // A duplicate of the request now gets the empty ACK again.
    server.handle(t1, addr(1), &req.contents);
    assert_eq!(transmits(&mut server).remove(0).contents, ack.contents);
    // The response goes as a CON with a new message ID and the request's token.
    let t2 = t0 + Duration::from_secs(5);
    server.respond(t2, iid, content(b"late")).unwrap();
    let resp = transmits(&mut server).remove(0);
    let m = Message::decode(&resp.contents).unwrap();
    assert_eq!((m.ty, m.token), (MessageType::Con, request.token));
    assert_ne!(m.mid, request.mid);
    client.handle(t2, addr(2), &resp.contents);
    let client_ack = transmits(&mut client).remove(0);
    assert_eq!(
        client_ack.contents,
        wire::empty_message(MessageType::Ack, m.mid).to_vec()
    );
    assert!(matches!(events(&mut client).as_slice(), [Event::Response { id: r, .. }] if *r == id));
    // The server's CON is acknowledged: no retransmission.
    server.handle(t2, addr(1), &client_ack.contents);
    server.handle_timeout(t2 + Duration::from_secs(60));
    assert!(transmits(&mut server).is_empty());
    // A retransmitted separate response is acknowledged again but not delivered twice.
    client.handle(t2, addr(2), &resp.contents);
    assert_eq!(
        transmits(&mut client).remove(0).contents,
        client_ack.contents
    );
    assert!(events(&mut client).is_empty());
}

#[test]
fn non_request_gets_non_response() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(9), endpoint(10));
    let id = client
        .request(
            t0,
            addr(2),
            get("/n", MessageType::Non),
            RequestParams::default(),
        )
        .unwrap();
    deliver(t0, (addr(1), &mut client), &mut server);
    let (iid, _) = single_request(&mut server);
    server.respond(t0, iid, content(b"non")).unwrap();
    let ts = transmits(&mut server);
    assert_eq!(
        Message::decode(&ts[0].contents).unwrap().ty,
        MessageType::Non
    );
    client.handle(t0, addr(2), &ts[0].contents);
    assert!(
        transmits(&mut client).is_empty(),
        "a NON is never acknowledged"
    );
    assert!(matches!(events(&mut client).as_slice(), [Event::Response { id: r, .. }] if *r == id));
}

#[test]
fn reset_fails_the_request() {
    let t0 = Instant::now();
    let mut client = endpoint(11);
    let id = client
        .request(
            t0,
            addr(2),
            get("/r", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let m = Message::decode(&transmits(&mut client)[0].contents).unwrap();
    client.handle(t0, addr(2), &wire::empty_message(MessageType::Rst, m.mid));
    assert_eq!(
        events(&mut client),
        vec![Event::RequestFailed {
            id,
            error: RequestError::Reset
        }]
    );
    // A RST from another address does not match.
    let id2 = client
        .request(
            t0,
            addr(2),
            get("/r", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let m2 = Message::decode(&transmits(&mut client)[0].contents).unwrap();
    client.handle(t0, addr(3), &wire::empty_message(MessageType::Rst, m2.mid));
    assert!(events(&mut client).is_empty());
    assert!(client.cancel(t0, id2));
}

#[test]
fn format_errors_rst_for_con_and_silence_for_non() {
    let t0 = Instant::now();
    let mut server = endpoint(12);
    // CON GET with a truncated option.
    server.handle(t0, addr(1), &[0x40, 0x01, 0x12, 0x34, 0xb5, b'a']);
    assert_eq!(
        transmits(&mut server)[0].contents,
        vec![0x70, 0x00, 0x12, 0x34]
    );
    // The same as NON: ignored.
    server.handle(t0, addr(1), &[0x50, 0x01, 0x12, 0x35, 0xb5, b'a']);
    assert!(transmits(&mut server).is_empty());
    // Token length 9.
    server.handle(t0, addr(1), &[0x49, 0x01, 0x00, 0x07]);
    assert_eq!(
        transmits(&mut server)[0].contents,
        vec![0x70, 0x00, 0x00, 0x07]
    );
    // Version 2: not even the type is trusted.
    server.handle(t0, addr(1), &[0x80, 0x01, 0x00, 0x07]);
    // Three bytes.
    server.handle(t0, addr(1), &[0x40, 0x01, 0x00]);
    assert!(transmits(&mut server).is_empty());
    // CoAP ping: empty CON → RST.
    server.handle(t0, addr(1), &[0x40, 0x00, 0xab, 0xcd]);
    assert_eq!(
        transmits(&mut server)[0].contents,
        vec![0x70, 0x00, 0xab, 0xcd]
    );
    assert!(events(&mut server).is_empty());
    assert_eq!(server.stats().format_errors, 5);
}

fn request_with(options: &[(u16, &[u8])], ty: MessageType) -> Vec<u8> {
    let mut m = get("/o", ty);
    m.mid = 0x1111;
    m.token = Token::new(&[7]).unwrap();
    for (n, v) in options {
        m.options.push(OptionNumber(*n), v.to_vec());
    }
    m.to_bytes().unwrap()
}

#[test]
fn unrecognized_critical_option_gets_4_02_and_elective_is_ignored() {
    let t0 = Instant::now();
    let mut server = endpoint(13);
    server.handle(
        t0,
        addr(1),
        &request_with(&[(2049, b"x")], MessageType::Con),
    );
    let resp = Message::decode(&transmits(&mut server)[0].contents).unwrap();
    assert_eq!(
        (resp.ty, resp.code, resp.mid),
        (MessageType::Ack, Code::BAD_OPTION, 0x1111)
    );
    assert_eq!(
        String::from_utf8(resp.payload).unwrap(),
        "Unrecognized critical option 2049"
    );
    assert!(events(&mut server).is_empty());
    // NON request: rejected with a RST (§5.4.1, §4.3), not answered.
    let mut non = request_with(&[(2049, b"x")], MessageType::Non);
    non[2] = 0x10;
    server.handle(t0, addr(1), &non);
    assert_eq!(
        transmits(&mut server)[0].contents,
        wire::empty_message(MessageType::Rst, 0x1011).to_vec()
    );
    assert!(events(&mut server).is_empty());
    // Unknown elective option: dropped, request delivered.
    let mut other = request_with(&[(2048, b"x")], MessageType::Con);
    other[3] = 0x12;
    server.handle(t0, addr(1), &other);
    let (_, req) = single_request(&mut server);
    assert!(!req.options.contains(OptionNumber(2048)));
    assert_eq!(req.path(), "o");
}

#[test]
fn repeated_non_repeatable_options_follow_5_4_5() {
    let t0 = Instant::now();
    let mut server = endpoint(14);
    // Uri-Host (critical) twice → 4.02.
    server.handle(
        t0,
        addr(1),
        &request_with(&[(3, b"a"), (3, b"b")], MessageType::Con),
    );
    let resp = Message::decode(&transmits(&mut server)[0].contents).unwrap();
    assert_eq!(resp.code, Code::BAD_OPTION);
    // Max-Age (elective) twice → the second is ignored.
    let mut bytes = request_with(&[(14, &[1]), (14, &[2])], MessageType::Con);
    bytes[3] = 0x22;
    server.handle(t0, addr(1), &bytes);
    let (_, req) = single_request(&mut server);
    assert_eq!(
        req.options
            .get_all(OptionNumber::MAX_AGE)
            .collect::<Vec<_>>(),
        vec![&[1u8][..]]
    );
    // A critical option with a value of the wrong length (If-None-Match with a value) → 4.02.
    let mut bytes = request_with(&[(5, b"z")], MessageType::Con);
    bytes[3] = 0x33;
    server.handle(t0, addr(1), &bytes);
    assert_eq!(
        Message::decode(&transmits(&mut server)[0].contents)
            .unwrap()
            .code,
        Code::BAD_OPTION
    );
}

#[test]
fn response_with_unknown_token_is_reset() {
    let t0 = Instant::now();
    let mut client = endpoint(15);
    let mut m = Message::new(MessageType::Con, Code::CONTENT);
    m.mid = 77;
    m.token = Token::new(&[1, 2, 3]).unwrap();
    client.handle(t0, addr(2), &m.to_bytes().unwrap());
    assert_eq!(transmits(&mut client)[0].contents, vec![0x70, 0, 0, 77]);
    assert!(events(&mut client).is_empty());
}

#[test]
fn nstart_queues_further_requests_to_the_same_peer() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(16), endpoint(17));
    let a = client
        .request(
            t0,
            addr(2),
            get("/1", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let b = client
        .request(
            t0,
            addr(2),
            get("/2", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let _c = client
        .request(
            t0,
            addr(3),
            get("/3", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let ts = transmits(&mut client);
    assert_eq!(ts.len(), 2, "one to each peer");
    let to2: Vec<_> = ts.iter().filter(|t| t.destination == addr(2)).collect();
    server.handle(t0, addr(1), &to2[0].contents);
    let (iid, req) = single_request(&mut server);
    assert_eq!(req.path(), "1");
    server.respond(t0, iid, content(b"1")).unwrap();
    deliver(t0, (addr(2), &mut server), &mut client);
    assert!(matches!(events(&mut client).as_slice(), [Event::Response { id, .. }] if *id == a));
    // The queued request starts now.
    let next = transmits(&mut client);
    assert_eq!(next.len(), 1);
    server.handle(t0, addr(1), &next[0].contents);
    let (_, req) = single_request(&mut server);
    assert_eq!(req.path(), "2");
    let _ = b;
}

#[test]
fn deadline_times_out_and_frees_the_slot() {
    let t0 = Instant::now();
    let mut client = endpoint(18);
    let params = RequestParams {
        timeout: Some(Duration::from_secs(5)),
    };
    let id = client
        .request(t0, addr(2), get("/t", MessageType::Non), params)
        .unwrap();
    let longer = RequestParams {
        timeout: Some(Duration::from_secs(60)),
    };
    let id2 = client
        .request(t0, addr(2), get("/t2", MessageType::Non), longer)
        .unwrap();
    let first = transmits(&mut client);
    assert_eq!(first.len(), 1, "NSTART 1: the second request waits");
    assert_eq!(Message::decode(&first[0].contents).unwrap().path(), "t");
    client.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(
        events(&mut client),
        vec![Event::RequestFailed {
            id,
            error: RequestError::Timeout
        }]
    );
    // The slot is free: the queued request goes out now, and times out on its own deadline.
    let second = transmits(&mut client);
    assert_eq!(second.len(), 1);
    assert_eq!(Message::decode(&second[0].contents).unwrap().path(), "t2");
    client.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(
        events(&mut client),
        vec![Event::RequestFailed {
            id: id2,
            error: RequestError::Timeout
        }]
    );
}

#[test]
fn no_response_option_suppresses_success() {
    let t0 = Instant::now();
    let mut server = endpoint(19);
    server.handle(
        t0,
        addr(1),
        &request_with(&[(258, &[0x02])], MessageType::Con),
    );
    let (iid, req) = single_request(&mut server);
    server.respond(t0, iid, content(b"quiet")).unwrap();
    assert_eq!(
        transmits(&mut server)[0].contents,
        wire::empty_message(MessageType::Ack, req.mid).to_vec()
    );
}

#[test]
fn memory_stays_bounded_under_a_flood() {
    let t0 = Instant::now();
    let config = EndpointConfig {
        dedup_per_peer: 64,
        dedup_total: 2000,
        max_peers: 500,
        max_pending_incoming: 100,
        ..Default::default()
    };
    let mut server = Endpoint::new(config, [20; 32]);
    let mut answered = 0usize;
    for i in 0..100_000u32 {
        let peer = addr(1000 + (i % 3000) as u16);
        let mut m = get(
            "/f",
            if i % 2 == 0 {
                MessageType::Con
            } else {
                MessageType::Non
            },
        );
        m.mid = i as u16;
        server.handle(t0, peer, &m.to_bytes().unwrap());
        // Answer half of the requests; the other half stays pending and hits the cap.
        for ev in events(&mut server) {
            if let Event::Request { id, .. } = ev {
                if i % 4 < 2 {
                    server.respond(t0, id, content(b"x")).unwrap();
                    answered += 1;
                }
            }
        }
        transmits(&mut server);
        assert!(server.dedup_len() <= 2000);
        assert!(server.peer_count() <= 500);
        assert!(server.pending_incoming() <= 100);
        assert!(server.separate_acks.len() <= 2 * 100 + 64);
        assert!(
            server.timer_count() <= 1,
            "only the sweep: no timer per request"
        );
    }
    assert!(answered > 0);
    assert!(
        server.stats().overloaded > 0,
        "pending cap reached and answered 5.03"
    );
}

/// Serves every request with its path as the payload; counts handler invocations per (peer, path).
fn serve_all(ep: &mut Endpoint, now: Instant, seen: &mut HashMap<(SocketAddr, String), u32>) {
    while let Some(ev) = ep.poll_event() {
        if let Event::Request { id, peer, request } = ev {
            *seen.entry((peer, request.path())).or_default() += 1;
            let _ = ep.respond(now, id, content(request.path().as_bytes()));
        }
    }
}

/// Many requests over a lossy, duplicating, reordering link: every request completes exactly
/// once, and every handler runs exactly once per request despite retransmissions and duplicates.
fn lossy_run(seed: u64, requests: usize, ty: MessageType) {
    let t0 = Instant::now();
    let mut world: World<Endpoint> = World::new(seed, t0);
    world.net.set_default_link(LinkConfig {
        loss: 0.2,
        duplicate: 0.1,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(200),
        corrupt: 0.0,
    });
    let cseed = world.net.node_seed();
    let sseed = world.net.node_seed();
    let config = EndpointConfig {
        params: TransmissionParams {
            nstart: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = world.add(addr(1), Endpoint::new(config, cseed));
    let s = world.add(addr(2), Endpoint::new(EndpointConfig::default(), sseed));
    let mut ids = HashMap::new();
    for i in 0..requests {
        let id = world
            .node(c)
            .request(
                t0,
                addr(2),
                get(&format!("/r{i}"), ty),
                RequestParams::default(),
            )
            .unwrap();
        ids.insert(id, format!("r{i}"));
    }
    let mut seen = HashMap::new();
    let mut outcomes: HashMap<RequestId, Result<Vec<u8>, RequestError>> = HashMap::new();
    let limit = t0 + Duration::from_secs(3600);
    world.run_until(limit, |w| {
        let now = w.now();
        serve_all(&mut w.nodes[s].1, now, &mut seen);
        while let Some(ev) = w.nodes[c].1.poll_event() {
            let (id, outcome) = match ev {
                Event::Response { id, response } => (id, Ok(response.payload)),
                Event::RequestFailed { id, error } => (id, Err(error)),
                Event::Request { .. } => continue,
                other => panic!("seed {seed}: no observation, yet {other:?}"),
            };
            assert!(
                outcomes.insert(id, outcome).is_none(),
                "seed {seed}: request ended twice"
            );
        }
        outcomes.len() == requests
    });
    assert_eq!(
        outcomes.len(),
        requests,
        "seed {seed}: not every request ended"
    );
    let mut ok = 0;
    for (id, outcome) in &outcomes {
        match outcome {
            Ok(payload) => {
                assert_eq!(
                    payload,
                    ids[id].as_bytes(),
                    "seed {seed}: response matched to the wrong request"
                );
                ok += 1;
            }
            Err(RequestError::Unacknowledged { .. } | RequestError::Timeout) => {}
            Err(e) => panic!("seed {seed}: unexpected failure {e}"),
        }
    }
    for ((_, path), count) in &seen {
        assert!(
            *count == 1,
            "seed {seed}: handler for {path} ran {count} times"
        );
    }
    if ty == MessageType::Con {
        // With 20% loss each way an exchange fails with probability 0.36^5 ≈ 0.6%: losing more
        // than 3 of 20 would mean retransmission or deduplication is broken.
        assert!(
            ok + 3 >= requests,
            "seed {seed}: only {ok}/{requests} succeeded"
        );
    }
}

#[test]
fn con_requests_survive_loss_duplication_and_reordering() {
    for seed in 0..200 {
        lossy_run(seed, 20, MessageType::Con);
    }
}

#[test]
fn non_requests_end_exactly_once_under_loss() {
    for seed in 1000..1100 {
        lossy_run(seed, 10, MessageType::Non);
    }
}

#[test]
fn corrupted_datagrams_never_break_the_endpoint() {
    let t0 = Instant::now();
    let mut world: World<Endpoint> = World::new(77, t0);
    world.net.set_default_link(LinkConfig {
        corrupt: 0.3,
        ..Default::default()
    });
    let (cs, ss) = (world.net.node_seed(), world.net.node_seed());
    let c = world.add(addr(1), Endpoint::new(EndpointConfig::default(), cs));
    let s = world.add(addr(2), Endpoint::new(EndpointConfig::default(), ss));
    for i in 0..50 {
        world
            .node(c)
            .request(
                t0,
                addr(2),
                get(&format!("/c{i}"), MessageType::Con),
                RequestParams::default(),
            )
            .unwrap();
    }
    let mut ended = 0;
    let mut seen = HashMap::new();
    world.run_until(t0 + Duration::from_secs(600), |w| {
        let now = w.now();
        serve_all(&mut w.nodes[s].1, now, &mut seen);
        while let Some(ev) = w.nodes[c].1.poll_event() {
            if !matches!(ev, Event::Request { .. }) {
                ended += 1;
            }
        }
        ended >= 50
    });
    assert_eq!(ended, 50);
}

#[test]
fn huge_timeouts_and_parameters_never_panic() {
    let t0 = Instant::now();
    let mut client = endpoint(30);
    let params = RequestParams {
        timeout: Some(Duration::MAX),
    };
    client
        .request(t0, addr(2), get("/x", MessageType::Non), params)
        .unwrap();
    client.handle_timeout(t0 + Duration::from_secs(1));
    assert!(client.poll_timeout().is_some());
    let bad = EndpointConfig {
        separate_response_delay: Duration::MAX,
        ..Default::default()
    };
    assert_eq!(bad.validate(), Err(ConfigError::SeparateResponseDelay));
    assert!(EndpointConfig::default().validate().is_ok());
}

#[test]
fn token_exhaustion_is_an_error_not_a_hang() {
    let t0 = Instant::now();
    let config = EndpointConfig {
        token_len: 1,
        ..Default::default()
    };
    let mut client = Endpoint::new(config, [31; 32]);
    let mut exhausted = false;
    for _ in 0..300 {
        match client.request(
            t0,
            addr(2),
            get("/x", MessageType::Con),
            RequestParams::default(),
        ) {
            Ok(_) => {}
            Err(RequestError::TokensExhausted) => {
                exhausted = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(exhausted, "256 one-byte tokens cannot serve 300 requests");
}

#[test]
fn piggybacked_response_with_the_wrong_token_is_ignored() {
    let t0 = Instant::now();
    let mut client = endpoint(32);
    let id = client
        .request(
            t0,
            addr(2),
            get("/x", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let sent = Message::decode(&transmits(&mut client)[0].contents).unwrap();
    let mut wrong = Message::new(MessageType::Ack, Code::CONTENT);
    wrong.mid = sent.mid;
    wrong.token = Token::new(b"other").unwrap();
    client.handle(t0, addr(2), &wrong.to_bytes().unwrap());
    assert!(events(&mut client).is_empty());
    // Retransmission goes on, and the right answer still completes the request.
    client.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(transmits(&mut client).len(), 1);
    let mut right = wrong.clone();
    right.token = sent.token;
    client.handle(
        t0 + Duration::from_secs(3),
        addr(2),
        &right.to_bytes().unwrap(),
    );
    assert!(matches!(events(&mut client).as_slice(), [Event::Response { id: r, .. }] if *r == id));
}

#[test]
fn malformed_acks_and_resets_are_ignored() {
    let t0 = Instant::now();
    let mut client = endpoint(33);
    let id = client
        .request(
            t0,
            addr(2),
            get("/x", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    let sent = Message::decode(&transmits(&mut client)[0].contents).unwrap();
    // A RST with a code and token is a format error (§4.2), not a rejection.
    let mut bad_rst = Message::new(MessageType::Rst, Code::CONTENT);
    bad_rst.mid = sent.mid;
    bad_rst.token = sent.token;
    client.handle(t0, addr(2), &bad_rst.to_bytes().unwrap());
    // An ACK with a request code is a format error too.
    let mut bad_ack = Message::new(MessageType::Ack, Code::GET);
    bad_ack.mid = sent.mid;
    bad_ack.token = sent.token;
    client.handle(t0, addr(2), &bad_ack.to_bytes().unwrap());
    assert!(events(&mut client).is_empty());
    assert!(
        transmits(&mut client).is_empty(),
        "ACK and RST are never answered"
    );
    assert_eq!(client.stats().format_errors, 2);
    // An ACK to a NON request does not count (§4.3).
    let non = client
        .request(
            t0,
            addr(3),
            get("/n", MessageType::Non),
            RequestParams::default(),
        )
        .unwrap();
    let sent_non = Message::decode(&transmits(&mut client)[0].contents).unwrap();
    let mut ack = Message::new(MessageType::Ack, Code::CONTENT);
    ack.mid = sent_non.mid;
    ack.token = sent_non.token;
    client.handle(t0, addr(3), &ack.to_bytes().unwrap());
    assert!(events(&mut client).is_empty());
    assert!(client.cancel(t0, non));
    assert!(client.cancel(t0, id));
}

#[test]
fn timers_end_with_what_they_time() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(34), endpoint(35));
    for i in 0..2000u32 {
        let now = t0 + Duration::from_millis(u64::from(i));
        let ty = if i % 2 == 0 {
            MessageType::Con
        } else {
            MessageType::Non
        };
        let params = RequestParams {
            timeout: Some(Duration::from_secs(5)),
        };
        client.request(now, addr(2), get("/t", ty), params).unwrap();
        deliver(now, (addr(1), &mut client), &mut server);
        while let Some(Event::Request { id, .. }) = server.poll_event() {
            server.respond(now, id, content(b"x")).unwrap();
        }
        deliver(now, (addr(2), &mut server), &mut client);
        assert!(matches!(client.poll_event(), Some(Event::Response { .. })));
    }
    assert_eq!(client.active_requests(), 0);
    assert!(
        client.timer_count() <= 1,
        "{} timers left for no open request",
        client.timer_count()
    );
}

#[test]
fn message_ids_are_not_reused_within_exchange_lifetime() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(36), endpoint(37));
    let mut seen = std::collections::HashSet::new();
    let mut now = t0;
    let mut exhausted_at = None;
    for i in 0..70_000u32 {
        now = t0 + Duration::from_millis(u64::from(i));
        let id = client
            .request(
                now,
                addr(2),
                get("/m", MessageType::Con),
                RequestParams::default(),
            )
            .unwrap();
        let sent = transmits(&mut client);
        if sent.is_empty() {
            match client.poll_event() {
                Some(Event::RequestFailed {
                    id: f,
                    error: RequestError::MessageIdsExhausted,
                }) if f == id => {
                    exhausted_at = Some(i);
                    break;
                }
                other => panic!("request {i}: {other:?}"),
            }
        }
        let m = Message::decode(&sent[0].contents).unwrap();
        assert!(
            seen.insert(m.mid),
            "message ID {} reused after {i} requests",
            m.mid
        );
        server.handle(now, addr(1), &sent[0].contents);
        while let Some(Event::Request { id, .. }) = server.poll_event() {
            server.respond(now, id, content(b"x")).unwrap();
        }
        deliver(now, (addr(2), &mut server), &mut client);
        while client.poll_event().is_some() {}
    }
    // 70 s of 1,000 requests/s: the IDs run out after 63 of the 64 blocks, never reused.
    let at = exhausted_at.expect("IDs must run out at 1,000 requests/s");
    assert!((63 * 1024..=65_536).contains(&at), "ran out after {at}");
    // Once EXCHANGE_LIFETIME has passed, requests flow again.
    let later = now + Duration::from_secs(250);
    client
        .request(
            later,
            addr(2),
            get("/m", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    assert_eq!(transmits(&mut client).len(), 1);
}

#[test]
fn a_full_table_of_busy_peers_refuses_newcomers_cheaply_then_recovers() {
    let t0 = Instant::now();
    let config = EndpointConfig {
        max_peers: 4,
        ..Default::default()
    };
    let mut server = Endpoint::new(config, [38; 32]);
    // Four peers with a request pending each: none can be evicted.
    let mut pending = Vec::new();
    for n in 0..4u16 {
        server.handle(t0, addr(100 + n), &request_with(&[], MessageType::Con));
        let (id, _) = single_request(&mut server);
        pending.push(id);
    }
    server.handle(t0, addr(200), &request_with(&[], MessageType::Con));
    assert!(events(&mut server).is_empty(), "no room for a fifth peer");
    assert_eq!(server.stats().peers_refused, 1);
    // Once their requests are answered the peers are idle and a newcomer gets a place.
    for id in pending {
        server.respond(t0, id, content(b"x")).unwrap();
    }
    let t1 = t0 + Duration::from_millis(150);
    server.handle(t1, addr(201), &request_with(&[], MessageType::Con));
    assert_eq!(single_request(&mut server).1.path(), "o");
}

#[test]
fn options_declared_unimplemented_are_answered_4_02() {
    let t0 = Instant::now();
    // An application that cannot handle blocks says so: a PUT whose first Block1 says more
    // blocks follow is answered 4.02, not handled as whole.
    let refusing = EndpointConfig {
        unimplemented_options: vec![OptionNumber::BLOCK1.0],
        ..Default::default()
    };
    let mut server = Endpoint::new(refusing, [39; 32]);
    server.handle(
        t0,
        addr(1),
        &request_with(&[(27, &[0x0e])], MessageType::Con),
    );
    let resp = Message::decode(&transmits(&mut server)[0].contents).unwrap();
    assert_eq!(resp.code, Code::BAD_OPTION);
    assert_eq!(
        String::from_utf8(resp.payload).unwrap(),
        "Unrecognized critical option 27"
    );
    assert!(events(&mut server).is_empty());
    // By default Block1 reaches the application (the runtime's block-wise layer).
    let mut blocks = Endpoint::new(EndpointConfig::default(), [40; 32]);
    blocks.handle(
        t0,
        addr(1),
        &request_with(&[(27, &[0x0e])], MessageType::Con),
    );
    assert_eq!(
        single_request(&mut blocks)
            .1
            .options
            .get(OptionNumber::BLOCK1),
        Some(&[0x0e][..])
    );
}

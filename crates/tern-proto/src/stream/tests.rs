//! One [`StreamConnection`] driven by hand-made frames: the CSM exchange, requests and
//! responses, observations, signals, limits and time-outs.

use std::time::{Duration, Instant};

use super::frame::{self, FrameDecoder};
use super::signal::{Abort, Csm, Ping, Signal};
use super::*;
use crate::code::{Code, MessageType};
use crate::endpoint::{RequestError, RequestParams};
use crate::message::{Message, Token};
use crate::option::OptionNumber;

pub(super) fn t0() -> Instant {
    // One fixed origin per test process; tests add offsets to it.
    thread_local!(static T0: Instant = Instant::now());
    T0.with(|t| *t)
}

pub(super) fn secs(s: u64) -> Instant {
    t0() + Duration::from_secs(s)
}

/// A connection whose own CSM has been taken from the output.
pub(super) fn fresh(config: StreamConfig) -> StreamConnection {
    let mut c = StreamConnection::new(StreamRole::Client, config, t0(), [7; 32]);
    let first = frames(&mut c);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].code, Code::CSM);
    c
}

/// A connection that has the peer's CSM (Max-Message-Size `peer_max`) and no events.
pub(super) fn open(config: StreamConfig, peer_max: u32) -> StreamConnection {
    let mut c = fresh(config);
    feed(&mut c, 0, &csm(peer_max));
    assert!(matches!(events(&mut c)[..], [StreamEvent::Established(_)]));
    assert_eq!(c.state(), StreamState::Open);
    c
}

pub(super) fn csm(max: u32) -> Message {
    Csm {
        max_message_size: Some(max),
        block_wise_transfer: true,
    }
    .to_message()
}

pub(super) fn feed(c: &mut StreamConnection, at: u64, m: &Message) {
    c.handle_input(secs(at), &frame::to_bytes(m).unwrap());
}

pub(super) fn frames(c: &mut StreamConnection) -> Vec<Message> {
    let mut d = FrameDecoder::new(usize::MAX / 2);
    let mut out = Vec::new();
    while let Some(bytes) = c.poll_output() {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = d.extend(rest);
            rest = &rest[n..];
            while let Some(m) = d.next_frame().unwrap() {
                out.push(m);
            }
        }
    }
    assert_eq!(d.buffered(), 0, "output ends inside a frame");
    out
}

pub(super) fn events(c: &mut StreamConnection) -> Vec<StreamEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

pub(super) fn get(path: &str) -> Message {
    let mut m = Message::new(MessageType::Con, Code::GET);
    m.set_path(path);
    m
}

pub(super) fn response_to(request: &Message, code: Code) -> Message {
    let mut r = Message::new(MessageType::Con, code);
    r.token = request.token;
    r
}

pub(super) fn notification(request: &Message, seq: u32) -> Message {
    let mut r = response_to(request, Code::CONTENT);
    r.options.set_uint(OptionNumber::OBSERVE, seq);
    r
}

pub(super) fn abort_of(m: &Message) -> Abort {
    match Signal::parse(m) {
        Ok(Signal::Abort(a)) => a,
        other => panic!("not an Abort: {other:?}"),
    }
}

pub(super) fn closed_reason(events: &[StreamEvent]) -> &str {
    match events.last() {
        Some(StreamEvent::Closed { reason }) => reason,
        other => panic!("last event is not Closed: {other:?}"),
    }
}

#[test]
fn csm_is_queued_first() {
    let mut c = StreamConnection::new(StreamRole::Server, StreamConfig::default(), t0(), [1; 32]);
    assert_eq!(c.state(), StreamState::AwaitingCsm);
    let out = frames(&mut c);
    assert_eq!(
        Signal::parse(&out[0]),
        Ok(Signal::Csm(Csm {
            max_message_size: Some(1_049_600),
            block_wise_transfer: true
        }))
    );
    let config = StreamConfig {
        block_wise_transfer: false,
        max_message_size: 2000,
        ..StreamConfig::default()
    };
    let mut c = StreamConnection::new(StreamRole::Client, config, t0(), [1; 32]);
    let out = frames(&mut c);
    assert_eq!(
        Signal::parse(&out[0]),
        Ok(Signal::Csm(Csm {
            max_message_size: Some(2000),
            block_wise_transfer: false
        }))
    );
    assert_eq!(c.peer_csm().max_message_size, 1152);
    assert_eq!(c.max_send_size(), 1152);
}

#[test]
fn first_message_must_be_a_csm() {
    let mut c = fresh(StreamConfig::default());
    let id = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    feed(&mut c, 0, &Ping::default().to_ping());
    let out = frames(&mut c);
    assert_eq!(out.len(), 1, "the queued request is never sent");
    assert!(abort_of(&out[0]).diagnostic.contains("expected a CSM"));
    let ev = events(&mut c);
    assert!(matches!(
        &ev[0],
        StreamEvent::RequestFailed { id: i, error: RequestError::ChannelFailed(_) } if *i == id
    ));
    assert!(closed_reason(&ev).contains("expected a CSM as the first message, got 7.02 Ping"));
    assert_eq!(c.state(), StreamState::Closed);
}

#[test]
fn an_abort_may_come_first_and_empty_messages_are_ignored() {
    let mut c = fresh(StreamConfig::default());
    feed(&mut c, 0, &Message::new(MessageType::Con, Code::EMPTY));
    assert!(events(&mut c).is_empty());
    assert_eq!(c.state(), StreamState::AwaitingCsm);
    feed(&mut c, 0, &Abort::new("go away").to_message());
    let ev = events(&mut c);
    assert_eq!(
        closed_reason(&ev),
        "the peer aborted the connection: go away"
    );
    assert!(frames(&mut c).is_empty(), "no Abort answers an Abort");
}

#[test]
fn missing_csm_times_out() {
    let mut c = fresh(StreamConfig::default());
    let id = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    assert_eq!(c.poll_timeout(), Some(secs(10)));
    c.handle_timeout(secs(9));
    assert_eq!(c.state(), StreamState::AwaitingCsm);
    c.handle_timeout(secs(10));
    let out = frames(&mut c);
    assert_eq!(abort_of(&out[0]).diagnostic, "no CSM within 10s");
    let ev = events(&mut c);
    assert!(matches!(&ev[0], StreamEvent::RequestFailed { id: i, .. } if *i == id));
    assert_eq!(closed_reason(&ev), "no CSM within 10s");
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn requests_wait_for_the_csm_and_are_checked_against_its_size() {
    let mut c = fresh(StreamConfig::default());
    let small = c
        .request(t0(), get("small"), RequestParams::default())
        .unwrap();
    let mut big = get("big");
    big.payload = vec![0; 3000];
    let big = c.request(t0(), big, RequestParams::default()).unwrap();
    assert!(frames(&mut c).is_empty(), "nothing before the peer's CSM");
    assert_eq!(c.outstanding_requests(), 2);
    feed(&mut c, 1, &csm(2000));
    let ev = events(&mut c);
    assert_eq!(
        ev[0],
        StreamEvent::Established(PeerCsm {
            max_message_size: 2000,
            block_wise_transfer: true
        })
    );
    match &ev[1] {
        StreamEvent::RequestFailed {
            id,
            error: RequestError::TooLarge { size, max },
        } => {
            assert_eq!(*id, big);
            assert_eq!(*max, 2000);
            assert!(*size > 2000, "{size}");
        }
        other => panic!("{other:?}"),
    }
    let out = frames(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].path(), "small");
    assert_eq!(c.outstanding_requests(), 1);
    // Once open, a request too large fails at once.
    let mut big = get("big");
    big.payload = vec![0; 3000];
    assert!(matches!(
        c.request(secs(1), big, RequestParams::default()),
        Err(RequestError::TooLarge { max: 2000, .. })
    ));
    // A later CSM updates the size.
    feed(
        &mut c,
        2,
        &Csm {
            max_message_size: Some(5000),
            block_wise_transfer: false,
        }
        .to_message(),
    );
    assert!(events(&mut c).is_empty());
    assert_eq!(c.max_send_size(), 5000);
    assert!(
        c.peer_csm().block_wise_transfer,
        "not withdrawn by omission"
    );
    let _ = small;
}

#[test]
fn tokens_are_random_unique_and_limits_hold() {
    let config = StreamConfig {
        max_outstanding_requests: 3,
        ..StreamConfig::default()
    };
    let mut c = fresh(config);
    let a = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    let mut explicit = get("b");
    explicit.token = Token::new(&[9, 9]).unwrap();
    c.request(t0(), explicit.clone(), RequestParams::default())
        .unwrap();
    assert_eq!(
        c.request(t0(), explicit, RequestParams::default()),
        Err(RequestError::TokenInUse(Token::new(&[9, 9]).unwrap()))
    );
    c.request(t0(), get("c"), RequestParams::default()).unwrap();
    assert_eq!(
        c.request(t0(), get("d"), RequestParams::default()),
        Err(RequestError::TooManyRequests(3))
    );
    assert!(matches!(
        c.request(
            t0(),
            Message::new(MessageType::Con, Code::CONTENT),
            RequestParams::default()
        ),
        Err(RequestError::NotARequest(_))
    ));
    c.cancel(a);
    assert_eq!(c.outstanding_requests(), 2);
    feed(&mut c, 0, &csm(1152));
    let out = frames(&mut c);
    assert_eq!(out.len(), 2, "the cancelled request is never sent");
    let tokens: Vec<_> = out.iter().map(|m| m.token).collect();
    assert_eq!(tokens[0], Token::new(&[9, 9]).unwrap());
    assert_eq!(tokens[1].len(), 4);
    assert_ne!(tokens[0], tokens[1]);
}

#[test]
fn responses_match_by_token_and_unknown_ones_are_dropped() {
    let mut c = open(StreamConfig::default(), 1152);
    let id = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    let sent = frames(&mut c).remove(0);
    let mut stray = Message::new(MessageType::Con, Code::CONTENT);
    stray.token = Token::new(&[1, 2, 3, 4, 5]).unwrap();
    feed(&mut c, 1, &stray);
    assert!(events(&mut c).is_empty());
    assert!(frames(&mut c).is_empty(), "no RST on streams");
    let mut resp = response_to(&sent, Code::CONTENT);
    resp.payload = b"hi".to_vec();
    feed(&mut c, 1, &resp);
    assert_eq!(
        events(&mut c),
        vec![StreamEvent::Response {
            id,
            response: resp.clone()
        }]
    );
    assert_eq!(c.outstanding_requests(), 0);
    feed(&mut c, 2, &resp);
    assert!(events(&mut c).is_empty(), "a second response is dropped");
}

#[test]
fn request_deadlines() {
    let mut c = open(StreamConfig::default(), 1152);
    let short = c
        .request(
            t0(),
            get("a"),
            RequestParams {
                timeout: Some(Duration::from_secs(5)),
            },
        )
        .unwrap();
    let long = c.request(t0(), get("b"), RequestParams::default()).unwrap();
    assert_eq!(c.poll_timeout(), Some(secs(5)));
    c.handle_timeout(secs(5));
    assert_eq!(
        events(&mut c),
        vec![StreamEvent::RequestFailed {
            id: short,
            error: RequestError::Timeout
        }]
    );
    assert_eq!(c.poll_timeout(), Some(secs(93)));
    c.handle_timeout(secs(93));
    assert_eq!(
        events(&mut c),
        vec![StreamEvent::RequestFailed {
            id: long,
            error: RequestError::Timeout
        }]
    );
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.state(), StreamState::Open);
}

#[test]
fn observations_stay_open_until_cancelled_or_ended() {
    let mut c = open(StreamConfig::default(), 1152);
    let mut reg = get("time");
    reg.options.set_uint(OptionNumber::OBSERVE, 0);
    let id = c.request(t0(), reg, RequestParams::default()).unwrap();
    let sent = frames(&mut c).remove(0);
    feed(&mut c, 1, &notification(&sent, 1));
    assert!(matches!(&events(&mut c)[..], [StreamEvent::Response { id: i, .. }] if *i == id));
    assert_eq!(
        c.poll_timeout(),
        None,
        "no request deadline once registered"
    );
    c.handle_timeout(secs(1000));
    assert!(events(&mut c).is_empty());
    feed(&mut c, 1001, &notification(&sent, 2));
    assert!(matches!(&events(&mut c)[..], [StreamEvent::Notification { id: i, .. }] if *i == id));
    // A notification without Observe ends it.
    feed(&mut c, 1002, &response_to(&sent, Code::NOT_FOUND));
    assert!(matches!(
        &events(&mut c)[..],
        [StreamEvent::Notification { .. }]
    ));
    assert_eq!(c.outstanding_requests(), 0);
    feed(&mut c, 1003, &notification(&sent, 3));
    assert!(events(&mut c).is_empty());

    // Cancelled: later notifications are dropped.
    let mut reg = get("time");
    reg.options.set_uint(OptionNumber::OBSERVE, 0);
    let id = c
        .request(secs(1004), reg, RequestParams::default())
        .unwrap();
    let sent = frames(&mut c).remove(0);
    feed(&mut c, 1005, &notification(&sent, 1));
    assert_eq!(events(&mut c).len(), 1);
    c.cancel(id);
    feed(&mut c, 1006, &notification(&sent, 2));
    assert!(events(&mut c).is_empty());

    // A 2.05 without Observe to a registration is a plain response.
    let mut reg = get("time");
    reg.options.set_uint(OptionNumber::OBSERVE, 0);
    c.request(secs(1007), reg, RequestParams::default())
        .unwrap();
    let sent = frames(&mut c).remove(0);
    feed(&mut c, 1008, &response_to(&sent, Code::CONTENT));
    assert_eq!(events(&mut c).len(), 1);
    assert_eq!(c.outstanding_requests(), 0);
    // And a GET without Observe 0 never observes.
    c.request(secs(1009), get("x"), RequestParams::default())
        .unwrap();
    let sent = frames(&mut c).remove(0);
    feed(&mut c, 1010, &notification(&sent, 5));
    assert_eq!(c.outstanding_requests(), 0);
}

#[test]
fn deregister_sends_get_observe_1_on_the_registrations_token() {
    let mut c = open(StreamConfig::default(), 1152);
    let mut reg = get("time");
    reg.options.set_uint(OptionNumber::OBSERVE, 0);
    reg.options.set_uint(OptionNumber::ACCEPT, 0);
    let id = c.request(t0(), reg, RequestParams::default()).unwrap();
    let sent = frames(&mut c).remove(0);
    // Not yet established: nothing to deregister.
    assert_eq!(c.deregister(secs(1), id), Err(RequestError::NotObserving));
    feed(&mut c, 1, &notification(&sent, 1));
    assert_eq!(events(&mut c).len(), 1);
    let dereg = c.deregister(secs(2), id).unwrap();
    assert_ne!(dereg, id);
    let out = frames(&mut c).remove(0);
    assert_eq!(out.code, Code::GET);
    assert_eq!(out.token, sent.token);
    assert_eq!(out.options.get_uint(OptionNumber::OBSERVE), Some(1));
    assert_eq!(out.options.get_uint(OptionNumber::ACCEPT), Some(0));
    assert_eq!(out.path_segments().collect::<Vec<_>>(), ["time"]);
    assert_eq!(c.outstanding_requests(), 1, "only the deregistration");
    // The server's answer (without Observe) is the deregistration's response.
    feed(&mut c, 3, &response_to(&sent, Code::CONTENT));
    assert!(matches!(&events(&mut c)[..], [StreamEvent::Response { id: i, .. }] if *i == dereg));
    assert_eq!(c.outstanding_requests(), 0);
    assert_eq!(c.deregister(secs(4), id), Err(RequestError::NotObserving));
    // A plain request cannot be deregistered either.
    let plain = c
        .request(secs(5), get("x"), RequestParams::default())
        .unwrap();
    assert_eq!(
        c.deregister(secs(5), plain),
        Err(RequestError::NotObserving)
    );
}

#[test]
fn a_connection_serving_observers_is_not_idle() {
    let config = StreamConfig {
        idle_timeout: Some(Duration::from_secs(300)),
        ..StreamConfig::default()
    };
    let mut c = open(config, 1152);
    c.set_observers(1);
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(secs(1000));
    assert_eq!(c.state(), StreamState::Open);
    assert!(frames(&mut c).is_empty());
    c.set_observers(0);
    assert_eq!(c.poll_timeout(), Some(secs(300)));
    c.handle_timeout(secs(1000));
    assert_eq!(frames(&mut c)[0].code, Code::RELEASE);
}

#[test]
fn response_with_unknown_critical_option_fails_the_request() {
    let mut c = open(StreamConfig::default(), 1152);
    let id = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    let sent = frames(&mut c).remove(0);
    let mut resp = response_to(&sent, Code::CONTENT);
    resp.options.push(OptionNumber(65001), vec![1]);
    feed(&mut c, 1, &resp);
    assert_eq!(
        events(&mut c),
        vec![StreamEvent::RequestFailed {
            id,
            error: RequestError::BadResponseOption(OptionNumber(65001))
        }]
    );
}

#[test]
fn incoming_requests_and_responses() {
    let mut c = open(StreamConfig::default(), 1152);
    let mut req = get("a");
    req.token = Token::new(&[5, 6]).unwrap();
    req.options.push(OptionNumber(65000), vec![1]); // unknown elective: dropped
    feed(&mut c, 1, &req);
    let ev = events(&mut c);
    let StreamEvent::Request { id, request } = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(request.path(), "a");
    assert!(!request.options.contains(OptionNumber(65000)));
    assert_eq!(c.unanswered_requests(), 1);
    // Not a response code: refused, still pending.
    assert_eq!(
        c.respond(secs(1), *id, Message::new(MessageType::Ack, Code::GET)),
        Err(StreamError::NotAResponse(Code::GET))
    );
    // Too large for the peer: refused, still pending.
    let mut big = Message::new(MessageType::Ack, Code::CONTENT);
    big.payload = vec![0; 1200];
    assert!(matches!(
        c.respond(secs(1), *id, big),
        Err(StreamError::TooLarge { max: 1152, .. })
    ));
    let mut ok = Message::new(MessageType::Ack, Code::CONTENT);
    ok.payload = b"x".to_vec();
    c.respond(secs(1), *id, ok).unwrap();
    let out = frames(&mut c);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].token, req.token);
    assert_eq!(out[0].payload, b"x");
    assert_eq!(
        c.respond(secs(1), *id, Message::new(MessageType::Ack, Code::CONTENT)),
        Err(StreamError::UnknownRequest)
    );
    // Notifications go on a token.
    let mut n = Message::new(MessageType::Con, Code::CONTENT);
    n.options.set_uint(OptionNumber::OBSERVE, 7);
    c.notify(secs(2), Token::new(&[1]).unwrap(), n).unwrap();
    assert_eq!(frames(&mut c)[0].token, Token::new(&[1]).unwrap());
}

#[test]
fn bad_options_and_overload_are_answered_by_the_connection() {
    let config = StreamConfig {
        max_unanswered_requests: 1,
        ..StreamConfig::default()
    };
    let mut c = open(config, 1152);
    let mut bad = get("a");
    bad.token = Token::new(&[1]).unwrap();
    bad.options.push(OptionNumber(65001), Vec::new());
    feed(&mut c, 1, &bad);
    assert!(events(&mut c).is_empty());
    let out = frames(&mut c);
    assert_eq!(out[0].code, Code::BAD_OPTION);
    assert_eq!(out[0].token, bad.token);
    assert_eq!(out[0].payload, b"Unrecognized critical option 65001");
    // A critical registry option with a bad value (Uri-Host of 0 bytes) too.
    let mut bad = get("a");
    bad.options.push(OptionNumber::URI_HOST, Vec::new());
    feed(&mut c, 1, &bad);
    assert_eq!(frames(&mut c)[0].code, Code::BAD_OPTION);

    feed(&mut c, 1, &get("one"));
    assert_eq!(events(&mut c).len(), 1);
    let mut second = get("two");
    second.token = Token::new(&[2]).unwrap();
    feed(&mut c, 1, &second);
    assert!(events(&mut c).is_empty());
    let out = frames(&mut c);
    assert_eq!(out[0].code, Code::SERVICE_UNAVAILABLE);
    assert_eq!(out[0].token, second.token);
}

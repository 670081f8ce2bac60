//! One [`StreamConnection`] through its life: Ping and Pong, keepalive, Release, Abort,
//! frames too large or malformed, stalls, idle time, end of stream, closing, and the limits
//! on what a peer can make it queue.

use std::time::Duration;

use super::frame;
use super::signal::{self, Abort, Ping, Release, Signal};
use super::tests::*;
use super::*;
use crate::code::{Code, MessageType};
use crate::endpoint::{RequestError, RequestId, RequestParams};
use crate::message::{Message, Token};
use crate::option::OptionNumber;

#[test]
fn pings_and_pongs() {
    let mut c = open(StreamConfig::default(), 1152);
    let mut ping = Ping { custody: true }.to_ping();
    ping.token = Token::new(&[4]).unwrap();
    feed(&mut c, 1, &ping);
    let out = frames(&mut c);
    assert_eq!(out[0].code, Code::PONG);
    assert_eq!(out[0].token, ping.token);
    assert_eq!(
        Signal::parse(&out[0]),
        Ok(Signal::Pong(Ping { custody: true }))
    );
    // An unsolicited Pong is ignored.
    feed(&mut c, 1, &Ping::default().to_pong());
    assert!(events(&mut c).is_empty());

    c.ping(secs(2), false);
    assert_eq!(frames(&mut c)[0].code, Code::PING);
    assert_eq!(c.poll_timeout(), Some(secs(12)));
    feed(&mut c, 3, &Ping::default().to_pong());
    assert_eq!(events(&mut c), vec![StreamEvent::Pong]);
    assert_eq!(c.poll_timeout(), None);

    c.ping(secs(4), false);
    frames(&mut c);
    c.handle_timeout(secs(14));
    assert_eq!(
        abort_of(&frames(&mut c)[0]).diagnostic,
        "no Pong within 10s"
    );
    assert_eq!(closed_reason(&events(&mut c)), "no Pong within 10s");
}

#[test]
fn keepalive_pings_when_quiet() {
    let config = StreamConfig {
        keepalive: Some(Duration::from_secs(30)),
        ..StreamConfig::default()
    };
    let mut c = open(config, 1152);
    assert_eq!(c.poll_timeout(), Some(secs(30)));
    feed(&mut c, 20, &Message::new(MessageType::Con, Code::EMPTY));
    assert_eq!(c.poll_timeout(), Some(secs(50)), "anything received counts");
    c.handle_timeout(secs(50));
    assert_eq!(frames(&mut c)[0].code, Code::PING);
    assert_eq!(c.poll_timeout(), Some(secs(60)), "now the Pong deadline");
    feed(&mut c, 55, &Ping::default().to_pong());
    events(&mut c);
    assert_eq!(c.poll_timeout(), Some(secs(85)));
}

#[test]
fn release_from_the_peer() {
    let mut c = open(StreamConfig::default(), 1152);
    let id = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    let mut reg = get("obs");
    reg.options.set_uint(OptionNumber::OBSERVE, 0);
    let obs = c.request(t0(), reg, RequestParams::default()).unwrap();
    let sent = frames(&mut c);
    feed(&mut c, 1, &notification(&sent[1], 1));
    events(&mut c);
    let release = Release {
        alternative_address: Some("coap+tcp://b.example".into()),
        hold_off: Some(Duration::from_secs(60)),
        diagnostic: String::new(),
    };
    feed(&mut c, 2, &release.to_message());
    let ev = events(&mut c);
    assert_eq!(
        ev[0],
        StreamEvent::Released {
            alternative_address: Some("coap+tcp://b.example".into()),
            hold_off: Some(Duration::from_secs(60)),
        }
    );
    assert!(matches!(
        &ev[1],
        StreamEvent::RequestFailed { id: i, error: RequestError::ChannelFailed(_) } if *i == obs
    ));
    assert_eq!(c.state(), StreamState::Releasing);
    match c.request(secs(2), get("new"), RequestParams::default()) {
        Err(RequestError::ChannelFailed(text)) => assert!(text.contains("released")),
        other => panic!("{other:?}"),
    }
    // The outstanding request may finish; then the connection closes.
    feed(&mut c, 3, &response_to(&sent[0], Code::CONTENT));
    let ev = events(&mut c);
    assert!(matches!(&ev[0], StreamEvent::Response { id: i, .. } if *i == id));
    assert_eq!(closed_reason(&ev), "the connection was released");
    assert_eq!(c.state(), StreamState::Closed);
}

#[test]
fn local_release_waits_for_incoming_requests_too() {
    let mut c = open(StreamConfig::default(), 1152);
    feed(&mut c, 1, &get("a"));
    let StreamEvent::Request { id, .. } = events(&mut c).remove(0) else {
        panic!()
    };
    c.release(secs(2), None, Some(Duration::from_secs(5)));
    let out = frames(&mut c);
    match Signal::parse(&out[0]) {
        Ok(Signal::Release(r)) => assert_eq!(r.hold_off, Some(Duration::from_secs(5))),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.state(), StreamState::Releasing);
    c.release(secs(2), None, None);
    assert!(frames(&mut c).is_empty(), "Release is sent once");
    c.respond(secs(3), id, Message::new(MessageType::Ack, Code::CONTENT))
        .unwrap();
    assert_eq!(
        closed_reason(&events(&mut c)),
        "the connection was released"
    );
    // With nothing outstanding, releasing closes at once.
    let mut c = open(StreamConfig::default(), 1152);
    c.release(secs(1), None, None);
    assert_eq!(c.state(), StreamState::Closed);
    assert_eq!(frames(&mut c)[0].code, Code::RELEASE);
}

#[test]
fn abort_both_ways() {
    let mut c = open(StreamConfig::default(), 1152);
    let a = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    let b = c.request(t0(), get("b"), RequestParams::default()).unwrap();
    frames(&mut c);
    feed(&mut c, 1, &Abort::new("shutting down").to_message());
    let want = RequestError::ChannelFailed("the peer aborted the connection: shutting down".into());
    assert_eq!(
        events(&mut c),
        vec![
            StreamEvent::RequestFailed {
                id: a,
                error: want.clone()
            },
            StreamEvent::RequestFailed { id: b, error: want },
            StreamEvent::Closed {
                reason: "the peer aborted the connection: shutting down".into()
            },
        ]
    );

    let mut c = open(StreamConfig::default(), 1152);
    c.abort(secs(1), "bye");
    assert_eq!(abort_of(&frames(&mut c)[0]).diagnostic, "bye");
    assert_eq!(closed_reason(&events(&mut c)), "bye");
    c.abort(secs(1), "again");
    assert!(frames(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
}

#[test]
fn oversized_and_malformed_frames_abort() {
    let config = StreamConfig {
        max_message_size: 1000,
        ..StreamConfig::default()
    };
    let mut c = open(config.clone(), 1152);
    let id = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    frames(&mut c);
    // Only the header of a 2000-byte frame: refused before the rest is buffered.
    let mut big = Message::new(MessageType::Con, Code::CONTENT);
    big.payload = vec![0; 2000];
    let bytes = frame::to_bytes(&big).unwrap();
    c.handle_input(secs(1), &bytes[..4]);
    let out = frames(&mut c);
    assert_eq!(
        abort_of(&out[0]).diagnostic,
        "message of 2005 bytes exceeds Max-Message-Size 1000"
    );
    let ev = events(&mut c);
    assert!(matches!(&ev[0], StreamEvent::RequestFailed { id: i, .. } if *i == id));
    assert_eq!(
        closed_reason(&ev),
        "message of 2005 bytes exceeds Max-Message-Size 1000"
    );

    let mut c = open(config, 1152);
    c.handle_input(secs(1), &[0x10, 0x45, 0xff]);
    assert_eq!(
        abort_of(&frames(&mut c)[0]).diagnostic,
        "payload marker with an empty payload"
    );
    assert_eq!(c.state(), StreamState::Closed);
}

#[test]
fn bad_signals_abort() {
    let mut c = fresh(StreamConfig::default());
    let mut m = csm(1152);
    m.options.push(OptionNumber(7), Vec::new());
    feed(&mut c, 0, &m);
    let a = abort_of(&frames(&mut c)[0]);
    assert_eq!(a.bad_csm_option, Some(7));
    assert_eq!(a.diagnostic, "unknown critical CSM option 7");
    assert_eq!(c.state(), StreamState::Closed);

    let mut c = open(StreamConfig::default(), 1152);
    let mut m = Ping::default().to_ping();
    m.options.push(OptionNumber(3), Vec::new());
    feed(&mut c, 0, &m);
    let a = abort_of(&frames(&mut c)[0]);
    assert_eq!(a.bad_csm_option, None);
    assert!(
        a.diagnostic.contains("unknown critical option 3"),
        "{}",
        a.diagnostic
    );

    let mut c = open(StreamConfig::default(), 1152);
    feed(&mut c, 0, &Message::new(MessageType::Con, Code(0xe9)));
    assert_eq!(
        abort_of(&frames(&mut c)[0]).diagnostic,
        "unknown signaling code 7.09"
    );
}

#[test]
fn stalled_frames_abort() {
    let mut c = open(StreamConfig::default(), 1152);
    let bytes = frame::to_bytes(&get("abc")).unwrap();
    c.handle_input(secs(1), &bytes[..2]);
    assert_eq!(c.buffered_input(), 2);
    assert_eq!(c.poll_timeout(), Some(secs(31)));
    c.handle_input(secs(20), &bytes[2..3]);
    assert_eq!(
        c.poll_timeout(),
        Some(secs(31)),
        "counted from the frame's start"
    );
    c.handle_input(secs(21), &bytes[3..]);
    assert_eq!(c.poll_timeout(), None);
    events(&mut c);
    c.handle_input(secs(22), &bytes[..1]);
    c.handle_timeout(secs(52));
    assert_eq!(
        abort_of(&frames(&mut c)[0]).diagnostic,
        "a frame was not completed within 30s"
    );
}

#[test]
fn idle_connections_are_released() {
    let config = StreamConfig {
        idle_timeout: Some(Duration::from_secs(300)),
        ..StreamConfig::default()
    };
    let mut c = open(config, 1152);
    let id = c
        .request(secs(10), get("a"), RequestParams::default())
        .unwrap();
    let sent = frames(&mut c).remove(0);
    assert_eq!(
        c.poll_timeout(),
        Some(secs(103)),
        "only the request deadline"
    );
    feed(&mut c, 50, &response_to(&sent, Code::CONTENT));
    assert!(matches!(&events(&mut c)[..], [StreamEvent::Response { id: i, .. }] if *i == id));
    assert_eq!(c.poll_timeout(), Some(secs(350)));
    c.handle_timeout(secs(349));
    assert_eq!(c.state(), StreamState::Open);
    c.handle_timeout(secs(350));
    assert_eq!(frames(&mut c)[0].code, Code::RELEASE);
    assert_eq!(
        closed_reason(&events(&mut c)),
        "the connection was released"
    );
}

#[test]
fn end_of_stream_and_after_closing() {
    let mut c = open(StreamConfig::default(), 1152);
    let id = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    frames(&mut c);
    c.handle_eof(secs(1));
    let ev = events(&mut c);
    assert_eq!(
        ev,
        vec![
            StreamEvent::RequestFailed {
                id,
                error: RequestError::ChannelFailed("the peer closed the stream".into())
            },
            StreamEvent::Closed {
                reason: "the peer closed the stream".into()
            },
        ]
    );
    // Nothing more is accepted.
    feed(&mut c, 2, &get("b"));
    c.handle_eof(secs(2));
    c.handle_timeout(secs(1000));
    c.ping(secs(2), false);
    c.release(secs(2), None, None);
    c.close(secs(2), "again");
    assert!(events(&mut c).is_empty());
    assert!(frames(&mut c).is_empty());
    assert!(matches!(
        c.request(secs(2), get("c"), RequestParams::default()),
        Err(RequestError::ChannelFailed(_))
    ));
    assert_eq!(c.poll_timeout(), None);
    assert!(!c.input_buffer(100).is_empty());
    c.commit_input(secs(3), 100);
    assert!(events(&mut c).is_empty());
}

#[test]
fn close_keeps_queued_output_and_fails_requests() {
    let mut c = open(StreamConfig::default(), 1152);
    let id = c.request(t0(), get("a"), RequestParams::default()).unwrap();
    c.release(secs(1), None, None);
    c.close(secs(1), "shutdown");
    let out = frames(&mut c);
    assert_eq!(out.len(), 2, "the request and the Release stay queued");
    let ev = events(&mut c);
    assert_eq!(
        ev,
        vec![
            StreamEvent::RequestFailed {
                id,
                error: RequestError::ChannelFailed("shutdown".into())
            },
            StreamEvent::Closed {
                reason: "shutdown".into()
            },
        ]
    );
}

#[test]
fn a_peer_that_does_not_read_is_cut_off() {
    let config = StreamConfig {
        max_queued_output: 100,
        ..StreamConfig::default()
    };
    let mut c = open(config, 1152);
    let ping = frame::to_bytes(&Ping::default().to_ping()).unwrap();
    for _ in 0..200 {
        c.handle_input(secs(1), &ping);
    }
    assert_eq!(c.state(), StreamState::Closed);
    assert!(c.output_len() < 200);
    assert!(closed_reason(&events(&mut c)).contains("the peer is not reading"));
}

#[test]
fn reads_straight_into_the_input_buffer() {
    let mut c = fresh(StreamConfig {
        max_message_size: 200,
        ..StreamConfig::default()
    });
    let mut stream = frame::to_bytes(&csm(1152)).unwrap();
    for i in 0..40u8 {
        let mut m = get("x");
        m.token = Token::new(&[i]).unwrap();
        frame::encode(&m, &mut stream).unwrap();
    }
    let mut rest = &stream[..];
    let mut requests = 0;
    while !rest.is_empty() {
        let buf = c.input_buffer(16 * 1024);
        assert!(!buf.is_empty() && buf.len() <= 200 + frame::MAX_HEADER_LEN);
        let n = buf.len().min(rest.len()).min(37);
        buf[..n].copy_from_slice(&rest[..n]);
        c.commit_input(secs(1), n);
        rest = &rest[n..];
        requests += events(&mut c)
            .iter()
            .filter(|e| matches!(e, StreamEvent::Request { .. }))
            .count();
    }
    assert_eq!(requests, 40);
    assert_eq!(c.state(), StreamState::Open);
}

#[test]
fn defaults() {
    let d = StreamConfig::default();
    assert_eq!(d.max_message_size, 1_049_600);
    assert!(d.block_wise_transfer);
    assert_eq!(d.csm_timeout, Duration::from_secs(10));
    assert_eq!(d.keepalive, None);
    assert_eq!(d.pong_timeout, Duration::from_secs(10));
    assert_eq!(d.request_timeout, Duration::from_secs(93));
    assert_eq!(d.stall_timeout, Duration::from_secs(30));
    assert_eq!(d.idle_timeout, None);
    assert_eq!(d.max_outstanding_requests, 1024);
    assert_eq!(d.max_unanswered_requests, 1024);
    assert_eq!(d.token_len, 4);
    assert_eq!(signal::DEFAULT_MAX_MESSAGE_SIZE, 1152);
    let _ = RequestId(0);
}

//! Notifications at the message layer, server side (RFC 7641 §3.6, §4.5): acknowledgements,
//! resets, time-outs and one CON in flight per observer, on a virtual clock.

use std::time::{Duration, Instant};

use super::tests_observe::{
    addr, content, decode, endpoint, events, observe_of, transmits, CLIENT,
};
use super::*;
use crate::code::Code;

/// Drives `ep`'s timers up to `until`, returning (time, datagram) for each transmission.
fn run_timers(ep: &mut Endpoint, until: Instant) -> Vec<(Instant, Message)> {
    let mut sent = Vec::new();
    while let Some(at) = ep.poll_timeout().filter(|t| *t <= until) {
        ep.handle_timeout(at);
        sent.extend(transmits(ep).iter().map(|t| (at, decode(t))));
    }
    sent
}

#[test]
fn an_unacknowledged_con_notification_fails_after_its_retransmissions() {
    let t0 = Instant::now();
    let mut server = endpoint(15);
    let token = Token::new(b"obs").unwrap();
    let nid = server
        .notify(t0, addr(CLIENT), token, content(Some(1), None, b"x"), true)
        .unwrap();
    let first = transmits(&mut server);
    assert_eq!(first.len(), 1);
    let m = decode(&first[0]);
    assert_eq!((m.ty, m.token), (MessageType::Con, token));
    let retransmissions = run_timers(&mut server, t0 + Duration::from_secs(300));
    assert_eq!(retransmissions.len(), 4, "MAX_RETRANSMIT");
    assert!(retransmissions.iter().all(|(_, r)| r.mid == m.mid));
    assert_eq!(
        events(&mut server),
        vec![Event::NotificationFailed {
            id: nid,
            reason: NotificationFailure::Timeout
        }]
    );
    assert_eq!(server.notifications_in_flight(), 0);
    assert!(server.timer_count() <= 1, "only the sweep");
}

#[test]
fn a_rst_to_a_non_notification_counts_within_the_window_only() {
    let t0 = Instant::now();
    let mut server = endpoint(16);
    let token = Token::new(b"obs").unwrap();
    let window = server.config().notification_reset_window;
    let a = server
        .notify(t0, addr(CLIENT), token, content(Some(1), None, b""), false)
        .unwrap();
    let b = server
        .notify(t0, addr(CLIENT), token, content(Some(2), None, b""), false)
        .unwrap();
    let sent: Vec<Message> = transmits(&mut server).iter().map(decode).collect();
    assert_eq!(
        sent.len(),
        2,
        "NON notifications do not wait for each other"
    );
    let t1 = t0 + window / 2;
    server.handle(
        t1,
        addr(CLIENT),
        &wire::empty_message(MessageType::Rst, sent[0].mid),
    );
    assert_eq!(
        events(&mut server),
        vec![Event::NotificationFailed {
            id: a,
            reason: NotificationFailure::Reset
        }]
    );
    // Past the window, a RST for the other one is not matched.
    server.handle_timeout(t0 + window);
    server.handle(
        t0 + window,
        addr(CLIENT),
        &wire::empty_message(MessageType::Rst, sent[1].mid),
    );
    assert!(events(&mut server).is_empty(), "{b:?} forgotten");
    assert!(server.non_notifications.is_empty());
    assert!(server.peers[&addr(CLIENT)].is_idle());
}

#[test]
fn a_newer_con_notification_takes_over_the_one_in_flight() {
    let t0 = Instant::now();
    let mut server = endpoint(17);
    let token = Token::new(b"obs").unwrap();
    let notify = |server: &mut Endpoint, now: Instant, v: u32, con: bool| {
        server
            .notify(now, addr(CLIENT), token, content(Some(v), None, b""), con)
            .unwrap()
    };
    let a = notify(&mut server, t0, 1, true);
    let first = decode(&transmits(&mut server)[0]);
    // Two newer ones while A is in flight: they wait, and the third replaces the second.
    let _b = notify(&mut server, t0 + Duration::from_millis(10), 2, true);
    let c = notify(&mut server, t0 + Duration::from_millis(20), 3, false);
    assert!(transmits(&mut server).is_empty());
    let sent = run_timers(&mut server, t0 + Duration::from_secs(300));
    // A is never sent again: C goes at A's first time-out, as CON with a new message ID,
    // and is then retransmitted on A's schedule.
    assert_eq!(sent.len(), 4, "1 + MAX_RETRANSMIT transmissions in all");
    assert!(sent
        .iter()
        .all(|(_, m)| observe_of(m) == Some(3) && m.ty == MessageType::Con && m.mid != first.mid));
    assert!(sent.windows(2).all(|w| w[0].1.mid == w[1].1.mid));
    let initial = sent[0].0 - t0;
    let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert_eq!(gaps, vec![initial * 2, initial * 4, initial * 8]);
    // The chain gives up on C; A and B were replaced and report nothing.
    assert_eq!(
        events(&mut server),
        vec![Event::NotificationFailed {
            id: c,
            reason: NotificationFailure::Timeout
        }]
    );
    let _ = a;
}

#[test]
fn an_ack_releases_the_waiting_notification_as_asked() {
    let t0 = Instant::now();
    let mut server = endpoint(18);
    let token = Token::new(b"obs").unwrap();
    let a = server
        .notify(t0, addr(CLIENT), token, content(Some(1), None, b""), true)
        .unwrap();
    let first = decode(&transmits(&mut server)[0]);
    let b = server
        .notify(t0, addr(CLIENT), token, content(Some(2), None, b""), false)
        .unwrap();
    assert!(transmits(&mut server).is_empty());
    server.handle(
        t0,
        addr(CLIENT),
        &wire::empty_message(MessageType::Ack, first.mid),
    );
    assert_eq!(events(&mut server), vec![Event::NotificationAcked(a)]);
    let next = transmits(&mut server);
    assert_eq!(next.len(), 1);
    let m = decode(&next[0]);
    assert_eq!((m.ty, observe_of(&m)), (MessageType::Non, Some(2)));
    assert_eq!(server.notifications_in_flight(), 0);
    // A RST within the window reaches B.
    server.handle(
        t0,
        addr(CLIENT),
        &wire::empty_message(MessageType::Rst, m.mid),
    );
    assert_eq!(
        events(&mut server),
        vec![Event::NotificationFailed {
            id: b,
            reason: NotificationFailure::Reset
        }]
    );
}

#[test]
fn a_rst_fails_the_notification_in_flight_and_the_one_waiting() {
    let t0 = Instant::now();
    let mut server = endpoint(19);
    let token = Token::new(b"obs").unwrap();
    let a = server
        .notify(t0, addr(CLIENT), token, content(Some(1), None, b""), true)
        .unwrap();
    let first = decode(&transmits(&mut server)[0]);
    let b = server
        .notify(t0, addr(CLIENT), token, content(Some(2), None, b""), true)
        .unwrap();
    server.handle(
        t0,
        addr(CLIENT),
        &wire::empty_message(MessageType::Rst, first.mid),
    );
    let reset = NotificationFailure::Reset;
    assert_eq!(
        events(&mut server),
        vec![
            Event::NotificationFailed {
                id: a,
                reason: reset
            },
            Event::NotificationFailed {
                id: b,
                reason: reset
            },
        ]
    );
    assert!(run_timers(&mut server, t0 + Duration::from_secs(300)).is_empty());
}

#[test]
fn a_waiting_notification_fails_with_a_chain_that_ran_out() {
    let t0 = Instant::now();
    let mut server = endpoint(20);
    let token = Token::new(b"obs").unwrap();
    let a = server
        .notify(t0, addr(CLIENT), token, content(Some(1), None, b""), true)
        .unwrap();
    transmits(&mut server);
    // Up to A's last retransmission.
    let (mut retransmitted, mut now) = (0, t0);
    while retransmitted < 4 {
        now = server.poll_timeout().unwrap();
        server.handle_timeout(now);
        retransmitted += transmits(&mut server).len();
    }
    let b = server
        .notify(now, addr(CLIENT), token, content(Some(2), None, b""), true)
        .unwrap();
    let sent = run_timers(&mut server, t0 + Duration::from_secs(300));
    assert!(sent.is_empty(), "B is never sent");
    let timeout = NotificationFailure::Timeout;
    assert_eq!(
        events(&mut server),
        vec![
            Event::NotificationFailed {
                id: a,
                reason: timeout
            },
            Event::NotificationFailed {
                id: b,
                reason: timeout
            },
        ]
    );
}

#[test]
fn notify_refuses_what_is_not_a_response_and_abort_peer_ends_streams() {
    let t0 = Instant::now();
    let mut server = endpoint(21);
    let token = Token::new(b"obs").unwrap();
    let get = Message::new(MessageType::Con, Code::GET);
    assert!(matches!(
        server.notify(t0, addr(CLIENT), token, get, true),
        Err(NotifyError::NotAResponse(_))
    ));
    let a = server
        .notify(t0, addr(CLIENT), token, content(Some(1), None, b""), true)
        .unwrap();
    let b = server
        .notify(t0, addr(CLIENT), token, content(Some(2), None, b""), true)
        .unwrap();
    server
        .notify(
            t0,
            addr(CLIENT),
            Token::new(b"other").unwrap(),
            content(Some(2), None, b""),
            false,
        )
        .unwrap();
    transmits(&mut server);
    server.abort_peer(
        t0,
        addr(CLIENT),
        RequestError::ChannelFailed("closed".into()),
    );
    let aborted = NotificationFailure::Aborted;
    assert_eq!(
        events(&mut server),
        vec![
            Event::NotificationFailed {
                id: a,
                reason: aborted
            },
            Event::NotificationFailed {
                id: b,
                reason: aborted
            },
        ]
    );
    assert!(server.peers[&addr(CLIENT)].is_idle());
    assert!(run_timers(&mut server, t0 + Duration::from_secs(300)).is_empty());
}

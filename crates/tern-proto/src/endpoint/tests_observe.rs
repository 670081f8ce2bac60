//! Observe at the message layer, client side (RFC 7641 §3): exact scenarios between a client
//! and a server endpoint on a virtual clock. The server side is in `tests_notify.rs`; the
//! ordering rule and the registry have their own tests in `observe`; a lossy simulation is in
//! `tests/observe_sim.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::code::Code;
use crate::observe::OBSERVE_MODULUS;
use crate::option::OptionNumber;

pub(super) const CLIENT: u16 = 1;
pub(super) const SERVER: u16 = 2;

pub(super) fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], n))
}

pub(super) fn endpoint(seed: u8) -> Endpoint {
    Endpoint::new(EndpointConfig::default(), [seed; 32])
}

pub(super) fn transmits(ep: &mut Endpoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ep.poll_transmit()).collect()
}

pub(super) fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

pub(super) fn decode(t: &Transmit) -> Message {
    Message::decode(&t.contents).unwrap()
}

/// Delivers everything `from` has queued to `to`; returns what was delivered.
fn deliver(now: Instant, from: (u16, &mut Endpoint), to: &mut Endpoint) -> Vec<Message> {
    let ts = transmits(from.1);
    for t in &ts {
        to.handle(now, addr(from.0), &t.contents);
    }
    ts.iter().map(decode).collect()
}

fn register(path: &str, ty: MessageType) -> Message {
    let mut m = Message::new(ty, Code::GET);
    m.set_path(path);
    m.options.set_uint(OptionNumber::OBSERVE, 0);
    m
}

/// A 2.05 with an Observe value, a Max-Age and a body.
pub(super) fn content(value: Option<u32>, max_age: Option<u32>, body: &[u8]) -> Message {
    let mut m = Message::new(MessageType::Ack, Code::CONTENT);
    if let Some(v) = value {
        m.options.set_uint(OptionNumber::OBSERVE, v);
    }
    if let Some(a) = max_age {
        m.options.set_uint(OptionNumber::MAX_AGE, a);
    }
    m.payload = body.to_vec();
    m
}

pub(super) fn observe_of(m: &Message) -> Option<u32> {
    m.options.get_uint(OptionNumber::OBSERVE)
}

/// A client with an established observation of `/temp` at a server, after a piggybacked first
/// response with Observe `first` and Max-Age 60.
struct Observed {
    t0: Instant,
    client: Endpoint,
    server: Endpoint,
    id: RequestId,
    token: Token,
}

fn observed(seed: u8, first: u32) -> Observed {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(seed), endpoint(seed.wrapping_add(100)));
    let id = client
        .request(
            t0,
            addr(SERVER),
            register("/temp", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    deliver(t0, (CLIENT, &mut client), &mut server);
    let (iid, request) = match events(&mut server).as_slice() {
        [Event::Request { id, request, .. }] => (*id, request.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(observe_of(&request), Some(0));
    server
        .respond(t0, iid, content(Some(first), Some(60), b"first"))
        .unwrap();
    deliver(t0, (SERVER, &mut server), &mut client);
    match events(&mut client).as_slice() {
        [Event::Response { id: r, response }] => {
            assert_eq!(*r, id);
            assert_eq!(observe_of(response), Some(first));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.observations(), 1);
    Observed {
        t0,
        client,
        server,
        id,
        token: request.token,
    }
}

impl Observed {
    /// The server notifies `value`; the client receives it at `now`.
    fn notify(&mut self, now: Instant, value: u32, confirmable: bool) -> NotificationId {
        let n = content(Some(value), Some(600), format!("v{value}").as_bytes());
        let nid = self
            .server
            .notify(now, addr(CLIENT), self.token, n, confirmable)
            .unwrap();
        deliver(now, (SERVER, &mut self.server), &mut self.client);
        nid
    }

    /// The values of the notifications the client delivered.
    fn delivered(&mut self) -> Vec<u32> {
        events(&mut self.client)
            .into_iter()
            .map(|e| match e {
                Event::Notification { id, response } => {
                    assert_eq!(id, self.id);
                    observe_of(&response).unwrap()
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }
}

#[test]
fn a_registration_stays_open_and_notifications_follow() {
    let mut o = observed(1, 5);
    let t1 = o.t0 + Duration::from_secs(1);
    // CON: acknowledged, delivered, and the server hears of the ACK.
    let nid = o.notify(t1, 6, true);
    let acks = deliver(t1, (CLIENT, &mut o.client), &mut o.server);
    assert_eq!(acks.len(), 1);
    assert_eq!((acks[0].ty, acks[0].code), (MessageType::Ack, Code::EMPTY));
    assert_eq!(events(&mut o.server), vec![Event::NotificationAcked(nid)]);
    assert_eq!(o.delivered(), vec![6]);
    // NON: delivered, never acknowledged.
    let sent = {
        let n = content(Some(7), None, b"v7");
        o.server
            .notify(t1, addr(CLIENT), o.token, n, false)
            .unwrap();
        transmits(&mut o.server)
    };
    assert_eq!(decode(&sent[0]).ty, MessageType::Non);
    assert_eq!(decode(&sent[0]).token, o.token);
    o.client.handle(t1, addr(SERVER), &sent[0].contents);
    assert!(transmits(&mut o.client).is_empty());
    assert_eq!(o.delivered(), vec![7]);
    // A duplicate (same message ID) is dropped by deduplication, not by ordering.
    o.client.handle(t1, addr(SERVER), &sent[0].contents);
    assert!(o.delivered().is_empty());
    assert_eq!(o.client.stats().duplicates, 1);
    assert_eq!(o.client.stats().stale_notifications, 0);
    // Notifications from another address are not this observation's: RST.
    o.client.handle(t1, addr(9), &sent[0].contents);
    assert_eq!(
        transmits(&mut o.client)[0].contents,
        wire::empty_message(MessageType::Rst, decode(&sent[0]).mid).to_vec()
    );
    assert_eq!(o.client.observations(), 1);
}

#[test]
fn an_observation_frees_its_nstart_slot_and_outlives_the_request_deadline() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(2), endpoint(3));
    let params = RequestParams {
        timeout: Some(Duration::from_secs(5)),
    };
    let id = client
        .request(
            t0,
            addr(SERVER),
            register("/temp", MessageType::Con),
            params,
        )
        .unwrap();
    let mut plain = Message::new(MessageType::Con, Code::GET);
    plain.set_path("/other");
    let other = client
        .request(t0, addr(SERVER), plain, RequestParams::default())
        .unwrap();
    assert_eq!(deliver(t0, (CLIENT, &mut client), &mut server).len(), 1);
    let Some(Event::Request {
        id: iid, request, ..
    }) = server.poll_event()
    else {
        panic!("no request");
    };
    server
        .respond(t0, iid, content(Some(1), Some(600), b""))
        .unwrap();
    deliver(t0, (SERVER, &mut server), &mut client);
    assert!(matches!(events(&mut client).as_slice(), [Event::Response { id: r, .. }] if *r == id));
    // The queued request goes out as soon as the observation is established.
    let next = transmits(&mut client);
    assert_eq!(next.len(), 1);
    assert_eq!(decode(&next[0]).path(), "other");
    client.cancel(t0, other);
    // Past the 5 s deadline the observation goes on, and notifications still arrive.
    client.handle_timeout(t0 + Duration::from_secs(6));
    assert!(events(&mut client).is_empty());
    let t1 = t0 + Duration::from_secs(30);
    server
        .notify(
            t1,
            addr(CLIENT),
            request.token,
            content(Some(2), None, b""),
            false,
        )
        .unwrap();
    deliver(t1, (SERVER, &mut server), &mut client);
    assert!(
        matches!(events(&mut client).as_slice(), [Event::Notification { id: r, .. }] if *r == id)
    );
}

#[test]
fn stale_notifications_are_dropped_across_the_2_pow_24_wrap() {
    let max = OBSERVE_MODULUS - 1;
    let mut o = observed(4, max - 1);
    let t1 = o.t0 + Duration::from_secs(1);
    for v in [max, 0, max - 1, 1, 0, 2] {
        o.notify(t1, v, false);
    }
    assert_eq!(o.delivered(), vec![max, 0, 1, 2]);
    assert_eq!(o.client.stats().stale_notifications, 2);
    // More than 128 s after the freshest, even an old value is fresh (§3.4).
    let late = t1 + Duration::from_secs(129);
    o.notify(late, 1, true);
    assert_eq!(o.delivered(), vec![1]);
    assert_eq!(
        deliver(late, (CLIENT, &mut o.client), &mut o.server).len(),
        1
    );
    // A stale CON is still acknowledged: the observation exists.
    o.notify(late, 0, true);
    assert_eq!(transmits(&mut o.client).len(), 1, "acknowledged");
    assert!(o.delivered().is_empty());
}

#[test]
fn notifications_for_unknown_tokens_are_reset() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(5), endpoint(6));
    let token = Token::new(b"nobody").unwrap();
    let con = server
        .notify(t0, addr(CLIENT), token, content(Some(3), None, b""), true)
        .unwrap();
    let non = server
        .notify(
            t0,
            addr(CLIENT),
            Token::new(b"gone").unwrap(),
            content(Some(3), None, b""),
            false,
        )
        .unwrap();
    let sent = deliver(t0, (SERVER, &mut server), &mut client);
    let resets = deliver(t0, (CLIENT, &mut client), &mut server);
    assert_eq!(resets.len(), 2);
    for (rst, n) in resets.iter().zip(&sent) {
        assert_eq!((rst.ty, rst.mid), (MessageType::Rst, n.mid));
    }
    assert!(events(&mut client).is_empty());
    // The server is told, for the CON and the NON: remove the observer (§3.6).
    assert_eq!(
        events(&mut server),
        vec![
            Event::NotificationFailed {
                id: con,
                reason: NotificationFailure::Reset
            },
            Event::NotificationFailed {
                id: non,
                reason: NotificationFailure::Reset
            },
        ]
    );
    // Nothing is retransmitted after the RST.
    server.handle_timeout(t0 + Duration::from_secs(100));
    assert!(transmits(&mut server).is_empty());
    assert_eq!(server.notifications_in_flight(), 0);
}

#[test]
fn cancel_is_passive_the_next_notification_is_reset() {
    let mut o = observed(7, 1);
    assert!(o.client.cancel(o.t0, o.id));
    assert_eq!(o.client.active_requests(), 0);
    let t1 = o.t0 + Duration::from_secs(1);
    let nid = o.notify(t1, 2, true);
    assert!(events(&mut o.client).is_empty());
    deliver(t1, (CLIENT, &mut o.client), &mut o.server);
    assert_eq!(
        events(&mut o.server),
        vec![Event::NotificationFailed {
            id: nid,
            reason: NotificationFailure::Reset
        }]
    );
}

#[test]
fn deregister_sends_observe_1_with_the_same_token_and_options() {
    let mut o = observed(8, 1);
    assert_eq!(
        o.client.deregister(o.t0, RequestId(9999)),
        Err(RequestError::NotObserving)
    );
    let t1 = o.t0 + Duration::from_secs(1);
    let d = o.client.deregister(t1, o.id).unwrap();
    assert_ne!(d, o.id);
    assert_eq!(
        o.client.deregister(t1, o.id),
        Err(RequestError::NotObserving)
    );
    let sent = transmits(&mut o.client);
    assert_eq!(sent.len(), 1);
    let m = decode(&sent[0]);
    assert_eq!(
        (m.ty, m.code, m.token, m.path(), observe_of(&m)),
        (MessageType::Con, Code::GET, o.token, "temp".into(), Some(1))
    );
    // A CON notification still on its way is acknowledged but not taken for the answer.
    let nid = o.notify(t1, 2, true);
    assert!(events(&mut o.client).is_empty());
    deliver(t1, (CLIENT, &mut o.client), &mut o.server);
    assert_eq!(events(&mut o.server), vec![Event::NotificationAcked(nid)]);
    // The server answers the deregistration as a plain GET.
    o.server.handle(t1, addr(CLIENT), &sent[0].contents);
    let Some(Event::Request {
        id: iid, request, ..
    }) = o.server.poll_event()
    else {
        panic!("no request");
    };
    assert_eq!(observe_of(&request), Some(1));
    o.server
        .respond(t1, iid, content(None, None, b"bye"))
        .unwrap();
    deliver(t1, (SERVER, &mut o.server), &mut o.client);
    match events(&mut o.client).as_slice() {
        [Event::Response { id, response }] => {
            assert_eq!((*id, response.payload.as_slice()), (d, &b"bye"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(o.client.active_requests(), 0);
}

#[test]
fn an_observation_lapses_after_max_age_plus_slack() {
    let mut o = observed(9, 1);
    let slack = o.client.config().observe_lapse_slack;
    // A notification at 20 s with Max-Age 30 moves the lapse to 50 s + slack.
    let t1 = o.t0 + Duration::from_secs(20);
    let n = content(Some(2), Some(30), b"");
    o.server
        .notify(t1, addr(CLIENT), o.token, n, false)
        .unwrap();
    deliver(t1, (SERVER, &mut o.server), &mut o.client);
    assert_eq!(o.delivered(), vec![2]);
    // The first response's Max-Age (60 s) no longer counts.
    let lapse = t1 + Duration::from_secs(30) + slack;
    o.client.handle_timeout(lapse - Duration::from_millis(1));
    assert!(events(&mut o.client).is_empty());
    o.client.handle_timeout(lapse);
    assert_eq!(
        events(&mut o.client),
        vec![Event::RequestFailed {
            id: o.id,
            error: RequestError::ObservationLapsed
        }]
    );
    // The token is forgotten: a late notification is reset.
    o.notify(lapse, 3, false);
    assert_eq!(decode(&transmits(&mut o.client)[0]).ty, MessageType::Rst);
    assert_eq!(
        o.client.stats().timeouts,
        0,
        "a lapse is not a request time-out"
    );
}

#[test]
fn a_first_response_without_observe_is_a_plain_response() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(10), endpoint(11));
    let id = client
        .request(
            t0,
            addr(SERVER),
            register("/x", MessageType::Non),
            RequestParams::default(),
        )
        .unwrap();
    deliver(t0, (CLIENT, &mut client), &mut server);
    let Some(Event::Request { id: iid, .. }) = server.poll_event() else {
        panic!("no request");
    };
    // §4.1: a server that cannot add the observer answers as to a plain GET.
    server
        .respond(t0, iid, content(None, None, b"once"))
        .unwrap();
    deliver(t0, (SERVER, &mut server), &mut client);
    assert!(matches!(events(&mut client).as_slice(), [Event::Response { id: r, .. }] if *r == id));
    assert_eq!(client.active_requests(), 0);
}

#[test]
fn an_error_notification_ends_the_observation() {
    let mut o = observed(12, 1);
    let t1 = o.t0 + Duration::from_secs(1);
    let mut gone = Message::new(MessageType::Con, Code::NOT_FOUND);
    gone.payload = b"deleted".to_vec();
    o.server
        .notify(t1, addr(CLIENT), o.token, gone, true)
        .unwrap();
    deliver(t1, (SERVER, &mut o.server), &mut o.client);
    match events(&mut o.client).as_slice() {
        [Event::Notification { id, response }] => {
            assert_eq!((*id, response.code), (o.id, Code::NOT_FOUND));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(o.client.active_requests(), 0);
    assert_eq!(
        transmits(&mut o.client).len(),
        1,
        "the CON is still acknowledged"
    );
}

#[test]
fn a_separate_first_response_establishes_the_observation_and_stops_retransmission() {
    let t0 = Instant::now();
    let (mut client, mut server) = (endpoint(13), endpoint(14));
    let id = client
        .request(
            t0,
            addr(SERVER),
            register("/slow", MessageType::Con),
            RequestParams::default(),
        )
        .unwrap();
    deliver(t0, (CLIENT, &mut client), &mut server);
    let Some(Event::Request { id: iid, .. }) = server.poll_event() else {
        panic!("no request");
    };
    // The empty ACK is lost; the separate CON response overtakes it.
    let t1 = t0 + Duration::from_secs(1);
    server.handle_timeout(t1);
    transmits(&mut server);
    server
        .respond(t1, iid, content(Some(4), None, b"late"))
        .unwrap();
    deliver(t1, (SERVER, &mut server), &mut client);
    assert!(matches!(events(&mut client).as_slice(), [Event::Response { id: r, .. }] if *r == id));
    assert_eq!(client.observations(), 1);
    let acks = transmits(&mut client);
    assert_eq!(acks.len(), 1, "only the ACK of the separate response");
    // The registration is not retransmitted.
    client.handle_timeout(t0 + Duration::from_secs(60));
    assert!(transmits(&mut client).is_empty());
}

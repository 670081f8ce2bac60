//! Two [`StreamConnection`]s wired back to back on a virtual clock, the byte stream between
//! them cut at random points and delivered through both input paths (`handle_input` and
//! `input_buffer` + `commit_input`).

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::tests::{events, secs, t0};
use super::*;
use crate::code::{Code, MessageType};
use crate::endpoint::{RequestId, RequestParams};
use crate::message::Message;
use crate::option::OptionNumber;

/// A client and a server and the bytes in flight between them.
struct Pair {
    client: StreamConnection,
    server: StreamConnection,
    now: std::time::Instant,
    rng: ChaCha8Rng,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    client_events: Vec<StreamEvent>,
    server_events: Vec<StreamEvent>,
}

impl Pair {
    fn new(seed: u64, client: StreamConfig, server: StreamConfig) -> Self {
        Pair {
            client: StreamConnection::new(StreamRole::Client, client, t0(), [1; 32]),
            server: StreamConnection::new(StreamRole::Server, server, t0(), [2; 32]),
            now: t0(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            to_server: Vec::new(),
            to_client: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// Delivers a random prefix of `pending` to `to`, in random pieces.
    fn deliver(
        rng: &mut ChaCha8Rng,
        now: std::time::Instant,
        pending: &mut Vec<u8>,
        to: &mut StreamConnection,
    ) {
        if pending.is_empty() {
            return;
        }
        let take = 1 + (rng.next_u32() as usize) % pending.len();
        let mut chunk: Vec<u8> = pending.drain(..take).collect();
        while !chunk.is_empty() {
            let piece = (1 + (rng.next_u32() as usize) % 700).min(chunk.len());
            let bytes: Vec<u8> = chunk.drain(..piece).collect();
            if rng.next_u32() % 2 == 0 {
                to.handle_input(now, &bytes);
            } else {
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let buf = to.input_buffer(rest.len());
                    assert!(!buf.is_empty());
                    let n = buf.len().min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    to.commit_input(now, n);
                    rest = &rest[n..];
                }
            }
        }
    }

    /// Moves bytes both ways until both sides are quiet; the server echoes requests.
    fn run(&mut self) {
        for _ in 0..10_000 {
            while let Some(b) = self.client.poll_output() {
                self.to_server.extend_from_slice(&b);
            }
            while let Some(b) = self.server.poll_output() {
                self.to_client.extend_from_slice(&b);
            }
            if self.to_server.is_empty() && self.to_client.is_empty() {
                return;
            }
            self.now += Duration::from_millis(1 + u64::from(self.rng.next_u32() % 5));
            let now = self.now;
            Self::deliver(&mut self.rng, now, &mut self.to_server, &mut self.server);
            Self::deliver(&mut self.rng, now, &mut self.to_client, &mut self.client);
            for e in events(&mut self.server) {
                if let StreamEvent::Request { id, request } = &e {
                    let mut response = Message::new(MessageType::Con, Code::CONTENT);
                    response.payload = request.payload.clone();
                    if request.options.contains(OptionNumber::OBSERVE) {
                        response.options.set_uint(OptionNumber::OBSERVE, 1);
                    }
                    self.server.respond(now, *id, response).unwrap();
                }
                self.server_events.push(e);
            }
            self.client_events.extend(events(&mut self.client));
        }
        panic!("the pair never went quiet");
    }

    fn responses(&self) -> Vec<(RequestId, Vec<u8>)> {
        self.client_events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Response { id, response } => Some((*id, response.payload.clone())),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn requests_before_and_after_the_csm_exchange() {
    for seed in 0..40 {
        let mut p = Pair::new(seed, StreamConfig::default(), StreamConfig::default());
        let mut want = Vec::new();
        // Queued before the CSMs have crossed.
        for i in 0..5usize {
            let mut m = Message::new(MessageType::Con, Code::POST);
            m.payload = vec![i as u8; i * 100];
            let id = p
                .client
                .request(p.now, m, RequestParams::default())
                .unwrap();
            want.push((id, vec![i as u8; i * 100]));
        }
        p.run();
        assert!(matches!(p.client_events[0], StreamEvent::Established(_)));
        assert!(matches!(p.server_events[0], StreamEvent::Established(_)));
        assert_eq!(p.client.peer_csm().max_message_size, 1_049_600);
        // Now open, with large bodies crossing many reads.
        for i in 0..5usize {
            let mut m = Message::new(MessageType::Con, Code::PUT);
            let len = [0, 13, 300, 70_000, 1_000_000][i];
            m.payload = (0..len).map(|b| (b % 251) as u8).collect();
            let want_payload = m.payload.clone();
            let id = p
                .client
                .request(p.now, m, RequestParams::default())
                .unwrap();
            want.push((id, want_payload));
        }
        p.run();
        let mut got = p.responses();
        got.sort();
        want.sort();
        assert_eq!(got, want, "seed {seed}");
        assert_eq!(p.client.outstanding_requests(), 0);
        assert_eq!(p.server.unanswered_requests(), 0);
        assert_eq!(p.client.state(), StreamState::Open);
    }
}

#[test]
fn ping_observe_and_release_across_the_pair() {
    for seed in 0..20 {
        let mut p = Pair::new(seed, StreamConfig::default(), StreamConfig::default());
        p.run();
        p.client.ping(p.now, true);
        p.run();
        assert!(p.client_events.contains(&StreamEvent::Pong), "seed {seed}");

        let mut reg = Message::new(MessageType::Con, Code::GET);
        reg.options.set_uint(OptionNumber::OBSERVE, 0);
        let obs = p
            .client
            .request(p.now, reg, RequestParams::default())
            .unwrap();
        p.run();
        let token = p
            .server_events
            .iter()
            .find_map(|e| match e {
                StreamEvent::Request { request, .. } => Some(request.token),
                _ => None,
            })
            .unwrap();
        for seq in 2..6 {
            let mut n = Message::new(MessageType::Con, Code::CONTENT);
            n.options.set_uint(OptionNumber::OBSERVE, seq);
            n.payload = vec![seq as u8; 10];
            p.server.notify(p.now, token, n).unwrap();
        }
        p.run();
        let seqs: Vec<u32> = p
            .client_events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Notification { id, response } if *id == obs => {
                    response.options.get_uint(OptionNumber::OBSERVE)
                }
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![2, 3, 4, 5], "in order, seed {seed}");

        // The server releases: the client's observation fails, both sides close.
        p.server.release(p.now, Some("coap+tcp://elsewhere"), None);
        p.run();
        assert!(p.client_events.iter().any(|e| matches!(
            e,
            StreamEvent::Released { alternative_address: Some(a), .. } if a == "coap+tcp://elsewhere"
        )));
        assert!(p.client_events.iter().any(|e| matches!(
            e,
            StreamEvent::RequestFailed { id, .. } if *id == obs
        )));
        assert_eq!(p.client.state(), StreamState::Closed);
        assert_eq!(p.server.state(), StreamState::Closed);
    }
}

#[test]
fn a_small_max_message_size_is_respected_both_ways() {
    let small = StreamConfig {
        max_message_size: 500,
        ..StreamConfig::default()
    };
    let mut p = Pair::new(3, StreamConfig::default(), small);
    p.run();
    assert_eq!(p.client.max_send_size(), 500);
    let mut m = Message::new(MessageType::Con, Code::POST);
    m.payload = vec![1; 600];
    assert!(p
        .client
        .request(p.now, m, RequestParams::default())
        .is_err());
    let mut m = Message::new(MessageType::Con, Code::POST);
    m.payload = vec![1; 400];
    p.client
        .request(p.now, m, RequestParams::default())
        .unwrap();
    p.run();
    assert_eq!(p.responses().len(), 1);
    // Both sides stayed open: nothing over 500 bytes crossed.
    assert_eq!(p.server.state(), StreamState::Open);
}

#[test]
fn keepalive_and_idle_on_a_virtual_clock() {
    let client = StreamConfig {
        keepalive: Some(Duration::from_secs(60)),
        ..StreamConfig::default()
    };
    let server = StreamConfig {
        idle_timeout: Some(Duration::from_secs(300)),
        ..StreamConfig::default()
    };
    let mut p = Pair::new(9, client, server);
    p.run();
    let mut pings = 0;
    // Keepalive Pings are input for the server too, so it never goes idle.
    for minute in 1..=20 {
        p.now = secs(minute * 60 + 1);
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
        pings += usize::from(p.client.output_len() > 0);
        p.run();
    }
    assert!(pings >= 10, "{pings}");
    assert_eq!(p.server.state(), StreamState::Open);
    // Without them the server releases after 300 s.
    let mut p = Pair::new(9, StreamConfig::default(), p.server.config().clone());
    p.run();
    let at = p.server.poll_timeout().unwrap();
    p.server.handle_timeout(at);
    p.run();
    assert!(p
        .client_events
        .iter()
        .any(|e| matches!(e, StreamEvent::Released { .. })));
    assert_eq!(p.client.state(), StreamState::Closed);
}

//! A client and a server channel talking through memory: cookie exchange, PSK handshake,
//! application data both ways, close_notify, a wrong key, and a lost flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_tls::{
    Accept, ChannelEvent, DtlsChannel, DtlsContext, DtlsListener, DtlsSettings, Psk, PskMap,
    TimerPolicy,
};

fn client_ctx(key: &str, timer: TimerPolicy) -> DtlsContext {
    DtlsContext::client(DtlsSettings {
        psk: Some(Psk::new("device-1", key).unwrap()),
        timer,
        ..Default::default()
    })
    .unwrap()
}

fn server_ctx(timer: TimerPolicy) -> DtlsContext {
    let store = PskMap::new();
    store.insert(Psk::new("device-1", "secret-key").unwrap());
    DtlsContext::server(DtlsSettings {
        psk_store: Some(Arc::new(store)),
        identity_hint: Some(b"tern".to_vec()),
        timer,
        ..Default::default()
    })
    .unwrap()
}

const FAST: TimerPolicy = TimerPolicy {
    initial_us: 50_000,
    max_us: 400_000,
};
const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

struct Pair {
    client: DtlsChannel,
    listener: DtlsListener,
    server: Option<DtlsChannel>,
    /// Datagrams the network lost so far, by direction.
    dropped: usize,
}

impl Pair {
    fn new(key: &str) -> Self {
        let now = Instant::now();
        Pair {
            client: DtlsChannel::connect(&client_ctx(key, FAST), now).unwrap(),
            listener: DtlsListener::new(server_ctx(FAST)).unwrap(),
            server: None,
            dropped: 0,
        }
    }

    /// Moves datagrams both ways; `drop_server_flights` server datagrams are lost first.
    fn pump(&mut self, drop_server_flights: &mut usize) -> usize {
        let now = Instant::now();
        let mut moved = 0;
        while let Some(d) = self.client.poll_transmit() {
            moved += 1;
            match &mut self.server {
                Some(s) => s.handle_datagram(now, &d),
                None => match self.listener.accept(now, PEER, &d) {
                    Accept::Reply(hvr) => self.client.handle_datagram(now, &hvr),
                    Accept::Channel(c) => self.server = Some(*c),
                    Accept::Ignore => {}
                },
            }
        }
        if let Some(s) = &mut self.server {
            while let Some(d) = s.poll_transmit() {
                moved += 1;
                if *drop_server_flights > 0 {
                    *drop_server_flights -= 1;
                    self.dropped += 1;
                    continue;
                }
                self.client.handle_datagram(now, &d);
            }
        }
        moved
    }

    fn run(&mut self, mut drop_server: usize, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            let moved = self.pump(&mut drop_server);
            let both_done = self.client.is_established()
                && self
                    .server
                    .as_ref()
                    .is_some_and(DtlsChannel::is_established);
            let failed = !matches!(self.client.state(), tern_tls::ChannelState::Handshaking)
                && !self.client.is_established();
            if both_done || failed {
                return;
            }
            if moved == 0 {
                std::thread::sleep(Duration::from_millis(10));
                let now = Instant::now();
                self.client.handle_timeout(now);
                if let Some(s) = &mut self.server {
                    s.handle_timeout(now);
                }
            }
        }
    }
}

#[test]
fn psk_handshake_with_cookie_then_data_both_ways_and_close_notify() {
    let mut pair = Pair::new("secret-key");
    pair.run(0, Duration::from_secs(5));
    assert!(pair.client.is_established(), "{:?}", pair.client.state());
    let mut server = pair.server.take().unwrap();
    assert!(server.is_established());
    assert_eq!(pair.client.poll_event(), Some(ChannelEvent::Established));
    assert_eq!(server.psk_identity().as_deref(), Some(&b"device-1"[..]));
    assert_eq!(pair.client.cipher(), Some("PSK-AES128-CCM8"));
    let now = Instant::now();
    pair.client.send(b"GET /time").unwrap();
    while let Some(d) = pair.client.poll_transmit() {
        assert!(
            !d.windows(9).any(|w| w == b"GET /time"),
            "application data is encrypted"
        );
        server.handle_datagram(now, &d);
    }
    assert_eq!(server.poll_received().as_deref(), Some(&b"GET /time"[..]));
    server.send(b"2.05").unwrap();
    while let Some(d) = server.poll_transmit() {
        pair.client.handle_datagram(now, &d);
    }
    assert_eq!(pair.client.poll_received().as_deref(), Some(&b"2.05"[..]));
    pair.client.close();
    while let Some(d) = pair.client.poll_transmit() {
        server.handle_datagram(now, &d);
    }
    assert!(matches!(
        server.poll_event(),
        Some(ChannelEvent::Established)
    ));
    assert_eq!(
        server.poll_event(),
        Some(ChannelEvent::AlertReceived(tern_tls::Alert::CLOSE_NOTIFY))
    );
    assert!(
        matches!(server.poll_event(), Some(ChannelEvent::Closed(r)) if r.contains("close_notify"))
    );
}

#[test]
fn wrong_key_fails_the_handshake() {
    let mut pair = Pair::new("not-the-key");
    pair.run(0, Duration::from_secs(5));
    assert!(!pair.client.is_established());
    let failed_somewhere = matches!(
        pair.client.poll_event(),
        Some(ChannelEvent::HandshakeFailed(_))
    ) || pair
        .server
        .as_mut()
        .is_some_and(|s| matches!(s.poll_event(), Some(ChannelEvent::HandshakeFailed(_))));
    assert!(failed_somewhere);
}

#[test]
fn lost_server_flights_are_retransmitted() {
    let mut pair = Pair::new("secret-key");
    // The first two datagrams of the server's flights are lost.
    pair.run(2, Duration::from_secs(10));
    assert_eq!(pair.dropped, 2);
    assert!(pair.client.is_established(), "{:?}", pair.client.state());
    assert!(pair.server.as_ref().unwrap().is_established());
}

#[test]
fn spoofed_client_hellos_open_no_channel() {
    // A ClientHello flood from many addresses: each gets a HelloVerifyRequest, none a channel.
    let client = client_ctx("secret-key", FAST);
    let mut listener = DtlsListener::new(server_ctx(FAST)).unwrap();
    let now = Instant::now();
    let hello = DtlsChannel::connect(&client, now)
        .unwrap()
        .poll_transmit()
        .unwrap();
    for port in 1..=2000u16 {
        let peer = SocketAddr::from(([127, 0, 0, 1], port));
        match listener.accept(now, peer, &hello) {
            Accept::Reply(hvr) => assert_eq!(hvr.get(13), Some(&3), "HelloVerifyRequest"),
            _ => panic!("a ClientHello without a cookie must only get a HelloVerifyRequest"),
        }
    }
    // Garbage and non-handshake records are ignored outright.
    assert!(matches!(
        listener.accept(now, PEER, b"\x17\xfe\xfd garbage"),
        Accept::Ignore
    ));
    assert!(matches!(listener.accept(now, PEER, &[]), Accept::Ignore));
}

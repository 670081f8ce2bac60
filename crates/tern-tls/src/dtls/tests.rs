//! Our record layer against OpenSSL's: one side of each pair may keep OpenSSL's records
//! after the handshake, so each direction is checked against the reference implementation.
use super::*;
use crate::credentials::PskMap;
use std::net::SocketAddr;

const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);
const FAST: TimerPolicy = TimerPolicy {
    initial_us: 50_000,
    max_us: 400_000,
};

fn contexts(ciphers: &str, client_own: bool, server_own: bool) -> (DtlsContext, DtlsContext) {
    let store = PskMap::new();
    store.insert(Psk::new("device-1", "secret-key").unwrap());
    let mut server = DtlsContext::server(DtlsSettings {
        psk_store: Some(Arc::new(store)),
        ciphers: ciphers.into(),
        timer: FAST,
        ..Default::default()
    })
    .unwrap();
    let mut client = DtlsContext::client(DtlsSettings {
        psk: Some(Psk::new("device-1", "secret-key").unwrap()),
        ciphers: ciphers.into(),
        timer: FAST,
        ..Default::default()
    })
    .unwrap();
    client.own_records = client_own;
    server.own_records = server_own;
    (client, server)
}

/// Runs a handshake; `lose` says which server datagrams (by index) the network loses.
fn handshake(
    client_ctx: &DtlsContext,
    server_ctx: &DtlsContext,
    lose: impl Fn(usize, &[u8]) -> bool,
) -> (DtlsChannel, DtlsChannel) {
    let mut listener = DtlsListener::new(server_ctx.clone()).unwrap();
    let mut client = DtlsChannel::connect(client_ctx, Instant::now()).unwrap();
    let mut server: Option<DtlsChannel> = None;
    let mut sent_by_server = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let now = Instant::now();
        let mut moved = 0;
        while let Some(d) = client.poll_transmit() {
            moved += 1;
            match &mut server {
                Some(s) => s.handle_datagram(now, &d),
                None => match listener.accept(now, PEER, &d) {
                    Accept::Reply(r) => client.handle_datagram(now, &r),
                    Accept::Channel(c) => server = Some(*c),
                    Accept::Ignore => {}
                },
            }
        }
        if let Some(s) = &mut server {
            while let Some(d) = s.poll_transmit() {
                moved += 1;
                sent_by_server += 1;
                if !lose(sent_by_server - 1, &d) {
                    client.handle_datagram(now, &d);
                }
            }
            if client.is_established() && s.is_established() {
                break;
            }
        }
        if moved == 0 {
            std::thread::sleep(Duration::from_millis(5));
            client.handle_timeout(Instant::now());
            if let Some(s) = &mut server {
                s.handle_timeout(Instant::now());
            }
        }
    }
    let server = server.expect("the server opened a channel");
    assert!(client.is_established(), "client: {:?}", client.state());
    assert!(server.is_established(), "server: {:?}", server.state());
    (client, server)
}

/// Sends `data` from `a` to `b`; what `b` received.
fn carry(a: &mut DtlsChannel, b: &mut DtlsChannel, data: &[u8]) -> Option<Vec<u8>> {
    a.send(data).unwrap();
    while let Some(d) = a.poll_transmit() {
        assert!(!d.windows(data.len()).any(|w| w == data), "encrypted");
        b.handle_datagram(Instant::now(), &d);
    }
    b.poll_received()
}

fn drain_events(c: &mut DtlsChannel) -> Vec<ChannelEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn own_records_interoperate_with_openssl_records() {
    let suites = [
        ("PSK-AES128-CCM8", "PSK-AES128-CCM8"),
        ("PSK-AES256-CCM8", "PSK-AES256-CCM8"),
        ("PSK-AES128-CCM", "PSK-AES128-CCM"),
        ("PSK-AES128-GCM-SHA256", "PSK-AES128-GCM-SHA256"),
        ("PSK-AES256-GCM-SHA384", "PSK-AES256-GCM-SHA384"),
    ];
    for (ciphers, name) in suites {
        for (client_own, server_own) in [(true, false), (false, true), (true, true)] {
            let case = format!("{ciphers}, client own {client_own}, server own {server_own}");
            let (cc, sc) = contexts(ciphers, client_own, server_own);
            let (mut client, mut server) = handshake(&cc, &sc, |_, _| false);
            assert_eq!(client.owns_records(), client_own, "{case}");
            assert_eq!(server.owns_records(), server_own, "{case}");
            assert_eq!(server.cipher(), Some(name), "{case}");
            assert_eq!(client.cipher(), Some(name), "{case}");
            assert_eq!(
                server.psk_identity().as_deref(),
                Some(&b"device-1"[..]),
                "{case}"
            );
            assert_eq!(client.psk_identity().as_deref(), Some(&b"device-1"[..]));
            for i in 0..5u8 {
                let up = [b'u', i].repeat(40 * usize::from(i) + 1);
                assert_eq!(carry(&mut client, &mut server, &up), Some(up), "{case}");
                let down = [b'd', i].repeat(300 * usize::from(i) + 1);
                assert_eq!(carry(&mut server, &mut client, &down), Some(down), "{case}");
            }
            // A full-size record both ways.
            let big = vec![7u8; record::MAX_PLAINTEXT];
            assert_eq!(
                carry(&mut client, &mut server, &big).map(|b| b.len()),
                Some(big.len())
            );
            assert_eq!(
                carry(&mut server, &mut client, &big).map(|b| b.len()),
                Some(big.len())
            );
            // close_notify from the server.
            drain_events(&mut client);
            server.close();
            while let Some(d) = server.poll_transmit() {
                client.handle_datagram(Instant::now(), &d);
            }
            let events = drain_events(&mut client);
            assert_eq!(
                events[0],
                ChannelEvent::AlertReceived(Alert::CLOSE_NOTIFY),
                "{case}: {events:?}"
            );
            assert!(
                matches!(&events[1], ChannelEvent::Closed(r) if r.contains("close_notify")),
                "{case}: {events:?}"
            );
        }
    }
}

#[test]
fn idle_established_channel_holds_no_ssl_and_still_works() {
    let (cc, sc) = contexts(DEFAULT_CIPHERS, true, true);
    let (mut client, mut server) = handshake(&cc, &sc, |_, _| false);
    // The SSL objects are gone; what the layer asks for is still there.
    assert!(client.owns_records() && server.owns_records());
    assert_eq!(server.psk_identity().as_deref(), Some(&b"device-1"[..]));
    assert_eq!(server.peer_certificate_names(), None);
    assert_eq!(server.cipher(), Some("PSK-AES128-CCM8"));
    assert_eq!(server.poll_timeout(), None, "no timer once established");
    // Idle, then traffic again both ways, then close_notify from the client.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        carry(&mut client, &mut server, b"GET /a"),
        Some(b"GET /a".to_vec())
    );
    assert_eq!(
        carry(&mut server, &mut client, b"2.05 a"),
        Some(b"2.05 a".to_vec())
    );
    client.close();
    assert!(matches!(client.state(), ChannelState::Closed(_)));
    while let Some(d) = client.poll_transmit() {
        server.handle_datagram(Instant::now(), &d);
    }
    let events = drain_events(&mut server);
    assert!(
        events.contains(&ChannelEvent::AlertReceived(Alert::CLOSE_NOTIFY)),
        "{events:?}"
    );
    assert!(matches!(server.state(), ChannelState::Closed(r) if r.contains("close_notify")));
    assert!(server.send(b"late").is_err());
}

#[test]
fn replayed_and_forged_records_are_dropped() {
    let (cc, sc) = contexts(DEFAULT_CIPHERS, true, true);
    let (mut client, mut server) = handshake(&cc, &sc, |_, _| false);
    client.send(b"once").unwrap();
    let datagram = client.poll_transmit().unwrap();
    let now = Instant::now();
    server.handle_datagram(now, &datagram);
    server.handle_datagram(now, &datagram);
    assert_eq!(server.poll_received(), Some(b"once".to_vec()));
    assert_eq!(server.poll_received(), None, "the replay was dropped");
    // A flipped bit, and a forged record with a far sequence number: dropped, and the
    // window is not moved by what does not authenticate.
    client.send(b"twice").unwrap();
    let mut tampered = client.poll_transmit().unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    server.handle_datagram(now, &tampered);
    let mut forged = tampered.clone();
    forged[5..11].copy_from_slice(&[0xff; 6]);
    server.handle_datagram(now, &forged);
    assert_eq!(server.poll_received(), None);
    assert!(server.is_established());
    assert_eq!(
        carry(&mut client, &mut server, b"next"),
        Some(b"next".to_vec())
    );
    // Records that come out of order within the window are taken.
    client.send(b"first").unwrap();
    let first = client.poll_transmit().unwrap();
    client.send(b"second").unwrap();
    let second = client.poll_transmit().unwrap();
    server.handle_datagram(now, &second);
    server.handle_datagram(now, &first);
    assert_eq!(server.poll_received(), Some(b"second".to_vec()));
    assert_eq!(server.poll_received(), Some(b"first".to_vec()));
    // The handshake's own records (the client's Finished) count as seen.
    assert!(server.is_established());
}

#[test]
fn a_lost_last_flight_is_resent_when_the_client_repeats_its_finished() {
    // The server's last flight (ChangeCipherSpec and Finished, in the same datagram or
    // two) is lost once: the server is established and owns its records; the client resends
    // its last flight on its timer, and the server answers with its last flight again.
    for (client_own, server_own) in [(true, true), (false, true)] {
        let (cc, sc) = contexts(DEFAULT_CIPHERS, client_own, server_own);
        let finished_seen = std::cell::Cell::new(0usize);
        let (mut client, mut server) = handshake(&cc, &sc, |_, d| {
            // The server's flight with an epoch-1 record: lose it the first time.
            let has_epoch1 = record::records(d).any(|(h, _)| h.epoch == 1);
            if has_epoch1 {
                finished_seen.set(finished_seen.get() + 1);
                return finished_seen.get() == 1;
            }
            false
        });
        assert!(finished_seen.get() >= 2, "the last flight was sent again");
        assert!(server.owns_records());
        assert_eq!(carry(&mut client, &mut server, b"up"), Some(b"up".to_vec()));
        assert_eq!(
            carry(&mut server, &mut client, b"down"),
            Some(b"down".to_vec())
        );
    }
}

#[test]
fn a_fatal_alert_closes_an_own_records_channel() {
    let (cc, sc) = contexts(DEFAULT_CIPHERS, true, true);
    let (mut client, mut server) = handshake(&cc, &sc, |_, _| false);
    let Engine::Own(own) = &mut client.engine else {
        panic!("the client owns its records");
    };
    // internal_error (80), fatal.
    let alert = own.protection.seal(CONTENT_ALERT, &[2, 80]).unwrap();
    server.handle_datagram(Instant::now(), &alert);
    let events = drain_events(&mut server);
    assert!(
        events.contains(&ChannelEvent::AlertReceived(Alert { description: 80 })),
        "{events:?}"
    );
    assert!(matches!(server.state(), ChannelState::Closed(r) if r.contains("internal_error")));
}

/// Whether a datagram holds a plaintext NewSessionTicket (handshake type 4 in epoch 0).
fn holds_ticket(mut datagram: &[u8]) -> bool {
    while datagram.len() >= 13 {
        let length = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
        let epoch = u16::from_be_bytes([datagram[3], datagram[4]]);
        if datagram[0] == 22 && epoch == 0 && datagram.get(13) == Some(&4) {
            return true;
        }
        datagram = datagram.get(13 + length..).unwrap_or_default();
    }
    false
}

#[test]
fn session_tickets_are_issued_only_when_turned_on() {
    for tickets in [false, true] {
        let (client_ctx, mut server_ctx) = contexts(DEFAULT_CIPHERS, true, true);
        let mut settings = server_ctx.settings().clone();
        settings.session_tickets = tickets;
        server_ctx = DtlsContext::server(settings).unwrap();
        let seen = std::cell::Cell::new(false);
        handshake(&client_ctx, &server_ctx, |_, d| {
            seen.set(seen.get() || holds_ticket(d));
            false
        });
        assert_eq!(seen.get(), tickets, "session_tickets = {tickets}");
    }
}

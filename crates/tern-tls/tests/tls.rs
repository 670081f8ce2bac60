//! TLS 1.2 and 1.3 between two channels in memory: PSK (right key, wrong key, unknown
//! identity), certificates (server only, mutual, a client certificate that does not chain),
//! ALPN, peer identity, close_notify, the end of the stream, the handshake deadline, bytes
//! split at any boundary, and hostile input. Certificates come from scripts/make-test-certs.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tern_tls::{
    Alert, PeerIdentity, PkiSettings, Psk, PskMap, Source, TlsChannel, TlsContext, TlsError,
    TlsEvent, TlsSettings, TlsVersion,
};

const IDENTITY: &str = "device-1";
const KEY: &str = "secret-key";

fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-tls-certs-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-certs.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .status()
            .expect("bash");
        assert!(status.success(), "make-test-certs.sh failed");
        dir
    })
}

fn file(name: &str) -> Source {
    Source::File(certs().join(name))
}

fn psk_server(hint: Option<&str>) -> TlsContext {
    let store = PskMap::new();
    store.insert(Psk::new(IDENTITY, KEY).unwrap());
    TlsContext::server(TlsSettings {
        psk_store: Some(Arc::new(store)),
        identity_hint: hint.map(|h| h.as_bytes().to_vec()),
        ..Default::default()
    })
    .unwrap()
}

fn psk_client(identity: &str, key: &str) -> TlsContext {
    TlsContext::client(TlsSettings {
        psk: Some(Psk::new(identity, key).unwrap()),
        ..Default::default()
    })
    .unwrap()
}

fn pki_server(require_client_cert: bool, ca: &str, version: TlsVersion) -> TlsContext {
    let mut pki = PkiSettings::new(file("server.pem"), file("server.key"), Some(file(ca)));
    pki.verify_peer = require_client_cert;
    pki.require_peer_certificate = require_client_cert;
    TlsContext::server(TlsSettings {
        pki: Some(pki),
        max_version: version,
        ..Default::default()
    })
    .unwrap()
}

fn pki_client(with_cert: bool, version: TlsVersion) -> TlsContext {
    let mut pki = if with_cert {
        PkiSettings::new(file("client.pem"), file("client.key"), Some(file("ca.pem")))
    } else {
        PkiSettings::verify_only(Some(file("ca.pem")))
    };
    pki.expected_name = Some("localhost".into());
    TlsContext::client(TlsSettings {
        pki: Some(pki),
        min_version: version,
        max_version: version,
        ..Default::default()
    })
    .unwrap()
}

/// Moves bytes both ways until neither side has anything to send, handing each over in
/// pieces of the sizes `chunks` cycles through (all at once when empty).
fn pump(c: &mut TlsChannel, s: &mut TlsChannel, chunks: &[usize]) {
    let mut turn = 0;
    for _ in 0..200 {
        let moved = hand_over(c, s, chunks, &mut turn) | hand_over(s, c, chunks, &mut turn);
        if !moved {
            return;
        }
    }
    panic!("the channels kept talking");
}

/// Hands what `from` has to send to `to`, in pieces; whether there was anything.
fn hand_over(
    from: &mut TlsChannel,
    to: &mut TlsChannel,
    chunks: &[usize],
    turn: &mut usize,
) -> bool {
    let mut moved = false;
    while let Some(bytes) = from.poll_output() {
        moved = true;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = match chunks {
                [] => rest.len(),
                _ => chunks[*turn % chunks.len()].clamp(1, rest.len()),
            };
            *turn += 1;
            to.handle_input(Instant::now(), &rest[..n]);
            rest = &rest[n..];
        }
    }
    moved
}

/// Reads all plaintext waiting on a channel.
fn read_all(ch: &mut TlsChannel) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        let n = ch.read_plaintext(&mut buf);
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

fn events(ch: &mut TlsChannel) -> Vec<TlsEvent> {
    std::iter::from_fn(|| ch.poll_event()).collect()
}

fn handshake(cc: &TlsContext, sc: &TlsContext) -> (TlsChannel, TlsChannel) {
    let mut c = TlsChannel::connect(cc, Instant::now()).unwrap();
    let mut s = TlsChannel::accept(sc, Instant::now()).unwrap();
    pump(&mut c, &mut s, &[]);
    // TLS 1.3: the client reads the server's post-handshake messages (and sees a rejection).
    read_all(&mut c);
    read_all(&mut s);
    pump(&mut c, &mut s, &[]);
    (c, s)
}

/// Sends `data` from `a` to `b` (in `chunks`) and returns what `b` read.
fn carry(a: &mut TlsChannel, b: &mut TlsChannel, data: &[u8], chunks: &[usize]) -> Vec<u8> {
    a.send(data).unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        pump(a, b, chunks);
        got.extend(read_all(b));
        if got.len() >= data.len() {
            break;
        }
    }
    got
}

fn failed_reason(events: &[TlsEvent]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        TlsEvent::HandshakeFailed(r) => Some(r.as_str()),
        _ => None,
    })
}

#[test]
fn tls12_psk_handshake_data_alpn_and_identity() {
    let (mut c, mut s) = handshake(&psk_client(IDENTITY, KEY), &psk_server(Some("hint")));
    assert!(c.is_established(), "{:?}", c.state());
    assert!(s.is_established(), "{:?}", s.state());
    assert_eq!(
        events(&mut c),
        vec![TlsEvent::HandshakeStarted, TlsEvent::Established]
    );
    assert_eq!(
        events(&mut s),
        vec![TlsEvent::HandshakeStarted, TlsEvent::Established]
    );
    assert_eq!(c.protocol_version(), Some(TlsVersion::Tls12));
    assert!(
        c.cipher().is_some_and(|n| n.starts_with("PSK-")),
        "{:?}",
        c.cipher()
    );
    assert_eq!(s.alpn_protocol(), Some(&b"coap"[..]));
    assert_eq!(c.alpn_protocol(), Some(&b"coap"[..]));
    assert_eq!(
        s.peer_identity(),
        Some(PeerIdentity::Psk(IDENTITY.as_bytes().to_vec()))
    );
    assert_eq!(carry(&mut c, &mut s, b"GET /a", &[]), b"GET /a");
    let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    assert_eq!(carry(&mut s, &mut c, &big, &[]), big);
}

#[test]
fn a_psk_only_context_is_capped_at_tls12() {
    let ctx = psk_client(IDENTITY, KEY);
    assert_eq!(ctx.versions(), (TlsVersion::Tls12, TlsVersion::Tls12));
    let e = TlsContext::client(TlsSettings {
        psk: Some(Psk::new(IDENTITY, KEY).unwrap()),
        min_version: TlsVersion::Tls13,
        ..Default::default()
    });
    assert!(matches!(e, Err(TlsError::Settings(_))));
    assert!(matches!(
        TlsContext::client(TlsSettings::default()),
        Err(TlsError::NoCredentials(_))
    ));
    let server = psk_server(None);
    assert!(matches!(
        TlsChannel::connect(&server, Instant::now()),
        Err(TlsError::Settings(_))
    ));
}

#[test]
fn a_wrong_psk_fails_on_both_sides_with_a_reason() {
    let (mut c, mut s) = handshake(&psk_client(IDENTITY, "wrong-key"), &psk_server(None));
    let (ce, se) = (events(&mut c), events(&mut s));
    eprintln!("client: {ce:?}\nserver: {se:?}");
    let (cr, sr) = (failed_reason(&ce), failed_reason(&se));
    assert!(cr.is_some_and(|r| !r.is_empty()), "client: {ce:?}");
    assert!(sr.is_some_and(|r| !r.is_empty()), "server: {se:?}");
    assert!(
        ce.iter().any(|e| matches!(e, TlsEvent::AlertReceived(_))),
        "the client hears the server's alert: {ce:?}"
    );
    assert!(c.is_closed() && s.is_closed());
    assert!(c.send(b"x").is_err());
}

#[test]
fn an_unknown_psk_identity_is_refused() {
    let (mut c, mut s) = handshake(&psk_client("stranger", KEY), &psk_server(None));
    let (ce, se) = (events(&mut c), events(&mut s));
    eprintln!("client: {ce:?}\nserver: {se:?}");
    assert!(failed_reason(&se).is_some(), "{se:?}");
    assert!(failed_reason(&ce).is_some(), "{ce:?}");
    assert!(
        ce.contains(&TlsEvent::AlertReceived(Alert { description: 115 })),
        "unknown_psk_identity: {ce:?}"
    );
}

#[test]
fn certificates_server_only_on_tls12_and_tls13() {
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let (mut c, mut s) = handshake(
            &pki_client(false, version),
            &pki_server(false, "ca.pem", TlsVersion::Tls13),
        );
        assert!(c.is_established(), "{version:?} {:?}", c.state());
        assert!(s.is_established(), "{version:?} {:?}", s.state());
        assert_eq!(c.protocol_version(), Some(version));
        assert_eq!(s.protocol_version(), Some(version));
        assert_eq!(s.alpn_protocol(), Some(&b"coap"[..]));
        match c.peer_identity() {
            Some(PeerIdentity::Certificate {
                common_name,
                sans,
                der,
            }) => {
                assert_eq!(common_name.as_deref(), Some("localhost"));
                assert!(sans.contains(&"127.0.0.1".to_string()), "{sans:?}");
                let cert = openssl::x509::X509::from_der(&der).expect("the leaf, DER");
                assert_eq!(tern_tls::pki::names(&cert).0.as_deref(), Some("localhost"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.peer_identity(), None, "no client certificate");
        assert_eq!(carry(&mut c, &mut s, b"up", &[]), b"up");
        assert_eq!(carry(&mut s, &mut c, b"down", &[]), b"down");
    }
}

#[test]
fn mutual_certificates_on_tls12_and_tls13() {
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let (mut c, mut s) = handshake(
            &pki_client(true, version),
            &pki_server(true, "ca.pem", TlsVersion::Tls13),
        );
        assert!(c.is_established() && s.is_established(), "{version:?}");
        match s.peer_identity() {
            Some(PeerIdentity::Certificate { common_name, .. }) => {
                assert_eq!(common_name.as_deref(), Some("tern-test-client"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(carry(&mut c, &mut s, b"ping", &[3]), b"ping");
    }
}

#[test]
fn a_client_certificate_that_does_not_chain_fails() {
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        // The server trusts another CA only.
        let (mut c, mut s) = handshake(
            &pki_client(true, version),
            &pki_server(true, "other-ca.pem", TlsVersion::Tls13),
        );
        let (ce, se) = (events(&mut c), events(&mut s));
        eprintln!("{version:?} client: {ce:?}\nserver: {se:?}");
        let reason = failed_reason(&se).unwrap_or_else(|| panic!("{version:?}: {se:?}"));
        assert!(reason.contains("certificate"), "{reason}");
        assert!(!s.is_established());
        // TLS 1.2: the client's handshake fails; TLS 1.3: the client was established when the
        // server's alert came, so it closes.
        assert!(c.is_closed(), "{version:?}: {ce:?}");
        assert!(
            ce.iter()
                .any(|e| matches!(e, TlsEvent::AlertReceived(a) if a.is_fatal())),
            "{version:?}: {ce:?}"
        );
    }
}

#[test]
fn a_server_certificate_from_an_unknown_ca_or_name_fails() {
    let mut pki = PkiSettings::verify_only(Some(file("other-ca.pem")));
    pki.expected_name = Some("localhost".into());
    let client = TlsContext::client(TlsSettings {
        pki: Some(pki),
        ..Default::default()
    })
    .unwrap();
    let server = pki_server(false, "ca.pem", TlsVersion::Tls13);
    let (mut c, _) = handshake(&client, &server);
    let ce = events(&mut c);
    let reason = failed_reason(&ce).unwrap_or_else(|| panic!("{ce:?}"));
    assert!(reason.contains("certificate verify failed"), "{reason}");

    let mut pki = PkiSettings::verify_only(Some(file("ca.pem")));
    pki.expected_name = Some("other.example".into());
    let client = TlsContext::client(TlsSettings {
        pki: Some(pki),
        ..Default::default()
    })
    .unwrap();
    let (mut c, _) = handshake(&client, &server);
    let ce = events(&mut c);
    assert!(failed_reason(&ce).is_some(), "{ce:?}");
}

#[test]
fn alpn_can_be_required() {
    // A client that offers no ALPN against a server that requires it.
    let store = PskMap::new();
    store.insert(Psk::new(IDENTITY, KEY).unwrap());
    let strict = TlsContext::server(TlsSettings {
        psk_store: Some(Arc::new(store)),
        require_alpn: true,
        ..Default::default()
    })
    .unwrap();
    let silent = TlsContext::client(TlsSettings {
        psk: Some(Psk::new(IDENTITY, KEY).unwrap()),
        alpn: Vec::new(),
        ..Default::default()
    })
    .unwrap();
    let (_, mut s) = handshake(&silent, &strict);
    let se = events(&mut s);
    assert!(
        failed_reason(&se).is_some_and(|r| r.contains("ALPN")),
        "{se:?}"
    );
    // A client that offers another protocol: the server refuses with no_application_protocol.
    let other = TlsContext::client(TlsSettings {
        psk: Some(Psk::new(IDENTITY, KEY).unwrap()),
        alpn: vec![b"h2".to_vec()],
        ..Default::default()
    })
    .unwrap();
    let (mut c, _) = handshake(&other, &strict);
    let ce = events(&mut c);
    assert!(
        ce.contains(&TlsEvent::AlertReceived(Alert { description: 120 })),
        "{ce:?}"
    );
    // Not required (the default): no ALPN is fine.
    let (c, s) = handshake(&silent, &psk_server(None));
    assert!(c.is_established() && s.is_established());
    assert_eq!(s.alpn_protocol(), None);
}

#[test]
fn close_notify_closes_the_other_side_which_answers() {
    let (mut c, mut s) = handshake(&psk_client(IDENTITY, KEY), &psk_server(None));
    events(&mut c);
    events(&mut s);
    c.close();
    assert!(c.is_closed());
    let alert = c.poll_output().expect("close_notify");
    s.handle_input(Instant::now(), &alert);
    assert!(read_all(&mut s).is_empty());
    assert_eq!(
        events(&mut s),
        vec![
            TlsEvent::AlertReceived(Alert::CLOSE_NOTIFY),
            TlsEvent::Closed("peer sent close_notify".into())
        ]
    );
    assert!(s.poll_output().is_some(), "the server answers close_notify");
    assert!(matches!(s.send(b"late"), Err(TlsError::Closed)));
}

#[test]
fn the_end_of_the_stream_closes_or_fails() {
    // Established, then the peer's stream ends without close_notify.
    let (mut c, mut s) = handshake(&psk_client(IDENTITY, KEY), &psk_server(None));
    events(&mut s);
    c.send(b"last words").unwrap();
    pump(&mut c, &mut s, &[]);
    s.handle_eof(Instant::now());
    assert!(!s.is_closed(), "plaintext is still buffered");
    assert_eq!(read_all(&mut s), b"last words");
    assert!(s.is_closed());
    assert!(
        matches!(&events(&mut s)[..], [TlsEvent::Closed(r)] if r.contains("without close_notify"))
    );
    // During the handshake.
    let mut s = TlsChannel::accept(&psk_server(None), Instant::now()).unwrap();
    let mut c = TlsChannel::connect(&psk_client(IDENTITY, KEY), Instant::now()).unwrap();
    let hello = c.poll_output().unwrap();
    s.handle_input(Instant::now(), &hello[..10]);
    s.handle_eof(Instant::now());
    let se = events(&mut s);
    assert!(failed_reason(&se).is_some(), "{se:?}");
}

#[test]
fn a_handshake_past_its_deadline_fails() {
    let now = Instant::now();
    let server = TlsContext::server(TlsSettings {
        handshake_timeout: Duration::from_secs(5),
        ..psk_server(None).settings().clone()
    })
    .unwrap();
    let mut s = TlsChannel::accept(&server, now).unwrap();
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(5));
    s.handle_timeout(now + Duration::from_secs(4));
    assert!(!s.is_closed());
    s.handle_timeout(deadline);
    let se = events(&mut s);
    assert!(
        failed_reason(&se).is_some_and(|r| r.contains("5.0 s")),
        "{se:?}"
    );
    assert_eq!(s.poll_timeout(), None);
    // An established channel has no timer.
    let (c, _) = handshake(&psk_client(IDENTITY, KEY), &psk_server(None));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn plaintext_sent_before_the_handshake_is_held_then_delivered() {
    let mut c = TlsChannel::connect(&psk_client(IDENTITY, KEY), Instant::now()).unwrap();
    let mut s = TlsChannel::accept(&psk_server(None), Instant::now()).unwrap();
    c.send(b"early ").unwrap();
    c.send(b"request").unwrap();
    pump(&mut c, &mut s, &[]);
    assert_eq!(read_all(&mut s), b"early request");
}

#[test]
fn the_stream_interface_covers_tls() {
    use tern_tls::StreamSecurity;
    let c = TlsChannel::connect(&psk_client(IDENTITY, KEY), Instant::now()).unwrap();
    let boxed: Box<dyn StreamSecurity> = Box::new(c);
    assert!(boxed.is_secure());
    assert!(!boxed.is_passthrough());
    assert!(!boxed.is_established());
    assert!(boxed.poll_timeout().is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// The handshake and data survive any split of the byte streams.
    #[test]
    fn bytes_split_at_any_boundary(
        chunks in proptest::collection::vec(1usize..300, 1..8),
        tls13 in any::<bool>(),
    ) {
        let version = if tls13 { TlsVersion::Tls13 } else { TlsVersion::Tls12 };
        let cc = pki_client(false, version);
        let sc = pki_server(false, "ca.pem", TlsVersion::Tls13);
        let mut c = TlsChannel::connect(&cc, Instant::now()).unwrap();
        let mut s = TlsChannel::accept(&sc, Instant::now()).unwrap();
        c.send(b"held").unwrap();
        pump(&mut c, &mut s, &chunks);
        prop_assert!(c.is_established() && s.is_established());
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut got = read_all(&mut s);
        got.extend(carry(&mut c, &mut s, &data, &chunks));
        prop_assert_eq!(&got[..4], b"held");
        prop_assert_eq!(&got[4..], &data[..]);
        prop_assert_eq!(carry(&mut s, &mut c, &data, &chunks), data);
    }

    /// Random bytes to a server fail its handshake (at once or at the deadline), never panic.
    #[test]
    fn hostile_input_fails_the_handshake(
        garbage in proptest::collection::vec(any::<u8>(), 1..2000),
    ) {
        static SERVER: OnceLock<TlsContext> = OnceLock::new();
        let server = SERVER.get_or_init(|| psk_server(None));
        let now = Instant::now();
        let mut s = TlsChannel::accept(server, now).unwrap();
        for piece in garbage.chunks(97) {
            s.handle_input(now, piece);
            let _ = s.poll_output();
        }
        let mut buf = [0u8; 64];
        prop_assert_eq!(s.read_plaintext(&mut buf), 0);
        s.handle_timeout(now + Duration::from_secs(31));
        let se = events(&mut s);
        prop_assert!(failed_reason(&se).is_some(), "{:?}", se);
        prop_assert!(!s.is_established());
    }
}

#[test]
fn the_server_picks_its_certificate_by_the_clients_server_name() {
    let mut pki = PkiSettings::new(file("server.pem"), file("server.key"), None);
    pki.verify_peer = false;
    pki.by_server_name = vec![("ALT.example".into(), file("alt.pem"), file("alt.key"))];
    let server = TlsContext::server(TlsSettings {
        pki: Some(pki),
        ..Default::default()
    })
    .unwrap();
    for (name, expected) in [(Some("alt.example"), "alt.example"), (None, "localhost")] {
        let client = TlsContext::client(TlsSettings {
            pki: Some(PkiSettings::verify_only(Some(file("ca.pem")))),
            server_name: name.map(String::from),
            ..Default::default()
        })
        .unwrap();
        let (c, s) = handshake(&client, &server);
        assert!(c.is_established() && s.is_established(), "{name:?}");
        assert_eq!(
            s.alpn_protocol(),
            Some(&b"coap"[..]),
            "ALPN after the switch"
        );
        match c.peer_identity() {
            Some(PeerIdentity::Certificate { common_name, .. }) => {
                assert_eq!(common_name.as_deref(), Some(expected));
            }
            other => panic!("{other:?}"),
        }
    }
}

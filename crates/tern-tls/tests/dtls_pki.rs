//! DTLS with certificates (ECDHE-ECDSA-AES128-CCM8) between two channels in memory, using
//! certificates made by scripts/make-test-certs.sh: verification, client certificates,
//! unknown CAs, expired certificates and the allow-* settings, name checks, bad files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tern_tls::{
    Accept, ChannelState, DtlsChannel, DtlsContext, DtlsListener, DtlsSettings, PkiError,
    PkiSettings, Source, TlsError,
};

fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-pki-{}", std::process::id()));
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

fn server_settings(pki: PkiSettings) -> DtlsSettings {
    DtlsSettings {
        pki: Some(pki),
        handshake_timeout: Duration::from_secs(3),
        ..Default::default()
    }
}

fn server_pki() -> PkiSettings {
    PkiSettings::new(file("server.pem"), file("server.key"), Some(file("ca.pem")))
}

fn client_pki() -> PkiSettings {
    PkiSettings::new(file("client.pem"), file("client.key"), Some(file("ca.pem")))
}

/// Runs a handshake in memory; returns (client, server) channels.
fn handshake(client: PkiSettings, server: PkiSettings) -> (DtlsChannel, Option<DtlsChannel>) {
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let cctx = DtlsContext::client(server_settings(client)).unwrap();
    let mut listener =
        DtlsListener::new(DtlsContext::server(server_settings(server)).unwrap()).unwrap();
    let mut c = DtlsChannel::connect(&cctx, Instant::now()).unwrap();
    let mut s: Option<DtlsChannel> = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let now = Instant::now();
        let mut moved = false;
        while let Some(d) = c.poll_transmit() {
            moved = true;
            match &mut s {
                Some(s) => s.handle_datagram(now, &d),
                None => match listener.accept(now, peer, &d) {
                    Accept::Reply(r) => c.handle_datagram(now, &r),
                    Accept::Channel(ch) => s = Some(*ch),
                    Accept::Ignore => {}
                },
            }
        }
        if let Some(s) = &mut s {
            while let Some(d) = s.poll_transmit() {
                moved = true;
                c.handle_datagram(now, &d);
            }
        }
        let done = !matches!(c.state(), ChannelState::Handshaking)
            && s.as_ref()
                .is_none_or(|s| !matches!(s.state(), ChannelState::Handshaking));
        if done {
            break;
        }
        if !moved {
            std::thread::sleep(Duration::from_millis(10));
            c.handle_timeout(Instant::now());
            if let Some(s) = &mut s {
                s.handle_timeout(Instant::now());
            }
        }
    }
    (c, s)
}

#[test]
fn mutual_certificates_with_a_known_ca() {
    let mut server = server_pki();
    server.require_peer_certificate = true;
    let mut client = client_pki();
    client.expected_name = Some("127.0.0.1".into());
    let (c, s) = handshake(client, server);
    assert!(c.is_established(), "{:?}", c.state());
    let s = s.unwrap();
    assert!(s.is_established());
    assert_eq!(c.cipher(), Some("ECDHE-ECDSA-AES128-CCM8"));
    let (cn, _) = s.peer_certificate_names().unwrap();
    assert_eq!(cn.as_deref(), Some("tern-test-client"));
    let (cn, sans) = c.peer_certificate_names().unwrap();
    assert_eq!(cn.as_deref(), Some("localhost"));
    assert!(sans.contains(&"127.0.0.1".to_string()), "{sans:?}");
}

#[test]
fn server_certificate_only() {
    // The client has no certificate, only the CA; the server does not ask for one.
    let client = PkiSettings::verify_only(Some(file("ca.pem")));
    let mut server = server_pki();
    server.verify_peer = false;
    let (c, s) = handshake(client.clone(), server);
    assert!(c.is_established(), "{:?}", c.state());
    assert!(
        s.unwrap().peer_certificate_names().is_none(),
        "no client certificate"
    );
    // A server that requires one refuses that client.
    let mut strict = server_pki();
    strict.require_peer_certificate = true;
    let (_, s) = handshake(client, strict);
    assert!(!s.is_some_and(|s| s.is_established()));
}

#[test]
fn the_server_picks_its_certificate_by_the_clients_sni() {
    let mut server = server_pki();
    server.verify_peer = false;
    server.by_server_name = vec![("ALT.example".into(), file("alt.pem"), file("alt.key"))];
    let mut client = PkiSettings::verify_only(Some(file("ca.pem")));
    client.sni = Some("alt.example".into());
    client.expected_name = Some("alt.example".into());
    let (c, _) = handshake(client.clone(), server.clone());
    assert!(c.is_established(), "{:?}", c.state());
    let (cn, _) = c.peer_certificate_names().unwrap();
    assert_eq!(cn.as_deref(), Some("alt.example"));
    // Another name, or none, gets the default certificate.
    for sni in [Some("localhost".to_string()), None] {
        let mut client = PkiSettings::verify_only(Some(file("ca.pem")));
        client.sni = sni;
        let (c, _) = handshake(client, server.clone());
        assert!(c.is_established(), "{:?}", c.state());
        let (cn, _) = c.peer_certificate_names().unwrap();
        assert_eq!(cn.as_deref(), Some("localhost"));
    }
}

#[test]
fn unknown_ca_is_refused() {
    let mut client = client_pki();
    client.ca = Some(file("other-ca.pem"));
    let (c, _) = handshake(client, server_pki());
    assert!(!c.is_established());
}

#[test]
fn required_client_certificate_missing_fails() {
    let mut server = server_pki();
    server.require_peer_certificate = true;
    // A client with a certificate the server's CA did not sign: presents it, fails verification.
    let mut client = PkiSettings::new(
        file("other-ca.pem"),
        file("other-ca.key"),
        Some(file("ca.pem")),
    );
    client.verify_peer = true;
    let (_, s) = handshake(client, server);
    assert!(!s.is_some_and(|s| s.is_established()));
}

#[test]
fn expired_server_certificate_is_refused_unless_allowed() {
    let expired = PkiSettings::new(
        file("expired.pem"),
        file("expired.key"),
        Some(file("ca.pem")),
    );
    let (c, _) = handshake(client_pki(), expired.clone());
    assert!(
        !c.is_established(),
        "an expired certificate must be refused"
    );
    let mut lenient = client_pki();
    lenient.allow_expired = true;
    let (c, _) = handshake(lenient, expired);
    assert!(c.is_established(), "allow_expired: {:?}", c.state());
}

#[test]
fn name_mismatch_is_refused_and_the_validation_callback_decides() {
    let mut client = client_pki();
    client.expected_name = Some("example.com".into());
    let (c, _) = handshake(client, server_pki());
    assert!(
        !c.is_established(),
        "the server certificate is not for example.com"
    );
    let mut client = client_pki();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    client.validate = Some(Arc::new(move |check: &tern_tls::CertificateCheck| {
        seen2
            .lock()
            .unwrap()
            .push((check.depth, check.common_name.clone(), check.validated));
        check.depth > 0 || check.common_name.as_deref() != Some("localhost")
    }));
    let (c, _) = handshake(client, server_pki());
    assert!(!c.is_established(), "the callback rejected the leaf");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|(d, cn, ok)| *d == 0 && cn.as_deref() == Some("localhost") && *ok),
        "{seen:?}"
    );
}

#[test]
fn bad_files_are_named_before_any_traffic() {
    let missing = PkiSettings::new(
        Source::File("/nonexistent/cert.pem".into()),
        file("server.key"),
        None,
    );
    match DtlsContext::server(server_settings(missing)) {
        Err(TlsError::Pki(PkiError::Read { what, .. })) => assert_eq!(what, "certificate"),
        other => panic!("{:?}", other.err()),
    }
    let garbage = PkiSettings::new(
        Source::Pem(b"-----BEGIN CERTIFICATE-----\nnope\n".to_vec()),
        file("server.key"),
        None,
    );
    assert!(matches!(
        DtlsContext::server(server_settings(garbage)),
        Err(TlsError::Pki(PkiError::Parse { .. }))
    ));
    let mismatch = PkiSettings::new(file("server.pem"), file("client.key"), None);
    assert!(matches!(
        DtlsContext::server(server_settings(mismatch)),
        Err(TlsError::Pki(PkiError::KeyMismatch))
    ));
    // DER works too.
    let der = openssl::x509::X509::from_pem(&std::fs::read(certs().join("server.pem")).unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    let ok = PkiSettings::new(Source::Der(der), file("server.key"), None);
    assert!(DtlsContext::server(server_settings(ok)).is_ok());
}

//! What an idle established TLS connection costs a server, and how many TLS handshakes one
//! core completes, all in memory (client and server channels in one thread, no sockets).
//!
//! ```text
//! cargo run --release -p tern-tls --example tls_idle_memory -- [CONNECTIONS] [HANDSHAKES]
//! ```
//!
//! CONNECTIONS (default 10,000) server channels are established with an ECDSA P-256
//! certificate over TLS 1.3 (and then TLS 1.2, and TLS 1.2 PSK) and kept idle; each client half
//! is dropped after its handshake. Reported per connection: the growth of the resident set
//! (/proc/self/statm) and of the bytes malloc has handed out (glibc's `mallinfo2`, which counts
//! OpenSSL's allocations too). Then HANDSHAKES (default 2,000) full handshakes are timed: each
//! is both sides' work on one core.

use std::sync::Arc;
use std::time::Instant;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};
use tern_tls::{PkiSettings, Psk, PskMap, Source, TlsChannel, TlsContext, TlsSettings, TlsVersion};

/// A self-signed ECDSA P-256 certificate for `localhost`, and its key, in PEM.
fn certificate() -> (Vec<u8>, Vec<u8>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "localhost")
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    (
        cert.to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

/// Client and server contexts for one kind of handshake.
fn contexts(kind: Kind, cert: &[u8], key: &[u8]) -> (TlsContext, TlsContext) {
    match kind {
        Kind::Psk12 => {
            let store = PskMap::new();
            store.insert(Psk::new("device-1", "secret-key").unwrap());
            let server = TlsSettings {
                psk_store: Some(Arc::new(store)),
                ..Default::default()
            };
            let client = TlsSettings {
                psk: Some(Psk::new("device-1", "secret-key").unwrap()),
                ..Default::default()
            };
            (
                TlsContext::client(client).unwrap(),
                TlsContext::server(server).unwrap(),
            )
        }
        Kind::Ecdsa12 | Kind::Ecdsa13 => {
            let version = if kind == Kind::Ecdsa13 {
                TlsVersion::Tls13
            } else {
                TlsVersion::Tls12
            };
            let mut server_pki =
                PkiSettings::new(Source::Pem(cert.to_vec()), Source::Pem(key.to_vec()), None);
            server_pki.verify_peer = false;
            let mut client_pki = PkiSettings::verify_only(Some(Source::Pem(cert.to_vec())));
            client_pki.expected_name = Some("localhost".into());
            let server = TlsSettings {
                pki: Some(server_pki),
                ..Default::default()
            };
            let client = TlsSettings {
                pki: Some(client_pki),
                min_version: version,
                max_version: version,
                ..Default::default()
            };
            (
                TlsContext::client(client).unwrap(),
                TlsContext::server(server).unwrap(),
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ecdsa13,
    Ecdsa12,
    Psk12,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Ecdsa13 => "TLS 1.3 ECDHE-ECDSA P-256 (X25519)",
            Kind::Ecdsa12 => "TLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256",
            Kind::Psk12 => "TLS 1.2 PSK (PSK-AES128-GCM-SHA256)",
        }
    }
}

/// One full handshake in memory; returns the server channel.
fn handshake(cc: &TlsContext, sc: &TlsContext) -> TlsChannel {
    let now = Instant::now();
    let mut c = TlsChannel::connect(cc, now).unwrap();
    let mut s = TlsChannel::accept(sc, now).unwrap();
    let mut scratch = [0u8; 256];
    for _ in 0..20 {
        let mut moved = false;
        while let Some(b) = c.poll_output() {
            moved = true;
            s.handle_input(now, &b);
        }
        while let Some(b) = s.poll_output() {
            moved = true;
            c.handle_input(now, &b);
        }
        while c.read_plaintext(&mut scratch) > 0 {}
        while s.read_plaintext(&mut scratch) > 0 {}
        if !moved {
            break;
        }
    }
    assert!(c.is_established() && s.is_established(), "{:?}", s.state());
    s
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn malloc_in_use() -> usize {
    // SAFETY: mallinfo2 only reads glibc's allocator statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

/// Establishes `n` idle server connections of one kind (or only accepts them, with `None`) and
/// prints what each costs.
fn measure_idle(kind: Option<Kind>, n: usize, cert: &[u8], key: &[u8]) {
    let (cc, sc) = contexts(kind.unwrap_or(Kind::Psk12), cert, key);
    // Warm the allocator and OpenSSL's lazily built tables.
    drop((0..50).map(|_| handshake(&cc, &sc)).collect::<Vec<_>>());
    let (rss0, heap0) = (resident_bytes(), malloc_in_use());
    let servers: Vec<TlsChannel> = match kind {
        Some(_) => (0..n).map(|_| handshake(&cc, &sc)).collect(),
        None => (0..n)
            .map(|_| TlsChannel::accept(&sc, Instant::now()).unwrap())
            .collect(),
    };
    let (rss1, heap1) = (resident_bytes(), malloc_in_use());
    let per = |a: usize, b: usize| b.saturating_sub(a) as f64 / n.max(1) as f64;
    let label = kind.map_or("accepted, before any handshake", Kind::label);
    println!(
        "{label}: {n} idle server connections: {:.0} B each resident, {:.0} B each malloc'd",
        per(rss0, rss1),
        per(heap0, heap1),
    );
    drop(servers);
}

const KINDS: [Kind; 3] = [Kind::Ecdsa13, Kind::Ecdsa12, Kind::Psk12];

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let handshakes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let (cert, key) = certificate();
    // Each memory measurement runs in a fresh process of its own, so that memory freed by an
    // earlier one does not hide the growth of the resident set.
    if let Ok(which) = std::env::var("TERN_TLS_IDLE_KIND") {
        let kind = which
            .parse::<usize>()
            .ok()
            .and_then(|i| KINDS.get(i).copied());
        measure_idle(kind, n, &cert, &key);
        return;
    }
    println!("OpenSSL {}", openssl::version::version());
    let exe = std::env::current_exe().expect("own path");
    for which in ["none", "0", "1", "2"] {
        let status = std::process::Command::new(&exe)
            .args([n.to_string(), "0".to_string()])
            .env("TERN_TLS_IDLE_KIND", which)
            .status()
            .expect("run the measurement");
        assert!(status.success());
    }
    for kind in KINDS {
        let (cc, sc) = contexts(kind, &cert, &key);
        drop(handshake(&cc, &sc));
        let start = Instant::now();
        for _ in 0..handshakes {
            drop(handshake(&cc, &sc));
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}: {:.0} handshakes/s in memory (client and server on one core; {handshakes} in {secs:.2} s)",
            kind.label(),
            handshakes as f64 / secs
        );
    }
}

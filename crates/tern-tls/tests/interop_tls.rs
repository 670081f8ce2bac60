//! TLS interop with real peers over loopback TCP: OpenSSL's `s_server`/`s_client` (TLS 1.2 PSK,
//! TLS 1.3 with certificates and ALPN `coap`) and libcoap's `coap-server-openssl` and
//! `coap-client-openssl` over `coaps+tcp://` (RFC 8323 frames written by hand here).
//! Peers missing → skipped, unless TERN_REQUIRE_PEERS=1 (the test command sets it).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tern_tls::{
    PeerIdentity, PkiSettings, Psk, PskMap, Source, TlsChannel, TlsContext, TlsEvent, TlsSettings,
    TlsVersion,
};

const IDENTITY: &str = "device-1";
const KEY: &str = "secret-key";

fn require(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("TERN_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{bin} is required (TERN_REQUIRE_PEERS=1) but not installed");
        }
        eprintln!("skipping: {bin} not installed");
    }
    found
}

fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-tls-interop-{}", std::process::id()));
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

fn cert_path(name: &str) -> String {
    certs().join(name).display().to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Peer {
    fn spawn(cmd: &mut Command) -> Peer {
        Peer(
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn"),
        )
    }

    fn stdin(&mut self) -> &mut ChildStdin {
        self.0.stdin.as_mut().unwrap()
    }

    /// Waits (bounded) for the child to exit, kills it, and returns its stdout and stderr.
    fn output(mut self, limit: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < limit && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut s = String::new();
        if let Some(out) = self.0.stdout.as_mut() {
            let _ = out.read_to_string(&mut s);
        }
        if let Some(err) = self.0.stderr.as_mut() {
            let _ = err.read_to_string(&mut s);
        }
        s
    }
}

/// Connects to a port someone is about to listen on (bounded).
fn connect_when_listening(port: u16) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if start.elapsed() > Duration::from_secs(5) => panic!("port {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(30)),
        }
    }
}

/// A TLS channel over a real TCP socket.
struct Conn {
    sock: TcpStream,
    tls: TlsChannel,
    plaintext: Vec<u8>,
    events: Vec<TlsEvent>,
}

impl Conn {
    fn new(sock: TcpStream, tls: TlsChannel) -> Self {
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        sock.set_nodelay(true).unwrap();
        Conn {
            sock,
            tls,
            plaintext: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Moves bytes until `done` holds or `limit` passes; whether `done` held.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Conn) -> bool) -> bool {
        let start = Instant::now();
        let mut buf = [0u8; 8192];
        while start.elapsed() < limit {
            while let Some(out) = self.tls.poll_output() {
                if self.sock.write_all(&out).is_err() {
                    break;
                }
            }
            self.events
                .extend(std::iter::from_fn(|| self.tls.poll_event()));
            if done(self) {
                return true;
            }
            if self.tls.is_closed() {
                return false;
            }
            match self.sock.read(&mut buf) {
                Ok(0) => self.tls.handle_eof(Instant::now()),
                Ok(n) => self.tls.handle_input(Instant::now(), &buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.tls.handle_eof(Instant::now()),
            }
            loop {
                let n = self.tls.read_plaintext(&mut buf);
                if n == 0 {
                    break;
                }
                self.plaintext.extend_from_slice(&buf[..n]);
            }
            self.tls.handle_timeout(Instant::now());
        }
        false
    }

    fn established(&mut self) -> bool {
        self.run_until(Duration::from_secs(5), |c| c.tls.is_established())
    }

    fn received(&mut self, needle: &[u8]) -> bool {
        self.run_until(Duration::from_secs(5), |c| {
            c.plaintext.windows(needle.len()).any(|w| w == needle)
        })
    }
}

fn psk_client() -> TlsContext {
    TlsContext::client(TlsSettings {
        psk: Some(Psk::new(IDENTITY, KEY).unwrap()),
        handshake_timeout: Duration::from_secs(4),
        ..Default::default()
    })
    .unwrap()
}

fn psk_server() -> TlsContext {
    let store = PskMap::new();
    store.insert(Psk::new(IDENTITY, KEY).unwrap());
    TlsContext::server(TlsSettings {
        psk_store: Some(Arc::new(store)),
        handshake_timeout: Duration::from_secs(4),
        ..Default::default()
    })
    .unwrap()
}

fn pki_server() -> TlsContext {
    let mut pki = PkiSettings::new(
        Source::File(certs().join("server.pem")),
        Source::File(certs().join("server.key")),
        None,
    );
    pki.verify_peer = false;
    TlsContext::server(TlsSettings {
        pki: Some(pki),
        handshake_timeout: Duration::from_secs(4),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn tern_client_and_openssl_s_server_tls12_psk() {
    if !require("openssl") {
        return;
    }
    let port = free_tcp_port();
    let mut server = Peer::spawn(Command::new("openssl").args([
        "s_server",
        "-accept",
        &format!("127.0.0.1:{port}"),
        "-tls1_2",
        "-nocert",
        "-psk",
        &hex(KEY.as_bytes()),
        "-psk_identity",
        IDENTITY,
        "-alpn",
        "coap",
        "-cipher",
        "PSK-AES128-GCM-SHA256",
    ]));
    let sock = connect_when_listening(port);
    let mut conn = Conn::new(
        sock,
        TlsChannel::connect(&psk_client(), Instant::now()).unwrap(),
    );
    assert!(conn.established(), "{:?}", conn.events);
    assert_eq!(conn.tls.protocol_version(), Some(TlsVersion::Tls12));
    assert_eq!(conn.tls.cipher(), Some("PSK-AES128-GCM-SHA256"));
    assert_eq!(conn.tls.alpn_protocol(), Some(&b"coap"[..]));
    conn.tls.send(b"ping from tern\n").unwrap();
    server.stdin().write_all(b"pong from openssl\n").unwrap();
    assert!(conn.received(b"pong from openssl"), "{:?}", conn.events);
    conn.tls.close();
    conn.run_until(Duration::from_millis(200), |_| false);
    let out = server.output(Duration::from_secs(2));
    assert!(out.contains("ping from tern"), "{out}");
}

#[test]
fn tern_client_and_openssl_s_server_tls13_certificates_and_alpn() {
    if !require("openssl") {
        return;
    }
    let port = free_tcp_port();
    let mut server = Peer::spawn(Command::new("openssl").args([
        "s_server",
        "-accept",
        &format!("127.0.0.1:{port}"),
        "-cert",
        &cert_path("server.pem"),
        "-key",
        &cert_path("server.key"),
        "-alpn",
        "coap",
    ]));
    let mut pki = PkiSettings::verify_only(Some(Source::File(certs().join("ca.pem"))));
    pki.expected_name = Some("localhost".into());
    let ctx = TlsContext::client(TlsSettings {
        pki: Some(pki),
        server_name: Some("localhost".into()),
        ..Default::default()
    })
    .unwrap();
    let sock = connect_when_listening(port);
    let mut conn = Conn::new(sock, TlsChannel::connect(&ctx, Instant::now()).unwrap());
    assert!(conn.established(), "{:?}", conn.events);
    assert_eq!(conn.tls.protocol_version(), Some(TlsVersion::Tls13));
    assert_eq!(conn.tls.alpn_protocol(), Some(&b"coap"[..]));
    assert!(matches!(
        conn.tls.peer_identity(),
        Some(PeerIdentity::Certificate { common_name: Some(cn), .. }) if cn == "localhost"
    ));
    conn.tls.send(b"ping over 1.3\n").unwrap();
    server.stdin().write_all(b"pong over 1.3\n").unwrap();
    assert!(conn.received(b"pong over 1.3"), "{:?}", conn.events);
    conn.tls.close();
    conn.run_until(Duration::from_millis(200), |_| false);
    let out = server.output(Duration::from_secs(2));
    assert!(out.contains("ping over 1.3"), "{out}");
}

/// Accepts one connection on `listener` (bounded) and wraps it in a server channel.
fn accept_one(listener: &TcpListener, ctx: &TlsContext) -> Conn {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(false).unwrap();
                return Conn::new(sock, TlsChannel::accept(ctx, Instant::now()).unwrap());
            }
            Err(_) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no connection: {e}"),
        }
    }
}

#[test]
fn openssl_s_client_and_tern_server_tls12_psk_and_tls13_certificates() {
    if !require("openssl") {
        return;
    }
    let psk_args = [
        "-tls1_2",
        "-psk",
        &hex(KEY.as_bytes()),
        "-psk_identity",
        IDENTITY,
    ]
    .map(String::from)
    .to_vec();
    let ca = cert_path("ca.pem");
    let pki_args = [
        "-tls1_3",
        "-CAfile",
        &ca,
        "-verify_return_error",
        "-servername",
        "localhost",
    ]
    .map(String::from)
    .to_vec();
    for (ctx, args, version) in [
        (psk_server(), psk_args, TlsVersion::Tls12),
        (pki_server(), pki_args, TlsVersion::Tls13),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = Peer::spawn(
            Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .args(["-alpn", "coap", "-quiet"])
                .args(&args),
        );
        let mut conn = accept_one(&listener, &ctx);
        assert!(conn.established(), "{version:?}: {:?}", conn.events);
        assert_eq!(conn.tls.protocol_version(), Some(version));
        assert_eq!(conn.tls.alpn_protocol(), Some(&b"coap"[..]));
        client.stdin().write_all(b"hello tern\n").unwrap();
        assert!(
            conn.received(b"hello tern"),
            "{version:?}: {:?}",
            conn.events
        );
        conn.tls.send(b"hello openssl\n").unwrap();
        conn.run_until(Duration::from_millis(300), |_| false);
        conn.tls.close();
        conn.run_until(Duration::from_millis(100), |_| false);
        drop(conn);
        let out = client.output(Duration::from_secs(2));
        assert!(out.contains("hello openssl"), "{version:?}: {out}");
    }
}

/// An RFC 8323 §3.2 frame: length nibble (and extended length), token length, code, token,
/// then options and payload.
fn frame(code: u8, token: &[u8], body: &[u8]) -> Vec<u8> {
    let len = body.len();
    let mut f = Vec::new();
    let tkl = token.len() as u8;
    match len {
        0..=12 => f.push(((len as u8) << 4) | tkl),
        13..=268 => f.extend([(13 << 4) | tkl, (len - 13) as u8]),
        _ => {
            f.push((14 << 4) | tkl);
            f.extend(((len - 269) as u16).to_be_bytes());
        }
    }
    f.push(code);
    f.extend_from_slice(token);
    f.extend_from_slice(body);
    f
}

/// Splits complete RFC 8323 frames off the front of `buf`: (code, token, options and payload).
fn frames(buf: &[u8]) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Some(&first) = rest.first() {
        let (nibble, tkl) = (first >> 4, usize::from(first & 0x0f));
        let (len, ext) = match nibble {
            13 if rest.len() > 1 => (usize::from(rest[1]) + 13, 1),
            14 if rest.len() > 2 => (usize::from(u16::from_be_bytes([rest[1], rest[2]])) + 269, 2),
            13..=15 => return out,
            n => (usize::from(n), 0),
        };
        let start = 1 + ext + 1 + tkl;
        if rest.len() < start + len {
            return out;
        }
        let code = rest[1 + ext];
        out.push((
            code,
            rest[2 + ext..start].to_vec(),
            rest[start..start + len].to_vec(),
        ));
        rest = &rest[start + len..];
    }
    out
}

const CSM: u8 = 0xe1; // 7.01
const GET: u8 = 0x01;
const CONTENT: u8 = 0x45; // 2.05

#[test]
fn tern_client_gets_from_libcoap_server_over_tls_psk() {
    if !require("coap-server-openssl") {
        return;
    }
    let port = free_tcp_port();
    // libcoap listens for coaps+tcp on the port after -p.
    let _server = Peer::spawn(Command::new("coap-server-openssl").args([
        "-A",
        "127.0.0.1",
        "-p",
        &(port - 1).to_string(),
        "-k",
        KEY,
    ]));
    let sock = connect_when_listening(port);
    let mut conn = Conn::new(
        sock,
        TlsChannel::connect(&psk_client(), Instant::now()).unwrap(),
    );
    assert!(conn.established(), "{:?}", conn.events);
    // libcoap 4.3.1 selects no ALPN protocol.
    conn.tls.send(&frame(CSM, &[], &[])).unwrap();
    conn.tls.send(&frame(GET, &[0x42], &[])).unwrap();
    let ok = conn.run_until(Duration::from_secs(5), |c| {
        frames(&c.plaintext)
            .iter()
            .any(|(code, token, _)| *code == CONTENT && token == &[0x42])
    });
    let got = frames(&conn.plaintext);
    assert!(ok, "{got:?} {:?}", conn.events);
    assert!(
        got.iter().any(|(code, _, _)| *code == CSM),
        "the server's CSM"
    );
}

#[test]
fn libcoap_client_gets_from_tern_server_over_tls_psk() {
    if !require("coap-client-openssl") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = Peer::spawn(Command::new("coap-client-openssl").args([
        "-B",
        "5",
        "-u",
        IDENTITY,
        "-k",
        KEY,
        &format!("coaps+tcp://127.0.0.1:{port}/hello"),
    ]));
    let mut conn = accept_one(&listener, &psk_server());
    assert!(conn.established(), "{:?}", conn.events);
    assert_eq!(
        conn.tls.peer_identity(),
        Some(PeerIdentity::Psk(IDENTITY.as_bytes().to_vec()))
    );
    conn.tls.send(&frame(CSM, &[], &[])).unwrap();
    let ok = conn.run_until(Duration::from_secs(5), |c| {
        frames(&c.plaintext).iter().any(|(code, _, _)| *code == GET)
    });
    assert!(ok, "{:?} {:?}", frames(&conn.plaintext), conn.events);
    let (_, token, _) = frames(&conn.plaintext)
        .into_iter()
        .find(|(code, _, _)| *code == GET)
        .unwrap();
    // Payload marker, then the payload.
    conn.tls
        .send(&frame(CONTENT, &token, b"\xffhello from tern over TLS"))
        .unwrap();
    conn.run_until(Duration::from_millis(500), |_| false);
    let out = client.output(Duration::from_secs(3));
    assert!(out.contains("hello from tern over TLS"), "{out}");
}

//! `tern stream-load`: load for CoAP over TCP and TLS (RFC 8323) that costs the load side as
//! little as possible per request, so that one load core can saturate one server core. It
//! drives TCP sockets (and [`TlsChannel`]s over them) directly, with no CoAP runtime in
//! between:
//!
//! - `requests`: N connections, each a closed loop keeping W GET requests pipelined. Each
//!   in-flight slot has its own token and its request frame is encoded once; a response is
//!   matched to its slot by the token read straight from the frame header (only signaling
//!   frames are decoded in full), and the slot's request goes out again in the same write as
//!   every other request answered by the same read. Counts 2.05 responses, other responses
//!   as errors; latency per request into a log-linear histogram.
//! - `handshakes`: new connections per second, closed loop with C attempts in flight: TCP
//!   connect, the TLS handshake (PSK or certificates), optionally the CSM exchange, then
//!   close_notify and close.
//! - `idle`: opens N connections (TLS handshake and CSM exchange each) a few at a time,
//!   retrying refused ones, prints one JSON line when all are up, then holds them idle so
//!   the server's memory per connection can be read.
//!
//! Each connection starts by sending a CSM and waiting for the server's (RFC 8323 §5.3).

use crate::load::{check_seconds, rss_bytes};
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tern::proto::stream::frame;
use tern::proto::stream::signal::{Csm, Ping, Signal};
use tern::proto::uri::{CoapUri, Scheme};
use tern::proto::{Code, Message, MessageType, Token};
use tern::tls::{TlsChannel, TlsContext, TlsSettings, TlsVersion};

/// Arguments of `tern stream-load`.
#[derive(Args, Debug)]
pub struct StreamLoadArgs {
    #[command(subcommand)]
    mode: Mode,
}

/// What load to make.
#[derive(Subcommand, Debug)]
enum Mode {
    /// Requests/s: N connections, W GETs pipelined on each.
    Requests(RequestArgs),
    /// New connections (TCP, TLS handshake, optionally CSM) per second.
    Handshakes(HandshakeArgs),
    /// Opens N connections and holds them idle.
    Idle(IdleArgs),
}

/// The server and the credentials, shared by the modes.
#[derive(Args, Debug)]
struct Target {
    /// coap+tcp://HOST:PORT/PATH or coaps+tcp://HOST:PORT/PATH (the path is what `requests`
    /// GETs).
    uri: String,
    /// PSK identity (coaps+tcp://).
    #[arg(short = 'u', long = "psk-identity", requires = "psk_key")]
    psk_identity: Option<String>,
    /// PSK (coaps+tcp://): text, or hex:00ff....
    #[arg(short = 'k', long = "psk-key", requires = "psk_identity")]
    psk_key: Option<String>,
    /// Certificates instead of a PSK: verify the server's certificate (which must name the
    /// server's address) against this CA.
    #[arg(short = 'C', long = "ca", conflicts_with_all = ["psk_identity", "insecure"])]
    ca: Option<std::path::PathBuf>,
    /// Certificates, but the server's chain is not verified (its CertificateVerify still is,
    /// in TLS 1.3): a cheaper client, for loading a server's handshakes. Not for real use.
    #[arg(long, conflicts_with = "psk_identity")]
    insecure: bool,
    /// Highest TLS version offered (PSKs are offered on TLS 1.2 only).
    #[arg(long = "tls-max", value_enum, default_value_t = TlsMax::V13)]
    tls_max: TlsMax,
    /// OpenSSL TLS 1.2 cipher list to offer instead of Tern's default.
    #[arg(long)]
    ciphers: Option<String>,
}

/// `--tls-max`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TlsMax {
    /// TLS 1.2.
    #[value(name = "1.2")]
    V12,
    /// TLS 1.3.
    #[value(name = "1.3")]
    V13,
}

#[derive(Args, Debug)]
struct RequestArgs {
    #[command(flatten)]
    target: Target,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 4)]
    connections: usize,
    /// Requests pipelined on each connection.
    #[arg(short = 'w', long, default_value_t = 32)]
    window: usize,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds without any response, with requests outstanding, before a connection counts
    /// its outstanding requests as timed out and stops; also bounds connection set-up.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct HandshakeArgs {
    #[command(flatten)]
    target: Target,
    /// Connection attempts in flight.
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Exchange CSMs after the handshake (the connection counts once the server's CSM is in).
    #[arg(long)]
    csm: bool,
    /// Seconds an attempt may take before it counts as failed.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// Connections to open (one socket each: mind `ulimit -n`).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    connections: usize,
    /// Connections being set up at once (keep it under the server's cap on handshakes).
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Attempts per connection (a refused or reset one is tried again after 50 ms).
    #[arg(long, default_value_t = 5)]
    attempts: u32,
    /// Seconds to hold the connections once all are up (then close_notify and exit).
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Seconds one connection's set-up may take.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// Runs `tern stream-load`.
pub async fn run(args: StreamLoadArgs) -> Result<ExitCode, String> {
    match args.mode {
        Mode::Requests(a) => requests(a).await,
        Mode::Handshakes(a) => handshakes(a).await,
        Mode::Idle(a) => idle(a).await,
    }
}

fn check_count(name: &str, v: usize, max: usize) -> Result<(), String> {
    if v == 0 || v > max {
        Err(format!("{name} must be between 1 and {max}, not {v}"))
    } else {
        Ok(())
    }
}

/// A resolved target: where to connect, the TLS context (coaps+tcp://), the parsed URI.
struct Resolved {
    peer: SocketAddr,
    tls: Option<TlsContext>,
    uri: CoapUri,
}

async fn resolve(target: &Target, handshake_timeout: Duration) -> Result<Resolved, String> {
    let uri = CoapUri::parse(&target.uri).map_err(|e| format!("invalid URI: {e}"))?;
    let secure = match uri.scheme {
        Scheme::CoapTcp => false,
        Scheme::CoapsTcp => true,
        other => {
            return Err(format!(
                "stream-load takes coap+tcp:// or coaps+tcp:// URIs, not {other}://"
            ))
        }
    };
    let peer = tern::resolve(&uri).await.map_err(|e| e.to_string())?;
    let have_creds = target.psk_identity.is_some()
        || target.psk_key.is_some()
        || target.ca.is_some()
        || target.insecure;
    if !secure {
        if have_creds {
            return Err("-u/-k, -C and --insecure are for coaps+tcp:// URIs".into());
        }
        return Ok(Resolved {
            peer,
            tls: None,
            uri,
        });
    }
    let max_version = match target.tls_max {
        TlsMax::V12 => TlsVersion::Tls12,
        TlsMax::V13 => TlsVersion::Tls13,
    };
    let mut settings = match (&target.psk_identity, &target.psk_key, &target.ca) {
        (None, None, None) if target.insecure => TlsSettings {
            pki: Some(tern::tls::PkiSettings::verify_only(None)),
            ..Default::default()
        },
        (Some(identity), Some(key), None) => {
            let key =
                tern::tls::credentials::parse_key(key).map_err(|e| format!("-k/--psk-key: {e}"))?;
            let psk = tern::Psk::new(identity.as_bytes(), key.to_vec())
                .map_err(|e| format!("-u/-k: {e}"))?;
            TlsSettings {
                psk: Some(psk),
                ..Default::default()
            }
        }
        (None, None, Some(ca)) => {
            let mut pki =
                tern::tls::PkiSettings::verify_only(Some(tern::tls::Source::File(ca.clone())));
            pki.expected_name = Some(match &uri.host {
                tern::proto::uri::Host::Name(name) => name.clone(),
                _ => peer.ip().to_string(),
            });
            TlsSettings {
                pki: Some(pki),
                ..Default::default()
            }
        }
        _ => {
            return Err(
                "coaps+tcp:// needs a PSK (-u IDENTITY -k KEY), a CA (-C FILE) or --insecure"
                    .into(),
            )
        }
    };
    settings.handshake_timeout = handshake_timeout;
    settings.max_version = max_version;
    if let Some(ciphers) = &target.ciphers {
        settings.ciphers = ciphers.clone();
    }
    let ctx = TlsContext::client(settings).map_err(|e| format!("TLS settings: {e}"))?;
    Ok(Resolved {
        peer,
        tls: Some(ctx),
        uri,
    })
}

/// The largest frame accepted from the server (responses here are small).
const MAX_FRAME: u64 = 1 << 20;
/// Room kept free in the input buffer for a read.
const READ_ROOM: usize = 16 * 1024;
/// Ciphertext read at once: a whole TLS record and then some.
const RAW_READ: usize = 18 * 1024;
/// The Max-Message-Size our CSM announces.
const OUR_MAX_MESSAGE_SIZE: u32 = 65_536;

/// One connection: the socket, the TLS channel (if any), plaintext in and out.
struct Conn {
    socket: TcpStream,
    tls: Option<Box<TlsChannel>>,
    /// Received plaintext: `input[start..end]` not yet taken.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Ciphertext read buffer (TLS only).
    raw: Vec<u8>,
    /// Plaintext frames to send.
    out: Vec<u8>,
}

impl Conn {
    /// TCP connect and (coaps+tcp://) the TLS handshake, by `deadline`.
    async fn open(
        peer: SocketAddr,
        tls: Option<&TlsContext>,
        deadline: Instant,
    ) -> Result<Conn, String> {
        let socket = tokio::time::timeout_at(deadline.into(), TcpStream::connect(peer))
            .await
            .map_err(|_| "TCP connect timed out".to_string())?
            .map_err(|e| format!("TCP connect: {e}"))?;
        let _ = socket.set_nodelay(true);
        let channel = match tls {
            Some(ctx) => Some(Box::new(
                TlsChannel::connect(ctx, Instant::now()).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        let mut conn = Conn {
            socket,
            raw: if channel.is_some() {
                vec![0; RAW_READ]
            } else {
                Vec::new()
            },
            tls: channel,
            input: Vec::new(),
            start: 0,
            end: 0,
            out: Vec::new(),
        };
        if conn.tls.is_some() {
            conn.handshake(deadline).await?;
        }
        Ok(conn)
    }

    /// Writes what the TLS channel has queued.
    async fn write_tls_output(&mut self) -> Result<(), String> {
        if let Some(tls) = self.tls.as_mut() {
            while let Some(bytes) = tls.poll_output() {
                self.socket
                    .write_all(&bytes)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
        }
        Ok(())
    }

    fn tls_closed_reason(&self) -> Option<String> {
        match self.tls.as_ref().map(|t| t.state()) {
            Some(tern::tls::ChannelState::Closed(reason)) => Some(reason.clone()),
            _ => None,
        }
    }

    async fn handshake(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            self.write_tls_output().await?;
            let tls = self.tls.as_mut().expect("a TLS connection");
            if tls.is_established() {
                return Ok(());
            }
            if let Some(reason) = self.tls_closed_reason() {
                return Err(format!("TLS handshake: {reason}"));
            }
            let n = tokio::time::timeout_at(deadline.into(), self.socket.read(&mut self.raw))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("read during the TLS handshake: {e}"))?;
            let tls = self.tls.as_mut().expect("a TLS connection");
            if n == 0 {
                tls.handle_eof(Instant::now());
                let _ = self.write_tls_output().await;
                return Err("the server closed the connection during the TLS handshake".into());
            }
            tls.handle_input(Instant::now(), &self.raw[..n]);
        }
    }

    /// The negotiated TLS version and cipher suite, e.g. ("TLSv1.2", "PSK-AES128-GCM-SHA256").
    fn tls_info(&self) -> Option<(&'static str, &'static str)> {
        let tls = self.tls.as_ref()?;
        let version = match tls.protocol_version()? {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        };
        Some((version, tls.cipher().unwrap_or("?")))
    }

    /// Sends `out` (encrypted for TLS) and empties it.
    async fn flush(&mut self) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        match self.tls.as_mut() {
            Some(tls) => {
                tls.send(&self.out).map_err(|e| format!("TLS send: {e}"))?;
                self.out.clear();
                self.write_tls_output().await
            }
            None => {
                let r = self.socket.write_all(&self.out).await;
                self.out.clear();
                r.map_err(|e| format!("write: {e}"))
            }
        }
    }

    /// Room for at least [`READ_ROOM`] bytes after `end`.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.input.len() - self.end < READ_ROOM {
            if self.start > 0 {
                self.input.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.input.len() - self.end < READ_ROOM {
                let want = (self.end + READ_ROOM).max(self.input.len() * 2);
                self.input.resize(want, 0);
            }
        }
    }

    /// Waits for bytes from the server (until `deadline`) and adds the plaintext to the
    /// input. `Ok(false)`: the deadline passed first.
    async fn fill(&mut self, deadline: Instant) -> Result<bool, String> {
        if self.tls.is_none() {
            self.make_room();
            let end = self.end;
            let read =
                tokio::time::timeout_at(deadline.into(), self.socket.read(&mut self.input[end..]))
                    .await;
            return match read {
                Err(_) => Ok(false),
                Ok(Err(e)) => Err(format!("read: {e}")),
                Ok(Ok(0)) => Err("the server closed the connection".into()),
                Ok(Ok(n)) => {
                    self.end += n;
                    Ok(true)
                }
            };
        }
        loop {
            // Records already read (with the handshake's last flight, or behind the record
            // read last time) are decrypted before the socket is waited on.
            let got = self.drain_plaintext();
            self.write_tls_output().await?;
            if got > 0 {
                return Ok(true);
            }
            if let Some(reason) = self.tls_closed_reason() {
                return Err(format!("TLS: {reason}"));
            }
            if self.raw.is_empty() {
                self.raw = vec![0; RAW_READ];
            }
            let read =
                tokio::time::timeout_at(deadline.into(), self.socket.read(&mut self.raw)).await;
            let tls = self.tls.as_mut().expect("a TLS connection");
            match read {
                Err(_) => return Ok(false),
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Ok(Ok(0)) => tls.handle_eof(Instant::now()),
                Ok(Ok(n)) => tls.handle_input(Instant::now(), &self.raw[..n]),
            }
        }
    }

    /// Decrypts what the TLS channel holds into the input; returns how many bytes.
    fn drain_plaintext(&mut self) -> usize {
        let mut got = 0;
        loop {
            self.make_room();
            let Some(tls) = self.tls.as_mut() else {
                return got;
            };
            let end = self.end;
            let k = tls.read_plaintext(&mut self.input[end..]);
            if k == 0 {
                return got;
            }
            self.end += k;
            got += k;
        }
    }

    /// The next complete frame in the input: its header and its bytes' range.
    fn next_frame(&mut self) -> Result<Option<(frame::FrameHeader, usize, usize)>, String> {
        let available = &self.input[self.start..self.end];
        let Some(header) = frame::parse_header(available).map_err(|e| format!("frame: {e}"))?
        else {
            return Ok(None);
        };
        let len = header.frame_len();
        if len > MAX_FRAME {
            return Err(format!("a frame of {len} bytes from the server"));
        }
        let len = len as usize;
        if available.len() < len {
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        Ok(Some((header, at, at + len)))
    }

    /// Sends our CSM and waits (until `deadline`) for the server's, which must be its first
    /// frame.
    async fn exchange_csm(&mut self, deadline: Instant) -> Result<(), String> {
        let csm = Csm {
            max_message_size: Some(OUR_MAX_MESSAGE_SIZE),
            block_wise_transfer: false,
        };
        frame::encode(&csm.to_message(), &mut self.out).map_err(|e| e.to_string())?;
        self.flush().await?;
        loop {
            if let Some((_, from, to)) = self.next_frame()? {
                let message = frame::decode(&self.input[from..to]).map_err(|e| e.to_string())?;
                return match Signal::parse(&message) {
                    Ok(Signal::Csm(_)) => Ok(()),
                    Ok(other) => Err(format!("the server's first frame is {other:?}, not a CSM")),
                    Err(e) => Err(format!(
                        "the server's first frame ({}) is not a CSM: {e}",
                        message.code
                    )),
                };
            }
            if !self.fill(deadline).await? {
                return Err("no CSM from the server in time".into());
            }
        }
    }

    /// close_notify (TLS), then the socket is dropped.
    async fn close(mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.close();
            let _ = self.write_tls_output().await;
        }
    }

    /// Frees the buffers of a connection about to be held idle.
    fn shrink(&mut self) {
        self.input = Vec::new();
        self.start = 0;
        self.end = 0;
        self.out = Vec::new();
        self.raw = Vec::new();
    }

    /// Whether the server still holds the connection: no end of stream, no read error, no
    /// close_notify or alert (what the server sent meanwhile is read and dropped).
    fn still_open(&mut self) -> bool {
        let mut buf = [0u8; 2048];
        loop {
            match self.socket.try_read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    if let Some(tls) = self.tls.as_mut() {
                        tls.handle_input(Instant::now(), &buf[..n]);
                        let mut plain = [0u8; 2048];
                        while tls.read_plaintext(&mut plain) > 0 {}
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        self.tls_closed_reason().is_none()
    }
}

/// A latency histogram in microseconds: exact below 1,024 µs, then 512 buckets per power of
/// two (0.2% resolution), up to 2^42 µs.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const HIST_LINEAR: u64 = 1024;
const HIST_SUB: u64 = 512;

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; (HIST_LINEAR + 32 * HIST_SUB) as usize],
            total: 0,
        }
    }

    fn bucket(us: u64) -> usize {
        if us < HIST_LINEAR {
            return us as usize;
        }
        let msb = 63 - u64::from(us.leading_zeros()); // >= 10
        let octave = (msb - 10).min(31);
        let shift = octave + 1;
        let sub = ((us >> shift) - HIST_SUB).min(HIST_SUB - 1);
        (HIST_LINEAR + octave * HIST_SUB + sub) as usize
    }

    /// The lowest value of a bucket.
    fn value(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < HIST_LINEAR {
            return b;
        }
        let octave = (b - HIST_LINEAR) / HIST_SUB;
        let sub = (b - HIST_LINEAR) % HIST_SUB + HIST_SUB;
        sub << (octave + 1)
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The nearest-rank percentile (bucket's lowest value).
    fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        Self::value(self.counts.len() - 1)
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// The request frame of each in-flight slot: the same GET, a 2-byte token per slot.
fn request_frames(uri: &CoapUri, window: usize) -> Result<Vec<Vec<u8>>, String> {
    let options = uri.request_options();
    (0..window)
        .map(|slot| {
            let mut m = Message::new(MessageType::Con, Code::GET);
            m.token = Token::new(&(slot as u16).to_be_bytes()).ok_or("token")?;
            for (number, value) in &options {
                m.options.push(*number, value.clone());
            }
            frame::to_bytes(&m).map_err(|e| e.to_string())
        })
        .collect()
}

#[derive(Default)]
struct ConnResult {
    /// Responses 2.05 within the run (their latencies are in the histogram).
    ok: u64,
    /// Other responses within the run.
    errors: u64,
    /// Requests outstanding when the connection stopped answering or failed.
    timeouts: u64,
    /// Why the connection ended early, if it did.
    failure: Option<String>,
    hist: Option<Histogram>,
    tls: Option<(&'static str, &'static str)>,
}

/// One connection's closed loop, from `start` to `until`; `conn` has exchanged CSMs.
async fn request_loop(
    mut conn: Conn,
    frames: Vec<Vec<u8>>,
    start: Instant,
    until: Instant,
    timeout: Duration,
) -> ConnResult {
    let window = frames.len();
    let mut result = ConnResult {
        tls: conn.tls_info(),
        ..Default::default()
    };
    let mut hist = Histogram::new();
    // When each slot's request went out; `None`: not in flight.
    let mut sent: Vec<Option<Instant>> = vec![None; window];
    tokio::time::sleep_until(start.into()).await;
    let now = Instant::now();
    for (slot, f) in frames.iter().enumerate() {
        conn.out.extend_from_slice(f);
        sent[slot] = Some(now);
    }
    let mut in_flight = window;
    let outcome: Result<(), String> = async {
        conn.flush().await?;
        let mut last_progress = Instant::now();
        loop {
            let deadline = until.min(last_progress + timeout);
            if !conn.fill(deadline).await? {
                if Instant::now() >= until {
                    return Ok(());
                }
                return Err(format!(
                    "no response for {:.1} s with {in_flight} requests outstanding",
                    timeout.as_secs_f64()
                ));
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            last_progress = now;
            while let Some((header, from, to)) = conn.next_frame()? {
                let code = Code(conn.input[from + header.code_offset]);
                if code.is_signaling() {
                    let message =
                        frame::decode(&conn.input[from..to]).map_err(|e| e.to_string())?;
                    match Signal::parse(&message) {
                        Ok(Signal::Ping(_)) => {
                            // A Pong carries the Ping's token (RFC 8323 §5.4).
                            let mut pong = Ping::default().to_pong();
                            pong.token = message.token;
                            frame::encode(&pong, &mut conn.out).map_err(|e| e.to_string())?;
                        }
                        Ok(Signal::Csm(_)) | Ok(Signal::Pong(_)) => {}
                        Ok(Signal::Release(r)) => {
                            return Err(format!("the server sent Release: {}", r.diagnostic))
                        }
                        Ok(Signal::Abort(a)) => {
                            return Err(format!("the server sent Abort: {}", a.diagnostic))
                        }
                        Err(e) => return Err(format!("a bad signal from the server: {e}")),
                    }
                    continue;
                }
                let token_at = from + header.code_offset + 1;
                let token = &conn.input[token_at..token_at + header.token_len];
                let slot = match token {
                    [a, b] => usize::from(u16::from_be_bytes([*a, *b])),
                    _ => usize::MAX,
                };
                let Some(at) = sent.get_mut(slot).and_then(Option::take) else {
                    return Err(format!(
                        "a {code} response with a token not in flight: {token:02x?}"
                    ));
                };
                if code == Code::CONTENT {
                    result.ok += 1;
                    hist.record(micros(now.saturating_duration_since(at)));
                } else {
                    result.errors += 1;
                }
                conn.out.extend_from_slice(&frames[slot]);
                sent[slot] = Some(now);
            }
            conn.flush().await?;
        }
    }
    .await;
    in_flight = sent.iter().filter(|s| s.is_some()).count();
    if let Err(e) = outcome {
        result.timeouts = in_flight as u64;
        result.failure = Some(e);
    }
    result.hist = Some(hist);
    conn.close().await;
    result
}

/// Opens a connection and exchanges CSMs.
async fn open_coap(
    peer: SocketAddr,
    tls: Option<&TlsContext>,
    timeout: Duration,
) -> Result<Conn, String> {
    let deadline = Instant::now() + timeout;
    let mut conn = Conn::open(peer, tls, deadline).await?;
    conn.exchange_csm(deadline).await?;
    Ok(conn)
}

async fn requests(args: RequestArgs) -> Result<ExitCode, String> {
    check_count("connections", args.connections, 10_000)?;
    check_count("window", args.window, 1000)?;
    let duration = check_seconds("duration", args.duration)?;
    let timeout = check_seconds("timeout", args.timeout)?;
    let target = resolve(&args.target, timeout).await?;
    let frames = request_frames(&target.uri, args.window)?;
    // Every connection is set up (TCP, TLS, CSMs) before the clock starts.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let tls = target.tls.clone();
        let peer = target.peer;
        set.spawn(async move { open_coap(peer, tls.as_ref(), timeout).await });
    }
    let mut conns = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.map_err(|e| format!("a connection task failed: {e}"))? {
            Ok(c) => conns.push(c),
            Err(e) => return Err(format!("connection to {} not set up: {e}", target.peer)),
        }
    }
    let start = Instant::now() + Duration::from_millis(10);
    let until = start + duration;
    let mut tasks = Vec::new();
    for conn in conns {
        tasks.push(tokio::spawn(request_loop(
            conn,
            frames.clone(),
            start,
            until,
            timeout,
        )));
    }
    let mut hist = Histogram::new();
    let (mut ok, mut errors, mut timeouts, mut failed) = (0u64, 0u64, 0u64, 0usize);
    let mut last_failure = None;
    let mut tls = None;
    for task in tasks {
        let r = task
            .await
            .map_err(|e| format!("a connection task failed: {e}"))?;
        ok += r.ok;
        errors += r.errors;
        timeouts += r.timeouts;
        if let Some(h) = &r.hist {
            hist.merge(h);
        }
        if r.failure.is_some() {
            failed += 1;
            last_failure = r.failure;
        }
        tls = r.tls.or(tls);
    }
    let elapsed = duration.as_secs_f64();
    let rps = ok as f64 / elapsed;
    let (p50, p90, p99, p999) = (
        hist.percentile(50.0),
        hist.percentile(90.0),
        hist.percentile(99.0),
        hist.percentile(99.9),
    );
    let (version, cipher) = tls.unwrap_or(("", ""));
    if args.json {
        println!(
            "{{\"requests\":{ok},\"rps\":{rps:.1},\"p50_us\":{p50},\"p90_us\":{p90},\"p99_us\":{p99},\"p999_us\":{p999},\"errors\":{errors},\"timeouts\":{timeouts},\"failed_connections\":{failed},\"connections\":{},\"window\":{},\"duration_s\":{elapsed:.2},\"tls_version\":\"{version}\",\"cipher\":\"{cipher}\"}}",
            args.connections, args.window
        );
    } else {
        println!(
            "{} for {elapsed:.1} s, {} connections × {} pipelined{}",
            args.target.uri,
            args.connections,
            args.window,
            if version.is_empty() {
                String::new()
            } else {
                format!(", {version} {cipher}")
            }
        );
        println!("  requests        {ok}");
        println!("  requests/s      {rps:.0}");
        println!("  latency p50     {p50} µs");
        println!("  latency p90     {p90} µs");
        println!("  latency p99     {p99} µs");
        println!("  latency p99.9   {p999} µs");
        println!("  errors          {errors}");
        println!("  timeouts        {timeouts}");
        println!("  failed conns    {failed}");
    }
    if let Some(e) = last_failure {
        eprintln!("last connection failure: {e}");
    }
    Ok(if ok == 0 || failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Default)]
struct HandshakeResult {
    hist: Option<Histogram>,
    done: u64,
    failures: u64,
    last_error: Option<String>,
    tls: Option<(&'static str, &'static str)>,
}

async fn handshake_worker(
    peer: SocketAddr,
    tls: Option<TlsContext>,
    csm: bool,
    timeout: Duration,
    until: Instant,
) -> HandshakeResult {
    let mut result = HandshakeResult::default();
    let mut hist = Histogram::new();
    while Instant::now() < until {
        let start = Instant::now();
        // Attempts still running when the time is up are abandoned, not counted.
        let deadline = (start + timeout).min(until);
        let attempt = async {
            let mut conn = Conn::open(peer, tls.as_ref(), deadline).await?;
            if csm {
                conn.exchange_csm(deadline).await?;
            }
            Ok::<_, String>(conn)
        }
        .await;
        match attempt {
            Ok(conn) => {
                hist.record(micros(start.elapsed()));
                result.done += 1;
                if result.tls.is_none() {
                    result.tls = conn.tls_info();
                }
                conn.close().await;
            }
            Err(_) if Instant::now() >= until => {}
            Err(e) => {
                result.failures += 1;
                result.last_error = Some(e);
                // A server that refuses outright is not hammered in a tight loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    result.hist = Some(hist);
    result
}

async fn handshakes(args: HandshakeArgs) -> Result<ExitCode, String> {
    check_count("concurrency", args.concurrency, 10_000)?;
    let duration = check_seconds("duration", args.duration)?;
    let timeout = check_seconds("timeout", args.timeout)?;
    let target = resolve(&args.target, timeout).await?;
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        tasks.push(tokio::spawn(handshake_worker(
            target.peer,
            target.tls.clone(),
            args.csm,
            timeout,
            until,
        )));
    }
    let mut hist = Histogram::new();
    let (mut done, mut failures) = (0u64, 0u64);
    let mut last_error = None;
    let mut tls = None;
    for task in tasks {
        let r = task.await.map_err(|e| format!("a worker failed: {e}"))?;
        if let Some(h) = &r.hist {
            hist.merge(h);
        }
        done += r.done;
        failures += r.failures;
        last_error = r.last_error.or(last_error);
        tls = r.tls.or(tls);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = done as f64 / elapsed;
    let (p50, p99, p999, max) = (
        hist.percentile(50.0),
        hist.percentile(99.0),
        hist.percentile(99.9),
        hist.percentile(100.0),
    );
    let (version, cipher) = tls.unwrap_or(("", ""));
    if args.json {
        println!(
            "{{\"handshakes\":{done},\"handshakes_per_s\":{rate:.1},\"failures\":{failures},\"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999},\"max_us\":{max},\"concurrency\":{},\"csm\":{},\"duration_s\":{elapsed:.2},\"tls_version\":\"{version}\",\"cipher\":\"{cipher}\"}}",
            args.concurrency, args.csm
        );
    } else {
        println!(
            "{} for {elapsed:.1} s, {} attempts in flight{}{}",
            args.target.uri,
            args.concurrency,
            if args.csm { ", with CSM exchange" } else { "" },
            if version.is_empty() {
                String::new()
            } else {
                format!(", {version} {cipher}")
            }
        );
        println!("  connections     {done}");
        println!("  connections/s   {rate:.0}");
        println!("  latency p50     {p50} µs");
        println!("  latency p99     {p99} µs");
        println!("  latency p99.9   {p999} µs");
        println!("  latency max     {max} µs");
        println!("  failures        {failures}");
    }
    if let Some(e) = last_error {
        eprintln!("last failure: {e}");
    }
    Ok(if done == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The soft limit on open files (Linux), if readable.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// One idle connection, tried up to `attempts` times.
async fn open_idle(
    peer: SocketAddr,
    tls: Option<TlsContext>,
    timeout: Duration,
    attempts: u32,
) -> Result<(Conn, u32), String> {
    let mut last = String::new();
    for attempt in 1..=attempts {
        match open_coap(peer, tls.as_ref(), timeout).await {
            Ok(conn) => return Ok((conn, attempt - 1)),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

async fn idle(args: IdleArgs) -> Result<ExitCode, String> {
    check_count("connections", args.connections, 100_000)?;
    check_count("concurrency", args.concurrency, 10_000)?;
    check_count("attempts", args.attempts as usize, 100)?;
    let hold = check_seconds("hold", args.hold)?;
    let timeout = check_seconds("timeout", args.timeout)?;
    if let Some(limit) = open_files_limit() {
        let need = args.connections as u64 + 64;
        if limit < need {
            return Err(format!(
                "{} connections need about {need} open files, and the limit is {limit}: raise it (ulimit -n)",
                args.connections
            ));
        }
    }
    let target = resolve(&args.target, timeout).await?;
    let rss_before = rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let mut held = Vec::with_capacity(args.connections);
    let (mut failures, mut retries) = (0usize, 0u64);
    let mut last_error = None;
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0usize;
    while next < args.connections || !set.is_empty() {
        while next < args.connections && set.len() < args.concurrency {
            set.spawn(open_idle(
                target.peer,
                target.tls.clone(),
                timeout,
                args.attempts,
            ));
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok((mut conn, r)))) => {
                retries += u64::from(r);
                conn.shrink();
                held.push(conn);
            }
            Some(Ok(Err(e))) => {
                failures += 1;
                last_error = Some(e);
            }
            Some(Err(e)) => return Err(format!("a connection task failed: {e}")),
            None => break,
        }
    }
    let setup = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes().unwrap_or(0);
    let growth = rss_after.saturating_sub(rss_before);
    let per_connection = if held.is_empty() {
        0
    } else {
        growth / held.len() as u64
    };
    // One line, flushed, that a script waits for before reading the server's memory (a
    // reader that went away is no reason to drop the connections early).
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "{{\"connections\":{},\"failures\":{failures},\"retries\":{retries},\"setup_s\":{setup:.2},\"client_rss_growth_bytes\":{growth},\"client_bytes_per_connection\":{per_connection}}}",
        held.len()
    );
    let _ = stdout.flush();
    if let Some(e) = &last_error {
        eprintln!("last failure: {e}");
    }
    tokio::time::sleep(hold).await;
    let alive = held
        .iter_mut()
        .map(Conn::still_open)
        .filter(|&open| open)
        .count();
    // A second line: how many the server kept through the hold.
    let _ = writeln!(
        stdout,
        "{{\"still_open\":{alive},\"connections\":{},\"hold_s\":{:.1}}}",
        held.len(),
        hold.as_secs_f64()
    );
    for conn in held {
        conn.close().await;
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_round_down_within_a_fraction() {
        for us in [0u64, 1, 1023, 1024, 1025, 4097, 99_999, 1_234_567, 1 << 40] {
            let v = Histogram::value(Histogram::bucket(us));
            assert!(v <= us, "{us}: {v}");
            assert!(us - v <= us / 256 + 1, "{us}: {v}");
        }
        let mut h = Histogram::new();
        for us in 1..=100 {
            h.record(us);
        }
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(Histogram::new().percentile(50.0), 0);
    }

    #[test]
    fn request_frames_differ_only_in_their_tokens() {
        let uri = CoapUri::parse("coap+tcp://127.0.0.1/a/b").unwrap();
        let frames = request_frames(&uri, 300).unwrap();
        assert_eq!(frames.len(), 300);
        for (slot, f) in frames.iter().enumerate() {
            let m = frame::decode(f).unwrap();
            assert_eq!(m.code, Code::GET);
            assert_eq!(m.token.as_bytes(), (slot as u16).to_be_bytes());
            assert_eq!(m.path_segments().collect::<Vec<_>>(), ["a", "b"]);
            assert_eq!(f.len(), frames[0].len());
        }
    }
}

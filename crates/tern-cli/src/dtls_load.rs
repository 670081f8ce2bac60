//! `tern dtls-load`: DTLS load that `tern bench` (requests over established sessions) does not
//! make, driving [`DtlsChannel`]s directly over UDP sockets, with no CoAP runtime in between:
//!
//! - `handshakes`: full DTLS handshakes per second, closed loop — each worker opens a new socket
//!   (a new source port, so a new session on the server), completes the handshake (cookie
//!   exchange included), sends close_notify, closes the socket, and starts again;
//! - `sessions`: opens N sessions from N sockets, each doing one CoAP GET, then holds them all
//!   idle, so the server's memory per idle session can be read;
//! - `flood`: sends the ClientHello of a real client from many distinct source addresses
//!   (loopback only), as a spoofing attacker would, and never answers;
//! - `requests`: confirmable GETs over S established sessions, W in flight on each, closed
//!   loop: a request built once and re-stamped (message ID and token), sealed by the record
//!   layer, its answer matched by message ID. Much cheaper per request than `tern bench`'s full
//!   client, so that one load core can keep a fast server busy.

use crate::load::{check_seconds, latency_percentiles, percentile, rss_bytes};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tokio::net::UdpSocket;

use tern::proto::{Code, Message, MessageType, Token};
use tern::tls::{ChannelState, DtlsChannel, DtlsContext, DtlsSettings};

/// Arguments of `tern dtls-load`.
#[derive(Args, Debug)]
pub struct DtlsLoadArgs {
    #[command(subcommand)]
    mode: Mode,
}

/// What load to make.
#[derive(Subcommand, Debug)]
enum Mode {
    /// Full handshakes per second: new session per handshake, close_notify, again.
    Handshakes(HandshakeArgs),
    /// Opens N sessions from N sockets (one GET each) and holds them idle.
    Sessions(SessionArgs),
    /// Sends one real ClientHello from many spoofed source addresses (loopback only).
    Flood(FloodArgs),
    /// Closed-loop GETs over established sessions, with the record layer driven directly.
    Requests(RequestArgs),
}

/// The server and the credentials, shared by the modes: a PSK, or (ECDHE-ECDSA) the CA
/// that the server's certificate is verified with.
#[derive(Args, Debug)]
struct Target {
    /// The server's DTLS address, e.g. 127.0.0.1:5684.
    server: SocketAddr,
    /// PSK identity.
    #[arg(short = 'u', long = "psk-identity", requires = "psk_key")]
    psk_identity: Option<String>,
    /// PSK: text, hex:00ff..., or sha256:PASSWORD (its SHA-256 digest)
    #[arg(short = 'k', long = "psk-key", requires = "psk_identity")]
    psk_key: Option<String>,
    /// Certificates instead of a PSK: verify the server's certificate (which must name the
    /// server's address) against this CA.
    #[arg(short = 'C', long = "ca", conflicts_with = "psk_identity")]
    ca: Option<std::path::PathBuf>,
    /// Certificates without verifying the server's chain (the handshake still checks the
    /// server's signature over its key exchange): a load that spends less of its core per
    /// handshake than the server does.
    #[arg(long = "no-verify", conflicts_with_all = ["psk_identity", "ca"])]
    no_verify: bool,
}

#[derive(Args, Debug)]
struct HandshakeArgs {
    #[command(flatten)]
    target: Target,
    /// Handshakes in flight.
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds a handshake may take before it counts as failed.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SessionArgs {
    #[command(flatten)]
    target: Target,
    /// Sessions to open (one socket each: mind `ulimit -n`).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    sessions: usize,
    /// Sessions being set up at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// The path each session GETs once.
    #[arg(long, default_value = "/")]
    path: String,
    /// Seconds to hold the sessions once all are up (then close_notify and exit).
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Seconds a session's handshake and GET may take.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[derive(Args, Debug)]
struct FloodArgs {
    #[command(flatten)]
    target: Target,
    /// ClientHellos to send, each from its own source address.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    count: usize,
    /// ClientHellos per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

#[derive(Args, Debug)]
struct RequestArgs {
    #[command(flatten)]
    target: Target,
    /// Sessions (one socket each).
    #[arg(short = 's', long, default_value_t = 8)]
    sessions: usize,
    /// Requests in flight per session.
    #[arg(short = 'w', long, default_value_t = 8)]
    window: usize,
    /// The path to GET.
    #[arg(long, default_value = "/")]
    path: String,
    /// Seconds to run (after the handshakes).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds a request may go unanswered before it counts as timed out (and is replaced).
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `tern dtls-load`.
pub async fn run(args: DtlsLoadArgs) -> Result<ExitCode, String> {
    match args.mode {
        Mode::Handshakes(a) => handshakes(a).await,
        Mode::Sessions(a) => sessions(a).await,
        Mode::Flood(a) => flood(a).await,
        Mode::Requests(a) => requests(a).await,
    }
}

fn client_context(target: &Target, handshake_timeout: Duration) -> Result<DtlsContext, String> {
    let settings = match (&target.psk_identity, &target.psk_key, &target.ca) {
        (Some(identity), Some(key), None) => {
            let key =
                tern::tls::credentials::parse_key(key).map_err(|e| format!("-k/--psk-key: {e}"))?;
            let psk = tern::Psk::new(identity.as_bytes(), key.to_vec())
                .map_err(|e| format!("-u/-k: {e}"))?;
            DtlsSettings {
                psk: Some(psk),
                handshake_timeout,
                ..Default::default()
            }
        }
        (None, None, None) if target.no_verify => {
            let mut pki = tern::tls::PkiSettings::verify_only(None);
            pki.verify_peer = false;
            DtlsSettings {
                pki: Some(pki),
                handshake_timeout,
                ..Default::default()
            }
        }
        (None, None, Some(ca)) => {
            let mut pki =
                tern::tls::PkiSettings::verify_only(Some(tern::tls::Source::File(ca.clone())));
            pki.expected_name = Some(target.server.ip().to_string());
            DtlsSettings {
                pki: Some(pki),
                handshake_timeout,
                ..Default::default()
            }
        }
        _ => return Err("give a PSK (-u IDENTITY -k KEY), a CA (-C FILE) or --no-verify".into()),
    };
    DtlsContext::client(settings).map_err(|e| e.to_string())
}

fn local_any(peer: SocketAddr) -> SocketAddr {
    match peer.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (ip, 0).into(),
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Sends what the channel has queued.
async fn flush(socket: &UdpSocket, channel: &mut DtlsChannel) -> Result<(), String> {
    while let Some(d) = channel.poll_transmit() {
        socket
            .send(&d)
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    Ok(())
}

/// Drives a channel until `done` holds for it, it closes, or `deadline` passes.
async fn drive_until(
    socket: &UdpSocket,
    channel: &mut DtlsChannel,
    buf: &mut [u8],
    deadline: Instant,
    mut done: impl FnMut(&mut DtlsChannel) -> bool,
) -> Result<(), String> {
    flush(socket, channel).await?;
    loop {
        if done(channel) {
            return Ok(());
        }
        if let ChannelState::Closed(reason) = channel.state() {
            return Err(reason.clone());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err("timed out".into());
        }
        let wake = channel.poll_timeout().map_or(deadline, |t| t.min(deadline));
        match tokio::time::timeout_at(wake.into(), socket.recv(buf)).await {
            Ok(Ok(n)) => channel.handle_datagram(Instant::now(), &buf[..n]),
            // ICMP port unreachable on the connected socket: nobody listens.
            Ok(Err(e)) => return Err(format!("receive failed: {e}")),
            Err(_) => channel.handle_timeout(Instant::now()),
        }
        flush(socket, channel).await?;
    }
}

/// A new socket and a completed handshake with `peer`.
async fn open_session(
    ctx: &DtlsContext,
    peer: SocketAddr,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<(UdpSocket, DtlsChannel), String> {
    let socket = UdpSocket::bind(local_any(peer))
        .await
        .map_err(|e| format!("cannot bind a socket: {e}"))?;
    socket
        .connect(peer)
        .await
        .map_err(|e| format!("cannot connect a socket: {e}"))?;
    let start = Instant::now();
    let mut channel = DtlsChannel::connect(ctx, start).map_err(|e| e.to_string())?;
    drive_until(&socket, &mut channel, buf, start + timeout, |c| {
        c.is_established()
    })
    .await?;
    Ok((socket, channel))
}

#[derive(Default)]
struct HandshakeResult {
    latencies_us: Vec<u32>,
    cipher: Option<&'static str>,
    failures: u64,
    last_error: Option<String>,
}

async fn handshake_worker(
    ctx: DtlsContext,
    peer: SocketAddr,
    timeout: Duration,
    until: Instant,
) -> HandshakeResult {
    let mut result = HandshakeResult::default();
    let mut buf = vec![0u8; 2048];
    while Instant::now() < until {
        let start = Instant::now();
        // Handshakes still running when the time is up are abandoned, not counted.
        let limit = timeout.min(until.saturating_duration_since(start));
        match open_session(&ctx, peer, &mut buf, limit).await {
            Ok((socket, mut channel)) => {
                let us = start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                result.latencies_us.push(us);
                result.cipher = channel.cipher();
                channel.close();
                let _ = flush(&socket, &mut channel).await;
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
    result
}

async fn handshakes(args: HandshakeArgs) -> Result<ExitCode, String> {
    if args.concurrency == 0 || args.concurrency > 10_000 {
        return Err(format!(
            "concurrency must be between 1 and 10000, not {}",
            args.concurrency
        ));
    }
    let duration = check_seconds("duration", args.duration)?;
    let timeout = check_seconds("timeout", args.timeout)?;
    let ctx = client_context(&args.target, timeout)?;
    let peer = args.target.server;
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(handshake_worker(ctx, peer, timeout, until)));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut last_error = None;
    let mut cipher = None;
    for task in tasks {
        let r = task.await.map_err(|e| format!("a worker failed: {e}"))?;
        cipher = r.cipher.or(cipher);
        latencies.extend(r.latencies_us);
        failures += r.failures;
        last_error = r.last_error.or(last_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let done = latencies.len();
    let rate = done as f64 / elapsed;
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    if args.json {
        println!(
            "{{\"handshakes\":{done},\"handshakes_per_s\":{rate:.1},\"failures\":{failures},\"p50_us\":{p50},\"p99_us\":{p99},\"concurrency\":{},\"duration_s\":{elapsed:.2},\"cipher\":\"{}\"}}",
            args.concurrency,
            cipher.unwrap_or("")
        );
    } else {
        println!(
            "{peer} for {elapsed:.1} s, {} handshakes in flight",
            args.concurrency
        );
        println!("  handshakes      {done}");
        println!("  handshakes/s    {rate:.0}");
        println!("  latency p50     {p50} µs");
        println!("  latency p99     {p99} µs");
        println!("  failures        {failures}");
    }
    if let Some(cipher) = &cipher {
        eprintln!("cipher suite: {cipher}");
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

fn coap_get(path: &str, mid: u16) -> Result<Vec<u8>, String> {
    let mut m = Message::new(MessageType::Con, Code::GET);
    m.mid = mid;
    m.token = Token::new(&mid.to_be_bytes()).ok_or("token")?;
    m.set_path(path);
    m.to_bytes().map_err(|e| e.to_string())
}

/// One session: handshake, one confirmable GET answered 2.xx (resent every second until the
/// time-out), then the socket and channel are handed back to be held.
async fn open_with_get(
    ctx: DtlsContext,
    peer: SocketAddr,
    path: String,
    mid: u16,
    timeout: Duration,
) -> Result<(UdpSocket, DtlsChannel), String> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 2048];
    let (socket, mut channel) = open_session(&ctx, peer, &mut buf, timeout).await?;
    let request = coap_get(&path, mid)?;
    loop {
        channel.send(&request).map_err(|e| e.to_string())?;
        let attempt = (Instant::now() + Duration::from_secs(1)).min(deadline);
        let mut answered = None;
        let outcome = drive_until(&socket, &mut channel, &mut buf, attempt, |c| {
            while let Some(plain) = c.poll_received() {
                match tern::proto::wire::Datagram::new_checked(&plain[..]) {
                    Ok(d) if d.mid() == mid && d.code().class() != 0 => {
                        answered = Some(d.code());
                    }
                    _ => {}
                }
            }
            answered.is_some()
        })
        .await;
        match (outcome, answered) {
            (Ok(()), Some(code)) if code.is_success() => return Ok((socket, channel)),
            (Ok(()), Some(code)) => return Err(format!("GET {path} answered {code}")),
            (Err(e), _) if Instant::now() >= deadline => return Err(e),
            (Err(e), _) if e != "timed out" => return Err(e),
            _ => {} // no answer within the second: resend
        }
    }
}

async fn sessions(args: SessionArgs) -> Result<ExitCode, String> {
    if args.sessions == 0 || args.sessions > 100_000 {
        return Err(format!(
            "sessions must be between 1 and 100000, not {}",
            args.sessions
        ));
    }
    if args.concurrency == 0 || args.concurrency > 10_000 {
        return Err(format!(
            "concurrency must be between 1 and 10000, not {}",
            args.concurrency
        ));
    }
    let hold = check_seconds("hold", args.hold)?;
    let timeout = check_seconds("timeout", args.timeout)?;
    let ctx = client_context(&args.target, timeout)?;
    let peer = args.target.server;
    let rss_before = rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let mut held = Vec::with_capacity(args.sessions);
    let mut failures = 0usize;
    let mut last_error = None;
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0usize;
    while next < args.sessions || !set.is_empty() {
        while next < args.sessions && set.len() < args.concurrency {
            let (ctx, path) = (ctx.clone(), args.path.clone());
            let mid = (next % 65_536) as u16;
            set.spawn(open_with_get(ctx, peer, path, mid, timeout));
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(session))) => held.push(session),
            Some(Ok(Err(e))) => {
                failures += 1;
                last_error = Some(e);
            }
            Some(Err(e)) => return Err(format!("a session task failed: {e}")),
            None => break,
        }
    }
    let setup = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes().unwrap_or(0);
    let growth = rss_after.saturating_sub(rss_before);
    let per_session = if held.is_empty() {
        0
    } else {
        growth / held.len() as u64
    };
    // One line, flushed, that the script waits for before reading the server's memory.
    println!(
        "{{\"sessions\":{},\"failures\":{failures},\"setup_s\":{setup:.2},\"client_rss_growth_bytes\":{growth},\"client_bytes_per_session\":{per_session}}}",
        held.len()
    );
    if let Some(e) = &last_error {
        eprintln!("last failure: {e}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::time::sleep(hold).await;
    for (socket, channel) in held.iter_mut() {
        channel.close();
        let _ = flush(socket, channel).await;
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The `i`th spoofed source: 50,000 ports on each of several loopback addresses.
fn spoofed_source(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 77, (i / 50_000) as u8, 1);
    (ip, 10_000 + (i % 50_000) as u16).into()
}

async fn flood(args: FloodArgs) -> Result<ExitCode, String> {
    let peer = args.target.server;
    if !peer.ip().is_loopback() || !peer.is_ipv4() {
        return Err("the flood is for an IPv4 loopback server only".into());
    }
    if args.count == 0 || args.count > 1_000_000 {
        return Err(format!(
            "count must be between 1 and 1000000, not {}",
            args.count
        ));
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(format!("rate must be 0 or more, not {}", args.rate));
    }
    // The first flight of a real client: the same bytes from every spoofed source.
    let ctx = client_context(&args.target, Duration::from_secs(5))?;
    let mut channel = DtlsChannel::connect(&ctx, Instant::now()).map_err(|e| e.to_string())?;
    let hello = channel
        .poll_transmit()
        .ok_or("the client made no ClientHello")?;
    if !tern::tls::record::is_client_hello(&hello) {
        return Err("the client's first datagram is not a ClientHello".into());
    }
    let started = Instant::now();
    let (mut sent, mut bind_failures, mut send_failures) = (0usize, 0usize, 0usize);
    let mut i = 0usize;
    // Each address is tried once; a busy one is skipped, within a bounded number of tries.
    while sent < args.count && i < args.count + 50_000 {
        let source = spoofed_source(i);
        i += 1;
        let socket = match std::net::UdpSocket::bind(source) {
            Ok(s) => s,
            Err(_) => {
                bind_failures += 1;
                continue;
            }
        };
        match socket.send_to(&hello, peer) {
            Ok(_) => sent += 1,
            Err(_) => send_failures += 1,
        }
        drop(socket);
        if args.rate > 0.0 && sent % 256 == 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"sources\":{i},\"bind_failures\":{bind_failures},\"send_failures\":{send_failures},\"hello_bytes\":{},\"duration_s\":{elapsed:.3},\"rate\":{:.0}}}",
        hello.len(),
        sent as f64 / elapsed
    );
    Ok(if sent == args.count {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofed_sources_are_distinct_loopback_addresses() {
        let all: std::collections::HashSet<_> = (0..100_000).map(spoofed_source).collect();
        assert_eq!(all.len(), 100_000);
        assert!(all.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn get_request_encodes() {
        let bytes = coap_get("/", 7).unwrap();
        let d = tern::proto::wire::Datagram::new_checked(&bytes[..]).unwrap();
        assert_eq!(d.mid(), 7);
        assert_eq!(d.code(), Code::GET);
    }
}

#[derive(Default)]
struct RequestResult {
    latencies_us: Vec<u32>,
    timeouts: u64,
    errors: u64,
}

/// Stamps message ID and token (both the ID: a 2-byte token) into a request built once.
fn stamp(template: &mut [u8], mid: u16) {
    let bytes = mid.to_be_bytes();
    template[2..4].copy_from_slice(&bytes);
    template[4..6].copy_from_slice(&bytes);
}

/// One session's closed loop: `window` requests in flight until `until`.
async fn request_worker(
    socket: UdpSocket,
    mut channel: DtlsChannel,
    mut template: Vec<u8>,
    window: usize,
    timeout: Duration,
    until: Instant,
    first_mid: u16,
) -> RequestResult {
    let mut result = RequestResult::default();
    let mut buf = vec![0u8; 2048];
    let mut in_flight: std::collections::HashMap<u16, Instant> =
        std::collections::HashMap::with_capacity(window * 2);
    let mut next_mid = first_mid;
    let mut send = |channel: &mut DtlsChannel,
                    in_flight: &mut std::collections::HashMap<u16, Instant>,
                    now: Instant|
     -> bool {
        let mid = next_mid;
        next_mid = next_mid.wrapping_add(1);
        stamp(&mut template, mid);
        in_flight.insert(mid, now);
        channel.send(&template).is_ok()
    };
    let now = Instant::now();
    for _ in 0..window {
        if !send(&mut channel, &mut in_flight, now) {
            result.errors += 1;
        }
    }
    if flush(&socket, &mut channel).await.is_err() {
        result.errors += 1;
        return result;
    }
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let oldest = in_flight.values().min().copied();
        let wake = oldest.map_or(until, |t| (t + timeout).min(until));
        match tokio::time::timeout_at(wake.into(), socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let now = Instant::now();
                channel.handle_datagram(now, &buf[..n]);
                while let Some(plain) = channel.poll_received() {
                    let Ok(d) = tern::proto::wire::Datagram::new_checked(&plain[..]) else {
                        continue;
                    };
                    // A piggybacked answer or a separate response (its CON is not ACKed
                    // here: the server retransmits, which only costs it).
                    if d.code().class() == 0 {
                        continue;
                    }
                    let Some(sent) = in_flight.remove(&d.mid()) else {
                        continue;
                    };
                    if d.code().is_success() {
                        let us = now
                            .duration_since(sent)
                            .as_micros()
                            .min(u128::from(u32::MAX));
                        result.latencies_us.push(us as u32);
                    } else {
                        result.errors += 1;
                    }
                    if now < until && !send(&mut channel, &mut in_flight, now) {
                        result.errors += 1;
                    }
                }
            }
            Ok(Err(_)) => {
                result.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                // Unanswered for the time-out: counted and replaced by a new request.
                let now = Instant::now();
                let late: Vec<u16> = in_flight
                    .iter()
                    .filter(|(_, &t)| now.duration_since(t) >= timeout)
                    .map(|(&m, _)| m)
                    .collect();
                for mid in late {
                    in_flight.remove(&mid);
                    result.timeouts += 1;
                    if now < until && !send(&mut channel, &mut in_flight, now) {
                        result.errors += 1;
                    }
                }
                channel.handle_timeout(now);
            }
        }
        if flush(&socket, &mut channel).await.is_err() {
            result.errors += 1;
            break;
        }
    }
    channel.close();
    let _ = flush(&socket, &mut channel).await;
    result
}

async fn requests(args: RequestArgs) -> Result<ExitCode, String> {
    if args.sessions == 0 || args.sessions > 10_000 {
        return Err(format!(
            "--sessions must be 1 to 10000, not {}",
            args.sessions
        ));
    }
    if args.window == 0 || args.window > 1024 {
        return Err(format!("--window must be 1 to 1024, not {}", args.window));
    }
    let duration = check_seconds("duration", args.duration)?;
    let timeout = check_seconds("timeout", args.timeout)?;
    let ctx = client_context(&args.target, timeout.max(Duration::from_secs(5)))?;
    let template = coap_get(&args.path, 0)?;
    let peer = args.target.server;
    // Handshakes first, outside the measured time.
    let mut opened = Vec::new();
    for _ in 0..args.sessions {
        let (ctx, path) = (ctx.clone(), args.path.clone());
        opened.push(tokio::spawn(async move {
            open_with_get(ctx, peer, path, 1, Duration::from_secs(10)).await
        }));
    }
    let mut sessions = Vec::new();
    for task in opened {
        let session = task
            .await
            .map_err(|e| format!("a session task failed: {e}"))??;
        sessions.push(session);
    }
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for (i, (socket, channel)) in sessions.into_iter().enumerate() {
        let template = template.clone();
        let first_mid = (i as u16).wrapping_mul(4099).wrapping_add(2);
        tasks.push(tokio::spawn(request_worker(
            socket,
            channel,
            template,
            args.window,
            timeout,
            until,
            first_mid,
        )));
    }
    let mut latencies = Vec::new();
    let (mut timeouts, mut errors) = (0, 0);
    for task in tasks {
        let r = task.await.map_err(|e| format!("a worker failed: {e}"))?;
        latencies.extend(r.latencies_us);
        timeouts += r.timeouts;
        errors += r.errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (p50, p90, p99, p999) = latency_percentiles(&mut latencies);
    let requests = latencies.len();
    let rps = requests as f64 / elapsed;
    let in_flight = args.sessions * args.window;
    if args.json {
        println!(
            "{{\"requests\":{requests},\"rps\":{rps:.1},\"p50_us\":{p50},\"p90_us\":{p90},\"p99_us\":{p99},\"p999_us\":{p999},\"retransmissions\":0,\"timeouts\":{timeouts},\"errors\":{errors},\"concurrency\":{in_flight},\"sockets\":{},\"duration_s\":{elapsed:.2}}}",
            args.sessions
        );
    } else {
        println!(
            "coaps://{peer}{} for {elapsed:.1} s, {} sessions × {} in flight, DTLS, record layer driven directly",
            args.path, args.sessions, args.window
        );
        println!("  requests        {requests}");
        println!("  requests/s      {rps:.0}");
        println!("  latency p50     {p50} µs");
        println!("  latency p99     {p99} µs");
        println!("  latency p99.9   {p999} µs");
        println!("  timeouts        {timeouts}");
        println!("  errors          {errors}");
    }
    Ok(if requests == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

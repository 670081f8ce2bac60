//! Thousands of seeded DTLS sessions over a faulty [`sim::World`](tern_proto::sim::World): a
//! client [`DtlsChannel`] handshakes (PSK, with the listener's cookie exchange) with a server
//! [`DtlsListener`] and the channel it accepts, then sends application messages the server
//! echoes back. Loss, duplication, delay and reordering, bit corruption and partitions are
//! drawn per seed and per direction; the cipher suite rotates between the two AEAD suites the
//! channel protects itself (CCM_8, GCM) and one OpenSSL keeps (CBC-SHA256).
//!
//! The application retries a message that got no echo, each attempt with a payload of its own,
//! so that every payload is sent in exactly one record (DTLS does not retransmit records).
//!
//! Checked for every seed:
//! - no panic, and the run ends (no timer or datagram left) within the horizon;
//! - the server application gets only payloads the client sent, byte for byte, each at most
//!   once (the replay windows: a duplicated or corrupted record must never surface), and the
//!   client gets each echo at most once and only of a payload it sent;
//! - an established session is never closed by what the network does, with two exceptions on
//!   seeds with corruption, each recognised by its reason: the client's fatal alert after its
//!   handshake failed on a corrupted plaintext handshake record, and OpenSSL's fatal alerts for
//!   invalid records it should drop (openssl/openssl#24972, #25389, #25290; see `run_seed`);
//! - without corruption or partition the handshake completes, within the handshake time-out
//!   (60 s of virtual time); a partition from the start lasting past it fails the handshake;
//!   in every other case the handshake completes or fails cleanly (one `HandshakeFailed`, the
//!   channel closed with no timer left, no application data delivered on either side);
//! - once established, every message is echoed (partitions heal before the application's
//!   deadline, and corrupted records are dropped as if lost).
//!
//! OpenSSL decides DTLS retransmission expiry by its own clock (ssl/d1_lib.c: the timer is
//! started and checked against `gettimeofday`; `DTLSv1_handle_timeout` retransmits only once
//! that wall-clock deadline passed, and no API takes a time). The channel's `now` cannot reach
//! it, so this test binary defines `gettimeofday` itself: on a thread running a seed it
//! returns the simulated clock, elsewhere the real time. OpenSSL's own retransmission logic
//! then runs on virtual time (checked by `openssl_runs_on_the_virtual_clock`, which fails if
//! the symbol is ever not interposed), so seeds are replayable and a handshake that waits a
//! minute of virtual time costs no real time. OpenSSL's randomness (client and server randoms,
//! keys, the cookie secret) is not seeded, but nothing in the run depends on its values.
//!
//! Run:    cargo test -p tern-tls --test dtls_sim -- --nocapture
//! Replay: TERN_DTLS_SIM_SEED=1234 cargo test -p tern-tls --test dtls_sim -- --nocapture
//! More:   TERN_DTLS_SIM_SEEDS=100000 cargo test --release -p tern-tls --test dtls_sim

use std::cell::Cell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_proto::sim::{panic_message, seeds_from_env, SplitMix64 as Rng};
use tern_proto::sim::{LinkConfig, Node, World};
use tern_proto::Transmit;
use tern_tls::{
    Accept, ChannelEvent, ChannelState, DtlsChannel, DtlsContext, DtlsListener, DtlsSettings, Psk,
    PskMap, TimerPolicy,
};

/// Seeds run by default: about 10 s in the debug profile on a 2-core machine (one handshake
/// costs well under a millisecond of CPU: PSK, no public-key operation); 100,000 take 45 s in
/// release.
const DEFAULT_SEEDS: u64 = 10_000;
/// A handshake not complete by then fails (the channel's own deadline).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Retransmission schedule: 1 s doubling to 4 s, so that OpenSSL's limit of 12 time-outs per
/// flight (about 43 s) falls within the handshake time-out.
const TIMER: TimerPolicy = TimerPolicy {
    initial_us: 1_000_000,
    max_us: 4_000_000,
};
/// How long the application waits for an echo before sending the message again.
const RETRY: Duration = Duration::from_millis(1500);
/// How long after its first attempt the application keeps trying a message; every partition
/// has healed by then.
const APP_DEADLINE: Duration = Duration::from_secs(300);
/// Virtual time by which everything must have ended.
const HORIZON: Duration = Duration::from_secs(3600);
/// Bound on simulation steps per seed, so that a livelock fails instead of hanging.
const MAX_STEPS: usize = 500_000;
/// Cipher suites, one per seed in turn.
const SUITES: [&str; 3] = ["PSK-AES128-CCM8", "PSK-AES128-GCM-SHA256", OPENSSL_RECORDS];
/// The suite whose records OpenSSL keeps protecting after the handshake (not AEAD).
const OPENSSL_RECORDS: &str = "PSK-AES128-CBC-SHA256";

// --- OpenSSL on the virtual clock -----------------------------------------------------------

thread_local! {
    /// The simulated clock of the seed this thread runs: (start, now).
    static CLOCK: Cell<Option<(Instant, Instant)>> = const { Cell::new(None) };
}

/// What `gettimeofday` reports for the simulated start (any fixed time will do).
const EPOCH_SECS: u64 = 1_700_000_000;

/// Sets the clock OpenSSL reads on this thread to the virtual `now` (`None`: real time).
fn set_clock(clock: Option<(Instant, Instant)>) {
    CLOCK.with(|c| c.set(clock));
}

/// Moves this thread's virtual clock to `now` (no effect outside a seed).
fn tick(now: Instant) {
    CLOCK.with(|c| {
        if let Some((start, _)) = c.get() {
            c.set(Some((start, now)));
        }
    });
}

/// `gettimeofday(2)` for this test binary, which is where OpenSSL reads the time for its DTLS
/// timer: the thread's virtual clock while it runs a seed, else the real time.
///
/// # Safety
///
/// Called by C code with the contract of `gettimeofday`: `tv` is null or points to a writable
/// `struct timeval`; `tz` is ignored (obsolete, and never set by OpenSSL).
#[no_mangle]
pub unsafe extern "C" fn gettimeofday(tv: *mut libc::timeval, _tz: *mut c_void) -> c_int {
    let (secs, micros) = match CLOCK.try_with(Cell::get).ok().flatten() {
        Some((start, now)) => {
            let elapsed = now.saturating_duration_since(start);
            (EPOCH_SECS + elapsed.as_secs(), elapsed.subsec_micros())
        }
        None => {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a live, writable timespec; CLOCK_REALTIME always exists.
            if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
                return -1;
            }
            (ts.tv_sec as u64, (ts.tv_nsec / 1000) as u32)
        }
    };
    if !tv.is_null() {
        // SAFETY: the caller passes a valid timeval pointer or null (checked).
        unsafe {
            (*tv).tv_sec = secs as libc::time_t;
            (*tv).tv_usec = micros as libc::suseconds_t;
        }
    }
    0
}

// --- deterministic choices independent of the network's generator ----------------------------

// --- the two nodes ---------------------------------------------------------------------------

fn client_context(suite: &str) -> DtlsContext {
    DtlsContext::client(DtlsSettings {
        psk: Some(Psk::new("device-1", "sim-secret-key").unwrap()),
        ciphers: suite.to_string(),
        timer: TIMER,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..Default::default()
    })
    .unwrap()
}

fn server_context(suite: &str) -> DtlsContext {
    let store = PskMap::new();
    store.insert(Psk::new("device-1", "sim-secret-key").unwrap());
    DtlsContext::server(DtlsSettings {
        psk_store: Some(Arc::new(store)),
        identity_hint: Some(b"tern-sim".to_vec()),
        ciphers: suite.to_string(),
        timer: TIMER,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..Default::default()
    })
    .unwrap()
}

/// One application message: retried with a new payload until echoed.
struct Outbound {
    first_at: Instant,
    next_at: Instant,
    attempts: u32,
    echoed_at: Option<Instant>,
}

/// The client: a channel, and the application sending messages once it is established.
struct Client {
    seed: u64,
    server: SocketAddr,
    channel: DtlsChannel,
    established_at: Option<Instant>,
    failed: Vec<String>,
    closed: Vec<String>,
    /// Datagrams sent before the handshake completed.
    handshake_datagrams: u64,
    /// The plan: when each message is first sent, relative to establishment.
    offsets: Vec<Duration>,
    messages: Vec<Outbound>,
    /// Every payload sent, and those whose echo came back.
    sent: HashSet<Vec<u8>>,
    echoed: HashSet<Vec<u8>>,
    /// A scenario action (a partition) is due then.
    action: Option<Instant>,
}

/// A payload's name for messages: "m<message>.<attempt>" and its length.
fn label(payload: &[u8]) -> String {
    let name = payload.split(|&b| b == b'|').next().unwrap_or_default();
    format!(
        "{} ({} bytes)",
        String::from_utf8_lossy(name),
        payload.len()
    )
}

fn payload(seed: u64, message: usize, attempt: u32) -> Vec<u8> {
    let mut p = format!("m{message}.{attempt}|").into_bytes();
    let len = (seed as usize ^ message.wrapping_mul(131) ^ (attempt as usize * 7)) % 700;
    p.extend((0..len).map(|k| b'a' + ((k + message) % 26) as u8));
    p
}

impl Client {
    fn process(&mut self, now: Instant) {
        let seed = self.seed;
        while let Some(event) = self.channel.poll_event() {
            match event {
                ChannelEvent::Established => {
                    assert!(
                        self.established_at.is_none(),
                        "seed {seed}: client established twice"
                    );
                    self.established_at = Some(now);
                    self.messages = self
                        .offsets
                        .iter()
                        .map(|&d| Outbound {
                            first_at: now + d,
                            next_at: now + d,
                            attempts: 0,
                            echoed_at: None,
                        })
                        .collect();
                }
                ChannelEvent::HandshakeFailed(reason) => self.failed.push(reason),
                ChannelEvent::Closed(reason) => self.closed.push(reason),
                ChannelEvent::AlertReceived(_) => {}
            }
        }
        while let Some(plaintext) = self.channel.poll_received() {
            let Some(echo) = plaintext.strip_prefix(b"echo:") else {
                panic!(
                    "seed {seed}: the client got {}, which is no echo",
                    label(&plaintext)
                );
            };
            assert!(
                self.sent.contains(echo),
                "seed {seed}: the client got an echo of {}, which it never sent",
                label(echo)
            );
            assert!(
                self.echoed.insert(echo.to_vec()),
                "seed {seed}: the echo of {} was delivered twice",
                label(echo)
            );
            let text = String::from_utf8_lossy(echo);
            let index: usize = text
                .strip_prefix('m')
                .and_then(|t| t.split('.').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("seed {seed}: echo {text:?}"));
            let m = &mut self.messages[index];
            m.echoed_at.get_or_insert(now);
        }
        if !self.channel.is_established() {
            return;
        }
        for (i, m) in self.messages.iter_mut().enumerate() {
            if m.echoed_at.is_some() || m.next_at > now || now >= m.first_at + APP_DEADLINE {
                continue;
            }
            let p = payload(self.seed, i, m.attempts);
            m.attempts += 1;
            m.next_at = now + RETRY;
            self.channel
                .send(&p)
                .unwrap_or_else(|e| panic!("seed {seed}: send on an established channel: {e}"));
            self.sent.insert(p);
        }
    }

    /// The application's next timer: the next attempt of a message still waiting.
    fn app_timer(&self) -> Option<Instant> {
        if !self.channel.is_established() {
            return None;
        }
        self.messages
            .iter()
            .filter(|m| m.echoed_at.is_none() && m.next_at < m.first_at + APP_DEADLINE)
            .map(|m| m.next_at)
            .min()
    }
}

impl Node for Client {
    fn handle_datagram(&mut self, now: Instant, _from: SocketAddr, datagram: &[u8]) {
        tick(now);
        self.channel.handle_datagram(now, datagram);
        self.process(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        tick(now);
        if self.action.is_some_and(|a| a <= now) {
            self.action = None;
        }
        if self.channel.poll_timeout().is_some_and(|t| t <= now) {
            self.channel.handle_timeout(now);
        }
        self.process(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        let contents = self.channel.poll_transmit()?;
        if self.established_at.is_none() {
            self.handshake_datagrams += 1;
        }
        Some(Transmit {
            destination: self.server,
            contents,
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        [self.channel.poll_timeout(), self.app_timer(), self.action]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The server: the listener for datagrams from a peer without a live channel, the channel it
/// accepted, and an application that echoes what it receives.
struct Server {
    seed: u64,
    listener: DtlsListener,
    channel: Option<(SocketAddr, DtlsChannel)>,
    /// HelloVerifyRequests waiting to go out.
    replies: Vec<Transmit>,
    channels_opened: u32,
    hello_verify_requests: u64,
    established_at: Option<Instant>,
    failed: Vec<String>,
    closed: Vec<String>,
    /// Every payload the application received, in order.
    received: Vec<Vec<u8>>,
}

impl Server {
    fn process(&mut self, now: Instant) {
        let seed = self.seed;
        let Some((_, channel)) = &mut self.channel else {
            return;
        };
        while let Some(event) = channel.poll_event() {
            match event {
                ChannelEvent::Established => {
                    assert!(
                        self.established_at.is_none(),
                        "seed {seed}: server established twice"
                    );
                    self.established_at = Some(now);
                }
                ChannelEvent::HandshakeFailed(reason) => self.failed.push(reason),
                ChannelEvent::Closed(reason) => self.closed.push(reason),
                ChannelEvent::AlertReceived(_) => {}
            }
        }
        while let Some(plaintext) = channel.poll_received() {
            let mut echo = b"echo:".to_vec();
            echo.extend_from_slice(&plaintext);
            self.received.push(plaintext);
            channel
                .send(&echo)
                .unwrap_or_else(|e| panic!("seed {seed}: echo on an established channel: {e}"));
        }
    }
}

impl Node for Server {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        tick(now);
        match &mut self.channel {
            Some((peer, channel))
                if *peer == from && !matches!(channel.state(), ChannelState::Closed(_)) =>
            {
                channel.handle_datagram(now, datagram);
            }
            _ => match self.listener.accept(now, from, datagram) {
                Accept::Reply(hvr) => {
                    self.hello_verify_requests += 1;
                    self.replies.push(Transmit {
                        destination: from,
                        contents: hvr,
                    });
                }
                Accept::Channel(channel) => {
                    self.channels_opened += 1;
                    self.channel = Some((from, *channel));
                }
                Accept::Ignore => {}
            },
        }
        self.process(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        tick(now);
        if let Some((_, channel)) = &mut self.channel {
            if channel.poll_timeout().is_some_and(|t| t <= now) {
                channel.handle_timeout(now);
            }
        }
        self.process(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.replies.pop() {
            return Some(t);
        }
        let (peer, channel) = self.channel.as_mut()?;
        Some(Transmit {
            destination: *peer,
            contents: channel.poll_transmit()?,
        })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.channel.as_ref().and_then(|(_, c)| c.poll_timeout())
    }
}

enum Peer {
    Client(Box<Client>),
    Server(Box<Server>),
}

impl Node for Peer {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match self {
            Peer::Client(c) => c.handle_datagram(now, from, datagram),
            Peer::Server(s) => s.handle_datagram(now, from, datagram),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Peer::Client(c) => c.handle_timeout(now),
            Peer::Server(s) => s.handle_timeout(now),
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Peer::Client(c) => c.poll_transmit(),
            Peer::Server(s) => s.poll_transmit(),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Peer::Client(c) => c.poll_timeout(),
            Peer::Server(s) => s.poll_timeout(),
        }
    }
}

impl Peer {
    fn client(&mut self) -> &mut Client {
        match self {
            Peer::Client(c) => c,
            Peer::Server(_) => unreachable!(),
        }
    }
}

// --- one seed --------------------------------------------------------------------------------

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 3], port))
}

fn link(rng: &mut Rng, corrupt: bool) -> LinkConfig {
    LinkConfig {
        loss: rng.unit() * 0.25,
        duplicate: rng.unit() * 0.2,
        delay: rng.millis(1, 50),
        jitter: rng.millis(0, 400),
        corrupt: if corrupt {
            0.01 + rng.unit() * 0.09
        } else {
            0.0
        },
    }
}

/// A cut of both directions, from `at` for `length`.
#[derive(Debug, Clone, Copy)]
struct Partition {
    at: Instant,
    length: Duration,
}

/// What one seed did, for the totals.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Report {
    strict: bool,
    established: bool,
    handshake_failed: bool,
    corrupt: bool,
    partitioned: bool,
    handshake_ms: u64,
    handshake_datagrams: u64,
    hello_verify_requests: u64,
    messages: u64,
    attempts: u64,
    delivered: u64,
    datagrams: u64,
    lost: u64,
    duplicated: u64,
    corrupted: u64,
    closed_by_openssl: bool,
    virtual_secs: u64,
}

/// One seed: the scenario and every check. Panics with the seed on a violation.
fn run_seed(seed: u64) -> Report {
    let mut rng = Rng(seed ^ 0x6474_6c73_5f73_696d);
    let t0 = Instant::now();
    set_clock(Some((t0, t0)));
    let mut world: World<Peer> = World::new(seed, t0);
    let (c_addr, s_addr) = (addr(5684), addr(5685));
    // One seed in four corrupts bits (independent of the suite, which goes by seed % 3).
    let corrupt = seed % 4 == 3;
    world.net.set_link(c_addr, s_addr, link(&mut rng, corrupt));
    world.net.set_link(s_addr, c_addr, link(&mut rng, corrupt));
    // One seed in five has a partition: from the start for some, later for the others.
    let partition = rng.chance(0.2).then(|| Partition {
        at: if rng.chance(0.3) {
            t0
        } else {
            t0 + rng.millis(0, 8000)
        },
        length: rng.millis(500, 90_000),
    });

    let suite = SUITES[(seed % 3) as usize];
    let count = rng.range(3, 12) as usize;
    let offsets = (0..count).map(|_| rng.millis(0, 2000)).collect();
    let client = Client {
        seed,
        server: s_addr,
        channel: DtlsChannel::connect(&client_context(suite), t0)
            .unwrap_or_else(|e| panic!("seed {seed}: connect: {e}")),
        established_at: None,
        failed: Vec::new(),
        closed: Vec::new(),
        handshake_datagrams: 0,
        offsets,
        messages: Vec::new(),
        sent: HashSet::new(),
        echoed: HashSet::new(),
        action: None,
    };
    let server = Server {
        seed,
        listener: DtlsListener::new(server_context(suite)).unwrap(),
        channel: None,
        replies: Vec::new(),
        channels_opened: 0,
        hello_verify_requests: 0,
        established_at: None,
        failed: Vec::new(),
        closed: Vec::new(),
        received: Vec::new(),
    };
    let c = world.add(c_addr, Peer::Client(Box::new(client)));
    let s = world.add(s_addr, Peer::Server(Box::new(server)));

    // Partition actions: (when, cut).
    let mut actions: Vec<(Instant, bool)> = match partition {
        Some(p) => vec![(p.at + p.length, false), (p.at, true)],
        None => Vec::new(),
    };
    let limit = t0 + HORIZON;
    let mut steps = 0usize;
    loop {
        let now = world.now();
        while actions.last().is_some_and(|(at, _)| *at <= now) {
            let (_, cut) = actions.pop().expect("an action");
            world.net.set_partition(c_addr, s_addr, cut);
            world.net.set_partition(s_addr, c_addr, cut);
        }
        world.node(c).client().action = actions.last().map(|(at, _)| *at);
        steps += 1;
        assert!(
            steps < MAX_STEPS,
            "seed {seed}: no end after {MAX_STEPS} steps"
        );
        if !world.step(limit) {
            break;
        }
    }
    let end = world.now();
    set_clock(None);
    assert!(
        end < limit,
        "seed {seed}: still busy after {HORIZON:?} of virtual time"
    );
    assert!(actions.is_empty(), "seed {seed}: actions left");

    let stats = world.net.stats();
    let (Peer::Client(client), Peer::Server(server)) = (&world.nodes[c].1, &world.nodes[s].1)
    else {
        unreachable!()
    };
    let strict = !corrupt && partition.is_none();

    // Whatever happened, the server delivered each payload once and only payloads sent.
    let mut seen = HashSet::new();
    for p in &server.received {
        assert!(
            client.sent.contains(p),
            "seed {seed}: the server delivered {}, which the client never sent",
            label(p)
        );
        assert!(
            seen.insert(p),
            "seed {seed}: the server delivered {} twice",
            label(p)
        );
    }
    // OpenSSL refuses some invalid records with a fatal alert instead of dropping them (RFC
    // 6347 §4.1.2.7 says drop), so there one corrupted record can end a session:
    // - its record layer after the handshake (the CBC suite here): a MAC that fails under
    //   Encrypt-then-MAC (bad_record_mac, openssl/openssl#24972), a record too short for its
    //   MAC ("length too short", #25389);
    // - during any handshake: an AEAD record of the new epoch shorter than the AEAD overhead
    //   (a bit flip in a ChangeCipherSpec's epoch makes one), processed once the epoch turns:
    //   internal_error, with OpenSSL's error queue emptied, so the channel reports
    //   "unexpected EOF" (#25290).
    // Those, and only on seeds with corruption, are tolerated and counted; the channel's own
    // record layer (CCM_8, GCM after the handshake) must drop every corrupted record.
    let closed: Vec<&String> = client.closed.iter().chain(&server.closed).collect();
    let openssl_refusal = |r: &String| {
        (suite == OPENSSL_RECORDS
            && (r.contains("bad record mac") || r.contains("length too short")))
            || r == "unexpected EOF"
            || r.contains("internal_error")
            || r.contains("internal error")
    };
    let closed_by_openssl =
        !closed.is_empty() && corrupt && closed.iter().all(|r| openssl_refusal(r));
    // The server is established once it has sent its last flight; if a corrupted copy of that
    // flight fails the client's handshake (OpenSSL refuses a malformed plaintext handshake
    // record), the client's fatal alert closes the server's session: a clean failure.
    let told_by_failed_client = client.closed.is_empty()
        && client.established_at.is_none()
        && client.failed.len() == 1
        && server.closed.iter().all(|r| r.contains("alert"));
    assert!(
        closed.is_empty() || closed_by_openssl || told_by_failed_client,
        "seed {seed}: an established session was closed ({suite}): client {:?}, server {:?}; \
         client handshake failures {:?}",
        client.closed,
        server.closed,
        client.failed,
    );
    let mut report = Report {
        strict,
        corrupt,
        partitioned: partition.is_some(),
        handshake_datagrams: client.handshake_datagrams,
        hello_verify_requests: server.hello_verify_requests,
        messages: count as u64,
        datagrams: stats.sent,
        lost: stats.lost,
        duplicated: stats.duplicated,
        corrupted: stats.corrupted,
        closed_by_openssl,
        virtual_secs: (end - t0).as_secs(),
        ..Report::default()
    };
    match client.established_at {
        Some(at) => {
            report.established = true;
            report.handshake_ms = (at - t0).as_millis() as u64;
            assert!(
                at - t0 <= HANDSHAKE_TIMEOUT,
                "seed {seed}: established after {:?}",
                at - t0
            );
            assert!(
                client.failed.is_empty(),
                "seed {seed}: established, yet {:?}",
                client.failed
            );
            assert!(
                server.established_at.is_some_and(|s| s <= at),
                "seed {seed}: the client is established, the server is not"
            );
            let late: Vec<usize> = (0..count)
                .filter(|&i| client.messages[i].echoed_at.is_none() && !closed_by_openssl)
                .collect();
            assert!(
                late.is_empty(),
                "seed {seed}: messages {late:?} were never echoed (partition {partition:?})"
            );
            report.attempts = client.messages.iter().map(|m| u64::from(m.attempts)).sum();
            report.delivered = client.echoed.len() as u64;
        }
        None => {
            report.handshake_failed = true;
            assert!(
                !strict,
                "seed {seed}: no handshake without corruption or partition: {:?}; server {:?} \
                 after {} channels",
                client.failed, server.failed, server.channels_opened
            );
            // A clean failure: reported once, channel closed, nothing left to do.
            assert_eq!(
                client.failed.len(),
                1,
                "seed {seed}: handshake failures {:?}",
                client.failed
            );
            assert!(
                matches!(client.channel.state(), ChannelState::Closed(_))
                    && client.channel.poll_timeout().is_none(),
                "seed {seed}: a failed channel is {:?} with timer {:?}",
                client.channel.state(),
                client.channel.poll_timeout()
            );
            assert!(
                client.sent.is_empty() && server.received.is_empty(),
                "seed {seed}: application data without a handshake"
            );
        }
    }
    if let Some(p) = partition {
        if p.at == t0 && p.length > HANDSHAKE_TIMEOUT {
            assert!(
                !report.established,
                "seed {seed}: established across a partition of {:?} from the start",
                p.length
            );
        }
    }
    report
}

#[test]
fn thousands_of_seeds_handshake_or_fail_cleanly_and_deliver_each_record_once() {
    let seeds: Vec<u64> = seeds_from_env("TERN_DTLS_SIM", DEFAULT_SEEDS);
    let started = std::time::Instant::now();
    let mut total = Report::default();
    let (mut strict, mut corrupt_ok, mut corrupt, mut partition_ok, mut partitioned) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut max_handshake_ms = 0u64;
    let mut closed_by_openssl = 0u64;
    let mut failed: Vec<(u64, String)> = Vec::new();
    // Keep the default panic output for the first failure only; the rest are summarised.
    for &seed in &seeds {
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed))) {
            Ok(r) => {
                strict += u64::from(r.strict);
                corrupt += u64::from(r.corrupt);
                corrupt_ok += u64::from(r.corrupt && r.established);
                partitioned += u64::from(r.partitioned);
                partition_ok += u64::from(r.partitioned && r.established);
                closed_by_openssl += u64::from(r.closed_by_openssl);
                if r.strict {
                    max_handshake_ms = max_handshake_ms.max(r.handshake_ms);
                }
                total.handshake_datagrams += r.handshake_datagrams;
                total.hello_verify_requests += r.hello_verify_requests;
                total.messages += r.messages * u64::from(r.established);
                total.attempts += r.attempts;
                total.delivered += r.delivered;
                total.datagrams += r.datagrams;
                total.lost += r.lost;
                total.duplicated += r.duplicated;
                total.corrupted += r.corrupted;
                total.virtual_secs += r.virtual_secs;
            }
            Err(panic) => {
                set_clock(None);
                let message = panic_message(&*panic);
                failed.push((seed, message));
                if failed.len() == 1 {
                    std::panic::set_hook(Box::new(|_| {}));
                }
                if failed.len() >= 20 {
                    break;
                }
            }
        }
    }
    let _ = std::panic::take_hook();
    println!(
        "dtls_sim: {} seeds in {:.1?}: {strict} without corruption or partition (all \
         established, slowest in {max_handshake_ms} ms of virtual time); with corruption \
         {corrupt_ok}/{corrupt} established ({closed_by_openssl} then closed by OpenSSL on a \
         corrupted record: openssl#24972, #25389, #25290); with a partition \
         {partition_ok}/{partitioned}; \
         {} handshake datagrams from clients, {} HelloVerifyRequests; {} messages echoed in {} \
         attempts; {} datagrams, {} lost, {} duplicated, {} corrupted; {} s of virtual time",
        seeds.len(),
        started.elapsed(),
        total.handshake_datagrams,
        total.hello_verify_requests,
        total.delivered,
        total.attempts,
        total.datagrams,
        total.lost,
        total.duplicated,
        total.corrupted,
        total.virtual_secs,
    );
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(_, message)| format!("  {message}"))
            .collect();
        panic!(
            "{} seed(s) failed (stopped after 20):\n{}\nreplay one with:\n  \
             TERN_DTLS_SIM_SEED={} cargo test -p tern-tls --test dtls_sim -- --nocapture",
            failed.len(),
            list.join("\n"),
            failed[0].0
        );
    }
}

/// A seed is a replay: run twice, it does the same (each kind of seed: plain, corrupted,
/// partitioned, every suite).
#[test]
fn a_seed_replays_exactly() {
    for seed in [0, 1, 2, 3, 7, 11, 22759, 14183] {
        let first = run_seed(seed);
        assert_eq!(run_seed(seed), first, "seed {seed} did not replay");
    }
}

/// The premise of the simulation: OpenSSL's DTLS timer runs on the virtual clock. Without the
/// interposed `gettimeofday`, OpenSSL would see a few microseconds pass, not one second, and
/// send nothing.
#[test]
fn openssl_runs_on_the_virtual_clock() {
    let t0 = Instant::now();
    set_clock(Some((t0, t0)));
    let mut channel = DtlsChannel::connect(&client_context(SUITES[0]), t0).unwrap();
    let hello = channel.poll_transmit().expect("a ClientHello");
    let first = Duration::from_micros(u64::from(TIMER.initial_us));
    assert_eq!(channel.poll_timeout(), Some(t0 + first), "the first timer");
    let at = t0 + first;
    tick(at);
    channel.handle_timeout(at);
    let again = channel.poll_transmit();
    set_clock(None);
    assert!(
        again.is_some_and(|d| d.len() == hello.len() && d.get(13) == Some(&1)),
        "OpenSSL did not retransmit at its virtual deadline: the interposed gettimeofday is \
         not what libssl calls (static OpenSSL, another clock function?), so this simulation \
         cannot drive DTLS timers"
    );
    assert_eq!(
        channel.poll_timeout(),
        Some(at + 2 * first),
        "the doubled timer"
    );
}

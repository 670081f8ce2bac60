//! Thousands of seeded simulations of OSCORE over the message layer: two client [`Endpoint`]s,
//! each with its own [`SecurityContext`] (one sends a kid context), send protected CON and NON
//! requests through a faulty [`sim::World`](tern_proto::sim::World) to a server [`Endpoint`]
//! that unprotects them with a [`ContextStore`], answers (at once, or late as a separate
//! response) and protects the answer, with the request's nonce or, for some, a Partial IV of
//! its own. Loss, duplication, delay and reordering, bit corruption and partitions are drawn
//! per seed and per direction; the replay window is 8, 32 or 128 messages.
//!
//! A request the message layer gave up on (or one that drew no usable answer) is sent again as
//! a new attempt, protected anew: a retransmission repeats bytes, an attempt never does.
//! An attacker at a third address replays protected requests the server has already accepted;
//! once every exchange is over, the virtual clock moves past EXCHANGE_LIFETIME, when the
//! server's deduplication has forgotten them, and every request datagram the clients sent is
//! delivered once more from its own address.
//!
//! Checked for every seed:
//! - no panic; every request ends (a verified response or a final failure) within the horizon;
//! - every response the client unprotects is the right answer to that attempt, byte for byte;
//! - the server's application runs at most once per (context, Partial IV), and what it runs is
//!   exactly what the client protected under that Partial IV;
//! - the message layer never hands up a datagram the client sent twice (same message ID), and
//!   a protected request whose Partial IV was already accepted is always refused by the replay
//!   window — the attacker's replays and the late duplicates alike — and the refusal is a 4.01
//!   "Replay detected";
//! - no sender (either client, or the server's context for either) ever uses a Partial IV twice,
//!   and the server protects at most one response with a request's nonce;
//! - without corruption nothing else happens: every answer decrypts, and a 4.01 reaches a
//!   client only for a request the window refused as too old (never accepted), which it then
//!   sends again. With corruption, what corrupted datagrams cause (an answer that does not
//!   decrypt, an unprotected error) is counted and must stay within what they explain.
//!
//! Run:    cargo test -p tern-oscore --test oscore_sim -- --nocapture
//! Replay: TERN_OSCORE_SIM_SEED=1234 cargo test -p tern-oscore --test oscore_sim -- --nocapture
//! More:   TERN_OSCORE_SIM_SEEDS=100000 cargo test --release -p tern-oscore --test oscore_sim

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use tern_oscore::context::sequence_of;
use tern_oscore::{
    error_response, protect_request, protect_response, request_option, unprotect_response,
    ContextKey, ContextParams, ContextStore, OscoreError, OscoreOption, Replay, RequestBinding,
    SecurityContext,
};
use tern_proto::endpoint::{RequestError, RequestParams};
use tern_proto::sim::{panic_message, seeds_from_env, SplitMix64 as Rng};
use tern_proto::sim::{LinkConfig, Node, World};
use tern_proto::{
    Code, Endpoint, EndpointConfig, Event, IncomingId, Message, MessageType, OptionNumber,
    RequestId, TransmissionParams, Transmit,
};

/// Seeds run by default: about 13 s in the debug profile on a 2-core machine (a third of it
/// the AEAD, unoptimised there); 50,000 take 17 s in release.
const DEFAULT_SEEDS: u64 = 3_000;
/// Virtual time by which everything must have ended.
const HORIZON: Duration = Duration::from_secs(3600);
/// Bound on simulation steps per seed, so that a livelock fails instead of hanging.
const MAX_STEPS: usize = 2_000_000;
/// Attempts per request that failed in the message layer or drew an unusable answer.
const MAX_ATTEMPTS: u32 = 4;
/// Further attempts for requests the replay window refused as too old.
const MAX_TOO_OLD_RETRIES: u32 = 8;
/// How long a NON request waits for its response.
const NON_TIMEOUT: Duration = Duration::from_secs(10);

// --- deterministic choices independent of the network's generator ----------------------------

// --- nodes -----------------------------------------------------------------------------------

/// An endpoint that records every datagram it puts on the wire (to tell a received message
/// from one a corrupted bit made up, and for the replays), plus an application timer.
struct Traced {
    ep: Endpoint,
    sent: HashSet<Vec<u8>>,
    /// The distinct datagrams sent, in order.
    sent_order: Vec<Vec<u8>>,
    wake: Option<Instant>,
}

impl Traced {
    fn new(ep: Endpoint) -> Self {
        Traced {
            ep,
            sent: HashSet::new(),
            sent_order: Vec::new(),
            wake: None,
        }
    }
}

impl Node for Traced {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.ep.handle(now, from, datagram);
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.wake.is_some_and(|w| w <= now) {
            self.wake = None;
        }
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.ep.poll_transmit()?;
        if self.sent.insert(t.contents.clone()) {
            self.sent_order.push(t.contents.clone());
        }
        Some(t)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        [self.ep.poll_timeout(), self.wake]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Whether `message`, as received, is byte for byte a datagram `by` sent.
fn genuine(message: &Message, by: &Traced) -> bool {
    message.to_bytes().is_ok_and(|b| by.sent.contains(&b))
}

/// The attacker: sends what the test gives it (through the network directly) and keeps what
/// comes back.
#[derive(Default)]
struct Attacker {
    received: Vec<Message>,
}

enum Peer {
    Endpoint(Box<Traced>),
    Attacker(Attacker),
}

impl Node for Peer {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match self {
            Peer::Endpoint(t) => t.handle_datagram(now, from, datagram),
            Peer::Attacker(a) => {
                if let Ok(m) = Message::decode(datagram) {
                    a.received.push(m);
                }
            }
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        if let Peer::Endpoint(t) = self {
            t.handle_timeout(now);
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Peer::Endpoint(t) => t.poll_transmit(),
            Peer::Attacker(_) => None,
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Peer::Endpoint(t) => t.poll_timeout(),
            Peer::Attacker(_) => None,
        }
    }
}

impl Peer {
    fn traced(&mut self) -> &mut Traced {
        match self {
            Peer::Endpoint(t) => t,
            Peer::Attacker(_) => unreachable!("not an endpoint"),
        }
    }
    fn traced_ref(&self) -> &Traced {
        match self {
            Peer::Endpoint(t) => t,
            Peer::Attacker(_) => unreachable!("not an endpoint"),
        }
    }
}

// --- the scenario ----------------------------------------------------------------------------

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 4], port))
}

/// A (Sender ID, Partial IV as a number): what a nonce is made of, per context.
type Piv = (Vec<u8>, u64);

#[derive(Debug, Clone)]
struct Planned {
    ty: MessageType,
    method: Code,
    payload: Vec<u8>,
}

/// The inner request of attempt `attempt` of request `index`.
fn inner_request(p: &Planned, index: usize, attempt: u32) -> Message {
    let mut m = Message::new(p.ty, p.method);
    m.set_path(&format!("/r/{index}"));
    m.options
        .push(OptionNumber::URI_QUERY, format!("a={attempt}").into_bytes());
    m.payload = p.payload.clone();
    m
}

/// The server's answer to an inner request: depends on everything the client protected.
fn answer(request: &Message) -> Message {
    let code = match request.code {
        Code::GET | Code::FETCH => Code::CONTENT,
        Code::POST | Code::PUT => Code::CHANGED,
        Code::DELETE => Code::DELETED,
        _ => Code::BAD_REQUEST,
    };
    let mut m = Message::new(MessageType::Ack, code);
    let queries: Vec<&str> = request.queries().collect();
    let mut payload = format!("{}:{}?{}:", request.code, request.path(), queries.join("&"));
    payload.push_str(&String::from_utf8_lossy(&request.payload));
    m.payload = payload.into_bytes();
    m
}

/// What the client protected, to compare with what the server's application got.
fn summary(m: &Message) -> (Code, String, Vec<String>, Vec<u8>) {
    (
        m.code,
        m.path(),
        m.queries().map(str::to_string).collect(),
        m.payload.clone(),
    )
}

struct ClientState {
    index: usize,
    addr: SocketAddr,
    context: SecurityContext,
    send_kid_context: bool,
    plan: Vec<Planned>,
    /// Attempts made per request (counted, and too-old retries).
    attempts: Vec<u32>,
    too_old_retries: Vec<u32>,
    /// Requests in flight: the request, its attempt and what binds the response.
    in_flight: HashMap<RequestId, (usize, u32, RequestBinding)>,
    ended: HashMap<usize, bool>,
    /// Every Partial IV used, and what was protected under it.
    protected: HashMap<u64, (Code, String, Vec<String>, Vec<u8>)>,
}

enum Action {
    Send(usize, usize),
    Respond(usize),
    Inject,
    Partition(bool),
}

/// A request the server's application is working on.
struct Work {
    id: IncomingId,
    key: ContextKey,
    binding: RequestBinding,
    response: Message,
}

/// What the server made of one request the message layer handed up.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    peer: SocketAddr,
    pair: Option<(Vec<u8>, u64)>,
    accepted: bool,
    refused_replay: bool,
}

/// What one seed did, for the totals.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Report {
    strict: bool,
    requests: u64,
    answered: u64,
    attempts: u64,
    too_old_retries: u64,
    separate: u64,
    fresh_nonces: u64,
    injected: u64,
    late_duplicates: u64,
    refused_replays: u64,
    dedup_dropped: u64,
    corrupted: u64,
    anomalies: u64,
    virtual_secs: u64,
}

fn link(rng: &mut Rng, corrupt: bool) -> LinkConfig {
    LinkConfig {
        loss: rng.unit() * 0.3,
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

const CLEAN: LinkConfig = LinkConfig {
    loss: 0.0,
    duplicate: 0.0,
    delay: Duration::from_millis(10),
    jitter: Duration::ZERO,
    corrupt: 0.0,
};

/// The harness: every node's application, the plan and the logs.
struct Harness {
    seed: u64,
    rng: Rng,
    strict: bool,
    clients: Vec<ClientState>,
    /// Node index of each client, then the server and the attacker.
    c_nodes: Vec<usize>,
    s_node: usize,
    a_node: usize,
    s_addr: SocketAddr,
    a_addr: SocketAddr,
    store: ContextStore,
    work: Vec<Option<Work>>,
    actions: BTreeMap<(Instant, u64), Action>,
    action_seq: u64,
    /// (kid, Partial IV) pairs the server's window accepted.
    accepted: HashSet<Piv>,
    /// Partial IVs the server's contexts used, by context, and requests whose nonce it used.
    server_pivs: HashSet<(ContextKey, u64)>,
    nonces_reused: HashSet<Piv>,
    /// (client address, message ID) of every genuine request handed up before the late phase.
    handed_up: HashSet<(SocketAddr, u16)>,
    seen: Vec<Seen>,
    injected: Vec<Piv>,
    late_start: Option<Instant>,
    anomalies: u64,
    anomaly_log: Vec<String>,
    report: Report,
}

impl Harness {
    fn schedule(&mut self, at: Instant, action: Action) {
        self.action_seq += 1;
        self.actions.insert((at, self.action_seq), action);
    }

    fn anomaly(&mut self, what: String) {
        self.anomalies += 1;
        self.anomaly_log.push(what);
    }

    /// Protects and sends the next attempt of request `i` of client `c`.
    fn send(&mut self, world: &mut World<Peer>, now: Instant, c: usize, i: usize) {
        let seed = self.seed;
        let s_addr = self.s_addr;
        let node = self.c_nodes[c];
        let client = &mut self.clients[c];
        let attempt = client.attempts[i] + client.too_old_retries[i];
        let p = &client.plan[i];
        let inner = inner_request(p, i, attempt);
        let (outer, binding) =
            protect_request(&mut client.context, &inner, client.send_kid_context)
                .unwrap_or_else(|e| panic!("seed {seed}: protect: {e}"));
        let piv = sequence_of(&binding.partial_iv).expect("a Partial IV");
        assert!(
            client.protected.insert(piv, summary(&inner)).is_none(),
            "seed {seed}: client {c} used Partial IV {piv} twice"
        );
        let timeout = (p.ty == MessageType::Non).then_some(NON_TIMEOUT);
        let id = world
            .node(node)
            .traced()
            .ep
            .request(now, s_addr, outer, RequestParams { timeout })
            .unwrap_or_else(|e| panic!("seed {seed}: request refused: {e}"));
        client.in_flight.insert(id, (i, attempt, binding));
    }

    /// The server's application: unprotect, answer, protect.
    fn serve(&mut self, world: &mut World<Peer>, now: Instant) {
        let seed = self.seed;
        while let Some(ev) = world.node(self.s_node).traced().ep.poll_event() {
            let Event::Request { id, peer, request } = ev else {
                self.anomaly(format!("server event {ev:?}"));
                continue;
            };
            let client = self.clients.iter().position(|c| c.addr == peer);
            let is_genuine = client
                .is_some_and(|c| genuine(&request, world.nodes[self.c_nodes[c]].1.traced_ref()));
            if is_genuine && self.late_start.is_none() {
                assert!(
                    self.handed_up.insert((peer, request.mid)),
                    "seed {seed}: the message layer handed up message ID {} from {peer} twice",
                    request.mid
                );
            }
            let pair = request_option(&request)
                .ok()
                .and_then(|o| Some((o.kid?, sequence_of(&o.partial_iv?)?)));
            let mut seen = Seen {
                at: now,
                peer,
                pair: pair.clone(),
                accepted: false,
                refused_replay: false,
            };
            match self.store.unprotect_request(&request) {
                Ok((key, inner, binding)) => {
                    let pair = pair.expect("an accepted request has a kid and Partial IV");
                    assert!(
                        self.accepted.insert(pair.clone()),
                        "seed {seed}: the server accepted {pair:?} twice (from {peer})"
                    );
                    // What the application runs is exactly what a client protected.
                    let owner = self
                        .clients
                        .iter()
                        .find(|c| c.context.sender_id() == pair.0)
                        .unwrap_or_else(|| panic!("seed {seed}: accepted an unknown kid"));
                    assert_eq!(
                        owner.protected.get(&pair.1),
                        Some(&summary(&inner)),
                        "seed {seed}: the server ran {pair:?} as something else"
                    );
                    seen.accepted = true;
                    let response = answer(&inner);
                    let work = Work {
                        id,
                        key,
                        binding,
                        response,
                    };
                    let delay = match self.rng.range(0, 9) {
                        0..=5 => Duration::ZERO,
                        6 | 7 => self.rng.millis(1, 900),
                        _ => self.rng.millis(1100, 4000),
                    };
                    self.work.push(Some(work));
                    let w = self.work.len() - 1;
                    if delay.is_zero() {
                        self.respond(world, now, w);
                    } else {
                        self.report.separate += 1;
                        self.schedule(now + delay, Action::Respond(w));
                    }
                }
                Err(e) => {
                    let replay = matches!(e, OscoreError::Replay(_));
                    seen.refused_replay = replay;
                    if let Some(pair) = &pair {
                        if self.accepted.contains(pair) && is_genuine {
                            assert!(
                                replay,
                                "seed {seed}: {pair:?} was accepted before, yet its repeat \
                                 from {peer} was refused with {e:?}, not as a replay"
                            );
                        }
                    }
                    if peer != self.a_addr && (!replay || self.late_start.is_none()) {
                        // Only a refused too-old request is expected from a client.
                        let too_old = matches!(e, OscoreError::Replay(Replay::TooOld(_)));
                        if !(too_old && is_genuine) {
                            self.anomaly(format!("server refused a request from {peer}: {e}"));
                        }
                    }
                    let refusal = error_response(&request, &e);
                    if replay {
                        assert_eq!(refusal.code, Code::UNAUTHORIZED, "seed {seed}");
                        self.report.refused_replays += 1;
                    }
                    world
                        .node(self.s_node)
                        .traced()
                        .ep
                        .respond(now, id, refusal)
                        .unwrap_or_else(|e| panic!("seed {seed}: respond failed: {e}"));
                }
            }
            self.seen.push(seen);
        }
    }

    /// Protects a prepared answer and sends it.
    fn respond(&mut self, world: &mut World<Peer>, now: Instant, w: usize) {
        let seed = self.seed;
        let work = self.work[w].take().expect("answered once");
        let fresh = self.rng.chance(0.3);
        let context = self
            .store
            .get_mut(&work.key.0, work.key.1.as_deref())
            .expect("the context");
        let protected = protect_response(context, &work.binding, &work.response, fresh)
            .unwrap_or_else(|e| panic!("seed {seed}: protect response: {e}"));
        let option = OscoreOption::decode(protected.options.get(OptionNumber::OSCORE).unwrap())
            .expect("our own option");
        match option.partial_iv {
            Some(piv) => {
                self.report.fresh_nonces += 1;
                let n = sequence_of(&piv).expect("a Partial IV");
                assert!(
                    self.server_pivs.insert((work.key.clone(), n)),
                    "seed {seed}: the server used Partial IV {n} twice in {:?}",
                    work.key
                );
            }
            None => {
                let request = (
                    work.binding.kid.clone(),
                    sequence_of(&work.binding.partial_iv).expect("a Partial IV"),
                );
                assert!(
                    self.nonces_reused.insert(request.clone()),
                    "seed {seed}: the server protected two responses with the nonce of {request:?}"
                );
            }
        }
        world
            .node(self.s_node)
            .traced()
            .ep
            .respond(now, work.id, protected)
            .unwrap_or_else(|e| panic!("seed {seed}: respond failed: {e}"));
    }

    /// The clients' applications: check answers, send again what needs it.
    fn collect(&mut self, world: &mut World<Peer>, now: Instant) {
        let seed = self.seed;
        for c in 0..self.clients.len() {
            let node = self.c_nodes[c];
            while let Some(ev) = world.node(node).traced().ep.poll_event() {
                let (id, outcome) = match ev {
                    Event::Response { id, response } => (id, Ok(response)),
                    Event::RequestFailed { id, error } => (id, Err(error)),
                    other => {
                        self.anomaly(format!("client {c} event {other:?}"));
                        continue;
                    }
                };
                let client = &mut self.clients[c];
                let (i, attempt, binding) = client
                    .in_flight
                    .remove(&id)
                    .unwrap_or_else(|| panic!("seed {seed}: an event for unknown request {id:?}"));
                let retry = match outcome {
                    Ok(response) => {
                        match unprotect_response(&mut client.context, &binding, &response) {
                            Ok(inner) => {
                                let expected = answer(&inner_request(&client.plan[i], i, attempt));
                                assert!(
                                    inner.code == expected.code
                                        && inner.payload == expected.payload,
                                    "seed {seed}: client {c} request {i} attempt {attempt} got \
                                     {} {:?}, expected {} {:?}",
                                    inner.code,
                                    String::from_utf8_lossy(&inner.payload),
                                    expected.code,
                                    String::from_utf8_lossy(&expected.payload)
                                );
                                assert!(
                                    client.ended.insert(i, true).is_none(),
                                    "seed {seed}: client {c} request {i} answered twice"
                                );
                                self.report.answered += 1;
                                continue;
                            }
                            Err(e) => {
                                // An unprotected refusal: too old is expected (then sent
                                // again); anything else only from corruption.
                                let pair = (
                                    client.context.sender_id().to_vec(),
                                    sequence_of(&binding.partial_iv).expect("a Partial IV"),
                                );
                                let too_old = response.code == Code::UNAUTHORIZED
                                    && !self.accepted.contains(&pair)
                                    && client.too_old_retries[i] < MAX_TOO_OLD_RETRIES;
                                if too_old {
                                    client.too_old_retries[i] += 1;
                                    self.report.too_old_retries += 1;
                                    true
                                } else {
                                    let what = format!(
                                        "client {c} request {i} attempt {attempt}: {} {:?} ({e})",
                                        response.code,
                                        String::from_utf8_lossy(&response.payload)
                                    );
                                    self.anomaly(what);
                                    let client = &mut self.clients[c];
                                    client.attempts[i] += 1;
                                    client.attempts[i] < MAX_ATTEMPTS
                                }
                            }
                        }
                    }
                    Err(RequestError::Unacknowledged { .. } | RequestError::Timeout) => {
                        client.attempts[i] += 1;
                        client.attempts[i] < MAX_ATTEMPTS
                    }
                    Err(e) => {
                        self.anomaly(format!("client {c} request {i} failed: {e}"));
                        let client = &mut self.clients[c];
                        client.attempts[i] += 1;
                        client.attempts[i] < MAX_ATTEMPTS
                    }
                };
                if retry {
                    self.send(world, now, c, i);
                } else {
                    let client = &mut self.clients[c];
                    assert!(
                        client.ended.insert(i, false).is_none(),
                        "seed {seed}: client {c} request {i} ended twice"
                    );
                }
            }
        }
    }

    /// The attacker replays a protected request the server has already accepted.
    fn inject(&mut self, world: &mut World<Peer>) {
        let mut captures = Vec::new();
        for &node in &self.c_nodes {
            for bytes in &world.nodes[node].1.traced_ref().sent_order {
                let Ok(m) = Message::decode(bytes) else {
                    continue;
                };
                let pair = request_option(&m)
                    .ok()
                    .and_then(|o| Some((o.kid?, sequence_of(&o.partial_iv?)?)));
                if let Some(pair) = pair.filter(|p| self.accepted.contains(p)) {
                    captures.push((bytes.clone(), pair));
                }
            }
        }
        if captures.is_empty() {
            return;
        }
        let pick = self.rng.range(0, captures.len() as u64 - 1) as usize;
        let (mut bytes, pair) = captures.swap_remove(pick);
        // A fresh message ID per replay, as an attacker would pick (the address is new to the
        // server anyway, so deduplication cannot stop it).
        let mid = (self.injected.len() as u16).wrapping_mul(0x9e37) ^ 0x5a5a;
        bytes[2..4].copy_from_slice(&mid.to_be_bytes());
        self.injected.push(pair);
        world.net.send(
            self.a_addr,
            Transmit {
                destination: self.s_addr,
                contents: bytes,
            },
        );
    }
}

/// One seed: the scenario and every check. Panics with the seed on a violation.
fn run_seed(seed: u64) -> Report {
    let mut rng = Rng(seed ^ 0x6f73_636f_7265_5f73);
    let t0 = Instant::now();
    let mut world: World<Peer> = World::new(seed, t0);
    let s_addr = addr(5683);
    let a_addr = addr(6666);
    let c_addrs = [addr(40001), addr(40002)];
    // One seed in four corrupts bits; the others are checked strictly.
    let corrupt = seed % 4 == 3;
    for c in c_addrs {
        world.net.set_link(c, s_addr, link(&mut rng, corrupt));
        world.net.set_link(s_addr, c, link(&mut rng, corrupt));
    }
    world.net.set_link(a_addr, s_addr, CLEAN);
    world.net.set_link(s_addr, a_addr, CLEAN);
    let window = [8, 32, 128][rng.range(0, 2) as usize];

    let mut store = ContextStore::new();
    let mut clients = Vec::new();
    let mut c_nodes = Vec::new();
    for (c, &c_addr) in c_addrs.iter().enumerate() {
        let secret = format!("master-secret-{c}-{seed}").into_bytes();
        let kid = vec![c as u8 + 1];
        let id_context = (c == 1).then(|| b"sim-ctx".to_vec());
        let mut params = ContextParams::new(&secret, &kid, b"srv");
        params.id_context = id_context.clone();
        let mut theirs = ContextParams::new(&secret, b"srv", &kid);
        theirs.id_context = id_context;
        theirs.replay_window = window;
        store
            .insert(SecurityContext::derive(&theirs).unwrap())
            .unwrap();
        let config = EndpointConfig {
            params: TransmissionParams {
                nstart: rng.range(1, 4) as usize,
                ..Default::default()
            },
            ..Default::default()
        };
        let node_seed = world.net.node_seed();
        let node = world.add(
            c_addr,
            Peer::Endpoint(Box::new(Traced::new(Endpoint::new(config, node_seed)))),
        );
        c_nodes.push(node);
        let count = rng.range(5, 16) as usize;
        let plan: Vec<Planned> = (0..count)
            .map(|i| {
                let method = [Code::GET, Code::POST, Code::PUT, Code::DELETE, Code::FETCH]
                    [rng.range(0, 4) as usize];
                let payload = if matches!(method, Code::POST | Code::PUT | Code::FETCH) {
                    let len = rng.range(0, 64) as usize;
                    (0..len).map(|k| b'a' + ((i + k) % 26) as u8).collect()
                } else {
                    Vec::new()
                };
                Planned {
                    ty: if rng.chance(0.7) {
                        MessageType::Con
                    } else {
                        MessageType::Non
                    },
                    method,
                    payload,
                }
            })
            .collect();
        clients.push(ClientState {
            index: c,
            addr: c_addr,
            context: SecurityContext::derive(&params).unwrap(),
            send_kid_context: c == 1,
            attempts: vec![0; count],
            too_old_retries: vec![0; count],
            plan,
            in_flight: HashMap::new(),
            ended: HashMap::new(),
            protected: HashMap::new(),
        });
    }
    let node_seed = world.net.node_seed();
    let s_node = world.add(
        s_addr,
        Peer::Endpoint(Box::new(Traced::new(Endpoint::new(
            EndpointConfig::default(),
            node_seed,
        )))),
    );
    let a_node = world.add(a_addr, Peer::Attacker(Attacker::default()));
    let strict = !corrupt;
    let mut h = Harness {
        seed,
        rng,
        strict,
        clients,
        c_nodes,
        s_node,
        a_node,
        s_addr,
        a_addr,
        store,
        work: Vec::new(),
        actions: BTreeMap::new(),
        action_seq: 0,
        accepted: HashSet::new(),
        server_pivs: HashSet::new(),
        nonces_reused: HashSet::new(),
        handed_up: HashSet::new(),
        seen: Vec::new(),
        injected: Vec::new(),
        late_start: None,
        anomalies: 0,
        anomaly_log: Vec::new(),
        report: Report {
            strict,
            ..Report::default()
        },
    };
    // The plan: requests within the first 5 s, replays by the attacker within 20 s, maybe a
    // partition of the clients' links.
    for c in 0..h.clients.len() {
        for i in 0..h.clients[c].plan.len() {
            let at = t0 + h.rng.millis(0, 5000);
            h.schedule(at, Action::Send(c, i));
        }
    }
    for _ in 0..h.rng.range(0, 6) {
        let at = t0 + h.rng.millis(500, 20_000);
        h.schedule(at, Action::Inject);
    }
    if h.rng.chance(0.2) {
        let from = t0 + h.rng.millis(0, 5000);
        let until = from + h.rng.millis(500, 20_000);
        h.schedule(from, Action::Partition(true));
        h.schedule(until, Action::Partition(false));
    }

    let limit = t0 + HORIZON;
    let mut steps = 0usize;
    // The exchanges, then the late duplicates.
    loop {
        let now = world.now();
        while let Some(entry) = h.actions.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Action::Send(c, i) => h.send(&mut world, now, c, i),
                Action::Respond(w) => h.respond(&mut world, now, w),
                Action::Inject => h.inject(&mut world),
                Action::Partition(cut) => {
                    for &c in &c_addrs {
                        world.net.set_partition(c, s_addr, cut);
                        world.net.set_partition(s_addr, c, cut);
                    }
                }
            }
        }
        h.serve(&mut world, now);
        h.collect(&mut world, now);
        let done = h.clients.iter().all(|c| c.ended.len() == c.plan.len())
            && h.actions.is_empty()
            && h.work.iter().all(Option::is_none);
        if done && h.late_start.is_none() {
            // Past EXCHANGE_LIFETIME the server's deduplication has forgotten every request:
            // each datagram the clients sent is delivered again, once, on a clean link.
            let lifetime = TransmissionParams::default().exchange_lifetime();
            let late = now + lifetime + Duration::from_secs(10);
            world.node(s_node).traced().wake = Some(late);
            world.run_until(late, |w| {
                let now = w.now();
                h.serve(w, now);
                h.collect(w, now);
                false
            });
            let late = world.now();
            h.late_start = Some(late);
            for (c, &c_addr) in c_addrs.iter().enumerate() {
                world.net.set_partition(c_addr, s_addr, false);
                world.net.set_partition(s_addr, c_addr, false);
                world.net.set_link(c_addr, s_addr, CLEAN);
                world.net.set_link(s_addr, c_addr, CLEAN);
                let datagrams = world.nodes[h.c_nodes[c]].1.traced_ref().sent_order.clone();
                for contents in datagrams {
                    let Ok(m) = Message::decode(&contents) else {
                        continue;
                    };
                    if !m.code.is_request() {
                        continue;
                    }
                    h.report.late_duplicates += 1;
                    world.net.send(
                        c_addr,
                        Transmit {
                            destination: s_addr,
                            contents,
                        },
                    );
                }
            }
            continue;
        }
        steps += 1;
        assert!(
            steps < MAX_STEPS,
            "seed {seed}: no end after {MAX_STEPS} steps"
        );
        let next_action = h.actions.first_key_value().map(|(k, _)| k.0);
        world.node(s_node).traced().wake = next_action;
        let stepped = world.step(limit);
        match h.late_start {
            // The late duplicates are answered within a few round trips on a clean link.
            Some(late) if !stepped || world.now() > late + Duration::from_secs(30) => {
                let now = world.now();
                h.serve(&mut world, now);
                h.collect(&mut world, now);
                break;
            }
            Some(_) => {}
            // Nothing left to happen, yet not done: the checks below say what is missing.
            None if !stepped && next_action.is_none() => break,
            None => {}
        }
    }
    let Some(late) = h.late_start else {
        let missing: Vec<(usize, usize)> = h
            .clients
            .iter()
            .flat_map(|c| {
                (0..c.plan.len())
                    .filter(|i| !c.ended.contains_key(i))
                    .map(move |i| (c.index, i))
            })
            .collect();
        panic!("seed {seed}: requests {missing:?} never ended within {HORIZON:?}");
    };

    // Every injected replay was refused, and the attacker heard 4.01 for each.
    let from_attacker: Vec<&Seen> = h.seen.iter().filter(|s| s.peer == a_addr).collect();
    assert_eq!(
        from_attacker.len(),
        h.injected.len(),
        "seed {seed}: replays injected and handed up"
    );
    assert!(
        from_attacker
            .iter()
            .all(|s| s.refused_replay && !s.accepted),
        "seed {seed}: an injected replay was not refused: {from_attacker:?}"
    );
    let Peer::Attacker(attacker) = &world.nodes[h.a_node].1 else {
        unreachable!()
    };
    // One refusal per replay (counted once: the server repeats a CON the attacker never
    // acknowledges).
    let refusals = attacker
        .received
        .iter()
        .filter(|m| m.code == Code::UNAUTHORIZED && m.payload == b"Replay detected")
        .map(|m| (m.ty, m.mid))
        .collect::<HashSet<_>>()
        .len();
    assert_eq!(
        refusals,
        h.injected.len(),
        "seed {seed}: the attacker got {:?}",
        attacker.received
    );
    assert!(
        attacker
            .received
            .iter()
            .all(|m| !m.options.contains(OptionNumber::OSCORE)),
        "seed {seed}: a replay drew a protected answer"
    );
    // Every late duplicate of an accepted request was refused by the window.
    let late_refused: HashSet<&(Vec<u8>, u64)> = h
        .seen
        .iter()
        .filter(|s| s.at >= late && s.peer != a_addr && s.refused_replay)
        .filter_map(|s| s.pair.as_ref())
        .collect();
    let accepted_before: Vec<&Piv> = h
        .seen
        .iter()
        .filter(|s| s.at < late && s.accepted)
        .filter_map(|s| s.pair.as_ref())
        .collect();
    for pair in &accepted_before {
        assert!(
            late_refused.contains(pair),
            "seed {seed}: the late duplicate of {pair:?} was not refused as a replay"
        );
    }
    assert!(
        h.seen
            .iter()
            .filter(|s| s.at >= late)
            .all(|s| !s.accepted || !accepted_before.contains(&s.pair.as_ref().unwrap())),
        "seed {seed}: a late duplicate of an accepted request was accepted"
    );
    for c in &h.clients {
        assert_eq!(
            c.ended.len(),
            c.plan.len(),
            "seed {seed}: client {}",
            c.index
        );
        assert!(c.in_flight.is_empty(), "seed {seed}: client {}", c.index);
    }
    assert_eq!(
        world.nodes[s_node].1.traced_ref().ep.pending_incoming(),
        0,
        "seed {seed}: the server holds unanswered requests"
    );

    let mut report = h.report;
    report.requests = h.clients.iter().map(|c| c.plan.len() as u64).sum();
    report.attempts = h.clients.iter().flat_map(|c| c.protected.keys()).count() as u64;
    report.injected = h.injected.len() as u64;
    report.dedup_dropped = world.nodes[s_node].1.traced_ref().ep.stats().duplicates;
    report.corrupted = world.net.stats().corrupted;
    report.anomalies = h.anomalies;
    report.virtual_secs = (world.now() - t0).as_secs();
    if h.strict {
        assert!(
            h.anomalies == 0,
            "seed {seed}: without corruption:\n  {}",
            h.anomaly_log.join("\n  ")
        );
    } else {
        // One corrupted datagram explains at most two anomalies (a refused request and the
        // client's view of its refusal, say).
        assert!(
            h.anomalies <= 2 * report.corrupted,
            "seed {seed}: {} anomalies from {} corrupted datagrams:\n  {}",
            h.anomalies,
            report.corrupted,
            h.anomaly_log.join("\n  ")
        );
    }
    report
}

#[test]
fn thousands_of_seeds_answer_right_and_never_process_a_replay() {
    let seeds: Vec<u64> = seeds_from_env("TERN_OSCORE_SIM", DEFAULT_SEEDS);
    let started = std::time::Instant::now();
    let mut total = Report::default();
    let (mut strict_requests, mut strict_answered) = (0u64, 0u64);
    let mut failed: Vec<(u64, String)> = Vec::new();
    // Keep the default panic output for the first failure only; the rest are summarised.
    for &seed in &seeds {
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed))) {
            Ok(r) => {
                if r.strict {
                    strict_requests += r.requests;
                    strict_answered += r.answered;
                }
                total.requests += r.requests;
                total.answered += r.answered;
                total.attempts += r.attempts;
                total.too_old_retries += r.too_old_retries;
                total.separate += r.separate;
                total.fresh_nonces += r.fresh_nonces;
                total.injected += r.injected;
                total.late_duplicates += r.late_duplicates;
                total.refused_replays += r.refused_replays;
                total.dedup_dropped += r.dedup_dropped;
                total.corrupted += r.corrupted;
                total.anomalies += r.anomalies;
                total.virtual_secs += r.virtual_secs;
            }
            Err(panic) => {
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
        "oscore_sim: {} seeds in {:.1?}: {} requests, {} answered and verified ({strict_answered}/\
         {strict_requests} without corruption), {} protected attempts ({} after a too-old \
         refusal), {} separate responses, {} with a Partial IV of their own; replays refused: \
         {} ({} injected by the attacker, {} late duplicates sent); {} duplicates dropped by \
         the message layer; {} corrupted datagrams caused {} anomalies; {} s of virtual time",
        seeds.len(),
        started.elapsed(),
        total.requests,
        total.answered,
        total.attempts,
        total.too_old_retries,
        total.separate,
        total.fresh_nonces,
        total.refused_replays,
        total.injected,
        total.late_duplicates,
        total.dedup_dropped,
        total.corrupted,
        total.anomalies,
        total.virtual_secs,
    );
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(_, message)| format!("  {message}"))
            .collect();
        panic!(
            "{} seed(s) failed (stopped after 20):\n{}\nreplay one with:\n  \
             TERN_OSCORE_SIM_SEED={} cargo test -p tern-oscore --test oscore_sim -- --nocapture",
            failed.len(),
            list.join("\n"),
            failed[0].0
        );
    }
    // Liveness over many seeds: a request has four attempts; a CON attempt fails with
    // probability below about 7% at 30% loss each way, a NON one (request and response each
    // sent once) about half the time, and partitions of up to 20 s take a few; about 98% are
    // answered. Below 95% means retransmission, deduplication or the replay window is
    // refusing good requests.
    if strict_requests >= 2000 {
        let rate = strict_answered as f64 / strict_requests as f64;
        assert!(
            rate >= 0.95,
            "only {strict_answered}/{strict_requests} requests were answered without corruption"
        );
    }
}

/// A seed is a replay: run twice, it does the same.
#[test]
fn a_seed_replays_exactly() {
    for seed in 0..8 {
        let first = run_seed(seed);
        assert_eq!(run_seed(seed), first, "seed {seed} did not replay");
    }
}

//! Thousands of seeded simulations of a client and a server [`Endpoint`] over a faulty
//! [`sim::World`](tern_proto::sim::World): loss, duplication, delay and reordering, bit
//! corruption and partitions, each drawn per seed and per direction.
//!
//! Checked for every seed:
//! - every request ends exactly once (a response or a failure), and nothing is left active;
//! - every request the server saw exactly as the client sent it runs its handler at most once,
//!   and exactly once when its response arrived;
//! - every response matches its request (code and payload), and every request is answered;
//! - failures are only the ones loss can explain (no ACK, time-out).
//!
//! With corruption on, a flipped bit can turn a datagram into a different valid message, which
//! the protocol cannot tell apart (no checksum survives the simulated wire). Such a message is
//! recognised because its bytes were never sent by either node; what it causes (an extra
//! handler run, a mismatched response, a reset) is counted, and must stay within what the
//! corrupted datagrams can explain. Seeds without corruption are checked strictly.
//!
//! Run:    cargo test -p tern-proto --test sim_seeds -- --nocapture
//! Replay: TERN_SIM_SEED=1234 cargo test -p tern-proto --test sim_seeds -- --nocapture
//! More:   TERN_SIM_SEEDS=100000 cargo test --release -p tern-proto --test sim_seeds

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use tern_proto::endpoint::{RequestError, RequestParams};
use tern_proto::sim::{panic_message, seeds_from_env, SplitMix64 as Rng};
use tern_proto::sim::{LinkConfig, Node, World};
use tern_proto::{
    Code, Endpoint, EndpointConfig, Event, Message, MessageType, RequestId, TransmissionParams,
    Transmit,
};

/// Seeds run by default: about 5 s in the debug profile on a 2-core machine.
const DEFAULT_SEEDS: u64 = 10_000;
/// Virtual time by which everything must have ended: requests wait at most EXCHANGE_LIFETIME
/// (247 s) after an empty ACK, so an hour is ample.
const HORIZON: Duration = Duration::from_secs(3600);
/// Bound on simulation steps per seed, so that a livelock fails instead of hanging.
const MAX_STEPS: usize = 2_000_000;

// --- deterministic choices independent of the network's generator ----------------------------

// --- a node that remembers what it sent --------------------------------------------------------

/// An endpoint that records every datagram it puts on the wire, so that a received message can
/// be told apart from one a corrupted bit made up, plus an application timer (`wake`): the
/// world's clock only moves to the next node timer or arrival, so scheduled requests and late
/// responses need one.
struct Traced {
    ep: Endpoint,
    sent: HashSet<Vec<u8>>,
    wake: Option<Instant>,
}

impl Traced {
    fn new(ep: Endpoint) -> Self {
        Traced {
            ep,
            sent: HashSet::new(),
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
        self.sent.insert(t.contents.clone());
        Some(t)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match (self.ep.poll_timeout(), self.wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Whether `message`, as received, is byte for byte a datagram `by` sent.
fn genuine(message: &Message, by: &Traced) -> bool {
    message.to_bytes().is_ok_and(|b| by.sent.contains(&b))
}

// --- the scenario --------------------------------------------------------------------------------

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

#[derive(Debug, Clone)]
struct Planned {
    ty: MessageType,
    method: Code,
    missing: bool,
    payload: Vec<u8>,
    timeout: Option<Duration>,
}

impl Planned {
    fn message(&self, index: usize) -> Message {
        let mut m = Message::new(self.ty, self.method);
        let dir = if self.missing { "missing" } else { "r" };
        m.set_path(&format!("/{dir}/{index}"));
        m.payload = self.payload.clone();
        m
    }
}

/// The server's answer to a request for `path` (`r/N` or `missing/N`).
fn answer(method: Code, path: &str, payload: &[u8]) -> Message {
    let mut m = Message::new(MessageType::Ack, Code::CONTENT);
    let Some(index) = path
        .strip_prefix("r/")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        m.code = Code::NOT_FOUND;
        return m;
    };
    (m.code, m.payload) = match method {
        Code::GET => (Code::CONTENT, format!("a{index}").into_bytes()),
        Code::POST => {
            let mut p = format!("echo{index}:").into_bytes();
            p.extend_from_slice(payload);
            (Code::CHANGED, p)
        }
        Code::PUT => (Code::CHANGED, format!("put{index}").into_bytes()),
        Code::DELETE => (Code::DELETED, format!("del{index}").into_bytes()),
        _ => (Code::BAD_REQUEST, Vec::new()),
    };
    m
}

enum Action {
    Send(usize),
    Respond(tern_proto::IncomingId, Message),
    Partition(bool),
}

/// What one seed did, for the totals.
#[derive(Debug, Default, Clone, Copy)]
struct Report {
    requests: u64,
    con: u64,
    con_ok: u64,
    non: u64,
    non_ok: u64,
    corrupted: u64,
    anomalies: u64,
    strict: bool,
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

/// One seed: the scenario and every check. Panics with the seed on a violation.
fn run_seed(seed: u64) -> Report {
    let mut rng = Rng(seed ^ 0x7465_726e_5f73_696d);
    let t0 = Instant::now();
    let mut world: World<Traced> = World::new(seed, t0);
    let (c_addr, s_addr) = (addr(5683), addr(5684));
    // Every other seed corrupts bits; the others are checked strictly.
    let corrupt = seed % 2 == 1;
    world.net.set_link(c_addr, s_addr, link(&mut rng, corrupt));
    world.net.set_link(s_addr, c_addr, link(&mut rng, corrupt));

    let client_config = EndpointConfig {
        params: TransmissionParams {
            nstart: rng.range(1, 4) as usize,
            ..Default::default()
        },
        ..Default::default()
    };
    let (cseed, sseed) = (world.net.node_seed(), world.net.node_seed());
    let c = world.add(c_addr, Traced::new(Endpoint::new(client_config, cseed)));
    let s = world.add(
        s_addr,
        Traced::new(Endpoint::new(EndpointConfig::default(), sseed)),
    );

    // The plan: requests at times within the first 5 s, maybe a partition.
    let count = rng.range(5, 24) as usize;
    let mut plan = Vec::with_capacity(count);
    let mut actions: BTreeMap<(Instant, u64), Action> = BTreeMap::new();
    let mut seq = 0u64;
    let mut schedule = |actions: &mut BTreeMap<(Instant, u64), Action>, at: Instant, a: Action| {
        seq += 1;
        actions.insert((at, seq), a);
    };
    for i in 0..count {
        let method =
            [Code::GET, Code::GET, Code::POST, Code::PUT, Code::DELETE][rng.range(0, 4) as usize];
        let payload = if matches!(method, Code::POST | Code::PUT) {
            let len = rng.range(0, 64) as usize;
            (0..len).map(|k| b'a' + ((i + k) % 26) as u8).collect()
        } else {
            Vec::new()
        };
        plan.push(Planned {
            ty: if rng.chance(0.75) {
                MessageType::Con
            } else {
                MessageType::Non
            },
            method,
            missing: rng.chance(0.1),
            payload,
            timeout: rng
                .chance(0.3)
                .then(|| Duration::from_secs(rng.range(30, 300))),
        });
        let at = t0 + rng.millis(0, 5000);
        schedule(&mut actions, at, Action::Send(i));
    }
    if rng.chance(0.2) {
        let from = t0 + rng.millis(0, 5000);
        schedule(&mut actions, from, Action::Partition(true));
        schedule(
            &mut actions,
            from + rng.millis(500, 20_000),
            Action::Partition(false),
        );
    }

    let mut ids: HashMap<RequestId, usize> = HashMap::new();
    let mut ended: HashMap<usize, Result<Message, RequestError>> = HashMap::new();
    // Handler runs per request index, for requests received exactly as sent.
    let mut runs: HashMap<usize, u32> = HashMap::new();
    let mut anomalies = 0u64;
    let mut anomaly_log: Vec<String> = Vec::new();
    let limit = t0 + HORIZON;
    let mut steps = 0usize;

    loop {
        let now = world.now();
        // Scheduled actions that are due.
        while let Some(entry) = actions.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Action::Send(i) => {
                    let p = &plan[i];
                    let params = RequestParams { timeout: p.timeout };
                    let id = world
                        .node(c)
                        .ep
                        .request(now, s_addr, p.message(i), params)
                        .unwrap_or_else(|e| panic!("seed {seed}: request {i} refused: {e}"));
                    ids.insert(id, i);
                }
                Action::Respond(id, response) => {
                    world
                        .node(s)
                        .ep
                        .respond(now, id, response)
                        .unwrap_or_else(|e| panic!("seed {seed}: respond failed: {e}"));
                }
                Action::Partition(cut) => {
                    world.net.set_partition(c_addr, s_addr, cut);
                    world.net.set_partition(s_addr, c_addr, cut);
                }
            }
        }
        // The server's handler: answer now, soon (piggybacked) or late (separate response).
        while let Some(ev) = world.node(s).ep.poll_event() {
            let Event::Request { id, request, .. } = ev else {
                anomalies += 1;
                anomaly_log.push(format!("server event {ev:?}"));
                continue;
            };
            let path = request.path();
            let is_genuine = genuine(&request, &world.nodes[c].1);
            if is_genuine {
                let index = path
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("seed {seed}: genuine request for {path}"));
                let n = runs.entry(index).or_default();
                *n += 1;
                assert!(
                    *n == 1,
                    "seed {seed}: handler for request {index} ({path}) ran {n} times"
                );
            } else {
                anomalies += 1;
                anomaly_log.push(format!("handler ran for a corrupted request {request:?}"));
            }
            let response = answer(request.code, &path, &request.payload);
            let delay = match rng.range(0, 9) {
                0..=5 => Duration::ZERO,
                6 | 7 => rng.millis(1, 900),
                _ => rng.millis(1100, 4000),
            };
            if delay.is_zero() {
                world
                    .node(s)
                    .ep
                    .respond(now, id, response)
                    .unwrap_or_else(|e| panic!("seed {seed}: respond failed: {e}"));
            } else {
                schedule(&mut actions, now + delay, Action::Respond(id, response));
            }
        }
        // The client's outcomes.
        while let Some(ev) = world.node(c).ep.poll_event() {
            let (id, outcome) = match ev {
                Event::Response { id, response } => (id, Ok(response)),
                Event::RequestFailed { id, error } => (id, Err(error)),
                Event::Request { id, request, .. } => {
                    // Only a corrupted datagram can look like a request to the client.
                    anomalies += 1;
                    anomaly_log.push(format!("client got a request {request:?}"));
                    let mut m = Message::new(MessageType::Ack, Code::NOT_FOUND);
                    m.payload.clear();
                    let _ = world.node(c).ep.respond(now, id, m);
                    continue;
                }
                other => {
                    // Nothing here observes or notifies (tests/observe_sim.rs does).
                    anomalies += 1;
                    anomaly_log.push(format!("client event {other:?}"));
                    continue;
                }
            };
            let index = *ids
                .get(&id)
                .unwrap_or_else(|| panic!("seed {seed}: an event for unknown request {id:?}"));
            match &outcome {
                Ok(response) => {
                    let p = &plan[index];
                    let sent = p.message(index);
                    let expected = answer(p.method, &sent.path(), &p.payload);
                    let matches = response.code == expected.code
                        && response.payload == expected.payload
                        && genuine(response, &world.nodes[s].1);
                    if !matches {
                        anomalies += 1;
                        anomaly_log.push(format!(
                            "request {index} ({} {}) got {} {:?}, expected {} {:?}",
                            p.method,
                            sent.path(),
                            response.code,
                            String::from_utf8_lossy(&response.payload),
                            expected.code,
                            String::from_utf8_lossy(&expected.payload),
                        ));
                    }
                }
                Err(RequestError::Unacknowledged { .. } | RequestError::Timeout) => {}
                Err(e) => {
                    anomalies += 1;
                    anomaly_log.push(format!("request {index} failed: {e}"));
                }
            }
            assert!(
                ended.insert(index, outcome).is_none(),
                "seed {seed}: request {index} ended twice"
            );
        }
        if ended.len() == count && actions.is_empty() {
            break;
        }
        steps += 1;
        assert!(
            steps < MAX_STEPS,
            "seed {seed}: no end after {MAX_STEPS} steps"
        );
        // Advance to the next network or timer event, but no further than the next action.
        let next_action = actions.first_key_value().map(|(k, _)| k.0);
        world.node(c).wake = next_action;
        if !world.step(limit) && next_action.is_none() {
            break;
        }
    }

    let missing: Vec<usize> = (0..count).filter(|i| !ended.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: requests {missing:?} never ended within {HORIZON:?} of virtual time"
    );
    assert_eq!(
        world.nodes[c].1.ep.active_requests(),
        0,
        "seed {seed}: client still holds requests"
    );
    assert_eq!(
        world.nodes[s].1.ep.pending_incoming(),
        0,
        "seed {seed}: server holds unanswered requests"
    );

    let mut report = Report {
        requests: count as u64,
        corrupted: world.net.stats().corrupted,
        anomalies,
        strict: !corrupt,
        virtual_secs: (world.now() - t0).as_secs(),
        ..Report::default()
    };
    for (index, outcome) in &ended {
        let ok = outcome.is_ok();
        if plan[*index].ty == MessageType::Con {
            report.con += 1;
            report.con_ok += u64::from(ok);
        } else {
            report.non += 1;
            report.non_ok += u64::from(ok);
        }
        // A matching response means the handler ran (exactly once, checked above), unless a
        // corrupted copy of the request stood in for it.
        if ok && !runs.contains_key(index) {
            assert!(
                corrupt,
                "seed {seed}: request {index} was answered but its handler never ran"
            );
        }
    }
    if !corrupt {
        assert!(
            anomalies == 0,
            "seed {seed}: without corruption:\n  {}",
            anomaly_log.join("\n  ")
        );
    } else {
        // One corrupted datagram explains at most two anomalies: a made-up request runs a
        // handler, and its answer then goes to the client's real request.
        assert!(
            anomalies <= 2 * report.corrupted,
            "seed {seed}: {anomalies} anomalies from {} corrupted datagrams:\n  {}",
            report.corrupted,
            anomaly_log.join("\n  ")
        );
    }
    report
}

#[test]
fn thousands_of_seeds_end_every_request_exactly_once() {
    let seeds: Vec<u64> = seeds_from_env("TERN_SIM", DEFAULT_SEEDS);
    let started = std::time::Instant::now();
    let mut total = Report::default();
    let (mut strict_con, mut strict_con_ok) = (0u64, 0u64);
    let mut failed: Vec<(u64, String)> = Vec::new();
    // Keep the default panic output for the first failure only; the rest are summarised.
    for &seed in &seeds {
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed))) {
            Ok(r) => {
                total.requests += r.requests;
                total.con += r.con;
                total.con_ok += r.con_ok;
                total.non += r.non;
                total.non_ok += r.non_ok;
                total.corrupted += r.corrupted;
                total.anomalies += r.anomalies;
                total.virtual_secs += r.virtual_secs;
                if r.strict {
                    strict_con += r.con;
                    strict_con_ok += r.con_ok;
                }
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
    let elapsed = started.elapsed();
    println!(
        "sim_seeds: {} seeds in {:.1?} ({} requests; CON {}/{} answered, NON {}/{} answered; \
         without corruption CON {}/{}; {} corrupted datagrams caused {} anomalies; \
         {} s of virtual time)",
        seeds.len(),
        elapsed,
        total.requests,
        total.con_ok,
        total.con,
        total.non_ok,
        total.non,
        strict_con_ok,
        strict_con,
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
            "{} seed(s) failed (stopped after 20):\n{}\nreplay one with:\n  TERN_SIM_SEED={} \
             cargo test -p tern-proto --test sim_seeds -- --nocapture",
            failed.len(),
            list.join("\n"),
            failed[0].0
        );
    }
    // Liveness over many seeds: with at most 30% loss each way and four retransmissions, a CON
    // exchange fails with probability below 1 - (1 - 0.51^5)^2 ≈ 7% (request/ACK, then a
    // separate response), partitions and time-outs add a little; below 85% answered means
    // retransmission or deduplication is broken. Only meaningful over many requests.
    if strict_con >= 2000 {
        let rate = strict_con_ok as f64 / strict_con as f64;
        assert!(
            rate >= 0.85,
            "only {strict_con_ok}/{strict_con} CON requests were answered without corruption"
        );
    }
}

/// The checks can fail: a server that answers the wrong request is caught.
#[test]
fn a_mismatched_answer_is_detected() {
    let right = answer(Code::GET, "r/3", b"");
    let wrong = answer(Code::GET, "r/4", b"");
    assert_ne!(right.payload, wrong.payload);
    assert_eq!(answer(Code::GET, "missing/3", b"").code, Code::NOT_FOUND);
    assert_eq!(
        answer(Code::POST, "r/1", b"xy").payload,
        b"echo1:xy".to_vec()
    );
    // A datagram neither node sent is not genuine.
    let node = Traced::new(Endpoint::new(EndpointConfig::default(), [1; 32]));
    assert!(!genuine(&right, &node));
}

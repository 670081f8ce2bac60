//! Block-wise transfers end to end over a faulty simulated network: a client [`Endpoint`] PUTs a
//! 1 MB body with [`Block1Send`] and GETs it back with [`Block2Fetch`] from a server
//! [`Endpoint`] that reassembles with a [`Block1Assembler`] and slices with a [`Block2Server`].
//! Every link loses 20% of datagrams, duplicates some and reorders with jitter.
//!
//! The adapters below are what the runtime will do: send what the machines give through the
//! message layer, feed back each response, retry a request the message layer gave up on
//! (a new message ID; the server acknowledges a repeated block again), and start a transfer
//! over on 4.08 (the final block was retried after the server had completed the body).
//!
//! Checked for every seed: the server stored exactly the bytes sent, the client fetched exactly
//! the bytes stored, each handler ran once per (re)started transfer, and nothing is left
//! pending in either endpoint or in the assembler.
//!
//! Run:    cargo test -p tern-proto --test block_sim -- --nocapture
//! Replay: TERN_BLOCK_SIM_SEED=5 cargo test -p tern-proto --test block_sim -- --nocapture
//! More:   TERN_BLOCK_SIM_SEEDS=100 cargo test --release -p tern-proto --test block_sim
//! The small-body scenario (3,000 seeds of 5,200 bytes) takes TERN_BLOCK_SIM_SMALL_SEED(S).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern_proto::block::{
    Block1Action, Block1Assembler, Block1Config, Block1Send, Block1SendConfig, Block1Step,
    Block2Config, Block2Fetch, Block2Lookup, Block2Server, Block2Step, BlockValue, TransferError,
};
use tern_proto::endpoint::RequestParams;
use tern_proto::sim::{panic_message, seeds_from_env, LinkConfig, Node, World};
use tern_proto::{
    Code, Endpoint, EndpointConfig, Event, Message, MessageType, OptionNumber, RequestId, Transmit,
};

/// Seeds run by default with the 1 MB body: about 0.1 s each in the debug profile (5 s in all
/// on a 2-core machine).
const DEFAULT_SEEDS: u64 = 48;
/// The body, both ways: 1 MB, not a multiple of any block size.
const BODY_LEN: usize = 1_000_000;
/// Seeds run by default with the small body (a few blocks each way, so that thousands of seeds
/// reach the corner cases of a transfer's first and last blocks).
const SMALL_SEEDS: u64 = 3_000;
/// The small body: five 1024-byte blocks and a bit, ten 512-byte ones and a bit.
const SMALL_BODY_LEN: usize = 5_200;
const LOSS: f64 = 0.2;
const HORIZON: Duration = Duration::from_secs(24 * 3600);
const MAX_STEPS: usize = 3_000_000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], port))
}

/// The message layer with Block1 and Block2 implemented (above it, by the machines).
fn endpoint_config() -> EndpointConfig {
    EndpointConfig {
        unimplemented_options: Vec::new(),
        ..EndpointConfig::default()
    }
}

fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

// --- the server: message layer, assembler, Block2 cache and a one-resource handler -----------

struct Server {
    ep: Endpoint,
    assembler: Block1Assembler,
    block2: Block2Server,
    stored: Vec<u8>,
    puts: u32,
    gets: u32,
}

impl Server {
    /// The handler: PUT /big stores the body, GET /big returns it.
    fn handle(&mut self, request: &Message) -> Message {
        let mut r = Message::new(MessageType::Ack, Code::NOT_FOUND);
        if request.path() != "big" {
            return r;
        }
        match request.code {
            Code::PUT => {
                self.puts += 1;
                self.stored = request.payload.clone();
                r.code = Code::CHANGED;
            }
            Code::GET => {
                self.gets += 1;
                r.code = Code::CONTENT;
                r.payload = self.stored.clone();
            }
            _ => r.code = Code::METHOD_NOT_ALLOWED,
        }
        r
    }

    fn process(&mut self, now: Instant) {
        while let Some(event) = self.ep.poll_event() {
            let Event::Request { id, peer, request } = event else {
                continue;
            };
            let response = match self.assembler.handle(now, peer, request) {
                Block1Action::Continue(r) | Block1Action::Reject(r) => r,
                Block1Action::Complete(done) => {
                    match self.block2.handle_request(now, peer, &done.request) {
                        Block2Lookup::Respond(r) => r,
                        Block2Lookup::Handle | Block2Lookup::Regenerate => {
                            let r = self.handle(&done.request);
                            let mut r = self.block2.respond(now, peer, &done.request, r);
                            done.acknowledge(&mut r);
                            r
                        }
                    }
                }
            };
            self.ep.respond(now, id, response).expect("respond");
        }
    }
}

impl Node for Server {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.ep.handle(now, from, datagram);
        self.process(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.assembler.handle_timeout(now);
        self.block2.handle_timeout(now);
        self.process(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ep.poll_transmit()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let machines = earlier(self.assembler.poll_timeout(), self.block2.poll_timeout());
        earlier(self.ep.poll_timeout(), machines)
    }
}

// --- the client: message layer and the two transfer machines ---------------------------------

enum Phase {
    Put(Block1Send),
    Get(Block2Fetch),
    Done(Vec<u8>),
}

struct Client {
    ep: Endpoint,
    server: SocketAddr,
    phase: Phase,
    /// The request in flight, kept to retry it.
    last: Message,
    current: Option<RequestId>,
    get_szx: Option<u8>,
    /// The body's length (the GET accepts up to twice it).
    body_len: usize,
    exchanges: u64,
    retries: u64,
    restarts: u64,
}

impl Client {
    fn send(&mut self, now: Instant, request: Message) {
        self.exchanges += 1;
        let id = self
            .ep
            .request(now, self.server, request.clone(), RequestParams::default())
            .expect("request");
        self.last = request;
        self.current = Some(id);
    }

    fn start_get(&mut self, now: Instant) {
        let mut get = Message::new(MessageType::Con, Code::GET);
        get.set_path("/big");
        if let Some(szx) = self.get_szx {
            BlockValue::initial(szx).write(&mut get.options, OptionNumber::BLOCK2);
        }
        self.phase = Phase::Get(Block2Fetch::new(&get, 2 * self.body_len));
        self.send(now, get);
    }

    fn on_response(&mut self, now: Instant, response: Message) {
        match &mut self.phase {
            Phase::Put(send) => match send.handle_response(response) {
                Ok(Block1Step::Send(next)) => self.send(now, next),
                Ok(Block1Step::Done(r)) => {
                    assert_eq!(r.code, Code::CHANGED, "final PUT response {r:?}");
                    self.start_get(now);
                }
                Err(TransferError::EntityIncomplete) => {
                    // The final block was retried after the server had completed the body.
                    self.restarts += 1;
                    let first = send.restart();
                    self.send(now, first);
                }
                other => panic!("PUT transfer: {other:?}"),
            },
            Phase::Get(fetch) => match fetch.handle_response(response) {
                Ok(Block2Step::Send(next)) => self.send(now, next),
                Ok(Block2Step::Done(r)) => {
                    assert_eq!(r.code, Code::CONTENT);
                    self.phase = Phase::Done(r.payload);
                }
                other => panic!("GET transfer: {other:?}"),
            },
            Phase::Done(_) => panic!("a response after the end"),
        }
    }

    fn process(&mut self, now: Instant) {
        while let Some(event) = self.ep.poll_event() {
            match event {
                Event::Response { id, response } if Some(id) == self.current => {
                    self.current = None;
                    self.on_response(now, response);
                }
                Event::RequestFailed { id, error } if Some(id) == self.current => {
                    // The message layer gave up (all transmissions or ACKs lost): send again.
                    assert!(
                        !matches!(error, tern_proto::endpoint::RequestError::Reset),
                        "{error}"
                    );
                    self.retries += 1;
                    let again = self.last.clone();
                    self.send(now, again);
                }
                other => panic!("unexpected client event {other:?}"),
            }
        }
    }
}

impl Node for Client {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.ep.handle(now, from, datagram);
        self.process(now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.process(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ep.poll_transmit()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.ep.poll_timeout()
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

// --- one seed ----------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Report {
    exchanges: u64,
    retries: u64,
    restarts: u64,
    sent: u64,
    lost: u64,
    duplicated: u64,
    virtual_secs: u64,
    /// Blocks the assembler acknowledged again (a retried request).
    repeated_blocks: u64,
    /// Later response blocks served from the cache, and generated again.
    from_cache: u64,
    regenerated: u64,
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn run_seed(seed: u64, body_len: usize) -> Report {
    let t0 = Instant::now();
    let mut world: World<Peer> = World::new(seed, t0);
    let (c_addr, s_addr) = (addr(5683), addr(5684));
    world.net.set_default_link(LinkConfig {
        loss: LOSS,
        duplicate: 0.1,
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(300),
        corrupt: 0.0,
    });
    let (cseed, sseed) = (world.net.node_seed(), world.net.node_seed());
    // Odd seeds: the server asks for 512-byte request blocks (early negotiation). Every third
    // seed: the client asks for 512-byte response blocks.
    let block1 = Block1Config {
        max_body_size: 2 * body_len,
        max_buffered_bytes: 4 * body_len,
        preferred_szx: if seed % 2 == 1 { 5 } else { 6 },
        ..Block1Config::default()
    };
    let server = Server {
        ep: Endpoint::new(endpoint_config(), sseed),
        assembler: Block1Assembler::new(block1, sseed),
        block2: Block2Server::new(Block2Config::default(), sseed),
        stored: Vec::new(),
        puts: 0,
        gets: 0,
    };
    let body = payload(seed, body_len);
    let mut put = Message::new(MessageType::Con, Code::PUT);
    put.set_path("/big");
    put.payload = body.clone();
    let settings = Block1SendConfig {
        request_tag: (seed % 4 == 0).then(|| seed.to_be_bytes()[..4].to_vec()),
        ..Block1SendConfig::default()
    };
    let (send, first) = Block1Send::start(put, settings).expect("start");
    let mut client = Client {
        ep: Endpoint::new(endpoint_config(), cseed),
        server: s_addr,
        phase: Phase::Put(send),
        last: first.clone(),
        current: None,
        get_szx: (seed % 3 == 0).then_some(5),
        body_len,
        exchanges: 0,
        retries: 0,
        restarts: 0,
    };
    client.send(t0, first);
    let c = world.add(c_addr, Peer::Client(Box::new(client)));
    let s = world.add(s_addr, Peer::Server(Box::new(server)));

    let limit = t0 + HORIZON;
    let mut steps = 0;
    let done = |world: &mut World<Peer>| match world.node(c) {
        Peer::Client(client) => matches!(client.phase, Phase::Done(_)),
        Peer::Server(_) => unreachable!(),
    };
    while !done(&mut world) {
        steps += 1;
        assert!(
            steps < MAX_STEPS,
            "seed {seed}: no end after {MAX_STEPS} steps"
        );
        assert!(
            world.step(limit),
            "seed {seed}: stalled before the transfers ended"
        );
    }
    // Let the last ACKs and timers play out.
    world.run_until(world.now() + Duration::from_secs(600), |_| false);

    let (Peer::Client(client), Peer::Server(server)) = (&world.nodes[c].1, &world.nodes[s].1)
    else {
        unreachable!()
    };
    let Phase::Done(fetched) = &client.phase else {
        unreachable!()
    };
    assert!(
        server.stored == body,
        "seed {seed}: the stored body differs"
    );
    assert!(*fetched == body, "seed {seed}: the fetched body differs");
    assert_eq!(
        u64::from(server.puts),
        1 + client.restarts,
        "seed {seed}: PUT handler runs"
    );
    assert!(server.gets >= 1, "seed {seed}: GET handler never ran");
    assert_eq!(client.ep.active_requests(), 0, "seed {seed}");
    assert_eq!(server.ep.pending_incoming(), 0, "seed {seed}");
    assert!(
        server.assembler.is_empty(),
        "seed {seed}: a transfer is left"
    );
    let stats = world.net.stats();
    Report {
        exchanges: client.exchanges,
        retries: client.retries,
        restarts: client.restarts,
        sent: stats.sent,
        lost: stats.lost,
        duplicated: stats.duplicated,
        virtual_secs: (world.now() - t0).as_secs(),
        repeated_blocks: server.assembler.stats().repeated,
        from_cache: server.block2.stats().from_cache,
        regenerated: server.block2.stats().regenerated,
    }
}

/// Runs the seeds (`{prefix}_SEED` alone, else `{prefix}_SEEDS` or `default` of them) with
/// a body of `body_len` bytes and prints the totals.
fn run_seeds(prefix: &str, default: u64, body_len: usize, print_each: bool) {
    let seeds: Vec<u64> = seeds_from_env(prefix, default);
    let started = std::time::Instant::now();
    let mut total = Report::default();
    for &seed in &seeds {
        let outcome = std::panic::catch_unwind(|| run_seed(seed, body_len));
        let r = outcome.unwrap_or_else(|panic| {
            let why = panic_message(&*panic);
            panic!(
                "{why}\nreplay: {prefix}_SEED={seed} cargo test -p tern-proto --test block_sim \
                 -- --nocapture"
            )
        });
        if print_each || seeds.len() == 1 {
            println!("block_sim: seed {seed}: {r:?}");
        }
        total.exchanges += r.exchanges;
        total.retries += r.retries;
        total.restarts += r.restarts;
        total.sent += r.sent;
        total.lost += r.lost;
        total.duplicated += r.duplicated;
        total.virtual_secs += r.virtual_secs;
        total.repeated_blocks += r.repeated_blocks;
        total.from_cache += r.from_cache;
        total.regenerated += r.regenerated;
    }
    println!(
        "block_sim: {} seeds, {} bytes each way, {:.0}% loss, in {:.1?}: {} exchanges, {} \
         retried after the message layer gave up, {} restarts after 4.08; {} datagrams sent, \
         {} lost, {} duplicated; server: {} repeated blocks acknowledged again, {} blocks \
         from the cache, {} regenerated; {} s of virtual time",
        seeds.len(),
        body_len,
        LOSS * 100.0,
        started.elapsed(),
        total.exchanges,
        total.retries,
        total.restarts,
        total.sent,
        total.lost,
        total.duplicated,
        total.repeated_blocks,
        total.from_cache,
        total.regenerated,
        total.virtual_secs,
    );
}

#[test]
fn a_megabyte_both_ways_survives_loss_duplication_and_reordering() {
    run_seeds("TERN_BLOCK_SIM", DEFAULT_SEEDS, BODY_LEN, true);
}

#[test]
fn small_bodies_both_ways_survive_thousands_of_seeds() {
    run_seeds("TERN_BLOCK_SIM_SMALL", SMALL_SEEDS, SMALL_BODY_LEN, false);
}

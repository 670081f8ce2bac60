//! A deterministic in-memory network for sans-IO nodes, with a virtual clock.
//!
//! Each direction between two addresses can lose, duplicate, delay, reorder and corrupt
//! datagrams, or be cut off entirely; every random choice comes from one seed, so a failing run
//! is replayed exactly by its seed. Nodes are anything that implements [`Node`] — the message
//! layer's [`Endpoint`](crate::Endpoint) does, and so will the secure channels and OSCORE layers
//! stacked on it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::endpoint::{Endpoint, Transmit};

/// A sans-IO participant of a simulated network.
pub trait Node {
    /// A datagram arrived from `from`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    /// Time passed to `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram this node wants to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// When this node next needs [`handle_timeout`](Self::handle_timeout).
    fn poll_timeout(&self) -> Option<Instant>;
}

impl Node for Endpoint {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.handle(now, from, datagram);
    }
    fn handle_timeout(&mut self, now: Instant) {
        Endpoint::handle_timeout(self, now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Endpoint::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Endpoint::poll_timeout(self)
    }
}

/// Faults applied to one direction of traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Base one-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]`; jitter larger than the gap between two
    /// datagrams reorders them.
    pub jitter: Duration,
    /// Probability that one random bit of a datagram is flipped.
    pub corrupt: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            loss: 0.0,
            duplicate: 0.0,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            corrupt: 0.0,
        }
    }
}

/// Counts of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent by nodes.
    pub sent: u64,
    /// Datagrams delivered (duplicates count twice).
    pub delivered: u64,
    /// Datagrams lost (including by partitions).
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Datagrams with a flipped bit.
    pub corrupted: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    contents: Vec<u8>,
}

/// The simulated network and its clock.
pub struct Network {
    now: Instant,
    rng: ChaCha8Rng,
    default_link: LinkConfig,
    links: HashMap<(SocketAddr, SocketAddr), LinkConfig>,
    cut: HashSet<(SocketAddr, SocketAddr)>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    stats: NetStats,
}

impl Network {
    /// A network whose random choices come from `seed`, starting at `start`.
    pub fn new(seed: u64, start: Instant) -> Self {
        Network {
            now: start,
            rng: ChaCha8Rng::seed_from_u64(seed),
            default_link: LinkConfig::default(),
            links: HashMap::new(),
            cut: HashSet::new(),
            in_flight: BinaryHeap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Faults for every direction without its own.
    pub fn set_default_link(&mut self, link: LinkConfig) {
        self.default_link = link;
    }

    /// Faults for traffic from `from` to `to`.
    pub fn set_link(&mut self, from: SocketAddr, to: SocketAddr, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// Cuts (or restores) traffic from `from` to `to`.
    pub fn set_partition(&mut self, from: SocketAddr, to: SocketAddr, cut: bool) {
        if cut {
            self.cut.insert((from, to));
        } else {
            self.cut.remove(&(from, to));
        }
    }

    /// A uniform random number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A seed for a node, drawn from the network's seed.
    pub fn node_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }

    /// Puts a datagram on the wire, applying the link's faults.
    pub fn send(&mut self, from: SocketAddr, transmit: Transmit) {
        self.stats.sent += 1;
        let to = transmit.destination;
        let link = self
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link);
        if self.cut.contains(&(from, to)) || self.unit() < link.loss {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.unit() < link.duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut contents = transmit.contents.clone();
            if !contents.is_empty() && self.unit() < link.corrupt {
                self.stats.corrupted += 1;
                let bit = (self.rng.next_u64() % (contents.len() as u64 * 8)) as usize;
                contents[bit / 8] ^= 1 << (bit % 8);
            }
            let at = self.now + link.delay + link.jitter.mul_f64(self.unit());
            self.seq += 1;
            self.in_flight.push(Reverse(InFlight {
                at,
                seq: self.seq,
                from,
                to,
                contents,
            }));
        }
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(f)| f.at)
    }

    /// Moves the clock forward to `now` (never back): for a network driven by someone else's
    /// clock, such as the runtime's simulated sockets on Tokio's paused time.
    pub fn advance_to(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Takes the next datagram due by the network's clock: `(from, to, contents)`.
    pub fn take_due(&mut self) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        self.pop_due(self.now)
    }

    /// Takes the next datagram due by `now`: `(from, to, contents)`.
    fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        if self.in_flight.peek().is_some_and(|Reverse(f)| f.at <= now) {
            let Reverse(f) = self.in_flight.pop()?;
            self.stats.delivered += 1;
            return Some((f.from, f.to, f.contents));
        }
        None
    }
}

/// SplitMix64: a scenario's own random choices (which requests, which fault profile), derived
/// from its seed and independent of the network's generator, so that the two do not shift
/// each other when a scenario changes.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A duration uniform in `[lo, hi]` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// The seeds a simulation test runs: `{prefix}_SEED` alone (to replay one), else `0..N` for
/// `N` from `{prefix}_SEEDS`, or `default`. A value that is not a number is an error, not a
/// silent default.
pub fn seeds_from_env(prefix: &str, default: u64) -> Vec<u64> {
    let var = |name: String| {
        std::env::var(&name).ok().map(|v| {
            v.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
    };
    match var(format!("{prefix}_SEED")) {
        Some(seed) => vec![seed],
        None => (0..var(format!("{prefix}_SEEDS")).unwrap_or(default)).collect(),
    }
}

/// The message of a caught panic (`catch_unwind`'s error), for naming the seed that failed.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Nodes on a simulated network, advanced together on the virtual clock.
pub struct World<N: Node> {
    /// The network.
    pub net: Network,
    /// The nodes and their addresses.
    pub nodes: Vec<(SocketAddr, N)>,
}

impl<N: Node> World<N> {
    /// A world with no nodes.
    pub fn new(seed: u64, start: Instant) -> Self {
        World {
            net: Network::new(seed, start),
            nodes: Vec::new(),
        }
    }

    /// Adds a node; returns its index.
    pub fn add(&mut self, addr: SocketAddr, node: N) -> usize {
        self.nodes.push((addr, node));
        self.nodes.len() - 1
    }

    /// The node at an index.
    pub fn node(&mut self, index: usize) -> &mut N {
        &mut self.nodes[index].1
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.net.now()
    }

    fn flush(&mut self) {
        for (addr, node) in &mut self.nodes {
            while let Some(t) = node.poll_transmit() {
                self.net.send(*addr, t);
            }
        }
    }

    /// Advances to the next event (arrival or timer) no later than `limit`, handles it, and
    /// returns false when nothing is left to happen before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.flush();
        let next_timer = self
            .nodes
            .iter()
            .filter_map(|(_, n)| n.poll_timeout())
            .min();
        let next = match (self.net.next_arrival(), next_timer) {
            (Some(a), Some(t)) => a.min(t),
            (Some(a), None) => a,
            (None, Some(t)) => t,
            (None, None) => return false,
        };
        if next > limit {
            self.net.now = self.net.now.max(limit);
            return false;
        }
        self.net.now = self.net.now.max(next);
        let now = self.net.now;
        while let Some((from, to, contents)) = self.net.pop_due(now) {
            if let Some((_, node)) = self.nodes.iter_mut().find(|(a, _)| *a == to) {
                node.handle_datagram(now, from, &contents);
            }
        }
        for (_, node) in &mut self.nodes {
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    /// Runs until `limit`, or until `each` — called before every step, to answer requests and
    /// collect events — returns true; returns whether it did.
    pub fn run_until(&mut self, limit: Instant, mut each: impl FnMut(&mut Self) -> bool) -> bool {
        loop {
            if each(self) {
                return true;
            }
            if !self.step(limit) {
                return each(self);
            }
        }
    }
}

//! The server's list of observers (RFC 7641 §4.1, §4.4, §4.5).
//!
//! An observer is a (peer, token) pair registered on one resource. Registering the same pair
//! again replaces the entry (§4.1: the server does not add a second one), even for another
//! resource, since a token names one observation of that client. Both the observers of one
//! resource and all observers together are capped: past a cap, registration fails and the
//! server serves the request as a plain GET, without an Observe option (§4.1).
//!
//! Each resource has its own sequence of Observe values, 24 bits, increasing by one per
//! notification and wrapping (§4.4). And each observer remembers when it last proved to be
//! listening (its registration, or the acknowledgement of a confirmable notification):
//! [`ObserverRegistry::should_confirm`] says when the next notification must be confirmable so
//! that an observer that went away is found out at least every 24 hours (§4.5).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha12Rng;
use rand_core::SeedableRng;

use super::order::OBSERVE_MODULUS;
use crate::endpoint::later;
use crate::hash::{FromRng, HashMap, Hasher};
use crate::message::Token;

/// Limits and timing of an [`ObserverRegistry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Observers of one resource (default 1,000).
    pub max_per_resource: usize,
    /// Observers in all (default 10,000).
    pub max_total: usize,
    /// How long an observer may go without acknowledging a confirmable notification before the
    /// next one must be confirmable (default 24 hours, §4.5).
    pub confirm_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_per_resource: 1000,
            max_total: 10_000,
            confirm_interval: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a registration was refused: the server then answers the request as a plain GET, without
/// an Observe option (§4.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObserveError {
    /// The resource has as many observers as allowed.
    #[error("resource {resource:?} already has {cap} observers")]
    ResourceFull {
        /// The resource.
        resource: String,
        /// Its cap.
        cap: usize,
    },
    /// The registry has as many observers as allowed.
    #[error("{0} observers registered, the most allowed")]
    RegistryFull(usize),
}

/// Whether a registration added an observer or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new observer.
    New,
    /// The same (peer, token) was registered already; its entry was replaced (§4.1).
    Replaced,
}

/// One observer of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observer<T = ()> {
    /// The client.
    pub peer: SocketAddr,
    /// The token of its registration; every notification carries it.
    pub token: Token,
    /// When it (last) registered.
    pub registered: Instant,
    /// When it last proved to be listening: its registration, or the acknowledgement of a
    /// confirmable notification ([`ObserverRegistry::confirmed`]).
    pub last_confirmed: Instant,
    /// What the application keeps with it (the registration request, say, to build
    /// notifications with the same Accept and query).
    pub data: T,
}

#[derive(Debug)]
struct Resource<T> {
    observers: HashMap<(SocketAddr, Token), Observer<T>>,
    /// The last Observe value handed out.
    sequence: u32,
}

/// Observers by resource, capped, with a sequence number per resource. See the module
/// documentation.
#[derive(Debug)]
pub struct ObserverRegistry<T = ()> {
    config: RegistryConfig,
    resources: HashMap<String, Resource<T>>,
    /// Which resource each (peer, token) observes.
    index: HashMap<(SocketAddr, Token), String>,
    /// The tokens each peer observes with, for [`remove_peer`](Self::remove_peer).
    by_peer: HashMap<SocketAddr, Vec<Token>>,
    hasher: Hasher,
}

impl<T> ObserverRegistry<T> {
    /// An empty registry. Peers choose addresses and tokens, so the tables use a hash keyed
    /// from `seed` (the runtime seeds from the operating system, tests for replayable runs).
    pub fn new(config: RegistryConfig, seed: [u8; 32]) -> Self {
        let hasher = Hasher::from_rng(&mut ChaCha12Rng::from_seed(seed));
        ObserverRegistry {
            config,
            resources: HashMap::with_hasher(hasher.clone()),
            index: HashMap::with_hasher(hasher.clone()),
            by_peer: HashMap::with_hasher(hasher.clone()),
            hasher,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Observers in all.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no observers.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Observers of one resource.
    pub fn count(&self, resource: &str) -> usize {
        self.resources
            .get(resource)
            .map_or(0, |r| r.observers.len())
    }

    /// Adds `(peer, token)` as an observer of `resource`, or replaces its entry if it was
    /// registered already (on this resource or another; `registered` and `last_confirmed` then
    /// start again from `now`). Fails past [`RegistryConfig::max_per_resource`] or
    /// [`RegistryConfig::max_total`]: serve the request without Observe then (§4.1).
    pub fn register(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        resource: &str,
        data: T,
    ) -> Result<Registered, ObserveError> {
        let key = (peer, token);
        let previous = self.index.get(&key).map(String::as_str);
        let same_resource = previous == Some(resource);
        if !same_resource {
            // A move to another resource frees a place overall, but not on the new resource.
            if self.count(resource) >= self.config.max_per_resource {
                return Err(ObserveError::ResourceFull {
                    resource: resource.to_string(),
                    cap: self.config.max_per_resource,
                });
            }
            if previous.is_none() && self.index.len() >= self.config.max_total {
                return Err(ObserveError::RegistryFull(self.config.max_total));
            }
        }
        let replaced = if same_resource {
            false
        } else {
            self.deregister(peer, token).is_some()
        };
        let observer = Observer {
            peer,
            token,
            registered: now,
            last_confirmed: now,
            data,
        };
        let hasher = self.hasher.clone();
        let entry = self
            .resources
            .entry(resource.to_string())
            .or_insert_with(|| Resource {
                observers: HashMap::with_hasher(hasher),
                sequence: 0,
            });
        let existed = entry.observers.insert(key, observer).is_some();
        if !existed {
            self.index.insert(key, resource.to_string());
            self.by_peer.entry(peer).or_default().push(token);
        }
        Ok(if existed || replaced {
            Registered::Replaced
        } else {
            Registered::New
        })
    }

    /// Removes one observer (it deregistered, answered a notification with RST, or never
    /// acknowledged one); returns its entry and resource.
    pub fn deregister(&mut self, peer: SocketAddr, token: Token) -> Option<(String, Observer<T>)> {
        let resource = self.index.remove(&(peer, token))?;
        if let Some(tokens) = self.by_peer.get_mut(&peer) {
            if let Some(i) = tokens.iter().position(|t| *t == token) {
                tokens.swap_remove(i);
            }
            if tokens.is_empty() {
                self.by_peer.remove(&peer);
            }
        }
        let r = self.resources.get_mut(&resource)?;
        let observer = r.observers.remove(&(peer, token))?;
        if r.observers.is_empty() {
            // The sequence goes with the last observer: a new registration starts a new order
            // at the client (its first response sets the freshest value).
            self.resources.remove(&resource);
        }
        Some((resource, observer))
    }

    /// Removes every observation of one peer (its session ended); returns how many.
    pub fn remove_peer(&mut self, peer: SocketAddr) -> usize {
        let tokens = self.by_peer.remove(&peer).unwrap_or_default();
        let count = tokens.len();
        for token in tokens {
            // by_peer is already gone, so deregister only updates the other tables.
            let _ = self.deregister(peer, token);
        }
        count
    }

    /// The observers of a resource, in no particular order.
    pub fn observers(&self, resource: &str) -> impl Iterator<Item = &Observer<T>> + '_ {
        self.resources
            .get(resource)
            .into_iter()
            .flat_map(|r| r.observers.values())
    }

    /// One observer and the resource it observes.
    pub fn get(&self, peer: SocketAddr, token: Token) -> Option<(&str, &Observer<T>)> {
        let resource = self.index.get(&(peer, token))?;
        let observer = self
            .resources
            .get(resource)?
            .observers
            .get(&(peer, token))?;
        Some((resource.as_str(), observer))
    }

    /// The Observe value for the next notification of `resource` (§4.4): one more than the
    /// last, modulo 2^24, starting at 1 for a resource's first observer. A server sends the
    /// same value to every observer of one change, and includes it in the response to a
    /// registration too. `None` when the resource has no observers.
    pub fn next_observe_value(&mut self, resource: &str) -> Option<u32> {
        let r = self.resources.get_mut(resource)?;
        r.sequence = (r.sequence + 1) % OBSERVE_MODULUS;
        Some(r.sequence)
    }

    /// Sets the last Observe value of a resource, so that the next one follows it (to carry a
    /// sequence across a restart, or in tests of the wrap-around). No effect without observers.
    pub fn set_sequence(&mut self, resource: &str, last: u32) {
        if let Some(r) = self.resources.get_mut(resource) {
            r.sequence = last % OBSERVE_MODULUS;
        }
    }

    /// Whether the next notification to this observer must be confirmable: when it has not
    /// acknowledged one (or registered) within [`RegistryConfig::confirm_interval`] (§4.5).
    /// True for an unknown observer: a confirmable notification finds out whether it listens.
    pub fn should_confirm(&self, now: Instant, peer: SocketAddr, token: Token) -> bool {
        match self.get(peer, token) {
            Some((_, o)) => now >= later(o.last_confirmed, self.config.confirm_interval),
            None => true,
        }
    }

    /// Records that the observer acknowledged a confirmable notification at `now`
    /// ([`Event::NotificationAcked`](crate::Event::NotificationAcked)).
    pub fn confirmed(&mut self, now: Instant, peer: SocketAddr, token: Token) {
        let Some(resource) = self.index.get(&(peer, token)) else {
            return;
        };
        if let Some(o) = self
            .resources
            .get_mut(resource)
            .and_then(|r| r.observers.get_mut(&(peer, token)))
        {
            o.last_confirmed = o.last_confirmed.max(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], n))
    }

    fn token(n: u8) -> Token {
        Token::new(&[n]).unwrap()
    }

    fn registry(per_resource: usize, total: usize) -> ObserverRegistry<u32> {
        let config = RegistryConfig {
            max_per_resource: per_resource,
            max_total: total,
            ..Default::default()
        };
        ObserverRegistry::new(config, [7; 32])
    }

    #[test]
    fn register_replace_deregister() {
        let t0 = Instant::now();
        let mut reg = registry(10, 10);
        assert_eq!(
            reg.register(t0, addr(1), token(1), "temp", 1),
            Ok(Registered::New)
        );
        assert_eq!(
            reg.register(t0, addr(2), token(1), "temp", 2),
            Ok(Registered::New),
            "same token, other peer: another observer"
        );
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            reg.register(t1, addr(1), token(1), "temp", 3),
            Ok(Registered::Replaced)
        );
        assert_eq!(reg.count("temp"), 2);
        let (resource, o) = reg.get(addr(1), token(1)).unwrap();
        assert_eq!((resource, o.data, o.registered), ("temp", 3, t1));
        // Re-registering the same token on another resource moves the observation.
        assert_eq!(
            reg.register(t1, addr(1), token(1), "humidity", 4),
            Ok(Registered::Replaced)
        );
        assert_eq!(
            (reg.count("temp"), reg.count("humidity"), reg.len()),
            (1, 1, 2)
        );
        let (resource, o) = reg.deregister(addr(1), token(1)).unwrap();
        assert_eq!((resource.as_str(), o.data), ("humidity", 4));
        assert!(reg.deregister(addr(1), token(1)).is_none());
        assert_eq!(reg.count("humidity"), 0);
        let peers: Vec<SocketAddr> = reg.observers("temp").map(|o| o.peer).collect();
        assert_eq!(peers, vec![addr(2)]);
        assert_eq!(reg.observers("nothing").count(), 0);
    }

    #[test]
    fn caps_per_resource_and_overall() {
        let t0 = Instant::now();
        let mut reg = registry(2, 3);
        reg.register(t0, addr(1), token(1), "a", 0).unwrap();
        reg.register(t0, addr(2), token(1), "a", 0).unwrap();
        assert_eq!(
            reg.register(t0, addr(3), token(1), "a", 0),
            Err(ObserveError::ResourceFull {
                resource: "a".into(),
                cap: 2
            })
        );
        // Re-registration never counts against a cap.
        assert_eq!(
            reg.register(t0, addr(2), token(1), "a", 9),
            Ok(Registered::Replaced)
        );
        reg.register(t0, addr(3), token(1), "b", 0).unwrap();
        assert_eq!(
            reg.register(t0, addr(4), token(1), "c", 0),
            Err(ObserveError::RegistryFull(3))
        );
        // A move to a full resource is refused and leaves the old registration in place.
        assert!(matches!(
            reg.register(t0, addr(3), token(1), "a", 0),
            Err(ObserveError::ResourceFull { .. })
        ));
        assert_eq!(reg.get(addr(3), token(1)).map(|(r, _)| r), Some("b"));
        // Leaving makes room.
        reg.deregister(addr(1), token(1));
        reg.register(t0, addr(4), token(1), "c", 0).unwrap();
        assert_eq!(reg.len(), 3);
        assert!(ObserveError::RegistryFull(3).to_string().contains('3'));
    }

    #[test]
    fn remove_peer_drops_all_its_observations() {
        let t0 = Instant::now();
        let mut reg = registry(10, 10);
        for t in 0..3 {
            reg.register(t0, addr(1), token(t), "a", 0).unwrap();
        }
        reg.register(t0, addr(1), token(9), "b", 0).unwrap();
        reg.register(t0, addr(2), token(0), "a", 0).unwrap();
        assert_eq!(reg.remove_peer(addr(1)), 4);
        assert_eq!(reg.remove_peer(addr(1)), 0);
        assert_eq!((reg.len(), reg.count("a"), reg.count("b")), (1, 1, 0));
        assert!(reg.get(addr(1), token(0)).is_none());
    }

    #[test]
    fn observe_values_increase_per_resource_and_wrap_at_2_pow_24() {
        let t0 = Instant::now();
        let mut reg = registry(10, 10);
        assert_eq!(
            reg.next_observe_value("a"),
            None,
            "no observers, no sequence"
        );
        reg.register(t0, addr(1), token(1), "a", 0).unwrap();
        reg.register(t0, addr(1), token(2), "b", 0).unwrap();
        assert_eq!(reg.next_observe_value("a"), Some(1));
        assert_eq!(reg.next_observe_value("a"), Some(2));
        assert_eq!(
            reg.next_observe_value("b"),
            Some(1),
            "each resource its own"
        );
        reg.set_sequence("a", OBSERVE_MODULUS - 2);
        let values: Vec<u32> = (0..3).filter_map(|_| reg.next_observe_value("a")).collect();
        assert_eq!(values, vec![OBSERVE_MODULUS - 1, 0, 1]);
        let mut order = crate::observe::NotificationOrder::new();
        assert!(values.iter().all(|v| order.accept(*v, t0)), "each is fresh");
    }

    #[test]
    fn a_confirmable_notification_at_least_every_interval() {
        let t0 = Instant::now();
        let config = RegistryConfig {
            confirm_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        let mut reg: ObserverRegistry = ObserverRegistry::new(config, [1; 32]);
        reg.register(t0, addr(1), token(1), "a", ()).unwrap();
        let hour = Duration::from_secs(3600);
        assert!(
            !reg.should_confirm(t0, addr(1), token(1)),
            "just registered"
        );
        assert!(!reg.should_confirm(t0 + hour - Duration::from_secs(1), addr(1), token(1)));
        assert!(reg.should_confirm(t0 + hour, addr(1), token(1)));
        // An acknowledged CON starts the interval again; an earlier time never moves it back.
        reg.confirmed(t0 + hour, addr(1), token(1));
        reg.confirmed(t0, addr(1), token(1));
        assert!(!reg.should_confirm(t0 + hour + hour / 2, addr(1), token(1)));
        assert!(reg.should_confirm(t0 + 2 * hour, addr(1), token(1)));
        assert!(
            reg.should_confirm(t0, addr(9), token(1)),
            "unknown observer"
        );
        assert_eq!(
            RegistryConfig::default().confirm_interval,
            Duration::from_secs(86_400)
        );
    }
}

//! The bounded table both server-side machines keep their state in: entries per peer and
//! request key, least recently used first, with their memory cost counted.
//!
//! Each peer's entries sit in a short vector (the per-peer caps are small), and one ordered
//! index over every entry gives the oldest at once, for expiry and eviction alike. Nothing
//! here reads a clock: callers pass `now`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::RequestKey;
use crate::endpoint::later;
use crate::hash::{HashMap, Hasher};

/// Bytes counted per entry on top of its key and value, for the bookkeeping itself.
const ENTRY_OVERHEAD: usize = 96;

/// What an entry's value costs in memory, in bytes.
pub(super) trait Cost {
    /// The bytes this value holds (its buffers, not its inline size).
    fn cost(&self) -> usize;
}

/// One entry of a [`PeerTable`].
#[derive(Debug)]
pub(super) struct Entry<V> {
    pub(super) key: RequestKey,
    pub(super) value: V,
    stamp: u64,
    touched: Instant,
    cost: usize,
}

/// Entries keyed by peer and [`RequestKey`], ordered by last use.
#[derive(Debug)]
pub(super) struct PeerTable<V> {
    peers: HashMap<SocketAddr, Vec<Entry<V>>>,
    /// Every entry by (last use, stamp); the stamp makes keys unique and finds the entry.
    order: BTreeMap<(Instant, u64), SocketAddr>,
    next_stamp: u64,
    len: usize,
    bytes: usize,
}

impl<V: Cost> PeerTable<V> {
    pub(super) fn new(hasher: Hasher) -> Self {
        PeerTable {
            peers: HashMap::with_hasher(hasher),
            order: BTreeMap::new(),
            next_stamp: 0,
            len: 0,
            bytes: 0,
        }
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes held, by [`Cost`] plus keys and bookkeeping.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held for one peer.
    pub(super) fn peer_len(&self, peer: SocketAddr) -> usize {
        self.peers.get(&peer).map_or(0, Vec::len)
    }

    /// When the least recently used entry was last used.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.order.first_key_value().map(|((at, _), _)| *at)
    }

    fn entry_cost(key: &RequestKey, value: &V) -> usize {
        ENTRY_OVERHEAD + key.len() + value.cost()
    }

    fn position(&self, peer: SocketAddr, key: &RequestKey) -> Option<usize> {
        self.peers.get(&peer)?.iter().position(|e| &e.key == key)
    }

    /// The value for a key, without marking it used.
    pub(super) fn get(&self, peer: SocketAddr, key: &RequestKey) -> Option<&V> {
        let i = self.position(peer, key)?;
        self.peers.get(&peer).map(|v| &v[i].value)
    }

    /// Applies `f` to the value for a key, marks it used at `now` and recounts its cost.
    pub(super) fn update<R>(
        &mut self,
        peer: SocketAddr,
        key: &RequestKey,
        now: Instant,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        let i = self.position(peer, key)?;
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let entries = self.peers.get_mut(&peer)?;
        let e = &mut entries[i];
        let result = f(&mut e.value);
        self.order.remove(&(e.touched, e.stamp));
        e.stamp = stamp;
        e.touched = now;
        self.order.insert((now, stamp), peer);
        let cost = Self::entry_cost(&e.key, &e.value);
        self.bytes = self.bytes - e.cost + cost;
        e.cost = cost;
        Some(result)
    }

    /// Inserts (or replaces) the value for a key, used at `now`; returns the one replaced.
    pub(super) fn insert(
        &mut self,
        peer: SocketAddr,
        key: RequestKey,
        value: V,
        now: Instant,
    ) -> Option<V> {
        let old = self.remove(peer, &key);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let cost = Self::entry_cost(&key, &value);
        self.bytes += cost;
        self.len += 1;
        self.order.insert((now, stamp), peer);
        self.peers.entry(peer).or_default().push(Entry {
            key,
            value,
            stamp,
            touched: now,
            cost,
        });
        old
    }

    fn take(&mut self, peer: SocketAddr, index: usize) -> Option<Entry<V>> {
        let entries = self.peers.get_mut(&peer)?;
        let e = entries.swap_remove(index);
        if entries.is_empty() {
            self.peers.remove(&peer);
        }
        self.order.remove(&(e.touched, e.stamp));
        self.len -= 1;
        self.bytes -= e.cost;
        Some(e)
    }

    /// Removes the value for a key.
    pub(super) fn remove(&mut self, peer: SocketAddr, key: &RequestKey) -> Option<V> {
        let i = self.position(peer, key)?;
        self.take(peer, i).map(|e| e.value)
    }

    /// Removes the least recently used entry of one peer.
    pub(super) fn remove_oldest_of(&mut self, peer: SocketAddr) -> Option<Entry<V>> {
        let i = self
            .peers
            .get(&peer)?
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| (e.touched, e.stamp))
            .map(|(i, _)| i)?;
        self.take(peer, i)
    }

    /// Removes the least recently used entry of all.
    pub(super) fn remove_oldest(&mut self) -> Option<(SocketAddr, Entry<V>)> {
        let (&(_, stamp), &peer) = self.order.first_key_value()?;
        let i = self
            .peers
            .get(&peer)?
            .iter()
            .position(|e| e.stamp == stamp)?;
        self.take(peer, i).map(|e| (peer, e))
    }

    /// Removes every entry last used `lifetime` or longer before `now`; returns how many.
    pub(super) fn expire(&mut self, now: Instant, lifetime: Duration) -> usize {
        let mut removed = 0;
        while self.oldest().is_some_and(|at| later(at, lifetime) <= now) {
            if self.remove_oldest().is_none() {
                break;
            }
            removed += 1;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::{Code, MessageType};
    use crate::message::Message;

    impl Cost for Vec<u8> {
        fn cost(&self) -> usize {
            self.len()
        }
    }

    fn key(path: &str) -> RequestKey {
        let mut m = Message::new(MessageType::Con, Code::PUT);
        m.set_path(path);
        RequestKey::block1(&m)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn counts_orders_and_expires() {
        let t0 = Instant::now();
        let mut t: PeerTable<Vec<u8>> = PeerTable::new(Hasher::with_seeds(1, 2, 3, 4));
        t.insert(addr(1), key("a"), vec![0; 10], t0);
        t.insert(addr(1), key("b"), vec![0; 20], t0 + Duration::from_secs(1));
        t.insert(addr(2), key("a"), vec![0; 30], t0 + Duration::from_secs(2));
        assert_eq!(
            (t.len(), t.peer_len(addr(1)), t.peer_len(addr(3))),
            (3, 2, 0)
        );
        let base = 3 * ENTRY_OVERHEAD + 3 * key("a").len();
        assert_eq!(t.bytes(), base + 60);
        // Growing a value recounts its cost and makes it the most recent.
        let t3 = t0 + Duration::from_secs(3);
        t.update(addr(1), &key("a"), t3, |v| v.extend([1; 5]));
        assert_eq!(t.bytes(), base + 65);
        assert_eq!(t.oldest(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.remove_oldest_of(addr(1)).unwrap().key, key("b"));
        // Replacing keeps one entry per key.
        assert_eq!(t.insert(addr(2), key("a"), vec![], t3), Some(vec![0; 30]));
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.expire(t3 + Duration::from_secs(9), Duration::from_secs(10)),
            0
        );
        assert_eq!(
            t.expire(t3 + Duration::from_secs(10), Duration::from_secs(10)),
            2
        );
        assert_eq!((t.len(), t.bytes(), t.oldest()), (0, 0, None));
        assert!(t.peers.is_empty() && t.order.is_empty());
    }
}

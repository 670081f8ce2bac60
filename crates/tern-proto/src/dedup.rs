//! Message deduplication (RFC 7252 §4.5): remembers the message IDs received from each peer for
//! EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON), with the response to send again for a duplicate.
//!
//! Memory is bounded two ways: at most `per_peer` entries for one peer and at most `total` in all.
//! Past either cap the oldest entry (of that peer, or overall) is dropped first, so a flood from
//! one address can neither exhaust memory nor push out every other peer's entries. A dropped entry
//! only means that a very late duplicate of that message is processed again.

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::Instant;

use crate::hash::{HashMap, Hasher};

/// What is remembered of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupState {
    /// A request still being handled; `acked` once an empty ACK was sent for it.
    Processing {
        /// An empty ACK has been sent.
        acked: bool,
    },
    /// Handled: a duplicate is answered with these bytes (an ACK, RST, or piggybacked response).
    Answered(Vec<u8>),
    /// Handled: a duplicate is silently ignored (NON messages).
    Done,
}

struct Entry {
    seq: u64,
    expires: Instant,
    state: DedupState,
}

/// The deduplication cache, keyed by peer and message ID.
pub struct DedupCache<P> {
    entries: HashMap<(P, u16), Entry>,
    per_peer: HashMap<P, VecDeque<(u16, u64)>>,
    order: VecDeque<(P, u16, u64)>,
    per_peer_cap: usize,
    total_cap: usize,
    next_seq: u64,
    evicted: u64,
}

impl<P: Copy + Eq + Hash> DedupCache<P> {
    /// A cache holding at most `per_peer_cap` entries for one peer and `total_cap` in all,
    /// hashing with `hasher` (keyed: peers choose the keys).
    pub fn new(per_peer_cap: usize, total_cap: usize, hasher: Hasher) -> Self {
        DedupCache {
            entries: HashMap::with_hasher(hasher.clone()),
            per_peer: HashMap::with_hasher(hasher),
            order: VecDeque::new(),
            per_peer_cap: per_peer_cap.max(1),
            total_cap: total_cap.max(1),
            next_seq: 0,
            evicted: 0,
        }
    }

    /// The entry for a message, if remembered and not expired.
    pub fn get_mut(&mut self, peer: P, mid: u16, now: Instant) -> Option<&mut DedupState> {
        match self.entries.get_mut(&(peer, mid)) {
            Some(e) if e.expires > now => Some(&mut e.state),
            _ => None,
        }
    }

    /// Remembers a message until `expires`, replacing any earlier entry for the same ID.
    pub fn insert(&mut self, peer: P, mid: u16, expires: Instant, state: DedupState) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(old) = self.entries.insert(
            (peer, mid),
            Entry {
                seq,
                expires,
                state,
            },
        ) {
            // The old queue positions become stale; drop the stale per-peer one now.
            if let Some(q) = self.per_peer.get_mut(&peer) {
                q.retain(|&(m, s)| !(m == mid && s == old.seq));
            }
        }
        let queue = self.per_peer.entry(peer).or_default();
        queue.push_back((mid, seq));
        self.order.push_back((peer, mid, seq));
        if queue.len() > self.per_peer_cap {
            if let Some((old_mid, old_seq)) = queue.pop_front() {
                self.remove_if_current(peer, old_mid, old_seq);
                self.evicted += 1;
            }
        }
        while self.entries.len() > self.total_cap {
            if !self.pop_oldest() {
                break;
            }
            self.evicted += 1;
        }
        // Per-peer evictions leave stale positions in the global order; compact when they dominate.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(p, m, s)| entries.get(&(*p, *m)).is_some_and(|e| e.seq == *s));
        }
    }

    /// Replaces the state of a remembered message; no effect if it is gone.
    pub fn update(&mut self, peer: P, mid: u16, state: DedupState) {
        if let Some(e) = self.entries.get_mut(&(peer, mid)) {
            e.state = state;
        }
    }

    /// Drops every entry that expired by `now`; returns the next expiry, if any.
    pub fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&(peer, mid, seq)) = self.order.front() {
            match self.entries.get(&(peer, mid)) {
                Some(e) if e.seq == seq && e.expires > now => return Some(e.expires),
                _ => {
                    self.pop_oldest();
                }
            }
        }
        None
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries held for one peer.
    pub fn peer_len(&self, peer: P) -> usize {
        self.per_peer.get(&peer).map_or(0, VecDeque::len)
    }

    /// Positions in the global order (live and stale), for tests of the compaction.
    pub fn order_len(&self) -> usize {
        self.order.len()
    }

    /// Entries dropped by the caps so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Removes the globally oldest position; returns false when the order is empty.
    fn pop_oldest(&mut self) -> bool {
        let Some((peer, mid, seq)) = self.order.pop_front() else {
            return false;
        };
        if self.remove_if_current(peer, mid, seq) {
            if let Some(q) = self.per_peer.get_mut(&peer) {
                if let Some(pos) = q.iter().position(|&(m, s)| m == mid && s == seq) {
                    q.remove(pos);
                }
                if q.is_empty() {
                    self.per_peer.remove(&peer);
                }
            }
        }
        true
    }

    fn remove_if_current(&mut self, peer: P, mid: u16, seq: u64) -> bool {
        match self.entries.get(&(peer, mid)) {
            Some(e) if e.seq == seq => {
                self.entries.remove(&(peer, mid));
                if self.per_peer.get(&peer).is_some_and(VecDeque::is_empty) {
                    self.per_peer.remove(&peer);
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cache<P: Copy + Eq + Hash>(per_peer: usize, total: usize) -> DedupCache<P> {
        DedupCache::new(per_peer, total, Hasher::with_seeds(1, 2, 3, 4))
    }

    #[test]
    fn remembers_until_expiry() {
        let t0 = Instant::now();
        let mut c = cache(10, 100);
        c.insert(1u8, 7, t0 + Duration::from_secs(5), DedupState::Done);
        assert!(c.get_mut(1, 7, t0).is_some());
        assert!(c.get_mut(2, 7, t0).is_none());
        assert!(c.get_mut(1, 7, t0 + Duration::from_secs(5)).is_none());
        assert_eq!(c.expire(t0 + Duration::from_secs(6)), None);
        assert!(c.is_empty());
        assert_eq!(c.peer_len(1), 0);
    }

    #[test]
    fn per_peer_cap_drops_that_peers_oldest() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(100);
        let mut c = cache(3, 100);
        c.insert(9u8, 0, far, DedupState::Done);
        for mid in 0..10 {
            c.insert(1u8, mid, far, DedupState::Done);
        }
        assert_eq!(c.peer_len(1), 3);
        assert!(c.get_mut(1, 9, t0).is_some());
        assert!(c.get_mut(1, 6, t0).is_none());
        assert!(
            c.get_mut(9, 0, t0).is_some(),
            "other peers keep their entries"
        );
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn total_cap_holds_under_a_flood_of_peers() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(100);
        let mut c = cache(8, 1000);
        for peer in 0..100_000u32 {
            c.insert(
                peer,
                (peer % 65536) as u16,
                far,
                DedupState::Answered(vec![0; 16]),
            );
            assert!(c.len() <= 1000);
        }
        assert!(c.order.len() <= 2 * c.len() + 64);
        assert!(c.per_peer.len() <= 1000);
        assert!(c.evicted() >= 99_000);
    }

    #[test]
    fn reinsert_replaces() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(100);
        let mut c = cache(4, 100);
        c.insert(1u8, 5, far, DedupState::Processing { acked: false });
        c.insert(1u8, 5, far, DedupState::Done);
        assert_eq!(c.peer_len(1), 1);
        assert_eq!(c.get_mut(1, 5, t0), Some(&mut DedupState::Done));
        c.update(1, 5, DedupState::Answered(vec![1]));
        assert_eq!(
            c.get_mut(1, 5, t0),
            Some(&mut DedupState::Answered(vec![1]))
        );
        assert_eq!(c.expire(t0), Some(far));
    }
}

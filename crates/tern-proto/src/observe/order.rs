//! Client-side ordering of notifications (RFC 7641 §3.4).
//!
//! Notifications can arrive out of order. A client keeps the Observe value `V1` and the local
//! receipt time `T1` of the freshest notification it has; a new one (`V2`, `T2`) is fresh if
//!
//! - `V1 < V2` and `V2 - V1 < 2^23`, or
//! - `V1 > V2` and `V1 - V2 > 2^23` (the 24-bit sequence wrapped), or
//! - `T2 > T1 + 128 s` (so long ago that the sequence may have been reset or gone round).
//!
//! Anything else is stale and dropped. A value 2^23 away either way is neither newer nor older
//! by sequence; only the 128-second rule can make it fresh.

use std::time::{Duration, Instant};

/// Observe values are 24-bit sequence numbers (§4.4): they count modulo 2^24.
pub const OBSERVE_MODULUS: u32 = 1 << 24;

/// Half the sequence space: the distance below which a larger value is newer.
const HALF: u32 = 1 << 23;

/// After this long without a fresh notification any notification is fresh (§3.4, §4.4: a server
/// never sends 2^23 notifications within 128 seconds).
pub const FRESHNESS_WINDOW: Duration = Duration::from_secs(128);

/// Whether Observe value `v2` is newer than `v1` by sequence alone (§3.4, the first two rules).
/// Values are taken modulo 2^24.
pub fn is_newer(v1: u32, v2: u32) -> bool {
    let (v1, v2) = (v1 % OBSERVE_MODULUS, v2 % OBSERVE_MODULUS);
    (v1 < v2 && v2 - v1 < HALF) || (v1 > v2 && v1 - v2 > HALF)
}

/// The freshest notification of one observation, and the rule for the next (§3.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationOrder {
    latest: Option<(u32, Instant)>,
}

impl NotificationOrder {
    /// An order with nothing received yet: the first notification is always fresh.
    pub fn new() -> Self {
        NotificationOrder::default()
    }

    /// The Observe value and local receipt time of the freshest notification so far.
    pub fn latest(&self) -> Option<(u32, Instant)> {
        self.latest
    }

    /// Whether a notification with Observe `value`, received at `now`, is fresh.
    pub fn is_fresh(&self, value: u32, now: Instant) -> bool {
        match self.latest {
            None => true,
            Some((v1, t1)) => {
                is_newer(v1, value)
                    || now
                        .checked_duration_since(t1)
                        .is_some_and(|age| age > FRESHNESS_WINDOW)
            }
        }
    }

    /// Takes a notification: true (and it becomes the freshest) if it is fresh, false if it is
    /// stale and must be dropped.
    pub fn accept(&mut self, value: u32, now: Instant) -> bool {
        if !self.is_fresh(value, now) {
            return false;
        }
        self.latest = Some((value % OBSERVE_MODULUS, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = OBSERVE_MODULUS - 1;

    #[test]
    fn the_three_rules() {
        let t0 = Instant::now();
        let mut order = NotificationOrder::new();
        assert!(order.accept(10, t0), "the first is always fresh");
        assert!(!order.is_fresh(10, t0), "the same value is not newer");
        assert!(!order.is_fresh(9, t0));
        assert!(order.is_fresh(11, t0));
        assert!(order.is_fresh(10 + HALF - 1, t0), "just under 2^23 ahead");
        assert!(
            !order.is_fresh(10 + HALF, t0),
            "exactly 2^23 ahead is not newer"
        );
        assert!(
            !order.is_fresh(10 + HALF + 1, t0),
            "more than 2^23 ahead is behind"
        );
        // T2 > T1 + 128 s: anything goes, but not at exactly 128 s.
        assert!(!order.is_fresh(9, t0 + FRESHNESS_WINDOW));
        assert!(order.is_fresh(9, t0 + FRESHNESS_WINDOW + Duration::from_millis(1)));
        // A clock that went back never makes a notification fresh by time.
        let mut later = NotificationOrder::new();
        later.accept(5, t0 + Duration::from_secs(10));
        assert!(!later.is_fresh(4, t0));
    }

    #[test]
    fn wraps_around_at_2_pow_24() {
        let t0 = Instant::now();
        let mut order = NotificationOrder::new();
        let mut delivered = Vec::new();
        for v in [MAX - 2, MAX - 1, MAX, 0, MAX, 1, 0, 2, MAX - 1, 3] {
            if order.accept(v, t0) {
                delivered.push(v);
            }
        }
        assert_eq!(delivered, vec![MAX - 2, MAX - 1, MAX, 0, 1, 2, 3]);
        assert!(is_newer(MAX, 0) && !is_newer(0, MAX));
        assert!(is_newer(HALF + 1, 0), "0 is 2^23 - 1 past 2^23 + 1");
        assert!(
            !is_newer(HALF, 0) && !is_newer(0, HALF),
            "exactly 2^23 apart"
        );
        assert_eq!(order.latest().map(|(v, _)| v), Some(3));
        // Values beyond 24 bits are taken modulo 2^24.
        assert!(!is_newer(3, OBSERVE_MODULUS + 3));
    }

    /// The distance from `a` forward to `b` in the 24-bit sequence space.
    fn forward(a: u32, b: u32) -> u32 {
        b.wrapping_sub(a) % OBSERVE_MODULUS
    }

    proptest! {
        /// By sequence, `b` is newer than `a` exactly when it is 1 to 2^23 - 1 steps ahead.
        #[test]
        fn newer_is_a_forward_distance_below_half(a in 0..OBSERVE_MODULUS, b in 0..OBSERVE_MODULUS) {
            let d = forward(a, b);
            prop_assert_eq!(is_newer(a, b), d != 0 && d < HALF);
        }

        /// Of two distinct values, exactly one is newer, unless they are 2^23 apart.
        #[test]
        fn newer_is_antisymmetric(a in 0..OBSERVE_MODULUS, b in 0..OBSERVE_MODULUS) {
            let (ab, ba) = (is_newer(a, b), is_newer(b, a));
            prop_assert!(!(ab && ba));
            if a != b && forward(a, b) != HALF {
                prop_assert!(ab || ba);
            }
        }

        /// Notifications of an increasing sequence (anywhere in the space, so often wrapping),
        /// delivered in any order, duplicated, within 128 s: what is accepted is strictly
        /// increasing in sequence order, and the last value is always accepted.
        #[test]
        fn any_arrival_order_delivers_an_increasing_sequence_ending_with_the_last(
            start in 0..OBSERVE_MODULUS,
            steps in proptest::collection::vec(1u32..1000, 1..60),
            shuffle in proptest::collection::vec(any::<prop::sample::Index>(), 0..80),
        ) {
            let t0 = Instant::now();
            // Positions in the unwrapped sequence, then their 24-bit values.
            let mut positions = Vec::with_capacity(steps.len() + 1);
            let mut at = 0u64;
            positions.push(at);
            for s in &steps {
                at += u64::from(*s);
                positions.push(at);
            }
            let value = |p: u64| ((u64::from(start) + p) % u64::from(OBSERVE_MODULUS)) as u32;
            // Arrival order: a permutation with duplicates, from swaps and repeats.
            let mut arrivals: Vec<u64> = positions.clone();
            for (k, ix) in shuffle.iter().enumerate() {
                let i = ix.index(arrivals.len());
                if k % 3 == 0 {
                    arrivals.push(arrivals[i]);
                } else {
                    let j = (i + k) % arrivals.len();
                    arrivals.swap(i, j);
                }
            }
            let mut order = NotificationOrder::new();
            let mut accepted: Vec<u64> = Vec::new();
            for (k, p) in arrivals.iter().enumerate() {
                let now = t0 + Duration::from_millis(k as u64);
                if order.accept(value(*p), now) {
                    accepted.push(*p);
                }
            }
            prop_assert!(accepted.windows(2).all(|w| w[0] < w[1]), "{:?}", accepted);
            prop_assert_eq!(accepted.last().copied(), Some(at));
        }

        /// After more than 128 s without a fresh notification, any value is fresh.
        #[test]
        fn after_128_seconds_anything_is_fresh(v1 in 0..OBSERVE_MODULUS, v2 in 0..OBSERVE_MODULUS, extra in 1u64..10_000_000) {
            let t0 = Instant::now();
            let mut order = NotificationOrder::new();
            order.accept(v1, t0);
            let t2 = t0 + FRESHNESS_WINDOW + Duration::from_micros(extra);
            prop_assert!(order.is_fresh(v2, t2));
            prop_assert_eq!(order.is_fresh(v2, t0 + FRESHNESS_WINDOW), is_newer(v1, v2));
        }
    }
}

//! The recipient's sliding replay window (RFC 8613 §7.4): a message is accepted once, and
//! only if its sequence number is newer than the window's start. Checked before decryption,
//! updated only after the message authenticated, so a forged Partial IV cannot move it.

/// A sliding window over the last `size` sequence numbers (1 to 128).
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    size: u32,
    /// The highest sequence number accepted so far; `None` before the first.
    highest: Option<u64>,
    /// Bit i set: `highest - i` was accepted.
    seen: u128,
}

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// Already received.
    #[error("sequence number {0} was already received")]
    Duplicate(u64),
    /// Older than the window.
    #[error("sequence number {0} is older than the replay window")]
    TooOld(u64),
}

impl ReplayWindow {
    /// An empty window of `size` messages; `None` unless 1 ≤ size ≤ 128.
    pub fn new(size: u32) -> Option<Self> {
        (1..=128).contains(&size).then_some(ReplayWindow {
            size,
            highest: None,
            seen: 0,
        })
    }

    /// Its size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The highest sequence number accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `sequence` would be accepted (nothing changes).
    pub fn check(&self, sequence: u64) -> Result<(), Replay> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if sequence > highest {
            return Ok(());
        }
        let age = highest - sequence;
        if age >= u64::from(self.size) {
            return Err(Replay::TooOld(sequence));
        }
        if self.seen & (1u128 << age) != 0 {
            return Err(Replay::Duplicate(sequence));
        }
        Ok(())
    }

    /// Records `sequence` as received (after it authenticated); refuses it as `check` would.
    pub fn accept(&mut self, sequence: u64) -> Result<(), Replay> {
        self.check(sequence)?;
        match self.highest {
            Some(highest) if sequence <= highest => {
                self.seen |= 1u128 << (highest - sequence);
            }
            Some(highest) => {
                let shift = sequence - highest;
                self.seen = if shift >= 128 { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.highest = Some(sequence);
            }
            None => {
                self.seen = 1;
                self.highest = Some(sequence);
            }
        }
        if self.size < 128 {
            self.seen &= (1u128 << self.size) - 1;
        }
        Ok(())
    }

    /// Forgets everything (after the replay state was lost, §B.1.2: every sequence number is
    /// then suspect until the peer proves freshness with Echo).
    pub fn reset(&mut self) {
        self.highest = None;
        self.seen = 0;
    }

    /// Starts the window at `highest` with nothing older accepted (Appendix B.1.2: after an
    /// Echo exchange proved `highest` fresh).
    pub fn restart_at(&mut self, highest: u64) {
        self.highest = Some(highest);
        self.seen = u128::MAX;
        if self.size < 128 {
            self.seen &= (1u128 << self.size) - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_once_and_refuses_old() {
        let mut w = ReplayWindow::new(32).unwrap();
        assert_eq!(w.accept(5), Ok(()));
        assert_eq!(w.accept(5), Err(Replay::Duplicate(5)));
        assert_eq!(w.accept(3), Ok(()));
        assert_eq!(w.accept(40), Ok(()));
        assert_eq!(w.accept(8), Err(Replay::TooOld(8)));
        assert_eq!(w.accept(9), Ok(()));
        assert_eq!(w.check(9), Err(Replay::Duplicate(9)));
        assert_eq!(w.accept(1_000_000), Ok(()));
        assert_eq!(w.accept(40), Err(Replay::TooOld(40)));
        assert!(ReplayWindow::new(0).is_none() && ReplayWindow::new(129).is_none());
    }

    proptest! {
        /// Against a model: a number is accepted iff it was never accepted and is within
        /// `size` of the highest accepted so far.
        #[test]
        fn matches_a_model(size in 1u32..=128, seqs in proptest::collection::vec(0u64..300, 0..200)) {
            let mut w = ReplayWindow::new(size).unwrap();
            let mut accepted = std::collections::BTreeSet::new();
            for s in seqs {
                let highest = accepted.iter().next_back().copied();
                let expect = !accepted.contains(&s)
                    && highest.is_none_or(|h| s > h || h - s < u64::from(size));
                prop_assert_eq!(w.accept(s).is_ok(), expect, "seq {}", s);
                if expect {
                    accepted.insert(s);
                }
            }
        }
    }
}

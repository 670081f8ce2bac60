//! The keyed hash used by every table an attacker can fill (peers, message IDs, tokens).

use rand_core::RngCore;

/// A keyed hasher builder (aHash). Keys come from the endpoint's seed.
pub type Hasher = ahash::RandomState;

/// A map hashed with [`Hasher`].
pub type HashMap<K, V> = std::collections::HashMap<K, V, Hasher>;

/// Builds hashers with keys drawn from a random number generator.
pub trait FromRng {
    /// A hasher keyed from `rng`.
    fn from_rng(rng: &mut impl RngCore) -> Self;
}

impl FromRng for Hasher {
    fn from_rng(rng: &mut impl RngCore) -> Self {
        ahash::RandomState::with_seeds(
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
        )
    }
}

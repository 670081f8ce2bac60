//! The runtime's clock.
//!
//! Everything the runtime hands to the sans-IO cores as "now" comes from here rather than from
//! `std::time::Instant::now()`: it is Tokio's clock, which is the system's monotonic clock in
//! normal runs and the virtual one when a test pauses time (`tokio::time::pause`), so that the
//! runtime on a [simulated network](crate::netsim) lives entirely in virtual time. Timers armed
//! with this clock and sleeps in the same runtime then agree.

use std::time::Instant;

/// The current instant on Tokio's clock.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

//! Transmission parameters and the confirmable retransmission schedule (RFC 7252 §4.2, §4.8).

use std::time::Duration;

/// Transmission parameters of one peer (RFC 7252 §4.8), configurable per endpoint and per peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransmissionParams {
    /// ACK_TIMEOUT: the initial retransmission timeout (default 2 s).
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR: the initial timeout is drawn from
    /// `[ack_timeout, ack_timeout * factor]` (default 1.5, at least 1.0).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT: retransmissions after the first transmission (default 4).
    pub max_retransmit: u32,
    /// NSTART: outstanding interactions allowed to one peer (default 1).
    pub nstart: usize,
    /// MAX_LATENCY: the longest a datagram is expected to be in transit (default 100 s).
    pub max_latency: Duration,
}

impl Default for TransmissionParams {
    fn default() -> Self {
        TransmissionParams {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
            max_latency: Duration::from_secs(100),
        }
    }
}

/// Why a set of parameters cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// ACK_TIMEOUT of zero.
    #[error("ACK_TIMEOUT must be greater than zero")]
    ZeroAckTimeout,
    /// ACK_RANDOM_FACTOR below 1 or not finite.
    #[error("ACK_RANDOM_FACTOR must be a finite number of at least 1.0, not {0}")]
    RandomFactor(f64),
    /// MAX_RETRANSMIT beyond 20 (the back-off would overflow any sensible lifetime).
    #[error("MAX_RETRANSMIT must be at most 20, not {0}")]
    MaxRetransmit(u32),
    /// NSTART of zero.
    #[error("NSTART must be at least 1")]
    ZeroNstart,
    /// A duration or factor so large that the derived lifetimes would be meaningless.
    #[error("{0} is out of range (ACK_TIMEOUT and MAX_LATENCY at most 1 h, ACK_RANDOM_FACTOR at most 10)")]
    OutOfRange(&'static str),
}

/// The largest ACK_TIMEOUT or MAX_LATENCY accepted: keeps every derived time far from overflow.
pub const MAX_PARAM_DURATION: Duration = Duration::from_secs(3600);

impl TransmissionParams {
    /// Checks that the parameters are usable.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.ack_timeout.is_zero() {
            return Err(ParamsError::ZeroAckTimeout);
        }
        if !self.ack_random_factor.is_finite() || self.ack_random_factor < 1.0 {
            return Err(ParamsError::RandomFactor(self.ack_random_factor));
        }
        if self.max_retransmit > 20 {
            return Err(ParamsError::MaxRetransmit(self.max_retransmit));
        }
        if self.nstart == 0 {
            return Err(ParamsError::ZeroNstart);
        }
        if self.ack_timeout > MAX_PARAM_DURATION {
            return Err(ParamsError::OutOfRange("ACK_TIMEOUT"));
        }
        if self.max_latency > MAX_PARAM_DURATION {
            return Err(ParamsError::OutOfRange("MAX_LATENCY"));
        }
        if self.ack_random_factor > 10.0 {
            return Err(ParamsError::OutOfRange("ACK_RANDOM_FACTOR"));
        }
        Ok(())
    }

    /// MAX_TRANSMIT_SPAN: from the first transmission to the last retransmission (§4.8.2).
    pub fn max_transmit_span(&self) -> Duration {
        let factor = ((1u64 << self.max_retransmit) - 1) as f64 * self.ack_random_factor;
        self.ack_timeout.mul_f64(factor)
    }

    /// MAX_TRANSMIT_WAIT: from the first transmission to giving up on an acknowledgement.
    pub fn max_transmit_wait(&self) -> Duration {
        let factor = ((1u64 << (self.max_retransmit + 1)) - 1) as f64 * self.ack_random_factor;
        self.ack_timeout.mul_f64(factor)
    }

    /// EXCHANGE_LIFETIME: how long a message ID of a CON stays in use (247 s by default).
    pub fn exchange_lifetime(&self) -> Duration {
        // PROCESSING_DELAY is taken as ACK_TIMEOUT, as the RFC does.
        self.max_transmit_span() + 2 * self.max_latency + self.ack_timeout
    }

    /// NON_LIFETIME: how long a message ID of a NON stays in use (145 s by default).
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency
    }

    /// The initial timeout for a fresh CON, given a uniform random number in `[0, 1)`.
    pub fn initial_timeout(&self, unit_random: f64) -> Duration {
        let spread = (self.ack_random_factor - 1.0) * unit_random.clamp(0.0, 1.0);
        self.ack_timeout.mul_f64(1.0 + spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_match_rfc_7252_section_4_8_2() {
        let p = TransmissionParams::default();
        assert_eq!(p.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(p.max_transmit_wait(), Duration::from_secs(93));
        assert_eq!(p.exchange_lifetime(), Duration::from_secs(247));
        assert_eq!(p.non_lifetime(), Duration::from_secs(145));
    }

    #[test]
    fn initial_timeout_is_within_bounds() {
        let p = TransmissionParams::default();
        assert_eq!(p.initial_timeout(0.0), Duration::from_secs(2));
        assert_eq!(p.initial_timeout(1.0), Duration::from_secs(3));
        assert_eq!(p.initial_timeout(7.0), Duration::from_secs(3));
    }

    #[test]
    fn validation() {
        let mut p = TransmissionParams::default();
        assert!(p.validate().is_ok());
        p.ack_random_factor = 0.5;
        assert!(p.validate().is_err());
        p = TransmissionParams {
            nstart: 0,
            ..Default::default()
        };
        assert_eq!(p.validate(), Err(ParamsError::ZeroNstart));
        let defaults = TransmissionParams::default;
        for bad in [
            TransmissionParams {
                ack_timeout: Duration::MAX,
                ..defaults()
            },
            TransmissionParams {
                max_latency: Duration::from_secs(1 << 40),
                ..defaults()
            },
            TransmissionParams {
                ack_random_factor: 1e300,
                ..defaults()
            },
        ] {
            assert!(matches!(bad.validate(), Err(ParamsError::OutOfRange(_))));
        }
        // The largest accepted values still derive lifetimes without overflow.
        let max = TransmissionParams {
            ack_timeout: MAX_PARAM_DURATION,
            max_latency: MAX_PARAM_DURATION,
            ack_random_factor: 10.0,
            max_retransmit: 20,
            nstart: 1,
        };
        assert!(max.validate().is_ok());
        assert!(max.exchange_lifetime() > max.non_lifetime());
    }
}

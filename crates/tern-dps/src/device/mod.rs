//! The device side of provisioning.
//!
//! - [`machine`]: [`Provisioner`], the sans-IO state machine. It says which step to run next
//!   and on which service endpoint, takes each answer (or the lack of one) and says when to
//!   try again, following a [`crate::schedule::RetrySchedule`].
//! - [`state`]: [`ProvisionedState`], what provisioning installed, and [`StateFile`], its
//!   crash-safe file (written to a temporary file, synced, renamed over the old one).
//! - [`client`]: [`DeviceClient`], the driver that runs a [`Provisioner`] over coaps+tcp with
//!   the manufacturer certificate, persisting after every step and reporting [`Status`] to a
//!   callback.

use std::fmt;

pub mod client;
pub mod machine;
pub mod state;

pub use client::{DeviceClient, DeviceError, FactoryCredentials};
pub use machine::{Action, Answer, Outcome, Provisioner, StepRequest};
pub use state::{HubSettings, IdentityCredentials, ProvisionedState, StateError, StateFile};

/// One provisioning step, in the order a device runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Learn the service's time.
    Time,
    /// Send a CSR, receive the identity certificate and the hub's trust anchor.
    Credentials,
    /// Receive the access-control entries.
    Acls,
    /// Receive the hub's endpoint, id and authorization code.
    Hub,
}

impl Step {
    /// The step's name as status lines and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Time => "time",
            Step::Credentials => "credentials",
            Step::Acls => "acls",
            Step::Hub => "hub",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Provisioning status flags, as reported to the status callback.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Status(u8);

impl Status {
    /// The manufacturer credentials are loaded and provisioning has started.
    pub const INITIALIZED: Status = Status(1);
    /// The service's time is known.
    pub const HAS_TIME: Status = Status(2);
    /// An identity certificate and the hub's trust anchor are installed.
    pub const HAS_CREDENTIALS: Status = Status(4);
    /// The ACLs are installed.
    pub const HAS_ACLS: Status = Status(8);
    /// The hub configuration is installed: the device is provisioned.
    pub const HAS_HUB_CONFIGURATION: Status = Status(16);
    /// The last attempt got no answer or a server error; it will be retried.
    pub const TRANSIENT_FAILURE: Status = Status(32);
    /// The last attempt was refused (TLS handshake, a 4.xx answer, or an answer that does not
    /// decode); the error code says why. It will still be retried.
    pub const FAILURE: Status = Status(64);

    const NAMES: [(Status, &'static str); 7] = [
        (Status::INITIALIZED, "initialized"),
        (Status::HAS_TIME, "has-time"),
        (Status::HAS_CREDENTIALS, "has-credentials"),
        (Status::HAS_ACLS, "has-acls"),
        (Status::HAS_HUB_CONFIGURATION, "has-hub-configuration"),
        (Status::TRANSIENT_FAILURE, "transient-failure"),
        (Status::FAILURE, "failure"),
    ];

    /// No flag set.
    pub const fn empty() -> Status {
        Status(0)
    }

    /// The flags as bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Status) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether every step is done.
    pub const fn is_provisioned(self) -> bool {
        self.contains(Status(
            Self::HAS_CREDENTIALS.0 | Self::HAS_ACLS.0 | Self::HAS_HUB_CONFIGURATION.0,
        ))
    }

    fn with(self, other: Status, on: bool) -> Status {
        if on {
            Status(self.0 | other.0)
        } else {
            Status(self.0 & !other.0)
        }
    }
}

impl std::ops::BitOr for Status {
    type Output = Status;
    fn bitor(self, other: Status) -> Status {
        Status(self.0 | other.0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("uninitialized")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({self})")
    }
}

/// Why an attempt failed, with a stable numeric code for scripts and callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The service could not be reached (connection refused, no route, DNS).
    Unreachable,
    /// No answer in time.
    Timeout,
    /// The TLS handshake failed: the service refused the manufacturer certificate (unknown
    /// manufacturer), or the service's certificate did not verify.
    Handshake,
    /// The service refused the step (a 4.xx answer: revoked, unknown manufacturer, out of
    /// validity, bad CSR).
    Refused,
    /// The service failed (a 5.xx answer).
    ServiceError,
    /// The answer was not the step's message.
    BadAnswer,
    /// Something on the device failed (key generation, CSR).
    Local,
    /// The connection was closed or reset before an answer, without a TLS alert: the service
    /// shed load (too many handshakes at once) or restarted.
    Dropped,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::Unreachable => 1,
            ErrorCode::Timeout => 2,
            ErrorCode::Handshake => 3,
            ErrorCode::Refused => 4,
            ErrorCode::ServiceError => 5,
            ErrorCode::BadAnswer => 6,
            ErrorCode::Local => 7,
            ErrorCode::Dropped => 8,
        }
    }

    /// Whether the failure is transient (likely to go away by itself) rather than a refusal.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Unreachable
                | ErrorCode::Timeout
                | ErrorCode::ServiceError
                | ErrorCode::Dropped
        )
    }

    /// The code's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unreachable => "unreachable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Handshake => "tls-handshake",
            ErrorCode::Refused => "refused",
            ErrorCode::ServiceError => "service-error",
            ErrorCode::BadAnswer => "bad-answer",
            ErrorCode::Local => "local",
            ErrorCode::Dropped => "dropped",
        }
    }
}

/// A failed attempt: which step, on which endpoint, the code and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// The step that failed.
    pub step: Step,
    /// The index of the endpoint it was tried on.
    pub endpoint: usize,
    /// The kind of failure.
    pub code: ErrorCode,
    /// What happened (the service's diagnostic payload, the TLS alert, ...).
    pub detail: String,
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} step failed ({} {}): {}",
            self.step,
            self.code.code(),
            self.code.as_str(),
            self.detail
        )
    }
}

/// What the status callback receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The flags.
    pub status: Status,
    /// The last failure, while [`Status::TRANSIENT_FAILURE`] or [`Status::FAILURE`] is set.
    pub failure: Option<StepFailure>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_flags_name_themselves() {
        assert_eq!(Status::empty().to_string(), "uninitialized");
        let s = Status::INITIALIZED | Status::HAS_CREDENTIALS | Status::FAILURE;
        assert_eq!(s.to_string(), "initialized|has-credentials|failure");
        assert!(s.contains(Status::HAS_CREDENTIALS));
        assert!(!s.contains(Status::HAS_ACLS));
        assert!(!s.is_provisioned());
        let done = s | Status::HAS_ACLS | Status::HAS_HUB_CONFIGURATION;
        assert!(done.is_provisioned());
        assert_eq!(
            done.with(Status::FAILURE, false).bits(),
            1 | 4 | 8 | 16,
            "clearing a flag keeps the others"
        );
    }

    #[test]
    fn error_codes_are_distinct_and_classified() {
        let all = [
            ErrorCode::Unreachable,
            ErrorCode::Timeout,
            ErrorCode::Handshake,
            ErrorCode::Refused,
            ErrorCode::ServiceError,
            ErrorCode::BadAnswer,
            ErrorCode::Local,
            ErrorCode::Dropped,
        ];
        let codes: std::collections::HashSet<u16> = all.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(ErrorCode::Timeout.is_transient());
        assert!(!ErrorCode::Refused.is_transient());
        assert!(!ErrorCode::Handshake.is_transient());
        assert!(ErrorCode::Dropped.is_transient());
    }
}

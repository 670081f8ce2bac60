//! Tern's zero-touch provisioning: service and device client.
//!
//! [`pki`] holds the certificate work both sides share: certificate authorities, factory
//! (manufacturer) certificates, CSRs, identity certificates, inspection and chain
//! verification, all as pure functions of their inputs and an explicit `now`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod pki;

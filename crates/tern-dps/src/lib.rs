//! Tern's zero-touch provisioning: service and device client.
//!
//! [`pki`] holds the certificate work both sides share: certificate authorities, factory
//! (manufacturer) certificates, CSRs, identity certificates, inspection and chain
//! verification, all as pure functions of their inputs and an explicit `now`.
//! [`protocol`] holds the messages of each provisioning step (CBOR) and the device id rule.
//! [`service`] is the provisioning service, [`device`] the device client (a sans-IO state
//! machine, its crash-safe state file, and the driver over coaps+tcp).
//! [`hub`] is what a hub needs to admit provisioned devices and enforce their ACLs.
//! [`schedule`] holds the device client's retry and failover schedule, sans-IO: when to try
//! a failed step again and which service endpoint to try it on.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
pub mod hub;
pub mod pki;
pub mod protocol;
pub mod schedule;
pub mod service;

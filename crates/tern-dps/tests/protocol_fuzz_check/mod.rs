// The checks of the `dps_protocol` fuzz target (the provisioning messages, CBOR), shared by
// `fuzz/fuzz_targets/dps_protocol.rs` (through `include!`) and the stable replay
// `crates/tern-dps/tests/protocol_fuzz_regressions.rs`.
//
// Input: one payload, tried as every message the device decodes or the service decodes.
// Checks: decoding never panics, and whatever decodes encodes to bytes that decode to the same
// message.

use tern_dps::protocol::{
    AclsResponse, CredentialsRequest, CredentialsResponse, HubConfiguration, TimeResponse,
};

/// What a check did with an input.
#[derive(Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Outcome {
    /// No message decoded (fine for a fuzz input, not for a seed).
    Rejected,
    /// At least one message decoded and every check held.
    Checked,
}

/// Runs every check on `bytes`, panicking when one fails.
pub fn check(bytes: &[u8]) -> Outcome {
    let mut decoded = false;
    if let Ok(m) = TimeResponse::decode(bytes) {
        assert_eq!(TimeResponse::decode(&m.encode()), Ok(m));
        decoded = true;
    }
    if let Ok(m) = CredentialsRequest::decode(bytes) {
        assert_eq!(CredentialsRequest::decode(&m.encode()), Ok(m));
        decoded = true;
    }
    if let Ok(m) = CredentialsResponse::decode(bytes) {
        assert_eq!(CredentialsResponse::decode(&m.encode()), Ok(m));
        decoded = true;
    }
    if let Ok(m) = AclsResponse::decode(bytes) {
        assert_eq!(AclsResponse::decode(&m.encode()), Ok(m));
        decoded = true;
    }
    if let Ok(m) = HubConfiguration::decode(bytes) {
        assert_eq!(HubConfiguration::decode(&m.encode()).ok(), Some(m));
        decoded = true;
    }
    if decoded {
        Outcome::Checked
    } else {
        Outcome::Rejected
    }
}

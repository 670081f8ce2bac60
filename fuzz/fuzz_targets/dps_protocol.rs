//! The provisioning protocol's messages (CBOR): decoding never panics, and whatever decodes
//! encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_dps::protocol::{
    AclsResponse, CredentialsRequest, CredentialsResponse, HubConfiguration, TimeResponse,
};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(m) = TimeResponse::decode(bytes) {
        assert_eq!(TimeResponse::decode(&m.encode()), Ok(m));
    }
    if let Ok(m) = CredentialsRequest::decode(bytes) {
        assert_eq!(CredentialsRequest::decode(&m.encode()), Ok(m));
    }
    if let Ok(m) = CredentialsResponse::decode(bytes) {
        assert_eq!(CredentialsResponse::decode(&m.encode()), Ok(m));
    }
    if let Ok(m) = AclsResponse::decode(bytes) {
        assert_eq!(AclsResponse::decode(&m.encode()), Ok(m));
    }
    if let Ok(m) = HubConfiguration::decode(bytes) {
        assert_eq!(HubConfiguration::decode(&m.encode()).ok(), Some(m));
    }
});

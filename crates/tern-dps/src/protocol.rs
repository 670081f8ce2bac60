//! The provisioning protocol's messages: what a device and the service say at each step.
//!
//! Every step is one CoAP exchange the device drives over `coaps+tcp` with mutual TLS (the
//! device presents its manufacturer certificate), payloads in CBOR (RFC 8949, Content-Format
//! 60, [`CONTENT_FORMAT_CBOR`]), each a map with text keys:
//!
//! | step | request | answer |
//! |---|---|---|
//! | time | `GET /dps/time` | 2.05 [`TimeResponse`] `{"time": unix seconds}` |
//! | identity credentials | `POST /dps/credentials` [`CredentialsRequest`] `{"csr": PEM}` | 2.04 [`CredentialsResponse`] `{"device-id", "certificate", "hub-ca", "not-after"}` |
//! | ACLs | `GET /dps/acls` | 2.05 [`AclsResponse`] `{"acls": [{"subject", "resources", "permission"}]}` |
//! | hub configuration | `GET /dps/hub` | 2.05 [`HubConfiguration`] `{"hub-id", "endpoint", "authorization-code"}` |
//!
//! A device's id is not chosen by either side: both compute it from the manufacturer
//! certificate ([`device_id_for`]), so the CSR can name it before the service has answered,
//! and a device that was factory reset comes back as the same device.
//!
//! Decoding is strict where it matters and bounded everywhere: a message is at most
//! [`MAX_MESSAGE_LEN`] bytes, text at most [`MAX_TEXT_LEN`], a map at most [`MAX_MAP_ENTRIES`]
//! entries; a key given twice, a required key missing, a value of the wrong type, or trailing
//! bytes are errors; unknown keys with scalar values are skipped (so later versions can add
//! fields), unknown keys with arrays or maps are refused (nothing nests without bound).

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};
use tern_store::{AclEntry, AclSubject};
use zeroize::Zeroizing;

/// The service's port for `coaps+tcp` (plgd's provisioning service uses it too).
pub const DEFAULT_PORT: u16 = 20030;
/// CoAP Content-Format `application/cbor`.
pub const CONTENT_FORMAT_CBOR: u16 = 60;
/// The time step's resource path.
pub const TIME_PATH: &str = "dps/time";
/// The identity-credentials step's resource path.
pub const CREDENTIALS_PATH: &str = "dps/credentials";
/// The ACL step's resource path.
pub const ACLS_PATH: &str = "dps/acls";
/// The hub-configuration step's resource path.
pub const HUB_PATH: &str = "dps/hub";

/// The largest message either side decodes.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// The longest text value (a PEM bundle of a few certificates fits).
pub const MAX_TEXT_LEN: usize = 32 * 1024;
/// The most entries in one map.
pub const MAX_MAP_ENTRIES: u64 = 16;
/// The most ACL entries in one answer.
pub const MAX_ACLS: u64 = 64;
/// The most resource patterns in one ACL entry.
pub const MAX_ACL_RESOURCES: u64 = 32;

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// Not well-formed CBOR, or not the shape the step expects.
    #[error("malformed provisioning message: {0}")]
    Malformed(String),
    /// A required field is absent.
    #[error("provisioning message lacks {0:?}")]
    Missing(&'static str),
    /// Over one of the bounds above.
    #[error("provisioning message too large: {0}")]
    TooLarge(String),
    /// Decoded, but not acceptable (an ACL the hub could not apply, a bad device id).
    #[error("invalid provisioning message: {0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, ProtocolError>;

/// The device id both sides derive from a manufacturer certificate (DER): the first 16 bytes
/// of its SHA-256, as an RFC 9562 version-8 (custom) UUID in lower-case hex.
pub fn device_id_for(manufacturer_cert_der: &[u8]) -> String {
    let digest = openssl::sha::sha256(manufacturer_cert_der);
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The SHA-256 fingerprint of a certificate (DER), lower-case hex, as the store keys devices.
pub fn fingerprint(cert_der: &[u8]) -> String {
    openssl::sha::sha256(cert_der)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The time step's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeResponse {
    /// The service's time, Unix seconds.
    pub unix_seconds: u64,
}

/// The identity-credentials step's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsRequest {
    /// The PKCS#10 CSR (PEM) for the key the device generated, CN `uuid:<device id>`.
    pub csr_pem: String,
}

/// The identity-credentials step's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsResponse {
    /// The device's id (as in the certificate's CN after `uuid:`).
    pub device_id: String,
    /// The identity certificate, PEM.
    pub certificate_pem: String,
    /// The trust anchors (PEM) the device authenticates its hub with.
    pub hub_ca_pem: String,
    /// When the identity certificate expires, Unix seconds.
    pub not_after: i64,
}

/// The ACL step's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclsResponse {
    /// The access-control entries for the device's resources.
    pub acls: Vec<AclEntry>,
}

/// The hub-configuration step's answer.
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfiguration {
    /// The hub's identifier.
    pub hub_id: String,
    /// Where the hub listens (`coaps+tcp://…`).
    pub endpoint: String,
    /// The code the device presents to claim ownership at the hub: a secret.
    pub authorization_code: Zeroizing<String>,
}

impl std::fmt::Debug for HubConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfiguration")
            .field("hub_id", &self.hub_id)
            .field("endpoint", &self.endpoint)
            .field("authorization_code", &"<redacted>")
            .finish()
    }
}

type Enc<'a> = Encoder<&'a mut Vec<u8>>;
type EncResult = std::result::Result<(), minicbor::encode::Error<std::convert::Infallible>>;

fn encode(build: impl FnOnce(&mut Enc<'_>) -> EncResult) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = build(&mut Encoder::new(&mut out));
    out
}

impl TimeResponse {
    /// The CBOR payload.
    pub fn encode(&self) -> Vec<u8> {
        encode(|e| {
            e.map(1)?.str("time")?.u64(self.unix_seconds)?;
            Ok(())
        })
    }

    /// Reads a payload.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut time = None;
        read_message(bytes, |key, d| {
            Ok(match key {
                "time" => set(&mut time, "time", d.u64().map_err(malformed)?)?,
                _ => false,
            })
        })?;
        Ok(TimeResponse {
            unix_seconds: time.ok_or(ProtocolError::Missing("time"))?,
        })
    }
}

impl CredentialsRequest {
    /// The CBOR payload.
    pub fn encode(&self) -> Vec<u8> {
        encode(|e| {
            e.map(1)?.str("csr")?.str(&self.csr_pem)?;
            Ok(())
        })
    }

    /// Reads a payload.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut csr = None;
        read_message(bytes, |key, d| {
            Ok(match key {
                "csr" => set(&mut csr, "csr", text(d)?)?,
                _ => false,
            })
        })?;
        Ok(CredentialsRequest {
            csr_pem: csr.ok_or(ProtocolError::Missing("csr"))?,
        })
    }
}

impl CredentialsResponse {
    /// The CBOR payload.
    pub fn encode(&self) -> Vec<u8> {
        encode(|e| {
            e.map(4)?
                .str("device-id")?
                .str(&self.device_id)?
                .str("certificate")?
                .str(&self.certificate_pem)?
                .str("hub-ca")?
                .str(&self.hub_ca_pem)?
                .str("not-after")?
                .i64(self.not_after)?;
            Ok(())
        })
    }

    /// Reads a payload.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut id, mut cert, mut ca, mut not_after) = (None, None, None, None);
        read_message(bytes, |key, d| {
            Ok(match key {
                "device-id" => set(&mut id, "device-id", text(d)?)?,
                "certificate" => set(&mut cert, "certificate", text(d)?)?,
                "hub-ca" => set(&mut ca, "hub-ca", text(d)?)?,
                "not-after" => set(&mut not_after, "not-after", d.i64().map_err(malformed)?)?,
                _ => false,
            })
        })?;
        let device_id = id.ok_or(ProtocolError::Missing("device-id"))?;
        crate::pki::check_device_id(&device_id)
            .map_err(|e| ProtocolError::Invalid(e.to_string()))?;
        Ok(CredentialsResponse {
            device_id,
            certificate_pem: cert.ok_or(ProtocolError::Missing("certificate"))?,
            hub_ca_pem: ca.ok_or(ProtocolError::Missing("hub-ca"))?,
            not_after: not_after.ok_or(ProtocolError::Missing("not-after"))?,
        })
    }
}

impl AclsResponse {
    /// The CBOR payload.
    pub fn encode(&self) -> Vec<u8> {
        encode(|e| {
            e.map(1)?.str("acls")?.array(self.acls.len() as u64)?;
            for acl in &self.acls {
                e.map(3)?.str("subject")?.map(1)?;
                match &acl.subject {
                    AclSubject::DeviceId(id) => e.str("device-id")?.str(id)?,
                    AclSubject::Role(role) => e.str("role")?.str(role)?,
                    AclSubject::AnyAuthenticated => e.str("conntype")?.str("auth-crypt")?,
                    AclSubject::Anonymous => e.str("conntype")?.str("anon-clear")?,
                };
                e.str("resources")?.array(acl.resources.len() as u64)?;
                for href in &acl.resources {
                    e.str(href)?;
                }
                e.str("permission")?.u8(acl.permissions)?;
            }
            Ok(())
        })
    }

    /// Reads a payload; every entry must pass [`AclEntry::validate`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut acls = None;
        read_message(bytes, |key, d| {
            Ok(match key {
                "acls" => {
                    let n = definite(d.array().map_err(malformed)?, MAX_ACLS, "ACL list")?;
                    let mut list = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        list.push(acl_entry(d)?);
                    }
                    set(&mut acls, "acls", list)?
                }
                _ => false,
            })
        })?;
        Ok(AclsResponse {
            acls: acls.ok_or(ProtocolError::Missing("acls"))?,
        })
    }
}

impl HubConfiguration {
    /// The CBOR payload.
    pub fn encode(&self) -> Vec<u8> {
        encode(|e| {
            e.map(3)?
                .str("hub-id")?
                .str(&self.hub_id)?
                .str("endpoint")?
                .str(&self.endpoint)?
                .str("authorization-code")?
                .str(&self.authorization_code)?;
            Ok(())
        })
    }

    /// Reads a payload.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (mut hub_id, mut endpoint, mut code) = (None, None, None);
        read_message(bytes, |key, d| {
            Ok(match key {
                "hub-id" => set(&mut hub_id, "hub-id", text(d)?)?,
                "endpoint" => set(&mut endpoint, "endpoint", text(d)?)?,
                "authorization-code" => {
                    set(&mut code, "authorization-code", Zeroizing::new(text(d)?))?
                }
                _ => false,
            })
        })?;
        Ok(HubConfiguration {
            hub_id: hub_id.ok_or(ProtocolError::Missing("hub-id"))?,
            endpoint: endpoint.ok_or(ProtocolError::Missing("endpoint"))?,
            authorization_code: code.ok_or(ProtocolError::Missing("authorization-code"))?,
        })
    }
}

fn malformed(e: minicbor::decode::Error) -> ProtocolError {
    ProtocolError::Malformed(e.to_string())
}

/// A definite length within `max`.
fn definite(len: Option<u64>, max: u64, what: &str) -> Result<u64> {
    let len =
        len.ok_or_else(|| ProtocolError::Malformed(format!("{what} of indefinite length")))?;
    if len > max {
        return Err(ProtocolError::TooLarge(format!(
            "{what} has {len} entries, at most {max}"
        )));
    }
    Ok(len)
}

fn text(d: &mut Decoder<'_>) -> Result<String> {
    let s = d.str().map_err(malformed)?;
    if s.len() > MAX_TEXT_LEN {
        return Err(ProtocolError::TooLarge(format!(
            "text of {} bytes, at most {MAX_TEXT_LEN}",
            s.len()
        )));
    }
    Ok(s.to_owned())
}

/// Stores a field's value, refusing a second one; `Ok(true)`: the key was known.
fn set<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<bool> {
    if slot.is_some() {
        return Err(ProtocolError::Malformed(format!("{key:?} given twice")));
    }
    *slot = Some(value);
    Ok(true)
}

/// Skips the value of an unknown key: scalars only.
fn skip_scalar(d: &mut Decoder<'_>, key: &str) -> Result<()> {
    match d.datatype().map_err(malformed)? {
        Type::Array | Type::ArrayIndef | Type::Map | Type::MapIndef | Type::Tag => Err(
            ProtocolError::Malformed(format!("unknown key {key:?} holds a nested value")),
        ),
        _ => d.skip().map_err(malformed),
    }
}

/// Reads one map of text keys, handing each value to `field` (which returns whether it knew
/// the key) and skipping unknown scalars; with `whole`, nothing may follow.
fn read_map(
    d: &mut Decoder<'_>,
    mut field: impl FnMut(&str, &mut Decoder<'_>) -> Result<bool>,
) -> Result<()> {
    let n = definite(d.map().map_err(malformed)?, MAX_MAP_ENTRIES, "map")?;
    for _ in 0..n {
        let key = d.str().map_err(malformed)?.to_owned();
        if !field(&key, d)? {
            skip_scalar(d, &key)?;
        }
    }
    Ok(())
}

fn read_message(
    bytes: &[u8],
    field: impl FnMut(&str, &mut Decoder<'_>) -> Result<bool>,
) -> Result<()> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ProtocolError::TooLarge(format!(
            "message of {} bytes, at most {MAX_MESSAGE_LEN}",
            bytes.len()
        )));
    }
    let mut d = Decoder::new(bytes);
    read_map(&mut d, field)?;
    if d.position() != bytes.len() {
        return Err(ProtocolError::Malformed(
            "bytes after the message".to_owned(),
        ));
    }
    Ok(())
}

fn acl_entry(d: &mut Decoder<'_>) -> Result<AclEntry> {
    let (mut subject, mut resources, mut permissions) = (None, None, None);
    read_map(d, |key, d| {
        Ok(match key {
            "subject" => {
                let mut found = None;
                read_map(d, |kind, d| {
                    let value = text(d)?;
                    let s = match (kind, value.as_str()) {
                        ("device-id", _) => AclSubject::DeviceId(value),
                        ("role", _) => AclSubject::Role(value),
                        ("conntype", "auth-crypt") => AclSubject::AnyAuthenticated,
                        ("conntype", "anon-clear") => AclSubject::Anonymous,
                        _ => {
                            return Err(ProtocolError::Invalid(format!(
                                "unknown ACL subject {kind:?}: {value:?}"
                            )))
                        }
                    };
                    set(&mut found, "subject", s)
                })?;
                set(
                    &mut subject,
                    "subject",
                    found.ok_or(ProtocolError::Missing("subject"))?,
                )?
            }
            "resources" => {
                let n = definite(
                    d.array().map_err(malformed)?,
                    MAX_ACL_RESOURCES,
                    "ACL resources",
                )?;
                let mut list = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    list.push(text(d)?);
                }
                set(&mut resources, "resources", list)?
            }
            "permission" => set(&mut permissions, "permission", d.u8().map_err(malformed)?)?,
            _ => false,
        })
    })?;
    let entry = AclEntry {
        subject: subject.ok_or(ProtocolError::Missing("subject"))?,
        resources: resources.ok_or(ProtocolError::Missing("resources"))?,
        permissions: permissions.ok_or(ProtocolError::Missing("permission"))?,
    };
    entry
        .validate()
        .map_err(|e| ProtocolError::Invalid(e.to_string()))?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acls() -> AclsResponse {
        AclsResponse {
            acls: vec![
                AclEntry {
                    subject: AclSubject::DeviceId("d-1".into()),
                    resources: vec!["/light/*".into(), "/oic/d".into()],
                    permissions: AclEntry::READ | AclEntry::WRITE,
                },
                AclEntry {
                    subject: AclSubject::Role("admin".into()),
                    resources: vec!["*".into()],
                    permissions: AclEntry::ALL,
                },
                AclEntry {
                    subject: AclSubject::AnyAuthenticated,
                    resources: vec!["/status".into()],
                    permissions: AclEntry::READ,
                },
                AclEntry {
                    subject: AclSubject::Anonymous,
                    resources: vec!["/oic/res".into()],
                    permissions: AclEntry::READ | AclEntry::NOTIFY,
                },
            ],
        }
    }

    fn credentials() -> CredentialsResponse {
        CredentialsResponse {
            device_id: "5b0a9c1e-7d8f-8e2a-9b3c-1d2e3f4a5b6c".into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\n…".into(),
            hub_ca_pem: "-----BEGIN CERTIFICATE-----\n…".into(),
            not_after: 1_800_000_000,
        }
    }

    #[test]
    fn every_message_round_trips() {
        let t = TimeResponse {
            unix_seconds: 1_750_000_000,
        };
        assert_eq!(TimeResponse::decode(&t.encode()), Ok(t));
        let r = CredentialsRequest {
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
        };
        assert_eq!(CredentialsRequest::decode(&r.encode()), Ok(r));
        assert_eq!(
            CredentialsResponse::decode(&credentials().encode()),
            Ok(credentials())
        );
        assert_eq!(AclsResponse::decode(&acls().encode()), Ok(acls()));
        let hub = HubConfiguration {
            hub_id: "hub-1".into(),
            endpoint: "coaps+tcp://127.0.0.1:5684".into(),
            authorization_code: Zeroizing::new("s3cret".into()),
        };
        assert_eq!(HubConfiguration::decode(&hub.encode()).unwrap(), hub);
        assert!(!format!("{hub:?}").contains("s3cret"));
    }

    #[test]
    fn the_time_answer_is_the_documented_cbor() {
        // {"time": 1750000000}
        let bytes = TimeResponse {
            unix_seconds: 1_750_000_000,
        }
        .encode();
        assert_eq!(
            bytes,
            [0xa1, 0x64, b't', b'i', b'm', b'e', 0x1a, 0x68, 0x4e, 0xe1, 0x80]
        );
    }

    #[test]
    fn malformed_messages_name_the_problem() {
        let e = |b: &[u8]| TimeResponse::decode(b).unwrap_err();
        assert_eq!(e(&[0xa0]), ProtocolError::Missing("time"));
        assert!(matches!(e(&[]), ProtocolError::Malformed(_)));
        assert!(
            matches!(e(&[0xbf, 0xff]), ProtocolError::Malformed(m) if m.contains("indefinite"))
        );
        // {"time": 1, "time": 2}
        let twice = [
            0xa2, 0x64, b't', b'i', b'm', b'e', 1, 0x64, b't', b'i', b'm', b'e', 2,
        ];
        assert!(matches!(e(&twice), ProtocolError::Malformed(m) if m.contains("twice")));
        // {"time": "x"}
        assert!(matches!(
            e(&[0xa1, 0x64, b't', b'i', b'm', b'e', 0x61, b'x']),
            ProtocolError::Malformed(_)
        ));
        // {"time": 1} then a stray byte
        assert!(matches!(
            e(&[0xa1, 0x64, b't', b'i', b'm', b'e', 1, 0]),
            ProtocolError::Malformed(m) if m.contains("after")
        ));
        // {"x": [1]} : unknown nested values refused; {"x": 1, "time": 5} : unknown scalar skipped
        assert!(matches!(
            e(&[0xa1, 0x61, b'x', 0x81, 1]),
            ProtocolError::Malformed(m) if m.contains("nested")
        ));
        assert_eq!(
            TimeResponse::decode(&[0xa2, 0x61, b'x', 1, 0x64, b't', b'i', b'm', b'e', 5]),
            Ok(TimeResponse { unix_seconds: 5 })
        );
        // a map of 17 entries
        let mut big = vec![0xb1];
        for i in 0..17u8 {
            big.extend([0x61, b'a' + i, 0]);
        }
        assert!(matches!(e(&big), ProtocolError::TooLarge(_)));
        assert!(matches!(
            e(&vec![0; MAX_MESSAGE_LEN + 1]),
            ProtocolError::TooLarge(_)
        ));
    }

    #[test]
    fn acls_the_hub_could_not_apply_are_refused() {
        let mut bad = acls();
        bad.acls[0].resources = vec!["/a*b".into()];
        assert!(matches!(
            AclsResponse::decode(&bad.encode()),
            Err(ProtocolError::Invalid(_))
        ));
        let mut bad = acls();
        bad.acls[0].permissions = 0x40;
        assert!(matches!(
            AclsResponse::decode(&bad.encode()),
            Err(ProtocolError::Invalid(_))
        ));
        let mut bad = credentials();
        bad.device_id = "../etc".into();
        assert!(matches!(
            CredentialsResponse::decode(&bad.encode()),
            Err(ProtocolError::Invalid(_))
        ));
    }

    #[test]
    fn device_ids_are_version_8_uuids_of_the_certificate() {
        let a = device_id_for(b"certificate a");
        assert_eq!(a, device_id_for(b"certificate a"));
        assert_ne!(a, device_id_for(b"certificate b"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        crate::pki::check_device_id(&a).unwrap();
        assert_eq!(fingerprint(b"").len(), 64);
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_fuzz_seeds_decode() {
        let seed = |name: &str| {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../fuzz/corpus/dps_protocol/"
            );
            std::fs::read(format!("{path}{name}")).unwrap()
        };
        assert_eq!(
            TimeResponse::decode(&seed("time")).unwrap().unix_seconds,
            1_750_000_000
        );
        assert_eq!(
            CredentialsRequest::decode(&seed("csr")).unwrap().csr_pem,
            "-----BEGIN"
        );
        let acls = AclsResponse::decode(&seed("acls")).unwrap();
        assert_eq!(acls.acls[0].subject, AclSubject::Role("admin".into()));
        assert_eq!(acls.encode(), seed("acls"));
        assert_eq!(
            HubConfiguration::decode(&seed("hub")).unwrap().endpoint,
            "coaps+tcp://h"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = TimeResponse::decode(&bytes);
            let _ = CredentialsRequest::decode(&bytes);
            let _ = CredentialsResponse::decode(&bytes);
            let _ = AclsResponse::decode(&bytes);
            let _ = HubConfiguration::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(at in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
            for mut m in [acls().encode(), credentials().encode()] {
                let i = at % m.len();
                m[i] = byte;
                m.truncate(cut.max(1).min(m.len()));
                let _ = AclsResponse::decode(&m);
                let _ = CredentialsResponse::decode(&m);
            }
        }
    }
}

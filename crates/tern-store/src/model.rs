//! What the store holds: enrollment groups, devices, issued certificates, ACLs and audit events.
//!
//! These are plain data. The rules about how they change (state only moves forward, nothing is
//! issued to a revoked device) live in the backends, inside one transaction per operation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

/// A set of devices admitted by the same manufacturer trust anchor and sent to the same hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentGroup {
    /// The group's name, chosen by the operator; unique.
    pub id: String,
    /// Free text for operators.
    pub description: String,
    /// One or more PEM certificates; a device's manufacturer certificate must chain to one.
    pub manufacturer_ca_pem: String,
    /// The identifier of the hub devices of this group join.
    pub hub_id: String,
    /// Where that hub listens, e.g. `coaps+tcp://hub.example:5684`.
    pub hub_endpoint: String,
    /// The trust anchor handed to devices so that they can authenticate the hub.
    pub hub_ca_pem: String,
    /// The code a device presents to the hub to claim ownership (a secret: never logged).
    pub authorization_code: String,
    /// ACLs given to every device of the group at provisioning.
    pub acl_template: Vec<AclEntry>,
    /// How long an identity certificate issued to a device of this group is valid.
    pub certificate_validity_days: u32,
    /// When the group was created (Unix seconds).
    pub created_at: i64,
}

/// Who an [`AclEntry`] grants access to (OCF ACL2 subjects).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclSubject {
    /// One device, by its device id.
    DeviceId(String),
    /// Any peer holding this role.
    Role(String),
    /// Any peer on an authenticated, encrypted connection.
    AnyAuthenticated,
    /// Any peer, authenticated or not.
    Anonymous,
}

/// One access-control entry: a subject, the resources it covers and what it may do there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    /// Who the entry is for.
    pub subject: AclSubject,
    /// Resource href patterns; `*` is allowed as the last character only and matches any
    /// suffix (`/light/*`, or `*` for every resource).
    pub resources: Vec<String>,
    /// A bitmask of [`AclEntry::CREATE`], [`AclEntry::READ`], [`AclEntry::WRITE`],
    /// [`AclEntry::DELETE`] and [`AclEntry::NOTIFY`], as in OCF.
    pub permissions: u8,
}

impl AclEntry {
    /// Permission to create resources.
    pub const CREATE: u8 = 1;
    /// Permission to read (retrieve) a resource.
    pub const READ: u8 = 2;
    /// Permission to write (update) a resource.
    pub const WRITE: u8 = 4;
    /// Permission to delete a resource.
    pub const DELETE: u8 = 8;
    /// Permission to observe (be notified of changes to) a resource.
    pub const NOTIFY: u8 = 16;
    /// Every permission bit OCF defines.
    pub const ALL: u8 = Self::CREATE | Self::READ | Self::WRITE | Self::DELETE | Self::NOTIFY;

    /// Refuse entries the hub could not apply: unknown permission bits, no resources, or a
    /// `*` anywhere but at the end of a pattern.
    pub fn validate(&self) -> Result<()> {
        if self.permissions & !Self::ALL != 0 {
            return Err(StoreError::InvalidInput(format!(
                "ACL permissions {:#04x} has bits outside CREATE|READ|WRITE|DELETE|NOTIFY",
                self.permissions
            )));
        }
        if self.resources.is_empty() {
            return Err(StoreError::InvalidInput(
                "ACL entry names no resources".to_owned(),
            ));
        }
        for pattern in &self.resources {
            if pattern.is_empty() {
                return Err(StoreError::InvalidInput(
                    "ACL resource pattern is empty".to_owned(),
                ));
            }
            if pattern.find('*').is_some_and(|at| at != pattern.len() - 1) {
                return Err(StoreError::InvalidInput(format!(
                    "ACL resource pattern {pattern:?} has '*' before its end"
                )));
            }
        }
        Ok(())
    }

    /// Whether one of the entry's resource patterns matches `href`.
    pub fn covers(&self, href: &str) -> bool {
        self.resources
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => href.starts_with(prefix),
                None => pattern == href,
            })
    }

    /// Whether the entry grants every bit of `permissions` on `href`.
    pub fn allows(&self, href: &str, permissions: u8) -> bool {
        self.permissions & permissions == permissions && self.covers(href)
    }
}

/// ACL entries as the JSON text the store keeps.
pub(crate) fn acls_to_json(acls: &[AclEntry]) -> Result<String> {
    serde_json::to_string(acls)
        .map_err(|error| StoreError::InvalidInput(format!("ACLs not serialisable: {error}")))
}

/// ACL entries back from stored JSON text.
pub(crate) fn acls_from_json(json: &str) -> Result<Vec<AclEntry>> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::Corrupt(format!("stored ACLs are not valid: {error}")))
}

/// Where a device is in provisioning. States are ordered: each step only moves forward, and
/// `Revoked` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Admitted by its manufacturer certificate; nothing issued yet.
    Enrolled,
    /// An identity certificate has been issued.
    CredentialsIssued,
    /// ACLs have been issued.
    AclsIssued,
    /// The device has everything it needs to join its hub.
    Provisioned,
    /// Revoked: its certificates are invalid and nothing more is issued to it.
    Revoked,
}

impl DeviceState {
    /// Every state, in order.
    pub const ALL: [DeviceState; 5] = [
        DeviceState::Enrolled,
        DeviceState::CredentialsIssued,
        DeviceState::AclsIssued,
        DeviceState::Provisioned,
        DeviceState::Revoked,
    ];

    /// The text the store keeps for this state (also its JSON form).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Enrolled => "enrolled",
            DeviceState::CredentialsIssued => "credentials_issued",
            DeviceState::AclsIssued => "acls_issued",
            DeviceState::Provisioned => "provisioned",
            DeviceState::Revoked => "revoked",
        }
    }

    /// The state after a step that reaches `reached`: never earlier than the current one
    /// (renewing the certificate of a provisioned device leaves it provisioned).
    pub fn advanced_to(self, reached: DeviceState) -> DeviceState {
        self.max(reached)
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no [`DeviceState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a device state")]
pub struct UnknownDeviceState(pub String);

impl FromStr for DeviceState {
    type Err = UnknownDeviceState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DeviceState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownDeviceState(text.to_owned()))
    }
}

impl From<UnknownDeviceState> for StoreError {
    fn from(error: UnknownDeviceState) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// A device the provisioning service has admitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device id handed to the device (UUID text); stays the same when it re-provisions.
    pub device_id: String,
    /// The enrollment group that admitted it.
    pub group_id: String,
    /// SHA-256 (lowercase hex) of the manufacturer certificate's DER; unique.
    pub manufacturer_fingerprint: String,
    /// The manufacturer certificate's subject, for operators.
    pub manufacturer_subject: String,
    /// Where the device is in provisioning.
    pub state: DeviceState,
    /// When it was first enrolled (Unix seconds).
    pub created_at: i64,
    /// When it last changed (Unix seconds).
    pub updated_at: i64,
    /// When it was revoked (Unix seconds), if it was.
    pub revoked_at: Option<i64>,
}

/// An identity certificate the provisioning service issued to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// The serial number, as lowercase hex without leading zeros (see [`normalize_serial`]).
    pub serial: String,
    /// The device it was issued to.
    pub device_id: String,
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// Whether it has been revoked.
    pub revoked: bool,
    /// The certificate, PEM encoded.
    pub pem: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Increasing with insertion order.
    pub id: i64,
    /// When it happened (Unix seconds, as passed by the caller).
    pub at: i64,
    /// The device concerned, if any.
    pub device_id: Option<String>,
    /// What happened, e.g. `device_enrolled`, `certificate_recorded`.
    pub action: String,
    /// Details for operators (never secrets).
    pub detail: String,
}

impl AuditEvent {
    /// An enrollment group was created.
    pub const GROUP_CREATED: &'static str = "group_created";
    /// An enrollment group was deleted.
    pub const GROUP_DELETED: &'static str = "group_deleted";
    /// A device was admitted for the first time.
    pub const DEVICE_ENROLLED: &'static str = "device_enrolled";
    /// A certificate was issued to a device.
    pub const CERTIFICATE_RECORDED: &'static str = "certificate_recorded";
    /// A device's ACLs were replaced.
    pub const ACLS_SET: &'static str = "acls_set";
    /// A device finished provisioning.
    pub const DEVICE_PROVISIONED: &'static str = "device_provisioned";
    /// A device and its certificates were revoked.
    pub const DEVICE_REVOKED: &'static str = "device_revoked";
}

/// The state a device moves to by a step that reaches `reached`, or [`StoreError::Revoked`]:
/// the one rule every issuing operation applies, in both backends.
pub(crate) fn next_state(device: &Device, reached: DeviceState) -> Result<DeviceState> {
    if device.state == DeviceState::Revoked {
        return Err(StoreError::Revoked(device.device_id.clone()));
    }
    Ok(device.state.advanced_to(reached))
}

/// A device state read back from the database, or [`StoreError::Corrupt`].
pub(crate) fn stored_state(device_id: &str, text: &str) -> Result<DeviceState> {
    text.parse()
        .map_err(|error| StoreError::Corrupt(format!("device {device_id}: {error}")))
}

/// `group` completed with its stored ACL template (JSON) and certificate validity, or
/// [`StoreError::Corrupt`].
pub(crate) fn stored_group(
    group: EnrollmentGroup,
    acl_json: &str,
    validity_days: i64,
) -> Result<EnrollmentGroup> {
    let certificate_validity_days = u32::try_from(validity_days).map_err(|_| {
        StoreError::Corrupt(format!(
            "group {:?}: certificate validity of {validity_days} days",
            group.id
        ))
    })?;
    Ok(EnrollmentGroup {
        acl_template: acls_from_json(acl_json)?,
        certificate_validity_days,
        ..group
    })
}

/// Refuse a group that could never provision a device.
pub(crate) fn validate_group(group: &EnrollmentGroup) -> Result<()> {
    if group.id.is_empty() {
        return Err(StoreError::InvalidInput(
            "enrollment group id is empty".to_owned(),
        ));
    }
    if group.certificate_validity_days == 0 {
        return Err(StoreError::InvalidInput(format!(
            "enrollment group {:?}: certificate validity of 0 days",
            group.id
        )));
    }
    group.acl_template.iter().try_for_each(AclEntry::validate)
}

/// Check a certificate about to be recorded for `device_id`, and return it with its serial
/// normalised.
pub(crate) fn checked_certificate(
    device_id: &str,
    mut certificate: IssuedCertificate,
) -> Result<IssuedCertificate> {
    if certificate.device_id != device_id {
        return Err(StoreError::InvalidInput(format!(
            "certificate {} names device {:?}, not {device_id:?}",
            certificate.serial, certificate.device_id
        )));
    }
    if certificate.not_after < certificate.not_before {
        return Err(StoreError::InvalidInput(format!(
            "certificate {} ends before it starts",
            certificate.serial
        )));
    }
    certificate.serial = normalize_serial(&certificate.serial)?;
    Ok(certificate)
}

/// Check the arguments of an enrollment; returns the normalised fingerprint.
pub(crate) fn checked_enrollment(fingerprint: &str, new_device_id: &str) -> Result<String> {
    if new_device_id.is_empty() {
        return Err(StoreError::InvalidInput("device id is empty".to_owned()));
    }
    normalize_fingerprint(fingerprint)
}

/// `serial` in the one form the store keeps and looks up: lowercase hex, no separators, no
/// leading zeros.
///
/// Tools print the same serial differently (`00:AB:CD`, `abcd`, `0ABCD`); a revocation check
/// that missed a serial because of its spelling would let a revoked certificate through.
pub fn normalize_serial(serial: &str) -> Result<String> {
    let digits: String = serial
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(StoreError::InvalidInput(format!(
            "certificate serial {serial:?} is not hexadecimal"
        )));
    }
    let significant = digits.trim_start_matches('0');
    Ok(if significant.is_empty() {
        "0".to_owned()
    } else {
        significant.to_owned()
    })
}

/// `fingerprint` as the store keeps it: 64 lowercase hex digits (SHA-256), colons removed.
pub fn normalize_fingerprint(fingerprint: &str) -> Result<String> {
    let digits: String = fingerprint
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(StoreError::InvalidInput(format!(
            "manufacturer fingerprint {fingerprint:?} is not a SHA-256 in hex"
        )));
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_print_and_parse_back() {
        for state in DeviceState::ALL {
            assert_eq!(state.as_str().parse::<DeviceState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).ok(),
                Some(format!("\"{state}\""))
            );
        }
        assert!("Provisioned".parse::<DeviceState>().is_err());
    }

    #[test]
    fn state_never_moves_backwards() {
        assert_eq!(
            DeviceState::Provisioned.advanced_to(DeviceState::CredentialsIssued),
            DeviceState::Provisioned
        );
        assert_eq!(
            DeviceState::Enrolled.advanced_to(DeviceState::AclsIssued),
            DeviceState::AclsIssued
        );
    }

    #[test]
    fn serials_have_one_spelling() {
        assert_eq!(normalize_serial("00:AB:cd").ok().as_deref(), Some("abcd"));
        assert_eq!(normalize_serial("000").ok().as_deref(), Some("0"));
        assert!(normalize_serial("").is_err());
        assert!(normalize_serial("xyz").is_err());
    }

    #[test]
    fn acl_patterns_and_permissions() {
        let entry = AclEntry {
            subject: AclSubject::AnyAuthenticated,
            resources: vec!["/light/*".into(), "/oic/d".into()],
            permissions: AclEntry::READ | AclEntry::NOTIFY,
        };
        assert!(entry.validate().is_ok());
        assert!(entry.allows("/light/1", AclEntry::READ));
        assert!(entry.allows("/oic/d", AclEntry::READ | AclEntry::NOTIFY));
        assert!(!entry.allows("/oic/d/x", AclEntry::READ));
        assert!(!entry.allows("/light/1", AclEntry::WRITE));
        let bad = AclEntry {
            resources: vec!["/a*/b".into()],
            ..entry.clone()
        };
        assert!(bad.validate().is_err());
        let bad_bits = AclEntry {
            permissions: 0x20,
            ..entry
        };
        assert!(bad_bits.validate().is_err());
    }
}

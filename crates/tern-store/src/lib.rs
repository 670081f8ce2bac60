//! Tern's persistent store for provisioning state.
//!
//! The provisioning service (DPS) admits devices by their manufacturer certificate, issues them
//! an identity certificate, ACLs and hub configuration; a hub later checks devices against the
//! same records. This crate keeps those records: enrollment groups, devices, issued
//! certificates, ACLs and an audit log.
//!
//! Two backends sit behind one trait, [`ProvisioningStore`]:
//! - SQLite ([`SqliteStore`]), the default: one file, nothing to install (WAL, `synchronous=FULL`).
//! - PostgreSQL ([`PostgresStore`]), so that several service instances share one database.
//!
//! [`open`] picks the backend from a URL and returns a [`Store`], which dispatches to either:
//!
//! ```no_run
//! # async fn demo() -> Result<(), tern_store::StoreError> {
//! use tern_store::ProvisioningStore;
//! let store = tern_store::open("sqlite:///var/lib/tern/dps.db").await?;
//! if let Some(revoked) = store.is_certificate_serial_revoked("1f2e3d").await? {
//!     println!("serial 1f2e3d revoked: {revoked}");
//! }
//! # Ok(()) }
//! ```
//!
//! Every operation is one transaction: a crash never leaves a half-provisioned device, and every
//! change writes its audit event in the same transaction. Callers pass the time (`now`, Unix
//! seconds), which keeps the store deterministic under test. A device's state only moves
//! forward ([`DeviceState`]), and nothing more is issued to a revoked device.
//!
//! The schema is versioned ([`SCHEMA_VERSION`]); opening applies pending migrations and refuses
//! a database written by a newer build ([`StoreError::SchemaTooNew`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;

pub mod error;
mod migrations;
pub mod model;
pub mod postgres;
pub mod sqlite;

pub use error::{redact_url, Result, StoreError};
pub use migrations::SCHEMA_VERSION;
pub use model::{
    normalize_fingerprint, normalize_serial, AclEntry, AclSubject, AuditEvent, Device, DeviceState,
    EnrollmentGroup, IssuedCertificate, UnknownDeviceState,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The operations of the provisioning store; both backends implement them with the same
/// behaviour, each operation in one transaction.
///
/// Operations that change state write an audit event in the same transaction. Lookups by id
/// return `Ok(None)` for an unknown id; operations on a device return
/// [`StoreError::NotFound`] for an unknown one.
pub trait ProvisioningStore: Send + Sync {
    /// Add an enrollment group; [`StoreError::GroupExists`] if its id is taken.
    fn create_group(&self, group: &EnrollmentGroup) -> impl Future<Output = Result<()>> + Send;

    /// The enrollment group with this id.
    fn group(&self, id: &str) -> impl Future<Output = Result<Option<EnrollmentGroup>>> + Send;

    /// Every enrollment group, by id.
    fn list_groups(&self) -> impl Future<Output = Result<Vec<EnrollmentGroup>>> + Send;

    /// Remove an enrollment group; [`StoreError::GroupInUse`] while devices reference it.
    fn delete_group(&self, id: &str, now: i64) -> impl Future<Output = Result<()>> + Send;

    /// Admit a device by its manufacturer certificate fingerprint.
    ///
    /// If a device with this fingerprint exists it is returned unchanged (a device that
    /// provisions again keeps its device id, and `new_device_id` is unused); otherwise a device
    /// `new_device_id` is created in state [`DeviceState::Enrolled`]. Concurrent calls for one
    /// fingerprint all return the same single device.
    fn enroll_device(
        &self,
        fingerprint: &str,
        subject: &str,
        group_id: &str,
        new_device_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Device>> + Send;

    /// Record a certificate issued to the device and move it to at least
    /// [`DeviceState::CredentialsIssued`]; [`StoreError::Revoked`] for a revoked device,
    /// [`StoreError::CertificateExists`] if the serial was recorded before.
    ///
    /// The serial is normalised ([`normalize_serial`]); `certificate.device_id` must be
    /// `device_id`.
    fn record_certificate(
        &self,
        device_id: &str,
        certificate: IssuedCertificate,
        now: i64,
    ) -> impl Future<Output = Result<Device>> + Send;

    /// Replace the device's ACLs and move it to at least [`DeviceState::AclsIssued`];
    /// [`StoreError::Revoked`] for a revoked device.
    fn set_acls(
        &self,
        device_id: &str,
        acls: Vec<AclEntry>,
        now: i64,
    ) -> impl Future<Output = Result<Device>> + Send;

    /// Move the device to [`DeviceState::Provisioned`]; [`StoreError::Revoked`] for a revoked
    /// device.
    fn mark_provisioned(
        &self,
        device_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Device>> + Send;

    /// Revoke the device and every certificate issued to it. Revoking a revoked device
    /// changes nothing.
    fn revoke_device(
        &self,
        device_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Device>> + Send;

    /// The device with this id.
    fn device(&self, device_id: &str) -> impl Future<Output = Result<Option<Device>>> + Send;

    /// The device enrolled with this manufacturer certificate fingerprint.
    fn device_by_fingerprint(
        &self,
        fingerprint: &str,
    ) -> impl Future<Output = Result<Option<Device>>> + Send;

    /// Every device, oldest first.
    fn list_devices(&self) -> impl Future<Output = Result<Vec<Device>>> + Send;

    /// Every certificate issued to the device, oldest first.
    fn certificates(
        &self,
        device_id: &str,
    ) -> impl Future<Output = Result<Vec<IssuedCertificate>>> + Send;

    /// The certificate with this serial (any spelling [`normalize_serial`] accepts).
    fn certificate(
        &self,
        serial: &str,
    ) -> impl Future<Output = Result<Option<IssuedCertificate>>> + Send;

    /// The device's ACLs (empty until [`ProvisioningStore::set_acls`]).
    fn acls(&self, device_id: &str) -> impl Future<Output = Result<Vec<AclEntry>>> + Send;

    /// The newest `limit` audit events, newest first.
    fn audit(&self, limit: u32) -> impl Future<Output = Result<Vec<AuditEvent>>> + Send;

    /// Whether the certificate with this serial is revoked, `None` for a serial the store never
    /// recorded (for a hub's check of a presented certificate).
    fn is_certificate_serial_revoked(
        &self,
        serial: &str,
    ) -> impl Future<Output = Result<Option<bool>>> + Send {
        async move {
            Ok(self
                .certificate(serial)
                .await?
                .map(|certificate| certificate.revoked))
        }
    }
}

/// A store on either backend, as returned by [`open`].
#[derive(Debug, Clone)]
pub enum Store {
    /// A SQLite database.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PostgresStore),
}

/// Open the store at `url`, applying pending migrations.
///
/// - `postgres://…` or `postgresql://…`: PostgreSQL (libpq URL syntax, no TLS).
/// - `sqlite://PATH` (`sqlite:///abs/path` for an absolute one) or a plain path: SQLite,
///   created if missing.
/// - `sqlite::memory:`: a private in-memory SQLite database, for tests.
///
/// Any other `scheme://` is [`StoreError::BadUrl`].
pub async fn open(url: &str) -> Result<Store> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Store::Postgres(PostgresStore::open(url).await?));
    }
    if url == "sqlite::memory:" {
        return Ok(Store::Sqlite(SqliteStore::open_in_memory().await?));
    }
    let path = match url.strip_prefix("sqlite://") {
        Some(path) => path,
        None if url.contains("://") => {
            return Err(StoreError::BadUrl(format!(
                "{}: expected postgres://, postgresql://, sqlite:// or a file path",
                redact_url(url)
            )))
        }
        None => url,
    };
    if path.is_empty() {
        return Err(StoreError::BadUrl(format!(
            "{url:?} names no SQLite database file"
        )));
    }
    Ok(Store::Sqlite(SqliteStore::open(path).await?))
}

/// Forwards each operation of [`Store`] to the backend it holds.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Sqlite($store) => $call.await,
            Store::Postgres($store) => $call.await,
        }
    };
}

impl ProvisioningStore for Store {
    async fn create_group(&self, group: &EnrollmentGroup) -> Result<()> {
        dispatch!(self, store => store.create_group(group))
    }

    async fn group(&self, id: &str) -> Result<Option<EnrollmentGroup>> {
        dispatch!(self, store => store.group(id))
    }

    async fn list_groups(&self) -> Result<Vec<EnrollmentGroup>> {
        dispatch!(self, store => store.list_groups())
    }

    async fn delete_group(&self, id: &str, now: i64) -> Result<()> {
        dispatch!(self, store => store.delete_group(id, now))
    }

    async fn enroll_device(
        &self,
        fingerprint: &str,
        subject: &str,
        group_id: &str,
        new_device_id: &str,
        now: i64,
    ) -> Result<Device> {
        dispatch!(self, store => store.enroll_device(fingerprint, subject, group_id, new_device_id, now))
    }

    async fn record_certificate(
        &self,
        device_id: &str,
        certificate: IssuedCertificate,
        now: i64,
    ) -> Result<Device> {
        dispatch!(self, store => store.record_certificate(device_id, certificate, now))
    }

    async fn set_acls(&self, device_id: &str, acls: Vec<AclEntry>, now: i64) -> Result<Device> {
        dispatch!(self, store => store.set_acls(device_id, acls, now))
    }

    async fn mark_provisioned(&self, device_id: &str, now: i64) -> Result<Device> {
        dispatch!(self, store => store.mark_provisioned(device_id, now))
    }

    async fn revoke_device(&self, device_id: &str, now: i64) -> Result<Device> {
        dispatch!(self, store => store.revoke_device(device_id, now))
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        dispatch!(self, store => store.device(device_id))
    }

    async fn device_by_fingerprint(&self, fingerprint: &str) -> Result<Option<Device>> {
        dispatch!(self, store => store.device_by_fingerprint(fingerprint))
    }

    async fn list_devices(&self) -> Result<Vec<Device>> {
        dispatch!(self, store => store.list_devices())
    }

    async fn certificates(&self, device_id: &str) -> Result<Vec<IssuedCertificate>> {
        dispatch!(self, store => store.certificates(device_id))
    }

    async fn certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>> {
        dispatch!(self, store => store.certificate(serial))
    }

    async fn acls(&self, device_id: &str) -> Result<Vec<AclEntry>> {
        dispatch!(self, store => store.acls(device_id))
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEvent>> {
        dispatch!(self, store => store.audit(limit))
    }
}

//! The SQLite backend: one database file, nothing to install.
//!
//! One connection behind a mutex, used from `spawn_blocking` so that the async runtime never
//! waits on disk. SQLite has one writer at a time anyway, so a pool would only add lock
//! contention. The connection runs in WAL mode with `synchronous=FULL` (a committed
//! transaction survives power loss) and a busy timeout, so that several processes may open
//! the same file. Every write is an `IMMEDIATE` transaction: it takes the write lock before
//! reading, so the state it checks cannot change under it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use tracing::{debug, info};

use crate::error::{Result, StoreError};
use crate::migrations::{self, CREATE_MIGRATIONS_TABLE};
use crate::model::{
    acls_from_json, acls_to_json, checked_certificate, checked_enrollment, next_state,
    normalize_fingerprint, normalize_serial, stored_group, stored_state, validate_group, AclEntry,
    AuditEvent, Device, DeviceState, EnrollmentGroup, IssuedCertificate,
};
use crate::ProvisioningStore;

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const GROUP_COLUMNS: &str = "id, description, manufacturer_ca_pem, hub_id, hub_endpoint, \
    hub_ca_pem, authorization_code, acl_template, certificate_validity_days, created_at";
const DEVICE_COLUMNS: &str = "device_id, group_id, manufacturer_fingerprint, \
    manufacturer_subject, state, created_at, updated_at, revoked_at";
const CERTIFICATE_COLUMNS: &str = "serial, device_id, not_before, not_after, revoked, pem";

/// A store in a SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Open (creating if missing) the database file at `path` and apply pending migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path: PathBuf = path.as_ref().to_owned();
        let connection = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let connection = Connection::open(&path).map_err(|error| {
                StoreError::Backend(format!("sqlite: cannot open {}: {error}", path.display()))
            })?;
            prepare(&connection)?;
            info!(path = %path.display(), "opened SQLite store");
            Ok(connection)
        })
        .await
        .map_err(worker_failed)??;
        Self::migrated(connection).await
    }

    /// A private in-memory database (gone when the store is dropped), for tests.
    pub async fn open_in_memory() -> Result<Self> {
        let connection = Connection::open_in_memory()?;
        prepare(&connection)?;
        Self::migrated(connection).await
    }

    async fn migrated(connection: Connection) -> Result<Self> {
        let store = SqliteStore {
            connection: Arc::new(Mutex::new(connection)),
        };
        store.write(migrate).await?;
        Ok(store)
    }

    /// Run `work` in a write transaction: the write lock is taken first, and everything is
    /// committed together or (on any error) rolled back.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.transaction(TransactionBehavior::Immediate, work).await
    }

    /// Run `work` in a read transaction, so that its queries see one snapshot.
    async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.transaction(TransactionBehavior::Deferred, work).await
    }

    async fn transaction<T, F>(&self, behavior: TransactionBehavior, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held dropped its transaction, which rolled back:
            // the connection is in a clean state and can be used again.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            let transaction = connection.transaction_with_behavior(behavior)?;
            let value = work(&transaction)?;
            transaction.commit()?;
            Ok(value)
        })
        .await
        .map_err(worker_failed)?
    }
}

fn worker_failed(error: tokio::task::JoinError) -> StoreError {
    StoreError::Backend(format!("sqlite worker task failed: {error}"))
}

/// Connection settings every connection needs before its first transaction.
fn prepare(connection: &Connection) -> Result<()> {
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers do not block the writer. An in-memory database answers "memory", which is
    // fine. Switching a new file to WAL needs it to itself, and SQLite answers "busy" at once
    // there, without waiting through the busy timeout, when another process is switching or
    // migrating the same file at that moment: so wait here, in bounded steps.
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match connection.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        }) {
            Ok(_mode) => break,
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(error) => return Err(error.into()),
        }
    }
    connection.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// Apply pending migrations (see [`crate::migrations`]).
fn migrate(transaction: &Transaction<'_>) -> Result<()> {
    transaction.execute_batch(CREATE_MIGRATIONS_TABLE)?;
    let found: i64 = transaction.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    for migration in migrations::pending(found)? {
        transaction.execute_batch(migration.sqlite)?;
        transaction.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, migrations::unix_now()],
        )?;
        info!(
            version = migration.version,
            name = migration.name,
            "applied SQLite migration"
        );
    }
    Ok(())
}

fn audit(
    transaction: &Transaction<'_>,
    at: i64,
    device_id: Option<&str>,
    action: &str,
    detail: &str,
) -> Result<()> {
    transaction.execute(
        "INSERT INTO audit_events (at, device_id, action, detail) VALUES (?1, ?2, ?3, ?4)",
        params![at, device_id, action, detail],
    )?;
    Ok(())
}

// Rows are read as raw columns and interpreted after, so that a bad stored value is a
// `StoreError::Corrupt` rather than a driver error.

fn group_from_row(row: &Row<'_>) -> rusqlite::Result<Result<EnrollmentGroup>> {
    let raw = EnrollmentGroup {
        id: row.get(0)?,
        description: row.get(1)?,
        manufacturer_ca_pem: row.get(2)?,
        hub_id: row.get(3)?,
        hub_endpoint: row.get(4)?,
        hub_ca_pem: row.get(5)?,
        authorization_code: row.get(6)?,
        acl_template: Vec::new(),
        certificate_validity_days: 0,
        created_at: row.get(9)?,
    };
    let acl_json: String = row.get(7)?;
    let validity_days: i64 = row.get(8)?;
    Ok(stored_group(raw, &acl_json, validity_days))
}

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Device>> {
    let device_id: String = row.get(0)?;
    let state: String = row.get(4)?;
    let state = match stored_state(&device_id, &state) {
        Ok(state) => state,
        Err(error) => return Ok(Err(error)),
    };
    Ok(Ok(Device {
        device_id,
        group_id: row.get(1)?,
        manufacturer_fingerprint: row.get(2)?,
        manufacturer_subject: row.get(3)?,
        state,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        revoked_at: row.get(7)?,
    }))
}

fn certificate_from_row(row: &Row<'_>) -> rusqlite::Result<IssuedCertificate> {
    Ok(IssuedCertificate {
        serial: row.get(0)?,
        device_id: row.get(1)?,
        not_before: row.get(2)?,
        not_after: row.get(3)?,
        revoked: row.get(4)?,
        pem: row.get(5)?,
    })
}

fn find_device(transaction: &Transaction<'_>, device_id: &str) -> Result<Option<Device>> {
    transaction
        .query_row(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?1"),
            [device_id],
            device_from_row,
        )
        .optional()?
        .transpose()
}

fn existing_device(transaction: &Transaction<'_>, device_id: &str) -> Result<Device> {
    find_device(transaction, device_id)?.ok_or_else(|| StoreError::not_found("device", device_id))
}

fn set_state(
    transaction: &Transaction<'_>,
    device: Device,
    state: DeviceState,
    now: i64,
) -> Result<Device> {
    transaction.execute(
        "UPDATE devices SET state = ?1, updated_at = ?2 WHERE device_id = ?3",
        params![state.as_str(), now, device.device_id],
    )?;
    Ok(Device {
        state,
        updated_at: now,
        ..device
    })
}

fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<Result<T>>>) -> Result<Vec<T>> {
    rows.map(|row| row?).collect()
}

impl ProvisioningStore for SqliteStore {
    async fn create_group(&self, group: &EnrollmentGroup) -> Result<()> {
        validate_group(group)?;
        let acl_json = acls_to_json(&group.acl_template)?;
        let group = group.clone();
        self.write(move |transaction| {
            let inserted = transaction.execute(
                &format!(
                    "INSERT INTO enrollment_groups ({GROUP_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING"
                ),
                params![
                    group.id,
                    group.description,
                    group.manufacturer_ca_pem,
                    group.hub_id,
                    group.hub_endpoint,
                    group.hub_ca_pem,
                    group.authorization_code,
                    acl_json,
                    i64::from(group.certificate_validity_days),
                    group.created_at,
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::GroupExists(group.id));
            }
            audit(
                transaction,
                group.created_at,
                None,
                AuditEvent::GROUP_CREATED,
                &format!("group {} for hub {}", group.id, group.hub_id),
            )?;
            debug!(group = %group.id, "created enrollment group");
            Ok(())
        })
        .await
    }

    async fn group(&self, id: &str) -> Result<Option<EnrollmentGroup>> {
        let id = id.to_owned();
        self.read(move |transaction| {
            transaction
                .query_row(
                    &format!("SELECT {GROUP_COLUMNS} FROM enrollment_groups WHERE id = ?1"),
                    [&id],
                    group_from_row,
                )
                .optional()?
                .transpose()
        })
        .await
    }

    async fn list_groups(&self) -> Result<Vec<EnrollmentGroup>> {
        self.read(|transaction| {
            let mut statement = transaction.prepare(&format!(
                "SELECT {GROUP_COLUMNS} FROM enrollment_groups ORDER BY id"
            ))?;
            let rows = statement.query_map([], group_from_row)?;
            collect(rows)
        })
        .await
    }

    async fn delete_group(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |transaction| {
            let exists = transaction
                .query_row(
                    "SELECT 1 FROM enrollment_groups WHERE id = ?1",
                    [&id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Err(StoreError::not_found("enrollment group", id));
            }
            let devices: i64 = transaction.query_row(
                "SELECT COUNT(*) FROM devices WHERE group_id = ?1",
                [&id],
                |row| row.get(0),
            )?;
            if devices > 0 {
                return Err(StoreError::GroupInUse { id, devices });
            }
            transaction.execute("DELETE FROM enrollment_groups WHERE id = ?1", [&id])?;
            audit(
                transaction,
                now,
                None,
                AuditEvent::GROUP_DELETED,
                &format!("group {id}"),
            )
        })
        .await
    }

    async fn enroll_device(
        &self,
        fingerprint: &str,
        subject: &str,
        group_id: &str,
        new_device_id: &str,
        now: i64,
    ) -> Result<Device> {
        let fingerprint = checked_enrollment(fingerprint, new_device_id)?;
        let (subject, group_id, new_device_id) = (
            subject.to_owned(),
            group_id.to_owned(),
            new_device_id.to_owned(),
        );
        self.write(move |transaction| {
            let group_exists = transaction
                .query_row(
                    "SELECT 1 FROM enrollment_groups WHERE id = ?1",
                    [&group_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !group_exists {
                return Err(StoreError::not_found("enrollment group", group_id));
            }
            // The fingerprint decides: a device seen before keeps its row and its id.
            let inserted = transaction.execute(
                &format!(
                    "INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, NULL) \
                     ON CONFLICT (manufacturer_fingerprint) DO NOTHING"
                ),
                params![
                    new_device_id,
                    group_id,
                    fingerprint,
                    subject,
                    DeviceState::Enrolled.as_str(),
                    now
                ],
            )?;
            if inserted == 1 {
                audit(
                    transaction,
                    now,
                    Some(&new_device_id),
                    AuditEvent::DEVICE_ENROLLED,
                    &format!("group {group_id}, manufacturer subject {subject}"),
                )?;
                debug!(device = %new_device_id, group = %group_id, "enrolled device");
            }
            transaction
                .query_row(
                    &format!(
                        "SELECT {DEVICE_COLUMNS} FROM devices WHERE manufacturer_fingerprint = ?1"
                    ),
                    [&fingerprint],
                    device_from_row,
                )?
        })
        .await
    }

    async fn record_certificate(
        &self,
        device_id: &str,
        certificate: IssuedCertificate,
        now: i64,
    ) -> Result<Device> {
        let certificate = checked_certificate(device_id, certificate)?;
        self.write(move |transaction| {
            let device = existing_device(transaction, &certificate.device_id)?;
            let state = next_state(&device, DeviceState::CredentialsIssued)?;
            let device = set_state(transaction, device, state, now)?;
            // A repeated serial rolls the state change back with it.
            let inserted = transaction.execute(
                &format!(
                    "INSERT INTO certificates ({CERTIFICATE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (serial) DO NOTHING"
                ),
                params![
                    certificate.serial,
                    certificate.device_id,
                    certificate.not_before,
                    certificate.not_after,
                    certificate.revoked,
                    certificate.pem
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::CertificateExists(certificate.serial));
            }
            audit(
                transaction,
                now,
                Some(&device.device_id),
                AuditEvent::CERTIFICATE_RECORDED,
                &format!(
                    "serial {}, valid {}..{}",
                    certificate.serial, certificate.not_before, certificate.not_after
                ),
            )?;
            Ok(device)
        })
        .await
    }

    async fn set_acls(&self, device_id: &str, acls: Vec<AclEntry>, now: i64) -> Result<Device> {
        acls.iter().try_for_each(AclEntry::validate)?;
        let acl_json = acls_to_json(&acls)?;
        let device_id = device_id.to_owned();
        self.write(move |transaction| {
            let device = existing_device(transaction, &device_id)?;
            let state = next_state(&device, DeviceState::AclsIssued)?;
            transaction.execute(
                "INSERT INTO device_acls (device_id, acls) VALUES (?1, ?2) \
                 ON CONFLICT (device_id) DO UPDATE SET acls = excluded.acls",
                params![device_id, acl_json],
            )?;
            let device = set_state(transaction, device, state, now)?;
            audit(
                transaction,
                now,
                Some(&device_id),
                AuditEvent::ACLS_SET,
                &format!("{} entries", acls.len()),
            )?;
            Ok(device)
        })
        .await
    }

    async fn mark_provisioned(&self, device_id: &str, now: i64) -> Result<Device> {
        let device_id = device_id.to_owned();
        self.write(move |transaction| {
            let device = existing_device(transaction, &device_id)?;
            let state = next_state(&device, DeviceState::Provisioned)?;
            let device = set_state(transaction, device, state, now)?;
            audit(
                transaction,
                now,
                Some(&device_id),
                AuditEvent::DEVICE_PROVISIONED,
                "",
            )?;
            Ok(device)
        })
        .await
    }

    async fn revoke_device(&self, device_id: &str, now: i64) -> Result<Device> {
        let device_id = device_id.to_owned();
        self.write(move |transaction| {
            let device = existing_device(transaction, &device_id)?;
            if device.state == DeviceState::Revoked {
                return Ok(device);
            }
            let certificates = transaction.execute(
                "UPDATE certificates SET revoked = 1 WHERE device_id = ?1",
                [&device_id],
            )?;
            transaction.execute(
                "UPDATE devices SET state = ?1, updated_at = ?2, revoked_at = ?2 \
                 WHERE device_id = ?3",
                params![DeviceState::Revoked.as_str(), now, device_id],
            )?;
            audit(
                transaction,
                now,
                Some(&device_id),
                AuditEvent::DEVICE_REVOKED,
                &format!("{certificates} certificate(s) revoked"),
            )?;
            info!(device = %device_id, certificates, "revoked device");
            Ok(Device {
                state: DeviceState::Revoked,
                updated_at: now,
                revoked_at: Some(now),
                ..device
            })
        })
        .await
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        let device_id = device_id.to_owned();
        self.read(move |transaction| find_device(transaction, &device_id))
            .await
    }

    async fn device_by_fingerprint(&self, fingerprint: &str) -> Result<Option<Device>> {
        let fingerprint = normalize_fingerprint(fingerprint)?;
        self.read(move |transaction| {
            transaction
                .query_row(
                    &format!(
                        "SELECT {DEVICE_COLUMNS} FROM devices WHERE manufacturer_fingerprint = ?1"
                    ),
                    [&fingerprint],
                    device_from_row,
                )
                .optional()?
                .transpose()
        })
        .await
    }

    async fn list_devices(&self) -> Result<Vec<Device>> {
        self.read(|transaction| {
            let mut statement = transaction.prepare(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at, device_id"
            ))?;
            let rows = statement.query_map([], device_from_row)?;
            collect(rows)
        })
        .await
    }

    async fn certificates(&self, device_id: &str) -> Result<Vec<IssuedCertificate>> {
        let device_id = device_id.to_owned();
        self.read(move |transaction| {
            existing_device(transaction, &device_id)?;
            let mut statement = transaction.prepare(&format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE device_id = ?1 \
                 ORDER BY not_before, serial"
            ))?;
            let rows = statement.query_map([&device_id], certificate_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>> {
        let serial = normalize_serial(serial)?;
        self.read(move |transaction| {
            Ok(transaction
                .query_row(
                    &format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = ?1"),
                    [&serial],
                    certificate_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn acls(&self, device_id: &str) -> Result<Vec<AclEntry>> {
        let device_id = device_id.to_owned();
        self.read(move |transaction| {
            existing_device(transaction, &device_id)?;
            let acl_json: Option<String> = transaction
                .query_row(
                    "SELECT acls FROM device_acls WHERE device_id = ?1",
                    [&device_id],
                    |row| row.get(0),
                )
                .optional()?;
            acl_json.map_or(Ok(Vec::new()), |json| acls_from_json(&json))
        })
        .await
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEvent>> {
        self.read(move |transaction| {
            let mut statement = transaction.prepare(
                "SELECT id, at, device_id, action, detail FROM audit_events \
                 ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = statement.query_map([i64::from(limit)], |row| {
                Ok(AuditEvent {
                    id: row.get(0)?,
                    at: row.get(1)?,
                    device_id: row.get(2)?,
                    action: row.get(3)?,
                    detail: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

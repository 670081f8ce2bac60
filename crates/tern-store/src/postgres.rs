//! The PostgreSQL backend: one database shared by several service instances.
//!
//! A deadpool connection pool; every operation is one transaction at READ COMMITTED. Writes
//! that check a device first lock its row (`SELECT … FOR UPDATE`), so a concurrent revocation
//! cannot slip between the check and the write; enrollment takes a `FOR KEY SHARE` lock on the
//! group row, so the group cannot be deleted under it. Concurrent enrollments of one
//! fingerprint meet at the unique index: `INSERT … ON CONFLICT DO NOTHING` waits for the first
//! to commit, and the `SELECT` that follows (a new snapshot at READ COMMITTED) sees its row.
//!
//! Migrations run under a transaction-scoped advisory lock, so instances starting together
//! migrate once. Connections are made without TLS (`NoTls`): use a local socket or a trusted
//! network until the store takes a TLS connector.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use tokio_postgres::{NoTls, Row};
use tracing::{debug, info};

use crate::error::{redact_url, Result, StoreError};
use crate::migrations::{self, CREATE_MIGRATIONS_TABLE};
use crate::model::{
    acls_from_json, acls_to_json, checked_certificate, checked_enrollment, next_state,
    normalize_fingerprint, normalize_serial, stored_group, stored_state, validate_group, AclEntry,
    AuditEvent, Device, DeviceState, EnrollmentGroup, IssuedCertificate,
};
use crate::ProvisioningStore;

/// Connections a store opens at most, unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// The advisory lock that serialises migrations across instances ("ternstor" in ASCII).
const MIGRATION_LOCK: i64 = 0x7465_726e_7374_6f72;

/// How long an operation waits for a free pooled connection, and for a new one.
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// JSONB columns are written from text and read back as text, so that the store, not the
// driver, parses them and a bad value is a `StoreError::Corrupt`.
const GROUP_COLUMNS: &str = "id, description, manufacturer_ca_pem, hub_id, hub_endpoint, \
    hub_ca_pem, authorization_code, acl_template::text, certificate_validity_days, created_at";
const DEVICE_COLUMNS: &str = "device_id, group_id, manufacturer_fingerprint, \
    manufacturer_subject, state, created_at, updated_at, revoked_at";
const CERTIFICATE_COLUMNS: &str = "serial, device_id, not_before, not_after, revoked, pem";

/// A store in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Where the database is, password removed.
    location: Arc<str>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PostgresStore {
    /// Connect to the database at `url` (`postgres://user[:password]@host[:port]/database`,
    /// libpq syntax) and apply pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let location = redact_url(url);
        // The parser's own message may quote part of the URL, so it is not passed on.
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|_| StoreError::BadUrl(format!("{location} is not a valid PostgreSQL URL")))?;
        Self::connect(config, &location, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Connect with a ready `config`, opening at most `max_connections` connections, and apply
    /// pending migrations. `location` names the database in logs (it must hold no password).
    pub async fn connect(
        mut config: tokio_postgres::Config,
        location: &str,
        max_connections: usize,
    ) -> Result<Self> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| StoreError::Backend(format!("postgres connection pool: {error}")))?;
        let store = PostgresStore {
            pool,
            location: Arc::from(location),
        };
        store.migrate().await?;
        info!(location = %store.location, "opened PostgreSQL store");
        Ok(store)
    }

    /// Apply pending migrations (see [`crate::migrations`]).
    async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        transaction.batch_execute(CREATE_MIGRATIONS_TABLE).await?;
        let found: i64 = transaction
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
                &[],
            )
            .await?
            .try_get(0)?;
        for migration in migrations::pending(found)? {
            transaction.batch_execute(migration.postgres).await?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) \
                     VALUES ($1, $2, $3)",
                    &[&migration.version, &migration.name, &migrations::unix_now()],
                )
                .await?;
            info!(
                version = migration.version,
                name = migration.name,
                "applied PostgreSQL migration"
            );
        }
        transaction.commit().await?;
        Ok(())
    }
}

async fn audit(
    transaction: &Transaction<'_>,
    at: i64,
    device_id: Option<&str>,
    action: &str,
    detail: &str,
) -> Result<()> {
    let statement = transaction
        .prepare_cached(
            "INSERT INTO audit_events (at, device_id, action, detail) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    transaction
        .execute(&statement, &[&at, &device_id, &action, &detail])
        .await?;
    Ok(())
}

fn group_from_row(row: &Row) -> Result<EnrollmentGroup> {
    let raw = EnrollmentGroup {
        id: row.try_get(0)?,
        description: row.try_get(1)?,
        manufacturer_ca_pem: row.try_get(2)?,
        hub_id: row.try_get(3)?,
        hub_endpoint: row.try_get(4)?,
        hub_ca_pem: row.try_get(5)?,
        authorization_code: row.try_get(6)?,
        acl_template: Vec::new(),
        certificate_validity_days: 0,
        created_at: row.try_get(9)?,
    };
    let acl_json: String = row.try_get(7)?;
    stored_group(raw, &acl_json, row.try_get(8)?)
}

fn device_from_row(row: &Row) -> Result<Device> {
    let device_id: String = row.try_get(0)?;
    let state: String = row.try_get(4)?;
    Ok(Device {
        state: stored_state(&device_id, &state)?,
        device_id,
        group_id: row.try_get(1)?,
        manufacturer_fingerprint: row.try_get(2)?,
        manufacturer_subject: row.try_get(3)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
        revoked_at: row.try_get(7)?,
    })
}

fn certificate_from_row(row: &Row) -> Result<IssuedCertificate> {
    Ok(IssuedCertificate {
        serial: row.try_get(0)?,
        device_id: row.try_get(1)?,
        not_before: row.try_get(2)?,
        not_after: row.try_get(3)?,
        revoked: row.try_get(4)?,
        pem: row.try_get(5)?,
    })
}

/// The device, its row locked until the transaction ends; [`StoreError::NotFound`] if none.
async fn lock_device(transaction: &Transaction<'_>, device_id: &str) -> Result<Device> {
    let statement = transaction
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1 FOR UPDATE"
        ))
        .await?;
    match transaction.query_opt(&statement, &[&device_id]).await? {
        Some(row) => device_from_row(&row),
        None => Err(StoreError::not_found("device", device_id)),
    }
}

async fn device_exists(transaction: &Transaction<'_>, device_id: &str) -> Result<()> {
    let statement = transaction
        .prepare_cached("SELECT 1 FROM devices WHERE device_id = $1")
        .await?;
    match transaction.query_opt(&statement, &[&device_id]).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found("device", device_id)),
    }
}

async fn set_state(
    transaction: &Transaction<'_>,
    device: Device,
    state: DeviceState,
    now: i64,
) -> Result<Device> {
    let statement = transaction
        .prepare_cached("UPDATE devices SET state = $1, updated_at = $2 WHERE device_id = $3")
        .await?;
    transaction
        .execute(&statement, &[&state.as_str(), &now, &device.device_id])
        .await?;
    Ok(Device {
        state,
        updated_at: now,
        ..device
    })
}

impl ProvisioningStore for PostgresStore {
    async fn create_group(&self, group: &EnrollmentGroup) -> Result<()> {
        validate_group(group)?;
        let acl_json = acls_to_json(&group.acl_template)?;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let statement = transaction
            .prepare_cached(
                "INSERT INTO enrollment_groups (id, description, manufacturer_ca_pem, hub_id, \
                 hub_endpoint, hub_ca_pem, authorization_code, acl_template, \
                 certificate_validity_days, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        let inserted = transaction
            .execute(
                &statement,
                &[
                    &group.id,
                    &group.description,
                    &group.manufacturer_ca_pem,
                    &group.hub_id,
                    &group.hub_endpoint,
                    &group.hub_ca_pem,
                    &group.authorization_code,
                    &acl_json,
                    &i64::from(group.certificate_validity_days),
                    &group.created_at,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::GroupExists(group.id.clone()));
        }
        audit(
            &transaction,
            group.created_at,
            None,
            AuditEvent::GROUP_CREATED,
            &format!("group {} for hub {}", group.id, group.hub_id),
        )
        .await?;
        transaction.commit().await?;
        debug!(group = %group.id, "created enrollment group");
        Ok(())
    }

    async fn group(&self, id: &str) -> Result<Option<EnrollmentGroup>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM enrollment_groups WHERE id = $1"
            ))
            .await?;
        client
            .query_opt(&statement, &[&id])
            .await?
            .map(|row| group_from_row(&row))
            .transpose()
    }

    async fn list_groups(&self) -> Result<Vec<EnrollmentGroup>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM enrollment_groups ORDER BY id"
            ))
            .await?;
        let rows = client.query(&statement, &[]).await?;
        rows.iter().map(group_from_row).collect()
    }

    async fn delete_group(&self, id: &str, now: i64) -> Result<()> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        // FOR UPDATE waits for enrollments holding the group (FOR KEY SHARE) to finish, so the
        // count below includes their devices.
        let locked = transaction
            .query_opt(
                "SELECT 1 FROM enrollment_groups WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        if locked.is_none() {
            return Err(StoreError::not_found("enrollment group", id));
        }
        let devices: i64 = transaction
            .query_one("SELECT COUNT(*) FROM devices WHERE group_id = $1", &[&id])
            .await?
            .try_get(0)?;
        if devices > 0 {
            return Err(StoreError::GroupInUse {
                id: id.to_owned(),
                devices,
            });
        }
        transaction
            .execute("DELETE FROM enrollment_groups WHERE id = $1", &[&id])
            .await?;
        audit(
            &transaction,
            now,
            None,
            AuditEvent::GROUP_DELETED,
            &format!("group {id}"),
        )
        .await?;
        transaction.commit().await?;
        Ok(())
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
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let group = transaction
            .prepare_cached("SELECT 1 FROM enrollment_groups WHERE id = $1 FOR KEY SHARE")
            .await?;
        if transaction.query_opt(&group, &[&group_id]).await?.is_none() {
            return Err(StoreError::not_found("enrollment group", group_id));
        }
        // The fingerprint decides: a device seen before keeps its row and its id.
        let insert = transaction
            .prepare_cached(&format!(
                "INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6, NULL) \
                 ON CONFLICT (manufacturer_fingerprint) DO NOTHING"
            ))
            .await?;
        let inserted = transaction
            .execute(
                &insert,
                &[
                    &new_device_id,
                    &group_id,
                    &fingerprint,
                    &subject,
                    &DeviceState::Enrolled.as_str(),
                    &now,
                ],
            )
            .await?;
        if inserted == 1 {
            audit(
                &transaction,
                now,
                Some(new_device_id),
                AuditEvent::DEVICE_ENROLLED,
                &format!("group {group_id}, manufacturer subject {subject}"),
            )
            .await?;
            debug!(device = %new_device_id, group = %group_id, "enrolled device");
        }
        let select = transaction
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE manufacturer_fingerprint = $1"
            ))
            .await?;
        let device = device_from_row(&transaction.query_one(&select, &[&fingerprint]).await?)?;
        transaction.commit().await?;
        Ok(device)
    }

    async fn record_certificate(
        &self,
        device_id: &str,
        certificate: IssuedCertificate,
        now: i64,
    ) -> Result<Device> {
        let certificate = checked_certificate(device_id, certificate)?;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let device = lock_device(&transaction, device_id).await?;
        let state = next_state(&device, DeviceState::CredentialsIssued)?;
        let device = set_state(&transaction, device, state, now).await?;
        // A repeated serial rolls the state change back with it.
        let insert = transaction
            .prepare_cached(&format!(
                "INSERT INTO certificates ({CERTIFICATE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (serial) DO NOTHING"
            ))
            .await?;
        let inserted = transaction
            .execute(
                &insert,
                &[
                    &certificate.serial,
                    &certificate.device_id,
                    &certificate.not_before,
                    &certificate.not_after,
                    &certificate.revoked,
                    &certificate.pem,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::CertificateExists(certificate.serial));
        }
        audit(
            &transaction,
            now,
            Some(device_id),
            AuditEvent::CERTIFICATE_RECORDED,
            &format!(
                "serial {}, valid {}..{}",
                certificate.serial, certificate.not_before, certificate.not_after
            ),
        )
        .await?;
        transaction.commit().await?;
        Ok(device)
    }

    async fn set_acls(&self, device_id: &str, acls: Vec<AclEntry>, now: i64) -> Result<Device> {
        acls.iter().try_for_each(AclEntry::validate)?;
        let acl_json = acls_to_json(&acls)?;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let device = lock_device(&transaction, device_id).await?;
        let state = next_state(&device, DeviceState::AclsIssued)?;
        let upsert = transaction
            .prepare_cached(
                "INSERT INTO device_acls (device_id, acls) VALUES ($1, $2::text::jsonb) \
                 ON CONFLICT (device_id) DO UPDATE SET acls = excluded.acls",
            )
            .await?;
        transaction
            .execute(&upsert, &[&device_id, &acl_json])
            .await?;
        let device = set_state(&transaction, device, state, now).await?;
        audit(
            &transaction,
            now,
            Some(device_id),
            AuditEvent::ACLS_SET,
            &format!("{} entries", acls.len()),
        )
        .await?;
        transaction.commit().await?;
        Ok(device)
    }

    async fn mark_provisioned(&self, device_id: &str, now: i64) -> Result<Device> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let device = lock_device(&transaction, device_id).await?;
        let state = next_state(&device, DeviceState::Provisioned)?;
        let device = set_state(&transaction, device, state, now).await?;
        audit(
            &transaction,
            now,
            Some(device_id),
            AuditEvent::DEVICE_PROVISIONED,
            "",
        )
        .await?;
        transaction.commit().await?;
        Ok(device)
    }

    async fn revoke_device(&self, device_id: &str, now: i64) -> Result<Device> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let device = lock_device(&transaction, device_id).await?;
        if device.state == DeviceState::Revoked {
            return Ok(device);
        }
        let certificates = transaction
            .execute(
                "UPDATE certificates SET revoked = TRUE WHERE device_id = $1",
                &[&device_id],
            )
            .await?;
        transaction
            .execute(
                "UPDATE devices SET state = $1, updated_at = $2, revoked_at = $2 \
                 WHERE device_id = $3",
                &[&DeviceState::Revoked.as_str(), &now, &device_id],
            )
            .await?;
        audit(
            &transaction,
            now,
            Some(device_id),
            AuditEvent::DEVICE_REVOKED,
            &format!("{certificates} certificate(s) revoked"),
        )
        .await?;
        transaction.commit().await?;
        info!(device = %device_id, certificates, "revoked device");
        Ok(Device {
            state: DeviceState::Revoked,
            updated_at: now,
            revoked_at: Some(now),
            ..device
        })
    }

    async fn device(&self, device_id: &str) -> Result<Option<Device>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = $1"
            ))
            .await?;
        client
            .query_opt(&statement, &[&device_id])
            .await?
            .map(|row| device_from_row(&row))
            .transpose()
    }

    async fn device_by_fingerprint(&self, fingerprint: &str) -> Result<Option<Device>> {
        let fingerprint = normalize_fingerprint(fingerprint)?;
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE manufacturer_fingerprint = $1"
            ))
            .await?;
        client
            .query_opt(&statement, &[&fingerprint])
            .await?
            .map(|row| device_from_row(&row))
            .transpose()
    }

    async fn list_devices(&self) -> Result<Vec<Device>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at, device_id"
            ))
            .await?;
        let rows = client.query(&statement, &[]).await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn certificates(&self, device_id: &str) -> Result<Vec<IssuedCertificate>> {
        let mut client = self.pool.get().await?;
        // One snapshot for the existence check and the list.
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        device_exists(&transaction, device_id).await?;
        let statement = transaction
            .prepare_cached(&format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE device_id = $1 \
                 ORDER BY not_before, serial"
            ))
            .await?;
        let rows = transaction.query(&statement, &[&device_id]).await?;
        let certificates = rows.iter().map(certificate_from_row).collect();
        transaction.commit().await?;
        certificates
    }

    async fn certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>> {
        let serial = normalize_serial(serial)?;
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = $1"
            ))
            .await?;
        client
            .query_opt(&statement, &[&serial])
            .await?
            .map(|row| certificate_from_row(&row))
            .transpose()
    }

    async fn acls(&self, device_id: &str) -> Result<Vec<AclEntry>> {
        let mut client = self.pool.get().await?;
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        device_exists(&transaction, device_id).await?;
        let statement = transaction
            .prepare_cached("SELECT acls::text FROM device_acls WHERE device_id = $1")
            .await?;
        let acl_json: Option<String> = transaction
            .query_opt(&statement, &[&device_id])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        transaction.commit().await?;
        acl_json.map_or(Ok(Vec::new()), |json| acls_from_json(&json))
    }

    async fn audit(&self, limit: u32) -> Result<Vec<AuditEvent>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, at, device_id, action, detail FROM audit_events \
                 ORDER BY id DESC LIMIT $1",
            )
            .await?;
        let rows = client.query(&statement, &[&i64::from(limit)]).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get(0)?,
                    at: row.try_get(1)?,
                    device_id: row.try_get(2)?,
                    action: row.try_get(3)?,
                    detail: row.try_get(4)?,
                })
            })
            .collect()
    }
}

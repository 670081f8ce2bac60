//! Schema migrations: the ordered list, and the rule for which of them a database still needs.
//!
//! Each backend keeps a `schema_migrations` table (one row per applied version) and applies
//! the pending migrations in order inside one transaction, so a database is always at a
//! version from this list and never between two. Opening again finds nothing pending and
//! changes nothing. A database whose highest version is beyond this list was written by a
//! newer Tern; it is refused rather than guessed at.
//!
//! Migrations are append-only: a released migration is never edited, only followed by a new
//! one.

use crate::error::{Result, StoreError};

/// One step of the schema, in the dialect of each backend.
#[derive(Debug)]
pub(crate) struct Migration {
    /// The schema version this step produces; versions are 1, 2, 3, ... in order.
    pub version: i64,
    /// A short name for logs and the migrations table.
    pub name: &'static str,
    /// The step for SQLite (several statements, run as a batch).
    pub sqlite: &'static str,
    /// The step for PostgreSQL (several statements, run as a batch).
    pub postgres: &'static str,
}

/// Every migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "provisioning",
    // STRICT tables make SQLite refuse values of the wrong type instead of storing them.
    sqlite: r#"
        CREATE TABLE enrollment_groups (
            id TEXT PRIMARY KEY NOT NULL,
            description TEXT NOT NULL,
            manufacturer_ca_pem TEXT NOT NULL,
            hub_id TEXT NOT NULL,
            hub_endpoint TEXT NOT NULL,
            hub_ca_pem TEXT NOT NULL,
            authorization_code TEXT NOT NULL,
            acl_template TEXT NOT NULL,
            certificate_validity_days INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE devices (
            device_id TEXT PRIMARY KEY NOT NULL,
            group_id TEXT NOT NULL REFERENCES enrollment_groups(id),
            manufacturer_fingerprint TEXT NOT NULL UNIQUE,
            manufacturer_subject TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            revoked_at INTEGER
        ) STRICT;
        CREATE INDEX devices_group ON devices(group_id);
        CREATE TABLE certificates (
            serial TEXT PRIMARY KEY NOT NULL,
            device_id TEXT NOT NULL REFERENCES devices(device_id),
            not_before INTEGER NOT NULL,
            not_after INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
            pem TEXT NOT NULL
        ) STRICT;
        CREATE INDEX certificates_device ON certificates(device_id);
        CREATE TABLE device_acls (
            device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices(device_id),
            acls TEXT NOT NULL
        ) STRICT;
        CREATE TABLE audit_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            device_id TEXT,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        ) STRICT;
    "#,
    postgres: r#"
        CREATE TABLE enrollment_groups (
            id TEXT PRIMARY KEY,
            description TEXT NOT NULL,
            manufacturer_ca_pem TEXT NOT NULL,
            hub_id TEXT NOT NULL,
            hub_endpoint TEXT NOT NULL,
            hub_ca_pem TEXT NOT NULL,
            authorization_code TEXT NOT NULL,
            acl_template JSONB NOT NULL,
            certificate_validity_days BIGINT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            group_id TEXT NOT NULL REFERENCES enrollment_groups(id),
            manufacturer_fingerprint TEXT NOT NULL UNIQUE,
            manufacturer_subject TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            revoked_at BIGINT
        );
        CREATE INDEX devices_group ON devices(group_id);
        CREATE TABLE certificates (
            serial TEXT PRIMARY KEY,
            device_id TEXT NOT NULL REFERENCES devices(device_id),
            not_before BIGINT NOT NULL,
            not_after BIGINT NOT NULL,
            revoked BOOLEAN NOT NULL DEFAULT FALSE,
            pem TEXT NOT NULL
        );
        CREATE INDEX certificates_device ON certificates(device_id);
        CREATE TABLE device_acls (
            device_id TEXT PRIMARY KEY REFERENCES devices(device_id),
            acls JSONB NOT NULL
        );
        CREATE TABLE audit_events (
            id BIGSERIAL PRIMARY KEY,
            at BIGINT NOT NULL,
            device_id TEXT,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        );
    "#,
}];

/// The highest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The table that records applied migrations, in a form both backends accept.
pub(crate) const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
        version BIGINT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        applied_at BIGINT NOT NULL
    )";

/// The migrations a database at version `found` (0 for a new one) still needs, in order;
/// [`StoreError::SchemaTooNew`] if it is beyond what this build knows.
pub(crate) fn pending(found: i64) -> Result<&'static [Migration]> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    // Versions are 1..=SCHEMA_VERSION at indices 0.., so the pending ones start at `found`.
    let start = usize::try_from(found.max(0))
        .map_err(|_| StoreError::Corrupt(format!("schema version {found} out of range")))?;
    Ok(MIGRATIONS.get(start..).unwrap_or(&[]))
}

/// Seconds since the Unix epoch, for the migrations table only (operations take `now` from
/// the caller).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
        }
    }

    #[test]
    fn pending_depends_on_found_version() {
        assert_eq!(pending(0).map(<[_]>::len).ok(), Some(MIGRATIONS.len()));
        assert_eq!(pending(SCHEMA_VERSION).map(<[_]>::len).ok(), Some(0));
        assert!(matches!(
            pending(SCHEMA_VERSION + 1),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}

//! The one error type of the store.
//!
//! Every variant names the problem a caller can act on. Backend failures keep the database's
//! own text (it is what an operator needs), but never a connection URL or a password: the
//! store only ever reports URLs through [`redact_url`].

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named object does not exist.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// What kind of object was looked up ("device", "enrollment group", ...).
        what: &'static str,
        /// The identifier that was not found.
        id: String,
    },
    /// An enrollment group with this id already exists.
    #[error("enrollment group {0:?} already exists")]
    GroupExists(String),
    /// The enrollment group still has devices and cannot be deleted.
    #[error("enrollment group {id:?} still has {devices} device(s); revoke and remove them first")]
    GroupInUse {
        /// The group that was to be deleted.
        id: String,
        /// How many devices reference it.
        devices: i64,
    },
    /// A certificate with this serial number was already recorded (serials must never repeat:
    /// revocation is checked by serial).
    #[error("a certificate with serial {0} was already recorded")]
    CertificateExists(String),
    /// The device is revoked; nothing more may be issued to it.
    #[error("device {0} is revoked")]
    Revoked(String),
    /// The database was written by a newer version of Tern; this code must not touch it.
    #[error(
        "database schema version {found} is newer than this build knows ({known}); \
         upgrade Tern before using this database"
    )]
    SchemaTooNew {
        /// The highest schema version recorded in the database.
        found: i64,
        /// The highest schema version this build knows.
        known: i64,
    },
    /// The store location could not be understood.
    #[error("bad store URL: {0}")]
    BadUrl(String),
    /// An argument was refused before touching the database.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The database (SQLite or PostgreSQL) reported an error.
    #[error("database error: {0}")]
    Backend(String),
    /// A stored value could not be parsed back (hand-edited or damaged database).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// A [`StoreError::NotFound`] for `what` with `id`.
    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            what,
            id: id.into(),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Backend(format!("sqlite: {error}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        // tokio-postgres prints only "db error" for server errors; the server's message and
        // SQLSTATE are what make the error useful.
        if let Some(db) = error.as_db_error() {
            return StoreError::Backend(format!(
                "postgres: {} (SQLSTATE {})",
                db.message(),
                db.code().code()
            ));
        }
        StoreError::Backend(format!("postgres: {}", error_chain(&error)))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => error.into(),
            other => StoreError::Backend(format!("postgres connection pool: {other}")),
        }
    }
}

/// `error` and its sources, joined by ": ".
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `url` with any password replaced by `***`, fit for logs and error messages.
///
/// Covers the password in the authority (`postgres://user:secret@host/db`) and a `password=`
/// query parameter (`postgres://host/db?password=secret`).
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            // The last '@' ends the user information: a password may itself contain '@'.
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&redacted.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_in_authority_and_query() {
        assert_eq!(
            redact_url("postgres://tern:s3cr@t@db.example:5432/tern"),
            "postgres://tern:***@db.example:5432/tern"
        );
        assert_eq!(
            redact_url("postgresql://db.example/tern?user=a&password=hunter2&sslmode=disable"),
            "postgresql://db.example/tern?user=a&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://tern@127.0.0.1:5432/postgres"),
            "postgres://tern@127.0.0.1:5432/postgres"
        );
        assert_eq!(redact_url("/var/lib/tern.db"), "/var/lib/tern.db");
    }
}

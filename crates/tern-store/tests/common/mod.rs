//! Shared helpers for the store's integration tests: a [`Location`] (a database a test may
//! open, reopen and poke at with raw SQL) on either backend, a real PostgreSQL server started
//! by the tests themselves, and the macro that runs the behavioural suite ([`suite`]) against a
//! backend.
//!
//! The PostgreSQL server is one per test process, started on first use. It is stopped and its
//! directory removed by a small watcher shell that waits for the test process to close the
//! watcher's stdin, which happens however the process ends (normal exit, panic, abort or
//! SIGKILL): a `static` is never dropped, so a `Drop` alone would leak the server.
#![allow(dead_code)]

mod pg_server;
pub mod suite;

pub use pg_server::{raw_postgres, PgServer};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern_store::{Store, StoreError};

/// Runs each named case of [`suite`] as its own test, against the [`Location`] that the
/// expression `$location` (an `Option<Location>` future; `None` = skip) produces.
#[macro_export]
macro_rules! behaviour_suite {
    ($location:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(location) = $location.await else {
                    return;
                };
                common::suite::$case(&location).await;
            }
        )*
    };
}

/// A database the tests may open (several times), and reach with raw SQL behind the store's
/// back (to plant corrupt values or a future schema version).
pub struct Location {
    /// What [`tern_store::open`] takes.
    pub url: String,
    raw: Raw,
}

enum Raw {
    Sqlite {
        path: PathBuf,
        dir: Arc<tempfile::TempDir>,
    },
    Postgres {
        server: &'static PgServer,
    },
}

impl Location {
    /// A SQLite database file (not yet created) in a new temporary directory.
    pub fn sqlite() -> Location {
        let dir = Arc::new(tempfile::tempdir().expect("create a temporary directory"));
        Self::sqlite_in(dir, "store.db")
    }

    fn sqlite_in(dir: Arc<tempfile::TempDir>, name: &str) -> Location {
        let path = dir.path().join(name);
        Location {
            url: format!("sqlite://{}", path.display()),
            raw: Raw::Sqlite { path, dir },
        }
    }

    /// A new empty database on the shared PostgreSQL server, or `None` (after saying so) when
    /// no server binaries are installed.
    pub async fn postgres() -> Option<Location> {
        let server = PgServer::shared()?;
        Some(Location {
            url: server.create_database().await,
            raw: Raw::Postgres { server },
        })
    }

    /// The path of the SQLite file, for SQLite locations.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.raw {
            Raw::Sqlite { path, .. } => Some(path),
            Raw::Postgres { .. } => None,
        }
    }

    /// Open the store here (applying migrations).
    pub async fn open(&self) -> Result<Store, StoreError> {
        tern_store::open(&self.url).await
    }

    /// Open the store, which must succeed.
    pub async fn store(&self) -> Store {
        match self.open().await {
            Ok(store) => store,
            Err(error) => panic!("open {}: {error}", self.url),
        }
    }

    /// Another new, empty database on the same backend.
    pub async fn sibling(&self) -> Location {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        match &self.raw {
            Raw::Sqlite { dir, .. } => Self::sqlite_in(
                Arc::clone(dir),
                &format!("sibling-{}.db", NEXT.fetch_add(1, Ordering::Relaxed)),
            ),
            Raw::Postgres { server } => Location {
                url: server.create_database().await,
                raw: Raw::Postgres { server },
            },
        }
    }

    /// Run `sql` (one or more statements) directly against the database.
    pub async fn execute(&self, sql: &str) {
        match &self.raw {
            Raw::Sqlite { path, .. } => {
                let connection = raw_sqlite(path);
                connection
                    .execute_batch(sql)
                    .unwrap_or_else(|error| panic!("raw SQL {sql:?}: {error}"));
            }
            Raw::Postgres { .. } => {
                raw_postgres(&self.url)
                    .await
                    .batch_execute(sql)
                    .await
                    .unwrap_or_else(|error| panic!("raw SQL {sql:?}: {error:?}"));
            }
        }
    }

    /// The single integer `sql` selects.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        match &self.raw {
            Raw::Sqlite { path, .. } => raw_sqlite(path)
                .query_row(sql, [], |row| row.get(0))
                .unwrap_or_else(|error| panic!("raw SQL {sql:?}: {error}")),
            Raw::Postgres { .. } => raw_postgres(&self.url)
                .await
                .query_one(sql, &[])
                .await
                .and_then(|row| row.try_get(0))
                .unwrap_or_else(|error| panic!("raw SQL {sql:?}: {error:?}")),
        }
    }
}

fn raw_sqlite(path: &Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(path).expect("open the SQLite file directly");
    connection
        .busy_timeout(Duration::from_secs(10))
        .expect("set busy timeout");
    connection
}

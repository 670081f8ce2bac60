//! A real PostgreSQL server for tests, one per test process, started on first use and
//! stopped by a watcher shell when the process ends however it ends. Shared by the store's
//! tests and the provisioning service's (which include this file by path).
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the PostgreSQL server gets to accept connections.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// True when the environment says missing peers are a failure, not a skip.
pub fn peers_required() -> bool {
    std::env::var("TERN_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// A raw client connection to `url`, behind the store's back.
pub async fn raw_postgres(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect to {url}: {error:?}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A PostgreSQL server in a temporary directory, listening on 127.0.0.1 with trust
/// authentication for the user `tern`.
pub struct PgServer {
    port: u16,
    base: PathBuf,
    /// The watcher shell: it stops the server and removes `base` when its stdin closes.
    watcher: Child,
}

/// Where the PostgreSQL server binaries are: the directory holding `initdb` and `postgres`.
fn find_server_binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find(|dir| {
            let initdb = dir.join("initdb");
            is_executable(&initdb) && resolved_dir(&initdb).join("postgres").is_file()
        })
    });
    if let Some(dir) = on_path {
        return Some(resolved_dir(&dir.join("initdb")));
    }
    // Debian installs them off PATH, one directory per major version; take the newest.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (is_executable(&bin.join("initdb")) && is_executable(&bin.join("postgres")))
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The directory of `program` after following symlinks (`/usr/local/bin/initdb` is a link
/// into the real bin directory, where `postgres` sits beside it).
fn resolved_dir(program: &Path) -> PathBuf {
    std::fs::canonicalize(program)
        .ok()
        .and_then(|real| real.parent().map(Path::to_owned))
        .unwrap_or_else(|| program.parent().map(Path::to_owned).unwrap_or_default())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("find a free TCP port on 127.0.0.1")
}

/// The `postgres` system user's uid and gid, when we are root (initdb and postgres refuse to
/// run as root); `None` when we are not root and can run them ourselves.
fn server_user() -> Option<(u32, u32)> {
    let id = |flag: &str, user: Option<&str>| -> Option<u32> {
        let output = Command::new("id").arg(flag).args(user).output().ok()?;
        String::from_utf8(output.stdout).ok()?.trim().parse().ok()
    };
    if id("-u", None)? != 0 {
        return None;
    }
    match (id("-u", Some("postgres")), id("-g", Some("postgres"))) {
        (Some(uid), Some(gid)) => Some((uid, gid)),
        _ => panic!(
            "running as root, and there is no `postgres` system user to run the PostgreSQL \
             test server as (initdb refuses root); install the postgresql package or run as \
             another user"
        ),
    }
}

/// `program args…`, run as the server user when we are root.
fn server_command(user: Option<(u32, u32)>, program: &Path) -> Command {
    match user {
        Some(_) => {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Stops the server when stdin closes: `cat` returns at end of input, which comes when the
/// test process closes the pipe, on purpose or by exiting in any way.
const WATCHER_SCRIPT: &str = r#"
base="$1"; postgres="$2"; port="$3"
"$postgres" -D "$base/data" -k "$base/sock" -p "$port" \
    -c listen_addresses=127.0.0.1 -c max_connections=200 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    </dev/null >"$base/postgres.log" 2>&1 &
pid=$!
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$base"
"#;

impl PgServer {
    /// The server of this test process, started on first call; `None` (after printing
    /// "skipped: no PostgreSQL server") when the binaries are missing, or a panic then when
    /// `TERN_REQUIRE_PEERS=1`.
    pub fn shared() -> Option<&'static PgServer> {
        static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();
        let server = SERVER.get_or_init(|| {
            let Some(bin) = find_server_binaries() else {
                assert!(
                    !peers_required(),
                    "no PostgreSQL server binaries (initdb, postgres) on PATH or in \
                     /usr/lib/postgresql/*/bin, and TERN_REQUIRE_PEERS=1 (apt-get install \
                     postgresql)"
                );
                return None;
            };
            Some(PgServer::start(&bin))
        });
        if server.is_none() {
            eprintln!("skipped: no PostgreSQL server");
        }
        server.as_ref()
    }

    /// initdb a new cluster in a temporary directory and start a server on it.
    pub fn start(bin: &Path) -> PgServer {
        let user = server_user();
        let base = tempfile::Builder::new()
            .prefix("tern-store-pg-")
            .tempdir()
            .expect("create a temporary directory for PostgreSQL")
            .keep();
        std::fs::create_dir(base.join("sock")).expect("create the socket directory");
        if let Some((uid, gid)) = user {
            for path in [base.clone(), base.join("sock")] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap_or_else(|error| {
                    panic!("chown {} to postgres: {error}", path.display())
                });
            }
        }

        let initdb = server_command(user, &bin.join("initdb"))
            .arg("-D")
            .arg(base.join("data"))
            .args(["-A", "trust", "-U", "tern", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        if !initdb.status.success() {
            let _ = std::fs::remove_dir_all(&base);
            panic!(
                "initdb failed ({}):\n{}{}",
                initdb.status,
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            );
        }

        let port = free_port();
        let watcher = server_command(user, Path::new("/bin/sh"))
            .args(["-c", WATCHER_SCRIPT, "sh"])
            .arg(&base)
            .arg(bin.join("postgres"))
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the PostgreSQL server");
        let mut server = PgServer {
            port,
            base,
            watcher,
        };
        server.wait_until_ready();
        server
    }

    /// Wait (bounded) until the server says it is ready and its port accepts connections.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + SERVER_READY_TIMEOUT;
        let log = self.base.join("postgres.log");
        loop {
            let ready = std::fs::read_to_string(&log)
                .is_ok_and(|text| text.contains("ready to accept connections"));
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = self.watcher.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "PostgreSQL did not become ready on port {} within {:?} (watcher: {:?}):\n{text}",
                    self.port, SERVER_READY_TIMEOUT, exited
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://tern@127.0.0.1:{}/{name}", self.port)
    }

    /// Create a new, empty database and return its URL.
    pub async fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("tern_test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        raw_postgres(&self.url("postgres"))
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|error| panic!("CREATE DATABASE {name}: {error:?}"));
        self.url(&name)
    }
}

impl Drop for PgServer {
    /// Stop the server and remove its directory (the shared server is stopped by its watcher
    /// instead, when the process exits).
    fn drop(&mut self) {
        // Closing stdin tells the watcher to stop the server and clean up.
        if let Some(mut stdin) = self.watcher.stdin.take() {
            let _ = stdin.flush();
        }
        let deadline = Instant::now() + SERVER_READY_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.watcher.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.watcher.kill();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

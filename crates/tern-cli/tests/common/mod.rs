//! Shared helpers for the interop tests: free ports, child processes that are
//! killed when dropped, bounded waits, and locating the peer implementations
//! (libcoap's `coap-client-notls` / `coap-server-notls`, aiocoap's
//! `aiocoap-client`).
//!
//! Every wait here is bounded; every child is killed at the latest when its
//! guard is dropped.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Hard limit for any one client process (a hung peer must not hang the suite).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server gets to become ready.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Path of the `tern` binary built by cargo for these tests.
pub fn tern_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tern"))
}

// ---------------------------------------------------------------------------
// Peers

/// True when the environment says missing peers are a failure, not a skip.
pub fn peers_required() -> bool {
    std::env::var("TERN_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Find an executable by name on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Where a peer is, if installed. `aiocoap-client` is looked up in
/// `TERN_AIOCOAP_CLIENT` first, then on `PATH`; everything else on `PATH`.
pub fn locate_peer(name: &str) -> Option<PathBuf> {
    if name == "aiocoap-client" {
        if let Some(p) = std::env::var_os("TERN_AIOCOAP_CLIENT") {
            let p = PathBuf::from(p);
            if is_executable(&p) {
                return Some(p);
            }
        }
    }
    find_in_path(name)
}

/// The peer's path, or `None` after printing "skipping: NAME not installed".
/// Panics instead of skipping when `TERN_REQUIRE_PEERS=1`.
#[track_caller]
pub fn require_peer(name: &str) -> Option<PathBuf> {
    match locate_peer(name) {
        Some(p) => Some(p),
        None if peers_required() => panic!(
            "{name} not installed, and TERN_REQUIRE_PEERS=1 (run scripts/install-peers.sh; \
             for aiocoap-client set TERN_AIOCOAP_CLIENT)"
        ),
        None => {
            eprintln!("skipping: {name} not installed");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Ports and random data

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A UDP port on 127.0.0.1 that is free right now (also free for TCP, since
/// libcoap's server listens on both), never handed out twice in this process.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP 127.0.0.1:0");
        let port = udp.local_addr().expect("local_addr").port();
        let tcp_ok = TcpListener::bind(("127.0.0.1", port)).is_ok();
        drop(udp);
        if tcp_ok && handed_out().lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("no free UDP/TCP port found on 127.0.0.1 after 100 tries");
}

/// A random alphanumeric string (no external crates: seeded by `RandomState`).
pub fn random_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::with_capacity(len);
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let mut state = h.finish() | 1;
    for _ in 0..len {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push(ALPHABET[(state % ALPHABET.len() as u64) as usize] as char);
    }
    out
}

// ---------------------------------------------------------------------------
// Output capture

/// Text collected from a child's pipe by a background thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<String>>);

impl Captured {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().contains(needle)
    }
}

fn drain<R: Read + Send + 'static>(pipe: R, into: Captured) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => into
                    .0
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&line)),
            }
        }
        let _ = tx.send(());
    });
    rx
}

// ---------------------------------------------------------------------------
// Long-running processes (servers)

/// A child process that is killed (and reaped) when dropped.
pub struct ChildGuard {
    pub name: String,
    child: Child,
    pub stdout: Captured,
    pub stderr: Captured,
}

impl ChildGuard {
    /// Spawn `cmd` with stdin closed and stdout/stderr captured.
    pub fn spawn(name: &str, mut cmd: Command) -> ChildGuard {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let stdout = Captured::default();
        let stderr = Captured::default();
        drain(child.stdout.take().unwrap(), stdout.clone());
        drain(child.stderr.take().unwrap(), stderr.clone());
        ChildGuard {
            name: name.to_string(),
            child,
            stdout,
            stderr,
        }
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process printed so far, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.stdout.text(),
            self.name,
            self.stderr.text()
        )
    }

    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        // bounded reap: SIGKILL cannot be ignored, but don't trust that blindly
        for _ in 0..200 {
            if self.exited().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send a CoAP ping (empty CON) and wait `wait` for any datagram back
/// (a conforming server answers with RST).
pub fn coap_ping(addr: SocketAddr, wait: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    if sock.set_read_timeout(Some(wait)).is_err() || sock.connect(addr).is_err() {
        return false;
    }
    let mid = (std::process::id() as u16) ^ 0x5a5a;
    let ping = [0x40, 0x00, (mid >> 8) as u8, mid as u8];
    if sock.send(&ping).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    matches!(sock.recv(&mut buf), Ok(n) if n >= 4)
}

/// Wait (bounded) until the server answers, either by printing `ready_line`
/// on stderr (if given) or by answering a CoAP ping. Panics with the
/// server's output if it exits or never becomes ready.
#[track_caller]
pub fn wait_ready(server: &mut ChildGuard, addr: SocketAddr, ready_line: Option<&str>) {
    let deadline = Instant::now() + SERVER_READY_TIMEOUT;
    let mut tries = 0u32;
    while Instant::now() < deadline && tries < 200 {
        tries += 1;
        if let Some(status) = server.exited() {
            panic!(
                "{} exited ({status}) before becoming ready on {addr}\n{}",
                server.name,
                server.output()
            );
        }
        if let Some(line) = ready_line {
            if server.stderr.contains(line) {
                return;
            }
        }
        if coap_ping(addr, Duration::from_millis(100)) {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "{} did not become ready on {addr} within {:?} ({tries} tries)\n{}",
        server.name,
        SERVER_READY_TIMEOUT,
        server.output()
    );
}

/// `coap-server-notls -A 127.0.0.1 -p PORT`, ready to answer.
#[track_caller]
pub fn start_libcoap_server(bin: &Path) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(bin);
    cmd.args(["-A", "127.0.0.1", "-p", &port.to_string()]);
    let mut server = ChildGuard::spawn("coap-server-notls", cmd);
    wait_ready(&mut server, addr, None);
    (server, addr)
}

/// `coap-server-openssl` on 127.0.0.1 with extra arguments (credentials), ready to answer;
/// returns the guard and its secure address, the plain port + 1, where it listens for DTLS and
/// TLS.
#[allow(dead_code)]
pub fn start_libcoap_secure_server(bin: &Path, extra: &[&str]) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let plain: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(bin);
    cmd.args(["-A", "127.0.0.1", "-p", &port.to_string()]);
    cmd.args(extra);
    let mut server = ChildGuard::spawn("coap-server-openssl", cmd);
    wait_ready(&mut server, plain, None);
    (server, ([127, 0, 0, 1], port + 1).into())
}

/// `tern serve --bind 127.0.0.1:PORT`, ready to answer.
#[track_caller]
pub fn start_tern_server() -> (ChildGuard, SocketAddr) {
    start_tern_server_with(&[])
}

/// Starts `tern serve` with extra arguments (limits, for instance).
#[allow(dead_code)]
pub fn start_tern_server_with(extra: &[&str]) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(tern_bin());
    cmd.args(["serve", "--bind", &addr.to_string()]);
    cmd.args(extra);
    let mut server = ChildGuard::spawn("tern serve", cmd);
    wait_ready(&mut server, addr, Some("listening on"));
    (server, addr)
}

// ---------------------------------------------------------------------------
// Short-lived processes (clients)

/// Result of a client run.
pub struct RunOutput {
    pub cmdline: String,
    /// `None` when the process was killed for exceeding its time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }
    /// Everything it printed, stdout then stderr.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\nelapsed: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            match self.status {
                Some(s) => s.to_string(),
                None => "KILLED after time limit".to_string(),
            },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Run `program args...` with stdin closed; kill it if it runs past `limit`.
pub fn run_with_timeout<I, S>(program: &Path, args: I, limit: Duration) -> RunOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_command_with_timeout(cmd, limit)
}

/// Run a prepared command (arguments, environment) with stdin closed; kill it if it runs past
/// `limit`.
pub fn run_command_with_timeout(mut cmd: Command, limit: Duration) -> RunOutput {
    let cmdline = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
    let out = Captured::default();
    let err = Captured::default();
    let out_done = drain(child.stdout.take().unwrap(), out.clone());
    let err_done = drain(child.stderr.take().unwrap(), err.clone());

    let deadline = start + limit;
    let mut status = None;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(s)) => {
                status = Some(s);
                break;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {cmdline}: {e}"),
        }
    }
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
    }
    // Always reap (returns the cached status if `try_wait` already saw it).
    let waited = child.wait();
    let status = if timed_out { None } else { waited.ok() };
    let elapsed = start.elapsed();
    // The pipes close when the process is gone (unless it left children
    // holding them): bounded wait for the readers.
    let _ = out_done.recv_timeout(Duration::from_secs(2));
    let _ = err_done.recv_timeout(Duration::from_secs(2));
    RunOutput {
        cmdline,
        status,
        stdout: out.text(),
        stderr: err.text(),
        elapsed,
    }
}

/// Run the `tern` client: `tern ARGS...` with the default time limit.
pub fn tern<I, S>(args: I) -> RunOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_timeout(&tern_bin(), args, CLIENT_TIMEOUT)
}

/// True when some line of `text` starts with a CoAP error code (`4.xx` / `5.xx`),
/// as libcoap's client prints them (`4.04 Not Found`).
pub fn has_error_code_line(text: &str) -> bool {
    text.lines().any(|l| {
        let b = l.trim_start().as_bytes();
        b.len() >= 4
            && (b[0] == b'4' || b[0] == b'5')
            && b[1] == b'.'
            && b[2].is_ascii_digit()
            && b[3].is_ascii_digit()
    })
}

// ---------------------------------------------------------------------------
// Observe (RFC 7641)

/// The distinct `/time` values of `tern serve` (`YYYY-MM-DDTHH:MM:SSZ`) in `text`, in order,
/// whether or not they are separated (libcoap's client prints payloads back to back).
pub fn tern_times(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for piece in text.split_inclusive('Z') {
        let t = piece.trim();
        let looks_right = t.len() >= 20 && {
            let tail = &t[t.len() - 20..];
            tail.as_bytes()[4] == b'-' && tail.as_bytes()[10] == b'T' && tail.ends_with('Z')
        };
        if looks_right {
            let tail = t[t.len() - 20..].to_string();
            if !seen.contains(&tail) {
                seen.push(tail);
            }
        }
    }
    seen
}

/// `coap-client -s 5` on `tern serve`'s `/time`: it did not hang, printed no error code, and
/// printed the first response and at least three notifications (distinct times).
#[allow(dead_code)]
#[track_caller]
pub fn assert_libcoap_observed_tern_times(out: &RunOutput, server: &ChildGuard) {
    assert!(!out.timed_out(), "coap-client hung\n{}", out.describe());
    let times = tern_times(&out.stdout);
    assert!(
        times.len() >= 4,
        "expected the first response and at least 3 notifications, got {times:?}\n{}\n{}",
        out.describe(),
        server.output()
    );
    assert!(
        !has_error_code_line(&out.all_output()),
        "\n{}",
        out.describe()
    );
}

/// `tern get -s 5` on libcoap's `/time`: it succeeded, printed the first response and at
/// least three notifications (distinct lines), and observed for the whole time.
#[allow(dead_code)]
#[track_caller]
pub fn assert_tern_observed_libcoap_time(out: &RunOutput) {
    assert!(out.success(), "tern get -s failed\n{}", out.describe());
    let mut lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines.dedup();
    assert!(
        lines.len() >= 4,
        "expected the first response and at least 3 notifications\n{}",
        out.describe()
    );
    assert!(
        out.elapsed >= Duration::from_secs(4),
        "tern get -s 5 ended early\n{}",
        out.describe()
    );
}

/// A fresh empty directory under the system's temp dir, named for this process and `what`.
#[allow(dead_code)]
pub fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Test certificates made once per test process by scripts/make-test-certs.sh (a CA, a server
/// certificate for localhost/127.0.0.1, a client certificate, another CA, ...).
#[allow(dead_code)]
pub fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-cli-certs-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-test-certs.sh");
        let ok = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "make-test-certs.sh failed");
        dir
    })
}

/// The path of one of [`certs`]' files, as a string for command lines.
#[allow(dead_code)]
pub fn cert(name: &str) -> String {
    certs().join(name).display().to_string()
}

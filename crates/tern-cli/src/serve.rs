//! `tern serve`: the demo server — `/`, `/.well-known/core`, `/time`, `/echo` and an in-memory
//! store under `/store/…`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use tern::proto::uri::Scheme;
use tern::proto::EndpointConfig;
use tern::tls::credentials::parse_key;
use tern::tls::{DtlsSettings, PskMap};
use tern::{Code, ContentFormat, Context, Request, Resource, Response, Router};
use tern::{PeerIdentity, Psk};

use crate::files::FileStore;

/// Arguments of `tern serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// UDP address to listen on (repeatable). Default: 0.0.0.0:5683 and [::]:5683.
    #[arg(long = "bind", short = 'b')]
    bind: Vec<SocketAddr>,
    /// Largest value accepted by PUT under /store/ (bytes).
    #[arg(long, default_value_t = 64 * 1024)]
    store_max_value: usize,
    /// Most entries held under /store/.
    #[arg(long, default_value_t = 1024)]
    store_max_entries: usize,
    /// Deduplication entries kept per client.
    #[arg(long, default_value_t = EndpointConfig::default().dedup_per_peer)]
    dedup_per_peer: usize,
    /// Deduplication entries kept in all.
    #[arg(long, default_value_t = EndpointConfig::default().dedup_total)]
    dedup_total: usize,
    /// Clients tracked at once.
    #[arg(long, default_value_t = EndpointConfig::default().max_peers)]
    max_peers: usize,
    /// Requests being handled at once; more are answered 5.03.
    #[arg(long, default_value_t = EndpointConfig::default().max_pending_incoming)]
    max_pending: usize,
    /// Every this many seconds, print what the server holds against its caps (peers,
    /// requests, deduplication, DTLS sessions and handshakes, observers, block-wise state,
    /// stream connections and buffers) to stderr. 0: never.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    usage_interval: u64,
    /// Milliseconds a handler may take before a CON request gets an empty ACK.
    #[arg(long, default_value_t = 1000)]
    separate_delay_ms: u64,
    /// TCP (coap+tcp://) address to listen on (repeatable). Default: the UDP addresses, as
    /// libcoap's server listens on both.
    #[arg(long = "tcp-bind")]
    tcp_bind: Vec<SocketAddr>,
    /// Do not listen on TCP.
    #[arg(long, conflicts_with = "tcp_bind")]
    no_tcp: bool,
    /// DTLS (coaps://) address to listen on (repeatable). Default with a PSK: 0.0.0.0:5684 and
    /// [::]:5684.
    #[arg(long = "dtls-bind")]
    dtls_bind: Vec<SocketAddr>,
    /// TLS (coaps+tcp://) address to listen on (repeatable). Default with credentials: the
    /// DTLS addresses.
    #[arg(long = "tls-bind")]
    tls_bind: Vec<SocketAddr>,
    /// Do not listen on TLS.
    #[arg(long, conflicts_with = "tls_bind")]
    no_tls: bool,
    /// A PSK identity clients may use (with --psk-key).
    #[arg(long, requires = "psk_key")]
    psk_identity: Option<String>,
    /// The key for --psk-identity: text, hex:00ff..., or sha256:PASSWORD (its SHA-256 digest).
    #[arg(long, requires = "psk_identity")]
    psk_key: Option<String>,
    /// A file of PSKs, one `identity key` per line (key as text or hex:...; # comments).
    #[arg(long)]
    psk_file: Option<std::path::PathBuf>,
    /// The PSK identity hint sent to clients (none by default).
    #[arg(long)]
    psk_hint: Option<String>,
    /// Server certificate (PEM or DER) for coaps://.
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// CA certificate(s) to verify client certificates with (clients are asked for one).
    #[arg(long, requires = "cert")]
    ca: Option<std::path::PathBuf>,
    /// Refuse clients without a valid certificate (needs --ca).
    #[arg(long, requires = "ca")]
    require_client_cert: bool,
    /// Serve this directory under /files/ (GET, PUT, DELETE /files/NAME); created if missing.
    #[arg(long, value_name = "DIR")]
    files: Option<std::path::PathBuf>,
    /// Largest file accepted by PUT under /files/ (bytes).
    #[arg(long, default_value_t = 16 << 20)]
    files_max_size: usize,
    /// Demand fresh requests (RFC 9175 §2.3): PUT, POST and DELETE under /store/ and /files/
    /// must echo a challenge at most this many seconds old; others get 4.01 with an Echo.
    #[arg(long = "require-echo", value_name = "SECONDS", value_parser = parse_seconds)]
    require_echo: Option<f64>,
    /// Limit amplification (RFC 9175 §2.4): over plain UDP, a response more than three times
    /// its request's size goes to an address only once it echoed a challenge.
    #[arg(long = "limit-amplification")]
    limit_amplification: bool,
    /// Accept OSCORE (RFC 8613) with the security context in this folder (aiocoap's format:
    /// settings.json, secret.json, sequence.json; the server's half). Repeatable: requests
    /// find their context by kid and kid context.
    #[arg(long = "oscore", value_name = "DIR")]
    oscore: Vec<std::path::PathBuf>,
    /// Credentials file in aiocoap's format: every "oscore" context folder it names is
    /// accepted, as with --oscore.
    #[arg(long = "credentials", value_name = "FILE")]
    credentials: Option<std::path::PathBuf>,
    /// Allow OSCORE context re-derivation (RFC 8613 Appendix B.2): clients may re-derive
    /// their contexts, and a context whose replay window is unknown (as after a restart)
    /// starts a re-derivation instead of challenging with Echo. The new context is stored in
    /// the context folder (rederived.json). Only for clients that implement the appendix
    /// (Tern's, Californium's): aiocoap's do not, and would then fail where Echo recovers.
    #[arg(long = "oscore-rederivation")]
    oscore_rederivation: bool,
    /// Be the hub of provisioned devices: admit only clients whose identity certificate the
    /// provisioning service with this store issued (`sqlite://PATH` or `postgres://…`, as for
    /// `tern dps serve`) and neither it nor its device is revoked (else 4.01), and hold their
    /// requests to their ACLs from the store (else 4.03). Needs --cert and --key, and --ca
    /// naming the service's CA (the one that signs identity certificates); client
    /// certificates are then required.
    #[arg(long, value_name = "STORE", requires = "ca")]
    hub_store: Option<String>,
    /// Seconds the hub relies on what its store said about a certificate (its revocation,
    /// the device's ACLs) before reading it again.
    #[arg(long, value_name = "SECONDS", default_value_t = tern_dps::hub::DEFAULT_REFRESH.as_secs_f64(),
          value_parser = parse_seconds, requires = "hub_store")]
    hub_refresh: f64,
}

/// A number of seconds between 0 (exclusive) and a day.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{text:?} must be a number of seconds between 0 and 86400"
        )),
    }
}

/// Reads `identity key` lines; names the line of any error.
pub fn read_psk_file(path: &std::path::Path) -> Result<Vec<Psk>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (identity, key) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{}:{}: expected `identity key`", path.display(), i + 1))?;
        let key =
            parse_key(key.trim()).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        out.push(
            Psk::new(identity, key.to_vec())
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    if out.is_empty() {
        return Err(format!("{}: no PSK in the file", path.display()));
    }
    Ok(out)
}

/// A stored value and its Content-Format.
type Entry = (Vec<u8>, Option<ContentFormat>);

/// The in-memory store behind `/store/…`: bounded in entries and in value size.
struct Store {
    entries: Mutex<HashMap<String, Entry>>,
    max_value: usize,
    max_entries: usize,
}

impl Store {
    fn put(&self, key: &str, value: &[u8], cf: Option<ContentFormat>) -> Response {
        if key.is_empty() {
            return Response::error(Code::BAD_REQUEST, "a key is needed: /store/KEY");
        }
        if value.len() > self.max_value {
            return Response::error(
                Code::REQUEST_ENTITY_TOO_LARGE,
                format!("at most {} bytes", self.max_value),
            )
            .with_option(
                tern::OptionNumber::SIZE1,
                tern::proto::option::encode_uint(u32::try_from(self.max_value).unwrap_or(u32::MAX))
                    .as_ref(),
            );
        }
        let Ok(mut entries) = self.entries.lock() else {
            return Response::new(Code::INTERNAL_SERVER_ERROR);
        };
        if !entries.contains_key(key) && entries.len() >= self.max_entries {
            return Response::error(Code::SERVICE_UNAVAILABLE, "the store is full");
        }
        match entries.insert(key.to_string(), (value.to_vec(), cf)) {
            Some(_) => Response::new(Code::CHANGED),
            None => Response::new(Code::CREATED),
        }
    }

    fn get(&self, key: &str) -> Response {
        let Ok(entries) = self.entries.lock() else {
            return Response::new(Code::INTERNAL_SERVER_ERROR);
        };
        match entries.get(key) {
            Some((value, Some(cf))) => Response::content(value.clone()).with_content_format(*cf),
            Some((value, None)) => Response::content(value.clone()),
            None => Response::new(Code::NOT_FOUND),
        }
    }

    fn delete(&self, key: &str) -> Response {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
        Response::new(Code::DELETED)
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The demo server's routes.
pub fn demo_router(
    store_max_value: usize,
    store_max_entries: usize,
    files: Option<Arc<FileStore>>,
    fresh: Option<std::time::Duration>,
) -> Router {
    // Unsafe requests to /store/ and /files/ need a recent Echo when asked (RFC 9175 §2.3).
    let fresh = |resource: Resource| match fresh {
        Some(max_age) => resource.require_echo(max_age),
        None => resource,
    };
    let store = Arc::new(Store {
        entries: Mutex::new(HashMap::new()),
        max_value: store_max_value,
        max_entries: store_max_entries,
    });
    let (put, get, delete) = (store.clone(), store.clone(), store);
    let router = match files {
        Some(files) => Router::new().resource("/files/*", fresh(files.resource())),
        None => Router::new(),
    };
    router
        .resource(
            "/",
            Resource::new().get(|_| async { Response::text("Tern CoAP demo server") }).hidden(),
        )
        .resource(
            "/time",
            Resource::new()
                .get(|_| async { Response::text(utc_now()) })
                .rt("clock")
                .title("Current UTC time")
                .ct(ContentFormat::TEXT_PLAIN)
                .obs(),
        )
        .resource(
            "/whoami",
            Resource::new()
                .get(|r: Request| async move {
                    if let Some(oscore) = r.oscore() {
                        let hex: String = oscore.kid.iter().map(|b| format!("{b:02x}")).collect();
                        return Response::text(format!("oscore:{hex}"));
                    }
                    match r.peer_identity() {
                        Some(PeerIdentity::Psk(id)) => Response::text(format!("psk:{}", String::from_utf8_lossy(id))),
                        Some(PeerIdentity::Certificate { common_name, .. }) => {
                            Response::text(format!("cert:{}", common_name.as_deref().unwrap_or("")))
                        }
                        None => Response::text("anonymous"),
                    }
                })
                .title("The identity this request was authenticated with"),
        )
        .resource(
            "/echo",
            Resource::new()
                .post(|r: Request| async move {
                    let mut response = Response::new(Code::CHANGED).with_payload(r.payload().to_vec());
                    if let Some(cf) = r.content_format() {
                        response = response.with_content_format(cf);
                    }
                    response
                })
                .title("Returns what is POSTed"),
        )
        .resource(
            "/store/*",
            fresh(Resource::new()
                .put(move |r: Request| {
                    let store = put.clone();
                    async move { store.put(r.rest().unwrap_or(""), r.payload(), r.content_format()) }
                })
                .get(move |r: Request| {
                    let store = get.clone();
                    async move { store.get(r.rest().unwrap_or("")) }
                })
                .delete(move |r: Request| {
                    let store = delete.clone();
                    async move { store.delete(r.rest().unwrap_or("")) }
                })),
        )
        .resource("/store", Resource::new().title("In-memory store: PUT, GET, DELETE /store/KEY").get(|_| async {
            Response::text("PUT, GET and DELETE /store/KEY")
        }))
}

/// Runs the server until Ctrl-C.
pub async fn run(args: ServeArgs) -> Result<ExitCode, String> {
    run_with(args, None).await
}

/// Runs the server on the listeners and credentials of `args`: the demo resources, or
/// `gateway`'s routes instead (`tern proxy`).
pub async fn run_with(args: ServeArgs, gateway: Option<Router>) -> Result<ExitCode, String> {
    let binds = if args.bind.is_empty() {
        vec![
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 5683)),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 5683)),
        ]
    } else {
        args.bind
    };
    let files = match &args.files {
        Some(dir) => Some(Arc::new(FileStore::new(dir, args.files_max_size)?)),
        None => None,
    };
    let config = EndpointConfig {
        dedup_per_peer: args.dedup_per_peer,
        dedup_total: args.dedup_total,
        max_peers: args.max_peers,
        max_pending_incoming: args.max_pending,
        separate_response_delay: std::time::Duration::from_millis(args.separate_delay_ms),
        ..Default::default()
    };
    let fresh = args.require_echo.map(std::time::Duration::from_secs_f64);
    let demo = gateway.is_none();
    let mut router = match gateway {
        Some(router) => router,
        None => demo_router(args.store_max_value, args.store_max_entries, files, fresh),
    }
    .limit_amplification(args.limit_amplification);
    let mut oscore_dirs = args.oscore.clone();
    if let Some(path) = &args.credentials {
        let credentials =
            tern::credentials::Credentials::load(path).map_err(|e| format!("--credentials {e}"))?;
        let folders = credentials.oscore_folders();
        if folders.is_empty() {
            return Err(format!(
                "--credentials {}: names no oscore context",
                path.display()
            ));
        }
        oscore_dirs.extend(folders);
    }
    if !oscore_dirs.is_empty() {
        let contexts = crate::oscore::server(
            oscore_dirs.iter().map(|d| d.as_path()),
            "--oscore",
            args.oscore_rederivation,
        )?;
        tracing::info!(contexts = contexts.len(), "OSCORE contexts loaded");
        router = router.oscore(contexts);
    }
    if let Some(url) = &args.hub_store {
        let store = tern_store::open(url)
            .await
            .map_err(|e| format!("--hub-store {url}: {e}"))?;
        let access = tern_dps::hub::HubAccess::new(Arc::new(store))
            .with_refresh(Duration::from_secs_f64(args.hub_refresh));
        router = router.access_control(access);
    }
    // /time is observable (RFC 7641): its observers get the time once a second.
    let notifier = router.notifier();
    tokio::spawn(async move {
        if !demo {
            return;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            notifier.notify("/time");
        }
    });
    let mut builder = Context::builder().endpoint_config(config).router(router);
    for addr in &binds {
        builder = builder.bind(*addr);
    }
    let tcp_binds = if args.no_tcp {
        Vec::new()
    } else if args.tcp_bind.is_empty() {
        binds.clone()
    } else {
        args.tcp_bind.clone()
    };
    for addr in &tcp_binds {
        builder = builder.bind_tcp(*addr);
    }
    let mut psks = Vec::new();
    if let (Some(identity), Some(key)) = (&args.psk_identity, &args.psk_key) {
        let key = parse_key(key).map_err(|e| format!("--psk-key: {e}"))?;
        psks.push(
            Psk::new(identity.as_bytes(), key.to_vec())
                .map_err(|e| format!("--psk-identity/--psk-key: {e}"))?,
        );
    }
    if let Some(path) = &args.psk_file {
        psks.extend(read_psk_file(path)?);
    }
    let mut dtls_binds = args.dtls_bind.clone();
    let pki = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            use tern::tls::{PkiSettings, Source};
            let mut pki = PkiSettings::new(
                Source::File(cert.clone()),
                Source::File(key.clone()),
                args.ca.clone().map(Source::File),
            );
            // A hub admits devices by their certificate only.
            pki.require_peer_certificate = args.require_client_cert || args.hub_store.is_some();
            Some(pki)
        }
        _ => None,
    };
    if !dtls_binds.is_empty() && psks.is_empty() && pki.is_none() {
        return Err("--dtls-bind needs credentials: --psk-identity and --psk-key, --psk-file, or --cert and --key".into());
    }
    if !psks.is_empty() || pki.is_some() {
        if dtls_binds.is_empty() {
            dtls_binds = vec![
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 5684)),
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 5684)),
            ];
        }
        let store = PskMap::new();
        let have_psk = !psks.is_empty();
        for psk in psks {
            store.insert(psk);
        }
        builder = builder.dtls_server(DtlsSettings {
            psk_store: have_psk
                .then(|| std::sync::Arc::new(store) as std::sync::Arc<dyn tern::tls::PskStore>),
            pki,
            identity_hint: args.psk_hint.as_ref().map(|h| h.as_bytes().to_vec()),
            ..Default::default()
        });
        for addr in &dtls_binds {
            builder = builder.bind_dtls(*addr);
        }
        // TLS takes the DTLS credentials (the context derives its TLS server settings from
        // them) and, by default, the same addresses, as libcoap's server does.
        if !args.no_tls {
            let tls_binds = if args.tls_bind.is_empty() {
                &dtls_binds
            } else {
                &args.tls_bind
            };
            for addr in tls_binds {
                builder = builder.bind_tls(*addr);
            }
        }
    } else if !args.tls_bind.is_empty() {
        return Err("--tls-bind needs credentials: --psk-identity and --psk-key, --psk-file, or --cert and --key".into());
    }
    let context = builder
        .build()
        .await
        .map_err(|e| format!("cannot listen on {binds:?}: {e}"))?;
    for scheme in [
        Scheme::Coap,
        Scheme::Coaps,
        Scheme::CoapTcp,
        Scheme::CoapsTcp,
    ] {
        for addr in context.listen_addrs(scheme) {
            eprintln!("listening on {addr} ({scheme})");
        }
    }
    if args.usage_interval > 0 {
        let context = context.clone();
        let every = Duration::from_secs(args.usage_interval);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                eprintln!("usage: {}", context.usage().await);
            }
        });
    }
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    eprintln!("shutting down");
    context.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        let t = utc_now();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20"));
        assert!(t.ends_with('Z'));
    }
}

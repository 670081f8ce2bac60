//! `tern dps`: the provisioning service (`serve`), the device client (`provision`) and the
//! admin commands on the service's store (`group create|list`, `devices`, `revoke`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use tern::proto::uri::Scheme;
use tern::Context;
use tern_dps::device::client::{DeviceClient, FactoryCredentials};
use tern_dps::device::state::{ProvisionedState, StateFile};
use tern_dps::device::StatusReport;
use tern_dps::pki::load_certified_key;
use tern_dps::schedule::RetrySchedule;
use tern_dps::service::DpsService;
use tern_store::{AclEntry, AclSubject, EnrollmentGroup, ProvisioningStore, Store};

/// The service's port when none is given.
pub const DEFAULT_PORT: u16 = 20030;
/// How often `tern dps serve` rereads the enrollment groups (admin commands change them
/// from another process).
const GROUP_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// `tern dps …`.
#[derive(Debug, Args)]
pub struct DpsArgs {
    #[command(subcommand)]
    command: DpsCommand,
}

#[derive(Debug, Subcommand)]
enum DpsCommand {
    /// Run the provisioning service on coaps+tcp with mutual TLS.
    Serve(ServeArgs),
    /// Provision this device: run the steps until it has credentials, ACLs and its hub.
    Provision(ProvisionArgs),
    /// Enrollment groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// List the devices in the store with their state.
    Devices(StoreArg),
    /// Provision many devices against a running service: devices/s and provisioning time.
    Bench(crate::dps_bench::DpsBenchArgs),
    /// Revoke a device: its certificates are refused and nothing more is issued to it.
    Revoke {
        #[command(flatten)]
        store: StoreArg,
        /// The device id (as `tern dps devices` lists it).
        device_id: String,
    },
}

#[derive(Debug, Args)]
struct StoreArg {
    /// The store: `sqlite://PATH` (or a plain path) or `postgres://USER@HOST/DB`.
    #[arg(long, default_value = "sqlite://dps.db")]
    store: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Address to listen on.
    #[arg(long, default_value_t = std::net::SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    bind: std::net::SocketAddr,
    /// The CA that signs identity certificates (PEM certificate; see `tern pki ca`).
    #[arg(long)]
    ca_cert: PathBuf,
    /// Its key (PEM).
    #[arg(long)]
    ca_key: PathBuf,
    /// The service's TLS certificate (PEM; see `tern pki server`).
    #[arg(long)]
    cert: PathBuf,
    /// Its key (PEM).
    #[arg(long)]
    key: PathBuf,
}

#[derive(Debug, Args)]
struct ProvisionArgs {
    /// The device's name, for messages and the default state file.
    #[arg(default_value = "dps")]
    device_name: String,
    /// The service's endpoint; more with `--endpoint`, tried in turn when one fails.
    #[arg(default_value = "coaps+tcp://127.0.0.1:20030")]
    endpoint: String,
    /// Further endpoints to fail over to, in order (repeatable).
    #[arg(long = "endpoint", value_name = "URI")]
    more_endpoints: Vec<String>,
    /// The certificate folder: `dpsca.pem`, `mfgcrt.pem` and `mfgkey.pem`.
    #[arg(long, default_value = "pki_certs")]
    certs: PathBuf,
    /// Where the provisioned state is kept (default: `<device-name>.state.json`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Retry delays in seconds, comma separated, at most 8 (default 10,20,40,80,120).
    #[arg(long)]
    retry: Option<String>,
    /// Do not verify the service's certificate: anyone can then pose as the service.
    #[arg(long)]
    no_verify_ca: bool,
    /// Exit once provisioned instead of waiting for SIGHUP (factory reset) or SIGINT.
    #[arg(long)]
    exit_when_provisioned: bool,
    /// Also write the identity the device got to this folder, for other programs to reach the
    /// hub with (`tern get -c DIR/idcrt.pem -j DIR/idkey.pem -C DIR/hubca.pem …`): `idcrt.pem`,
    /// `idkey.pem` (mode 0600) and `hubca.pem`. A factory reset removes them.
    #[arg(long, value_name = "DIR")]
    identity_out: Option<PathBuf>,
}

/// The files `--identity-out` writes, with their modes.
const IDENTITY_FILES: [(&str, u32); 3] = [
    ("idcrt.pem", 0o644),
    ("idkey.pem", 0o600),
    ("hubca.pem", 0o644),
];

/// Writes the identity of a provisioned device to `dir` (see `--identity-out`).
fn export_identity(
    dir: &std::path::Path,
    state: &tern_dps::device::state::ProvisionedState,
) -> Result<(), String> {
    let identity = state
        .identity
        .as_ref()
        .ok_or("provisioned without an identity")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("--identity-out {}: {e}", dir.display()))?;
    let contents = [
        identity.certificate_pem.as_bytes(),
        identity.key_pem.as_bytes(),
        identity.hub_ca_pem.as_bytes(),
    ];
    for ((name, mode), contents) in IDENTITY_FILES.iter().zip(contents) {
        tern_dps::pki::write_atomically(&dir.join(name), contents, *mode)
            .map_err(|e| format!("--identity-out: {e}"))?;
    }
    Ok(())
}

/// Removes what [`export_identity`] wrote (a factory reset).
fn remove_identity(dir: &std::path::Path) -> Result<(), String> {
    for (name, _) in IDENTITY_FILES {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("--identity-out {}: {e}", dir.join(name).display())),
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create an enrollment group.
    Create(GroupCreateArgs),
    /// List the enrollment groups.
    List(StoreArg),
}

#[derive(Debug, Args)]
struct GroupCreateArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The group's id.
    #[arg(long)]
    id: String,
    /// A description for operators.
    #[arg(long, default_value = "")]
    description: String,
    /// The manufacturer CA (PEM) whose devices this group admits.
    #[arg(long)]
    manufacturer_ca: PathBuf,
    /// The hub's id handed to devices.
    #[arg(long)]
    hub_id: String,
    /// The hub's endpoint (`coaps+tcp://…`).
    #[arg(long)]
    hub_endpoint: String,
    /// The hub's CA (PEM) handed to devices as the hub's trust anchor.
    #[arg(long)]
    hub_ca: PathBuf,
    /// The code devices present to claim ownership at the hub.
    #[arg(long)]
    authorization_code: String,
    /// An ACL entry for authenticated peers, `PATTERN=PERMISSIONS` with permissions from
    /// `crwdn` (create, read, write, delete, notify); repeatable.
    #[arg(long = "acl", value_name = "PATTERN=PERMS")]
    acls: Vec<String>,
    /// Validity of issued identity certificates, days.
    #[arg(long, default_value_t = 365)]
    validity_days: u32,
}

/// Runs `tern dps …`.
pub async fn run(args: DpsArgs) -> Result<ExitCode, String> {
    match args.command {
        DpsCommand::Serve(a) => serve(a).await,
        DpsCommand::Provision(a) => provision(a).await,
        DpsCommand::Group {
            command: GroupCommand::Create(a),
        } => group_create(a).await,
        DpsCommand::Group {
            command: GroupCommand::List(a),
        } => group_list(a).await,
        DpsCommand::Devices(a) => devices(a).await,
        DpsCommand::Bench(a) => crate::dps_bench::run(a).await,
        DpsCommand::Revoke { store, device_id } => revoke(store, &device_id).await,
    }
}

async fn open_store(arg: &StoreArg) -> Result<Store, String> {
    tern_store::open(&arg.store)
        .await
        .map_err(|e| format!("store: {e}"))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let store = Arc::new(open_store(&args.store).await?);
    let ca = load_certified_key(&args.ca_cert, &args.ca_key).map_err(|e| format!("CA: {e}"))?;
    let cert = load_certified_key(&args.cert, &args.key)
        .map_err(|e| format!("server certificate: {e}"))?;
    let service = DpsService::new(store, &ca)
        .await
        .map_err(|e| format!("service: {e}"))?;
    let server = Context::builder()
        .bind_tls(args.bind)
        .tls_server(service.tls_settings(&cert))
        .router(service.router())
        .build()
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    for addr in server.listen_addrs(Scheme::CoapsTcp) {
        println!("tern dps: listening on coaps+tcp://{addr}");
    }
    let mut reload = tokio::time::interval(GROUP_RELOAD_INTERVAL);
    loop {
        tokio::select! {
            _ = reload.tick() => {
                if let Err(e) = service.reload_groups().await {
                    tracing::warn!(error = %e, "cannot reload the enrollment groups");
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn print_status(name: &str, report: &StatusReport) {
    match &report.failure {
        Some(failure) => println!("{name}: status {} ({failure})", report.status),
        None => println!("{name}: status {}", report.status),
    }
}

async fn provision(args: ProvisionArgs) -> Result<ExitCode, String> {
    if args.no_verify_ca {
        eprintln!(
            "WARNING: --no-verify-ca: the provisioning service's certificate is NOT verified; \
             anyone on the path can pose as the service and hand this device its credentials"
        );
    }
    let schedule = match &args.retry {
        Some(text) => RetrySchedule::parse(text).map_err(|e| format!("--retry: {e}"))?,
        None => RetrySchedule::default(),
    };
    let mut endpoints = vec![args.endpoint.clone()];
    endpoints.extend(args.more_endpoints.iter().cloned());
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.state.json", args.device_name)));
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot watch SIGHUP: {e}"))?;
    let name = args.device_name.as_str();
    loop {
        // The manufacturer credentials are read again at every start, a factory reset too.
        let factory =
            FactoryCredentials::load(&args.certs, !args.no_verify_ca).map_err(|e| e.to_string())?;
        let client = DeviceClient::new(factory, endpoints.clone(), StateFile::new(&state_path))
            .map_err(|e| e.to_string())?
            .with_schedule(schedule.clone());
        let next = loop {
            let state = tokio::select! {
                result = client.provision(|report| print_status(name, report)) => {
                    result.map_err(|e| e.to_string())?
                }
                _ = hangup.recv() => break Next::FactoryReset,
                _ = tokio::signal::ctrl_c() => break Next::Quit,
            };
            if let Some(dir) = &args.identity_out {
                export_identity(dir, &state)?;
            }
            println!(
                "{name}: provisioned as device {} for hub {} at {}",
                state.device_id,
                state.hub.as_ref().map_or("?", |h| h.hub_id.as_str()),
                state.hub.as_ref().map_or("?", |h| h.endpoint.as_str()),
            );
            if args.exit_when_provisioned {
                return Ok(ExitCode::SUCCESS);
            }
            // Staying up: the identity certificate is renewed when due, by running the steps
            // again (only the credentials step is due then; before, the run does nothing).
            let renewal = renewal_wait(&state);
            tokio::select! {
                _ = hangup.recv() => break Next::FactoryReset,
                _ = tokio::signal::ctrl_c() => break Next::Quit,
                _ = tokio::time::sleep(renewal) => {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    if state.renewal_due_at().is_some_and(|due| due <= now) {
                        println!("{name}: identity certificate due for renewal");
                    }
                }
            }
        };
        if next == Next::Quit {
            return Ok(ExitCode::SUCCESS);
        }
        println!("{name}: SIGHUP: factory reset");
        client.factory_reset().map_err(|e| e.to_string())?;
        if let Some(dir) = &args.identity_out {
            remove_identity(dir)?;
        }
    }
}

/// What `tern dps provision` does after waiting.
#[derive(Debug, PartialEq)]
enum Next {
    FactoryReset,
    Quit,
}

/// How long a provisioned device waits before looking at its identity certificate again:
/// until [`ProvisionedState::renewal_due_at`], but at least a second (a clock that disagrees
/// with the certificate must not spin) and at most a day (the wall clock may jump while the
/// monotonic timer waits).
fn renewal_wait(state: &ProvisionedState) -> Duration {
    const AT_LEAST: Duration = Duration::from_secs(1);
    const AT_MOST: Duration = Duration::from_secs(86_400);
    let Some(due) = state.renewal_due_at() else {
        return AT_MOST;
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let seconds = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(seconds).clamp(AT_LEAST, AT_MOST)
}

fn read_pem(path: &PathBuf, what: &str) -> Result<String, String> {
    let pem =
        std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    tern_dps::pki::parse_pem_bundle(&pem).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    Ok(pem)
}

/// `PATTERN=PERMS` with permissions from `crwdn`.
fn parse_acl(text: &str) -> Result<AclEntry, String> {
    let (pattern, perms) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("--acl {text:?}: expected PATTERN=PERMISSIONS"))?;
    let mut permissions = 0;
    for c in perms.chars() {
        permissions |= match c {
            'c' => AclEntry::CREATE,
            'r' => AclEntry::READ,
            'w' => AclEntry::WRITE,
            'd' => AclEntry::DELETE,
            'n' => AclEntry::NOTIFY,
            other => {
                return Err(format!(
                    "--acl {text:?}: unknown permission {other:?} (use c, r, w, d, n)"
                ))
            }
        };
    }
    let entry = AclEntry {
        subject: AclSubject::AnyAuthenticated,
        resources: vec![pattern.to_owned()],
        permissions,
    };
    entry
        .validate()
        .map_err(|e| format!("--acl {text:?}: {e}"))?;
    Ok(entry)
}

async fn group_create(args: GroupCreateArgs) -> Result<ExitCode, String> {
    let acl_template = args
        .acls
        .iter()
        .map(|a| parse_acl(a))
        .collect::<Result<Vec<_>, _>>()?;
    let group = EnrollmentGroup {
        id: args.id.clone(),
        description: args.description,
        manufacturer_ca_pem: read_pem(&args.manufacturer_ca, "--manufacturer-ca")?,
        hub_id: args.hub_id,
        hub_endpoint: args.hub_endpoint,
        hub_ca_pem: read_pem(&args.hub_ca, "--hub-ca")?,
        authorization_code: args.authorization_code,
        acl_template,
        certificate_validity_days: args.validity_days,
        created_at: unix_now(),
    };
    let store = open_store(&args.store).await?;
    store
        .create_group(&group)
        .await
        .map_err(|e| format!("group {}: {e}", args.id))?;
    println!("created enrollment group {}", args.id);
    Ok(ExitCode::SUCCESS)
}

async fn group_list(args: StoreArg) -> Result<ExitCode, String> {
    let store = open_store(&args).await?;
    let groups = store.list_groups().await.map_err(|e| e.to_string())?;
    for g in groups {
        println!(
            "{}\thub {} at {}\t{} ACL entries\t{} days\t{}",
            g.id,
            g.hub_id,
            g.hub_endpoint,
            g.acl_template.len(),
            g.certificate_validity_days,
            g.description
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn devices(args: StoreArg) -> Result<ExitCode, String> {
    let store = open_store(&args).await?;
    let devices = store.list_devices().await.map_err(|e| e.to_string())?;
    for d in devices {
        println!(
            "{}\t{}\t{}\t{}",
            d.device_id,
            d.state.as_str(),
            d.group_id,
            d.manufacturer_subject
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn revoke(args: StoreArg, device_id: &str) -> Result<ExitCode, String> {
    let store = open_store(&args).await?;
    let device = store
        .revoke_device(device_id, unix_now())
        .await
        .map_err(|e| format!("revoke {device_id}: {e}"))?;
    println!(
        "revoked device {} ({})",
        device.device_id,
        device.state.as_str()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod renewal_tests {
    use tern_dps::device::state::IdentityCredentials;
    use tern_dps::pki::{create_ca, create_csr, generate_key, IdentitySigner};
    use zeroize::Zeroizing;

    use super::*;

    const DEVICE: &str = "3f2b8e4a-1c5d-4a7b-9e0f-6d1c2b3a4f5e";

    /// A state whose identity certificate was issued at `issued` for `validity`.
    fn state_issued(issued: time::OffsetDateTime, validity: Duration) -> ProvisionedState {
        let ca = create_ca("Renewal CA", Duration::from_secs(86_400 * 3650), issued).unwrap();
        let key = generate_key().unwrap();
        let csr = create_csr(&key, DEVICE).unwrap();
        let cert = IdentitySigner::new(&ca)
            .unwrap()
            .sign_csr(&csr, DEVICE, validity, issued, None)
            .unwrap();
        let mut state = ProvisionedState::fresh("ab".repeat(32), DEVICE.into());
        state.identity = Some(IdentityCredentials {
            certificate_pem: cert.cert_pem,
            key_pem: Zeroizing::new(key.to_pem().to_string()),
            hub_ca_pem: ca.cert_pem,
            not_after: cert.not_after.unix_timestamp(),
        });
        state
    }

    #[test]
    fn the_wait_ends_when_renewal_is_due_within_its_bounds() {
        let now = time::OffsetDateTime::now_utc();
        let hour = Duration::from_secs(3_600);
        // Issued now for 3 h: due in about 2 h.
        let wait = renewal_wait(&state_issued(now, hour * 3));
        assert!(wait > hour + hour / 2 && wait <= hour * 2, "{wait:?}");
        // Issued 3 h ago for 3 h: overdue, so at once (but not in a spin).
        let overdue = renewal_wait(&state_issued(now - hour * 3, hour * 3));
        assert_eq!(overdue, Duration::from_secs(1));
        // Years away: looked at again in a day.
        let far = renewal_wait(&state_issued(now, hour * 24 * 3650));
        assert_eq!(far, Duration::from_secs(86_400));
        // Nothing to renew.
        let fresh = ProvisionedState::fresh("ab".repeat(32), DEVICE.into());
        assert_eq!(renewal_wait(&fresh), Duration::from_secs(86_400));
    }
}

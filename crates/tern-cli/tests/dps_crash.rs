//! Crashes during provisioning, with real processes killed by SIGKILL:
//!
//! - the device (`tern dps provision`) killed at each step, once before the service handles
//!   the step and once after the service committed it but before the device saw the answer;
//!   the restarted device ends provisioned with what the store holds;
//! - the service (`tern dps serve`, on SQLite and on a real PostgreSQL server the test starts)
//!   killed again and again while devices provision; after every kill the store holds each
//!   device in a state whose records are all there, and once the service is back every device
//!   ends provisioned.

mod common;
#[path = "../../tern-store/tests/common/pg_server.rs"]
mod pg_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, tern, tern_bin, ChildGuard};
use tern::proto::uri::Scheme;
use tern::{Code, Context, Request, Response, Router};
use tern_dps::device::client::{
    DeviceClient, FactoryCredentials, MANUFACTURER_CERT_FILE, MANUFACTURER_KEY_FILE,
    SERVICE_CA_FILE,
};
use tern_dps::device::state::StateFile;
use tern_dps::pki::{
    create_ca, inspect, issue_manufacturer_certificate, issue_server_certificate, parse_pem_bundle,
    CertifiedKey, LOCAL_SERVER_NAMES,
};
use tern_dps::protocol;
use tern_dps::schedule::RetrySchedule;
use tern_dps::service::DpsService;
use tern_store::{AclEntry, AclSubject, DeviceState, EnrollmentGroup, ProvisioningStore, Store};
use time::OffsetDateTime;

const YEAR: Duration = Duration::from_secs(365 * 86_400);
/// The longest any wait in these tests may take.
const WAIT: Duration = Duration::from_secs(60);

struct Authorities {
    maker: CertifiedKey,
    service_ca: CertifiedKey,
    hub_ca: CertifiedKey,
}

impl Authorities {
    fn new() -> Self {
        let now = OffsetDateTime::now_utc();
        Authorities {
            maker: create_ca("Crash Maker CA", YEAR, now).unwrap(),
            service_ca: create_ca("Crash DPS CA", YEAR, now).unwrap(),
            hub_ca: create_ca("Crash Hub CA", YEAR, now).unwrap(),
        }
    }

    fn group(&self) -> EnrollmentGroup {
        EnrollmentGroup {
            id: "crash".into(),
            description: "crash trial".into(),
            manufacturer_ca_pem: self.maker.cert_pem.clone(),
            hub_id: "hub-1".into(),
            hub_endpoint: "coaps+tcp://127.0.0.1:5684".into(),
            hub_ca_pem: self.hub_ca.cert_pem.clone(),
            authorization_code: "claim-me".into(),
            acl_template: vec![AclEntry {
                subject: AclSubject::AnyAuthenticated,
                resources: vec!["/light/*".into()],
                permissions: AclEntry::READ | AclEntry::WRITE,
            }],
            certificate_validity_days: 30,
            created_at: 0,
        }
    }

    /// The service's TLS certificate, from its CA, for loopback.
    fn service_certificate(&self) -> CertifiedKey {
        let now = OffsetDateTime::now_utc();
        issue_server_certificate(&self.service_ca, &LOCAL_SERVER_NAMES, YEAR, now).unwrap()
    }

    /// A device's certificate folder with a new manufacturer certificate; returns its
    /// device id and manufacturer fingerprint.
    fn factory_folder(&self, dir: &Path) -> (String, String) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let factory = issue_manufacturer_certificate(
            &self.maker,
            &name,
            None,
            YEAR,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(MANUFACTURER_CERT_FILE), &factory.cert_pem).unwrap();
        std::fs::write(dir.join(MANUFACTURER_KEY_FILE), factory.key_pem.as_bytes()).unwrap();
        std::fs::write(dir.join(SERVICE_CA_FILE), &self.service_ca.cert_pem).unwrap();
        let der = parse_pem_bundle(&factory.cert_pem)
            .unwrap()
            .remove(0)
            .into_bytes();
        (protocol::device_id_for(&der), protocol::fingerprint(&der))
    }
}

/// Checks every device in the store: each state's records are all there, none beyond it.
async fn assert_store_whole(store: &Store) {
    for device in store.list_devices().await.unwrap() {
        let id = &device.device_id;
        let certificates = store.certificates(id).await.unwrap();
        let acls = store.acls(id).await.unwrap();
        match device.state {
            DeviceState::Enrolled => {
                assert!(certificates.is_empty(), "{id} enrolled with certificates");
                assert!(acls.is_empty(), "{id} enrolled with ACLs");
            }
            DeviceState::CredentialsIssued => {
                assert!(!certificates.is_empty(), "{id} credentials without any");
                assert!(acls.is_empty(), "{id} has ACLs before the ACL step");
            }
            DeviceState::AclsIssued | DeviceState::Provisioned => {
                assert!(
                    !certificates.is_empty(),
                    "{id} {:?} without credentials",
                    device.state
                );
                assert!(!acls.is_empty(), "{id} {:?} without ACLs", device.state);
            }
            DeviceState::Revoked => panic!("nobody revoked {id}"),
        }
        for certificate in &certificates {
            assert_eq!(&certificate.device_id, id);
            assert!(!certificate.pem.is_empty());
        }
    }
}

/// The provisioning steps in the order a device drives them, with their resources.
const STEPS: [(Code, &str); 4] = [
    (Code::GET, protocol::TIME_PATH),
    (Code::POST, protocol::CREDENTIALS_PATH),
    (Code::GET, protocol::ACLS_PATH),
    (Code::GET, protocol::HUB_PATH),
];

/// When, relative to the service's handling of a step, the device is killed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Moment {
    /// The request arrived; the service has not looked at it.
    Before,
    /// The service handled it (and committed to the store); the answer is not sent.
    After,
}

/// The device process to kill, and at which step and moment.
#[derive(Default)]
struct Assassin {
    plan: Mutex<Option<(usize, Moment)>>,
    victim: Mutex<Option<ChildGuard>>,
    /// The killed process, kept for its output.
    killed: Mutex<Option<ChildGuard>>,
}

impl Assassin {
    /// Kills the victim when the plan is `(step, moment)`.
    fn strike(&self, step: usize, moment: Moment) -> bool {
        let mut plan = self.plan.lock().unwrap();
        if *plan != Some((step, moment)) {
            return false;
        }
        *plan = None;
        let mut victim = self
            .victim
            .lock()
            .unwrap()
            .take()
            .expect("a device to kill");
        // SIGKILL and reap: nothing of the device runs once this returns.
        tokio::task::block_in_place(|| victim.kill());
        assert!(victim.exited().is_some(), "{} did not die", victim.name);
        *self.killed.lock().unwrap() = Some(victim);
        true
    }

    fn has_struck(&self) -> bool {
        self.killed.lock().unwrap().is_some()
    }
}

/// The service's router, with the assassin looking at every step before and after it.
fn watched(service: Router, assassin: Arc<Assassin>) -> Router {
    let mut router = Router::new();
    for (step, (method, path)) in STEPS.into_iter().enumerate() {
        let (service, assassin) = (service.clone(), assassin.clone());
        router = router.method(&format!("/{path}"), method, move |request: Request| {
            let (service, assassin) = (service.clone(), assassin.clone());
            async move {
                if assassin.strike(step, Moment::Before) {
                    return Response::error(Code::SERVICE_UNAVAILABLE, "the device is gone");
                }
                let response = service.dispatch(request).await;
                assassin.strike(step, Moment::After);
                response
            }
        });
    }
    router
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn provision_command(folder: &Path, endpoint: &str) -> Vec<String> {
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    [
        "dps",
        "provision",
        &name,
        endpoint,
        "--certs",
        p(folder),
        "--state",
        p(&folder.join("state.json")),
        "--identity-out",
        p(&folder.join("identity")),
        "--retry",
        "0.2",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_at_each_step_resumes_and_the_store_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cas = Authorities::new();
    let store = Arc::new(
        tern_store::open(&format!("sqlite://{}", dir.path().join("dps.db").display()))
            .await
            .unwrap(),
    );
    store.create_group(&cas.group()).await.unwrap();
    let service = DpsService::new(store.clone(), &cas.service_ca)
        .await
        .unwrap();
    let server_cert = cas.service_certificate();
    let assassin = Arc::new(Assassin::default());
    let server = Context::builder()
        .bind_tls("127.0.0.1:0".parse().unwrap())
        .tls_server(service.tls_settings(&server_cert))
        .router(watched(service.router(), assassin.clone()))
        .build()
        .await
        .unwrap();
    let endpoint = format!("coaps+tcp://{}", server.listen_addrs(Scheme::CoapsTcp)[0]);

    for (step, (_, path)) in STEPS.into_iter().enumerate() {
        for moment in [Moment::Before, Moment::After] {
            let case = format!("killed {moment:?} {path}");
            let folder = dir.path().join(format!("sensor-{step}-{moment:?}"));
            let (device_id, fingerprint) = cas.factory_folder(&folder);
            *assassin.plan.lock().unwrap() = Some((step, moment));
            let mut command = Command::new(tern_bin());
            command.args(provision_command(&folder, &endpoint));
            *assassin.victim.lock().unwrap() = Some(ChildGuard::spawn(&case, command));
            let start = Instant::now();
            while !assassin.has_struck() {
                if let Some(victim) = assassin.victim.lock().unwrap().as_mut() {
                    assert!(
                        victim.exited().is_none(),
                        "{case}: the device exited before the kill\n{}",
                        victim.output()
                    );
                }
                assert!(start.elapsed() < WAIT, "{case}: the step never came");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let killed = assassin.killed.lock().unwrap().take().unwrap();
            assert!(
                !killed.stdout.contains("provisioned as"),
                "{case}\n{}",
                killed.output()
            );

            // What the store holds after the kill.
            assert_store_whole(&store).await;
            let before = store.device(&device_id).await.unwrap();
            match (step, moment) {
                (0, _) | (1, Moment::Before) => assert!(before.is_none(), "{case}: {before:?}"),
                _ => assert!(before.is_some(), "{case}: the step was committed"),
            }
            let certificates_before = match before {
                Some(_) => store.certificates(&device_id).await.unwrap().len(),
                None => 0,
            };
            // The state the device saved (if any) is whole.
            let saved = StateFile::new(folder.join("state.json"))
                .load(&fingerprint)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(
                saved.as_ref().is_some_and(|s| s.identity.is_some()),
                step > 1,
                "{case}: credentials saved only when the device saw them"
            );

            // Restarted, the device ends provisioned with what the store holds.
            let mut args = provision_command(&folder, &endpoint);
            args.push("--exit-when-provisioned".into());
            let restarted = tern(&args);
            assert!(restarted.success(), "{case}: {}", restarted.describe());
            assert!(
                restarted
                    .stdout
                    .contains(&format!("provisioned as device {device_id}")),
                "{case}: {}",
                restarted.describe()
            );
            let device = store.device(&device_id).await.unwrap().unwrap();
            assert_eq!(device.state, DeviceState::Provisioned, "{case}");
            let held = std::fs::read_to_string(folder.join("identity/idcrt.pem")).unwrap();
            let serial = tern_store::normalize_serial(&inspect(&held).unwrap().serial_hex).unwrap();
            let certificates = store.certificates(&device_id).await.unwrap();
            assert!(
                certificates
                    .iter()
                    .any(|c| c.serial == serial && !c.revoked),
                "{case}: the store records the certificate the device holds"
            );
            // A device that had its credentials does not ask for others; one killed after
            // the service signed (the answer lost) asks once more.
            let expected = match (step, moment) {
                (0, _) | (1, Moment::Before) => 1,
                (1, Moment::After) => 2,
                _ => certificates_before,
            };
            assert_eq!(certificates.len(), expected, "{case}");
            assert_store_whole(&store).await;
        }
    }
    server.shutdown().await;
}

/// Starts the service, waiting until it listens (bounded retries while a killed one's port
/// is still taken).
fn start_service(command: &impl Fn() -> Command) -> ChildGuard {
    let start = Instant::now();
    loop {
        let mut fresh = ChildGuard::spawn("tern dps serve", command());
        while fresh.exited().is_none() && !fresh.stdout.contains("listening on") {
            assert!(start.elapsed() < WAIT, "{}", fresh.output());
            thread::sleep(Duration::from_millis(10));
        }
        if fresh.exited().is_none() {
            return fresh;
        }
        assert!(start.elapsed() < WAIT, "{}", fresh.output());
        thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_sqlite_killed_again_and_again_leaves_the_store_whole() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dps.db").display());
    service_killed_again_and_again(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_postgresql_killed_again_and_again_leaves_the_store_whole() {
    // `shared` says "skipped" without the binaries, and fails under TERN_REQUIRE_PEERS=1.
    let Some(server) = pg_server::PgServer::shared() else {
        return;
    };
    let url = server.create_database().await;
    service_killed_again_and_again(&url).await;
}

/// `tern dps serve` on `store_url`, killed six times while 28 devices provision: after each
/// kill the store (opened afresh, as a restarted service would) holds every device whole.
async fn service_killed_again_and_again(store_url: &str) {
    const DEVICES: usize = 28;
    const KILLS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cas = Authorities::new();
    let store_url = store_url.to_owned();
    {
        let store = tern_store::open(&store_url).await.unwrap();
        store.create_group(&cas.group()).await.unwrap();
    }
    let write = |name: &str, text: &str| {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_cert = write("dpsca.pem", &cas.service_ca.cert_pem);
    let ca_key = write("dpsca-key.pem", cas.service_ca.key_pem.as_str());
    let server_cert = cas.service_certificate();
    let cert = write("dps.pem", &server_cert.cert_pem);
    let key = write("dps-key.pem", server_cert.key_pem.as_str());
    let port = free_port();
    let command = || {
        let mut command = Command::new(tern_bin());
        command.args(["dps", "serve", "--store", &store_url]);
        command.args(["--bind", &format!("127.0.0.1:{port}")]);
        let files: [&PathBuf; 4] = [&ca_cert, &ca_key, &cert, &key];
        let flags = ["--ca-cert", "--ca-key", "--cert", "--key"];
        for (flag, file) in flags.into_iter().zip(files) {
            command.args([flag, p(file)]);
        }
        command
    };
    let mut service = start_service(&command);
    let endpoint = format!("coaps+tcp://127.0.0.1:{port}");

    let mut runs = tokio::task::JoinSet::new();
    for n in 0..DEVICES {
        let folder = d.join(format!("device-{n}"));
        let (device_id, _) = cas.factory_folder(&folder);
        let factory = FactoryCredentials::load(&folder, true).unwrap();
        let client = DeviceClient::new(
            factory,
            vec![endpoint.clone()],
            StateFile::new(folder.join("state.json")),
        )
        .unwrap()
        .with_schedule(RetrySchedule::parse("0.05,0.1,0.2").unwrap())
        .with_request_timeout(Duration::from_secs(2));
        runs.spawn(async move {
            let state = tokio::time::timeout(WAIT * 2, client.provision(|_| {}))
                .await
                .expect("provisioned in time")
                .expect("provisioning succeeds");
            assert_eq!(state.device_id, device_id);
            state
        });
    }
    // Kill the service at moments spread over the devices' work, checking the store file
    // (opened afresh, as a restarted service would) after each.
    // Each kill comes after a share of the work is done: progress counts the steps the
    // store has committed (credentials, ACLs, hub), read through a handle of its own.
    let watcher = tern_store::open(&store_url).await.unwrap();
    let progress = || async {
        let devices = watcher.list_devices().await.unwrap();
        let steps: usize = devices
            .iter()
            .map(|d| match d.state {
                DeviceState::Enrolled => 0,
                DeviceState::CredentialsIssued => 1,
                DeviceState::AclsIssued => 2,
                DeviceState::Provisioned | DeviceState::Revoked => 3,
            })
            .sum();
        steps
    };
    let share = DEVICES * 3 / (KILLS + 1);
    let mut interrupted = 0;
    for kill in 0..KILLS {
        let start = Instant::now();
        while progress().await < share * (kill + 1) {
            assert!(start.elapsed() < WAIT, "no progress before kill {kill}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::task::block_in_place(|| service.kill());
        let store = tern_store::open(&store_url).await.unwrap();
        assert_store_whole(&store).await;
        let devices = store.list_devices().await.unwrap();
        let done = devices
            .iter()
            .filter(|d| d.state == DeviceState::Provisioned)
            .count();
        eprintln!(
            "kill {kill}: {} devices in the store, {done} provisioned",
            devices.len()
        );
        if done < DEVICES {
            interrupted += 1;
        }
        drop(store);
        service = tokio::task::block_in_place(|| start_service(&command));
    }
    assert!(interrupted > 0, "every kill came after the work was done");
    let mut provisioned = 0;
    while let Some(state) = runs.join_next().await {
        let state = state.unwrap();
        assert!(state.is_provisioned());
        provisioned += 1;
    }
    assert_eq!(provisioned, DEVICES);
    service.kill();
    let store = tern_store::open(&store_url).await.unwrap();
    assert_store_whole(&store).await;
    let devices = store.list_devices().await.unwrap();
    assert_eq!(devices.len(), DEVICES);
    assert!(devices.iter().all(|d| d.state == DeviceState::Provisioned));
}

//! The device client against the real provisioning service over coaps+tcp with mutual TLS:
//! a fresh device provisions and then reaches a hub with its new identity; a restart does not
//! provision again; a crash after any step resumes where it stopped and the store never holds
//! a half-provisioned device; a factory reset provisions again; an unknown manufacturer gets a
//! failure status that says so; a service that is down at first is reached on a later retry;
//! many devices provision at once. On SQLite, and on a real PostgreSQL server the test starts.

#[path = "../../tern-store/tests/common/pg_server.rs"]
mod pg_server;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern::proto::uri::Scheme;
use tern::tls::{PkiSettings, Source, TlsSettings};
use tern::{Code, Context, PeerIdentity, Request, Response, Router};
use tern_dps::device::client::{
    DeviceClient, FactoryCredentials, MANUFACTURER_CERT_FILE, MANUFACTURER_KEY_FILE,
    SERVICE_CA_FILE,
};
use tern_dps::device::state::{ProvisionedState, StateFile};
use tern_dps::device::{ErrorCode, Status, StatusReport, Step};
use tern_dps::hub::HubAccess;
use tern_dps::pki::*;
use tern_dps::protocol;
use tern_dps::schedule::RetrySchedule;
use tern_dps::service::DpsService;
use tern_store::{AclEntry, AclSubject, DeviceState, EnrollmentGroup, ProvisioningStore, Store};
use time::OffsetDateTime;

const YEAR: Duration = Duration::from_secs(365 * 86_400);
/// The longest any one provisioning run in these tests may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The CAs of a trial: the manufacturer's, the service's (it issues identities) and the hub's.
struct Authorities {
    maker: CertifiedKey,
    service_ca: CertifiedKey,
    hub_ca: CertifiedKey,
}

impl Authorities {
    fn new() -> Self {
        Authorities {
            maker: create_ca("Acme Manufacturer CA", YEAR * 10, now()).unwrap(),
            service_ca: create_ca("Trial DPS CA", YEAR * 10, now()).unwrap(),
            hub_ca: create_ca("Trial Hub CA", YEAR * 10, now()).unwrap(),
        }
    }

    fn group(&self, hub_endpoint: &str) -> EnrollmentGroup {
        EnrollmentGroup {
            id: "acme-sensors".into(),
            description: "trial group".into(),
            manufacturer_ca_pem: self.maker.cert_pem.clone(),
            hub_id: "hub-1".into(),
            hub_endpoint: hub_endpoint.into(),
            hub_ca_pem: self.hub_ca.cert_pem.clone(),
            authorization_code: "claim-me".into(),
            acl_template: vec![
                AclEntry {
                    subject: AclSubject::AnyAuthenticated,
                    resources: vec!["/light/*".into()],
                    permissions: AclEntry::READ | AclEntry::WRITE,
                },
                AclEntry {
                    subject: AclSubject::AnyAuthenticated,
                    resources: vec!["/whoami".into()],
                    permissions: AclEntry::READ,
                },
            ],
            certificate_validity_days: 30,
            created_at: 0,
        }
    }
}

/// A running provisioning service.
struct Service {
    server: Context,
    addr: SocketAddr,
}

impl Service {
    async fn start(store: Arc<Store>, cas: &Authorities, bind: SocketAddr) -> Service {
        let service = DpsService::new(store, &cas.service_ca).await.unwrap();
        let server_cert =
            issue_server_certificate(&cas.service_ca, &LOCAL_SERVER_NAMES, YEAR, now()).unwrap();
        let server = Context::builder()
            .bind_tls(bind)
            .tls_server(service.tls_settings(&server_cert))
            .router(service.router())
            .build()
            .await
            .unwrap();
        let addr = server.listen_addrs(Scheme::CoapsTcp)[0];
        Service { server, addr }
    }

    fn endpoint(&self) -> String {
        format!("coaps+tcp://{}", self.addr)
    }
}

/// The CAs, an in-memory store with the trial group, and a service on it.
async fn in_memory_trial() -> (Authorities, Arc<Store>, Service) {
    let cas = Authorities::new();
    let store = Arc::new(tern_store::open("sqlite::memory:").await.unwrap());
    store
        .create_group(&cas.group("coaps+tcp://127.0.0.1:5684"))
        .await
        .unwrap();
    let service = Service::start(store.clone(), &cas, "127.0.0.1:0".parse().unwrap()).await;
    (cas, store, service)
}

/// Writes a device's certificate folder (`mfgcrt.pem`, `mfgkey.pem`, `dpsca.pem`) with a new
/// manufacturer certificate from `maker`, and returns it.
fn factory_folder(dir: &Path, maker: &CertifiedKey, service_ca: &CertifiedKey) -> CertifiedKey {
    let serial = dir.file_name().unwrap().to_string_lossy().into_owned();
    let factory = issue_manufacturer_certificate(maker, &serial, None, YEAR, now()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(MANUFACTURER_CERT_FILE), &factory.cert_pem).unwrap();
    std::fs::write(dir.join(MANUFACTURER_KEY_FILE), factory.key_pem.as_bytes()).unwrap();
    std::fs::write(dir.join(SERVICE_CA_FILE), &service_ca.cert_pem).unwrap();
    factory
}

fn client(dir: &Path, endpoints: Vec<String>, schedule: &str) -> DeviceClient {
    let factory = FactoryCredentials::load(dir, true).unwrap();
    DeviceClient::new(factory, endpoints, StateFile::new(dir.join("state.json")))
        .unwrap()
        .with_schedule(RetrySchedule::parse(schedule).unwrap())
        .with_request_timeout(Duration::from_secs(10))
}

/// Every status report of a run.
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<StatusReport>>>);

impl Reports {
    fn push(&self, report: &StatusReport) {
        self.0.lock().unwrap().push(report.clone());
    }

    fn all(&self) -> Vec<StatusReport> {
        self.0.lock().unwrap().clone()
    }
}

async fn provision(client: &DeviceClient, reports: &Reports) -> ProvisionedState {
    let r = reports.clone();
    tokio::time::timeout(RUN_LIMIT, client.provision(move |report| r.push(report)))
        .await
        .expect("provisioning finishes in time")
        .expect("provisioning succeeds")
}

fn der_of(pem: &str) -> Vec<u8> {
    parse_pem_bundle(pem).unwrap().remove(0).into_bytes()
}

/// What a provisioned state must hold, and what the store must hold for it.
async fn assert_provisioned(
    state: &ProvisionedState,
    factory: &CertifiedKey,
    cas: &Authorities,
    store: &Store,
) {
    let device_id = protocol::device_id_for(&der_of(&factory.cert_pem));
    assert!(state.is_provisioned());
    assert_eq!(state.device_id, device_id);
    let identity = state.identity.as_ref().unwrap();
    verify_chain(
        &identity.certificate_pem,
        &cas.service_ca.cert_pem,
        now(),
        true,
    )
    .unwrap();
    assert_eq!(
        inspect(&identity.certificate_pem)
            .unwrap()
            .device_id
            .as_deref(),
        Some(device_id.as_str())
    );
    // The key the device keeps is the certificate's.
    identity.certified_key().unwrap().private_key().unwrap();
    let issued = openssl::x509::X509::from_pem(identity.certificate_pem.as_bytes()).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(identity.key_pem.as_bytes()).unwrap();
    assert!(issued.public_key().unwrap().public_eq(&key));
    assert_eq!(identity.hub_ca_pem, cas.hub_ca.cert_pem);
    let hub = state.hub.as_ref().unwrap();
    assert_eq!(hub.hub_id, "hub-1");
    assert_eq!(hub.authorization_code.as_str(), "claim-me");
    assert_eq!(
        state.acls.as_deref(),
        Some(&cas.group("x").acl_template[..])
    );

    let device = store.device(&device_id).await.unwrap().unwrap();
    assert_eq!(device.state, DeviceState::Provisioned);
    let serial =
        tern_store::normalize_serial(&inspect(&identity.certificate_pem).unwrap().serial_hex)
            .unwrap();
    let certificates = store.certificates(&device_id).await.unwrap();
    assert!(
        certificates
            .iter()
            .any(|c| c.serial == serial && !c.revoked),
        "the store records the certificate the device holds"
    );
}

/// A hub: trusts the service's CA for clients, admits them by the store
/// ([`tern_dps::hub::HubAccess`], reading it on every request so that a revocation shows at
/// once) and answers `/whoami` with the client's certificate name and `/light/*` and
/// `/secret` with their path.
async fn hub(cas: &Authorities, store: Arc<Store>) -> (Context, SocketAddr) {
    let cert = issue_server_certificate(&cas.hub_ca, &LOCAL_SERVER_NAMES, YEAR, now()).unwrap();
    let mut pki = PkiSettings::new(
        Source::Pem(cert.cert_pem.clone().into_bytes()),
        Source::Pem(cert.key_pem.as_bytes().to_vec()),
        Some(Source::Pem(cas.service_ca.cert_pem.clone().into_bytes())),
    );
    pki.verify_peer = true;
    pki.require_peer_certificate = true;
    let path = |r: Request| async move { Response::text(r.path()) };
    let router = Router::new()
        .get("/whoami", |r: Request| async move {
            match r.peer_identity() {
                Some(PeerIdentity::Certificate { common_name, .. }) => {
                    Response::text(common_name.clone().unwrap_or_default())
                }
                _ => Response::error(Code::UNAUTHORIZED, "no certificate"),
            }
        })
        .get("/light/*", path)
        .put("/light/*", |_| async { Response::new(Code::CHANGED) })
        .delete("/light/*", |_| async { Response::new(Code::DELETED) })
        .get("/secret", path)
        .access_control(HubAccess::new(store).with_refresh(Duration::ZERO));
    let server = Context::builder()
        .bind_tls("127.0.0.1:0".parse().unwrap())
        .tls_server(TlsSettings {
            pki: Some(pki),
            ..TlsSettings::default()
        })
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = server.listen_addrs(Scheme::CoapsTcp)[0];
    (server, addr)
}

/// A client holding an identity certificate and key, trusting the hub's CA.
async fn on_hub(cert_pem: &str, key_pem: &str, hub_ca_pem: &str) -> Context {
    let mut pki = PkiSettings::new(
        Source::Pem(cert_pem.as_bytes().to_vec()),
        Source::Pem(key_pem.as_bytes().to_vec()),
        Some(Source::Pem(hub_ca_pem.as_bytes().to_vec())),
    );
    pki.sni = Some("localhost".into());
    Context::builder().pki(pki).build().await.unwrap()
}

/// One request to the hub; its response code and payload.
async fn ask(client: &Context, method: Code, uri: &str) -> (Code, String) {
    let answer = client
        .request(method, uri)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (
        answer.code(),
        String::from_utf8_lossy(answer.payload()).into_owned(),
    )
}

/// The whole story on one store: provision, reach the hub with the new identity, restart
/// without provisioning again, factory reset and provision again.
async fn end_to_end(store: Arc<Store>) {
    let cas = Authorities::new();
    let (hub_server, hub_addr) = hub(&cas, store.clone()).await;
    store
        .create_group(&cas.group(&format!("coaps+tcp://{hub_addr}")))
        .await
        .unwrap();
    let service = Service::start(store.clone(), &cas, "127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("sensor-0001");
    let factory = factory_folder(&folder, &cas.maker, &cas.service_ca);

    let reports = Reports::default();
    let device = client(&folder, vec![service.endpoint()], "0.2");
    let state = provision(&device, &reports).await;
    assert_provisioned(&state, &factory, &cas, &store).await;
    // The flags grow one step at a time, and no attempt failed.
    let flags: Vec<Status> = reports.all().iter().map(|r| r.status).collect();
    let expected = [
        Status::INITIALIZED,
        Status::INITIALIZED | Status::HAS_TIME,
        Status::INITIALIZED | Status::HAS_TIME | Status::HAS_CREDENTIALS,
        Status::INITIALIZED | Status::HAS_TIME | Status::HAS_CREDENTIALS | Status::HAS_ACLS,
        Status::INITIALIZED
            | Status::HAS_TIME
            | Status::HAS_CREDENTIALS
            | Status::HAS_ACLS
            | Status::HAS_HUB_CONFIGURATION,
    ];
    assert_eq!(flags, expected);
    assert!(reports.all().iter().all(|r| r.failure.is_none()));

    // The hub accepts the device by its new identity, and holds it to its ACLs.
    let identity = state.identity.as_ref().unwrap();
    let hub_uri = state.hub.as_ref().unwrap().endpoint.clone();
    let device_on_hub = on_hub(
        &identity.certificate_pem,
        &identity.key_pem,
        &identity.hub_ca_pem,
    )
    .await;
    let whoami = ask(&device_on_hub, Code::GET, &format!("{hub_uri}/whoami")).await;
    assert_eq!(whoami, (Code::CONTENT, format!("uuid:{}", state.device_id)));
    for (method, path, expected) in [
        (Code::GET, "/light/1", Code::CONTENT),
        (Code::PUT, "/light/1", Code::CHANGED),
        (Code::DELETE, "/light/1", Code::FORBIDDEN),
        (Code::GET, "/secret", Code::FORBIDDEN),
        (Code::GET, "/.well-known/core", Code::FORBIDDEN),
    ] {
        let (code, text) = ask(&device_on_hub, method, &format!("{hub_uri}{path}")).await;
        assert_eq!(code, expected, "{method} {path}: {text}");
    }

    // A certificate signed by the service's CA that the service never issued (the TLS
    // handshake accepts it) is refused by the store's record.
    let forged_key = generate_key().unwrap();
    let csr = create_csr(&forged_key, &state.device_id).unwrap();
    let forged =
        sign_identity_csr(&csr, &state.device_id, &cas.service_ca, YEAR, now(), None).unwrap();
    let forger = on_hub(&forged.cert_pem, &forged_key.to_pem(), &identity.hub_ca_pem).await;
    let (code, text) = ask(&forger, Code::GET, &format!("{hub_uri}/whoami")).await;
    assert_eq!(code, Code::UNAUTHORIZED);
    assert!(text.contains("never issued"), "{text}");
    forger.shutdown().await;

    // A restart finds the state and asks the service nothing.
    let audit_before = store.audit(1000).await.unwrap().len();
    let again = Reports::default();
    let restarted = client(&folder, vec![service.endpoint()], "0.2");
    let resumed = provision(&restarted, &again).await;
    assert_eq!(resumed, state);
    assert_eq!(store.audit(1000).await.unwrap().len(), audit_before);
    assert_eq!(store.certificates(&state.device_id).await.unwrap().len(), 1);
    assert!(again.all().last().unwrap().status.is_provisioned());

    // A factory reset: the state is gone, provisioning runs again, same device id, a new
    // certificate.
    restarted.factory_reset().unwrap();
    assert!(restarted.load_state().unwrap().is_none());
    let reprovisioned = provision(&restarted, &Reports::default()).await;
    assert_provisioned(&reprovisioned, &factory, &cas, &store).await;
    assert_eq!(reprovisioned.device_id, state.device_id);
    assert_ne!(
        reprovisioned.identity.as_ref().unwrap().certificate_pem,
        identity.certificate_pem
    );
    assert_eq!(store.certificates(&state.device_id).await.unwrap().len(), 2);

    // Revoked, the device is refused by the hub, with its old certificate and its new one,
    // though the TLS handshake (which knows nothing of revocation) still passes.
    let new_identity = reprovisioned.identity.as_ref().unwrap();
    let reprovisioned_on_hub = on_hub(
        &new_identity.certificate_pem,
        &new_identity.key_pem,
        &new_identity.hub_ca_pem,
    )
    .await;
    let whoami = ask(
        &reprovisioned_on_hub,
        Code::GET,
        &format!("{hub_uri}/whoami"),
    )
    .await;
    assert_eq!(whoami.0, Code::CONTENT);
    store
        .revoke_device(&state.device_id, now().unix_timestamp())
        .await
        .unwrap();
    for client in [&device_on_hub, &reprovisioned_on_hub] {
        let (code, text) = ask(client, Code::GET, &format!("{hub_uri}/light/1")).await;
        assert_eq!(code, Code::UNAUTHORIZED, "{text}");
        assert!(text.contains("revoked"), "{text}");
    }
    device_on_hub.shutdown().await;
    reprovisioned_on_hub.shutdown().await;

    service.server.shutdown().await;
    hub_server.shutdown().await;
}

#[tokio::test]
async fn end_to_end_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dps.db").display());
    end_to_end(Arc::new(tern_store::open(&url).await.unwrap())).await;
}

#[tokio::test]
async fn end_to_end_on_postgresql() {
    // `shared` says "skipped" without the binaries, and fails under TERN_REQUIRE_PEERS=1.
    let Some(server) = pg_server::PgServer::shared() else {
        return;
    };
    let url = server.create_database().await;
    end_to_end(Arc::new(tern_store::open(&url).await.unwrap())).await;
}

/// A device stopped right after each step (its state saved, the process gone) resumes with
/// the steps still to do; at every stop the store holds the device in a state whose records
/// are all there.
#[tokio::test]
async fn a_device_stopped_after_each_step_resumes_and_the_store_stays_whole() {
    let (cas, store, service) = in_memory_trial().await;
    let dir = tempfile::tempdir().unwrap();
    let stops = [
        Status::HAS_TIME,
        Status::HAS_CREDENTIALS,
        Status::HAS_ACLS,
        Status::HAS_HUB_CONFIGURATION,
    ];
    for (n, stop_at) in stops.into_iter().enumerate() {
        let folder = dir.path().join(format!("sensor-{n}"));
        let factory = factory_folder(&folder, &cas.maker, &cas.service_ca);
        let device_id = protocol::device_id_for(&der_of(&factory.cert_pem));
        let first = client(&folder, vec![service.endpoint()], "0.2");
        // The run is dropped (as a killed process stops) at the first report with the flag:
        // reports come after the state is saved.
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let mut stopped_tx = Some(stopped_tx);
        let run = first.provision(move |report| {
            if report.status.contains(stop_at) {
                if let Some(tx) = stopped_tx.take() {
                    let _ = tx.send(report.status);
                }
            }
        });
        let status = tokio::select! {
            status = stopped_rx => status.unwrap(),
            result = tokio::time::timeout(RUN_LIMIT, run) => panic!("the run ended first: {result:?}"),
        };
        assert!(status.contains(stop_at));
        let saved = first.load_state().unwrap().unwrap();

        // The store: whatever the state, what it implies is recorded.
        match store.device(&device_id).await.unwrap() {
            None => assert_eq!(
                stop_at,
                Status::HAS_TIME,
                "only the time step stores nothing"
            ),
            Some(device) => {
                let certificates = store.certificates(&device_id).await.unwrap();
                let acls = store.acls(&device_id).await.unwrap();
                match device.state {
                    DeviceState::Enrolled => assert!(certificates.is_empty()),
                    DeviceState::CredentialsIssued => assert_eq!(certificates.len(), 1),
                    DeviceState::AclsIssued | DeviceState::Provisioned => {
                        assert_eq!(certificates.len(), 1);
                        assert!(!acls.is_empty());
                    }
                    DeviceState::Revoked => panic!("nobody revoked {device_id}"),
                }
                if saved.identity.is_some() {
                    assert!(device.state >= DeviceState::CredentialsIssued);
                }
            }
        }

        // The restarted device does the rest and ends provisioned with what the store holds.
        let reports = Reports::default();
        let state = provision(&client(&folder, vec![service.endpoint()], "0.2"), &reports).await;
        assert_provisioned(&state, &factory, &cas, &store).await;
        assert_eq!(
            state.identity.is_some() && saved.identity.is_some(),
            saved.identity.is_some()
        );
        if let Some(identity) = &saved.identity {
            // The credentials were not asked for again.
            assert_eq!(
                &state.identity.unwrap().certificate_pem,
                &identity.certificate_pem
            );
            assert_eq!(store.certificates(&device_id).await.unwrap().len(), 1);
        }
        // The first report of the resumed run already has what was saved.
        assert!(reports.all()[0].status.contains(stop_at) || stop_at == Status::HAS_TIME);
    }
    service.server.shutdown().await;
}

/// A device whose manufacturer is in no enrollment group is refused in the handshake; its
/// status says failure, with the TLS handshake code and the service's reason.
#[tokio::test]
async fn an_unknown_manufacturer_gets_a_failure_status() {
    let (cas, store, service) = in_memory_trial().await;
    let stranger = create_ca("Unknown Maker CA", YEAR, now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("stranger-1");
    factory_folder(&folder, &stranger, &cas.service_ca);
    let device = client(&folder, vec![service.endpoint()], "0.2");

    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    let mut failed_tx = Some(failed_tx);
    let run = device.provision(move |report| {
        if report.failure.is_some() {
            if let Some(tx) = failed_tx.take() {
                let _ = tx.send(report.clone());
            }
        }
    });
    let report = tokio::select! {
        report = failed_rx => report.unwrap(),
        result = tokio::time::timeout(RUN_LIMIT, run) => panic!("the run ended: {result:?}"),
    };
    assert!(report.status.contains(Status::FAILURE), "{report:?}");
    assert!(!report.status.contains(Status::TRANSIENT_FAILURE));
    assert!(!report.status.contains(Status::HAS_TIME));
    let failure = report.failure.unwrap();
    assert_eq!(failure.step, Step::Time);
    assert_eq!(failure.code, ErrorCode::Handshake, "{failure}");
    assert!(failure.detail.contains("unknown ca"), "{failure}");
    assert!(store.list_devices().await.unwrap().is_empty());
    service.server.shutdown().await;
}

/// The service is down when the device starts: the device reports a transient failure and
/// provisions on a later retry once the service is up, on the same endpoint.
#[tokio::test]
async fn a_service_down_at_first_is_reached_on_a_later_retry() {
    let cas = Authorities::new();
    let store = Arc::new(tern_store::open("sqlite::memory:").await.unwrap());
    store
        .create_group(&cas.group("coaps+tcp://127.0.0.1:5684"))
        .await
        .unwrap();
    // A port nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("sensor-late");
    let factory = factory_folder(&folder, &cas.maker, &cas.service_ca);
    let device = client(&folder, vec![format!("coaps+tcp://{addr}")], "0.3");

    let (down_tx, down_rx) = tokio::sync::oneshot::channel();
    let mut down_tx = Some(down_tx);
    let reports = Reports::default();
    let r = reports.clone();
    let run = device.provision(move |report| {
        r.push(report);
        if report.status.contains(Status::TRANSIENT_FAILURE) {
            if let Some(tx) = down_tx.take() {
                let _ = tx.send(());
            }
        }
    });
    let starter = async {
        down_rx.await.unwrap();
        Service::start(store.clone(), &cas, addr).await
    };
    let (result, service) = tokio::join!(tokio::time::timeout(RUN_LIMIT, run), starter);
    let state = result.expect("provisioned in time").unwrap();
    assert_provisioned(&state, &factory, &cas, &store).await;
    let first_failure = reports
        .all()
        .into_iter()
        .find_map(|r| r.failure)
        .expect("the first attempt failed");
    assert_eq!(
        first_failure.code,
        ErrorCode::Unreachable,
        "{first_failure}"
    );
    assert_eq!(first_failure.step, Step::Time);
    service.server.shutdown().await;
}

/// Many devices provision at the same time against one service; each ends provisioned with
/// its own identity, and the store holds exactly one device and one certificate for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_provision_concurrently() {
    const DEVICES: usize = 1000;
    let cas = Arc::new(Authorities::new());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dps.db").display());
    let store = Arc::new(tern_store::open(&url).await.unwrap());
    store
        .create_group(&cas.group("coaps+tcp://127.0.0.1:5684"))
        .await
        .unwrap();
    let service = Service::start(store.clone(), &cas, "127.0.0.1:0".parse().unwrap()).await;
    let failed_attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for n in 0..DEVICES {
        let folder = dir.path().join(format!("sensor-{n:04}"));
        factory_folder(&folder, &cas.maker, &cas.service_ca);
        let endpoint = service.endpoint();
        let failed = failed_attempts.clone();
        runs.spawn(async move {
            let device = client(&folder, vec![endpoint], "0.5,1");
            let count_failures = move |report: &StatusReport| {
                if let Some(failure) = &report.failure {
                    // Past its handshake cap the service sheds load by closing connections:
                    // the devices must take that as transient and retry.
                    assert!(
                        report.status.contains(Status::TRANSIENT_FAILURE),
                        "{failure}"
                    );
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            };
            let state =
                tokio::time::timeout(Duration::from_secs(300), device.provision(count_failures))
                    .await
                    .expect("provisioned in time")
                    .unwrap();
            state.device_id
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(id) = runs.join_next().await {
        assert!(ids.insert(id.unwrap()), "two devices got one id");
    }
    assert_eq!(ids.len(), DEVICES);
    // Figures for the record (not a timing test): how long, and how many attempts failed
    // (the service may shed load; the devices retry).
    println!(
        "{DEVICES} devices provisioned in {:?} (certificate folders included), {} failed attempts",
        started.elapsed(),
        failed_attempts.load(std::sync::atomic::Ordering::Relaxed)
    );
    let devices = store.list_devices().await.unwrap();
    assert_eq!(devices.len(), DEVICES);
    assert!(devices.iter().all(|d| d.state == DeviceState::Provisioned));
    for id in ids.iter().take(50) {
        assert_eq!(store.certificates(id).await.unwrap().len(), 1);
    }
    service.server.shutdown().await;
}

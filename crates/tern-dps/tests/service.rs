//! The provisioning service over real coaps+tcp with mutual TLS: a device admitted by its
//! manufacturer certificate runs the four steps in order; an unknown manufacturer, a revoked
//! device, steps out of order, hostile payloads and an expired factory certificate get the
//! answers the service documents; the store ends up holding exactly what was issued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern::proto::uri::Scheme;
use tern::tls::{PkiSettings, Source};
use tern::{Code, ContentFormat, Context};
use tern_dps::pki::*;
use tern_dps::protocol::{
    self, AclsResponse, CredentialsRequest, CredentialsResponse, HubConfiguration, TimeResponse,
};
use tern_dps::service::DpsService;
use tern_store::{AclEntry, AclSubject, DeviceState, EnrollmentGroup, ProvisioningStore, Store};
use time::OffsetDateTime;

const YEAR: Duration = Duration::from_secs(365 * 86_400);

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Everything a trial needs: a manufacturer CA, the service's identity CA and its TLS
/// certificate, the hub's CA, and a running service on a store.
struct Trial {
    maker: CertifiedKey,
    service_ca: CertifiedKey,
    hub_ca: CertifiedKey,
    store: Arc<Store>,
    service: DpsService,
    server: Context,
    addr: SocketAddr,
}

fn group(maker: &CertifiedKey, hub_ca: &CertifiedKey) -> EnrollmentGroup {
    EnrollmentGroup {
        id: "acme-sensors".into(),
        description: "trial group".into(),
        manufacturer_ca_pem: maker.cert_pem.clone(),
        hub_id: "hub-1".into(),
        hub_endpoint: "coaps+tcp://127.0.0.1:5684".into(),
        hub_ca_pem: hub_ca.cert_pem.clone(),
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

async fn trial() -> Trial {
    let maker = create_ca("Acme Manufacturer CA", YEAR * 10, now()).unwrap();
    let service_ca = create_ca("Trial DPS CA", YEAR * 10, now()).unwrap();
    let hub_ca = create_ca("Trial Hub CA", YEAR * 10, now()).unwrap();
    let store = Arc::new(tern_store::open("sqlite::memory:").await.unwrap());
    store.create_group(&group(&maker, &hub_ca)).await.unwrap();
    let service = DpsService::new(store.clone(), &service_ca).await.unwrap();
    let server_cert =
        issue_server_certificate(&service_ca, &LOCAL_SERVER_NAMES, YEAR, now()).unwrap();
    let server = Context::builder()
        .bind_tls("127.0.0.1:0".parse().unwrap())
        .tls_server(service.tls_settings(&server_cert))
        .router(service.router())
        .build()
        .await
        .unwrap();
    let addr = server.listen_addrs(Scheme::CoapsTcp)[0];
    Trial {
        maker,
        service_ca,
        hub_ca,
        store,
        service,
        server,
        addr,
    }
}

/// A device's client context: its factory certificate, trusting the service's CA.
async fn device(factory: &CertifiedKey, service_ca: &CertifiedKey) -> Context {
    let mut pki = PkiSettings::new(
        Source::Pem(factory.cert_pem.clone().into_bytes()),
        Source::Pem(factory.key_pem.as_bytes().to_vec()),
        Some(Source::Pem(service_ca.cert_pem.clone().into_bytes())),
    );
    pki.sni = Some("localhost".into());
    Context::builder().pki(pki).build().await.unwrap()
}

fn der_of(pem: &str) -> Vec<u8> {
    parse_pem_bundle(pem).unwrap().remove(0).into_bytes()
}

struct Answer {
    code: Code,
    payload: Vec<u8>,
}

async fn get(client: &Context, addr: SocketAddr, path: &str) -> Answer {
    let r = client
        .get(&format!("coaps+tcp://{addr}/{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    Answer {
        code: r.code(),
        payload: r.payload().to_vec(),
    }
}

async fn post_csr(client: &Context, addr: SocketAddr, csr_pem: &str) -> Answer {
    post(
        client,
        addr,
        CredentialsRequest {
            csr_pem: csr_pem.into(),
        }
        .encode(),
    )
    .await
}

async fn post(client: &Context, addr: SocketAddr, payload: Vec<u8>) -> Answer {
    let r = client
        .post(&format!(
            "coaps+tcp://{addr}/{}",
            protocol::CREDENTIALS_PATH
        ))
        .content_format(ContentFormat::CBOR)
        .payload(payload)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    Answer {
        code: r.code(),
        payload: r.payload().to_vec(),
    }
}

fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.payload).into_owned()
}

#[tokio::test]
async fn a_device_runs_the_four_steps_and_the_store_holds_what_was_issued() {
    let t = trial().await;
    let factory =
        issue_manufacturer_certificate(&t.maker, "acme-sensor-0001", None, YEAR, now()).unwrap();
    let client = device(&factory, &t.service_ca).await;
    let device_id = protocol::device_id_for(&der_of(&factory.cert_pem));

    // Time.
    let answer = get(&client, t.addr, protocol::TIME_PATH).await;
    assert_eq!(answer.code, Code::CONTENT, "{}", text(&answer));
    let time = TimeResponse::decode(&answer.payload).unwrap();
    let skew = time.unix_seconds as i64 - now().unix_timestamp();
    assert!(skew.abs() < 60, "service time off by {skew} s");

    // ACLs and hub before credentials are refused, and nothing is stored for them.
    assert_eq!(
        get(&client, t.addr, protocol::ACLS_PATH).await.code,
        Code::FORBIDDEN
    );
    assert_eq!(
        get(&client, t.addr, protocol::HUB_PATH).await.code,
        Code::FORBIDDEN
    );
    assert!(t.store.device(&device_id).await.unwrap().is_none());

    // Credentials.
    let key = generate_key().unwrap();
    let csr = create_csr(&key, &device_id).unwrap();
    let answer = post_csr(&client, t.addr, &csr).await;
    assert_eq!(answer.code, Code::CHANGED, "{}", text(&answer));
    let credentials = CredentialsResponse::decode(&answer.payload).unwrap();
    assert_eq!(credentials.device_id, device_id);
    assert_eq!(credentials.hub_ca_pem, t.hub_ca.cert_pem);
    verify_chain(
        &credentials.certificate_pem,
        &t.service_ca.cert_pem,
        now(),
        true,
    )
    .unwrap();
    let info = inspect(&credentials.certificate_pem).unwrap();
    assert_eq!(info.device_id.as_deref(), Some(device_id.as_str()));
    assert_eq!(info.not_after.unix_timestamp(), credentials.not_after);
    let validity = info.not_after - now();
    assert!(validity > time::Duration::days(29) && validity <= time::Duration::days(30));
    // The certificate is for the key the device generated.
    let issued = openssl::x509::X509::from_pem(credentials.certificate_pem.as_bytes()).unwrap();
    let generated = openssl::pkey::PKey::private_key_from_pem(key.to_pem().as_bytes()).unwrap();
    assert!(issued.public_key().unwrap().public_eq(&generated));
    let stored = t.store.device(&device_id).await.unwrap().unwrap();
    assert_eq!(stored.state, DeviceState::CredentialsIssued);
    let certificates = t.store.certificates(&device_id).await.unwrap();
    assert_eq!(certificates.len(), 1);
    assert_eq!(certificates[0].pem, credentials.certificate_pem);

    // The hub step still waits for the ACL step.
    assert_eq!(
        get(&client, t.addr, protocol::HUB_PATH).await.code,
        Code::FORBIDDEN
    );

    // ACLs.
    let answer = get(&client, t.addr, protocol::ACLS_PATH).await;
    assert_eq!(answer.code, Code::CONTENT, "{}", text(&answer));
    let acls = AclsResponse::decode(&answer.payload).unwrap();
    assert_eq!(acls.acls, group(&t.maker, &t.hub_ca).acl_template);
    assert_eq!(t.store.acls(&device_id).await.unwrap(), acls.acls);

    // Hub configuration.
    let answer = get(&client, t.addr, protocol::HUB_PATH).await;
    assert_eq!(answer.code, Code::CONTENT, "{}", text(&answer));
    let hub = HubConfiguration::decode(&answer.payload).unwrap();
    assert_eq!(hub.hub_id, "hub-1");
    assert_eq!(hub.endpoint, "coaps+tcp://127.0.0.1:5684");
    assert_eq!(hub.authorization_code.as_str(), "claim-me");
    let stored = t.store.device(&device_id).await.unwrap().unwrap();
    assert_eq!(stored.state, DeviceState::Provisioned);

    // Renewal: a new CSR gets a new certificate; the device stays provisioned.
    let renewal = create_csr(&generate_key().unwrap(), &device_id).unwrap();
    let answer = post_csr(&client, t.addr, &renewal).await;
    assert_eq!(answer.code, Code::CHANGED, "{}", text(&answer));
    let renewed = CredentialsResponse::decode(&answer.payload).unwrap();
    assert_ne!(renewed.certificate_pem, credentials.certificate_pem);
    assert_eq!(t.store.certificates(&device_id).await.unwrap().len(), 2);
    let stored = t.store.device(&device_id).await.unwrap().unwrap();
    assert_eq!(stored.state, DeviceState::Provisioned);
    t.server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_manufacturer_is_refused_in_the_handshake_and_stored_nowhere() {
    let t = trial().await;
    let stranger = create_ca("Acme Manufacturer CA", YEAR * 10, now()).unwrap();
    let factory =
        issue_manufacturer_certificate(&stranger, "acme-sensor-0001", None, YEAR, now()).unwrap();
    let client = device(&factory, &t.service_ca).await;
    let result = client
        .get(&format!("coaps+tcp://{}/{}", t.addr, protocol::TIME_PATH))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let Err(error) = result else {
        panic!("a stranger's certificate must not get in");
    };
    assert!(error.to_string().contains("unknown ca"), "{error}");
    assert!(t.store.list_devices().await.unwrap().is_empty());
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_group_added_while_the_service_runs_admits_its_devices_after_a_reload() {
    let t = trial().await;
    let other_maker = create_ca("Beta Manufacturer CA", YEAR * 10, now()).unwrap();
    let factory =
        issue_manufacturer_certificate(&other_maker, "beta-0001", None, YEAR, now()).unwrap();
    let client = device(&factory, &t.service_ca).await;
    let uri = format!("coaps+tcp://{}/{}", t.addr, protocol::TIME_PATH);
    assert!(client.get(&uri).send().await.is_err());
    let mut beta = group(&other_maker, &t.hub_ca);
    beta.id = "beta".into();
    t.store.create_group(&beta).await.unwrap();
    t.service.reload_groups().await.unwrap();
    let client = device(&factory, &t.service_ca).await;
    let r = client.get(&uri).send().await.unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    t.server.shutdown().await;
}

#[tokio::test]
async fn an_expired_factory_certificate_gets_the_time_but_no_credentials() {
    let t = trial().await;
    // Issued two years ago for one year: long expired by the service's clock.
    let factory =
        issue_manufacturer_certificate(&t.maker, "acme-sensor-old", None, YEAR, now() - YEAR * 2)
            .unwrap();
    let client = device(&factory, &t.service_ca).await;
    let answer = get(&client, t.addr, protocol::TIME_PATH).await;
    assert_eq!(answer.code, Code::CONTENT, "{}", text(&answer));
    TimeResponse::decode(&answer.payload).unwrap();
    let device_id = protocol::device_id_for(&der_of(&factory.cert_pem));
    let csr = create_csr(&generate_key().unwrap(), &device_id).unwrap();
    let answer = post_csr(&client, t.addr, &csr).await;
    assert_eq!(answer.code, Code::UNAUTHORIZED, "{}", text(&answer));
    assert!(t.store.list_devices().await.unwrap().is_empty());
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_revoked_device_is_refused_at_every_step() {
    let t = trial().await;
    let factory =
        issue_manufacturer_certificate(&t.maker, "acme-sensor-0002", None, YEAR, now()).unwrap();
    let client = device(&factory, &t.service_ca).await;
    let device_id = protocol::device_id_for(&der_of(&factory.cert_pem));
    let csr = create_csr(&generate_key().unwrap(), &device_id).unwrap();
    assert_eq!(post_csr(&client, t.addr, &csr).await.code, Code::CHANGED);
    t.store
        .revoke_device(&device_id, now().unix_timestamp())
        .await
        .unwrap();
    let answer = post_csr(&client, t.addr, &csr).await;
    assert_eq!(
        (answer.code, text(&answer).as_str()),
        (Code::FORBIDDEN, "device revoked")
    );
    for path in [protocol::ACLS_PATH, protocol::HUB_PATH] {
        let answer = get(&client, t.addr, path).await;
        assert_eq!(
            (answer.code, text(&answer).as_str()),
            (Code::FORBIDDEN, "device revoked")
        );
    }
    assert!(t
        .store
        .certificates(&device_id)
        .await
        .unwrap()
        .iter()
        .all(|c| c.revoked));
    assert_eq!(t.store.certificates(&device_id).await.unwrap().len(), 1);
    t.server.shutdown().await;
}

#[tokio::test]
async fn hostile_credentials_requests_get_client_errors_and_store_no_certificate() {
    let t = trial().await;
    let factory =
        issue_manufacturer_certificate(&t.maker, "acme-sensor-0003", None, YEAR, now()).unwrap();
    let client = device(&factory, &t.service_ca).await;
    let device_id = protocol::device_id_for(&der_of(&factory.cert_pem));

    // Not CBOR at all, CBOR of the wrong shape, a CSR that is not PEM, a CSR for another
    // device id, and a CSR whose signature does not verify.
    let other_id = "00000000-0000-8000-8000-000000000000";
    let foreign = create_csr(&generate_key().unwrap(), other_id).unwrap();
    let good = create_csr(&generate_key().unwrap(), &device_id).unwrap();
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\xff\x00garbage".to_vec()),
        ("empty map", vec![0xa0]),
        (
            "not PEM",
            CredentialsRequest {
                csr_pem: "hello".into(),
            }
            .encode(),
        ),
        (
            "other device",
            CredentialsRequest { csr_pem: foreign }.encode(),
        ),
        (
            "tampered",
            CredentialsRequest { csr_pem: tampered }.encode(),
        ),
    ];
    for (name, payload) in cases {
        let answer = post(&client, t.addr, payload).await;
        assert_eq!(answer.code, Code::BAD_REQUEST, "{name}: {}", text(&answer));
    }
    // The wrong content format.
    let r = client
        .post(&format!(
            "coaps+tcp://{}/{}",
            t.addr,
            protocol::CREDENTIALS_PATH
        ))
        .content_format(ContentFormat::TEXT_PLAIN)
        .payload(CredentialsRequest { csr_pem: good }.encode())
        .send()
        .await
        .unwrap();
    assert_eq!(r.code(), Code::UNSUPPORTED_CONTENT_FORMAT);
    // Whatever enrolled the device, no certificate came of it.
    assert!(t.store.certificates(&device_id).await.unwrap().is_empty());
    t.server.shutdown().await;
}

#[tokio::test]
async fn a_device_without_a_certificate_is_refused_in_the_handshake() {
    let t = trial().await;
    let mut pki = PkiSettings::verify_only(Some(Source::Pem(
        t.service_ca.cert_pem.clone().into_bytes(),
    )));
    pki.sni = Some("localhost".into());
    let client = Context::builder().pki(pki).build().await.unwrap();
    let result = client
        .get(&format!("coaps+tcp://{}/{}", t.addr, protocol::TIME_PATH))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(result.is_err());
    t.server.shutdown().await;
}

#[tokio::test]
async fn the_service_clock_decides_validity() {
    // A service whose clock says it is three years from now: the factory certificate (valid
    // one year) is out of its validity there, so credentials are refused while time works.
    let t = trial().await;
    let later = now().unix_timestamp() + 3 * 365 * 86_400;
    let service = t.service.clone().with_clock(move || later);
    let server_cert =
        issue_server_certificate(&t.service_ca, &LOCAL_SERVER_NAMES, YEAR * 5, now()).unwrap();
    let server = Context::builder()
        .bind_tls("127.0.0.1:0".parse().unwrap())
        .tls_server(service.tls_settings(&server_cert))
        .router(service.router())
        .build()
        .await
        .unwrap();
    let addr = server.listen_addrs(Scheme::CoapsTcp)[0];
    let factory =
        issue_manufacturer_certificate(&t.maker, "acme-sensor-0004", None, YEAR, now()).unwrap();
    let client = device(&factory, &t.service_ca).await;
    let answer = get(&client, addr, protocol::TIME_PATH).await;
    assert_eq!(answer.code, Code::CONTENT);
    assert_eq!(
        TimeResponse::decode(&answer.payload).unwrap().unix_seconds,
        later as u64
    );
    let device_id = protocol::device_id_for(&der_of(&factory.cert_pem));
    let csr = create_csr(&generate_key().unwrap(), &device_id).unwrap();
    assert_eq!(post_csr(&client, addr, &csr).await.code, Code::UNAUTHORIZED);
    // On the system clock, the same device gets credentials.
    assert_eq!(post_csr(&client, t.addr, &csr).await.code, Code::CHANGED);
    server.shutdown().await;
    t.server.shutdown().await;
}

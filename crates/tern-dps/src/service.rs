//! The provisioning service: the four steps of [`crate::protocol`] as a [`tern::Router`], and
//! the mutual-TLS settings that admit devices by their manufacturer certificate.
//!
//! ```text
//! device ── coaps+tcp, manufacturer certificate ──▶ DpsService
//!   GET  /dps/time         any certificate chaining to a group's manufacturer CA,
//!                          even one outside its validity (the device has no clock yet)
//!   POST /dps/credentials  validity checked; CSR signed by the identity CA
//!   GET  /dps/acls         after credentials
//!   GET  /dps/hub          after ACLs; the device is then provisioned
//! ```
//!
//! Every step identifies the device by the leaf certificate the TLS layer verified
//! ([`tern::Request::peer_identity`]): its device id is [`protocol::device_id_for`] of that
//! certificate, its store key [`protocol::fingerprint`].
//!
//! The TLS layer ([`DpsService::tls_settings`]) cannot ask the (asynchronous) store during a
//! handshake, so it checks client certificates against a snapshot of the enrollment groups'
//! manufacturer CAs. [`DpsService::new`] takes the first snapshot; after adding or changing a
//! group, call [`DpsService::reload_groups`]. A handshake whose certificate matches no CA of
//! the snapshot also starts a reload in the background (at most one a second), so a device of
//! a group added meanwhile gets in on its next attempt.

mod admission;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tern::tls::{CertificateCheck, PkiSettings, Source, TlsSettings};
use tern::{Code, ContentFormat, PeerIdentity, Request, Response, Router};
use tern_store::{
    DeviceState, EnrollmentGroup, IssuedCertificate, ProvisioningStore, Store, StoreError,
};
use time::OffsetDateTime;

use crate::pki::{CertifiedKey, IdentitySigner, PkiError};
use crate::protocol::{
    self, AclsResponse, CredentialsRequest, CredentialsResponse, HubConfiguration, TimeResponse,
};
use admission::{GroupCa, Refusal};

/// The service's clock: Unix seconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// How often a handshake that matches no cached CA may start a reload of the groups.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// How long the steps use the enrollment groups they read from the store before reading them
/// again: a changed or deleted group takes effect within this time; a certificate that no
/// group read so far admits has the groups read again at once, so an added group is seen at
/// once.
const GROUPS_FRESH: Duration = Duration::from_secs(1);

/// Why the service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The identity CA could not be loaded.
    #[error("identity CA: {0}")]
    Pki(#[from] PkiError),
    /// The store could not be read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The provisioning service: a store, the identity CA that signs devices' CSRs, and a clock.
///
/// Cheap to clone (everything is shared); [`DpsService::router`] and
/// [`DpsService::tls_settings`] may be called any number of times.
#[derive(Clone)]
pub struct DpsService {
    store: Arc<Store>,
    signer: Arc<IdentitySigner>,
    clock: Clock,
    /// The manufacturer CA bundles of every enrollment group, parsed (PEM beside it), for the
    /// TLS layer and the steps.
    group_cas: Arc<RwLock<GroupAnchors>>,
    /// When a handshake miss last started a reload.
    last_miss_reload: Arc<Mutex<Option<Instant>>>,
    /// The enrollment groups as last read, and when.
    groups: Arc<Mutex<Option<GroupsRead>>>,
}

impl std::fmt::Debug for DpsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpsService")
            .field("store", &self.store)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// An answer that ends a step early (a refusal or an error response).
type Step<T> = Result<T, Response>;

/// The enrollment groups read from the store, and when.
type GroupsRead = (Instant, Arc<Vec<EnrollmentGroup>>);

/// Each group's manufacturer CA bundle as written in the store, parsed.
type GroupAnchors = Vec<Arc<GroupCa>>;

impl DpsService {
    /// A service on `store`, signing identity certificates with `identity_ca`, on the system
    /// clock. Loads the enrollment groups' manufacturer CAs for the TLS layer; call
    /// [`DpsService::reload_groups`] after changing groups while the service runs.
    pub async fn new(store: Arc<Store>, identity_ca: &CertifiedKey) -> Result<Self, ServiceError> {
        let service = DpsService {
            store,
            signer: Arc::new(IdentitySigner::new(identity_ca)?),
            clock: Arc::new(system_now),
            group_cas: Arc::new(RwLock::new(Vec::new())),
            last_miss_reload: Arc::new(Mutex::new(None)),
            groups: Arc::new(Mutex::new(None)),
        };
        service.reload_groups().await?;
        Ok(service)
    }

    /// The same service on another clock (Unix seconds), e.g. a fixed time in tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The store the service works on.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Re-reads the enrollment groups' manufacturer CAs that the TLS layer admits clients by.
    /// Needed after an operator adds, changes or deletes a group while the service runs.
    pub async fn reload_groups(&self) -> Result<(), StoreError> {
        reload(&self.store, &self.group_cas).await
    }

    /// The router with the four provisioning resources ([`protocol::TIME_PATH`],
    /// [`protocol::CREDENTIALS_PATH`], [`protocol::ACLS_PATH`], [`protocol::HUB_PATH`]).
    pub fn router(&self) -> Router {
        let (time, credentials, acls, hub) =
            (self.clone(), self.clone(), self.clone(), self.clone());
        Router::new()
            .get(&format!("/{}", protocol::TIME_PATH), move |r: Request| {
                let s = time.clone();
                async move { s.time(&r).await.unwrap_or_else(|refusal| refusal) }
            })
            .post(
                &format!("/{}", protocol::CREDENTIALS_PATH),
                move |r: Request| {
                    let s = credentials.clone();
                    async move { s.credentials(&r).await.unwrap_or_else(|refusal| refusal) }
                },
            )
            .get(&format!("/{}", protocol::ACLS_PATH), move |r: Request| {
                let s = acls.clone();
                async move { s.acls(&r).await.unwrap_or_else(|refusal| refusal) }
            })
            .get(&format!("/{}", protocol::HUB_PATH), move |r: Request| {
                let s = hub.clone();
                async move { s.hub(&r).await.unwrap_or_else(|refusal| refusal) }
            })
    }

    /// TLS server settings for the service: `server_cert` as its certificate, and a client
    /// certificate required whose leaf chains directly to the manufacturer CA of some
    /// enrollment group (validity not checked here: the time step serves devices without a
    /// clock; the credentials step checks it).
    ///
    /// No CA is configured in OpenSSL (groups change while the service runs): OpenSSL's own
    /// verdict is always "issuer unknown", and the validation callback decides instead, from
    /// the snapshot [`DpsService::reload_groups`] keeps. Certificates the client sends beyond
    /// its leaf are not used, so a group must name the CA that issues its devices' certificates.
    pub fn tls_settings(&self, server_cert: &CertifiedKey) -> TlsSettings {
        let mut pki = PkiSettings::new(
            Source::Pem(server_cert.cert_pem.clone().into_bytes()),
            Source::Pem(server_cert.key_pem.as_bytes().to_vec()),
            None,
        );
        pki.verify_peer = true;
        pki.require_peer_certificate = true;
        let service = self.clone();
        pki.validate = Some(Arc::new(move |check: &CertificateCheck| {
            service.admits_in_handshake(check)
        }));
        TlsSettings {
            pki: Some(pki),
            ..TlsSettings::default()
        }
    }

    /// The TLS validation callback: the leaf (depth 0) decides; the rest of the chain is the
    /// client's business (the leaf must chain to a group CA by itself).
    fn admits_in_handshake(&self, check: &CertificateCheck) -> bool {
        if check.depth > 0 {
            return true;
        }
        let now = self.now_time().unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let cas = self.anchors();
        if cas
            .iter()
            .any(|ca| ca.check(&check.der, now, false).is_ok())
        {
            return true;
        }
        tracing::debug!(
            subject = check.common_name.as_deref().unwrap_or(""),
            "client certificate matches no enrollment group"
        );
        self.reload_after_miss();
        false
    }

    /// The parsed group CAs, as last loaded.
    fn anchors(&self) -> GroupAnchors {
        match self.group_cas.read() {
            Ok(cas) => cas.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Starts a background reload of the groups, at most once per [`MISS_RELOAD_INTERVAL`].
    fn reload_after_miss(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut last = match self.last_miss_reload.lock() {
                Ok(last) => last,
                Err(poisoned) => poisoned.into_inner(),
            };
            if last.is_some_and(|at| at.elapsed() < MISS_RELOAD_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let (store, cas) = (self.store.clone(), self.group_cas.clone());
        runtime.spawn(async move {
            if let Err(error) = reload(&store, &cas).await {
                tracing::warn!(%error, "reloading enrollment groups failed");
            }
        });
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn now_time(&self) -> Step<OffsetDateTime> {
        let now = self.now();
        OffsetDateTime::from_unix_timestamp(now).map_err(|_| {
            tracing::warn!(now, "the service clock is out of range");
            internal()
        })
    }

    /// `GET /dps/time`.
    async fn time(&self, request: &Request) -> Step<Response> {
        self.admit(request, false).await?;
        let time = TimeResponse {
            unix_seconds: u64::try_from(self.now()).unwrap_or(0),
        };
        Ok(cbor(Code::CONTENT, time.encode()))
    }

    /// `POST /dps/credentials`.
    async fn credentials(&self, request: &Request) -> Step<Response> {
        let client = self.admit(request, true).await?;
        if request.content_format() != Some(ContentFormat::CBOR) {
            return Err(Response::error(
                Code::UNSUPPORTED_CONTENT_FORMAT,
                "the credentials request must be CBOR (Content-Format 60)",
            ));
        }
        let csr = CredentialsRequest::decode(request.payload())
            .map_err(|e| Response::error(Code::BAD_REQUEST, e.to_string()))?;
        let now = self.now();
        let now_time = self.now_time()?;
        let fingerprint = protocol::fingerprint(&client.der);
        let new_id = protocol::device_id_for(&client.der);
        let device = self
            .store
            .enroll_device(
                &fingerprint,
                &client.subject,
                &client.group.id,
                &new_id,
                now,
            )
            .await
            .map_err(store_failure("enroll_device"))?;
        if device.state == DeviceState::Revoked {
            return Err(revoked());
        }
        // A device enrolled before keeps its record, which names its group.
        let group = if device.group_id == client.group.id {
            client.group
        } else {
            self.device_group(&device.group_id).await?
        };
        let validity = Duration::from_secs(u64::from(group.certificate_validity_days) * 86_400);
        let issued = self
            .signer
            .sign_csr(&csr.csr_pem, &device.device_id, validity, now_time, None)
            .map_err(|error| {
                if is_csr_fault(&error) {
                    Response::error(Code::BAD_REQUEST, error.to_string())
                } else {
                    tracing::warn!(device_id = %device.device_id, %error, "signing failed");
                    internal()
                }
            })?;
        let not_after = issued.not_after.unix_timestamp();
        // The store moves the device to at least CredentialsIssued: a renewal leaves a
        // provisioned device provisioned.
        self.store
            .record_certificate(
                &device.device_id,
                IssuedCertificate {
                    serial: issued.serial_hex.clone(),
                    device_id: device.device_id.clone(),
                    not_before: issued.not_before.unix_timestamp(),
                    not_after,
                    revoked: false,
                    pem: issued.cert_pem.clone(),
                },
                now,
            )
            .await
            .map_err(store_failure("record_certificate"))?;
        let answer = CredentialsResponse {
            device_id: device.device_id,
            certificate_pem: issued.cert_pem,
            hub_ca_pem: group.hub_ca_pem,
            not_after,
        };
        Ok(cbor(Code::CHANGED, answer.encode()))
    }

    /// `GET /dps/acls`.
    async fn acls(&self, request: &Request) -> Step<Response> {
        let client = self.admit(request, true).await?;
        let (device, group) = self
            .provisioning_device(
                &client,
                DeviceState::CredentialsIssued,
                "credentials step first",
            )
            .await?;
        let acls = group.acl_template;
        self.store
            .set_acls(&device.device_id, acls.clone(), self.now())
            .await
            .map_err(store_failure("set_acls"))?;
        Ok(cbor(Code::CONTENT, AclsResponse { acls }.encode()))
    }

    /// `GET /dps/hub`.
    async fn hub(&self, request: &Request) -> Step<Response> {
        let client = self.admit(request, true).await?;
        let (device, group) = self
            .provisioning_device(&client, DeviceState::AclsIssued, "ACL step first")
            .await?;
        self.store
            .mark_provisioned(&device.device_id, self.now())
            .await
            .map_err(store_failure("mark_provisioned"))?;
        let answer = HubConfiguration {
            hub_id: group.hub_id,
            endpoint: group.hub_endpoint,
            authorization_code: zeroize::Zeroizing::new(group.authorization_code),
        };
        Ok(cbor(Code::CONTENT, answer.encode()))
    }

    /// The enrolled device of `client` and its group, if it is not revoked and has reached
    /// `needed` (else 4.03 with `first`).
    async fn provisioning_device(
        &self,
        client: &Client,
        needed: DeviceState,
        first: &str,
    ) -> Step<(tern_store::Device, EnrollmentGroup)> {
        let device = self
            .store
            .device_by_fingerprint(&protocol::fingerprint(&client.der))
            .await
            .map_err(store_failure("device_by_fingerprint"))?
            .ok_or_else(|| Response::error(Code::FORBIDDEN, first))?;
        if device.state == DeviceState::Revoked {
            return Err(revoked());
        }
        if device.state < needed {
            return Err(Response::error(Code::FORBIDDEN, first));
        }
        let group = self.device_group(&device.group_id).await?;
        Ok((device, group))
    }

    async fn device_group(&self, group_id: &str) -> Step<EnrollmentGroup> {
        let (groups, _) = self.groups(false).await?;
        if let Some(group) = groups.iter().find(|group| group.id == group_id) {
            return Ok(group.clone());
        }
        match self.store.group(group_id).await {
            Ok(Some(group)) => Ok(group),
            Ok(None) => {
                tracing::warn!(group_id, "a device's enrollment group is missing");
                Err(internal())
            }
            Err(error) => Err(store_failure("group")(error)),
        }
    }

    /// The client's certificate and the first group whose manufacturer CA it chains to.
    ///
    /// No certificate: 4.01. No group: 4.03 "unknown manufacturer". With `check_validity`,
    /// a certificate that chains but is not valid at the service's time: 4.01 saying why.
    async fn admit(&self, request: &Request, check_validity: bool) -> Step<Client> {
        let Some(PeerIdentity::Certificate {
            der, common_name, ..
        }) = request.peer_identity()
        else {
            return Err(Response::error(
                Code::UNAUTHORIZED,
                "a client certificate is required",
            ));
        };
        let now = self.now_time()?;
        let (mut groups, mut cached) = self.groups(false).await?;
        loop {
            match self.admitting_group(&groups, der, now, check_validity) {
                Ok(group) => {
                    return Ok(Client {
                        der: der.clone(),
                        subject: common_name.clone().unwrap_or_default(),
                        group: group.clone(),
                    })
                }
                Err(_) if cached => (groups, cached) = self.groups(true).await?,
                Err(refusal) => return Err(refusal),
            }
        }
    }

    /// The enrollment groups, as read from the store at most [`GROUPS_FRESH`] ago (or now,
    /// with `afresh`); true when they were not read now.
    async fn groups(&self, afresh: bool) -> Step<(Arc<Vec<EnrollmentGroup>>, bool)> {
        let lock = || match self.groups.lock() {
            Ok(groups) => groups,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !afresh {
            if let Some((read, groups)) = lock().as_ref() {
                if read.elapsed() < GROUPS_FRESH {
                    return Ok((groups.clone(), true));
                }
            }
        }
        let read = Instant::now();
        let groups = Arc::new(
            self.store
                .list_groups()
                .await
                .map_err(store_failure("list_groups"))?,
        );
        *lock() = Some((read, groups.clone()));
        Ok((groups, false))
    }

    /// The first of `groups` whose manufacturer CA admits the certificate `der` at `now`, or
    /// the refusal.
    fn admitting_group<'g>(
        &self,
        groups: &'g [EnrollmentGroup],
        der: &[u8],
        now: OffsetDateTime,
        check_validity: bool,
    ) -> Step<&'g EnrollmentGroup> {
        let known = self.anchors();
        let mut invalid_now = None;
        for group in groups {
            // The store is the truth; the parsed snapshot only saves parsing again.
            let ca = match known.iter().find(|ca| ca.pem == group.manufacturer_ca_pem) {
                Some(ca) => ca.clone(),
                None => match GroupCa::from_pem(group.manufacturer_ca_pem.clone()) {
                    Ok(ca) => Arc::new(ca),
                    Err(_) => continue,
                },
            };
            match ca.check(der, now, check_validity) {
                Ok(()) => return Ok(group),
                Err(Refusal::NotValidNow(reason)) => {
                    invalid_now.get_or_insert(reason);
                }
                Err(Refusal::DoesNotChain) => {}
            }
        }
        Err(match invalid_now {
            Some(reason) => Response::error(Code::UNAUTHORIZED, reason),
            None => Response::error(Code::FORBIDDEN, "unknown manufacturer"),
        })
    }
}

/// A client admitted by its manufacturer certificate.
struct Client {
    der: Vec<u8>,
    subject: String,
    group: EnrollmentGroup,
}

async fn reload(store: &Store, cas: &RwLock<GroupAnchors>) -> Result<(), StoreError> {
    let groups = store.list_groups().await?;
    let known = match cas.read() {
        Ok(cas) => cas.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let mut fresh = GroupAnchors::with_capacity(groups.len());
    for group in groups {
        // An unchanged CA keeps what it remembers.
        if let Some(ca) = known.iter().find(|ca| ca.pem == group.manufacturer_ca_pem) {
            fresh.push(ca.clone());
            continue;
        }
        match GroupCa::from_pem(group.manufacturer_ca_pem) {
            Ok(ca) => fresh.push(Arc::new(ca)),
            Err(error) => {
                tracing::warn!(group = %group.id, %error, "enrollment group's manufacturer CA is unusable; its devices are refused")
            }
        }
    }
    match cas.write() {
        Ok(mut cas) => *cas = fresh,
        Err(poisoned) => *poisoned.into_inner() = fresh,
    }
    Ok(())
}

fn system_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn cbor(code: Code, payload: Vec<u8>) -> Response {
    Response::new(code)
        .with_content_format(ContentFormat::CBOR)
        .with_payload(payload)
}

fn internal() -> Response {
    Response::error(Code::INTERNAL_SERVER_ERROR, "internal error")
}

fn revoked() -> Response {
    Response::error(Code::FORBIDDEN, "device revoked")
}

/// Maps a store error to its answer: a revoked device is refused, anything else is logged
/// and answered 5.00.
fn store_failure(operation: &'static str) -> impl Fn(StoreError) -> Response {
    move |error| match error {
        StoreError::Revoked(_) => revoked(),
        error => {
            tracing::warn!(operation, %error, "provisioning store failed");
            internal()
        }
    }
}

/// Whether a signing failure is the CSR's fault (4.00) rather than the service's (5.00).
fn is_csr_fault(error: &PkiError) -> bool {
    matches!(
        error,
        PkiError::BadPem { .. }
            | PkiError::WrongPemLabel { .. }
            | PkiError::PemBlockCount { .. }
            | PkiError::BadCsr { .. }
            | PkiError::CsrSignature
            | PkiError::WrongKeyType { .. }
            | PkiError::DeviceIdMismatch { .. }
    )
}

//! The device client: runs a [`Provisioner`] over coaps+tcp with the manufacturer
//! certificate, persists the state after every step, and reports status to a callback.

use std::path::Path;
use std::time::{Duration, Instant};

use tern::proto::endpoint::RequestError;
use tern::proto::uri::Scheme;
use tern::tls::{PkiSettings, Source, TlsSettings};
use tern::{ContentFormat, Context, Error};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::machine::{Action, Answer, Outcome, Provisioner, StepRequest};
use super::state::{ProvisionedState, StateError, StateFile};
use super::{ErrorCode, StatusReport};
use crate::pki::{parse_pem_bundle, CertifiedKey, PkiError};
use crate::schedule::RetrySchedule;

/// The service's trust anchor in a device's certificate folder.
pub const SERVICE_CA_FILE: &str = "dpsca.pem";
/// The manufacturer certificate in a device's certificate folder.
pub const MANUFACTURER_CERT_FILE: &str = "mfgcrt.pem";
/// The manufacturer key in a device's certificate folder.
pub const MANUFACTURER_KEY_FILE: &str = "mfgkey.pem";

/// How long one step's request may take, connection and handshake included, by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the device client stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The manufacturer credentials or the service's trust anchor are unusable.
    #[error("{what}: {source}")]
    Credentials {
        /// Which file or credential.
        what: String,
        /// Why.
        source: PkiError,
    },
    /// A credentials file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// An endpoint is not a coaps+tcp URI, or there is none.
    #[error("service endpoint {0}")]
    Endpoint(String),
    /// The state could not be loaded or saved; provisioning cannot go on without it.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a device leaves the factory with: its manufacturer certificate and key, and the
/// provisioning service's trust anchor (`None`: the service is not verified).
#[derive(Clone)]
pub struct FactoryCredentials {
    /// The manufacturer certificate (and any intermediates) with its key.
    pub certificate: CertifiedKey,
    /// The service's trust anchors, PEM; `None` accepts any service certificate.
    pub service_ca_pem: Option<String>,
}

impl std::fmt::Debug for FactoryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactoryCredentials")
            .field("certificate", &self.certificate)
            .field("verifies_service", &self.service_ca_pem.is_some())
            .finish()
    }
}

impl FactoryCredentials {
    /// Loads `mfgcrt.pem`, `mfgkey.pem` and (with `verify_service`) `dpsca.pem` from `dir`.
    pub fn load(dir: &Path, verify_service: bool) -> Result<Self, DeviceError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| DeviceError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let cert_pem = read(MANUFACTURER_CERT_FILE)?;
        let key_pem = Zeroizing::new(read(MANUFACTURER_KEY_FILE)?);
        let certificate = CertifiedKey::from_pem(cert_pem, key_pem).map_err(|source| {
            DeviceError::Credentials {
                what: format!(
                    "{} with {}",
                    dir.join(MANUFACTURER_CERT_FILE).display(),
                    MANUFACTURER_KEY_FILE
                ),
                source,
            }
        })?;
        let service_ca_pem = if verify_service {
            let pem = read(SERVICE_CA_FILE)?;
            parse_pem_bundle(&pem).map_err(|source| DeviceError::Credentials {
                what: dir.join(SERVICE_CA_FILE).display().to_string(),
                source,
            })?;
            Some(pem)
        } else {
            None
        };
        Ok(FactoryCredentials {
            certificate,
            service_ca_pem,
        })
    }

    /// The manufacturer certificate's DER (the leaf).
    fn leaf_der(&self) -> Result<Vec<u8>, DeviceError> {
        let mut chain = parse_pem_bundle(&self.certificate.cert_pem).map_err(|source| {
            DeviceError::Credentials {
                what: "manufacturer certificate".into(),
                source,
            }
        })?;
        Ok(chain.remove(0).into_bytes())
    }
}

/// Runs provisioning for one device.
#[derive(Debug)]
pub struct DeviceClient {
    factory: FactoryCredentials,
    endpoints: Vec<String>,
    schedule: RetrySchedule,
    state_file: StateFile,
    request_timeout: Duration,
}

impl DeviceClient {
    /// A client for the device with `factory` credentials, trying `endpoints` (coaps+tcp
    /// URIs, failing over in this order) and keeping its state in `state_file`, on the
    /// default schedule.
    pub fn new(
        factory: FactoryCredentials,
        endpoints: Vec<String>,
        state_file: StateFile,
    ) -> Result<Self, DeviceError> {
        if endpoints.is_empty() {
            return Err(DeviceError::Endpoint("list is empty".into()));
        }
        let mut normalized = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let uri = tern::proto::uri::CoapUri::parse(&endpoint)
                .map_err(|e| DeviceError::Endpoint(format!("{endpoint:?}: {e}")))?;
            if uri.scheme != Scheme::CoapsTcp {
                return Err(DeviceError::Endpoint(format!(
                    "{endpoint:?}: provisioning runs over coaps+tcp://"
                )));
            }
            normalized.push(endpoint.trim_end_matches('/').to_owned());
        }
        Ok(DeviceClient {
            factory,
            endpoints: normalized,
            schedule: RetrySchedule::default(),
            state_file,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// The same client on another retry schedule.
    pub fn with_schedule(mut self, schedule: RetrySchedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The same client with another per-request time-out.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The file the state is kept in.
    pub fn state_file(&self) -> &StateFile {
        &self.state_file
    }

    /// The saved state, if any.
    pub fn load_state(&self) -> Result<Option<ProvisionedState>, DeviceError> {
        let fingerprint = crate::protocol::fingerprint(&self.factory.leaf_der()?);
        Ok(self.state_file.load(&fingerprint)?)
    }

    /// Deletes what provisioning installed; the next [`DeviceClient::provision`] starts
    /// over. To reload the manufacturer credentials as well, build a new client from
    /// [`FactoryCredentials::load`].
    pub fn factory_reset(&self) -> Result<(), DeviceError> {
        tracing::info!(path = %self.state_file.path().display(), "factory reset");
        Ok(self.state_file.remove()?)
    }

    /// Provisions the device, resuming from the saved state: runs every step still to do,
    /// retrying failures forever on the schedule, saving the state after each step and
    /// calling `on_status` after every change. Returns the state once provisioned; fails
    /// only when the state cannot be loaded or saved.
    pub async fn provision(
        &self,
        mut on_status: impl FnMut(&StatusReport),
    ) -> Result<ProvisionedState, DeviceError> {
        let der = self.factory.leaf_der()?;
        let saved = self.state_file.load(&crate::protocol::fingerprint(&der))?;
        let mut machine =
            Provisioner::new(&der, saved, self.schedule.clone(), self.endpoints.len());
        on_status(&machine.report());
        let mut connections = Connections::default();
        let result = loop {
            match machine.poll(Instant::now(), unix_now()) {
                Action::Done => break Ok(machine.state().clone()),
                Action::WaitUntil(at) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await
                }
                Action::AwaitingAnswer => {
                    // This loop answers every request before polling again.
                    unreachable_answer(&mut machine);
                }
                Action::Send(request) => {
                    let answer = self.send(&mut connections, &request).await;
                    match machine.handle(answer, Instant::now(), unix_now()) {
                        Outcome::Advanced(step) => {
                            if let Err(e) = self.save(machine.state()).await {
                                break Err(e);
                            }
                            tracing::info!(%step, device_id = machine.device_id(), "provisioning step done");
                        }
                        Outcome::Retry { failure, at } => {
                            tracing::warn!(%failure, retry_in = ?at.saturating_duration_since(Instant::now()), "provisioning step failed");
                            // A new attempt gets a new connection.
                            connections.close().await;
                        }
                        Outcome::Ignored => {}
                    }
                    on_status(&machine.report());
                }
            }
        };
        connections.close().await;
        result
    }

    /// Saves `state` off the async runtime: writing it durably waits on the disk (fsyncs of
    /// the file and its directory), which would stall every task on the runtime's thread.
    async fn save(&self, state: &ProvisionedState) -> Result<(), DeviceError> {
        let (file, copy) = (self.state_file.clone(), state.clone());
        match tokio::task::spawn_blocking(move || file.save(&copy)).await {
            Ok(result) => Ok(result?),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // The blocking task did not run (the runtime is shutting down): saving in place
            // still keeps the state.
            Err(_) => Ok(self.state_file.save(state)?),
        }
    }

    fn pki(&self, skip_validity: bool) -> PkiSettings {
        let certificate = &self.factory.certificate;
        let mut pki = PkiSettings::new(
            Source::Pem(certificate.cert_pem.clone().into_bytes()),
            Source::Pem(certificate.key_pem.as_bytes().to_vec()),
            self.factory
                .service_ca_pem
                .as_ref()
                .map(|pem| Source::Pem(pem.clone().into_bytes())),
        );
        pki.allow_expired = skip_validity;
        pki
    }

    async fn send(&self, connections: &mut Connections, request: &StepRequest) -> Answer {
        let slot = if request.skip_validity {
            &mut connections.lenient
        } else {
            &mut connections.strict
        };
        if slot.is_none() {
            // TLS settings only: a DTLS context too would double the set-up, which in
            // OpenSSL 3 (parsing the key and certificates) costs more than the handshake.
            match Context::builder()
                .tls_client(TlsSettings {
                    pki: Some(self.pki(request.skip_validity)),
                    ..TlsSettings::default()
                })
                .build()
                .await
            {
                Ok(context) => *slot = Some(context),
                Err(e) => {
                    return Answer::Failed {
                        code: ErrorCode::Local,
                        detail: format!("cannot set up the client: {e}"),
                    }
                }
            }
        }
        let Some(context) = slot.as_ref() else {
            return Answer::Failed {
                code: ErrorCode::Local,
                detail: "no client".into(),
            };
        };
        let endpoint = &self.endpoints[request.endpoint.min(self.endpoints.len() - 1)];
        let uri = format!("{endpoint}/{}", request.path);
        let builder = if request.post {
            context
                .post(&uri)
                .content_format(ContentFormat::CBOR)
                .payload(request.payload.clone())
        } else {
            context.get(&uri)
        };
        match builder.timeout(self.request_timeout).send().await {
            Ok(response) => Answer::Response {
                code: response.code(),
                payload: response.payload().to_vec(),
            },
            Err(error) => {
                let (code, detail) = classify(&error);
                Answer::Failed { code, detail }
            }
        }
    }
}

/// The client contexts of a run: one that checks the service certificate's validity period
/// and one that does not (for the time step). Dropped after a failure.
#[derive(Default)]
struct Connections {
    strict: Option<Context>,
    lenient: Option<Context>,
}

impl Connections {
    async fn close(&mut self) {
        for context in [self.strict.take(), self.lenient.take()]
            .into_iter()
            .flatten()
        {
            context.shutdown().await;
        }
    }
}

/// A request error as an [`ErrorCode`] and a description.
fn classify(error: &Error) -> (ErrorCode, String) {
    let detail = error.to_string();
    let code = match error {
        Error::Request(RequestError::Timeout) => ErrorCode::Timeout,
        // The stream layer reports a connection that could not be made this way; anything
        // else on the channel is the TLS handshake or the connection failing.
        Error::Request(RequestError::ChannelFailed(reason))
            if reason.starts_with("cannot connect to") =>
        {
            ErrorCode::Unreachable
        }
        // A stream closed or reset with no alert is not a verdict on the certificates: a
        // listener past its handshake cap closes new connections at once.
        Error::Request(RequestError::ChannelFailed(reason)) if is_dropped(reason) => {
            ErrorCode::Dropped
        }
        Error::Request(RequestError::ChannelFailed(_)) | Error::Tls(_) => ErrorCode::Handshake,
        // Resolution, addresses, sockets, and anything else that kept the request from going out.
        _ => ErrorCode::Unreachable,
    };
    (code, detail)
}

/// Whether a channel failure is the connection going away rather than a TLS refusal.
fn is_dropped(reason: &str) -> bool {
    !reason.contains("alert")
        && [
            "closed the stream",
            "reset by peer",
            "broken pipe",
            "os error 104",
            "os error 32",
        ]
        .iter()
        .any(|sign| reason.to_ascii_lowercase().contains(sign))
}

/// [`Action::AwaitingAnswer`] cannot happen in [`DeviceClient::provision`]; should it, the
/// request is treated as lost so that the run goes on.
fn unreachable_answer(machine: &mut Provisioner) {
    machine.handle(
        Answer::Failed {
            code: ErrorCode::Local,
            detail: "request lost".into(),
        },
        Instant::now(),
        unix_now(),
    );
}

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

//! The device's provisioning state machine, sans-IO.
//!
//! [`Provisioner::poll`] says what to do at `now`: send a step's request to an endpoint, wait
//! until a retry is due, or nothing (provisioned). The caller performs the request and hands
//! the answer (or the reason there was none) to [`Provisioner::handle`], which either
//! advances (the caller persists [`Provisioner::state`] before polling again) or schedules
//! the retry on the [`Attempts`] schedule, failing over to the next endpoint.
//!
//! Steps run in order: time (once per run, before any other step), credentials, ACLs, hub.
//! A state that already holds a step's result skips it, so a restarted device resumes where
//! it stopped and a provisioned one does nothing, except renew its identity certificate when
//! 2/3 of its validity have passed (by the service's clock as last learnt).

use std::time::Instant;

use tern::Code;
use time::OffsetDateTime;

use super::state::{HubSettings, IdentityCredentials, ProvisionedState};
use super::{ErrorCode, Status, StatusReport, Step, StepFailure};
use crate::pki::{create_csr, generate_key, inspect, CertifiedKey, PrivateKey};
use crate::protocol::{
    self, AclsResponse, CredentialsRequest, CredentialsResponse, HubConfiguration, TimeResponse,
};
use crate::schedule::{Attempts, RetrySchedule};

/// The longest diagnostic kept from a refusal.
const MAX_DETAIL_LEN: usize = 200;

/// One step's request, for the caller to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRequest {
    /// The step.
    pub step: Step,
    /// The index of the service endpoint to send it to.
    pub endpoint: usize,
    /// POST (with `payload` as CBOR) rather than GET.
    pub post: bool,
    /// The resource path, without the leading `/`.
    pub path: &'static str,
    /// The request payload (CBOR), empty for GET.
    pub payload: Vec<u8>,
    /// Whether the connection may accept a service certificate outside its validity period
    /// (the time step: the device's clock is not trusted before it).
    pub skip_validity: bool,
}

/// What the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this request, then call [`Provisioner::handle`].
    Send(StepRequest),
    /// Nothing until this instant (a retry is scheduled); poll again then.
    WaitUntil(Instant),
    /// A request is out; call [`Provisioner::handle`] with its answer first.
    AwaitingAnswer,
    /// Every step is done.
    Done,
}

/// What came of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The service answered.
    Response {
        /// The response code.
        code: Code,
        /// The response payload.
        payload: Vec<u8>,
    },
    /// There was no answer.
    Failed {
        /// Why, as a code: [`ErrorCode::Unreachable`], [`ErrorCode::Timeout`] or
        /// [`ErrorCode::Handshake`].
        code: ErrorCode,
        /// What happened.
        detail: String,
    },
}

/// What [`Provisioner::handle`] made of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step succeeded and the state changed: persist [`Provisioner::state`] now.
    Advanced(Step),
    /// The step failed; the next attempt is due at `at`.
    Retry {
        /// When to poll again.
        at: Instant,
        /// What failed.
        failure: StepFailure,
    },
    /// No request was out: the answer was ignored.
    Ignored,
}

struct InFlight {
    step: Step,
    endpoint: usize,
    /// The key the CSR of a credentials request was made from.
    key: Option<PrivateKey>,
}

/// The device's provisioning state machine.
pub struct Provisioner {
    fingerprint: String,
    device_id: String,
    state: ProvisionedState,
    attempts: Attempts,
    retry_at: Option<Instant>,
    in_flight: Option<InFlight>,
    /// Whether the time step succeeded in this run.
    has_time: bool,
    last_failure: Option<StepFailure>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("device_id", &self.device_id)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Provisioner {
    /// A provisioner for the device whose manufacturer certificate is `manufacturer_der`,
    /// resuming from `saved` (as [`super::StateFile::load`] returned it, so it belongs to
    /// this certificate), retrying on `schedule` over `endpoints` service endpoints.
    pub fn new(
        manufacturer_der: &[u8],
        saved: Option<ProvisionedState>,
        schedule: RetrySchedule,
        endpoints: usize,
    ) -> Self {
        let fingerprint = protocol::fingerprint(manufacturer_der);
        let device_id = protocol::device_id_for(manufacturer_der);
        let state = saved
            .unwrap_or_else(|| ProvisionedState::fresh(fingerprint.clone(), device_id.clone()));
        Provisioner {
            fingerprint,
            device_id,
            state,
            attempts: Attempts::new(schedule, endpoints),
            retry_at: None,
            in_flight: None,
            has_time: false,
            last_failure: None,
        }
    }

    /// The device id (derived from the manufacturer certificate).
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// What provisioning has installed so far.
    pub fn state(&self) -> &ProvisionedState {
        &self.state
    }

    /// The status flags.
    pub fn status(&self) -> Status {
        let mut status = Status::INITIALIZED
            .with(Status::HAS_TIME, self.has_time)
            .with(Status::HAS_CREDENTIALS, self.state.identity.is_some())
            .with(Status::HAS_ACLS, self.state.acls.is_some())
            .with(Status::HAS_HUB_CONFIGURATION, self.state.hub.is_some());
        if let Some(failure) = &self.last_failure {
            status = status.with(
                if failure.code.is_transient() {
                    Status::TRANSIENT_FAILURE
                } else {
                    Status::FAILURE
                },
                true,
            );
        }
        status
    }

    /// The status flags with the last failure, for the status callback.
    pub fn report(&self) -> StatusReport {
        StatusReport {
            status: self.status(),
            failure: self.last_failure.clone(),
        }
    }

    /// The schedule's bookkeeping (which endpoint is next, how many failures in a row).
    pub fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// Forgets everything provisioning installed and starts over from the first step (the
    /// caller deletes the persisted state too).
    pub fn factory_reset(&mut self) {
        self.state = ProvisionedState::fresh(self.fingerprint.clone(), self.device_id.clone());
        self.attempts = Attempts::new(self.attempts.schedule().clone(), self.attempts.endpoints());
        self.retry_at = None;
        self.in_flight = None;
        self.has_time = false;
        self.last_failure = None;
    }

    /// The step due now, if any. `unix_now` is the device's clock (Unix seconds).
    fn next_step(&self, unix_now: i64) -> Option<Step> {
        let credentials_due = match &self.state.identity {
            None => true,
            Some(identity) => {
                let service_now =
                    unix_now.saturating_add(self.state.service_clock_offset.unwrap_or(0));
                match (
                    inspect(&identity.certificate_pem),
                    OffsetDateTime::from_unix_timestamp(service_now),
                ) {
                    (Ok(info), Ok(now)) => info.renewal_due(now),
                    // A certificate that does not inspect is replaced.
                    (Err(_), _) => true,
                    (_, Err(_)) => false,
                }
            }
        };
        if !credentials_due && self.state.acls.is_some() && self.state.hub.is_some() {
            return None;
        }
        Some(if !self.has_time {
            Step::Time
        } else if credentials_due {
            Step::Credentials
        } else if self.state.acls.is_none() {
            Step::Acls
        } else {
            Step::Hub
        })
    }

    /// What to do at `now` (monotonic, for the schedule) and `unix_now` (the device's clock,
    /// for renewal).
    pub fn poll(&mut self, now: Instant, unix_now: i64) -> Action {
        if self.in_flight.is_some() {
            return Action::AwaitingAnswer;
        }
        let Some(step) = self.next_step(unix_now) else {
            return Action::Done;
        };
        if let Some(at) = self.retry_at {
            if at > now {
                return Action::WaitUntil(at);
            }
        }
        self.retry_at = None;
        let endpoint = self.attempts.endpoint();
        let (post, path, payload, key) = match step {
            Step::Time => (false, protocol::TIME_PATH, Vec::new(), None),
            Step::Credentials => match self.csr() {
                Ok((key, csr_pem)) => (
                    true,
                    protocol::CREDENTIALS_PATH,
                    CredentialsRequest { csr_pem }.encode(),
                    Some(key),
                ),
                Err(detail) => {
                    let failure = StepFailure {
                        step,
                        endpoint,
                        code: ErrorCode::Local,
                        detail,
                    };
                    return Action::WaitUntil(self.fail(failure, now));
                }
            },
            Step::Acls => (false, protocol::ACLS_PATH, Vec::new(), None),
            Step::Hub => (false, protocol::HUB_PATH, Vec::new(), None),
        };
        self.in_flight = Some(InFlight {
            step,
            endpoint,
            key,
        });
        Action::Send(StepRequest {
            step,
            endpoint,
            post,
            path,
            payload,
            skip_validity: step == Step::Time,
        })
    }

    fn csr(&self) -> Result<(PrivateKey, String), String> {
        let key = generate_key().map_err(|e| format!("key generation failed: {e}"))?;
        let csr = create_csr(&key, &self.device_id).map_err(|e| format!("CSR failed: {e}"))?;
        Ok((key, csr))
    }

    /// Records a failed attempt and returns when the next one is due.
    fn fail(&mut self, failure: StepFailure, now: Instant) -> Instant {
        let at = self.attempts.failed(now);
        tracing::debug!(%failure, "provisioning step failed");
        self.retry_at = Some(at);
        self.last_failure = Some(failure);
        at
    }

    /// Takes the answer to the request [`Provisioner::poll`] last returned. `now` and
    /// `unix_now` as for `poll`, at the time the answer came.
    pub fn handle(&mut self, answer: Answer, now: Instant, unix_now: i64) -> Outcome {
        let Some(in_flight) = self.in_flight.take() else {
            return Outcome::Ignored;
        };
        let (step, endpoint) = (in_flight.step, in_flight.endpoint);
        let result = match answer {
            Answer::Failed { code, detail } => Err((code, detail)),
            Answer::Response { code, payload } => match code.class() {
                2 => self.apply(in_flight, &payload, unix_now),
                4 => Err((ErrorCode::Refused, diagnostic(code, &payload))),
                5 => Err((ErrorCode::ServiceError, diagnostic(code, &payload))),
                _ => Err((ErrorCode::BadAnswer, format!("unexpected code {code}"))),
            },
        };
        match result {
            Ok(()) => {
                self.attempts.succeeded();
                self.last_failure = None;
                if step == Step::Time {
                    self.has_time = true;
                }
                Outcome::Advanced(step)
            }
            Err((code, detail)) => {
                let failure = StepFailure {
                    step,
                    endpoint,
                    code,
                    detail,
                };
                let at = self.fail(failure.clone(), now);
                Outcome::Retry { at, failure }
            }
        }
    }

    /// Installs a successful answer's content, after checking it.
    fn apply(
        &mut self,
        in_flight: InFlight,
        payload: &[u8],
        unix_now: i64,
    ) -> Result<(), (ErrorCode, String)> {
        let bad = |e: &dyn std::fmt::Display| (ErrorCode::BadAnswer, e.to_string());
        match in_flight.step {
            Step::Time => {
                let time = TimeResponse::decode(payload).map_err(|e| bad(&e))?;
                let service = i64::try_from(time.unix_seconds).map_err(|e| bad(&e))?;
                self.state.service_clock_offset = Some(service.saturating_sub(unix_now));
            }
            Step::Credentials => {
                let answer = CredentialsResponse::decode(payload).map_err(|e| bad(&e))?;
                let Some(key) = in_flight.key else {
                    return Err((ErrorCode::Local, "no key for the CSR".into()));
                };
                if answer.device_id != self.device_id {
                    return Err(bad(&format!(
                        "the service issued a certificate for device {:?}, not {:?}",
                        answer.device_id, self.device_id
                    )));
                }
                let pair = CertifiedKey::from_pem(answer.certificate_pem.clone(), key.to_pem())
                    .map_err(|e| bad(&format!("the identity certificate is unusable: {e}")))?;
                let info = inspect(&pair.cert_pem).map_err(|e| bad(&e))?;
                if info.device_id.as_deref() != Some(self.device_id.as_str()) {
                    return Err(bad(&"the identity certificate names another device"));
                }
                if crate::pki::parse_pem_bundle(&answer.hub_ca_pem).is_err() {
                    return Err(bad(&"the hub trust anchor is not PEM certificates"));
                }
                self.state.identity = Some(IdentityCredentials {
                    certificate_pem: answer.certificate_pem,
                    key_pem: pair.key_pem.clone(),
                    hub_ca_pem: answer.hub_ca_pem,
                    not_after: info.not_after.unix_timestamp(),
                });
            }
            Step::Acls => {
                let answer = AclsResponse::decode(payload).map_err(|e| bad(&e))?;
                for entry in &answer.acls {
                    entry.validate().map_err(|e| bad(&e))?;
                }
                self.state.acls = Some(answer.acls);
            }
            Step::Hub => {
                let answer = HubConfiguration::decode(payload).map_err(|e| bad(&e))?;
                if answer.endpoint.is_empty() {
                    return Err(bad(&"the hub configuration names no endpoint"));
                }
                self.state.hub = Some(HubSettings {
                    hub_id: answer.hub_id.clone(),
                    endpoint: answer.endpoint.clone(),
                    authorization_code: answer.authorization_code.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A refusal's code and diagnostic payload, bounded and printable.
fn diagnostic(code: Code, payload: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(payload)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL_LEN)
        .collect();
    if text.is_empty() {
        format!("{code}")
    } else {
        format!("{code} {text}")
    }
}

//! The device's provisioning state machine on a simulated clock: the steps in order, the
//! retry schedule and failover, a service that is down and then up, refusals reported as
//! failures with a code, resuming from the state saved after each step, renewal, and a
//! factory reset.

use std::time::{Duration, Instant};

use tern::Code;
use tern_dps::device::{
    Action, Answer, ErrorCode, Outcome, ProvisionedState, Provisioner, Status, Step, StepRequest,
};
use tern_dps::pki::*;
use tern_dps::protocol::{
    self, AclsResponse, CredentialsRequest, CredentialsResponse, HubConfiguration, TimeResponse,
};
use tern_dps::schedule::RetrySchedule;
use tern_store::{AclEntry, AclSubject};
use time::OffsetDateTime;
use zeroize::Zeroizing;

const YEAR: Duration = Duration::from_secs(365 * 86_400);
/// The device's (and the simulated service's) wall clock.
const UNIX: i64 = 1_750_000_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A simulated provisioning service: answers each step as the real one would.
struct FakeService {
    signer: IdentitySigner,
    ca: CertifiedKey,
    validity: Duration,
    /// The service's clock.
    unix: i64,
}

impl FakeService {
    fn new() -> Self {
        let now = OffsetDateTime::from_unix_timestamp(UNIX).unwrap();
        let ca = create_ca("Fake DPS CA", YEAR * 10, now).unwrap();
        FakeService {
            signer: IdentitySigner::new(&ca).unwrap(),
            ca,
            validity: secs(30 * 86_400),
            unix: UNIX,
        }
    }

    fn answer(&self, request: &StepRequest, device_id: &str) -> Answer {
        let payload = match request.step {
            Step::Time => TimeResponse {
                unix_seconds: self.unix as u64,
            }
            .encode(),
            Step::Credentials => {
                assert!(request.post);
                let csr = CredentialsRequest::decode(&request.payload).unwrap();
                let now = OffsetDateTime::from_unix_timestamp(self.unix).unwrap();
                let issued = self
                    .signer
                    .sign_csr(&csr.csr_pem, device_id, self.validity, now, None)
                    .unwrap();
                CredentialsResponse {
                    device_id: device_id.into(),
                    certificate_pem: issued.cert_pem,
                    hub_ca_pem: self.ca.cert_pem.clone(),
                    not_after: issued.not_after.unix_timestamp(),
                }
                .encode()
            }
            Step::Acls => AclsResponse {
                acls: vec![AclEntry {
                    subject: AclSubject::AnyAuthenticated,
                    resources: vec!["/light/*".into()],
                    permissions: AclEntry::READ,
                }],
            }
            .encode(),
            Step::Hub => HubConfiguration {
                hub_id: "hub-1".into(),
                endpoint: "coaps+tcp://127.0.0.1:5684".into(),
                authorization_code: Zeroizing::new("code".into()),
            }
            .encode(),
        };
        let code = if request.step == Step::Credentials {
            Code::CHANGED
        } else {
            Code::CONTENT
        };
        Answer::Response { code, payload }
    }
}

fn factory() -> (Vec<u8>, String) {
    let now = OffsetDateTime::from_unix_timestamp(UNIX).unwrap();
    let maker = create_ca("Fake Manufacturer CA", YEAR * 10, now).unwrap();
    let factory = issue_manufacturer_certificate(&maker, "sensor-1", None, YEAR, now).unwrap();
    let der = parse_pem_bundle(&factory.cert_pem)
        .unwrap()
        .remove(0)
        .into_bytes();
    let id = protocol::device_id_for(&der);
    (der, id)
}

fn unreachable() -> Answer {
    Answer::Failed {
        code: ErrorCode::Unreachable,
        detail: "connection refused".into(),
    }
}

/// Runs the machine against `service` from `start` until it is done, with `answer` deciding
/// each request's fate; returns the requests made with the instant each was sent. Bounded.
fn run(
    machine: &mut Provisioner,
    start: Instant,
    mut answer: impl FnMut(&StepRequest, usize) -> Answer,
) -> Vec<(Duration, StepRequest)> {
    let mut now = start;
    let mut sent = Vec::new();
    for _ in 0..200 {
        match machine.poll(now, UNIX) {
            Action::Done => return sent,
            Action::WaitUntil(at) => {
                assert!(at > now, "waiting for the past");
                now = at;
            }
            Action::AwaitingAnswer => panic!("nothing is in flight"),
            Action::Send(request) => {
                let reply = answer(&request, sent.len());
                sent.push((now - start, request));
                machine.handle(reply, now, UNIX);
            }
        }
    }
    panic!("not done after 200 actions");
}

#[test]
fn the_steps_run_in_order_and_install_everything() {
    let (der, id) = factory();
    let service = FakeService::new();
    let mut machine = Provisioner::new(&der, None, RetrySchedule::default(), 1);
    assert_eq!(machine.status(), Status::INITIALIZED);
    let sent = run(&mut machine, Instant::now(), |r, _| service.answer(r, &id));
    let steps: Vec<Step> = sent.iter().map(|(_, r)| r.step).collect();
    assert_eq!(
        steps,
        [Step::Time, Step::Credentials, Step::Acls, Step::Hub]
    );
    assert!(
        sent.iter().all(|(at, _)| at.is_zero()),
        "no waiting without failures"
    );
    assert!(sent[0].1.skip_validity && sent[1..].iter().all(|(_, r)| !r.skip_validity));
    let status = machine.status();
    assert!(status.is_provisioned() && status.contains(Status::HAS_TIME));
    assert!(!status.contains(Status::FAILURE) && !status.contains(Status::TRANSIENT_FAILURE));
    let state = machine.state();
    assert_eq!(state.device_id, id);
    assert_eq!(state.service_clock_offset, Some(0));
    let identity = state.identity.as_ref().unwrap();
    identity.certified_key().unwrap();
    verify_chain(
        &identity.certificate_pem,
        &service.ca.cert_pem,
        OffsetDateTime::from_unix_timestamp(UNIX).unwrap(),
        true,
    )
    .unwrap();
    assert_eq!(state.acls.as_ref().unwrap().len(), 1);
    assert_eq!(state.hub.as_ref().unwrap().hub_id, "hub-1");
    assert_eq!(machine.poll(Instant::now(), UNIX), Action::Done);
}

#[test]
fn failures_follow_the_schedule_and_fail_over_between_endpoints() {
    let (der, id) = factory();
    let service = FakeService::new();
    let mut machine = Provisioner::new(&der, None, RetrySchedule::default(), 3);
    // The service is down for the first 7 attempts, then up.
    let sent = run(&mut machine, Instant::now(), |r, n| {
        if n < 7 {
            unreachable()
        } else {
            service.answer(r, &id)
        }
    });
    let times: Vec<u64> = sent.iter().map(|(at, _)| at.as_secs()).collect();
    let endpoints: Vec<usize> = sent.iter().map(|(_, r)| r.endpoint).collect();
    // 10, 20, 40, 80, 120, then 10 and 20 again; then every step at once.
    assert_eq!(times, [0, 10, 30, 70, 150, 270, 280, 300, 300, 300, 300]);
    assert_eq!(endpoints, [0, 1, 2, 0, 1, 2, 0, 1, 1, 1, 1]);
    assert!(sent[..8].iter().all(|(_, r)| r.step == Step::Time));
    assert!(machine.status().is_provisioned());
}

#[test]
fn a_configured_schedule_is_followed_and_a_success_restarts_it() {
    let (der, id) = factory();
    let service = FakeService::new();
    let schedule = RetrySchedule::parse("1,2,3").unwrap();
    let mut machine = Provisioner::new(&der, None, schedule, 1);
    // Time fails twice; credentials fails once: its retry waits the first delay again.
    let sent = run(&mut machine, Instant::now(), |r, n| match n {
        0 | 1 | 3 => unreachable(),
        _ => service.answer(r, &id),
    });
    let got: Vec<(u64, Step)> = sent.iter().map(|(at, r)| (at.as_secs(), r.step)).collect();
    assert_eq!(
        got,
        [
            (0, Step::Time),
            (1, Step::Time),
            (3, Step::Time),
            (3, Step::Credentials),
            (4, Step::Credentials),
            (4, Step::Acls),
            (4, Step::Hub),
        ]
    );
}

#[test]
fn refusals_and_bad_answers_are_failures_with_codes_and_are_retried() {
    let (der, id) = factory();
    let service = FakeService::new();
    let mut machine = Provisioner::new(&der, None, RetrySchedule::default(), 1);
    let start = Instant::now();
    let Action::Send(_) = machine.poll(start, UNIX) else {
        panic!()
    };
    // A 4.03 with a diagnostic: FAILURE, code Refused, the diagnostic kept.
    let refusal = Answer::Response {
        code: Code::FORBIDDEN,
        payload: b"unknown manufacturer".to_vec(),
    };
    let Outcome::Retry { at, failure } = machine.handle(refusal, start, UNIX) else {
        panic!()
    };
    assert_eq!(at - start, secs(10));
    assert_eq!(
        (failure.step, failure.code),
        (Step::Time, ErrorCode::Refused)
    );
    assert!(
        failure.detail.contains("unknown manufacturer"),
        "{}",
        failure.detail
    );
    let report = machine.report();
    assert!(report.status.contains(Status::FAILURE));
    assert!(!report.status.contains(Status::TRANSIENT_FAILURE));
    assert_eq!(report.failure.as_ref().unwrap().code.code(), 4);
    // Not before the retry is due.
    assert_eq!(machine.poll(start + secs(5), UNIX), Action::WaitUntil(at));
    // A 5.00 is transient.
    let Action::Send(_) = machine.poll(at, UNIX) else {
        panic!()
    };
    let server_error = Answer::Response {
        code: Code::INTERNAL_SERVER_ERROR,
        payload: Vec::new(),
    };
    machine.handle(server_error, at, UNIX);
    assert!(machine.status().contains(Status::TRANSIENT_FAILURE));
    assert!(!machine.status().contains(Status::FAILURE));
    // A 2.05 that is not the step's message: BadAnswer.
    let later = at + secs(20);
    let Action::Send(_) = machine.poll(later, UNIX) else {
        panic!()
    };
    let garbage = Answer::Response {
        code: Code::CONTENT,
        payload: vec![0xff, 0x00],
    };
    let Outcome::Retry { failure, .. } = machine.handle(garbage, later, UNIX) else {
        panic!()
    };
    assert_eq!(failure.code, ErrorCode::BadAnswer);
    // A credentials answer for another device, or with a certificate for another key, is
    // refused and installs nothing.
    let mut now = later + secs(40);
    let Action::Send(time) = machine.poll(now, UNIX) else {
        panic!()
    };
    machine.handle(service.answer(&time, &id), now, UNIX);
    let Action::Send(credentials) = machine.poll(now, UNIX) else {
        panic!()
    };
    let other_csr = create_csr(&generate_key().unwrap(), &id).unwrap();
    let foreign = StepRequest {
        payload: CredentialsRequest { csr_pem: other_csr }.encode(),
        ..credentials.clone()
    };
    let Outcome::Retry { failure, at } = machine.handle(service.answer(&foreign, &id), now, UNIX)
    else {
        panic!()
    };
    assert_eq!(failure.code, ErrorCode::BadAnswer);
    assert!(failure.detail.contains("unusable"), "{}", failure.detail);
    assert!(machine.state().identity.is_none());
    now = at;
    let Action::Send(credentials) = machine.poll(now, UNIX) else {
        panic!()
    };
    let other_id = "00000000-0000-8000-8000-000000000001";
    let Answer::Response { code, payload } = service.answer(&credentials, &id) else {
        panic!()
    };
    let mut answer = CredentialsResponse::decode(&payload).unwrap();
    answer.device_id = other_id.into();
    let mismatched = Answer::Response {
        code,
        payload: answer.encode(),
    };
    let Outcome::Retry { failure, .. } = machine.handle(mismatched, now, UNIX) else {
        panic!()
    };
    assert_eq!(failure.code, ErrorCode::BadAnswer);
    assert!(machine.state().identity.is_none());
}

/// Whatever step a crash interrupts, the machine rebuilt from the last saved state resumes
/// with the step after the last one saved, and ends provisioned.
#[test]
fn a_restart_after_any_step_resumes_where_it_stopped() {
    let (der, id) = factory();
    let service = FakeService::new();
    // The states saved after each step of one run.
    let mut saved: Vec<ProvisionedState> = Vec::new();
    let mut machine = Provisioner::new(&der, None, RetrySchedule::default(), 1);
    let now = Instant::now();
    while let Action::Send(request) = machine.poll(now, UNIX) {
        let outcome = machine.handle(service.answer(&request, &id), now, UNIX);
        assert!(matches!(outcome, Outcome::Advanced(_)));
        saved.push(machine.state().clone());
    }
    assert_eq!(saved.len(), 4);
    let expected: [&[Step]; 4] = [
        // After time: the time step runs again in a new run, then the rest.
        &[Step::Time, Step::Credentials, Step::Acls, Step::Hub],
        &[Step::Time, Step::Acls, Step::Hub],
        &[Step::Time, Step::Hub],
        &[],
    ];
    for (state, expected) in saved.iter().zip(expected) {
        let mut restarted =
            Provisioner::new(&der, Some(state.clone()), RetrySchedule::default(), 1);
        let sent = run(&mut restarted, Instant::now(), |r, _| {
            service.answer(r, &id)
        });
        let steps: Vec<Step> = sent.iter().map(|(_, r)| r.step).collect();
        assert_eq!(steps, expected);
        // What earlier steps installed is kept.
        if state.identity.is_some() {
            assert_eq!(restarted.state().identity, state.identity);
        }
        assert!(restarted.state().is_provisioned());
    }
    // A provisioned device reports every flag at once after a restart, without a request.
    let restarted = Provisioner::new(&der, saved.last().cloned(), RetrySchedule::default(), 1);
    assert!(restarted.status().is_provisioned());
}

#[test]
fn the_identity_is_renewed_at_two_thirds_of_its_validity() {
    let (der, id) = factory();
    let mut service = FakeService::new();
    service.validity = secs(30 * 86_400);
    let mut machine = Provisioner::new(&der, None, RetrySchedule::default(), 1);
    run(&mut machine, Instant::now(), |r, _| service.answer(r, &id));
    let state = machine.state().clone();
    let first = state.identity.clone().unwrap();
    // Just before 2/3 of the validity: nothing to do.
    let issued = inspect(&first.certificate_pem).unwrap();
    let span: time::Duration = issued.not_after - issued.not_before;
    let two_thirds: time::Duration = span * 2 / 3;
    let due = (issued.not_before + two_thirds).unix_timestamp();
    let mut restarted = Provisioner::new(&der, Some(state.clone()), RetrySchedule::default(), 1);
    assert_eq!(restarted.poll(Instant::now(), due - 60), Action::Done);
    // After it: time, then credentials only.
    service.unix = due + 60;
    let mut steps = Vec::new();
    let now = Instant::now();
    while let Action::Send(request) = restarted.poll(now, due + 60) {
        steps.push(request.step);
        restarted.handle(service.answer(&request, &id), now, due + 60);
    }
    assert_eq!(steps, [Step::Time, Step::Credentials]);
    let renewed = restarted.state().identity.clone().unwrap();
    assert_ne!(renewed.certificate_pem, first.certificate_pem);
    assert_eq!(restarted.state().hub, state.hub);
    // The service's clock, not the device's, decides: a device whose clock lags a day behind
    // renews on the service's schedule.
    let mut lagging = Provisioner::new(&der, Some(state.clone()), RetrySchedule::default(), 1);
    let mut lagging_state = state;
    lagging_state.service_clock_offset = Some(86_400);
    let mut lagging_by_offset =
        Provisioner::new(&der, Some(lagging_state), RetrySchedule::default(), 1);
    let device_clock = due - 3600;
    assert_eq!(lagging.poll(Instant::now(), device_clock), Action::Done);
    assert!(matches!(
        lagging_by_offset.poll(Instant::now(), device_clock),
        Action::Send(_)
    ));
}

#[test]
fn a_factory_reset_forgets_everything_and_starts_over() {
    let (der, id) = factory();
    let service = FakeService::new();
    let mut machine = Provisioner::new(&der, None, RetrySchedule::default(), 2);
    run(&mut machine, Instant::now(), |r, _| service.answer(r, &id));
    let before = machine.state().identity.clone().unwrap();
    machine.factory_reset();
    assert_eq!(machine.status(), Status::INITIALIZED);
    assert!(machine.state().identity.is_none() && machine.state().hub.is_none());
    assert_eq!(machine.attempts().endpoint(), 0);
    let sent = run(&mut machine, Instant::now(), |r, _| service.answer(r, &id));
    assert_eq!(sent.len(), 4);
    assert_ne!(
        machine.state().identity.clone().unwrap().key_pem,
        before.key_pem
    );
}

#[test]
fn an_answer_without_a_request_is_ignored() {
    let (der, _) = factory();
    let mut machine = Provisioner::new(&der, None, RetrySchedule::default(), 1);
    assert_eq!(
        machine.handle(unreachable(), Instant::now(), UNIX),
        Outcome::Ignored
    );
    assert!(matches!(
        machine.poll(Instant::now(), UNIX),
        Action::Send(_)
    ));
    assert_eq!(machine.poll(Instant::now(), UNIX), Action::AwaitingAnswer);
}

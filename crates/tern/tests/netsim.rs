//! The runtime (drivers, contexts, requests, block-wise, observe, OSCORE) on a simulated
//! network ([`tern::netsim`]) in virtual time: every seed draws its own loss, duplication,
//! delay and reordering per direction, and the Tokio code paths must get through them.
//!
//! Each seed runs in a fresh current-thread runtime with paused time, so minutes of
//! retransmissions take milliseconds and the network's faults repeat by seed.
//!
//! Checked:
//! - requests (CON POSTs to a counter, block-wise GET and PUT of 20 kB): each either succeeds
//!   with the right answer or fails with a time-out; no handler runs twice for one request;
//!   afterwards, on a clean link, the server answers at once (nothing is left stuck);
//! - observe with confirmable notifications: the observer sees values only in increasing
//!   order and ends with the last one, re-registering on its own if loss ended the observation;
//! - a partition: a request made while it lasts completes after it heals, within
//!   MAX_TRANSMIT_WAIT; one made while it stays fails with a time-out at MAX_TRANSMIT_WAIT;
//! - OSCORE: protected POSTs through loss and duplication run their handler at most once each
//!   (the replay window and the deduplication cache agree) and every success decrypts, also
//!   while contexts are re-derived (Appendix B.2), which converges once links are clean.
//!
//! Run:    cargo test -p tern --test netsim -- --nocapture
//! Replay: TERN_SIM_SEED=1234 cargo test -p tern --test netsim -- --nocapture
//! More:   TERN_SIM_SEEDS=5000 cargo test --release -p tern --test netsim

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern::netsim::{LinkConfig, SimNetwork};
use tern::oscore::{OscoreClient, OscoreContext, OscoreServer};
use tern::proto::endpoint::RequestError;
use tern::proto::observe::RegistryConfig;
use tern::proto::sim::{panic_message, seeds_from_env, SplitMix64 as Rng};
use tern::tern_oscore::{ContextParams, SecurityContext};
use tern::{Code, Context, Error, Request, Resource, Response, Router};

/// Seeds per scenario by default (the requests scenario; the others run a quarter as many).
const DEFAULT_SEEDS: u64 = 1000;
/// Virtual time by which each seed's scenario must be over.
const HORIZON: Duration = Duration::from_secs(4 * 3600);

const SERVER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const SERVER: SocketAddr = SocketAddr::new(SERVER_IP, 5683);

// --- seeds -----------------------------------------------------------------------------------

/// Runs `scenario` for every seed in its own paused runtime; a failing seed is named so that
/// `TERN_SIM_SEED` replays it.
fn for_each_seed<F, Fut>(name: &str, default: u64, scenario: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = String>,
{
    let started = std::time::Instant::now();
    let list = seeds_from_env("TERN_SIM", default);
    for &seed in &list {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                tokio::time::timeout(HORIZON, scenario(seed))
                    .await
                    .unwrap_or_else(|_| panic!("still running after {HORIZON:?} of virtual time"))
            })
        }));
        match outcome {
            Ok(summary) if list.len() == 1 => eprintln!("{name} seed {seed}: {summary}"),
            Ok(_) => {}
            Err(panic) => {
                let why = panic_message(&*panic);
                panic!(
                    "{name}: seed {seed} failed: {why}\n\
                     replay: TERN_SIM_SEED={seed} cargo test -p tern --test netsim {name} -- --nocapture"
                );
            }
        }
    }
    eprintln!(
        "{name}: {} seeds in {:.1} s",
        list.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A link with up to `max_loss` loss, up to 15% duplication and up to 300 ms of jitter
/// (which reorders datagrams sent closer together than that).
fn link(rng: &mut Rng, max_loss: f64) -> LinkConfig {
    LinkConfig {
        loss: rng.unit() * max_loss,
        duplicate: rng.unit() * 0.15,
        delay: Duration::from_millis(1 + rng.next_u64() % 100),
        jitter: Duration::from_millis(rng.next_u64() % 300),
        corrupt: 0.0,
    }
}

/// A network with faults drawn from the seed, one link per direction.
fn faulty_network(seed: u64, max_loss: f64) -> (SimNetwork, String) {
    let mut rng = Rng(seed);
    let net = SimNetwork::new(seed);
    let (up, down) = (link(&mut rng, max_loss), link(&mut rng, max_loss));
    let describe = |l: &LinkConfig| {
        format!(
            "loss {:.0}% dup {:.0}% delay {:?} jitter {:?}",
            l.loss * 100.0,
            l.duplicate * 100.0,
            l.delay,
            l.jitter
        )
    };
    let faults = format!("up: {}; down: {}", describe(&up), describe(&down));
    net.set_default_link(up);
    // Client to server uses `up`; the server's answers to any client port use `down`, set per
    // direction as soon as the client's address is known (see `client`).
    (net, faults)
}

/// Applies `down` to the server's traffic towards `client` (the port is chosen at bind).
fn set_down(net: &SimNetwork, client: SocketAddr, seed: u64, max_loss: f64) {
    let mut rng = Rng(seed);
    let _up = link(&mut rng, max_loss);
    net.set_link(SERVER, client, link(&mut rng, max_loss));
}

fn clean() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(5),
        ..LinkConfig::default()
    }
}

async fn server(net: &SimNetwork, router: Router) -> Context {
    Context::builder()
        .simulated(net, SERVER_IP)
        .bind(SERVER)
        .router(router)
        .build()
        .await
        .unwrap()
}

/// A client context with one socket bound, so its address is known before the first request.
async fn client(net: &SimNetwork) -> (Context, SocketAddr) {
    let ctx = Context::builder()
        .simulated(net, CLIENT_IP)
        .bind(SocketAddr::new(CLIENT_IP, 0))
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    (ctx, addr)
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e,
        Error::Request(RequestError::Timeout | RequestError::Unacknowledged { .. })
    )
}

fn body(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8 ^ salt).collect()
}

// --- requests --------------------------------------------------------------------------------

/// `/count` (POST: runs counted, answers the run's number), `/big` (GET 20 kB), `/blob` (PUT
/// stores, GET returns).
fn counting_router() -> (Router, Arc<AtomicU32>) {
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let blob = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (put, get) = (blob.clone(), blob);
    let router = Router::new()
        .post("/count", move |_| {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Response::new(Code::CHANGED).with_payload(n.to_string().into_bytes()) }
        })
        .get("/big", |_| async { Response::content(body(20_000, 0)) })
        .resource(
            "/blob",
            Resource::new()
                .put(move |req: Request| {
                    *put.lock().unwrap() = req.payload().to_vec();
                    async { Response::new(Code::CHANGED) }
                })
                .get(move |_| {
                    let b = get.lock().unwrap().clone();
                    async move { Response::content(b) }
                }),
        );
    (router, runs)
}

async fn requests_scenario(seed: u64) -> String {
    const MAX_LOSS: f64 = 0.3;
    let (net, faults) = faulty_network(seed, MAX_LOSS);
    let (router, runs) = counting_router();
    let _srv = server(&net, router).await;
    let (client, addr) = client(&net).await;
    set_down(&net, addr, seed, MAX_LOSS);
    let started = tokio::time::Instant::now();

    // Four tasks of five POSTs each, concurrently (NSTART 1 queues them at the client).
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..5 {
                answers.push(client.post("coap://10.0.0.1/count").send().await);
            }
            answers
        }));
    }
    let big = client.get("coap://10.0.0.1/big").send().await;
    let upload = body(20_000, 0x5a);
    let put = client
        .put("coap://10.0.0.1/blob")
        .payload(upload.clone())
        .send()
        .await;

    let mut numbers = HashSet::new();
    let (mut ok, mut failed) = (0u32, 0u32);
    for task in tasks {
        for answer in task.await.unwrap() {
            match answer {
                Ok(r) => {
                    assert_eq!(r.code(), Code::CHANGED, "{faults}");
                    let n: u32 = String::from_utf8_lossy(r.payload()).parse().unwrap();
                    assert!(numbers.insert(n), "run {n} answered twice ({faults})");
                    ok += 1;
                }
                Err(e) => {
                    assert!(is_timeout(&e), "POST failed with {e} ({faults})");
                    failed += 1;
                }
            }
        }
    }
    let handler_runs = runs.load(Ordering::SeqCst);
    // Each request runs its handler at most once; one that got its answer ran it.
    assert!(
        handler_runs >= ok && handler_runs <= ok + failed,
        "{handler_runs} handler runs for {ok} answered and {failed} failed requests ({faults})"
    );
    match &big {
        Ok(r) => assert_eq!(r.payload(), body(20_000, 0).as_slice(), "{faults}"),
        Err(e) => assert!(is_timeout(e), "block-wise GET failed with {e} ({faults})"),
    }
    match &put {
        Ok(r) => assert_eq!(r.code(), Code::CHANGED, "{faults}"),
        Err(e) => assert!(is_timeout(e), "block-wise PUT failed with {e} ({faults})"),
    }
    let faulty_phase = started.elapsed();

    // On a clean link everything works at once: no state was left stuck by the faults.
    net.set_default_link(clean());
    net.set_link(SERVER, addr, clean());
    let r = client
        .get("coap://10.0.0.1/blob")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET on a clean link failed: {e} ({faults})"));
    if put.is_ok() {
        assert_eq!(r.payload(), upload.as_slice(), "stored body ({faults})");
    }
    let r = client.post("coap://10.0.0.1/count").send().await.unwrap();
    assert_eq!(r.code(), Code::CHANGED);
    format!(
        "{faults}; {ok} POSTs answered, {failed} timed out, {handler_runs} handler runs; \
         GET {}, PUT {}; {:.1} s virtual; network {:?}",
        if big.is_ok() { "ok" } else { "timed out" },
        if put.is_ok() { "ok" } else { "timed out" },
        faulty_phase.as_secs_f64(),
        net.stats()
    )
}

#[test]
fn requests_survive_loss_duplication_and_reordering() {
    for_each_seed("requests", DEFAULT_SEEDS, requests_scenario);
}

// --- observe ---------------------------------------------------------------------------------

async fn observe_scenario(seed: u64) -> String {
    const MAX_LOSS: f64 = 0.25;
    const CHANGES: u32 = 30;
    let (net, faults) = faulty_network(seed, MAX_LOSS);
    let value = Arc::new(AtomicU32::new(0));
    let v = value.clone();
    let router = Router::new()
        .resource(
            "/state",
            Resource::new()
                .get(move |_| {
                    let n = v.load(Ordering::SeqCst);
                    async move { Response::text(n.to_string()) }
                })
                .obs(),
        )
        .observe_limits(RegistryConfig {
            // Every notification confirmable, so loss is repaired by retransmission.
            confirm_interval: Duration::ZERO,
            ..RegistryConfig::default()
        });
    let notifier = router.notifier();
    let _srv = server(&net, router).await;
    let (client, addr) = client(&net).await;
    set_down(&net, addr, seed, MAX_LOSS);

    let mut observation = loop {
        match client.get("coap://10.0.0.1/state").observe().await {
            Ok(o) => break o,
            Err(e) => assert!(is_timeout(&e), "registration failed with {e} ({faults})"),
        }
    };
    let changer = tokio::spawn(async move {
        for n in 1..=CHANGES {
            tokio::time::sleep(Duration::from_secs(2)).await;
            value.store(n, Ordering::SeqCst);
            notifier.notify("/state");
        }
    });
    let mut seen = Vec::new();
    // After the last change, at most Max-Age (60 s) plus a re-registration's retransmissions
    // pass before the observer has caught up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2 * CHANGES as u64 + 600);
    while seen.last() != Some(&CHANGES) {
        let next = tokio::time::timeout_at(deadline, observation.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "observer stuck at {:?} of {CHANGES} ({faults})",
                    seen.last()
                )
            });
        match next {
            Some(Ok(r)) => {
                let n: u32 = String::from_utf8_lossy(r.payload()).parse().unwrap();
                if let Some(&last) = seen.last() {
                    assert!(n > last, "{n} after {last}: out of order ({faults})");
                }
                seen.push(n);
            }
            Some(Err(e)) => assert!(is_timeout(&e), "observation failed with {e} ({faults})"),
            None => panic!("observation ended at {:?} ({faults})", seen.last()),
        }
    }
    changer.await.unwrap();
    format!(
        "{faults}; saw {} of {} values; network {:?}",
        seen.len(),
        CHANGES + 1,
        net.stats()
    )
}

#[test]
fn observers_catch_up_through_loss_in_order() {
    for_each_seed("observe", DEFAULT_SEEDS / 4, observe_scenario);
}

// --- partitions ------------------------------------------------------------------------------

async fn partition_scenario(seed: u64) -> String {
    let net = SimNetwork::new(seed);
    net.set_default_link(clean());
    let (router, runs) = counting_router();
    let _srv = server(&net, router).await;
    let (client, addr) = client(&net).await;
    assert!(client.post("coap://10.0.0.1/count").send().await.is_ok());

    // Cut for 20 s, both ways: the five transmissions go at about 0, 2, 6, 14 and 30 s (times
    // the random factor, up to 1.5), so the last falls after the heal.
    let heal_after = Duration::from_secs(20);
    net.set_partition(addr, SERVER, true);
    net.set_partition(SERVER, addr, true);
    let healer = {
        let net = net.clone();
        tokio::spawn(async move {
            tokio::time::sleep(heal_after).await;
            net.set_partition(addr, SERVER, false);
            net.set_partition(SERVER, addr, false);
        })
    };
    let started = tokio::time::Instant::now();
    let r = client.post("coap://10.0.0.1/count").send().await;
    let took = started.elapsed();
    healer.await.unwrap();
    assert!(r.is_ok(), "request across a healed partition: {r:?}");
    assert!(
        took >= heal_after && took <= Duration::from_secs(46),
        "answered after {took:?}"
    );

    // A partition that lasts: the request fails once MAX_TRANSMIT_WAIT has passed.
    net.set_partition(addr, SERVER, true);
    let started = tokio::time::Instant::now();
    let r = client.post("coap://10.0.0.1/count").send().await;
    let failed_after = started.elapsed();
    match r {
        Err(e) if is_timeout(&e) => {}
        other => panic!("request into a partition: {other:?}"),
    }
    assert!(
        failed_after >= Duration::from_secs(45) && failed_after <= Duration::from_secs(94),
        "gave up after {failed_after:?}"
    );
    net.set_partition(addr, SERVER, false);
    assert!(client.post("coap://10.0.0.1/count").send().await.is_ok());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the cut-off request never ran"
    );
    format!("healed request took {took:?}; cut-off request gave up after {failed_after:?}")
}

#[test]
fn partitions_delay_requests_until_they_heal_or_time_out() {
    for_each_seed("partition", DEFAULT_SEEDS / 4, partition_scenario);
}

// --- OSCORE ----------------------------------------------------------------------------------

const SECRET: [u8; 16] = [7; 16];

fn security_context(sender: &[u8], recipient: &[u8]) -> SecurityContext {
    SecurityContext::derive(&ContextParams::new(&SECRET, sender, recipient)).unwrap()
}

async fn oscore_scenario(seed: u64) -> String {
    const MAX_LOSS: f64 = 0.25;
    let (net, faults) = faulty_network(seed, MAX_LOSS);
    let (router, runs) = counting_router();
    let oscore = OscoreServer::new();
    oscore
        .add(OscoreContext::in_memory(security_context(b"S", b"C")))
        .unwrap();
    let _srv = server(&net, router.oscore(oscore)).await;
    let (client, addr) = client(&net).await;
    set_down(&net, addr, seed, MAX_LOSS);
    let protection = OscoreClient::new(OscoreContext::in_memory(security_context(b"C", b"S")));

    let (mut ok, mut failed) = (0u32, 0u32);
    let mut numbers = HashSet::new();
    for _ in 0..10 {
        match client
            .post("coap://10.0.0.1/count")
            .oscore(&protection)
            .send()
            .await
        {
            Ok(r) => {
                assert_eq!(r.code(), Code::CHANGED, "{faults}");
                let n: u32 = String::from_utf8_lossy(r.payload()).parse().unwrap();
                assert!(numbers.insert(n), "run {n} answered twice ({faults})");
                ok += 1;
            }
            Err(e) => {
                assert!(is_timeout(&e), "protected POST failed with {e} ({faults})");
                failed += 1;
            }
        }
    }
    let handler_runs = runs.load(Ordering::SeqCst);
    assert!(
        handler_runs >= ok && handler_runs <= ok + failed,
        "{handler_runs} handler runs for {ok} answered and {failed} failed ({faults})"
    );
    format!("{faults}; {ok} protected POSTs answered, {failed} timed out")
}

#[test]
fn oscore_requests_run_once_through_loss_and_duplication() {
    for_each_seed("oscore", DEFAULT_SEEDS / 4, oscore_scenario);
}

/// Context re-derivation (Appendix B.2) through loss, duplication and reordering: the server
/// starts with its replay window lost (so it starts a re-derivation), and the client starts
/// one before every third request. Requests still run at most once each, and once the links
/// are clean a request converges both ends on one context.
async fn oscore_rederivation_scenario(seed: u64) -> String {
    const MAX_LOSS: f64 = 0.25;
    let (net, faults) = faulty_network(seed, MAX_LOSS);
    let (router, runs) = counting_router();
    let oscore = OscoreServer::new();
    let mut lost = security_context(b"S", b"C");
    lost.forget_replay_state();
    oscore
        .add(OscoreContext::in_memory(lost).with_rederivation(true))
        .unwrap();
    let _srv = server(&net, router.oscore(oscore.clone())).await;
    let (client, addr) = client(&net).await;
    set_down(&net, addr, seed, MAX_LOSS);
    let protection = OscoreClient::new(
        OscoreContext::in_memory(security_context(b"C", b"S")).with_rederivation(true),
    );

    let (mut ok, mut failed) = (0u32, 0u32);
    let mut numbers = HashSet::new();
    for i in 0..9 {
        if i % 3 == 2 {
            protection.rederive();
        }
        match client
            .post("coap://10.0.0.1/count")
            .oscore(&protection)
            .send()
            .await
        {
            Ok(r) => {
                assert_eq!(r.code(), Code::CHANGED, "{faults}");
                let n: u32 = String::from_utf8_lossy(r.payload()).parse().unwrap();
                assert!(numbers.insert(n), "run {n} answered twice ({faults})");
                ok += 1;
            }
            // Only a lost exchange fails: a re-derivation cut short by loss leaves the client
            // on a context the server never saw, which the server takes as a new Request #1
            // and the client follows within the same request.
            Err(e) => {
                assert!(is_timeout(&e), "protected POST failed with {e} ({faults})");
                failed += 1;
            }
        }
    }
    let handler_runs = runs.load(Ordering::SeqCst);
    assert!(
        handler_runs >= ok && handler_runs <= ok + failed,
        "{handler_runs} handler runs for {ok} answered and {failed} failed ({faults})"
    );
    net.set_link(addr, SERVER, clean());
    net.set_link(SERVER, addr, clean());
    let r = client
        .post("coap://10.0.0.1/count")
        .oscore(&protection)
        .send()
        .await;
    assert!(r.is_ok(), "after the faults: {r:?} ({faults})");
    let held: Vec<_> = oscore
        .sender_sequences()
        .into_iter()
        .map(|(identity, _)| identity.kid_context)
        .collect();
    assert_eq!(held, vec![protection.id_context()], "{faults}");
    format!("{faults}; {ok} answered, {failed} failed during re-derivations")
}

#[test]
fn oscore_rederivation_converges_through_loss_and_duplication() {
    for_each_seed("oscore-b2", DEFAULT_SEEDS / 4, oscore_rederivation_scenario);
}

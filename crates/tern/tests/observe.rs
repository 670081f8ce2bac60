//! Observe (RFC 7641) through the runtime on loopback: observable resources in the router,
//! notifications announced with a `ResourceNotifier`, client observations with cancellation,
//! drop (RST), lapse and re-registration, caps, error responses, CON every interval, dead
//! observers removed, and the same over DTLS; over TCP and TLS (RFC 8323 §7): notifications
//! with increasing Observe values, cancel and drop deregistering (streams have no RST), closing
//! connections removing observers, an error response ending the observation, and a connection
//! with observers not released as idle.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern::proto::observe::{observe_value, RegistryConfig};
use tern::proto::stream::StreamConfig;
use tern::proto::uri::Scheme;
use tern::proto::{EndpointConfig, Message, MessageType, OptionNumber, Token, TransmissionParams};
use tern::tls::{DtlsSettings, Psk, PskMap, PskStore, TlsSettings};
use tern::{
    default_server_config, Code, Context, Observation, Resource, ResourceNotifier, Response, Router,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// A router with an observable `/counter` (its value as text; 4.04 once it reaches 100), a
/// plain `/plain`, and `/short` (observable, Max-Age 1).
fn router(limits: RegistryConfig) -> (Router, ResourceNotifier, Arc<AtomicU32>) {
    let counter = Arc::new(AtomicU32::new(0));
    let c = counter.clone();
    let router = Router::new()
        .resource(
            "/counter",
            Resource::new()
                .get(move |_| {
                    let n = c.load(Ordering::SeqCst);
                    async move {
                        if n >= 100 {
                            Response::new(Code::NOT_FOUND)
                        } else {
                            Response::text(n.to_string())
                        }
                    }
                })
                .obs(),
        )
        .get("/plain", |_| async { Response::text("plain") })
        .resource(
            "/short",
            Resource::new()
                .get(|_| async { Response::text("short").with_max_age(1) })
                .obs(),
        )
        .observe_limits(limits);
    let notifier = router.notifier();
    (router, notifier, counter)
}

async fn server(
    limits: RegistryConfig,
    params: TransmissionParams,
) -> (Context, SocketAddr, ResourceNotifier, Arc<AtomicU32>) {
    let (router, notifier, counter) = router(limits);
    let ctx = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .transmission_params(params)
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = ctx.local_addrs()[0];
    (ctx, addr, notifier, counter)
}

async fn default_server() -> (Context, SocketAddr, ResourceNotifier, Arc<AtomicU32>) {
    server(RegistryConfig::default(), TransmissionParams::default()).await
}

/// Waits (bounded) until the server has `n` observers.
async fn wait_observers(ctx: &Context, n: usize) {
    for _ in 0..100 {
        if ctx.observer_count().await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "server has {} observers, not {n}",
        ctx.observer_count().await
    );
}

fn observe_of(r: &Response) -> Option<u32> {
    observe_value(r.message())
}

#[tokio::test]
async fn notifications_reach_the_observer_in_order_with_increasing_observe_values() {
    let (srv, addr, notifier, counter) = default_server().await;
    let client = Context::client();
    let mut obs = client
        .get(&format!("coap://{addr}/counter"))
        .observe()
        .await
        .unwrap();
    assert!(obs.is_active());
    let first = obs.next().await.unwrap().unwrap();
    assert_eq!((first.code(), first.payload()), (Code::CONTENT, &b"0"[..]));
    let mut last = observe_of(&first).expect("registration response carries Observe");
    wait_observers(&srv, 1).await;
    for i in 1..=3u32 {
        counter.store(i, Ordering::SeqCst);
        assert_eq!(notifier.notify("/counter"), 1);
        let n = timeout(WAIT, obs.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(n.payload(), i.to_string().as_bytes());
        let value = observe_of(&n).unwrap();
        assert!(value > last, "{value} after {last}");
        last = value;
    }
    obs.cancel();
    srv.shutdown().await;
}

#[tokio::test]
async fn cancel_deregisters_with_observe_1() {
    let (srv, addr, _notifier, _) = default_server().await;
    let client = Context::client();
    let obs = client
        .get(&format!("coap://{addr}/counter"))
        .observe()
        .await
        .unwrap();
    wait_observers(&srv, 1).await;
    obs.cancel();
    // No notification is needed: the GET with Observe 1 removes the observer.
    wait_observers(&srv, 0).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_dropped_observation_resets_the_next_notification_and_is_removed() {
    let (srv, addr, notifier, _) = default_server().await;
    let client = Context::client();
    let obs = client
        .get(&format!("coap://{addr}/counter"))
        .observe()
        .await
        .unwrap();
    wait_observers(&srv, 1).await;
    drop(obs);
    tokio::time::sleep(Duration::from_millis(100)).await;
    notifier.notify("counter");
    wait_observers(&srv, 0).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_plain_resource_is_served_without_observe() {
    let (srv, addr, _, _) = default_server().await;
    let client = Context::client();
    let mut obs = client
        .get(&format!("coap://{addr}/plain"))
        .observe()
        .await
        .unwrap();
    assert!(!obs.is_active());
    let r = obs.next().await.unwrap().unwrap();
    assert_eq!(r.payload(), b"plain");
    assert_eq!(observe_of(&r), None);
    assert!(obs.next().await.is_none());
    assert_eq!(srv.observer_count().await, 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_a_registration_is_served_as_a_plain_get() {
    let limits = RegistryConfig {
        max_per_resource: 1,
        ..RegistryConfig::default()
    };
    let (srv, addr, _, _) = server(limits, TransmissionParams::default()).await;
    let client = Context::client();
    let uri = format!("coap://{addr}/counter");
    let one = client.get(&uri).observe().await.unwrap();
    assert!(one.is_active());
    let two = client.get(&uri).observe().await.unwrap();
    assert!(!two.is_active(), "the second observer is over the cap");
    assert_eq!(srv.observer_count().await, 1);
    one.cancel();
    srv.shutdown().await;
}

#[tokio::test]
async fn past_the_overall_cap_a_registration_is_served_as_a_plain_get() {
    let limits = RegistryConfig {
        max_total: 1,
        ..RegistryConfig::default()
    };
    let (srv, addr, _, _) = server(limits, TransmissionParams::default()).await;
    let client = Context::client();
    let one = client
        .get(&format!("coap://{addr}/counter"))
        .observe()
        .await
        .unwrap();
    assert!(one.is_active());
    let mut two = client
        .get(&format!("coap://{addr}/short"))
        .observe()
        .await
        .unwrap();
    assert!(!two.is_active(), "the registry is full");
    let r = two.next().await.unwrap().unwrap();
    assert_eq!((r.payload(), observe_of(&r)), (&b"short"[..], None));
    assert_eq!(srv.observer_count().await, 1);
    one.cancel();
    srv.shutdown().await;
}

#[tokio::test]
async fn registering_the_same_token_again_replaces_the_observer() {
    let (srv, addr, notifier, _) = default_server().await;
    let (socket, token) = raw_register(addr).await;
    // The same GET Observe 0 with the same token, a new message ID: one observer still.
    let mut again = Message::new(MessageType::Con, Code::GET);
    again.mid = 8;
    again.token = token;
    again.set_path("/counter");
    again.options.set_uint(OptionNumber::OBSERVE, 0);
    socket
        .send_to(&again.to_bytes().unwrap(), addr)
        .await
        .unwrap();
    let reply = recv(&socket).await.unwrap();
    assert_eq!(observe_value(&reply), Some(2));
    assert_eq!(srv.observer_count().await, 1);
    notifier.notify("/counter");
    let n = recv(&socket).await.unwrap();
    assert_eq!((n.token, observe_value(&n)), (token, Some(3)));
    srv.shutdown().await;
}

#[tokio::test]
async fn an_error_response_is_the_last_notification() {
    let (srv, addr, notifier, counter) = default_server().await;
    let client = Context::client();
    let mut obs = client
        .get(&format!("coap://{addr}/counter"))
        .observe()
        .await
        .unwrap();
    obs.next().await.unwrap().unwrap();
    wait_observers(&srv, 1).await;
    counter.store(100, Ordering::SeqCst);
    notifier.notify("/counter");
    let last = timeout(WAIT, obs.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(last.code(), Code::NOT_FOUND);
    assert!(obs.next().await.is_none());
    assert!(!obs.is_active());
    wait_observers(&srv, 0).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn an_observation_registers_again_when_max_age_runs_out() {
    let (srv, addr, _, _) = default_server().await;
    let client = Context::builder()
        .endpoint_config(EndpointConfig {
            observe_lapse_slack: Duration::from_millis(200),
            ..EndpointConfig::default()
        })
        .build()
        .await
        .unwrap();
    let mut obs = client
        .get(&format!("coap://{addr}/short"))
        .observe()
        .await
        .unwrap();
    obs.next().await.unwrap().unwrap();
    // Max-Age 1 and no notification: lapsed after 1.2 s, registered again.
    let again = timeout(WAIT, obs.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(again.payload(), b"short");
    assert!(observe_of(&again).is_some());
    assert!(obs.is_active());
    obs.cancel();
    srv.shutdown().await;
}

/// A raw observer: registers with a GET Observe 0 and token `t`.
async fn raw_register(addr: SocketAddr) -> (UdpSocket, Token) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let token = Token::new(b"t1").unwrap();
    let mut get = Message::new(MessageType::Con, Code::GET);
    get.mid = 7;
    get.token = token;
    get.set_path("/counter");
    get.options.set_uint(OptionNumber::OBSERVE, 0);
    socket
        .send_to(&get.to_bytes().unwrap(), addr)
        .await
        .unwrap();
    let reply = recv(&socket).await.expect("registration answered");
    assert_eq!(observe_value(&reply), Some(1));
    (socket, token)
}

async fn recv(socket: &UdpSocket) -> Option<Message> {
    let mut buf = [0u8; 1500];
    let (n, _) = timeout(WAIT, socket.recv_from(&mut buf)).await.ok()?.ok()?;
    Message::decode(&buf[..n]).ok()
}

#[tokio::test]
async fn notifications_are_non_until_the_confirm_interval_then_con() {
    let (srv, addr, notifier, _) = default_server().await;
    let (socket, token) = raw_register(addr).await;
    notifier.notify("/counter");
    let n = recv(&socket).await.unwrap();
    assert_eq!((n.ty, n.token), (MessageType::Non, token));
    assert_eq!(observe_value(&n), Some(2));
    srv.shutdown().await;

    let limits = RegistryConfig {
        confirm_interval: Duration::ZERO,
        ..RegistryConfig::default()
    };
    let (srv, addr, notifier, _) = server(limits, TransmissionParams::default()).await;
    let (socket, _) = raw_register(addr).await;
    notifier.notify("/counter");
    let n = recv(&socket).await.unwrap();
    assert_eq!(n.ty, MessageType::Con);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_unacknowledged_con_notification_removes_the_observer() {
    let limits = RegistryConfig {
        confirm_interval: Duration::ZERO,
        ..RegistryConfig::default()
    };
    let params = TransmissionParams {
        ack_timeout: Duration::from_millis(100),
        ack_random_factor: 1.0,
        max_retransmit: 1,
        ..TransmissionParams::default()
    };
    let (srv, addr, notifier, _) = server(limits, params).await;
    let (socket, _) = raw_register(addr).await;
    assert_eq!(srv.observer_count().await, 1);
    notifier.notify("/counter");
    // Never acknowledged: sent, resent once, then given up.
    for _ in 0..2 {
        assert_eq!(recv(&socket).await.unwrap().ty, MessageType::Con);
    }
    wait_observers(&srv, 0).await;
    srv.shutdown().await;
}

async fn dtls_server() -> (Context, SocketAddr, ResourceNotifier, Arc<AtomicU32>) {
    let store = PskMap::new();
    store.insert(Psk::new("sensor-7", "s3cret").unwrap());
    let (router, notifier, counter) = router(RegistryConfig::default());
    let srv = Context::builder()
        .bind_dtls("127.0.0.1:0".parse().unwrap())
        .dtls_server(DtlsSettings {
            psk_store: Some(Arc::new(store)),
            ..Default::default()
        })
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = srv.local_addrs()[0];
    (srv, addr, notifier, counter)
}

#[tokio::test]
async fn observe_over_dtls() {
    let (srv, addr, notifier, counter) = dtls_server().await;
    let client = Context::builder()
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .build()
        .await
        .unwrap();
    let mut obs = client
        .get(&format!("coaps://{addr}/counter"))
        .observe()
        .await
        .unwrap();
    assert_eq!(obs.next().await.unwrap().unwrap().payload(), b"0");
    wait_observers(&srv, 1).await;
    for i in 1..=2u32 {
        counter.store(i, Ordering::SeqCst);
        notifier.notify("/counter");
        let n = timeout(WAIT, obs.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(n.payload(), i.to_string().as_bytes());
    }
    obs.cancel();
    wait_observers(&srv, 0).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_session_observes_and_closing_it_ends_the_observation_on_both_sides() {
    let (srv, addr, notifier, _) = dtls_server().await;
    let client = Context::client();
    let session = client
        .session(&format!("coaps://{addr}"))
        .psk(Psk::new("sensor-7", "s3cret").unwrap())
        .build()
        .await
        .unwrap();
    let mut obs = session.get("/counter").observe().await.unwrap();
    assert_eq!(obs.next().await.unwrap().unwrap().payload(), b"0");
    wait_observers(&srv, 1).await;
    notifier.notify("/counter");
    timeout(WAIT, obs.next()).await.unwrap().unwrap().unwrap();
    session.close();
    // The observation fails with the channel; the server drops the closed session's observers.
    let end = timeout(WAIT, obs.next()).await.unwrap();
    assert!(matches!(end, Some(Err(_))), "{end:?}");
    assert!(obs.next().await.is_none());
    wait_observers(&srv, 0).await;
    srv.shutdown().await;
}

// --- Over streams (coap+tcp://, coaps+tcp://: RFC 8323 §7) ---------------------------------

struct StreamServer {
    ctx: Context,
    uri: String,
    notifier: ResourceNotifier,
    counter: Arc<AtomicU32>,
}

fn stream_psk() -> Psk {
    Psk::new("sensor-7", "s3cret").unwrap()
}

async fn tcp_server_with(config: StreamConfig) -> StreamServer {
    let (router, notifier, counter) = router(RegistryConfig::default());
    let ctx = Context::builder()
        .bind_tcp("127.0.0.1:0".parse().unwrap())
        .stream_server_config(config)
        .router(router)
        .build()
        .await
        .unwrap();
    let addr = ctx.listen_addrs(Scheme::CoapTcp)[0];
    StreamServer {
        ctx,
        uri: format!("coap+tcp://{addr}/counter"),
        notifier,
        counter,
    }
}

async fn tcp_server() -> StreamServer {
    tcp_server_with(default_server_config()).await
}

async fn tls_server() -> StreamServer {
    let (router, notifier, counter) = router(RegistryConfig::default());
    let store = PskMap::new();
    store.insert(stream_psk());
    let ctx = Context::builder()
        .bind_tls("127.0.0.1:0".parse().unwrap())
        .tls_server(TlsSettings {
            psk_store: Some(Arc::new(store) as Arc<dyn PskStore>),
            ..TlsSettings::default()
        })
        .router(router)
        .build()
        .await
        .unwrap();
    let addr: SocketAddr = ctx.listen_addrs(Scheme::CoapsTcp)[0];
    StreamServer {
        ctx,
        uri: format!("coaps+tcp://{addr}/counter"),
        notifier,
        counter,
    }
}

async fn next(obs: &mut Observation) -> Response {
    timeout(WAIT, obs.next())
        .await
        .expect("no notification in time")
        .expect("the observation ended")
        .expect("the observation failed")
}

/// Observes `/counter`, takes the first response and three notifications with increasing
/// Observe values, and returns the observation.
async fn observe_three(srv: &StreamServer, client: &Context) -> Observation {
    srv.counter.store(0, Ordering::SeqCst);
    let mut obs = client.get(&srv.uri).observe().await.unwrap();
    assert!(obs.is_active());
    let first = next(&mut obs).await;
    assert_eq!((first.code(), first.payload()), (Code::CONTENT, &b"0"[..]));
    let mut last = observe_of(&first).expect("registration response carries Observe");
    wait_observers(&srv.ctx, 1).await;
    for i in 1..=3u32 {
        srv.counter.store(i, Ordering::SeqCst);
        assert_eq!(srv.notifier.notify("/counter"), 1);
        let n = next(&mut obs).await;
        assert_eq!(n.payload(), i.to_string().as_bytes());
        let value = observe_of(&n).expect("a notification carries Observe");
        assert!(value > last, "{value} after {last}");
        last = value;
    }
    obs
}

#[tokio::test]
async fn observe_over_tcp_and_cancel() {
    let srv = tcp_server().await;
    let client = Context::client();
    let obs = observe_three(&srv, &client).await;
    obs.cancel();
    wait_observers(&srv.ctx, 0).await;
    assert_eq!(srv.ctx.open_connections(), 1, "the connection stays");
    srv.ctx.shutdown().await;
}

#[tokio::test]
async fn observe_over_tls_with_psk_and_cancel() {
    let srv = tls_server().await;
    let client = Context::builder().psk(stream_psk()).build().await.unwrap();
    let obs = observe_three(&srv, &client).await;
    obs.cancel();
    wait_observers(&srv.ctx, 0).await;
    srv.ctx.shutdown().await;
}

#[tokio::test]
async fn a_dropped_observation_is_deregistered_as_streams_have_no_reset() {
    let srv = tcp_server().await;
    let client = Context::client();
    let obs = observe_three(&srv, &client).await;
    drop(obs);
    wait_observers(&srv.ctx, 0).await;
    // The connection still serves new observations.
    let again = observe_three(&srv, &client).await;
    again.cancel();
    wait_observers(&srv.ctx, 0).await;
    srv.ctx.shutdown().await;
}

#[tokio::test]
async fn the_connection_closing_removes_its_observers() {
    let srv = tls_server().await;
    let client = Context::builder().psk(stream_psk()).build().await.unwrap();
    let _obs = observe_three(&srv, &client).await;
    let other = Context::client();
    let tcp = tcp_server().await;
    let _unrelated = observe_three(&tcp, &other).await;
    client.shutdown().await;
    wait_observers(&srv.ctx, 0).await;
    assert_eq!(tcp.ctx.observer_count().await, 1);
    srv.ctx.shutdown().await;
    tcp.ctx.shutdown().await;
}

#[tokio::test]
async fn the_server_going_ends_the_observation_with_an_error() {
    let srv = tcp_server().await;
    let client = Context::client();
    let mut obs = observe_three(&srv, &client).await;
    srv.ctx.shutdown().await;
    let end = timeout(WAIT, obs.next()).await.unwrap();
    assert!(matches!(end, Some(Err(_))), "{end:?}");
    assert!(timeout(WAIT, obs.next()).await.unwrap().is_none());
}

#[tokio::test]
async fn an_error_response_ends_an_observation_over_tcp() {
    let srv = tcp_server().await;
    let client = Context::client();
    let mut obs = observe_three(&srv, &client).await;
    srv.counter.store(100, Ordering::SeqCst);
    srv.notifier.notify("/counter");
    let last = next(&mut obs).await;
    assert_eq!(last.code(), Code::NOT_FOUND);
    assert_eq!(observe_of(&last), None);
    assert!(!obs.is_active());
    assert!(timeout(WAIT, obs.next()).await.unwrap().is_none());
    wait_observers(&srv.ctx, 0).await;
    srv.ctx.shutdown().await;
}

#[tokio::test]
async fn a_connection_with_observers_is_not_released_as_idle() {
    let srv = tcp_server_with(StreamConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..default_server_config()
    })
    .await;
    let client = Context::client();
    let mut obs = observe_three(&srv, &client).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    srv.counter.store(7, Ordering::SeqCst);
    srv.notifier.notify("/counter");
    assert_eq!(next(&mut obs).await.payload(), b"7");
    // Without observers the idle time-out applies again.
    obs.cancel();
    wait_observers(&srv.ctx, 0).await;
    for _ in 0..100 {
        if srv.ctx.open_connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(srv.ctx.open_connections(), 0, "released once idle");
    srv.ctx.shutdown().await;
}

#[tokio::test]
async fn a_tcp_session_observes_and_closing_it_ends_the_observation_on_both_sides() {
    let srv = tcp_server().await;
    let addr = srv.ctx.listen_addrs(Scheme::CoapTcp)[0];
    let client = Context::client();
    let session = client
        .session(&format!("coap+tcp://{addr}"))
        .build()
        .await
        .unwrap();
    let mut obs = session.get("/counter").observe().await.unwrap();
    assert_eq!(next(&mut obs).await.payload(), b"0");
    wait_observers(&srv.ctx, 1).await;
    srv.notifier.notify("/counter");
    next(&mut obs).await;
    session.close();
    let end = timeout(WAIT, obs.next()).await.unwrap();
    assert!(matches!(end, Some(Err(_))), "{end:?}");
    assert!(obs.next().await.is_none());
    wait_observers(&srv.ctx, 0).await;
    srv.ctx.shutdown().await;
}

/// RFC 7959 §2.6: a notification larger than a block goes as its first block, and the client
/// fetches the rest with the registration request (without Observe), over UDP and over TCP
/// with a Max-Message-Size that forces blocks; every item of the observation is whole.
#[tokio::test]
async fn block_wise_notifications_arrive_whole() {
    let counter = Arc::new(AtomicU32::new(0));
    let c = counter.clone();
    let body = |n: u32| -> Vec<u8> { (0..5000u32).map(|i| ((i + n) % 251) as u8).collect() };
    let router = Router::new().resource(
        "/large",
        Resource::new()
            .get(move |_| {
                let n = c.load(Ordering::SeqCst);
                async move { Response::content(body(n)) }
            })
            .obs(),
    );
    let notifier = router.notifier();
    let server = Context::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .bind_tcp("127.0.0.1:0".parse().unwrap())
        .router(router)
        .build()
        .await
        .unwrap();
    let client = Context::builder()
        .stream_client_config(StreamConfig {
            max_message_size: 1152,
            ..StreamConfig::default()
        })
        .build()
        .await
        .unwrap();
    for scheme in [Scheme::Coap, Scheme::CoapTcp] {
        counter.store(0, Ordering::SeqCst);
        let addr = server.listen_addrs(scheme)[0];
        let name = if scheme == Scheme::Coap {
            "coap"
        } else {
            "coap+tcp"
        };
        let mut observation = client
            .get(&format!("{name}://{addr}/large"))
            .observe()
            .await
            .unwrap();
        let first = timeout(WAIT, observation.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            first.payload(),
            body(0).as_slice(),
            "{name}: first response"
        );
        assert!(first.option(OptionNumber::OBSERVE).is_some());
        for n in 1..=2u32 {
            counter.store(n, Ordering::SeqCst);
            let got = timeout(WAIT, async {
                loop {
                    notifier.notify("/large");
                    if let Ok(Some(item)) =
                        timeout(Duration::from_millis(300), observation.next()).await
                    {
                        return item;
                    }
                }
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(
                got.payload(),
                body(n).as_slice(),
                "{name}: notification {n}"
            );
        }
        observation.cancel();
    }
    server.shutdown().await;
}

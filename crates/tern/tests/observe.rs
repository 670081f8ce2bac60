//! Observe (RFC 7641) through the runtime on loopback: observable resources in the router,
//! notifications announced with a `ResourceNotifier`, client observations with cancellation,
//! drop (RST), lapse and re-registration, caps, error responses, CON every interval, dead
//! observers removed, and the same over DTLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern::proto::observe::{observe_value, RegistryConfig};
use tern::proto::{EndpointConfig, Message, MessageType, OptionNumber, Token, TransmissionParams};
use tern::tls::{DtlsSettings, Psk, PskMap};
use tern::{Code, Context, Resource, ResourceNotifier, Response, Router};
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

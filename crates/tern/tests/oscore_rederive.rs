//! OSCORE context re-derivation (RFC 8613 Appendix B.2) through the runtime on loopback:
//! started by the client (asked for, or with its sequence numbers used up), started by a
//! server that lost its replay window, for requests and observations, over UDP and TCP, with
//! the new context stored in the context folders so that both ends keep it across restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern::oscore::{OscoreClient, OscoreContext, OscoreServer};
use tern::proto::uri::Scheme;
use tern::tern_oscore::context::MAX_SEQUENCE_NUMBER;
use tern::tern_oscore::{ContextParams, SecurityContext};
use tern::{Code, Context, Error, Request, Resource, ResourceNotifier, Response, Router};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
const SECRET: [u8; 16] = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6];

fn params(sender: &[u8], recipient: &[u8]) -> SecurityContext {
    let mut p = ContextParams::new(&SECRET, sender, recipient);
    p.master_salt = b"rederive".to_vec();
    SecurityContext::derive(&p).unwrap()
}

/// `/hits` counts the handler runs and answers with the kid; `/obs` is observable.
fn router(oscore: OscoreServer) -> (Router, ResourceNotifier, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    let router = Router::new()
        .resource(
            "/hits",
            Resource::new()
                .get(move |r: Request| {
                    let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                    let kid = r.oscore().map(|o| o.kid.clone()).unwrap_or_default();
                    async move { Response::text(format!("{n} {}", String::from_utf8_lossy(&kid))) }
                })
                .require_oscore(),
        )
        .resource(
            "/obs",
            Resource::new()
                .get(|_| async { Response::text("value") })
                .obs()
                .require_oscore(),
        )
        .oscore(oscore);
    let notifier = router.notifier();
    (router, notifier, hits)
}

struct Server {
    ctx: Context,
    notifier: ResourceNotifier,
    hits: Arc<AtomicU32>,
    oscore: OscoreServer,
}

impl Server {
    async fn start(context: OscoreContext) -> Server {
        let oscore = OscoreServer::new();
        oscore.add(context).unwrap();
        let (router, notifier, hits) = router(oscore.clone());
        let ctx = Context::builder()
            .bind("127.0.0.1:0".parse().unwrap())
            .bind_tcp("127.0.0.1:0".parse().unwrap())
            .router(router)
            .build()
            .await
            .unwrap();
        Server {
            ctx,
            notifier,
            hits,
            oscore,
        }
    }

    fn uri(&self, scheme: Scheme, path: &str) -> String {
        let addr: SocketAddr = self.ctx.listen_addrs(scheme)[0];
        let name = if scheme == Scheme::Coap {
            "coap"
        } else {
            "coap+tcp"
        };
        format!("{name}://{addr}{path}")
    }

    /// The ID Contexts of the contexts the server holds.
    fn id_contexts(&self) -> Vec<Option<Vec<u8>>> {
        self.oscore
            .sender_sequences()
            .into_iter()
            .map(|(identity, _)| identity.kid_context)
            .collect()
    }
}

async fn get(client: &OscoreClient, uri: &str) -> Result<Response, Error> {
    timeout(WAIT, Context::client().get(uri).oscore(client).send())
        .await
        .expect("request timed out")
}

#[tokio::test]
async fn a_client_rederives_when_asked_and_the_server_follows() {
    for scheme in [Scheme::Coap, Scheme::CoapTcp] {
        let server =
            Server::start(OscoreContext::in_memory(params(b"S", b"c1")).with_rederivation(true))
                .await;
        let client = OscoreClient::new(OscoreContext::in_memory(params(b"c1", b"S")));
        let r = get(&client, &server.uri(scheme, "/hits")).await.unwrap();
        assert_eq!(r.payload(), b"1 c1");
        assert_eq!(client.id_context(), None);

        client.rederive();
        let r = get(&client, &server.uri(scheme, "/hits")).await.unwrap();
        assert_eq!(r.code(), Code::CONTENT);
        // Request #1 was verified but not acted on: one handler run for this request.
        assert_eq!(r.payload(), b"2 c1");
        let first = client.id_context().expect("a new ID Context");
        assert_eq!(first.len(), 16, "R2 | R3, 8 bytes each");
        assert_eq!(server.id_contexts(), vec![Some(first.clone())]);
        // The new context carries on, and starts its numbers afresh.
        for n in 3..6 {
            let r = get(&client, &server.uri(scheme, "/hits")).await.unwrap();
            assert_eq!(r.payload(), format!("{n} c1").as_bytes());
        }
        assert_eq!(client.sender_sequence(), 4, "Request #2 and three more");

        client.rederive();
        get(&client, &server.uri(scheme, "/hits")).await.unwrap();
        let second = client.id_context().unwrap();
        assert_ne!(first, second, "every re-derivation makes a new context");
        assert_eq!(
            server.id_contexts(),
            vec![Some(second)],
            "the old one replaced"
        );
        assert_eq!(server.hits.load(Ordering::SeqCst), 6);
        server.ctx.shutdown().await;
    }
}

#[tokio::test]
async fn used_up_sequence_numbers_lead_to_a_rederivation() {
    let server =
        Server::start(OscoreContext::in_memory(params(b"S", b"c2")).with_rederivation(true)).await;
    let mut exhausted = params(b"c2", b"S");
    exhausted.resume_sender_sequence(MAX_SEQUENCE_NUMBER + 1);
    let uri = server.uri(Scheme::Coap, "/hits");

    // Without re-derivation the context is spent.
    let mut stuck = params(b"c2", b"S");
    stuck.resume_sender_sequence(MAX_SEQUENCE_NUMBER + 1);
    let stuck = OscoreClient::new(OscoreContext::in_memory(stuck));
    assert!(matches!(
        get(&stuck, &uri).await,
        Err(Error::Oscore(
            tern::tern_oscore::OscoreError::SequenceExhausted
        ))
    ));

    let client = OscoreClient::new(OscoreContext::in_memory(exhausted).with_rederivation(true));
    let r = get(&client, &uri).await.unwrap();
    assert_eq!(r.payload(), b"1 c2");
    assert_eq!(client.sender_sequence(), 1);
    assert!(client.id_context().is_some());
    server.ctx.shutdown().await;
}

#[tokio::test]
async fn a_server_that_lost_its_replay_window_starts_a_rederivation() {
    for scheme in [Scheme::Coap, Scheme::CoapTcp] {
        let mut restarted = params(b"S", b"c3");
        restarted.forget_replay_state();
        let server =
            Server::start(OscoreContext::in_memory(restarted).with_rederivation(true)).await;
        let client = OscoreClient::new(
            OscoreContext::in_memory(params(b"c3", b"S")).with_rederivation(true),
        );
        let r = get(&client, &server.uri(scheme, "/hits")).await.unwrap();
        assert_eq!(r.payload(), b"1 c3", "acted on once, under the new context");
        let id = client.id_context().expect("re-derived");
        assert_eq!(server.id_contexts(), vec![Some(id)]);
        let r = get(&client, &server.uri(scheme, "/hits")).await.unwrap();
        assert_eq!(r.payload(), b"2 c3");
        server.ctx.shutdown().await;
    }
}

#[tokio::test]
async fn a_client_without_rederivation_is_told_so() {
    let mut restarted = params(b"S", b"c4");
    restarted.forget_replay_state();
    let server = Server::start(OscoreContext::in_memory(restarted).with_rederivation(true)).await;
    let client = OscoreClient::new(OscoreContext::in_memory(params(b"c4", b"S")));
    // The server's Response #1 is protected with a context the client does not derive.
    let err = get(&client, &server.uri(Scheme::Coap, "/hits"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OscoreRederivationNotAllowed), "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 0, "never acted on");
    server.ctx.shutdown().await;
}

#[tokio::test]
async fn an_observation_is_registered_again_after_a_server_started_rederivation() {
    let mut restarted = params(b"S", b"c5");
    restarted.forget_replay_state();
    let server = Server::start(OscoreContext::in_memory(restarted).with_rederivation(true)).await;
    let client =
        OscoreClient::new(OscoreContext::in_memory(params(b"c5", b"S")).with_rederivation(true));
    let mut observation = timeout(
        WAIT,
        Context::client()
            .get(&server.uri(Scheme::Coap, "/obs"))
            .oscore(&client)
            .observe(),
    )
    .await
    .unwrap()
    .unwrap();
    let first = timeout(WAIT, observation.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.payload(), b"value");
    assert!(client.id_context().is_some());
    // Announced until seen: the first change may race the registration.
    let next = timeout(WAIT, async {
        loop {
            server.notifier.notify("/obs");
            if let Ok(Some(item)) = timeout(Duration::from_millis(300), observation.next()).await {
                return item;
            }
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(next.payload(), b"value");
    assert_eq!(server.ctx.observer_count().await, 1);
    server.ctx.shutdown().await;
}

fn folder(name: &str, settings: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-rederive-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("settings.json"), settings).unwrap();
    let secret: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    let salt: String = b"rederive".iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        dir.join("secret.json"),
        format!(r#"{{"secret_hex": "{secret}", "salt_hex": "{salt}"}}"#),
    )
    .unwrap();
    dir
}

fn load(dir: &Path) -> OscoreContext {
    OscoreContext::from_folder(dir, 16)
        .unwrap()
        .with_rederivation(true)
}

#[tokio::test]
async fn both_ends_keep_the_rederived_context_across_restarts() {
    let client_dir = folder(
        "client",
        r#"{"sender-id_hex": "63", "recipient-id_hex": "53"}"#,
    );
    let server_dir = folder(
        "server",
        r#"{"sender-id_hex": "53", "recipient-id_hex": "63"}"#,
    );

    let server = Server::start(load(&server_dir)).await;
    let client = OscoreClient::new(load(&client_dir));
    client.rederive();
    // A folder's replay window is not stored, so the server checks freshness first (with a
    // re-derivation of its own, as it allows them); either way the request succeeds.
    let r = get(&client, &server.uri(Scheme::Coap, "/hits"))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    let id = client.id_context().unwrap();
    assert!(client_dir.join("rederived.json").exists());
    assert!(server_dir.join("rederived.json").exists());
    for _ in 0..20 {
        get(&client, &server.uri(Scheme::Coap, "/hits"))
            .await
            .unwrap();
    }
    let used = client.sender_sequence();
    server.ctx.shutdown().await;
    drop(client);

    // Both restart from their folders: the re-derived context is the one loaded, and the
    // client's numbers continue beyond what it used.
    let client = OscoreClient::new(load(&client_dir));
    assert_eq!(client.id_context(), Some(id.clone()));
    assert!(client.sender_sequence() >= used);
    let server = Server::start(load(&server_dir)).await;
    assert_eq!(server.id_contexts(), vec![Some(id.clone())]);
    // The server lost its replay window in the restart: it re-derives once more, and the
    // request still succeeds.
    let r = get(&client, &server.uri(Scheme::Coap, "/hits"))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    let r = get(&client, &server.uri(Scheme::Coap, "/hits"))
        .await
        .unwrap();
    assert_eq!(r.code(), Code::CONTENT);
    assert_eq!(server.id_contexts(), vec![client.id_context()]);
    server.ctx.shutdown().await;
    let _ = std::fs::remove_dir_all(client_dir);
    let _ = std::fs::remove_dir_all(server_dir);
}

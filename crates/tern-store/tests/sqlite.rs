//! The behavioural suite against SQLite files, plus what only SQLite has: URL forms, the
//! in-memory database, and a process killed in the middle of provisioning.

#[macro_use]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::suite::{certificate, fingerprint, group};
use common::Location;
use tern_store::{
    AclEntry, AclSubject, AuditEvent, DeviceState, ProvisioningStore, Store, StoreError,
};

behaviour_suite!(async { Some(Location::sqlite()) };
    migrations_are_idempotent_on_reopen,
    concurrent_opens_migrate_once,
    schema_too_new_is_refused,
    group_lifecycle,
    enroll_is_idempotent,
    concurrent_enrolls_of_one_fingerprint_make_one_row,
    thousand_devices_enrolled_concurrently,
    state_only_moves_forward,
    acls_round_trip,
    revoke_blocks_further_issuing,
    audit_is_newest_first,
    corrupt_stored_values_are_errors,
    failed_operations_leave_nothing_behind,
);

#[tokio::test]
async fn open_understands_paths_and_urls() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("plain.db");
    let plain = tern_store::open(path.to_str().expect("UTF-8 path"))
        .await
        .expect("open a plain path");
    assert!(matches!(plain, Store::Sqlite(_)));
    plain.create_group(&group("g")).await.expect("create group");
    drop(plain);
    let again = tern_store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open as sqlite:// URL");
    assert!(again.group("g").await.expect("group").is_some());

    let memory = tern_store::open("sqlite::memory:")
        .await
        .expect("in memory");
    assert_eq!(memory.list_groups().await.expect("list"), []);

    for bad in ["", "sqlite://", "mysql://user:hunter2@db/x"] {
        match tern_store::open(bad).await {
            Err(StoreError::BadUrl(text)) => assert!(!text.contains("hunter2"), "{text}"),
            other => panic!("{bad:?}: expected BadUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn database_file_is_in_wal_mode() {
    let location = Location::sqlite();
    drop(location.store().await);
    let path = location.sqlite_path().expect("a SQLite location");
    let connection = rusqlite::Connection::open(path).expect("open directly");
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
}

/// Where the crash child writes; set only in the child process.
const CRASH_DB_ENV: &str = "TERN_STORE_CRASH_CHILD_DB";

/// Not a test of its own: the body of the child process that
/// `killed_mid_provisioning_leaves_only_whole_steps` starts and kills. Without its environment
/// variable it returns at once.
#[tokio::test]
async fn crash_child_process() {
    let Ok(path) = std::env::var(CRASH_DB_ENV) else {
        return;
    };
    let store = tern_store::open(&path).await.expect("child: open");
    let _ = store.create_group(&group("g")).await;
    let acl = vec![AclEntry {
        subject: AclSubject::AnyAuthenticated,
        resources: vec!["*".to_owned()],
        permissions: AclEntry::READ,
    }];
    // Provision devices one step (one transaction) at a time until killed.
    for n in 0u64.. {
        let id = format!("dev-{n}");
        let now = n as i64;
        store
            .enroll_device(&fingerprint(n), "CN=crash", "g", &id, now)
            .await
            .expect("child: enroll");
        store
            .record_certificate(&id, certificate(&format!("{n:x}0"), &id, now), now)
            .await
            .expect("child: record");
        store
            .set_acls(&id, acl.clone(), now)
            .await
            .expect("child: acls");
        store
            .mark_provisioned(&id, now)
            .await
            .expect("child: provisioned");
    }
}

/// Kill (SIGKILL) a process that is provisioning devices as fast as it can, then check that
/// the database holds only whole steps: each device's state matches what it has been given,
/// and the audit log matches the rows.
#[test]
fn killed_mid_provisioning_leaves_only_whole_steps() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DB_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the crash child");

    // Let it get well into its work (bounded), then kill it wherever it is.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let certificates = rusqlite::Connection::open(&path)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0)))
            .unwrap_or(0i64);
        if certificates >= 40 {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("crash child exited early: {status}");
        }
        assert!(Instant::now() < deadline, "crash child made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill the crash child");
    child.wait().expect("reap the crash child");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = tern_store::open(path.to_str().expect("UTF-8 path"))
            .await
            .expect("reopen after the crash");
        let devices = store.list_devices().await.expect("devices");
        assert!(devices.len() >= 40);
        let mut certificates = 0;
        let mut acl_sets = 0;
        for device in &devices {
            let issued = store.certificates(&device.device_id).await.expect("certs");
            let acls = store.acls(&device.device_id).await.expect("acls");
            let expected = match (issued.len(), acls.is_empty()) {
                (0, true) => DeviceState::Enrolled,
                (1, true) => DeviceState::CredentialsIssued,
                (1, false) => device.state.max(DeviceState::AclsIssued),
                other => panic!("{}: impossible contents {other:?}", device.device_id),
            };
            assert_eq!(device.state, expected, "{device:?}");
            certificates += issued.len();
            acl_sets += usize::from(!acls.is_empty());
        }
        let events = store.audit(u32::MAX).await.expect("audit");
        let count = |action: &str| events.iter().filter(|e| e.action == action).count();
        assert_eq!(count(AuditEvent::DEVICE_ENROLLED), devices.len());
        assert_eq!(count(AuditEvent::CERTIFICATE_RECORDED), certificates);
        assert_eq!(count(AuditEvent::ACLS_SET), acl_sets);
        let provisioned = devices
            .iter()
            .filter(|d| d.state == DeviceState::Provisioned)
            .count();
        assert_eq!(count(AuditEvent::DEVICE_PROVISIONED), provisioned);
    });
    let integrity: String = rusqlite::Connection::open(&path)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
        .expect("integrity check");
    assert_eq!(integrity, "ok");
}

/// Several processes (here: connections) opening the same new file at once all get a
/// migrated store: the first start of a service, its hub and an admin command may race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_new_file_all_succeed() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { tern_store::SqliteStore::open(&path).await })
            })
            .collect();
        for open in opens {
            let store = open.await.unwrap();
            assert!(store.is_ok(), "round {round}: {:?}", store.err());
        }
    }
}

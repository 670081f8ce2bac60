//! The behavioural suite: every case runs against both backends (see `behaviour_suite!`), so
//! SQLite and PostgreSQL are held to the same contract.

use std::collections::HashSet;
use std::sync::Arc;

use tern_store::{
    AclEntry, AclSubject, AuditEvent, DeviceState, EnrollmentGroup, IssuedCertificate,
    ProvisioningStore, Store, StoreError, SCHEMA_VERSION,
};

use super::Location;

/// A SHA-256-shaped fingerprint for test device `n`.
pub fn fingerprint(n: u64) -> String {
    format!("{n:064x}")
}

/// An enrollment group named `id`.
pub fn group(id: &str) -> EnrollmentGroup {
    EnrollmentGroup {
        id: id.to_owned(),
        description: format!("test group {id}"),
        manufacturer_ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
            .to_owned(),
        hub_id: "hub-1".to_owned(),
        hub_endpoint: "coaps+tcp://hub.example:5684".to_owned(),
        hub_ca_pem: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n".to_owned(),
        authorization_code: "secret-code".to_owned(),
        acl_template: vec![AclEntry {
            subject: AclSubject::AnyAuthenticated,
            resources: vec!["/oic/*".to_owned()],
            permissions: AclEntry::READ | AclEntry::NOTIFY,
        }],
        certificate_validity_days: 365,
        created_at: 1_000,
    }
}

/// A certificate with `serial` for `device_id`, valid from `not_before` for a year.
pub fn certificate(serial: &str, device_id: &str, not_before: i64) -> IssuedCertificate {
    IssuedCertificate {
        serial: serial.to_owned(),
        device_id: device_id.to_owned(),
        not_before,
        not_after: not_before + 365 * 86_400,
        revoked: false,
        pem: format!("-----BEGIN CERTIFICATE-----\n{serial}\n-----END CERTIFICATE-----\n"),
    }
}

fn acls(resource: &str) -> Vec<AclEntry> {
    vec![
        AclEntry {
            subject: AclSubject::Role("owner".to_owned()),
            resources: vec![resource.to_owned()],
            permissions: AclEntry::ALL,
        },
        AclEntry {
            subject: AclSubject::DeviceId("00000000-0000-0000-0000-000000000001".to_owned()),
            resources: vec!["*".to_owned()],
            permissions: AclEntry::READ,
        },
        AclEntry {
            subject: AclSubject::Anonymous,
            resources: vec!["/oic/res".to_owned()],
            permissions: AclEntry::READ,
        },
    ]
}

/// A store with group "g" and one enrolled device "dev-1" (fingerprint 1).
async fn store_with_device(location: &Location) -> Store {
    let store = location.store().await;
    store.create_group(&group("g")).await.expect("create group");
    store
        .enroll_device(&fingerprint(1), "CN=device 1", "g", "dev-1", 2_000)
        .await
        .expect("enroll");
    store
}

async fn audit_count(store: &Store, action: &str) -> usize {
    store
        .audit(u32::MAX)
        .await
        .expect("audit")
        .iter()
        .filter(|event| event.action == action)
        .count()
}

pub async fn migrations_are_idempotent_on_reopen(location: &Location) {
    let store = location.store().await;
    store.create_group(&group("g")).await.expect("create group");
    drop(store);
    for _ in 0..2 {
        let store = location.store().await;
        assert!(store.group("g").await.expect("group").is_some());
    }
    let applied = location
        .query_i64("SELECT COUNT(*) FROM schema_migrations")
        .await;
    assert_eq!(applied, SCHEMA_VERSION);
    let newest = location
        .query_i64("SELECT MAX(version) FROM schema_migrations")
        .await;
    assert_eq!(newest, SCHEMA_VERSION);
}

pub async fn concurrent_opens_migrate_once(location: &Location) {
    let fresh = Arc::new(location.sibling().await);
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let fresh = Arc::clone(&fresh);
        opens.spawn(async move { fresh.open().await.map(drop) });
    }
    while let Some(opened) = opens.join_next().await {
        opened.expect("open task").expect("concurrent open");
    }
    let applied = fresh
        .query_i64("SELECT COUNT(*) FROM schema_migrations")
        .await;
    assert_eq!(applied, SCHEMA_VERSION);
}

pub async fn schema_too_new_is_refused(location: &Location) {
    drop(location.store().await);
    let future = SCHEMA_VERSION + 41;
    location
        .execute(&format!(
            "INSERT INTO schema_migrations (version, name, applied_at) \
             VALUES ({future}, 'from the future', 0)"
        ))
        .await;
    match location.open().await {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (future, SCHEMA_VERSION));
            let message = StoreError::SchemaTooNew { found, known }.to_string();
            assert!(message.contains("newer"), "{message}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

pub async fn group_lifecycle(location: &Location) {
    let store = location.store().await;
    let g = group("g");
    store.create_group(&g).await.expect("create group");
    assert!(matches!(
        store.create_group(&g).await,
        Err(StoreError::GroupExists(id)) if id == "g"
    ));
    assert_eq!(store.group("g").await.expect("group"), Some(g.clone()));
    assert_eq!(store.group("nope").await.expect("group"), None);
    store.create_group(&group("a")).await.expect("create a");
    let ids: Vec<String> = store
        .list_groups()
        .await
        .expect("list")
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(ids, ["a", "g"]);

    store
        .enroll_device(&fingerprint(1), "CN=d", "g", "dev-1", 2_000)
        .await
        .expect("enroll");
    assert!(matches!(
        store.delete_group("g", 3_000).await,
        Err(StoreError::GroupInUse { id, devices: 1 }) if id == "g"
    ));
    assert!(matches!(
        store.delete_group("nope", 3_000).await,
        Err(StoreError::NotFound { .. })
    ));
    store.delete_group("a", 3_000).await.expect("delete a");
    assert_eq!(store.group("a").await.expect("group"), None);
    assert_eq!(audit_count(&store, AuditEvent::GROUP_DELETED).await, 1);

    let mut bad = group("bad");
    bad.acl_template[0].resources = vec!["/a*b".to_owned()];
    assert!(matches!(
        store.create_group(&bad).await,
        Err(StoreError::InvalidInput(_))
    ));
    // The audit trail must not leak the group's secret.
    for event in store.audit(100).await.expect("audit") {
        assert!(!event.detail.contains("secret-code"), "{event:?}");
    }
}

pub async fn enroll_is_idempotent(location: &Location) {
    let store = location.store().await;
    store.create_group(&group("g")).await.expect("create group");
    let first = store
        .enroll_device(&fingerprint(7), "CN=seven", "g", "dev-a", 2_000)
        .await
        .expect("enroll");
    assert_eq!(first.device_id, "dev-a");
    assert_eq!(first.state, DeviceState::Enrolled);
    assert_eq!((first.created_at, first.updated_at), (2_000, 2_000));
    // The same manufacturer certificate again, spelled in upper case with colons.
    let spelled: String = fingerprint(7)
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let again = store
        .enroll_device(&spelled, "CN=seven", "g", "dev-b", 3_000)
        .await
        .expect("enroll again");
    assert_eq!(again, first);
    assert_eq!(
        store
            .device_by_fingerprint(&fingerprint(7))
            .await
            .expect("by fingerprint"),
        Some(first.clone())
    );
    assert_eq!(store.device("dev-b").await.expect("device"), None);
    assert_eq!(store.list_devices().await.expect("list").len(), 1);
    assert_eq!(audit_count(&store, AuditEvent::DEVICE_ENROLLED).await, 1);

    assert!(matches!(
        store
            .enroll_device(&fingerprint(8), "CN=eight", "nope", "dev-c", 2_000)
            .await,
        Err(StoreError::NotFound {
            what: "enrollment group",
            ..
        })
    ));
    assert!(matches!(
        store
            .enroll_device("not-a-fingerprint", "CN=x", "g", "dev-d", 2_000)
            .await,
        Err(StoreError::InvalidInput(_))
    ));
}

pub async fn concurrent_enrolls_of_one_fingerprint_make_one_row(location: &Location) {
    let store = location.store().await;
    store.create_group(&group("g")).await.expect("create group");
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..50 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .enroll_device(
                    &fingerprint(42),
                    "CN=racer",
                    "g",
                    &format!("dev-{n}"),
                    2_000,
                )
                .await
        });
    }
    let mut ids = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        ids.insert(result.expect("task").expect("enroll").device_id);
    }
    assert_eq!(ids.len(), 1, "all callers must see one device: {ids:?}");
    assert_eq!(store.list_devices().await.expect("list").len(), 1);
    assert_eq!(audit_count(&store, AuditEvent::DEVICE_ENROLLED).await, 1);
}

pub async fn thousand_devices_enrolled_concurrently(location: &Location) {
    const DEVICES: u64 = 1_000;
    const WORKERS: u64 = 64;
    let store = location.store().await;
    store.create_group(&group("g")).await.expect("create group");
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let store = store.clone();
        workers.spawn(async move {
            for n in (worker..DEVICES).step_by(WORKERS as usize) {
                let device = store
                    .enroll_device(
                        &fingerprint(n),
                        "CN=fleet",
                        "g",
                        &format!("dev-{n}"),
                        n as i64,
                    )
                    .await
                    .expect("enroll");
                assert_eq!(device.device_id, format!("dev-{n}"));
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
    let devices = store.list_devices().await.expect("list");
    assert_eq!(devices.len() as u64, DEVICES);
    let ids: HashSet<String> = devices.into_iter().map(|d| d.device_id).collect();
    assert!((0..DEVICES).all(|n| ids.contains(&format!("dev-{n}"))));
}

pub async fn state_only_moves_forward(location: &Location) {
    let store = store_with_device(location).await;
    let device = store
        .record_certificate("dev-1", certificate("0A", "dev-1", 2_100), 2_100)
        .await
        .expect("record");
    assert_eq!(device.state, DeviceState::CredentialsIssued);
    assert_eq!(device.updated_at, 2_100);
    let device = store
        .set_acls("dev-1", acls("/light/*"), 2_200)
        .await
        .expect("acls");
    assert_eq!(device.state, DeviceState::AclsIssued);
    // A second certificate (renewal) does not step back to CredentialsIssued.
    let device = store
        .record_certificate("dev-1", certificate("0b", "dev-1", 2_300), 2_300)
        .await
        .expect("renew");
    assert_eq!(device.state, DeviceState::AclsIssued);
    let device = store
        .mark_provisioned("dev-1", 2_400)
        .await
        .expect("provisioned");
    assert_eq!(device.state, DeviceState::Provisioned);
    let device = store
        .record_certificate("dev-1", certificate("0c", "dev-1", 2_500), 2_500)
        .await
        .expect("renew when provisioned");
    assert_eq!(device.state, DeviceState::Provisioned);
    let device = store
        .set_acls("dev-1", acls("/fan/*"), 2_600)
        .await
        .expect("acls when provisioned");
    assert_eq!(device.state, DeviceState::Provisioned);
    assert_eq!(store.device("dev-1").await.expect("device"), Some(device));

    let serials: Vec<String> = store
        .certificates("dev-1")
        .await
        .expect("certificates")
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert_eq!(serials, ["a", "b", "c"], "serials are kept normalised");
    let found = store.certificate("00:0A").await.expect("certificate");
    assert_eq!(found.map(|c| c.not_before), Some(2_100));
}

pub async fn acls_round_trip(location: &Location) {
    let store = store_with_device(location).await;
    assert_eq!(store.acls("dev-1").await.expect("acls"), []);
    store
        .set_acls("dev-1", acls("/light/*"), 2_100)
        .await
        .expect("set");
    assert_eq!(store.acls("dev-1").await.expect("acls"), acls("/light/*"));
    store
        .set_acls("dev-1", acls("/fan"), 2_200)
        .await
        .expect("replace");
    assert_eq!(store.acls("dev-1").await.expect("acls"), acls("/fan"));
    assert!(matches!(
        store.acls("nope").await,
        Err(StoreError::NotFound { what: "device", .. })
    ));
    assert!(matches!(
        store.certificates("nope").await,
        Err(StoreError::NotFound { what: "device", .. })
    ));
    assert_eq!(
        store
            .group("g")
            .await
            .expect("group")
            .map(|g| g.acl_template),
        Some(group("g").acl_template)
    );
}

pub async fn revoke_blocks_further_issuing(location: &Location) {
    let store = store_with_device(location).await;
    store
        .record_certificate("dev-1", certificate("aa", "dev-1", 2_100), 2_100)
        .await
        .expect("record");
    store
        .record_certificate("dev-1", certificate("ab", "dev-1", 2_200), 2_200)
        .await
        .expect("record");
    assert_eq!(
        store
            .is_certificate_serial_revoked("aa")
            .await
            .expect("check"),
        Some(false)
    );
    let revoked = store.revoke_device("dev-1", 3_000).await.expect("revoke");
    assert_eq!(revoked.state, DeviceState::Revoked);
    assert_eq!(revoked.revoked_at, Some(3_000));
    assert_eq!(
        store.device("dev-1").await.expect("device"),
        Some(revoked.clone())
    );
    for serial in ["aa", "AB"] {
        assert_eq!(
            store
                .is_certificate_serial_revoked(serial)
                .await
                .expect("check"),
            Some(true),
            "{serial}"
        );
    }
    assert_eq!(
        store
            .is_certificate_serial_revoked("ffff")
            .await
            .expect("check"),
        None
    );
    assert!(matches!(
        store
            .record_certificate("dev-1", certificate("ac", "dev-1", 3_100), 3_100)
            .await,
        Err(StoreError::Revoked(id)) if id == "dev-1"
    ));
    assert_eq!(store.certificate("ac").await.expect("certificate"), None);
    assert!(matches!(
        store.set_acls("dev-1", acls("/x"), 3_100).await,
        Err(StoreError::Revoked(_))
    ));
    assert!(matches!(
        store.mark_provisioned("dev-1", 3_100).await,
        Err(StoreError::Revoked(_))
    ));
    // Revoking again changes nothing, and re-enrolling finds the revoked device.
    assert_eq!(
        store.revoke_device("dev-1", 4_000).await.expect("again"),
        revoked
    );
    assert_eq!(
        store
            .enroll_device(&fingerprint(1), "CN=device 1", "g", "dev-new", 4_000)
            .await
            .expect("re-enroll"),
        revoked
    );
    assert_eq!(audit_count(&store, AuditEvent::DEVICE_REVOKED).await, 1);
}

pub async fn audit_is_newest_first(location: &Location) {
    let store = store_with_device(location).await;
    store
        .record_certificate("dev-1", certificate("1", "dev-1", 2_100), 2_100)
        .await
        .expect("record");
    store
        .set_acls("dev-1", acls("/a"), 2_200)
        .await
        .expect("acls");
    store
        .mark_provisioned("dev-1", 2_300)
        .await
        .expect("provisioned");
    store.revoke_device("dev-1", 2_400).await.expect("revoke");

    let events = store.audit(100).await.expect("audit");
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            AuditEvent::DEVICE_REVOKED,
            AuditEvent::DEVICE_PROVISIONED,
            AuditEvent::ACLS_SET,
            AuditEvent::CERTIFICATE_RECORDED,
            AuditEvent::DEVICE_ENROLLED,
            AuditEvent::GROUP_CREATED,
        ]
    );
    let times: Vec<i64> = events.iter().map(|e| e.at).collect();
    assert_eq!(times, [2_400, 2_300, 2_200, 2_100, 2_000, 1_000]);
    assert!(events.windows(2).all(|pair| pair[0].id > pair[1].id));
    assert_eq!(events[0].device_id.as_deref(), Some("dev-1"));
    assert_eq!(events[5].device_id, None);
    let newest_two = store.audit(2).await.expect("audit");
    assert_eq!(newest_two, events[..2]);
}

pub async fn corrupt_stored_values_are_errors(location: &Location) {
    let store = store_with_device(location).await;
    store
        .set_acls("dev-1", acls("/a"), 2_100)
        .await
        .expect("acls");
    location
        .execute("UPDATE devices SET state = 'half-provisioned' WHERE device_id = 'dev-1'")
        .await;
    assert!(matches!(
        store.device("dev-1").await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.list_devices().await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.device_by_fingerprint(&fingerprint(1)).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store
            .record_certificate("dev-1", certificate("c0", "dev-1", 2_200), 2_200)
            .await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(store.certificate("c0").await.expect("certificate"), None);

    // Valid JSON (PostgreSQL's jsonb insists) of the wrong shape.
    location
        .execute(r#"UPDATE device_acls SET acls = '{"unexpected": true}'"#)
        .await;
    assert!(matches!(
        store.acls("dev-1").await,
        Err(StoreError::Corrupt(_))
    ));
    location
        .execute(r#"UPDATE enrollment_groups SET acl_template = '[{"subject": 5}]'"#)
        .await;
    assert!(matches!(
        store.group("g").await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.list_groups().await,
        Err(StoreError::Corrupt(_))
    ));
}

pub async fn failed_operations_leave_nothing_behind(location: &Location) {
    let store = store_with_device(location).await;
    store
        .enroll_device(&fingerprint(2), "CN=device 2", "g", "dev-2", 2_000)
        .await
        .expect("enroll 2");
    let audit_before = store.audit(u32::MAX).await.expect("audit");

    // Unknown device: nothing recorded.
    assert!(matches!(
        store
            .record_certificate("ghost", certificate("dd", "ghost", 2_100), 2_100)
            .await,
        Err(StoreError::NotFound { what: "device", .. })
    ));
    assert_eq!(store.certificate("dd").await.expect("certificate"), None);

    // A repeated serial fails after the state change was written: both roll back together.
    store
        .record_certificate("dev-1", certificate("ee", "dev-1", 2_100), 2_100)
        .await
        .expect("record");
    let audit_after_record = store.audit(u32::MAX).await.expect("audit");
    assert_eq!(audit_after_record.len(), audit_before.len() + 1);
    let audit_before = audit_after_record;
    assert!(matches!(
        store
            .record_certificate("dev-2", certificate("EE", "dev-2", 2_200), 2_200)
            .await,
        Err(StoreError::CertificateExists(serial)) if serial == "ee"
    ));
    let device_2 = store.device("dev-2").await.expect("device").expect("dev-2");
    assert_eq!(device_2.state, DeviceState::Enrolled);
    assert_eq!(device_2.updated_at, 2_000);
    assert_eq!(store.certificates("dev-2").await.expect("certificates"), []);

    // Refused before the database: a certificate naming another device, bad ACLs.
    assert!(matches!(
        store
            .record_certificate("dev-2", certificate("ff", "dev-1", 2_200), 2_200)
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    let mut bad = acls("/a");
    bad[0].resources = vec!["/*/x".to_owned()];
    assert!(matches!(
        store.set_acls("dev-2", bad, 2_200).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(store.acls("dev-2").await.expect("acls"), []);
    assert!(matches!(
        store.mark_provisioned("ghost", 2_200).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.revoke_device("ghost", 2_200).await,
        Err(StoreError::NotFound { .. })
    ));

    assert_eq!(store.audit(u32::MAX).await.expect("audit"), audit_before);
    assert_eq!(
        location
            .query_i64("SELECT COUNT(*) FROM certificates")
            .await,
        1
    );
    assert_eq!(
        location.query_i64("SELECT COUNT(*) FROM device_acls").await,
        0
    );
}

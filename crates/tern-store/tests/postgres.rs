//! The behavioural suite against a real PostgreSQL server, which these tests start themselves
//! (see `common::PgServer`): skipped when no server binaries are installed, a failure then
//! when `TERN_REQUIRE_PEERS=1`.

#[macro_use]
mod common;

use common::Location;

behaviour_suite!(Location::postgres();
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

/// A wrong password is refused, and the error does not repeat it.
#[tokio::test]
async fn connection_errors_hide_the_password() {
    let Some(location) = Location::postgres().await else {
        return;
    };
    drop(location.store().await);
    let url = location.url.replace("tern@", "nobody:hunter2@");
    let error = tern_store::open(&url).await.expect_err("unknown role");
    let text = error.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    let error = tern_store::open("postgres://tern:hunter2@127.0.0.1:notaport/db")
        .await
        .expect_err("bad port");
    assert!(
        matches!(error, tern_store::StoreError::BadUrl(_)),
        "{error:?}"
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

//! Property tests for the values the store writes as text and reads back.

use proptest::prelude::*;
use tern_store::{normalize_serial, AclEntry, AclSubject, DeviceState};

fn subject() -> impl Strategy<Value = AclSubject> {
    prop_oneof![
        any::<String>().prop_map(AclSubject::DeviceId),
        any::<String>().prop_map(AclSubject::Role),
        Just(AclSubject::AnyAuthenticated),
        Just(AclSubject::Anonymous),
    ]
}

fn acl_entry() -> impl Strategy<Value = AclEntry> {
    (
        subject(),
        prop::collection::vec(any::<String>(), 0..5),
        any::<u8>(),
    )
        .prop_map(|(subject, resources, permissions)| AclEntry {
            subject,
            resources,
            permissions,
        })
}

/// Texts near the state names as well as arbitrary ones, so both outcomes are exercised.
fn state_text() -> impl Strategy<Value = String> {
    let names: Vec<String> = DeviceState::ALL.iter().map(|s| s.to_string()).collect();
    prop_oneof![
        any::<String>(),
        prop::sample::select(names.clone()),
        (prop::sample::select(names), any::<String>()).prop_map(|(name, noise)| name + &noise),
        "[a-z_]{0,20}",
    ]
}

proptest! {
    #[test]
    fn acl_entries_survive_json(entries in prop::collection::vec(acl_entry(), 0..6)) {
        let json = serde_json::to_string(&entries).expect("serialise");
        let back: Vec<AclEntry> = serde_json::from_str(&json).expect("deserialise");
        prop_assert_eq!(back, entries);
    }

    #[test]
    fn state_text_parses_back_exactly_or_not_at_all(text in state_text()) {
        match text.parse::<DeviceState>() {
            Ok(state) => prop_assert_eq!(state.to_string(), text),
            Err(error) => prop_assert!(DeviceState::ALL.iter().all(|s| s.as_str() != text), "{}", error),
        }
    }

    #[test]
    fn serial_spellings_normalise_to_one(value in any::<u128>(), zeros in 0usize..4, upper: bool, colons: bool) {
        let mut hex = format!("{}{value:x}", "0".repeat(zeros));
        if upper {
            hex = hex.to_uppercase();
        }
        if colons {
            hex = hex.chars().map(String::from).collect::<Vec<_>>().join(":");
        }
        let normal = normalize_serial(&hex).expect("hex serial");
        prop_assert_eq!(&normal, &format!("{value:x}"));
        prop_assert_eq!(normalize_serial(&normal).expect("normal serial"), normal);
    }
}

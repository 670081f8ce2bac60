// The checks of the `config` fuzz target, shared word for word by `fuzz/fuzz_targets/config.rs`
// (which `include!`s this file) and by `tests/config_fuzz_regressions.rs` (which replays the
// seed corpus and past crashes on stable `cargo test`).
//
// Input: up to four parts separated by NUL bytes: a credentials file (aiocoap's format), then
// a context folder's settings.json, secret.json and sequence.json (a missing part is a
// missing file). Neither parser may panic; a folder that loads gives a context that protects.

/// What a check did with an input.
#[derive(Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Outcome {
    /// Both files were refused (fine for a fuzz input, not for a seed).
    Rejected,
    /// The credentials file, the folder, or both loaded, and the checks on them held.
    Checked,
}

/// Runs the checks; panics when an invariant breaks.
pub fn check(data: &[u8]) -> Outcome {
    use std::path::Path;
    use tern_oscore::credentials::Credentials;
    use tern_oscore::{protect_request, ContextFolder};
    use tern_proto::{Code, Message, MessageType};

    let parts: Vec<&[u8]> = data.splitn(4, |&b| b == 0).collect();
    let text = |i: usize| {
        parts
            .get(i)
            .map(|p| String::from_utf8_lossy(p).into_owned())
    };
    let mut outcome = Outcome::Rejected;
    if let Some(credentials) = text(0).and_then(|t| Credentials::parse(&t).ok()) {
        for uri in [
            "coap://h/x",
            "coaps://127.0.0.1:5684/a/b?c",
            "",
            "*",
            ":name",
        ] {
            let _ = credentials.for_uri(uri);
        }
        let folders = credentials.oscore_folders();
        let mut unique = folders.clone();
        unique.dedup();
        assert_eq!(unique.len(), folders.len(), "folders are listed once each");
        outcome = Outcome::Checked;
    }
    let files = [
        ("settings.json", text(1)),
        ("secret.json", text(2)),
        ("sequence.json", text(3)),
    ];
    let folder = ContextFolder::new("/fuzz");
    let loaded = folder.load_with(|path: &Path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        files
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, t)| t.clone())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    });
    if let Ok(mut loaded) = loaded {
        let mut request = Message::new(MessageType::Con, Code::GET);
        request.set_path("/x");
        // Sequence numbers may be used up (a stored mark at the limit): an error, not a panic.
        if let Ok((outer, _)) = protect_request(&mut loaded.context, &request, true) {
            assert_eq!(outer.code, Code::POST);
        }
        outcome = Outcome::Checked;
    }
    outcome
}

//! Crash safety of sequence numbers (Appendix B.1.1): a client process protecting requests as
//! fast as it can, its sequence numbers persisted in steps through `SequenceFile`, is killed
//! (SIGKILL) at arbitrary instants and restarted many times. Every Partial IV it used is logged
//! just before the request would go out; no (context, Partial IV) pair may appear twice.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tern_oscore::context::sequence_of;
use tern_oscore::{protect_request, ContextParams, SecurityContext, SequenceFile};
use tern_proto::{Code, Message, MessageType};

const CHILD_DIR: &str = "TERN_OSCORE_CRASH_DIR";

/// The child: protects requests in a loop until killed (bounded all the same).
#[test]
#[ignore = "entry point of the crash test's child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let file = SequenceFile::new(dir.join("sequence"));
    let mut context =
        SecurityContext::derive(&ContextParams::new(b"0123456789abcdef", b"c", b"s")).unwrap();
    context.persist_sequence_numbers(file.load().unwrap(), 16);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sent"))
        .unwrap();
    let mut request = Message::new(MessageType::Con, Code::GET);
    request.set_path("/x");
    for _ in 0..2_000_000 {
        file.reserve(&mut context).unwrap();
        let (_, binding) = protect_request(&mut context, &request, false).unwrap();
        let sequence = sequence_of(&binding.partial_iv).unwrap();
        // One write per line: a kill leaves whole lines only.
        log.write_all(format!("{sequence}\n").as_bytes()).unwrap();
    }
}

#[test]
fn killed_clients_never_reuse_a_partial_iv() {
    let dir = std::env::temp_dir().join(format!("tern-oscore-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    // Kill delays from a fixed LCG: reproducible, spread over 3–40 ms.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let rounds = 30;
    for _ in 0..rounds {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let delay = 3 + (state >> 33) % 38;
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = std::fs::read_to_string(dir.join("sent")).unwrap_or_default();
    let mut seen = HashSet::new();
    let mut sent = 0;
    for line in log.lines() {
        let sequence: u64 = line
            .parse()
            .unwrap_or_else(|_| panic!("torn log line {line:?}"));
        assert!(
            seen.insert(sequence),
            "Partial IV {sequence} was used twice"
        );
        sent += 1;
    }
    // The children must have got going, or the test proves nothing.
    assert!(
        sent > 1000,
        "only {sent} requests were protected over {rounds} runs"
    );
    let mark = SequenceFile::new(dir.join("sequence"))
        .load()
        .unwrap()
        .unwrap();
    assert!(
        seen.iter().all(|s| *s < mark),
        "a number at or above the stored mark {mark} was used"
    );
    println!("{sent} requests over {rounds} killed runs, highest mark {mark}");
    let _ = std::fs::remove_dir_all(&dir);
}

const FOLDER_CHILD_DIR: &str = "TERN_OSCORE_CRASH_FOLDER";

/// The child of the re-derivation crash test: a context folder whose context is re-derived
/// (Appendix B.2) every 500 requests, as a client would after each procedure, protecting
/// requests until killed. Each line logged is the ID Context and Partial IV of a request about
/// to go out.
#[test]
#[ignore = "entry point of the re-derivation crash test's child process"]
fn crash_child_rederiving() {
    let Ok(dir) = std::env::var(FOLDER_CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let folder = tern_oscore::ContextFolder::new(dir.join("context"));
    let loaded = folder.load().unwrap();
    let mut context = loaded.context;
    context.persist_sequence_numbers(loaded.stored_mark, 16);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sent"))
        .unwrap();
    let mut request = Message::new(MessageType::Con, Code::GET);
    request.set_path("/x");
    let run = std::process::id().to_be_bytes();
    for n in 0..2_000_000u32 {
        if n % 50 == 49 {
            // A new ID Context unique to this run and step, like R2 | R3.
            let id = [&run[..], &n.to_be_bytes()[..]].concat();
            let mut next = context.rederive(Some(id)).unwrap();
            folder.adopt(&mut next, 16).unwrap();
            context = next;
        }
        folder.reserve(&mut context).unwrap();
        let (_, binding) = protect_request(&mut context, &request, false).unwrap();
        let sequence = sequence_of(&binding.partial_iv).unwrap();
        let id: String = context
            .id_context()
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        log.write_all(format!("{id} {sequence}\n").as_bytes())
            .unwrap();
    }
}

#[test]
fn killed_clients_never_reuse_a_nonce_across_rederivations() {
    let dir = std::env::temp_dir().join(format!("tern-oscore-crash-b2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("context")).unwrap();
    std::fs::write(
        dir.join("context/settings.json"),
        r#"{"sender-id_hex": "63", "recipient-id_hex": "73"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("context/secret.json"),
        r#"{"secret_hex": "000102030405060708090a0b0c0d0e0f"}"#,
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let rounds = 30;
    for _ in 0..rounds {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let delay = 3 + (state >> 33) % 38;
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child_rederiving",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(FOLDER_CHILD_DIR, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = std::fs::read_to_string(dir.join("sent")).unwrap_or_default();
    let mut seen = HashSet::new();
    let mut contexts = HashSet::new();
    for line in log.lines() {
        let (id, sequence) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("torn log line {line:?}"));
        let sequence: u64 = sequence
            .parse()
            .unwrap_or_else(|_| panic!("torn log line {line:?}"));
        contexts.insert(id.to_string());
        assert!(
            seen.insert((id.to_string(), sequence)),
            "ID Context {id} used Partial IV {sequence} twice"
        );
    }
    assert!(
        seen.len() > 1000 && contexts.len() > 3,
        "only {} requests under {} contexts over {rounds} runs",
        seen.len(),
        contexts.len()
    );
    // The folder loads the last context a child moved to, beyond every number it used.
    let loaded = tern_oscore::ContextFolder::new(dir.join("context"))
        .load()
        .unwrap();
    let last: String = loaded
        .context
        .id_context()
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mark = loaded.stored_mark.unwrap();
    assert!(seen
        .iter()
        .filter(|(id, _)| *id == last)
        .all(|(_, s)| *s < mark));
    println!(
        "{} requests under {} contexts over {rounds} killed runs",
        seen.len(),
        contexts.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

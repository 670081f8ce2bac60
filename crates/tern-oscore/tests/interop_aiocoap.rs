//! Tern's OSCORE against aiocoap's: each side protects what the other unprotects, both
//! directions, with one aiocoap-format context folder per side, for every AEAD both implement
//! and with an ID Context (sent as kid context). The messages pass through `tests/aiocoap_bridge.py`
//! as hex lines; the runtime and network are not involved here.
//!
//! aiocoap's Python is found beside `TERN_AIOCOAP_CLIENT` (scripts/install-peers.sh sets up
//! the venv); without it the test is skipped, or fails when `TERN_REQUIRE_PEERS=1`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tern_oscore::{
    protect_request, protect_response, unprotect_response, ContextFolder, ContextStore,
};
use tern_proto::{Code, Message, MessageType};

fn aiocoap_python() -> Option<PathBuf> {
    let client = std::env::var_os("TERN_AIOCOAP_CLIENT").map(PathBuf::from);
    let python = client.and_then(|c| c.parent().map(|bin| bin.join("python")));
    match python.filter(|p| p.exists()) {
        Some(p) => Some(p),
        None if std::env::var("TERN_REQUIRE_PEERS").is_ok_and(|v| v == "1") => {
            panic!(
                "aiocoap's Python not found beside TERN_AIOCOAP_CLIENT, and TERN_REQUIRE_PEERS=1"
            )
        }
        None => {
            eprintln!("skipping: aiocoap not installed (set TERN_AIOCOAP_CLIENT)");
            None
        }
    }
}

/// The context variants tried: (name, extra settings.json members).
const VARIANTS: &[(&str, &str)] = &[
    ("default", r#""algorithm": "AES-CCM-16-64-128""#),
    (
        "id-context",
        r#""algorithm": "AES-CCM-16-64-128", "id-context_hex": "37cbf3210017a2d3""#,
    ),
    ("ccm-128-tag", r#""algorithm": "AES-CCM-16-128-128""#),
    ("gcm", r#""algorithm": "A128GCM""#),
    ("chacha", r#""algorithm": "ChaCha20/Poly1305""#),
];

/// Writes a folder pair: the client's and the server's view of one context.
fn folders(tag: &str, extra: &str) -> (PathBuf, PathBuf) {
    let base =
        std::env::temp_dir().join(format!("tern-oscore-aiocoap-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let secret =
        r#"{"secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340"}"#;
    let write = |name: &str, sender: &str, recipient: &str| {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret.json"), secret).unwrap();
        std::fs::write(
            dir.join("settings.json"),
            format!(
                r#"{{"sender-id_hex": "{sender}", "recipient-id_hex": "{recipient}", {extra}}}"#
            ),
        )
        .unwrap();
        dir
    };
    (write("client", "", "01"), write("server", "01", ""))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

struct Bridge {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Bridge {
    fn start(python: &Path, mode: &str, folder: &Path) -> Bridge {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiocoap_bridge.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(mode)
            .arg(folder)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Bridge { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the aiocoap bridge stopped early");
        line.trim().to_string()
    }

    fn send(&mut self, message: &Message) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", hex(&message.to_bytes().unwrap())).unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        assert!(
            self.child.wait().unwrap().success(),
            "the aiocoap bridge failed"
        );
    }
}

#[test]
fn aiocoap_client_to_tern_server() {
    let Some(python) = aiocoap_python() else {
        return;
    };
    for (name, extra) in VARIANTS {
        let (client_dir, server_dir) = folders(&format!("c2s-{name}"), extra);
        // Found through a store, by the kid and kid context aiocoap sends.
        let mut store = ContextStore::new();
        store
            .insert(ContextFolder::new(&server_dir).load().unwrap().context)
            .unwrap();
        let mut bridge = Bridge::start(&python, "client", &client_dir);
        let protected = Message::decode(&unhex(&bridge.line())).unwrap();
        let (key, request, binding) = store.unprotect_request(&protected).unwrap();
        assert_eq!(request.code, Code::GET, "{name}");
        assert_eq!(request.path(), "oscore/hello", "{name}");
        assert_eq!(request.payload, b"ping", "{name}");
        let server = store.get_mut(&key.0, key.1.as_deref()).unwrap();
        let mut response = Message::new(MessageType::Ack, Code::CONTENT);
        response.mid = request.mid;
        response.token = request.token;
        response.payload = b"hello from tern".to_vec();
        bridge.send(&protect_response(server, &binding, &response, false).unwrap());
        assert_eq!(bridge.line(), "response 2.05 hello from tern", "{name}");
        bridge.finish();
    }
}

#[test]
fn tern_client_to_aiocoap_server() {
    let Some(python) = aiocoap_python() else {
        return;
    };
    for (name, extra) in VARIANTS {
        let (client_dir, server_dir) = folders(&format!("s2c-{name}"), extra);
        let mut client = ContextFolder::new(&client_dir).load().unwrap().context;
        let mut bridge = Bridge::start(&python, "server", &server_dir);
        let mut request = Message::new(MessageType::Con, Code::POST);
        request.mid = 0x4242;
        request.token = tern_proto::Token::new(&[9, 9]).unwrap();
        request.set_path("/sensors/t");
        request.payload = b"21.5".to_vec();
        let (protected, binding) = protect_request(&mut client, &request, true).unwrap();
        bridge.send(&protected);
        assert_eq!(bridge.line(), "request 0.02 sensors/t 21.5", "{name}");
        let reply = Message::decode(&unhex(&bridge.line())).unwrap();
        let response = unprotect_response(&mut client, &binding, &reply).unwrap();
        assert_eq!(response.code, Code::CONTENT, "{name}");
        assert_eq!(response.payload, b"pong:21.5", "{name}");
        bridge.finish();
    }
}

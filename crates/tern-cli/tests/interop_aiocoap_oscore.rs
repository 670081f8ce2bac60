//! `tern get --oscore DIR` against aiocoap's file server holding the other half of the
//! security context (aiocoap-format folders on both sides, over UDP on loopback): the file
//! comes back through OSCORE; sequence numbers continue across runs (aiocoap's replay window
//! would refuse a reused one); a wrong key and an unknown kid are reported with the server's
//! §8.2 answers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_port, locate_peer, require_peer, tern, wait_ready, ChildGuard};

const SECRET: &str =
    r#"{"secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340"}"#;

fn write_context(dir: &Path, secret: &str, sender: &str, recipient: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("secret.json"), secret).unwrap();
    std::fs::write(
        dir.join("settings.json"),
        format!(r#"{{"sender-id_hex": "{sender}", "recipient-id_hex": "{recipient}"}}"#),
    )
    .unwrap();
}

/// aiocoap-fileserver, beside aiocoap-client in the peers' venv.
fn fileserver() -> Option<PathBuf> {
    require_peer("aiocoap-client")?;
    let client = locate_peer("aiocoap-client")?;
    let server = client.with_file_name("aiocoap-fileserver");
    assert!(server.exists(), "{} is missing", server.display());
    Some(server)
}

#[test]
fn tern_oscore_client_on_aiocoap_fileserver() {
    let Some(server_bin) = fileserver() else {
        return;
    };
    let base = std::env::temp_dir().join(format!("tern-oscore-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (client, server, files) = (base.join("client"), base.join("server"), base.join("files"));
    write_context(&client, SECRET, "01", "");
    write_context(&server, SECRET, "", "01");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hello.txt"), "hello over oscore\n").unwrap();
    let credentials = base.join("server-credentials.json");
    std::fs::write(
        &credentials,
        format!(
            r#"{{":ctx": {{"oscore": {{"contextfile": "{}/"}}}}}}"#,
            server.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new(&server_bin);
    cmd.arg("--bind")
        .arg(addr.to_string())
        .arg("--credentials")
        .arg(&credentials)
        .arg(&files);
    let mut guard = ChildGuard::spawn("aiocoap-fileserver", cmd);
    wait_ready(&mut guard, addr, None);
    let uri = format!("coap://{addr}/hello.txt");

    for run in 0..3 {
        let out = tern(["get", "--oscore", client.to_str().unwrap(), &uri]);
        assert!(out.success(), "run {run}: {}", out.describe());
        assert_eq!(out.stdout, "hello over oscore\n", "run {run}");
    }
    // Three runs, each reserving a new step of sequence numbers before its first use.
    let sequence = std::fs::read_to_string(client.join("sequence.json")).unwrap();
    assert!(sequence.contains(r#""next-to-send": 192"#), "{sequence}");

    let wrong = base.join("wrong-key");
    write_context(&wrong, &SECRET.replace("0f10", "0f11"), "01", "");
    let out = tern(["get", "--oscore", wrong.to_str().unwrap(), &uri]);
    assert!(!out.success());
    assert!(
        out.stderr.contains("4.00") && out.stderr.contains("without OSCORE"),
        "{}",
        out.describe()
    );

    let unknown = base.join("unknown-kid");
    write_context(&unknown, SECRET, "07", "");
    let out = tern(["get", "--oscore", unknown.to_str().unwrap(), &uri]);
    assert!(out.stderr.contains("4.01"), "{}", out.describe());

    let out = tern([
        "get",
        "--oscore",
        base.join("missing").to_str().unwrap(),
        &uri,
    ]);
    assert!(
        out.stderr.contains("no settings.json or secret.json"),
        "{}",
        out.describe()
    );
    drop(guard);
    let _ = std::fs::remove_dir_all(&base);
}

//! OSCORE from the command line, with aiocoap-format context folders on both sides over UDP on
//! loopback:
//!
//! - `tern get --oscore DIR` against aiocoap's file server holding the other half of the
//!   security context: a file comes back through OSCORE, a 60 kB one block-wise inside
//!   OSCORE; sequence numbers continue across runs (aiocoap's replay window would refuse a
//!   reused one); `--credentials FILE` picks the context by URI; a wrong key and an unknown
//!   kid are reported with the server's §8.2 answers;
//! - `aiocoap-client --credentials FILE` against `tern serve --oscore DIR`: the request
//!   reaches the handler with its context (`/whoami`), a 100 kB file comes back block-wise,
//!   and an unprotected request to the same server still works;
//! - `tern get --oscore -s` observing `tern serve --oscore`'s `/time`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    free_port, locate_peer, require_peer, run_with_timeout, start_tern_server_with, tern,
    wait_ready, ChildGuard,
};

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

    // A large file: block-wise inside OSCORE (each block its own protected exchange).
    let big: String = (0..6000).map(|i| format!("{i:09}\n")).collect();
    std::fs::write(files.join("big.txt"), &big).unwrap();
    let out_file = base.join("big.out");
    let big_uri = format!("coap://{addr}/big.txt");
    let out = tern([
        "get",
        "--oscore",
        client.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
        &big_uri,
    ]);
    assert!(out.success(), "{}", out.describe());
    assert!(
        std::fs::read_to_string(&out_file).unwrap() == big,
        "60 kB file differs"
    );

    // --credentials: the context of the entry the URI matches.
    let creds = base.join("client-credentials.json");
    std::fs::write(
        &creds,
        format!(
            r#"{{"coap://{addr}/*": ":fs", ":fs": {{"oscore": {{"contextfile": "{}"}}}}, "coap://elsewhere/*": {{"oscore": {{"contextfile": "/nonexistent"}}}}}}"#,
            client.display()
        ),
    )
    .unwrap();
    let out = tern(["get", "--credentials", creds.to_str().unwrap(), &uri]);
    assert!(out.success(), "{}", out.describe());
    assert_eq!(out.stdout, "hello over oscore\n");
    let out = tern([
        "get",
        "--credentials",
        creds.to_str().unwrap(),
        "coap://127.0.0.2:9/x",
    ]);
    assert!(
        out.stderr.contains("no entry matches"),
        "{}",
        out.describe()
    );

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

#[test]
fn aiocoap_client_against_tern_serve_with_oscore() {
    let Some(aiocoap) = require_peer("aiocoap-client") else {
        return;
    };
    let base = std::env::temp_dir().join(format!("tern-oscore-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (client, server, files) = (base.join("client"), base.join("server"), base.join("files"));
    write_context(&client, SECRET, "01", "");
    write_context(&server, SECRET, "", "01");
    std::fs::create_dir_all(&files).unwrap();
    let big: String = (0..10_000).map(|i| format!("{i:09}\n")).collect();
    std::fs::write(files.join("big.txt"), &big).unwrap();
    let (_server, addr) = start_tern_server_with(&[
        "--no-tcp",
        "--oscore",
        server.to_str().unwrap(),
        "--files",
        files.to_str().unwrap(),
    ]);
    let credentials = base.join("credentials.json");
    std::fs::write(
        &credentials,
        format!(
            r#"{{"coap://{addr}/*": {{"oscore": {{"contextfile": "{}/"}}}}}}"#,
            client.display()
        ),
    )
    .unwrap();
    let run = |path: &str| {
        run_with_timeout(
            &aiocoap,
            [
                "--credentials",
                credentials.to_str().unwrap(),
                &format!("coap://{addr}{path}"),
            ],
            common::CLIENT_TIMEOUT,
        )
    };
    // The handler sees the context: the client's Sender ID is 01.
    let out = run("/whoami");
    assert!(out.success(), "{}", out.describe());
    assert_eq!(out.stdout.trim(), "oscore:01", "{}", out.describe());
    // 100 kB back block-wise inside OSCORE.
    let out = run("/files/big.txt");
    assert!(out.success(), "{}", out.describe());
    assert!(
        out.stdout.trim_end() == big.trim_end(),
        "100 kB file differs"
    );
    // Unprotected requests are still served.
    let out = run_with_timeout(
        &aiocoap,
        [format!("coap://{addr}/whoami")],
        common::CLIENT_TIMEOUT,
    );
    assert_eq!(out.stdout.trim(), "anonymous", "{}", out.describe());

    // Tern's own client observing /time through OSCORE: a fresh folder pair.
    let (tc, ts) = (base.join("tern-client"), base.join("tern-server"));
    write_context(&tc, SECRET, "0a", "");
    write_context(&ts, SECRET, "", "0a");
    let (_observed, addr) = start_tern_server_with(&["--no-tcp", "--oscore", ts.to_str().unwrap()]);
    let out = tern([
        "get",
        "--oscore",
        tc.to_str().unwrap(),
        "-s",
        "3.5",
        &format!("coap://{addr}/time"),
    ]);
    assert!(out.success(), "{}", out.describe());
    let times = out.stdout.lines().filter(|l| l.contains('T')).count();
    assert!(
        times >= 3,
        "expected the first response and two notifications: {}",
        out.describe()
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// Through aiocoap's forward proxy (`aiocoap-proxy --forward`): `tern get -P` reaches
/// `tern serve`, plain and with OSCORE (the proxy forwards by the outer Proxy-Scheme,
/// Uri-Host and Uri-Port; the path is encrypted, RFC 8613 §4.1.3.3).
#[test]
fn tern_client_through_aiocoap_proxy() {
    let Some(client_bin) = require_peer("aiocoap-client") else {
        return;
    };
    let proxy_bin = client_bin.with_file_name("aiocoap-proxy");
    assert!(proxy_bin.exists(), "{} is missing", proxy_bin.display());
    let base = std::env::temp_dir().join(format!("tern-oscore-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (client, server) = (base.join("client"), base.join("server"));
    write_context(&client, SECRET, "01", "");
    write_context(&server, SECRET, "", "01");
    let (_server, addr) =
        start_tern_server_with(&["--no-tcp", "--oscore", server.to_str().unwrap()]);
    let proxy_addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(&proxy_bin);
    cmd.arg("--forward")
        .arg("--bind")
        .arg(proxy_addr.to_string());
    let mut proxy = ChildGuard::spawn("aiocoap-proxy", cmd);
    wait_ready(&mut proxy, proxy_addr, None);
    let target = format!("coap://{addr}/whoami");
    let via = format!("coap://{proxy_addr}");
    let out = tern(["get", "-P", &via, &target]);
    assert!(out.success(), "{}\n{}", out.describe(), proxy.output());
    assert_eq!(out.stdout.trim(), "anonymous");
    let out = tern([
        "get",
        "-P",
        &via,
        "--oscore",
        client.to_str().unwrap(),
        &target,
    ]);
    assert!(out.success(), "{}\n{}", out.describe(), proxy.output());
    assert_eq!(out.stdout.trim(), "oscore:01");
    let _ = std::fs::remove_dir_all(&base);
}

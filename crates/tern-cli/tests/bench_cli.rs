//! `tern bench -b`: each request a whole block-wise transfer, body bytes counted.

mod common;

use common::{start_tern_server_with, tern};

/// The integer value of `"key":N` in the one-line JSON report.
fn field(json: &str, key: &str) -> u64 {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 3;
    json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

#[test]
fn bench_block_size_counts_whole_transfers_both_ways() {
    let dir = std::env::temp_dir().join(format!("tern-bench-block-{}", std::process::id()));
    let files = dir.join("served");
    std::fs::create_dir_all(&files).unwrap();
    const SIZE: u64 = 20_000;
    std::fs::write(files.join("body"), vec![7u8; SIZE as usize]).unwrap();
    let (_server, addr) = start_tern_server_with(&["--files", files.to_str().unwrap()]);

    let get = tern([
        "bench",
        "-b",
        "256",
        "-c",
        "2",
        "-d",
        "1",
        "--json",
        &format!("coap://{addr}/files/body"),
    ]);
    assert!(get.success(), "{}", get.describe());
    let requests = field(&get.stdout, "requests");
    assert!(requests > 0, "{}", get.stdout);
    assert_eq!(field(&get.stdout, "errors"), 0, "{}", get.stdout);
    assert_eq!(field(&get.stdout, "body_bytes"), requests * SIZE);

    let put = tern([
        "bench",
        "-b",
        "1024",
        "-c",
        "1",
        "-d",
        "1",
        "--json",
        "--method",
        "put",
        "--payload",
        &SIZE.to_string(),
        &format!("coap://{addr}/files/put"),
    ]);
    assert!(put.success(), "{}", put.describe());
    let requests = field(&put.stdout, "requests");
    assert!(requests > 0, "{}", put.stdout);
    assert_eq!(field(&put.stdout, "body_bytes"), requests * SIZE);
    assert_eq!(
        std::fs::read(files.join("put")).unwrap(),
        vec![b'x'; SIZE as usize]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_rejects_a_block_size_that_is_not_a_power_of_two() {
    let out = tern(["bench", "-b", "1000", "-d", "1", "coap://127.0.0.1:9/"]);
    assert!(!out.success());
    assert!(out.stderr.contains("-b/--block-size"), "{}", out.describe());
}

/// `tern dtls-load requests`: closed-loop GETs over DTLS sessions driven at the record layer,
/// every one answered 2.05; `tern bench --oscore` protects each request and is answered too.
#[test]
fn lean_dtls_load_and_oscore_bench_are_answered() {
    let port = common::free_port();
    let dtls: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = std::env::temp_dir().join(format!("tern-bench-lean-{}", std::process::id()));
    let (client, server) = (dir.join("client"), dir.join("server"));
    let secret = r#"{"secret_hex": "0102030405060708090a0b0c0d0e0f10"}"#;
    for (d, sender, recipient) in [(&client, "01", ""), (&server, "", "01")] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("secret.json"), secret).unwrap();
        std::fs::write(
            d.join("settings.json"),
            format!(r#"{{"sender-id_hex": "{sender}", "recipient-id_hex": "{recipient}", "window": 128}}"#),
        )
        .unwrap();
    }
    let (_server, addr) = start_tern_server_with(&[
        "--no-tcp",
        "--no-tls",
        "--dtls-bind",
        &dtls.to_string(),
        "--psk-identity",
        "lean",
        "--psk-key",
        "lean-secret",
        "--oscore",
        server.to_str().unwrap(),
    ]);
    let out = tern([
        "dtls-load",
        "requests",
        &dtls.to_string(),
        "-u",
        "lean",
        "-k",
        "lean-secret",
        "-s",
        "2",
        "-w",
        "4",
        "-d",
        "1",
        "--json",
    ]);
    assert!(out.success(), "{}", out.describe());
    assert!(field(&out.stdout, "requests") > 0, "{}", out.stdout);
    assert_eq!(field(&out.stdout, "errors"), 0, "{}", out.stdout);
    assert_eq!(field(&out.stdout, "timeouts"), 0, "{}", out.stdout);

    let out = tern([
        "bench",
        "--oscore",
        client.to_str().unwrap(),
        "-c",
        "8",
        "-d",
        "1",
        "--json",
        &format!("coap://{addr}/"),
    ]);
    assert!(out.success(), "{}", out.describe());
    assert!(field(&out.stdout, "requests") > 0, "{}", out.stdout);
    assert_eq!(field(&out.stdout, "errors"), 0, "{}", out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

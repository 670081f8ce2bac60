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

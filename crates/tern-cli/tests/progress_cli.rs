//! `tern get`/`put --progress`: a transfer of more than a few kilobytes draws a progress bar on
//! stderr, ending at 100%; a small one draws none (without `--progress` it is drawn only when
//! stdout is a terminal, which it is not here).

mod common;

use common::{start_tern_server_with, tempdir, tern};

#[test]
fn large_transfers_show_progress() {
    let dir = tempdir("progress");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let body: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("up.bin"), &body).unwrap();
    let (_server, addr) = start_tern_server_with(&["--no-tcp", "--files", files.to_str().unwrap()]);
    let uri = format!("coap://{addr}/files/up.bin");

    let up = tern([
        "put",
        "--progress",
        "-f",
        dir.join("up.bin").to_str().unwrap(),
        &uri,
    ]);
    assert!(up.success(), "{}", up.describe());
    assert!(
        up.stderr.contains("100%") && up.stderr.contains("60.0/60.0 kB"),
        "{}",
        up.describe()
    );

    let out = dir.join("down.bin");
    let down = tern(["get", "--progress", "-o", out.to_str().unwrap(), &uri]);
    assert!(down.success(), "{}", down.describe());
    assert_eq!(std::fs::read(&out).unwrap(), body);
    assert!(down.stderr.contains("100%"), "{}", down.describe());

    let small = tern(["get", "--progress", &format!("coap://{addr}/time")]);
    assert!(small.success(), "{}", small.describe());
    assert!(
        !small.stderr.contains('%'),
        "no bar for a small response: {}",
        small.describe()
    );
    let unforced = tern(["get", "-o", out.to_str().unwrap(), &uri]);
    assert!(
        !unforced.stderr.contains('%'),
        "stdout is not a terminal: {}",
        unforced.describe()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

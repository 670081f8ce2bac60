//! `tern pki`, `tern dps serve`, `tern dps provision` and the admin commands as processes: a
//! trial PKI made with the CLI, a group created, a device provisioned, SIGHUP resetting and
//! provisioning it again, a restart that does not provision again, the device's requests to a
//! hub (`tern serve --hub-store`) with its new identity held to its ACLs, a revoked device
//! refused by the service and by the hub, and hostile flags answered with messages that name
//! them.

mod common;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, tern, tern_bin, ChildGuard};

const WAIT: Duration = Duration::from_secs(60);

fn ok(args: &[&str]) -> String {
    let out = tern(args);
    assert!(out.success(), "{}", out.describe());
    out.stdout
}

/// Waits (bounded) until `child`'s stdout holds `needle` `times` times.
fn wait_for(child: &mut ChildGuard, needle: &str, times: usize) {
    let start = Instant::now();
    while child.stdout.text().matches(needle).count() < times {
        assert!(
            child.exited().is_none(),
            "{} exited waiting for {needle:?}\n{}",
            child.name,
            child.output()
        );
        assert!(
            start.elapsed() < WAIT,
            "no {needle:?} ×{times} in time\n{}",
            child.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn hangup(child: &ChildGuard) {
    let status = Command::new("kill")
        .args(["-HUP", &child.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_device_provisions_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = format!("sqlite://{}", d.join("dps.db").display());
    ok(&[
        "pki",
        "ca",
        "--cn",
        "Trial Maker CA",
        "--name",
        "maker",
        "--dir",
        p(d),
    ]);
    ok(&[
        "pki",
        "ca",
        "--cn",
        "Trial DPS CA",
        "--name",
        "dpsca",
        "--dir",
        p(d),
    ]);
    ok(&[
        "pki",
        "ca",
        "--cn",
        "Trial Hub CA",
        "--name",
        "hubca",
        "--dir",
        p(d),
    ]);
    let dps_ca = [
        "--ca-cert",
        &format!("{}/dpsca.pem", p(d)),
        "--ca-key",
        &format!("{}/dpsca-key.pem", p(d)),
    ]
    .map(String::from);
    let maker = [
        "--ca-cert",
        &format!("{}/maker.pem", p(d)),
        "--ca-key",
        &format!("{}/maker-key.pem", p(d)),
    ]
    .map(String::from);
    let mut args = vec!["pki", "server", "--name", "dps", "--dir", p(d)];
    args.extend(dps_ca.iter().map(String::as_str));
    ok(&args);
    let hub_ca = [
        "--ca-cert",
        &format!("{}/hubca.pem", p(d)),
        "--ca-key",
        &format!("{}/hubca-key.pem", p(d)),
    ]
    .map(String::from);
    let mut args = vec!["pki", "server", "--name", "hub", "--dir", p(d)];
    args.extend(hub_ca.iter().map(String::as_str));
    ok(&args);
    let certs = d.join("pki_certs");
    let dps_ca_file = d.join("dpsca.pem");
    let mut args = vec![
        "pki",
        "manufacturer",
        "--device",
        "sensor-1",
        "--dir",
        p(&certs),
        "--dps-ca",
        p(&dps_ca_file),
    ];
    args.extend(maker.iter().map(String::as_str));
    ok(&args);
    // The hub: the demo server admitting devices by the store.
    let hub_port = free_port();
    let hub_endpoint = format!("coaps+tcp://127.0.0.1:{hub_port}");
    let mut hub_cmd = Command::new(tern_bin());
    hub_cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--no-tcp",
        "--dtls-bind",
        "127.0.0.1:0",
    ]);
    hub_cmd.args(["--tls-bind", &format!("127.0.0.1:{hub_port}")]);
    hub_cmd.args([
        "--cert",
        &format!("{}/hub.pem", p(d)),
        "--key",
        &format!("{}/hub-key.pem", p(d)),
        "--ca",
        &format!("{}/dpsca.pem", p(d)),
        "--hub-store",
        &store,
        "--hub-refresh",
        "0.05",
    ]);
    let mut hub = ChildGuard::spawn("tern serve --hub-store", hub_cmd);
    ok(&[
        "dps",
        "group",
        "create",
        "--store",
        &store,
        "--id",
        "trial",
        "--manufacturer-ca",
        &format!("{}/maker.pem", p(d)),
        "--hub-id",
        "hub-1",
        "--hub-endpoint",
        &hub_endpoint,
        "--hub-ca",
        &format!("{}/hubca.pem", p(d)),
        "--authorization-code",
        "claim-me",
        "--acl",
        "/store/*=rw",
        "--acl",
        "/whoami=r",
    ]);
    assert!(ok(&["dps", "group", "list", "--store", &store]).contains("trial\thub hub-1"));

    let mut serve = Command::new(tern_bin());
    serve.args(["dps", "serve", "--store", &store, "--bind", "127.0.0.1:0"]);
    serve.args(dps_ca.iter());
    serve.args([
        "--cert",
        &format!("{}/dps.pem", p(d)),
        "--key",
        &format!("{}/dps-key.pem", p(d)),
    ]);
    let mut service = ChildGuard::spawn("tern dps serve", serve);
    wait_for(&mut service, "listening on coaps+tcp://", 1);
    let endpoint = service
        .stdout
        .text()
        .lines()
        .find_map(|l| l.split("listening on ").nth(1).map(str::to_owned))
        .unwrap();

    // Provision, then SIGHUP: factory reset and provisioning again.
    let state = d.join("sensor-1.json");
    let identity = d.join("identity");
    let mut device_cmd = Command::new(tern_bin());
    device_cmd.args([
        "dps",
        "provision",
        "sensor-1",
        &endpoint,
        "--certs",
        p(&certs),
        "--state",
        p(&state),
        "--retry",
        "0.2",
        "--identity-out",
        p(&identity),
    ]);
    let mut device = ChildGuard::spawn("tern dps provision", device_cmd);
    wait_for(&mut device, "provisioned as device", 1);
    let out = device.stdout.text();
    assert!(
        out.contains(
            "sensor-1: status initialized|has-time|has-credentials|has-acls|has-hub-configuration"
        ),
        "{out}"
    );
    let device_id = out
        .lines()
        .find_map(|l| l.split("provisioned as device ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned();
    // The hub admits the device by its new identity and holds it to its ACLs.
    let start = Instant::now();
    while !hub.stderr.contains("coaps+tcp") {
        assert!(
            start.elapsed() < WAIT,
            "the hub did not start\n{}",
            hub.output()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let files = ["idcrt.pem", "idkey.pem", "hubca.pem"].map(|name| identity.join(name));
    let on_hub = |method: &str, path: &str, extra: &[&str]| {
        let mut args = vec![
            method,
            "-c",
            p(&files[0]),
            "-j",
            p(&files[1]),
            "-C",
            p(&files[2]),
        ];
        args.extend(extra);
        let uri = format!("coaps+tcp://localhost:{hub_port}{path}");
        args.push(&uri);
        tern(&args)
    };
    let whoami = on_hub("get", "/whoami", &[]);
    assert!(whoami.success(), "{}", whoami.describe());
    assert_eq!(whoami.stdout.trim(), format!("cert:uuid:{device_id}"));
    let put = on_hub("put", "/store/light", &["-e", "on"]);
    assert!(put.success(), "{}", put.describe());
    let refused = on_hub("post", "/echo", &["-e", "x"]);
    assert!(!refused.success(), "{}", refused.describe());
    assert!(refused.stderr.contains("4.03"), "{}", refused.describe());

    hangup(&device);
    wait_for(&mut device, "factory reset", 1);
    wait_for(&mut device, "provisioned as device", 2);
    device.kill();

    // A restart finds the state: provisioned at once, no new certificate in the audit log.
    let devices = ok(&["dps", "devices", "--store", &store]);
    assert!(
        devices.contains(&format!("{device_id}\tprovisioned\ttrial")),
        "{devices}"
    );
    let again = ok(&[
        "dps",
        "provision",
        "sensor-1",
        &endpoint,
        "--certs",
        p(&certs),
        "--state",
        p(&state),
        "--exit-when-provisioned",
    ]);
    assert!(
        again.contains(&format!("provisioned as device {device_id}")),
        "{again}"
    );
    assert_eq!(
        again.matches("status").count(),
        1,
        "one status line, no steps: {again}"
    );

    // Revoked: a fresh run of the same device is refused, and says so.
    assert!(ok(&["dps", "revoke", "--store", &store, &device_id]).contains("revoked device"));
    let mut revoked_cmd = Command::new(tern_bin());
    revoked_cmd.args([
        "dps",
        "provision",
        "sensor-1",
        &endpoint,
        "--certs",
        p(&certs),
        "--state",
        p(&d.join("fresh.json")),
        "--retry",
        "0.2",
    ]);
    let mut revoked = ChildGuard::spawn("tern dps provision (revoked)", revoked_cmd);
    wait_for(&mut revoked, "|failure (", 1);
    assert!(revoked.stdout.contains("refused"), "{}", revoked.output());
    assert!(!revoked.stdout.contains("provisioned as"));
    revoked.kill();
    // And the hub refuses it, though its certificate still passes the TLS handshake.
    let refused = on_hub("get", "/whoami", &[]);
    assert!(!refused.success(), "{}", refused.describe());
    assert!(
        refused.stderr.contains("4.01") && refused.stderr.contains("revoked"),
        "{}",
        refused.describe()
    );
    hub.kill();
    service.kill();
}

#[test]
fn hostile_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    for (args, named) in [
        (
            vec![
                "dps",
                "provision",
                "x",
                "coaps+tcp://127.0.0.1:1",
                "--retry",
                "1,abc",
                "--certs",
                d,
            ],
            "--retry",
        ),
        (
            vec![
                "dps",
                "provision",
                "x",
                "coaps+tcp://127.0.0.1:1",
                "--retry",
                "1,2,3,4,5,6,7,8,9",
                "--certs",
                d,
            ],
            "--retry",
        ),
        (
            vec![
                "dps",
                "provision",
                "x",
                "coaps+tcp://127.0.0.1:1",
                "--certs",
                d,
            ],
            "mfgcrt.pem",
        ),
        (vec!["dps", "devices", "--store", "mysql://x"], "store"),
        (
            vec!["pki", "ca", "--cn", "X", "--name", "../x", "--dir", d],
            "../x",
        ),
        (
            vec![
                "pki", "ca", "--cn", "X", "--name", "x", "--dir", d, "--days", "0",
            ],
            "--days",
        ),
    ] {
        let out = tern(&args);
        assert!(!out.success() && !out.timed_out(), "{}", out.describe());
        assert!(out.stderr.contains(named), "{named}: {}", out.describe());
    }
    let certs = dir.path().join("c");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("mfgcrt.pem"), "not a certificate").unwrap();
    std::fs::write(certs.join("mfgkey.pem"), "not a key").unwrap();
    let out = tern([
        "dps",
        "provision",
        "x",
        "http://127.0.0.1:1",
        "--certs",
        p(&certs),
        "--no-verify-ca",
    ]);
    assert!(
        !out.success() && out.stderr.contains("WARNING: --no-verify-ca"),
        "{}",
        out.describe()
    );
    assert!(out.stderr.contains("mfgcrt.pem"), "{}", out.describe());
}

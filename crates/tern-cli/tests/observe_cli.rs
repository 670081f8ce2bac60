//! `tern get -s SECONDS` (RFC 7641) against `tern serve`: the observable `/time` notifies once
//! a second; a resource that is not observable is printed once and the command ends.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn tern_get_observes_time_on_tern_serve() {
    let (server, addr) = start_tern_server();
    let out = tern(["get", "-s", "4", &format!("coap://{addr}/time")]);
    assert!(out.success(), "\n{}\n{}", out.describe(), server.output());
    let lines: Vec<&str> = out.stdout.lines().collect();
    let times = tern_times(&out.stdout);
    assert_eq!(
        lines.len(),
        times.len(),
        "one distinct time per line\n{}",
        out.describe()
    );
    assert!(
        times.len() >= 4,
        "\n{}\n{}",
        out.describe(),
        server.output()
    );
    assert!(
        out.elapsed >= Duration::from_secs(3),
        "\n{}",
        out.describe()
    );
}

#[test]
fn tern_get_observe_of_a_plain_resource_prints_once_and_ends() {
    let (server, addr) = start_tern_server();
    let out = tern(["get", "-s", "20", &format!("coap://{addr}/")]);
    assert!(out.success(), "\n{}\n{}", out.describe(), server.output());
    assert_eq!(out.stdout.lines().count(), 1, "\n{}", out.describe());
    assert!(
        out.elapsed < Duration::from_secs(10),
        "\n{}",
        out.describe()
    );
}

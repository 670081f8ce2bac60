//! `tern get -s SECONDS` (RFC 7641) against `tern serve`: the observable `/time` notifies once
//! a second; a resource that is not observable is printed once and the command ends.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn tern_get_observes_time_on_tern_serve() {
    let (server, addr) = start_tern_server();
    let out = tern(["get", "-s", "5", &format!("coap://{addr}/time")]);
    assert!(out.success(), "\n{}\n{}", out.describe(), server.output());
    assert!(
        out.stdout.lines().all(|l| tern_times(l).len() == 1),
        "one time per line\n{}",
        out.describe()
    );
    // The first response and the first notification may fall in the same second.
    let times = tern_times(&out.stdout);
    assert!(
        times.len() >= 4,
        "\n{}\n{}",
        out.describe(),
        server.output()
    );
    assert!(
        out.elapsed >= Duration::from_secs(4),
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

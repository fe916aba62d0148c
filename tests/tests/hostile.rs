//! The conformance suite: every case of `tether_tests::conformance`, with
//! the same expected replies, against `tether serve` (TCP on 127.0.0.1),
//! the simulated device over the virtual wire, and the simulated device on
//! a real TAP in a network namespace (as root; skipped, with the reason,
//! otherwise), in every server configuration. For every case: the exact
//! error (code, request id, a phrase of its text) and whether the
//! connection then closes; a well-behaved client is served afterwards; the
//! served tree holds what it held plus what the case stored; nothing
//! outside the served root changed (host) and no upload is left claimed
//! (device).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::Instant;

use tether_tests::conformance::run::{run_config, Tally, Target};
use tether_tests::conformance::targets::{host::HostTarget, tap::TapTarget, virt::VirtTarget};
use tether_tests::conformance::{catalogue, Expect, Server};

/// Print the tally (past the harness's capture) and fail on any failure.
fn check(t: &dyn Target, server: Server, started: Instant, log: impl FnOnce() -> String) {
    let tally: Tally = run_config(t, server);
    let _ = writeln!(
        std::io::stderr(),
        "conformance {} {server:?}: {} cases, {} passed, {} failed, {} not applicable{} ({:.1} s)",
        t.name(),
        tally.ran,
        tally.passed,
        tally.failures.len(),
        tally.not_applicable.len(),
        if tally.not_applicable.is_empty() {
            String::new()
        } else {
            format!(" ({})", tally.not_applicable.join("; "))
        },
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.failures.is_empty(),
        "{} case(s) failed:\n{}\n--- {} log (last lines):\n{}",
        tally.failures.len(),
        tally.failures.join("\n"),
        t.name(),
        tail(&log(), 40)
    );
    assert!(tally.ran > 0, "no case ran");
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn host(server: Server) {
    let started = Instant::now();
    let t = HostTarget::start(server);
    check(&t, server, started, || t.log());
}

fn virtual_wire(server: Server) {
    let started = Instant::now();
    let t = VirtTarget::start(server);
    check(&t, server, started, || t.describe());
}

fn tap(server: Server, test: &str, prefix: &str) {
    let started = Instant::now();
    let Some(ns) = tether_tests::tap::enter(test, prefix) else {
        return;
    };
    let t = TapTarget::start(ns, server).unwrap_or_else(|e| panic!("{test}: {e}"));
    check(&t, server, started, || t.log());
}

#[test]
fn host_plain() {
    host(Server::Plain);
}

#[test]
fn host_keyed() {
    host(Server::Keyed);
}

#[test]
fn host_deadlines() {
    host(Server::Deadlines);
}

#[test]
fn host_keyed_deadlines() {
    host(Server::KeyedDeadlines);
}

#[test]
fn virtual_plain() {
    virtual_wire(Server::Plain);
}

#[test]
fn virtual_keyed() {
    virtual_wire(Server::Keyed);
}

#[test]
fn virtual_deadlines() {
    virtual_wire(Server::Deadlines);
}

#[test]
fn virtual_keyed_deadlines() {
    virtual_wire(Server::KeyedDeadlines);
}

#[test]
fn tap_plain() {
    tap(Server::Plain, "hostile tap_plain", "tether-conf-p");
}

#[test]
fn tap_keyed() {
    tap(Server::Keyed, "hostile tap_keyed", "tether-conf-k");
}

#[test]
fn tap_deadlines() {
    tap(Server::Deadlines, "hostile tap_deadlines", "tether-conf-d");
}

#[test]
fn tap_keyed_deadlines() {
    tap(
        Server::KeyedDeadlines,
        "hostile tap_keyed_deadlines",
        "tether-conf-kd",
    );
}

#[test]
fn the_catalogue_is_one_list_of_distinct_cases() {
    let all = catalogue();
    for server in Server::ALL {
        let of: Vec<_> = all.iter().filter(|c| c.on.contains(&server)).collect();
        let names: BTreeSet<&str> = of.iter().map(|c| c.name).collect();
        assert_eq!(
            names.len(),
            of.len(),
            "{server:?}: case names must be unique"
        );
        assert!(!of.is_empty(), "{server:?} has no case");
    }
    let errors = all
        .iter()
        .filter(|c| matches!(c.expect, Expect::Error { .. }))
        .count();
    let successes = all
        .iter()
        .filter(|c| matches!(c.expect, Expect::Ok | Expect::Reply { .. }))
        .count();
    assert!(all.len() >= 150, "{} cases", all.len());
    assert!(
        errors >= 120 && successes >= 8,
        "{errors} errors, {successes} successes"
    );
    let _ = writeln!(
        std::io::stderr(),
        "conformance catalogue: {} cases ({errors} errors, {successes} successes); per configuration: {}",
        all.len(),
        Server::ALL
            .iter()
            .map(|s| format!("{s:?} {}", all.iter().filter(|c| c.on.contains(s)).count()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

//! Idle connections and server memory (D4): waves of handshaken idle
//! connections ([`IdleConns`]), the server's RSS before, with and after
//! each. Goal: 5,000 idle connections within 150 MiB of server RSS (the
//! same cost per connection for smaller waves), RSS back near its start
//! once a wave closes, and a second wave reusing the first one's memory.

use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use super::idle::IdleConns;
use super::{Env, HostTarget, Outcome, Target};

const MIB: u64 = 1 << 20;

/// Raise this process's open-file limit to its hard limit (children,
/// servers included, inherit it). Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Resident memory of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// RSS after the server had a moment to settle.
fn settled(env: &Env<HostTarget>) -> u64 {
    std::thread::sleep(Duration::from_secs(2));
    rss(env.target.server.pid())
}

/// One wave of `n` idle connections: RSS with them held, then after they
/// closed. While held, a sample answers Ping and a normal client is served.
fn wave(env: &mut Env<HostTarget>, n: usize) -> Result<(u64, u64), String> {
    let mut w = IdleConns::open(env.target.server.port, n)?;
    let with = settled(env);
    w.ping_every(n / 20)?;
    env.target
        .health(env.dir.path())
        .map_err(|e| format!("with {n} idle connections a normal client is not served: {e}"))?;
    drop(w);
    Ok((with, settled(env)))
}

/// Two waves of `n`; the detail reports every RSS figure.
pub fn waves(env: &mut Env<HostTarget>, n: usize) -> Outcome {
    let limit = raise_fd_limit();
    if limit < n as u64 + 64 {
        return Err(format!(
            "RLIMIT_NOFILE is {limit}, too low for {n} connections"
        ));
    }
    env.target.health(env.dir.path())?;
    let start = settled(env);
    let (with1, after1) = wave(env, n)?;
    let (with2, after2) = wave(env, n)?;
    let each = with1.saturating_sub(start) / n as u64;
    let budget = start + (150 * MIB).saturating_sub(start) * n as u64 / 5000;
    let grown = with1.saturating_sub(start);
    let near = start + (8 * MIB).max(grown / 5);
    let figures = format!(
        "server RSS: start {}; {n} idle {} ({:.1} KiB each, budget {}); closed {}; second wave {}; closed {}",
        mib(start), mib(with1), each as f64 / 1024.0, mib(budget), mib(after1), mib(with2), mib(after2)
    );
    let mut bad = Vec::new();
    if with1 > budget {
        bad.push(format!(
            "{n} idle connections take more than the budget ({} for 5,000)",
            mib(150 * MIB)
        ));
    }
    if after1 > near || after2 > near {
        bad.push(format!(
            "RSS does not return near its start once a wave closes (allowed up to {})",
            mib(near)
        ));
    }
    if with2 > with1 + (8 * MIB).max(grown / 10) {
        bad.push("the second wave does not reuse the first one's memory".into());
    }
    match bad.is_empty() {
        true => Ok(figures),
        false => Err(format!("{}: {figures}", bad.join("; "))),
    }
}

/// Mebibytes with one decimal, for check lines.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

//! `kill -9` of the client or of the server at random points of a put or
//! a get. After every trial the final name holds nothing or the whole,
//! verified file (by SHA-256, never torn), a rerun of the same command
//! succeeds, and where a partial was kept the rerun sends less than the
//! file (read from the client's summary line).

use std::time::Duration;

use super::{ok, s, Bg, Env, Target};
use crate::{number_after, number_before, random_file, sha256sum, wait_limit};

/// Which side dies, during what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    /// The client, during a put.
    ClientPut,
    /// The client, during a get.
    ClientGet,
    /// The server, during a put.
    ServerPut,
    /// The server, during a get.
    ServerGet,
}

/// How the trials went, for the check line.
#[derive(Debug, Default)]
struct Tally {
    resumed: usize,
    fresh: usize,
    done: usize,
    rerun_sent: u64,
    rerun_size: u64,
}

/// One trial's file: local copy, remote name, local download, digest.
#[derive(Debug)]
struct Files {
    local: std::path::PathBuf,
    remote: String,
    dest: std::path::PathBuf,
    size: u64,
    sha: String,
}

/// Sizes and rate of one target's trials: (smallest, largest, bytes/s).
/// Host files are well above the ~10 MiB that loopback socket buffers
/// hold, so that a killed server can interrupt a get.
fn shape<T: Target>(env: &Env<T>) -> (u64, u64, u64) {
    const MIB: u64 = 1 << 20;
    match (env.target.capacity().is_some(), env.form) {
        (true, _) => (64 << 10, 768 << 10, MIB),
        (false, super::Form::Short) => (8 * MIB, 24 * MIB, 24 * MIB),
        (false, super::Form::Long) => (8 * MIB, 64 * MIB, 24 * MIB),
    }
}

/// `trials` kill trials of `victim`; the detail sums them up, a failure
/// names the failed trials (all run, except after a hung client: each
/// would cost its full wait).
pub fn trials<T: Target>(env: &mut Env<T>, victim: Victim, trials: usize) -> super::Outcome {
    let mut tally = Tally::default();
    let mut failed: Vec<String> = Vec::new();
    let mut ran = 0;
    for i in 0..trials {
        ran += 1;
        let r = trial(env, victim, i, &mut tally);
        tidy(env, i);
        if let Err(e) = r {
            let hung = e.contains("still waiting");
            failed.push(format!("trial {i}: {e}"));
            if hung {
                break;
            }
        }
    }
    let pct = (tally.rerun_sent * 100)
        .checked_div(tally.rerun_size)
        .unwrap_or(0);
    let put = matches!(victim, Victim::ClientPut | Victim::ServerPut);
    let why = match put && !env.target.resumes_puts() {
        true => "uploads to it start over",
        false => "killed before any data was kept",
    };
    let counts = format!(
        "{} resumed from a partial (their reruns sent {pct}% of the bytes), {} started over ({why}), {} complete before the kill",
        tally.resumed, tally.fresh, tally.done
    );
    match failed.len() {
        0 => Ok(format!("{ran} trials: {counts}")),
        n => {
            let more = if n > 3 {
                format!(" | and {} more", n - 3)
            } else {
                String::new()
            };
            Err(format!(
                "{n} of {ran} trials failed ({counts}); {}{more}",
                failed[..n.min(3)].join(" | ")
            ))
        }
    }
}

/// Remove trial `i`'s files on both sides (a device's store is small).
fn tidy<T: Target>(env: &mut Env<T>, i: usize) {
    let _ = env
        .target
        .run(&["rm", &env.target.host(), &format!("k{i}.bin")]);
    for name in [
        format!("k{i}.bin"),
        format!("k{i}.got"),
        format!("k{i}.got.tether-part"),
    ] {
        let _ = std::fs::remove_file(env.dir.path().join(name));
    }
}

fn trial<T: Target>(
    env: &mut Env<T>,
    victim: Victim,
    i: usize,
    tally: &mut Tally,
) -> Result<(), String> {
    let put = matches!(victim, Victim::ClientPut | Victim::ServerPut);
    let f = files(env, i, put)?;
    let at = interrupt(env, victim, &f, put)?;
    let final_sha = match put {
        true => env.target.remote_sha(&f.remote),
        false => f.dest.exists().then(|| sha256sum(&f.dest)),
    };
    if final_sha.as_ref().is_some_and(|h| *h != f.sha) {
        return Err(format!(
            "after the kill at {at:.2?} the final name holds a wrong file"
        ));
    }
    let partial = match put {
        true => env.target.remote_partial(&f.remote),
        false => super::partial_len(&part_of(&f.dest), env.dir.path()),
    };
    if final_sha.is_some() && !put {
        tally.done += 1;
        return Ok(()); // a complete download: nothing to rerun
    }
    let e = rerun(env, &f, put).map_err(|e| {
        let state = if final_sha.is_some() {
            "already held the same bytes"
        } else {
            "was absent"
        };
        format!("{e} (killed at {at:.2?}; the destination {state}; partial of {partial} B)")
    })?;
    match (
        final_sha.is_some(),
        partial > 0 && (!put || env.target.resumes_puts()),
    ) {
        (true, _) => tally.done += 1,
        (false, false) => tally.fresh += 1,
        (false, true) => resumed(tally, partial, f.size, &e)?,
    }
    Ok(())
}

/// The trial's file, on the server already when it is to be fetched.
fn files<T: Target>(env: &mut Env<T>, i: usize, put: bool) -> Result<Files, String> {
    let (lo, hi, _) = shape(env);
    let size = env.rng.range(lo, hi);
    let local = env.dir.path().join(format!("k{i}.bin"));
    random_file(&local, size);
    let f = Files {
        sha: sha256sum(&local),
        remote: format!("k{i}.bin"),
        dest: env.dir.path().join(format!("k{i}.got")),
        local,
        size,
    };
    if !put {
        env.target.seed(&f.remote, &f.local)?;
    }
    Ok(f)
}

fn part_of(dest: &std::path::Path) -> std::path::PathBuf {
    let name = dest.file_name().expect("file name").to_string_lossy();
    dest.with_file_name(format!("{name}.tether-part"))
}

/// Start the rate-limited transfer and kill the victim at a random point
/// (up to a little past the expected end); returns when.
fn interrupt<T: Target>(
    env: &mut Env<T>,
    victim: Victim,
    f: &Files,
    put: bool,
) -> Result<Duration, String> {
    let (_, _, rate) = shape(env);
    let before = env.target.finished(&f.remote);
    let host = env.target.host();
    let mut c = env.target.client();
    match put {
        true => c.args(["put", &host, s(&f.local), &f.remote]),
        false => c.args(["get", &host, &f.remote, s(&f.dest)]),
    };
    c.args(["--limit-rate", &rate.to_string()]);
    let child = Bg::spawn(c);
    let at = env
        .rng
        .upto(Duration::from_secs_f64(1.2 * f.size as f64 / rate as f64));
    std::thread::sleep(at);
    kill(env, victim, child)?;
    if victim == Victim::ClientPut {
        // The server notices the dead client; a killed server was restarted.
        env.target.settle(&f.remote, before);
    }
    Ok(at)
}

/// SIGKILL the victim. A killed server is restarted at once (as a device
/// reboots; a dead host's sockets are reset by its kernel anyway), and the
/// client must then stop.
fn kill<T: Target>(env: &mut Env<T>, victim: Victim, mut child: Bg) -> Result<(), String> {
    if matches!(victim, Victim::ServerPut | Victim::ServerGet) {
        env.target.kill_server();
        env.target.restart()?;
        if wait_limit(child.child(), Duration::from_secs(30)).is_none() {
            return Err(format!(
                "the client was still waiting 30 s after the {} was killed and restarted (a client waiting for data is never told that its connection is gone)",
                env.target.label()
            ));
        }
    }
    drop(child); // SIGKILL, if it still runs
    Ok(())
}

/// Run the same command again (re-seeding a device that lost its files);
/// it must succeed and leave the file; returns its summary.
fn rerun<T: Target>(env: &mut Env<T>, f: &Files, put: bool) -> Result<String, String> {
    let host = env.target.host();
    if !put && env.target.remote_sha(&f.remote).as_deref() != Some(f.sha.as_str()) {
        env.target.seed(&f.remote, &f.local)?;
    }
    // Retries: a server may still be winding down the killed transfer.
    let retry = ["--retries", "4", "--retry-delay", "250ms"];
    let o = match put {
        true => env
            .target
            .run(&[&["put", &host, s(&f.local), &f.remote], &retry[..]].concat()),
        false => env
            .target
            .run(&[&["get", &host, &f.remote, s(&f.dest)], &retry[..]].concat()),
    };
    let e = ok("the rerun failed", &o)?;
    let now = match put {
        true => env.target.remote_sha(&f.remote),
        false => Some(sha256sum(&f.dest)),
    };
    if now.as_deref() != Some(f.sha.as_str()) {
        return Err("after the rerun the final name does not hold the file".into());
    }
    Ok(e)
}

/// A kept partial must be resumed: the rerun sends only the rest.
fn resumed(tally: &mut Tally, partial: u64, size: u64, e: &str) -> Result<(), String> {
    let sent = number_before(e, " transferred").ok_or_else(|| format!("no summary line: {e}"))?;
    let at = number_after(e, "resumed at ").unwrap_or(0);
    if sent >= size || at + sent != size {
        return Err(format!(
            "a partial of {partial} of {size} B was kept, but the rerun sent {sent} B (resumed at {at})"
        ));
    }
    tally.resumed += 1;
    tally.rerun_sent += sent;
    tally.rerun_size += size;
    Ok(())
}

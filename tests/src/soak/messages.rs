//! Error messages and summaries (D5): no message states its cause twice,
//! a missing local directory is named as such, and rates are shown in a
//! unit that fits (`64.0 KiB/s`, not `0.0 MiB/s`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Output;
use std::time::Duration;

use super::{repeated_clause, run_cmd, s, Bg, Env, HostTarget, Outcome, Target};
use crate::{number_before, random_file, text, wait_until};

/// Each failing command: its message must not repeat its cause.
pub fn causes_once(env: &mut Env<HostTarget>) -> Outcome {
    let cases = failing_commands(env)?;
    let mut bad = Vec::new();
    for (what, o) in &cases {
        let e = text(&o.stderr);
        if o.status.success() {
            bad.push(format!("{what}: succeeded"));
        } else if let Some(c) = repeated_clause(&e) {
            bad.push(match bad.is_empty() {
                true => format!("{what}: {c:?} twice in {:?}", e.trim()),
                false => format!("{what}: {c:?} twice"),
            });
        }
    }
    match bad.is_empty() {
        true => Ok(format!(
            "{} failing commands, each cause stated once",
            cases.len()
        )),
        false => Err(format!(
            "{} of {} messages repeat their cause: {}",
            bad.len(),
            cases.len(),
            bad.join(" | ")
        )),
    }
}

/// Commands that fail for a reason of each kind, and their outputs.
fn failing_commands(env: &mut Env<HostTarget>) -> Result<Vec<(&'static str, Output)>, String> {
    let d = env.dir.path().to_path_buf();
    let host = env.target.host();
    std::fs::write(d.join("plain"), b"x").expect("write");
    std::fs::write(env.target.root().join("f"), b"x").expect("write");
    let t = &env.target;
    Ok(vec![
        (
            "a missing local file",
            t.run(&["put", &host, s(&d.join("nope"))]),
        ),
        (
            "an unknown host",
            t.run(&["ls", "no-such-host.invalid", "--connect-timeout", "5s"]),
        ),
        (
            "a missing key file",
            t.run(&["ls", &host, "--key-file", s(&d.join("none.key"))]),
        ),
        ("an unreadable local file", unreadable(env)),
        (
            "a local path through a file",
            t.run(&["get", &host, "f", s(&d.join("plain/x"))]),
        ),
        ("a remote path through a file", t.run(&["ls", &host, "f/x"])),
        ("a directory to upload", t.run(&["put", &host, s(&d)])),
        ("a busy server", busy(env)?),
    ])
}

/// `put` of a file this user cannot read (as `nobody` when root).
fn unreadable(env: &Env<HostTarget>) -> Output {
    let d = env.dir.path().join("perm");
    std::fs::create_dir_all(&d).expect("mkdir");
    let f = d.join("secret");
    std::fs::write(&f, b"secret").expect("write");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    for p in [env.dir.path(), &d] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut c = env.target.client();
    c.args(["put", &env.target.host(), s(&f), "secret"]);
    if crate::tap::is_root() {
        c.uid(65534).gid(65534);
    }
    run_cmd(c, Duration::from_secs(60))
}

/// A get refused because the only transfer slot is taken.
fn busy(env: &Env<HostTarget>) -> Result<Output, String> {
    let big = env.dir.path().join("hold.bin");
    random_file(&big, 8 << 20);
    let host = env.target.host();
    let mut c = env.target.client();
    c.args(["put", &host, s(&big), "hold.bin", "--limit-rate", "4M"]);
    let holder = Bg::spawn(c);
    if !wait_until(Duration::from_secs(30), || {
        env.target.remote_partial("hold.bin") > 0
    }) {
        return Err("the slow upload did not start".into());
    }
    let o = env
        .target
        .run(&["get", &host, "f", s(&env.dir.path().join("f.got"))]);
    holder.finish(Duration::from_secs(60));
    Ok(o)
}

/// `get` into a directory that does not exist says so (and does not talk
/// about the partial file it would have written there).
pub fn missing_dir(env: &mut Env<HostTarget>) -> Outcome {
    std::fs::write(env.target.root().join("f"), b"x").expect("write");
    let local = env.dir.path().join("no/such/dir/f");
    let o = env.target.run(&["get", &env.target.host(), "f", s(&local)]);
    let e = text(&o.stderr);
    let doubled = repeated_clause(&e).is_some();
    if o.status.success() || e.contains(".tether-part") || !e.contains("no/such/dir") || doubled {
        return Err(format!(
            "expected a message about the missing directory: {}",
            e.trim()
        ));
    }
    Ok(e.trim().chars().take(120).collect())
}

/// The rate at the end of a summary: (value, unit).
fn rate(summary: &str) -> Option<(f64, String)> {
    let line = summary.lines().rev().find(|l| l.contains(" transferred"))?;
    let tail = line.rsplit(", ").next()?;
    let (v, unit) = tail.trim().split_once(' ')?;
    Some((v.parse().ok()?, unit.to_string()))
}

/// Bytes per second of a unit, if it is one.
fn unit_bytes(unit: &str) -> Option<f64> {
    Some(match unit {
        "B/s" => 1.0,
        "KiB/s" | "kB/s" | "KB/s" => 1024.0,
        "MiB/s" | "MB/s" => 1048576.0,
        "GiB/s" | "GB/s" => 1073741824.0,
        _ => return None,
    })
}

/// Whether the summary's rate has a fitting unit and matches bytes/time.
fn fitting(summary: &str) -> Result<String, String> {
    let (v, unit) = rate(summary).ok_or_else(|| format!("no rate in {summary:?}"))?;
    let per = unit_bytes(&unit).ok_or_else(|| format!("unknown unit {unit:?}"))?;
    let shown = format!("{v} {unit}");
    if (v < 1.0 && per > 1.0) || v >= 1024.0 {
        return Err(format!("{shown} is not in a fitting unit"));
    }
    let sent = number_before(summary, " transferred").unwrap_or(0) as f64;
    let secs: f64 = summary
        .split(" transferred in ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0);
    if secs >= 0.5 && !(0.5..=2.0).contains(&(v * per / (sent / secs))) {
        return Err(format!("{shown} for {sent} B in {secs} s"));
    }
    Ok(shown)
}

/// Summaries of a slow, a tiny and a fast transfer show fitting rates.
pub fn rates(env: &mut Env<HostTarget>) -> Outcome {
    let d = env.dir.path().to_path_buf();
    let host = env.target.host();
    let mut shown = Vec::new();
    for (name, size, limit) in [
        ("slow", 128u64 << 10, Some("64K")),
        ("tiny", 3, None),
        ("fast", 16 << 20, None),
    ] {
        let local = d.join(name);
        random_file(&local, size);
        let mut args = vec!["put", &host, s(&local), name];
        if let Some(l) = limit {
            args.extend(["--limit-rate", l]);
        }
        let o = env.target.run(&args);
        let e = text(&o.stderr);
        super::ok(name, &o)?;
        shown.push(
            fitting(&e).map_err(|why| format!("{name} put of {size} B: {why}: {}", e.trim()))?,
        );
    }
    Ok(format!("rates {}", shown.join(", ")))
}

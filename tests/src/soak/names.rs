//! Every name the server accepts round-trips (D1): each length from 1 to
//! the limit (255 bytes on a host, the store's limit on the device), in
//! ASCII and in multi-byte UTF-8, and paths from shallow to the longest
//! accepted (4095 bytes), through put, ls, stat, get and rm; the client
//! keeps its own partial beside the local name, so local names of every
//! length are covered too.

use std::collections::BTreeMap;
use std::path::Path;

use super::{s, Env, Outcome, Target};
use crate::{random_file, sha256sum, text};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";

/// An ASCII name of `len` bytes (varied, so names differ by more than
/// length), starting with a letter so that it is never taken for an option.
pub fn ascii(len: usize) -> String {
    (0..len)
        .map(|i| ALPHABET[(i * 7 + len) % if i == 0 { 26 } else { ALPHABET.len() }] as char)
        .collect()
}

/// A name of `len` bytes in two-byte UTF-8 (`é`), padded with `x`.
pub fn utf8(len: usize) -> String {
    let mut n = "é".repeat(len / 2);
    if len % 2 == 1 {
        n.push('x');
    }
    n
}

/// The lengths to try up to `max`: all in the long form, the edges in the short.
pub fn lengths(form: super::Form, max: usize) -> Vec<usize> {
    match form {
        super::Form::Long => (1..=max).collect(),
        super::Form::Short => {
            let mut v: Vec<usize> = (1..=3)
                .chain([max / 4, max / 2])
                .chain(max - 15..=max)
                .collect();
            v.dedup();
            v
        }
    }
}

/// Failures of one step: message (names replaced by NAME) → which cases.
type Failures = BTreeMap<(String, String), Vec<String>>;

/// Round-trip `cases` (label, remote path); the detail names each failing
/// step with the cases it failed for.
pub fn round_trips<T: Target>(env: &mut Env<T>, cases: &[(String, String)]) -> Outcome {
    let mut fails = Failures::new();
    for (label, remote) in cases {
        for (step, msg) in round_trip(env, remote) {
            fails
                .entry((step.into(), msg))
                .or_default()
                .push(label.clone());
        }
    }
    if fails.is_empty() {
        return Ok(format!(
            "{} names and paths: put, ls, stat, get, rm all work",
            cases.len()
        ));
    }
    let why: Vec<String> = fails
        .iter()
        .map(|((step, msg), who)| format!("{step} fails for {}: {msg}", ranges(who)))
        .collect();
    Err(format!(
        "{} of {} cases fail; {}",
        count(&fails),
        cases.len(),
        why.join(" | ")
    ))
}

fn count(f: &Failures) -> usize {
    let mut all: Vec<&String> = f.values().flatten().collect();
    all.sort();
    all.dedup();
    all.len()
}

/// `length 1, 243..=255` for the labels that are numbers, then the others.
fn ranges(labels: &[String]) -> String {
    let nums: Vec<usize> = labels.iter().filter_map(|l| l.parse().ok()).collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < nums.len() {
        let mut j = i;
        while j + 1 < nums.len() && nums[j + 1] == nums[j] + 1 {
            j += 1;
        }
        out.push(match j - i {
            0 => format!("{}", nums[i]),
            _ => format!("{}..={}", nums[i], nums[j]),
        });
        i = j + 1;
    }
    let mut text = match out.is_empty() {
        true => String::new(),
        false => format!("length {}", out.join(", ")),
    };
    for l in labels.iter().filter(|l| l.parse::<usize>().is_err()) {
        text += &format!("{}{l}", if text.is_empty() { "" } else { ", " });
    }
    text
}

/// Put, ls, stat, get and rm of one remote path; the failing steps.
fn round_trip<T: Target>(env: &mut Env<T>, remote: &str) -> Vec<(&'static str, String)> {
    let (parent, file) = remote.rsplit_once('/').unwrap_or(("", remote));
    let up = env.dir.path().join("up");
    let down = env.dir.path().join("down");
    let _ = (std::fs::remove_dir_all(&up), std::fs::remove_dir_all(&down));
    let _ = (std::fs::create_dir_all(&up), std::fs::create_dir_all(&down));
    let (local, back) = (up.join(file), down.join(file));
    random_file(&local, 1000 + remote.len() as u64);
    let want = sha256sum(&local);
    let host = env.target.host();
    let clean = |o: &std::process::Output| redact(&text(&o.stderr), remote, file, env.dir.path());
    let mut fails = Vec::new();
    let o = env.target.run(&["put", &host, s(&local), remote]);
    if !o.status.success() {
        fails.push(("put", clean(&o)));
        if env.target.seed(remote, &local).is_err() {
            return fails;
        }
    }
    if !listed(env, &host, parent, file) {
        fails.push(("ls", "the name is not listed".into()));
    }
    let o = env.target.run(&["stat", &host, remote]);
    if !o.status.success() {
        fails.push(("stat", clean(&o)));
    }
    let o = env.target.run(&["get", &host, remote, s(&back)]);
    if !o.status.success() {
        fails.push(("get", clean(&o)));
    } else if sha256sum(&back) != want {
        fails.push(("get", "the file came back different".into()));
    }
    let o = env.target.run(&["rm", &host, remote]);
    if !o.status.success() {
        fails.push(("rm", clean(&o)));
    } else if listed(env, &host, parent, file) {
        fails.push(("rm", "still listed after rm".into()));
    }
    fails
}

fn listed<T: Target>(env: &Env<T>, host: &str, parent: &str, file: &str) -> bool {
    let mut args = vec!["ls", host];
    if !parent.is_empty() {
        args.push(parent);
    }
    let o = env.target.run(&args);
    text(&o.stdout)
        .lines()
        .any(|l| l.ends_with(&format!(" {file}")))
}

/// The message's last line with the scratch directory and the name
/// replaced, and long runs of name characters cut, so that failures of
/// many lengths group.
fn redact(stderr: &str, remote: &str, file: &str, dir: &Path) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)");
    let line = line
        .replace(&dir.display().to_string(), "DIR")
        .replace(remote, "NAME")
        .replace(file, "NAME");
    let mut out = String::new();
    let mut run = 0;
    for c in line.chars() {
        run = if c.is_ascii_alphanumeric() || "/_-".contains(c) {
            run + 1
        } else {
            0
        };
        match run {
            0..=16 => out.push(c),
            17 => out.push('…'),
            _ => {}
        }
    }
    out.chars().take(240).collect()
}

/// Paths of many depths, and the longest accepted (4095 bytes: fifteen
/// 255-byte directories and a 255-byte file; and 2047 one-letter levels).
pub fn depth_cases(form: super::Form) -> Vec<(String, String)> {
    let mut depths = vec![2, 8, 64];
    if form == super::Form::Long {
        depths.extend([256, 1024]);
    }
    let mut cases: Vec<(String, String)> = depths
        .into_iter()
        .map(|d| (format!("depth {d}"), format!("{}f.bin", "d/".repeat(d - 1))))
        .collect();
    let p = vec![ascii(255); 16].join("/");
    cases.push((format!("{} B path of 255 B names", p.len()), p));
    let deep = format!("{}f", "d/".repeat(2047));
    cases.push((format!("{} B path at depth 2048", deep.len()), deep));
    cases
}

/// The length cases up to `max`, ASCII, and the longest in UTF-8.
pub fn length_cases(form: super::Form, max: usize) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = lengths(form, max)
        .into_iter()
        .map(|n| (n.to_string(), ascii(n)))
        .collect();
    v.push((format!("{max} B UTF-8"), utf8(max)));
    v
}

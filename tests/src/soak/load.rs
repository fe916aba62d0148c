//! Many clients at once: each runs exec, put and get of its own file in a
//! loop until the time is up, checking every result. The only errors
//! allowed are BUSY replies announced to clients that did not ask for
//! retries; with `--retries` a BUSY must be retried, not reported.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{s, Env, Outcome, Target};
use crate::{random_file, sha256sum, text};

/// The shape of a load run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Concurrent clients.
    pub clients: usize,
    /// How long they run.
    pub secs: u64,
    /// Bytes each puts and gets per round.
    pub size: u64,
    /// Whether every client passes `--retries` (else every other one).
    pub all_retry: bool,
}

#[derive(Debug, Default)]
struct Tally {
    ops: u64,
    busy: u64,
    /// Error kinds (the last line, digits as N) → count.
    errors: BTreeMap<String, u64>,
}

/// The kind of an error: its last line with numbers (ports, ids) as N.
fn kind(what: &str, retry: bool, e: &str) -> String {
    let line = e
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    let mut k: String = line
        .chars()
        .map(|c| if c.is_ascii_digit() { 'N' } else { c })
        .collect();
    while k.contains("NN") {
        k = k.replace("NN", "N");
    }
    format!("{what}{}: {k}", if retry { " --retries" } else { "" })
}

/// Run the load; the detail gives ops, ops/s and BUSY counts.
pub fn run<T: Target + Sync>(env: &mut Env<T>, load: Load) -> Outcome {
    let tally = Mutex::new(Tally::default());
    let end = Instant::now() + Duration::from_secs(load.secs);
    let t0 = Instant::now();
    let (target, dir) = (&env.target, env.dir.path());
    std::thread::scope(|sc| {
        for i in 0..load.clients {
            let tally = &tally;
            let retry = load.all_retry || i % 2 == 0;
            sc.spawn(move || client(target, dir, i, retry, load.size, end, tally));
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let t = tally.into_inner().unwrap_or_else(|e| e.into_inner());
    let figures = format!(
        "{} clients for {secs:.0} s: {} ops, {:.0} ops/s, {} BUSY announced to clients without --retries",
        load.clients,
        t.ops,
        t.ops as f64 / secs,
        t.busy
    );
    let total: u64 = t.errors.values().sum();
    if total == 0 {
        return Ok(figures);
    }
    let mut kinds: Vec<(&String, &u64)> = t.errors.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = kinds
        .iter()
        .take(4)
        .map(|(k, n)| format!("{n}× {k}"))
        .collect();
    Err(format!("{total} errors ({figures}): {}", top.join(" | ")))
}

/// One client's loop: exec, put, get, compare.
fn client<T: Target>(
    t: &T,
    dir: &Path,
    i: usize,
    retry: bool,
    size: u64,
    end: Instant,
    tally: &Mutex<Tally>,
) {
    let host = t.host();
    let (up, down) = (dir.join(format!("c{i}.bin")), dir.join(format!("c{i}.got")));
    let remote = format!("c{i}.bin");
    let mut round = 0;
    while Instant::now() < end {
        round += 1;
        random_file(&up, size);
        let word = format!("c{i}-{round}");
        let mut steps: Vec<(&str, Vec<&str>)> = vec![
            ("exec", vec!["exec", &host, "--", "echo", &word]),
            ("put", vec!["put", &host, s(&up), &remote, "--force"]),
            ("get", vec!["get", &host, &remote, s(&down), "--force"]),
        ];
        for (_, args) in steps.iter_mut().filter(|_| retry) {
            args.splice(1..1, ["--retries", "8", "--retry-delay", "100ms"]);
        }
        for (what, args) in &steps {
            let verdict = step(t, what, args, &word, (&up, &down));
            let mut g = tally.lock().unwrap_or_else(|e| e.into_inner());
            g.ops += 1;
            match verdict {
                Ok(()) => continue,
                Err(e) if !retry && e.contains("BUSY") => g.busy += 1,
                Err(e) => *g.errors.entry(kind(what, retry, &e)).or_default() += 1,
            }
            break;
        }
    }
}

/// Run one step and check its result; `Err` carries the message.
fn step<T: Target>(
    t: &T,
    what: &str,
    args: &[&str],
    word: &str,
    (up, down): (&Path, &Path),
) -> Result<(), String> {
    let o = t.run(args);
    if !o.status.success() {
        return Err(text(&o.stderr).trim().to_string());
    }
    let right = match what {
        "exec" => text(&o.stdout) == format!("{word}\n"),
        "get" => sha256sum(down) == sha256sum(up),
        _ => true,
    };
    match right {
        true => Ok(()),
        false => Err("wrong result".into()),
    }
}

//! The soak suite (`tests/tests/soak.rs`, `make soak`): long-running and
//! adversarial checks that drive only the real binaries, `tether` and
//! `tether-sim`, as a user would, so they hold across rewrites of the
//! server and client internals.
//!
//! Each check prints one line, `PASS name (detail; secs)` or `FAIL name:
//! why (secs)`, and the run ends with `N passed, M failed`. `SOAK=long` selects the
//! long form (more trials, longer runs, bigger waves); `SOAK_SEED=N`
//! repeats a run's random choices; `SOAK_ONLY=a,b` runs only the checks
//! whose names start with one of the prefixes. `TETHER_BIN` and
//! `TETHER_SIM_BIN` run the suite against other builds.
//!
//! Families: [`kill`] (kill -9 of server and client, then resume),
//! [`change`] (files that change while sent), [`names`] (every name
//! length and depth), [`retry`] (BUSY and reruns), [`messages`] (error
//! texts and rates), [`load`] (many clients), [`waves`] (idle connections
//! and server memory, with the [`idle`] client), and [`device`] (the same
//! checks against `tether-sim` on a TAP).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{text, wait_output_or_kill};

pub mod change;
pub mod device;
pub mod idle;
pub mod kill;
pub mod load;
pub mod messages;
pub mod names;
pub mod retry;
mod suite;
pub mod target;
pub mod waves;

pub use suite::{Env, Suite};
pub use target::{HostTarget, Target};

/// Short (the default, sized for `make test`) or long (`SOAK=long`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A few trials, seconds per check.
    Short,
    /// `make soak`: many trials, minutes.
    Long,
}

impl Form {
    /// From `SOAK` (`long` or anything else).
    pub fn from_env() -> Form {
        match std::env::var("SOAK").as_deref() {
            Ok("long") => Form::Long,
            _ => Form::Short,
        }
    }

    /// `short` in the short form, `long` in the long one.
    pub fn pick<T>(self, short: T, long: T) -> T {
        match self {
            Form::Short => short,
            Form::Long => long,
        }
    }
}

/// What a check returns: `Ok(detail)` or `Err(why it failed)`.
pub type Outcome = Result<String, String>;

/// A small seeded generator (splitmix64): runs repeat from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// A duration uniform in `0..max`.
    pub fn upto(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.range(0, max.as_micros() as u64))
    }
}

/// A client command running in the background, its output captured;
/// killed and reaped if dropped before [`Bg::finish`].
#[derive(Debug)]
pub struct Bg(Option<Child>);

impl Bg {
    /// Start `c` with stdout and stderr captured.
    pub fn spawn(mut c: Command) -> Bg {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        Bg(Some(c.spawn().expect("spawn tether")))
    }

    /// Whether the process has `path` open now (Linux: its `/proc` fds).
    pub fn has_open(&self, path: &std::path::Path) -> bool {
        let Some(c) = &self.0 else { return false };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", c.id())) else {
            return false;
        };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
    }

    /// Wait for it (at most `limit`) and collect its output; one still
    /// running then is killed, and its stderr says so (a hang is a failure
    /// of the check, not of the suite).
    pub fn finish(mut self, limit: Duration) -> Output {
        let (mut o, killed) = wait_output_or_kill(self.0.take().expect("running"), limit);
        if killed {
            let note = format!("\n(soak: still running after {limit:?}, killed)\n");
            o.stderr.extend_from_slice(note.as_bytes());
        }
        o
    }

    /// The process.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run a prepared client command to completion (at most `limit`).
pub fn run_cmd(c: Command, limit: Duration) -> Output {
    Bg::spawn(c).finish(limit)
}

/// `Err` with the command's stderr unless it exited 0.
pub fn ok(what: &str, o: &Output) -> Result<String, String> {
    if o.status.success() {
        Ok(text(&o.stderr))
    } else {
        Err(format!("{what}: {} ({})", last_line(&o.stderr), o.status))
    }
}

/// The last non-empty line of an output stream.
pub fn last_line(b: &[u8]) -> String {
    text(b)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The path as a `&str` (test paths are always UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

/// Whether a message states its cause twice: some clause (text between
/// `: ` and `; ` separators, without a trailing `[CODE]`) of at least six
/// characters appears twice in one line. Returns the repeated clause.
pub fn repeated_clause(stderr: &str) -> Option<String> {
    for line in stderr.lines() {
        let mut seen: Vec<String> = Vec::new();
        for part in line.split("; ").flat_map(|p| p.split(": ")) {
            let mut c = part.trim().trim_end_matches('.').trim();
            if c.ends_with(']') {
                if let Some(at) = c.rfind(" [") {
                    c = c[..at].trim();
                }
            }
            if c.len() < 6 {
                continue;
            }
            if seen.iter().any(|s| s == c) {
                return Some(c.to_string());
            }
            seen.push(c.to_string());
        }
    }
    None
}

/// Bytes in a partial file: at `documented` (where the README says it
/// is), else the largest `*tether-part*` file under `dir`, so that checks
/// keep working if a rewrite names or places partials differently (checks
/// run one transfer at a time, so any partial is the one meant).
pub fn partial_len(documented: &Path, dir: &Path) -> u64 {
    if documented.exists() {
        return crate::file_len(documented);
    }
    fn walk(d: &Path, depth: u32, best: &mut u64) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let (p, Ok(t)) = (e.path(), e.file_type()) else {
                continue;
            };
            if t.is_dir() && depth > 0 {
                walk(&p, depth - 1, best);
            } else if t.is_file() && e.file_name().to_string_lossy().contains("tether-part") {
                *best = (*best).max(crate::file_len(&p));
            }
        }
    }
    let mut best = 0;
    walk(dir, 3, &mut best);
    best
}

//! Running checks: one line each, a panic is a failure, and after every
//! check the server must still serve a well-behaved client.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Instant;

use super::device::DeviceTarget;
use super::target::{HostTarget, Target};
use super::{Form, Outcome, Rng};
use crate::TempDir;

/// What a check works with: the form, its own seeded generator, a scratch
/// directory and the target.
#[derive(Debug)]
pub struct Env<T> {
    /// Short or long.
    pub form: Form,
    /// Seeded from the run's seed and the check's name.
    pub rng: Rng,
    /// The server under test (dropped before its directory).
    pub target: T,
    /// Scratch space, removed afterwards.
    pub dir: TempDir,
}

/// The run: its settings and the tally.
#[derive(Debug)]
pub struct Suite {
    /// Short or long.
    pub form: Form,
    /// The seed every check's generator derives from.
    pub seed: u64,
    only: Vec<String>,
    passed: usize,
    failed: usize,
    skipped: usize,
    started: Instant,
}

/// The messages of the panics during the current check.
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

impl Suite {
    /// Settings from `SOAK`, `SOAK_SEED` and `SOAK_ONLY` (check-name
    /// prefixes, comma-separated); prints the header.
    pub fn from_env() -> Suite {
        let form = Form::from_env();
        let seed = std::env::var("SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                t.map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
            });
        let only = std::env::var("SOAK_ONLY")
            .map(|v| v.split(',').map(|w| w.trim().to_string()).collect())
            .unwrap_or_default();
        std::panic::set_hook(Box::new(|info| {
            // Every panic of the check (a worker thread's comes before the
            // one of the scope that joins it).
            let mut g = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner());
            if g.len() < 2000 {
                let sep = if g.is_empty() { "" } else { " | " };
                *g += &format!("{sep}{}", info.to_string().replace('\n', " / "));
            }
        }));
        crate::soak::waves::raise_fd_limit();
        if crate::tap::missing_prerequisite().is_none() {
            super::device::sweep_stale();
        }
        say(&format!(
            "soak: {} form, seed {seed} (SOAK_SEED={seed} repeats it), tether {}",
            form.pick("short", "long"),
            crate::tether_bin().display()
        ));
        Suite {
            form,
            seed,
            only,
            passed: 0,
            failed: 0,
            skipped: 0,
            started: Instant::now(),
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| name.starts_with(w.as_str()))
    }

    fn env<T>(&self, name: &str, target: T, dir: TempDir) -> Env<T> {
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Env {
            form: self.form,
            rng: Rng::new(self.seed ^ h),
            target,
            dir,
        }
    }

    /// Run check `name` against a fresh `tether serve` started with `args`.
    pub fn host(
        &mut self,
        name: &str,
        args: &[&str],
        f: impl FnOnce(&mut Env<HostTarget>) -> Outcome,
    ) {
        if !self.wants(name) {
            return;
        }
        let t = Instant::now();
        let out = guarded(|| {
            let dir = TempDir::new().expect("temporary directory");
            let target = HostTarget::start(dir.path(), args);
            let mut env = self.env(name, target, dir);
            finish(f(&mut env), &mut env)
        });
        self.record(name, out, t.elapsed().as_secs_f64());
    }

    /// Run check `name` against a fresh simulated device (on a TAP in its
    /// own namespace) started with `args`; SKIP where that cannot run.
    pub fn device(
        &mut self,
        name: &str,
        args: &[&str],
        f: impl FnOnce(&mut Env<DeviceTarget>) -> Outcome,
    ) {
        if !self.wants(name) {
            return;
        }
        if let Some(why) = crate::tap::missing_prerequisite() {
            self.skipped += 1;
            say(&format!(
                "SKIP {name}: {why} (needs root, /dev/net/tun and iproute2)"
            ));
            return;
        }
        let t = Instant::now();
        let out = guarded(|| {
            let dir = TempDir::new().expect("temporary directory");
            let target = DeviceTarget::start(dir.path(), args)?;
            let mut env = self.env(name, target, dir);
            finish(f(&mut env), &mut env)
        });
        self.record(name, out, t.elapsed().as_secs_f64());
    }

    fn record(&mut self, name: &str, out: Outcome, secs: f64) {
        match out {
            Ok(detail) => {
                self.passed += 1;
                say(&format!("PASS {name} ({detail}; {secs:.1} s)"));
            }
            Err(why) => {
                self.failed += 1;
                say(&format!("FAIL {name}: {why} ({secs:.1} s)"));
            }
        }
    }

    /// Print the tally; the process exit status (1 on any failure).
    pub fn finish(self) -> i32 {
        let skipped = match self.skipped {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        say(&format!(
            "{} passed, {} failed{skipped} ({} form, seed {}, {:.0} s)",
            self.passed,
            self.failed,
            self.form.pick("short", "long"),
            self.seed,
            self.started.elapsed().as_secs_f64()
        ));
        i32::from(self.failed > 0)
    }
}

/// The check's outcome, failed if the server no longer serves afterwards.
fn finish<T: Target>(out: Outcome, env: &mut Env<T>) -> Outcome {
    let health = env.target.health(env.dir.path());
    match (out, health) {
        (out, Ok(())) => out,
        (Ok(_), Err(e)) => Err(format!(
            "afterwards the {} no longer serves: {e}",
            env.target.label()
        )),
        (Err(why), Err(e)) => Err(format!(
            "{why}; afterwards the {} no longer serves: {e}",
            env.target.label()
        )),
    }
}

/// Run `f`, turning a panic into a failure with the panic's message.
fn guarded(f: impl FnOnce() -> Outcome) -> Outcome {
    LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clear();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(out) => out,
        Err(_) => {
            let msg = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Err(format!("panicked: {msg}"))
        }
    }
}

/// One line to stdout, at once.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

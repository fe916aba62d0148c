//! A network namespace with a TAP interface and the simulated device in it,
//! for the tests that drive `tether-sim` over a real TAP with the real
//! `tether` client (they are skipped, visibly, without root).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{tether_bin, wait_limit, wait_output};

/// The device's address inside the namespace (the host side is .100).
pub const DEV_IP: &str = "192.168.69.1";

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Why a TAP test cannot run here, if it cannot.
pub fn missing_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (`ip`) is not installed".into());
    }
    None
}

/// Report a skipped TAP test straight to the terminal (the harness captures print!/eprint!).
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n{test}: SKIPPED: {why}; it needs root, /dev/net/tun and iproute2\n"
    );
}

/// `tether-sim`, built beside the `tether` binary (same profile and target
/// dir). `TETHER_SIM_BIN` overrides it.
pub fn sim_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("TETHER_SIM_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_sim(),
    })
    .clone()
}

fn build_sim() -> PathBuf {
    let client = tether_bin();
    let profile_dir = client.parent().expect("profile dir").to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "tether-sim",
        "--bin",
        "tether-sim",
    ])
    .arg("--target-dir")
    .arg(&target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("run cargo build").success());
    profile_dir.join("tether-sim")
}

/// Run `ip` with `args`.
pub fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// A network namespace with a TAP; everything in it is removed on drop.
#[derive(Debug)]
pub struct Netns(String);

impl Netns {
    /// Create namespace `name` with lo up and tap0 at 192.168.69.100/24.
    pub fn create(name: &str) -> Result<Netns, String> {
        let out = ip(&["netns", "add", name]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let ns = Netns(name.into());
        for args in [
            &["link", "set", "lo", "up"][..],
            &["tuntap", "add", "dev", "tap0", "mode", "tap"],
            &["addr", "add", "192.168.69.100/24", "dev", "tap0"],
            &["link", "set", "tap0", "up"],
        ] {
            let mut full = vec!["-n", name];
            full.extend_from_slice(args);
            let out = ip(&full);
            assert!(out.status.success(), "ip {full:?}: {out:?}");
        }
        Ok(ns)
    }

    /// Its name (`ip netns` lists it; `/run/netns/NAME` is its handle).
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Take charge of an existing namespace `name` (removed on drop).
    pub fn adopt(name: &str) -> Netns {
        Netns(name.into())
    }

    /// `program` inside the namespace, with no tether key or encryption settings inherited.
    pub fn exec(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c.stdin(Stdio::null())
            .env_remove("TETHER_KEY_FILE")
            .env_remove("TETHER_KEY")
            .env_remove("TETHER_ENCRYPT")
            .env_remove("TETHER_RETRIES");
        c
    }

    /// Run the tether client inside the namespace and collect its output.
    pub fn tether(&self, args: &[&str]) -> Output {
        let mut c = self.exec(&tether_bin());
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        wait_output(c.spawn().expect("spawn tether"), Duration::from_secs(60))
    }
}

/// The TAP's host side, inside the namespace (where `tether serve` listens
/// for a device acting as a client).
pub const HOST_IP: &str = "192.168.69.100";

/// A `tether serve` running inside a [`Netns`]; killed on drop.
#[derive(Debug)]
pub struct NsServer {
    child: std::process::Child,
    /// What it printed on stderr (its log), read as it goes.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl NsServer {
    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Netns {
    /// Start `tether serve` on `HOST_IP:port` in the namespace over
    /// `root`, with `key_file` if given (with a key it may listen on a
    /// non-loopback address); returns once it listens.
    pub fn serve(&self, root: &Path, port: u16, key_file: Option<&Path>) -> NsServer {
        use std::io::BufRead as _;
        let mut c = self.exec(&tether_bin());
        c.arg("serve")
            .arg("--listen")
            .arg(format!("{HOST_IP}:{port}"))
            .arg("--root")
            .arg(root);
        if let Some(k) = key_file {
            c.arg("--key-file").arg(k);
        } else {
            c.arg("--insecure");
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn tether serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut l) = l2.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(out);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let server = NsServer { child, log };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.starts_with("listening on") => server,
            other => panic!(
                "tether serve did not start ({other:?}); log:\n{}",
                server.log()
            ),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = ip(&["netns", "pids", &self.0]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = Command::new("kill").arg(pid).status();
        }
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end && !ip(&["netns", "pids", &self.0]).stdout.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = ip(&["-n", &self.0, "link", "del", "tap0"]);
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// The usual start of a TAP test: a fresh namespace named after `prefix` and
/// this process, or `None` after reporting why `test` is skipped.
pub fn enter(test: &str, prefix: &str) -> Option<Netns> {
    if let Some(why) = missing_prerequisite() {
        skip(test, &why);
        return None;
    }
    match Netns::create(&format!("{prefix}-{}", std::process::id())) {
        Ok(ns) => Some(ns),
        Err(e) => {
            skip(test, &format!("cannot create a network namespace: {e}"));
            None
        }
    }
}

/// `tether-sim` on tap0 inside a [`Netns`], started with extra options and
/// considered up once it answers a UDP ping. Killed on drop.
#[derive(Debug)]
pub struct Sim {
    child: Child,
    log: PathBuf,
}

impl Sim {
    /// Start the device with `args` (after `--tap tap0`), its stderr appended
    /// to `log`; waits (at most 20 s) until it answers a ping.
    pub fn start(ns: &Netns, args: &[&str], log: &Path) -> Result<Sim, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut c = ns.exec(&sim_bin());
        c.args(["--tap", "tap0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(file);
        let child = c.spawn().map_err(|e| format!("spawn tether-sim: {e}"))?;
        let mut sim = Sim {
            child,
            log: log.to_path_buf(),
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let out = ns.tether(&["-qq", "ping", DEV_IP, "-c", "1", "--timeout", "200ms"]);
            if out.status.success() {
                return Ok(sim);
            }
            if !sim.running() {
                return Err(format!("tether-sim exited: {}", sim.log()));
            }
            if Instant::now() > end {
                return Err(format!("the device never answered: {}", sim.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL it and wait for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = wait_limit(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The simulated device over a real TAP interface inside a network
//! namespace this test creates, driven by the real `tether` client.
//!
//! Needs root, /dev/net/tun and iproute2. Without them the test reports
//! itself SKIPPED on the terminal (past the harness's output capture) and
//! passes: it cannot run here, which says nothing about the code.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tether_tests::{tether_bin, wait_output, TempDir};

const DEV_IP: &str = "192.168.69.1";

/// Why this machine cannot run the TAP test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some(format!("not root (uid {uid})"));
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (`ip`) is not installed".into());
    }
    None
}

fn skip(why: &str) {
    // Straight to the terminal: the harness captures print!/eprint!.
    let _ = writeln!(
        std::io::stderr(),
        "\nsim_tap: SKIPPED: {why}; the TAP test needs root, /dev/net/tun and iproute2\n"
    );
}

/// The `tether-sim` binary, built like `tether_bin()`: same profile and target dir.
fn sim_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
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
    })
    .clone()
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// The namespace, its TAP and the device; all removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str) -> Result<Netns, String> {
        let out = ip(&["netns", "add", name]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let ns = Netns { name: name.into() };
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

    fn exec(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c.stdin(Stdio::null());
        c
    }

    fn tether(&self, args: &[&str]) -> Output {
        let mut c = self.exec(&tether_bin());
        c.env_remove("TETHER_RETRIES")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        wait_output(c.spawn().expect("spawn tether"), Duration::from_secs(60))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Whatever runs inside is this test's device.
        let pids = ip(&["netns", "pids", &self.name]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = Command::new("kill").arg(pid).status();
        }
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end && !ip(&["netns", "pids", &self.name]).stdout.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = ip(&["-n", &self.name, "link", "del", "tap0"]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "tether failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn device_over_tap_in_a_namespace_with_the_tether_client() {
    if let Some(why) = missing_prerequisite() {
        return skip(&why);
    }
    let name = format!("tether-simtest-{}", std::process::id());
    let ns = match Netns::create(&name) {
        Ok(ns) => ns,
        Err(e) => return skip(&format!("cannot create a network namespace: {e}")),
    };
    let dir = TempDir::new().unwrap();
    let log = std::fs::File::create(dir.path().join("sim.log")).unwrap();
    let pcap = dir.path().join("sim.pcap");
    let mut sim = ns.exec(&sim_bin());
    sim.args(["--tap", "tap0", "--seed", "7", "--pcap"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(log);
    let mut child = sim.spawn().expect("spawn tether-sim");

    // Up once it answers a UDP ping.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ns.tether(&["-qq", "ping", DEV_IP, "-c", "1", "--timeout", "200ms"]);
        if out.status.success() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "tether-sim exited: {}",
            std::fs::read_to_string(dir.path().join("sim.log")).unwrap_or_default()
        );
        assert!(Instant::now() < end, "the device never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = ok(&ns.tether(&["ping", DEV_IP, "-c", "2", "-i", "50ms"]));
    assert!(out.contains("2 received"), "{out}");
    assert_eq!(
        ok(&ns.tether(&["exec", DEV_IP, "--", "echo", "over", "tap"])),
        "over tap\n"
    );
    assert_eq!(
        ok(&ns.tether(&["exec", DEV_IP, "--", "led", "on"])),
        "led on\n"
    );
    let failed = ns.tether(&["exec", DEV_IP, "--", "no-such-command"]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no-such-command"));

    let file: Vec<u8> = (0..300_000u32).map(|i| (i * 31 + i / 977) as u8).collect();
    let local = dir.path().join("up.bin");
    std::fs::write(&local, &file).unwrap();
    ok(&ns.tether(&["put", DEV_IP, local.to_str().unwrap(), "up.bin"]));
    let back = dir.path().join("back.bin");
    ok(&ns.tether(&["get", DEV_IP, "up.bin", back.to_str().unwrap()]));
    assert!(
        std::fs::read(&back).unwrap() == file,
        "the file came back different"
    );
    assert!(ok(&ns.tether(&["ls", DEV_IP])).contains("up.bin"));
    let t = ok(&ns.tether(&["time", DEV_IP]));
    assert!(t.starts_with("20") && t.trim_end().ends_with('Z'), "{t}");
    assert_eq!(ok(&ns.tether(&["echo", DEV_IP, "tap"])), "TAP\n");

    let _ = child.kill();
    drop(ns);
    let _ = child.wait();
    // The capture holds the session: a pcap header and the frames.
    let cap = std::fs::read(&pcap).unwrap();
    assert_eq!(&cap[..4], &0xa1b2_c3d4u32.to_le_bytes(), "not a pcap file");
    assert!(cap.len() > 600_000, "capture of {} bytes", cap.len());
}

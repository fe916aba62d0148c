//! The simulated device as a [`Target`]: `tether-sim` on tap0 in a network
//! namespace of its own, reached by the `tether` client run inside it.
//! Its store is flat, in RAM (gone when it is killed), names are at most
//! 48 bytes, and uploads start over instead of resuming.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{ok, s, Target};
use crate::tap::{enter, Netns, Sim, DEV_IP};
use crate::{sha256sum, tether_bin, text};

/// A device and its namespace; both removed on drop.
#[derive(Debug)]
pub struct DeviceTarget {
    sim: Option<Sim>,
    ns: Netns,
    args: Vec<String>,
    log: PathBuf,
    key: Option<PathBuf>,
    health_n: u32,
}

/// Remove namespaces a soak run interrupted by Ctrl-C left behind
/// (`tether-soak-PID` whose process is gone), with what runs in them.
pub fn sweep_stale() {
    let list = crate::tap::ip(&["netns", "list"]);
    for line in text(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("tether-soak-") else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            drop(Netns::adopt(name));
        }
    }
}

impl DeviceTarget {
    /// A namespace and a device started with `args`, logging under `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Result<DeviceTarget, String> {
        let ns = enter("soak", "tether-soak").ok_or("cannot create a network namespace")?;
        let mut d = DeviceTarget {
            sim: None,
            ns,
            args: args.iter().map(|a| a.to_string()).collect(),
            log: dir.join("sim.log"),
            key: None,
            health_n: 0,
        };
        d.restart()?;
        Ok(d)
    }

    /// Restart the device with a fresh key (`tether keygen`), which every
    /// client command then uses (through `TETHER_KEY_FILE`).
    pub fn use_key(&mut self, dir: &Path) -> Result<PathBuf, String> {
        let key = dir.join("device.key");
        let o = self.ns.tether(&["keygen", s(&key)]);
        ok("keygen", &o)?;
        self.args
            .extend(["--key-file".to_string(), s(&key).to_string()]);
        self.key = Some(key.clone());
        self.kill_server();
        self.restart()?;
        Ok(key)
    }

    /// The device's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Target for DeviceTarget {
    fn label(&self) -> &'static str {
        "device"
    }

    fn host(&self) -> String {
        DEV_IP.to_string()
    }

    fn client(&self) -> Command {
        let mut c = self.ns.exec(&tether_bin());
        if let Some(k) = &self.key {
            c.env("TETHER_KEY_FILE", k);
        }
        c
    }

    fn remote_sha(&self, name: &str) -> Option<String> {
        let o = self.run(&["exec", DEV_IP, "--", "sha256", name]);
        let out = text(&o.stdout);
        o.status
            .success()
            .then(|| out.split_whitespace().next().unwrap_or("").to_string())
    }

    fn remote_partial(&self, _name: &str) -> u64 {
        0
    }

    fn seed(&mut self, name: &str, local: &Path) -> Result<(), String> {
        ok(
            "seed put",
            &self.run(&["put", DEV_IP, s(local), name, "--force"]),
        )
        .map(|_| ())
    }

    fn resumes_puts(&self) -> bool {
        false
    }

    fn max_name(&self) -> usize {
        48
    }

    fn capacity(&self) -> Option<u64> {
        Some(2 << 20) // tether-sim's default --store-kib
    }

    fn finished(&self, _name: &str) -> usize {
        0
    }

    fn settle(&self, _name: &str, _before: usize) {
        std::thread::sleep(Duration::from_millis(300));
    }

    fn kill_server(&mut self) {
        if let Some(mut sim) = self.sim.take() {
            sim.kill();
        }
    }

    fn restart(&mut self) -> Result<(), String> {
        self.kill_server();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.sim = Some(Sim::start(&self.ns, &args, &self.log)?);
        Ok(())
    }

    fn health(&mut self, scratch: &Path) -> Result<(), String> {
        self.health_n += 1;
        let up = scratch.join(format!("health-up-{}", self.health_n));
        let back = scratch.join(format!("health-back-{}", self.health_n));
        crate::random_file(&up, 2048);
        ok(
            "ping",
            &self.run(&["ping", DEV_IP, "-c", "1", "--timeout", "2s"]),
        )?;
        ok(
            "put",
            &self.run(&["put", DEV_IP, s(&up), "health", "--force"]),
        )?;
        ok("get", &self.run(&["get", DEV_IP, "health", s(&back)]))?;
        if sha256sum(&back) != sha256sum(&up) {
            return Err("the health file came back different".into());
        }
        ok("rm", &self.run(&["rm", DEV_IP, "health"])).map(|_| ())
    }
}

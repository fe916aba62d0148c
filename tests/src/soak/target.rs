//! What a check runs against: `tether serve` ([`HostTarget`]) or the
//! simulated device ([`super::device::DeviceTarget`]), both reached only
//! through the `tether` client and the server's own files or commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{ok, run_cmd, s};
use crate::{random_file, sha256sum, tether, wait_until, Server};

/// A server the client commands can reach.
pub trait Target {
    /// `host` or `device`, for check lines.
    fn label(&self) -> &'static str;
    /// The HOST argument of client commands.
    fn host(&self) -> String;
    /// A `tether` client command that can reach it (no arguments yet).
    fn client(&self) -> Command;
    /// SHA-256 of the committed remote file `name`, `None` when absent.
    fn remote_sha(&self, name: &str) -> Option<String>;
    /// Bytes in the server's partial upload of `name` (0: none).
    fn remote_partial(&self, name: &str) -> u64;
    /// Make `local` the remote file `name` (set-up, not under test).
    fn seed(&mut self, name: &str, local: &Path) -> Result<(), String>;
    /// Whether an interrupted upload continues where it stopped.
    fn resumes_puts(&self) -> bool;
    /// Longest accepted file name, in bytes.
    fn max_name(&self) -> usize;
    /// Room for files, when it is small (a device's store).
    fn capacity(&self) -> Option<u64>;
    /// How many requests on `name` the server has finished (its log).
    fn finished(&self, name: &str) -> usize;
    /// Wait until more than `before` requests on `name` finished, or a
    /// short while when the server does not tell.
    fn settle(&self, name: &str, before: usize);
    /// `kill -9` the server.
    fn kill_server(&mut self);
    /// Start it again where it kept its files.
    fn restart(&mut self) -> Result<(), String>;
    /// It answers a ping, and a small file comes back intact.
    fn health(&mut self, scratch: &Path) -> Result<(), String>;

    /// Run `tether ARGS` against it (killed after a minute).
    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.client();
        c.args(args);
        run_cmd(c, Duration::from_secs(60))
    }
}

/// `tether serve` on 127.0.0.1 with a root under a temporary directory.
#[derive(Debug)]
pub struct HostTarget {
    /// The running server.
    pub server: Server,
    args: Vec<String>,
    health_n: u32,
}

impl HostTarget {
    /// Serve a new root under `dir` with `args`.
    pub fn start(dir: &Path, args: &[&str]) -> HostTarget {
        HostTarget {
            server: Server::start(dir, args),
            args: args.iter().map(|a| a.to_string()).collect(),
            health_n: 0,
        }
    }

    /// The served root.
    pub fn root(&self) -> PathBuf {
        self.server.root.clone()
    }

    /// The server's partial for the remote path `name`, where the README
    /// puts it (`.NAME.tether-part` beside the destination).
    pub fn partial_path(&self, name: &str) -> PathBuf {
        let p = self.server.root.join(name);
        let file = p.file_name().expect("a file name").to_string_lossy();
        p.with_file_name(format!(".{file}.tether-part"))
    }
}

impl Target for HostTarget {
    fn label(&self) -> &'static str {
        "host"
    }

    fn host(&self) -> String {
        self.server.host()
    }

    fn client(&self) -> Command {
        tether()
    }

    fn remote_sha(&self, name: &str) -> Option<String> {
        let p = self.server.root.join(name);
        p.is_file().then(|| sha256sum(&p))
    }

    fn remote_partial(&self, name: &str) -> u64 {
        super::partial_len(&self.partial_path(name), &self.server.root)
    }

    fn seed(&mut self, name: &str, local: &Path) -> Result<(), String> {
        let p = self.server.root.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        std::fs::copy(local, &p)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn resumes_puts(&self) -> bool {
        true
    }

    fn max_name(&self) -> usize {
        255
    }

    fn capacity(&self) -> Option<u64> {
        None
    }

    fn finished(&self, name: &str) -> usize {
        let quoted = format!("{name:?} ");
        self.server
            .log()
            .lines()
            .filter(|l| l.contains(&quoted) && l.contains(" result="))
            .count()
    }

    fn settle(&self, name: &str, before: usize) {
        wait_until(Duration::from_secs(5), || self.finished(name) > before);
    }

    fn kill_server(&mut self) {
        crate::signal(self.server.pid(), "KILL");
        let _ = crate::wait_until(Duration::from_secs(10), || !self.server.running());
    }

    fn restart(&mut self) -> Result<(), String> {
        let root = self.server.root.clone();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server = Server::start_at(&root, 0, &args);
        Ok(())
    }

    fn health(&mut self, scratch: &Path) -> Result<(), String> {
        self.health_n += 1;
        let name = ".soak-health";
        random_file(&self.server.root.join(name), 4096);
        let back = scratch.join(format!("health-{}", self.health_n));
        let host = self.host();
        ok(
            "ping",
            &self.run(&["ping", &host, "-c", "1", "--timeout", "2s"]),
        )?;
        ok("get", &self.run(&["get", &host, name, s(&back)]))?;
        if sha256sum(&back) != sha256sum(&self.server.root.join(name)) {
            return Err("the health file came back different".into());
        }
        let _ = std::fs::remove_file(back);
        Ok(())
    }
}

//! `--name value` options (and the `--pause` flag), nothing more.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Every option of both modes, with its default.
#[derive(Debug, Clone)]
pub struct Args {
    pub addr: SocketAddr,
    pub server_pid: u32,
    pub connections: usize,
    pub concurrency: usize,
    pub waves: usize,
    pub probes: usize,
    pub key_file: Option<PathBuf>,
    pub pause: bool,
    pub dir: PathBuf,
    pub clients: usize,
    pub seconds: f64,
    pub size: usize,
}

impl Args {
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args {
            addr: "127.0.0.1:7117".parse().expect("default address"),
            server_pid: 0,
            connections: 5000,
            concurrency: 64,
            waves: 2,
            probes: 20,
            key_file: None,
            pause: false,
            dir: std::env::temp_dir(),
            clients: 200,
            seconds: 30.0,
            size: 64 * 1024,
        };
        while let Some(name) = it.next() {
            if name == "--pause" {
                a.pause = true;
                continue;
            }
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{name} {v}: {e}");
            match name.as_str() {
                "--addr" => a.addr = v.parse().map_err(|e| bad(&e))?,
                "--server-pid" => a.server_pid = v.parse().map_err(|e| bad(&e))?,
                "--connections" => a.connections = v.parse().map_err(|e| bad(&e))?,
                "--concurrency" => a.concurrency = v.parse().map_err(|e| bad(&e))?,
                "--waves" => a.waves = v.parse().map_err(|e| bad(&e))?,
                "--probes" => a.probes = v.parse().map_err(|e| bad(&e))?,
                "--key-file" => a.key_file = Some(v.into()),
                "--dir" => a.dir = v.into(),
                "--clients" => a.clients = v.parse().map_err(|e| bad(&e))?,
                "--seconds" => a.seconds = v.parse().map_err(|e| bad(&e))?,
                "--size" => a.size = v.parse().map_err(|e| bad(&e))?,
                _ => return Err(format!("unknown option {name}")),
            }
        }
        Ok(a)
    }

    /// The key from `--key-file`, if given.
    pub fn key(&self) -> Result<Option<tether_host::key::Key>, String> {
        match &self.key_file {
            None => Ok(None),
            Some(p) => tether_host::key::read_key_file(p, "--key-file")
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }
}

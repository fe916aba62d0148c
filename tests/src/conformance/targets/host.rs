//! `tether serve` over TCP on 127.0.0.1, serving a fresh directory whose
//! surroundings (`outside/`, a file beside the root) must never change.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::KEY;
use crate::conformance::run::Target;
use crate::conformance::Server;
use crate::peer::{tcp_from, Peer};
use crate::{Server as Proc, TempDir};

/// A `tether serve` of one configuration.
#[derive(Debug)]
pub struct HostTarget {
    dir: TempDir,
    root: PathBuf,
    proc: Proc,
    keyed: bool,
    before: BTreeMap<PathBuf, String>,
}

/// Everything under `base` except the served root: (relative path, what it is).
fn outside(base: &Path, root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p == root {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let what = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                let b = std::fs::read(&p).expect("read");
                format!("file {} {}", b.len(), hex::encode(Sha256::digest(&b)))
            };
            use std::os::unix::fs::PermissionsExt as _;
            let mode = m.permissions().mode();
            let rel = p.strip_prefix(base).expect("below base").to_path_buf();
            out.insert(rel, format!("{what} mode {mode:o}"));
        }
    }
    out
}

impl HostTarget {
    /// Start a server of configuration `server` on a new directory.
    pub fn start(server: Server) -> HostTarget {
        let dir = TempDir::new().unwrap();
        let base = dir.path();
        let root = base.join("root");
        let out = base.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(out.join("sub")).unwrap();
        std::fs::write(out.join("canary.txt"), b"outside the root\n").unwrap();
        std::fs::write(out.join("sub/secret.txt"), b"secret\n").unwrap();
        std::fs::write(base.join("parent_canary.txt"), b"beside the root\n").unwrap();
        // The links of a server with DIRS (the protocol cannot make them).
        use std::os::unix::fs::symlink;
        symlink("../outside", root.join("link_out")).unwrap();
        symlink("../outside/canary.txt", root.join("link_file_out")).unwrap();
        symlink(out.join("canary.txt"), root.join("abs_link")).unwrap();
        symlink("loop_b", root.join("loop_a")).unwrap();
        symlink("loop_a", root.join("loop_b")).unwrap();
        let key_file = base.join("key");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_file)
                .unwrap();
            writeln!(f, "{}", hex::encode(KEY)).unwrap();
        }
        let kf = key_file.to_str().unwrap().to_string();
        let mut args: Vec<&str> = vec!["--allow-exec"];
        if server.keyed() {
            args.extend(["--key-file", &kf]);
        }
        if server.short_deadlines() {
            args.extend(["--handshake-timeout", "1s", "--idle-timeout", "2s"]);
        }
        let proc = Proc::start_at(&root, 0, &args);
        let before = outside(base, &root);
        HostTarget {
            dir,
            root,
            proc,
            keyed: server.keyed(),
            before,
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl Target for HostTarget {
    fn name(&self) -> &'static str {
        "host"
    }
    fn key(&self) -> Option<[u8; 32]> {
        self.keyed.then_some(KEY)
    }
    fn connect(&self, peer: u8) -> Result<Peer<'static>, String> {
        let from = Ipv4Addr::new(127, 0, 0, 1 + peer);
        Ok(Peer::new(tcp_from(from, self.proc.port)))
    }
    fn invariants(&self, _: &mut Peer<'_>) -> Result<(), String> {
        let now = outside(self.dir.path(), &self.root);
        if now != self.before {
            return Err(format!(
                "the tree outside the served root changed:\nbefore {:#?}\nafter {now:#?}",
                self.before
            ));
        }
        Ok(())
    }
}

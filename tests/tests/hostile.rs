//! The hostile-input suite: every case of `tether_tests::hostile::catalogue`
//! against the real `tether serve` (over TCP on 127.0.0.1) and against the
//! simulated device (over the virtual wire), each server configuration
//! once. For every case: the exact error (code, request id, a phrase of
//! its text) and whether the connection then closes; a well-behaved client
//! is served afterwards; and nothing outside the served root changed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tether_proto::{Command, ErrorCode, Exec, Kind, Message};
use tether_sim::smoltcp::time::Duration as VDuration;
use tether_sim::virt::{VirtualConfig, VirtualNet};
use tether_sim::SimConfig;
use tether_tests::hostile::{
    catalogue, get_exact, pattern, put, run_all, After, Case, Expect, Observed, Server, Side,
    Target, BIG_DEVICE, BIG_HOST, CONCURRENT_PORT, HELLO,
};
use tether_tests::peer::{tcp_from, Peer, Virt};
use tether_tests::{run, text, Server as Proc, TempDir};

const KEY: [u8; 32] = [0x5a; 32];

// ---------------------------------------------------------------------
// The host: a `tether serve` process over a fixture directory.

/// Everything under `base` except the served root: (relative path, what it is).
fn snapshot(base: &Path, root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            if p == root {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(base).expect("below base").to_path_buf();
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
            out.insert(rel, format!("{what} mode {mode:o}"));
        }
    }
    out
}

struct HostTarget {
    dir: TempDir,
    root: PathBuf,
    proc: Proc,
    keyed: bool,
    key_file: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl HostTarget {
    fn start(server: Server) -> HostTarget {
        let dir = TempDir::new().unwrap();
        let base = dir.path();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("canary.txt"), b"outside the root\n").unwrap();
        std::fs::write(outside.join("sub/secret.txt"), b"secret\n").unwrap();
        std::fs::write(base.join("parent_canary.txt"), b"beside the root\n").unwrap();
        std::fs::write(root.join("hello.txt"), HELLO).unwrap();
        std::fs::write(root.join("dir/inner.txt"), b"inner\n").unwrap();
        std::fs::write(root.join("empty.bin"), b"").unwrap();
        std::fs::write(
            root.join("chunk.bin"),
            pattern(tether_proto::HOST_MAX_CHUNK as usize, 1),
        )
        .unwrap();
        if server == Server::Plain {
            // Only the reused-id case needs it (a Get that stays in flight).
            std::fs::write(root.join("big.bin"), pattern(BIG_HOST, 3)).unwrap();
        }
        use std::os::unix::fs::symlink;
        symlink("../outside", root.join("link_out")).unwrap();
        symlink("../outside/canary.txt", root.join("link_file_out")).unwrap();
        symlink(outside.join("canary.txt"), root.join("abs_link")).unwrap();
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
        let keyed = matches!(server, Server::Keyed | Server::KeyedDeadlines);
        if keyed {
            args.extend(["--key-file", &kf]);
        }
        if matches!(server, Server::Deadlines | Server::KeyedDeadlines) {
            args.extend(["--handshake-timeout", "1s", "--idle-timeout", "2s"]);
        }
        let proc = Proc::start_at(&root, 0, &args);
        let before = snapshot(base, &root);
        HostTarget {
            dir,
            root,
            proc,
            keyed,
            key_file,
            before,
        }
    }

    fn client(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        let kf = self.key_file.to_str().unwrap();
        if self.keyed {
            all.extend(["--key-file", kf]);
        }
        run(&all)
    }
}

impl Target for HostTarget {
    fn side(&self) -> Side {
        Side::Host
    }
    fn key(&self) -> Option<[u8; 32]> {
        self.keyed.then_some(KEY)
    }
    fn connect(&mut self, from: Ipv4Addr) -> Result<Peer<'_>, String> {
        CONCURRENT_PORT.with(|c| c.set(self.proc.port));
        Ok(Peer::new(tcp_from(from, self.proc.port)))
    }
    fn check_served(&mut self, after: &[After]) -> Result<(), String> {
        // The real client, on a fresh connection.
        let o = self.client(&["stat", &self.proc.host(), "hello.txt"]);
        if o.status.code() != Some(0) || !text(&o.stdout).contains("hello.txt") {
            return Err(format!(
                "a well-behaved client was not served: {}{}\nserver log:\n{}",
                text(&o.stdout),
                text(&o.stderr),
                self.proc.log()
            ));
        }
        for a in after {
            match a {
                After::Missing(p) => {
                    if self.root.join(p).symlink_metadata().is_ok() {
                        return Err(format!("'{p}' exists but must not"));
                    }
                    let o = self.client(&["stat", &self.proc.host(), p]);
                    if !text(&o.stderr).contains("NOT_FOUND") {
                        return Err(format!("stat {p}: {}", text(&o.stderr)));
                    }
                }
                After::Content(p, want) => {
                    let got = std::fs::read(self.root.join(p))
                        .map_err(|e| format!("'{p}' should exist: {e}"))?;
                    if &got != want {
                        return Err(format!(
                            "'{p}' holds {} bytes, expected {}",
                            got.len(),
                            want.len()
                        ));
                    }
                }
                After::ExecOutput(..) => return Err("no exec checks on the host".into()),
            }
        }
        Ok(())
    }
    fn check_outside(&mut self) -> Result<(), String> {
        let now = snapshot(self.dir.path(), &self.root);
        if now != self.before {
            return Err(format!(
                "the tree outside --root changed:\nbefore {:#?}\nafter {now:#?}",
                self.before
            ));
        }
        Ok(())
    }
    fn settle(&mut self, _: &Case) {}
}

fn host(server: Server) -> usize {
    let mut t = HostTarget::start(server);
    run_all(&mut t, server)
}

#[test]
fn host_without_a_key() {
    let n = host(Server::Plain);
    assert!(n >= 40, "{n}");
}

#[test]
fn host_with_a_key() {
    let n = host(Server::Keyed);
    assert!(n >= 20, "{n}");
}

#[test]
fn host_deadlines() {
    assert!(host(Server::Deadlines) >= 3);
    assert!(host(Server::KeyedDeadlines) >= 1);
}

// ---------------------------------------------------------------------
// The device: the simulator on the virtual wire.

struct DeviceTarget {
    net: VirtualNet,
    key: Option<[u8; 32]>,
    /// What the store must hold: the fixture plus what cases created.
    files: BTreeMap<String, Vec<u8>>,
    conns: u64,
}

impl DeviceTarget {
    fn start(server: Server) -> DeviceTarget {
        let keyed = matches!(server, Server::Keyed | Server::KeyedDeadlines);
        let short = matches!(server, Server::Deadlines | Server::KeyedDeadlines);
        let mut device = SimConfig {
            key: keyed.then_some(tether_sim::Key(KEY)),
            ..SimConfig::default()
        };
        if short {
            device.handshake_timeout_ms = 1_000;
            device.idle_timeout_ms = 2_000;
        }
        let net = VirtualNet::new(VirtualConfig {
            device,
            ..VirtualConfig::default()
        });
        let mut t = DeviceTarget {
            net,
            key: keyed.then_some(KEY),
            files: BTreeMap::new(),
            conns: 0,
        };
        let chunk = t.net.device.config().max_chunk as usize;
        let fixture = [
            ("hello.txt", HELLO.to_vec()),
            ("empty.bin", Vec::new()),
            ("chunk.bin", pattern(chunk, 1)),
            ("big.bin", pattern(BIG_DEVICE, 3)),
        ];
        {
            let mut p = t.session().expect("a session for the fixture");
            for (name, data) in &fixture {
                match put(&mut p, name, data) {
                    Ok(Observed::Done) => {}
                    other => panic!("storing {name} on the device: {other:?}"),
                }
            }
        }
        for (name, data) in fixture {
            t.files.insert(name.to_string(), data);
        }
        t
    }

    fn session(&mut self) -> Result<Peer<'_>, String> {
        self.conns += 1;
        let key = self.key;
        let n = self.conns;
        let tcp = self.net.connect().map_err(|e| format!("connect: {e}"))?;
        let mut p = Peer::new(Virt(tcp));
        p.handshake(key, tether_tests::peer::nonce(1 << 40 | n))?;
        Ok(p)
    }

    fn stat_code(p: &mut Peer<'_>, path: &str) -> Result<Option<ErrorCode>, String> {
        p.request(3, Message::Stat { path }, &[])?;
        let g = p.recv_checked()?;
        match g.message() {
            Message::StatReply(_) => Ok(None),
            Message::Error { code, .. } => Ok(Some(code)),
            _ => Err(format!("stat {path}: {}", g.describe())),
        }
    }

    fn list(p: &mut Peer<'_>) -> Result<BTreeMap<String, u64>, String> {
        p.request(4, Message::List { path: "" }, &[])?;
        let mut out = BTreeMap::new();
        loop {
            let g = p.recv_checked()?;
            match g.message() {
                Message::ListEntry(e) => {
                    out.insert(e.name.to_string(), e.size);
                }
                Message::Done { .. } => return Ok(out),
                _ => return Err(format!("list: {}", g.describe())),
            }
        }
    }

    fn exec_stdout(p: &mut Peer<'_>, argv: &[&str]) -> Result<String, String> {
        let mut buf = vec![0u8; 256];
        let a = tether_proto::Argv::join(argv, &mut buf).map_err(|e| format!("{e:?}"))?;
        p.request(
            6,
            Message::Exec(Exec {
                command: Command::Argv(a),
                timeout_ms: None,
            }),
            &[],
        )?;
        let mut out = Vec::new();
        loop {
            let g = p.recv_checked()?;
            match g.message() {
                Message::Output { .. } => out.extend_from_slice(&g.body),
                Message::Exit { .. } => return Ok(String::from_utf8_lossy(&out).into_owned()),
                _ => return Err(format!("exec: {}", g.describe())),
            }
        }
    }
}

impl Target for DeviceTarget {
    fn side(&self) -> Side {
        Side::Device
    }
    fn key(&self) -> Option<[u8; 32]> {
        self.key
    }
    fn connect(&mut self, _: Ipv4Addr) -> Result<Peer<'_>, String> {
        let tcp = self.net.connect().map_err(|e| format!("connect: {e}"))?;
        Ok(Peer::new(Virt(tcp)))
    }
    fn check_served(&mut self, after: &[After]) -> Result<(), String> {
        let mut expect = self.files.clone();
        for a in after {
            if let After::Content(p, b) = a {
                expect.insert(p.to_string(), b.clone());
            }
        }
        let mut p = self
            .session()
            .map_err(|e| format!("a well-behaved client was not served: {e}"))?;
        p.ping_ok(1)?;
        if let Some(c) = DeviceTarget::stat_code(&mut p, "hello.txt")? {
            return Err(format!("stat hello.txt: {c:?}"));
        }
        for a in after {
            match a {
                After::Missing(path) => {
                    let c = DeviceTarget::stat_code(&mut p, path)?;
                    if c != Some(ErrorCode::NOT_FOUND) {
                        return Err(format!("'{path}' must not exist: stat gave {c:?}"));
                    }
                }
                After::Content(path, want) => match get_exact(&mut p, path, want)? {
                    Observed::Done => {}
                    o => return Err(format!("get {path}: {o:?}")),
                },
                After::ExecOutput(argv, want) => {
                    let out = DeviceTarget::exec_stdout(&mut p, argv)?;
                    if !out.contains(want) {
                        return Err(format!("{argv:?} printed {out:?}, expected {want:?}"));
                    }
                }
            }
        }
        // The store holds exactly the fixture and what the cases created.
        let listed = DeviceTarget::list(&mut p)?;
        let want: BTreeMap<String, u64> = expect
            .iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect();
        // Successful transfer cases store files not named in `after`.
        let extra: Vec<_> = listed
            .keys()
            .filter(|k| !want.contains_key(*k) && !ALLOWED_EXTRA.contains(&k.as_str()))
            .collect();
        if !extra.is_empty() || want.iter().any(|(k, v)| listed.get(k) != Some(v)) {
            return Err(format!(
                "the store changed: it lists {listed:?}, expected {want:?} (plus any of {ALLOWED_EXTRA:?})"
            ));
        }
        drop(p);
        self.files = expect;
        Ok(())
    }
    fn check_outside(&mut self) -> Result<(), String> {
        // A device has no "outside": its flat store was checked above.
        Ok(())
    }
    fn settle(&mut self, case: &Case) {
        // A failed Auth makes the device refuse this peer for a while.
        if matches!(case.device, Expect::Error { code, .. } if code == ErrorCode::AUTH_FAILED) {
            self.net.advance(VDuration::from_secs(65));
        }
    }
}

/// Files that successful upload cases store (their content is checked by
/// the case itself; `.x.tether-part` is an ordinary name on the device,
/// whose partial uploads live in unnamed slots).
const ALLOWED_EXTRA: &[&str] = &["chunk-up.bin", "chunk1-up.bin", ".x.tether-part"];

fn device(server: Server) -> usize {
    let mut t = DeviceTarget::start(server);
    run_all(&mut t, server)
}

#[test]
fn device_without_a_key() {
    let n = device(Server::Plain);
    assert!(n >= 40, "{n}");
}

#[test]
fn device_with_a_key() {
    let n = device(Server::Keyed);
    assert!(n >= 15, "{n}");
}

#[test]
fn device_deadlines() {
    assert!(device(Server::Deadlines) >= 3);
    assert!(device(Server::KeyedDeadlines) >= 1);
}

// ---------------------------------------------------------------------

#[test]
fn the_catalogue_has_at_least_50_distinct_cases_per_side() {
    let all = catalogue();
    for side in [Side::Host, Side::Device] {
        let names: std::collections::BTreeSet<&str> = all
            .iter()
            .filter(|c| *c.expect(side) != Expect::Skip)
            .map(|c| c.name)
            .collect();
        let n = all
            .iter()
            .filter(|c| *c.expect(side) != Expect::Skip)
            .count();
        assert_eq!(names.len(), n, "{side:?}: case names must be unique");
        assert!(n >= 50, "{side:?} has only {n} cases");
        // Both frame-level and request-level inputs, and both outcomes.
        let errors = all
            .iter()
            .filter(|c| matches!(c.expect(side), Expect::Error { .. }))
            .count();
        let successes = all
            .iter()
            .filter(|c| matches!(c.expect(side), Expect::Ok | Expect::Reply { .. }))
            .count();
        assert!(
            errors >= 40 && successes >= 4,
            "{side:?}: {errors} errors, {successes} successes"
        );
        eprintln!("{side:?}: {n} cases");
    }
    let _ = Kind::Ping;
}

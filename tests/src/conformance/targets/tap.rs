//! The simulated device (`tether-sim`) on a real TAP inside a network
//! namespace this target creates (as root). Connections are made by a
//! thread that entered the namespace: sockets stay in the namespace they
//! were made in, so the test uses them as any other. Each peer address
//! (`192.168.69.100 + n`) is added to the TAP when first used.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{device_invariants, KEY};
use crate::conformance::run::Target;
use crate::conformance::Server;
use crate::peer::Peer;
use crate::tap::{ip, sim_bin, Netns, DEV_IP};
use crate::TempDir;

/// A connection to make: from this address; the stream goes back on `reply`.
struct Dial {
    from: Ipv4Addr,
    reply: mpsc::Sender<Result<TcpStream, String>>,
}

/// The simulated device of one configuration on a TAP.
#[derive(Debug)]
pub struct TapTarget {
    sim: RefCell<Child>,
    dir: TempDir,
    dialer: mpsc::Sender<Dial>,
    added: RefCell<BTreeSet<u8>>,
    key: Option<[u8; 32]>,
    // Last: the namespace goes after the device and the dialer.
    ns: Netns,
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dial({})", self.from)
    }
}

/// Connect to the device from `from` (inside the namespace), waiting out
/// refusals while the device's connection slots are still closing.
fn dial(from: Ipv4Addr) -> Result<TcpStream, String> {
    use socket2::{Domain, Socket, Type};
    let to: SocketAddr = (
        DEV_IP.parse::<Ipv4Addr>().unwrap(),
        tether_proto::DEFAULT_PORT,
    )
        .into();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
        s.bind(&SocketAddr::from((from, 0)).into())
            .map_err(|e| format!("bind {from}: {e}"))?;
        match s.connect_timeout(&to.into(), Duration::from_secs(5)) {
            Ok(()) => {
                let t: TcpStream = s.into();
                t.set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(|e| e.to_string())?;
                t.set_nodelay(true).map_err(|e| e.to_string())?;
                return Ok(t);
            }
            Err(e) if Instant::now() < end => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("connect from {from}: {e}")),
        }
    }
}

/// A thread inside namespace `name` that makes connections.
fn dialer(name: &str) -> Result<mpsc::Sender<Dial>, String> {
    let (tx, rx) = mpsc::channel::<Dial>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let entered = std::fs::File::open(&path)
            .map_err(|e| format!("{path}: {e}"))
            .and_then(|f| {
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns {path}: {e}"))
            });
        let ok = entered.is_ok();
        let _ = ready_tx.send(entered);
        if ok {
            for d in rx {
                let _ = d.reply.send(dial(d.from));
            }
        }
    });
    ready_rx
        .recv()
        .map_err(|_| "the dialer thread died".to_string())??;
    Ok(tx)
}

impl TapTarget {
    /// Start `tether-sim` of configuration `server` on a TAP in `ns`.
    pub fn start(ns: Netns, server: Server) -> Result<TapTarget, String> {
        let dir = TempDir::new().unwrap();
        let log = std::fs::File::create(dir.path().join("sim.log")).unwrap();
        let mut cmd = ns.exec(&sim_bin());
        cmd.args(["--tap", "tap0", "--seed", "7", "--quiet"]);
        if server.keyed() {
            let kf = dir.path().join("key");
            write_key(&kf);
            cmd.arg("--key-file").arg(&kf);
        }
        if server.short_deadlines() {
            cmd.args([
                "--handshake-timeout-ms",
                "1000",
                "--idle-timeout-ms",
                "2000",
            ]);
        }
        cmd.stdout(Stdio::null()).stderr(log);
        let sim = cmd.spawn().map_err(|e| format!("spawn tether-sim: {e}"))?;
        let dialer = dialer(ns.name())?;
        let t = TapTarget {
            sim: RefCell::new(sim),
            dir,
            dialer,
            added: RefCell::new(BTreeSet::new()),
            key: server.keyed().then_some(KEY),
            ns,
        };
        // Up once it takes a connection.
        t.stream(0)
            .map_err(|e| format!("the device never answered: {e}\n{}", t.log()))?;
        Ok(t)
    }

    /// The device's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.log")).unwrap_or_default()
    }

    fn stream(&self, peer: u8) -> Result<TcpStream, String> {
        let from = Ipv4Addr::new(192, 168, 69, 100 + peer);
        if peer > 0 && self.added.borrow_mut().insert(peer) {
            let out = ip(&[
                "-n",
                self.ns.name(),
                "addr",
                "add",
                &format!("{from}/24"),
                "dev",
                "tap0",
            ]);
            if !out.status.success() {
                return Err(format!("ip addr add {from}: {out:?}"));
            }
        }
        let (reply, got) = mpsc::channel();
        self.dialer
            .send(Dial { from, reply })
            .map_err(|_| "the dialer thread is gone".to_string())?;
        got.recv()
            .map_err(|_| "the dialer thread is gone".to_string())?
    }
}

fn write_key(path: &std::path::Path) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{}", hex::encode(KEY)).unwrap();
}

impl Drop for TapTarget {
    fn drop(&mut self) {
        let sim = self.sim.get_mut();
        let _ = sim.kill();
        let _ = sim.wait();
    }
}

impl Target for TapTarget {
    fn name(&self) -> &'static str {
        "tap"
    }
    fn key(&self) -> Option<[u8; 32]> {
        self.key
    }
    fn connect(&self, peer: u8) -> Result<Peer<'static>, String> {
        Ok(Peer::new(self.stream(peer)?))
    }
    fn invariants(&self, p: &mut Peer<'_>) -> Result<(), String> {
        if let Ok(Some(st)) = self.sim.borrow_mut().try_wait() {
            return Err(format!("tether-sim exited ({st}):\n{}", self.log()));
        }
        device_invariants(p)
    }
}

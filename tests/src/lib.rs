//! Shared helpers for tether's cross-crate tests: the real `tether` binary,
//! servers on ephemeral ports, temporary directories, test data, a lossy
//! UDP relay and a recording, tampering TCP relay ([`relay`]).
//!
//! Everything talks to 127.0.0.1 only, and every wait has a generous bound
//! so a loaded machine slows the tests down instead of failing them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod conformance;
pub mod http;
pub mod peer;
pub mod qemu;
pub mod relay;
pub mod soak;
pub mod tap;

/// The `tether` binary, built (once per test process) from this workspace
/// with the same profile as the tests, so a test never drives a stale build.
/// `TETHER_BIN` overrides it.
pub fn tether_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TETHER_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test-exe>
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "tether-host", "--bin", "tether"])
            .arg("--target-dir")
            .arg(&target_dir);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build for the tether binary");
        assert!(st.success(), "cargo build -p tether-host failed");
        let bin = profile_dir.join("tether");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A `tether` command with a clean environment for logs.
pub fn tether() -> Command {
    let mut c = Command::new(tether_bin());
    c.env_remove("RUST_LOG")
        .env_remove("TETHER_RETRIES")
        .env_remove("TETHER_KEY_FILE")
        .env_remove("TETHER_KEY")
        .env_remove("TETHER_ENCRYPT");
    c.stdin(Stdio::null());
    c
}

/// Run `tether ARGS` to completion (bounded by `limit`), capturing output.
pub fn run_limit(args: &[&str], limit: Duration) -> Output {
    let mut c = tether();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn tether");
    wait_output(child, limit)
}

/// Run `tether ARGS` (at most two minutes).
pub fn run(args: &[&str]) -> Output {
    run_limit(args, Duration::from_secs(120))
}

/// Collect a child's output, killing it if it outlives `limit`.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let (o, killed) = wait_output_or_kill(child, limit);
    if killed {
        panic!(
            "tether did not finish within {limit:?} (killed, {}); stderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    o
}

/// Collect a child's output, killing it if it outlives `limit`; also
/// whether it had to be killed.
pub fn wait_output_or_kill(mut child: Child, limit: Duration) -> (Output, bool) {
    let out = child.stdout.take();
    let err = child.stderr.take();
    let t_out = std::thread::spawn(move || read_all(out));
    let t_err = std::thread::spawn(move || read_all(err));
    let (status, killed) = match wait_limit(&mut child, limit) {
        Some(s) => (s, false),
        None => {
            let _ = child.kill();
            (child.wait().expect("wait"), true)
        }
    };
    let o = Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    };
    (o, killed)
}

fn read_all<R: Read>(r: Option<R>) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut v);
    }
    v
}

/// Wait for a child at most `limit`.
pub fn wait_limit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Text of an output stream.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Send a signal to a process (by the `kill` command).
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// A running `tether serve` on 127.0.0.1 and its log.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its port (TCP and UDP).
    pub port: u16,
    /// The served root.
    pub root: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Serve a new directory under `dir` (`dir/root`) with `extra` options.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).expect("create root");
        Server::start_at(&root, 0, extra)
    }

    /// Serve `root` on `port` (0: any) with `extra` options.
    pub fn start_at(root: &Path, port: u16, extra: &[&str]) -> Server {
        let mut c = tether();
        c.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--root")
            .arg(root)
            .args(extra);
        Server::spawn(c, root)
    }

    /// Start `c`, a `tether serve` command line serving `root` (another
    /// build, or under Wine), and wait for its address.
    pub fn spawn(mut c: Command, root: &Path) -> Server {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn tether serve");
        let log = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut g = l2.lock().unwrap_or_else(|e| e.into_inner());
                g.push_str(&line);
                g.push('\n');
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on stdout.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("tether serve did not start; log:\n{}", log.lock().unwrap());
            }
        };
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tether serve printed {line:?} instead of its address; log:\n{}",
                    log.lock().unwrap()
                )
            });
        Server {
            child,
            port,
            root: root.to_path_buf(),
            log,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log().contains(needle))
    }

    /// Send SIGTERM and wait for the exit (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        signal(self.child.id(), "TERM");
        wait_limit(&mut self.child, limit)
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago for both TCP and UDP on 127.0.0.1.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

/// Write `size` random bytes to `path`.
pub fn random_file(path: &Path, size: u64) {
    let mut src = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    let mut dst = std::fs::File::create(path).expect("create test file");
    let n = std::io::copy(&mut (&mut src).take(size), &mut dst).expect("write test file");
    assert_eq!(n, size);
    dst.flush().expect("flush");
}

/// SHA-256 of a file by the system's `sha256sum` (an implementation independent of tether's).
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    text(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// Size of a file, 0 if it does not exist.
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The number after `label` in `text` (e.g. `"resumed at "` → 1234).
pub fn number_after(text: &str, label: &str) -> Option<u64> {
    let at = text.find(label)? + label.len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The number before `label` in `text` (e.g. `" transferred"` → 1234).
pub fn number_before(text: &str, label: &str) -> Option<u64> {
    let at = text.find(label)?;
    let digits: String = text[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

/// A UDP relay on 127.0.0.1 in front of a server that drops the first
/// `drop_first` datagrams from clients and forwards the rest (and the
/// replies). Stops when dropped.
#[derive(Debug)]
pub struct LossyUdpRelay {
    /// The relay's port.
    pub port: u16,
    seen: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl LossyUdpRelay {
    /// Start relaying to `server`.
    pub fn start(server: SocketAddr, drop_first: usize) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        front
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let port = front.local_addr().expect("addr").port();
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let back = UdpSocket::bind("127.0.0.1:0").expect("bind relay back");
            back.connect(server).expect("connect relay");
            back.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = vec![0u8; 65536];
            while !st2.load(Ordering::Relaxed) {
                let Ok((n, client)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let k = s2.fetch_add(1, Ordering::SeqCst);
                if k < drop_first {
                    continue;
                }
                if back.send(&buf[..n]).is_err() {
                    continue;
                }
                if let Ok(m) = back.recv(&mut buf) {
                    let _ = front.send_to(&buf[..m], client);
                }
            }
        });
        LossyUdpRelay { port, seen, stop }
    }

    /// Datagrams received from clients so far.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl Drop for LossyUdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A raw protocol connection for tests that must misbehave (send garbage,
/// stall, craft frames): plain blocking socket and the core's codec.
pub mod raw {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use tether_proto::codec::{encode_frame, Decoder, Event, Limits};
    use tether_proto::{Caps, Header, Hello, Message};

    /// One decoded frame: request id, the header re-encoded as debug text
    /// for assertions, the error code if an Error, and the body.
    #[derive(Debug, Clone)]
    pub struct RawFrame {
        /// Request id.
        pub id: u32,
        /// `format!("{:?}", message)`.
        pub debug: String,
        /// The code of an Error frame.
        pub error_code: Option<u16>,
        /// Body bytes.
        pub body: Vec<u8>,
    }

    /// A raw client connection.
    #[derive(Debug)]
    pub struct RawConn {
        /// The socket.
        pub stream: TcpStream,
        buf: Vec<u8>,
    }

    impl RawConn {
        /// Connect (no handshake).
        pub fn connect(port: u16) -> RawConn {
            let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            RawConn {
                stream,
                buf: Vec::new(),
            }
        }

        /// Connect and complete the handshake.
        pub fn handshaken(port: u16) -> RawConn {
            let mut c = RawConn::connect(port);
            c.send(
                0,
                Message::Hello(Hello {
                    version: 1,
                    max_header: 8192,
                    max_chunk: 256 * 1024,
                    caps: Caps::empty(),
                    nonce: [7; 16],
                    agent: "raw-test",
                }),
            );
            let f = c.recv().expect("HelloAck");
            assert!(f.debug.starts_with("HelloAck"), "got {f:?}");
            c
        }

        /// Send one frame without a body.
        pub fn send(&mut self, id: u32, msg: Message<'_>) {
            let mut out = vec![0u8; 16 * 1024];
            let f = encode_frame(&Header::new(id, msg), &[], &mut out).expect("encode");
            self.stream.write_all(f).expect("send frame");
        }

        /// Send raw bytes.
        pub fn send_bytes(&mut self, b: &[u8]) {
            self.stream.write_all(b).expect("send bytes");
        }

        /// The next whole frame, or `None` at the end of the connection.
        pub fn recv(&mut self) -> Option<RawFrame> {
            let mut hbuf = vec![0u8; 8192];
            let mut dec = Decoder::new(
                &mut hbuf[..],
                Limits {
                    max_header: 8192,
                    max_body: 1 << 20,
                },
            );
            let mut cur: Option<RawFrame> = None;
            loop {
                let mut used_total = 0;
                loop {
                    let (used, ev) = dec.handle_bytes(&self.buf[used_total..]);
                    used_total += used;
                    match ev.expect("valid frames from the server") {
                        Some(Event::Header(f)) => {
                            let h = f.parse().expect("parsable header");
                            let error_code = match &h.message {
                                Message::Error { code, .. } => Some(code.0),
                                _ => None,
                            };
                            cur = Some(RawFrame {
                                id: h.request_id,
                                debug: format!("{:?}", h.message),
                                error_code,
                                body: Vec::new(),
                            });
                        }
                        Some(Event::Body(b)) => {
                            if let Some(c) = cur.as_mut() {
                                c.body.extend_from_slice(b)
                            }
                        }
                        Some(Event::End { .. }) => {
                            self.buf.drain(..used_total);
                            return cur;
                        }
                        None => break,
                    }
                }
                // Incomplete: keep the unconsumed bytes and read more. The
                // decoder holds the consumed part of a partial frame, so
                // restart from the frame start with a fresh decoder.
                let mut chunk = [0u8; 65536];
                let n = match self.stream.read(&mut chunk) {
                    Ok(n) => n,
                    Err(_) => return None,
                };
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
                dec.reset();
                cur = None;
            }
        }
    }
}

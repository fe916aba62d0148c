//! The blocking and async drivers against the device's server engine
//! (`DeviceConn` over a RAM store) through an in-memory duplex transport
//! that moves bytes in seeded random pieces, can cut the connection after
//! so many bytes either way, and (for the async driver) answers `Pending`
//! at random. Every test runs for both drivers.

extern crate std;

use std::cell::Cell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use sha2::{Digest as _, Sha256};

use super::*;
use crate::device::{Config, Device, DeviceConn, OffsetClock, Peer, RamStore, Store as _};
use crate::handshake::HandshakeError;
use crate::message::{Caps, EntryKind, ErrorCode, ExitStatus, Stream};
use crate::Command;

const KEY: [u8; 32] = [0x42; 32];

type Dev = Device<RamStore<Vec<u8>, 8>, OffsetClock, ()>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Why the in-memory transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireError {
    /// Cut (a test's doing).
    Cut,
    /// The client waits for bytes the server will never send, or writes
    /// while the server waits for it to read: a deadlock.
    Stall,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl core::error::Error for WireError {}

impl embedded_io::Error for WireError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            WireError::Cut => embedded_io::ErrorKind::ConnectionReset,
            WireError::Stall => embedded_io::ErrorKind::Other,
        }
    }
}

/// Bytes in flight each way at most (a TCP window).
const WINDOW: usize = 16 * 1024;

/// The client's transport with the device at its other end.
struct Wire {
    dev: Dev,
    conn: DeviceConn<Vec<u8>, 2>,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    rng: Rng,
    /// The clock both sides read (ms).
    clock: Rc<Cell<u64>>,
    /// The connection breaks after this many more bytes to the server /
    /// to the client.
    cut_tx: Option<usize>,
    cut_rx: Option<usize>,
    cut: bool,
    /// Deliver one byte per read and advance the clock by 1 s (a server
    /// too slow for the handshake deadline).
    slow: bool,
    /// The server's side is gone without a word (reads see the end).
    eof: bool,
}

impl Wire {
    fn new(seed: u64, key: Option<[u8; 32]>, encrypt_offered: bool) -> Wire {
        let caps = if encrypt_offered {
            Config::DEFAULT.caps.union(Caps::ENCRYPT)
        } else {
            Config::DEFAULT.caps
        };
        let config = Config {
            key,
            caps,
            ..Config::DEFAULT
        };
        let dev = Device::new(
            config,
            RamStore::new(vec![0; 256 * 1024]),
            OffsetClock {
                offset_ms: 1_700_000_000_000,
            },
            (),
            0,
        );
        let conn = DeviceConn::new(vec![0; 512], vec![0; 640], vec![0; 512]);
        let conn = if encrypt_offered {
            conn.with_frame_buffer(vec![0; 1536])
        } else {
            conn
        };
        let mut w = Wire {
            dev,
            conn,
            to_server: Vec::new(),
            to_client: Vec::new(),
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            clock: Rc::new(Cell::new(0)),
            cut_tx: None,
            cut_rx: None,
            cut: false,
            slow: false,
            eof: false,
        };
        w.accept();
        w
    }

    fn accept(&mut self) {
        let now = self.clock.get();
        let nonce = [self.rng.next() as u8; 16];
        self.conn
            .handle_accept(&mut self.dev, Peer::ipv4([10, 0, 0, 2]), nonce, now);
    }

    /// The connection ends (the server sees the close); a new one is accepted.
    fn reconnect(&mut self) {
        self.conn.handle_close(&mut self.dev);
        self.to_server.clear();
        self.to_client.clear();
        self.cut = false;
        self.cut_tx = None;
        self.cut_rx = None;
        self.accept();
    }

    fn clock(&self) -> impl FnMut() -> u64 {
        let c = self.clock.clone();
        move || c.get()
    }

    /// Run the server until neither side moves.
    fn pump(&mut self) {
        let now = self.clock.get();
        loop {
            let mut moved = false;
            if !self.to_server.is_empty() {
                let take = self.to_server.len().min(1 + self.rng.below(3000));
                let used = self
                    .conn
                    .handle_bytes(&mut self.dev, &self.to_server[..take], now);
                self.to_server.drain(..used);
                moved |= used > 0;
            }
            // The window: the server sends while the client has room.
            let room = WINDOW.saturating_sub(self.to_client.len());
            let mut out = vec![0u8; room.min(1 + self.rng.below(3000))];
            let n = self.conn.poll_transmit(&mut self.dev, &mut out, now);
            self.to_client.extend_from_slice(&out[..n]);
            moved |= n > 0;
            if !moved {
                break;
            }
        }
    }

    fn break_now(&mut self) {
        self.cut = true;
        self.conn.handle_close(&mut self.dev);
    }
}

impl embedded_io::ErrorType for Wire {
    type Error = WireError;
}

impl embedded_io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> Result<usize, WireError> {
        if self.cut {
            return Err(WireError::Cut);
        }
        self.pump();
        let room = WINDOW.saturating_sub(self.to_server.len());
        if room == 0 {
            // Neither side can move: the server waits for the client to read.
            return Err(WireError::Stall);
        }
        let mut n = buf.len().min(1 + self.rng.below(4096)).min(room);
        if let Some(left) = self.cut_tx.as_mut() {
            if n >= *left {
                n = *left;
                self.to_server.extend_from_slice(&buf[..n]);
                self.pump();
                self.break_now();
                return if n > 0 { Ok(n) } else { Err(WireError::Cut) };
            }
            *left -= n;
        }
        self.to_server.extend_from_slice(&buf[..n]);
        self.pump();
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), WireError> {
        Ok(())
    }
}

impl embedded_io::Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.cut {
            return Err(WireError::Cut);
        }
        if self.eof {
            return Ok(0);
        }
        self.pump();
        if self.to_client.is_empty() {
            if self.conn.poll_close() {
                return Ok(0);
            }
            return Err(WireError::Stall);
        }
        let mut n = buf
            .len()
            .min(self.to_client.len())
            .min(1 + self.rng.below(3000));
        if self.slow {
            n = 1;
            self.clock.set(self.clock.get() + 1000);
        }
        if let Some(left) = self.cut_rx.as_mut() {
            if n >= *left {
                let k = *left;
                buf[..k].copy_from_slice(&self.to_client[..k]);
                self.to_client.drain(..k);
                self.break_now();
                return if k > 0 { Ok(k) } else { Err(WireError::Cut) };
            }
            *left -= n;
        }
        buf[..n].copy_from_slice(&self.to_client[..n]);
        self.to_client.drain(..n);
        Ok(n)
    }
}

impl embedded_io_async::Read for Wire {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.rng.below(3) == 0 {
            embassy_futures::yield_now().await;
        }
        embedded_io::Read::read(self, buf)
    }
}

impl embedded_io_async::Write for Wire {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, WireError> {
        if self.rng.below(3) == 0 {
            embassy_futures::yield_now().await;
        }
        embedded_io::Write::write(self, buf)
    }
    async fn flush(&mut self) -> Result<(), WireError> {
        Ok(())
    }
}

/// How a test connects: no key; a key (sealed); a key, encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Sealed,
    Encrypted,
}

const MODES: [Mode; 3] = [Mode::Open, Mode::Sealed, Mode::Encrypted];

fn wire(seed: u64, mode: Mode) -> Wire {
    let key = (mode != Mode::Open).then_some(KEY);
    Wire::new(seed, key, mode == Mode::Encrypted)
}

fn config(mode: Mode) -> ClientConfig {
    ClientConfig {
        agent: "driver-test/0",
        max_header: 512,
        max_chunk: 2048,
        key: (mode != Mode::Open).then_some(KEY),
        encrypt: mode == Mode::Encrypted,
        ..ClientConfig::DEFAULT
    }
}

fn arena(cfg: &ClientConfig) -> Vec<u8> {
    vec![0; ClientBuffers::arena_len(cfg, 1024)]
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 97) as u8).collect()
}

fn sha(d: &[u8]) -> [u8; 32] {
    Sha256::digest(d).into()
}

/// A reader that fails after `ok` bytes.
struct FailingReader {
    data: Vec<u8>,
    ok: usize,
}

impl embedded_io::ErrorType for FailingReader {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if self.ok == 0 {
            return Err(embedded_io::ErrorKind::InvalidData);
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data.drain(..n);
        self.ok -= n;
        Ok(n)
    }
}

/// A writer that fails after `ok` bytes.
struct FailingWriter {
    got: Vec<u8>,
    ok: usize,
}

impl embedded_io::ErrorType for FailingWriter {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if self.got.len() >= self.ok {
            return Err(embedded_io::ErrorKind::OutOfMemory);
        }
        let n = buf.len().min(self.ok - self.got.len());
        self.got.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The tests, for a driver whose calls are made by `$run!(call)`.
macro_rules! driver_tests {
    ($run:ident) => {
        fn connect<'b>(
            w: &'b mut Wire,
            cfg: ClientConfig,
            mem: &'b mut [u8],
        ) -> Result<Client<'b, &'b mut Wire, impl FnMut() -> u64>, Error<WireError>> {
            let clock = w.clock();
            let bufs = ClientBuffers::split(mem, &cfg).expect("arena");
            $run!(Client::connect(w, cfg, bufs, [9; 16], clock))
        }

        #[test]
        fn every_operation_open_sealed_and_encrypted() {
            for seed in 1..6u64 {
                for mode in MODES {
                    let cfg = config(mode);
                    let mut mem = arena(&cfg);
                    let mut w = wire(seed, mode);
                    let mut c = connect(&mut w, cfg, &mut mem).expect("connect");
                    let s = c.session().expect("connected").clone();
                    assert_eq!(s.authenticated, mode != Mode::Open, "{mode:?}");
                    assert_eq!(s.encrypted, mode == Mode::Encrypted, "{mode:?}");
                    assert!(s.agent.starts_with("tether-device/"), "{s:?}");

                    assert_eq!($run!(c.ping(77)).unwrap(), 77);
                    let mut out = [0u8; 32];
                    assert_eq!($run!(c.echo("hi there", &mut out)).unwrap(), "HI THERE");
                    let mut short = [0u8; 3];
                    assert_eq!($run!(c.echo("abcdef", &mut short)).unwrap(), "ABC");
                    let mut tb = [0u8; 64];
                    let t = $run!(c.time("", &mut tb)).unwrap();
                    assert_eq!(t.unix_ms, 1_700_000_000_000);
                    assert!(t.text.starts_with("2023-11-14T"), "{}", t.text);

                    // exec: stdout as it arrives, then the status.
                    let mut stdout = Vec::new();
                    let st = $run!(c.exec(Command::Shell("echo a  b"), None, |s, b| {
                        assert_eq!(s, Stream::Stdout);
                        stdout.extend_from_slice(b);
                    }))
                    .unwrap();
                    assert_eq!((st, &stdout[..]), (ExitStatus::Code(0), &b"a b\n"[..]));
                    let mut stderr = Vec::new();
                    let st = $run!(c.exec(Command::Shell("led blink"), Some(5000), |s, b| {
                        if s == Stream::Stderr {
                            stderr.extend_from_slice(b)
                        }
                    }))
                    .unwrap();
                    assert_eq!(st, ExitStatus::Code(2));
                    assert!(stderr.starts_with(b"usage: led"), "{stderr:?}");

                    // put from a slice and from a reader; stat, list, get both ways.
                    let data = pattern(9000 + seed as usize * 333);
                    let opts = PutOptions {
                        force: true,
                        resume: false,
                    };
                    let t = $run!(c.put_slice("a.bin", &data, opts)).unwrap();
                    assert_eq!(
                        t,
                        Transfer {
                            size: data.len() as u64,
                            offset: 0,
                            sha256: sha(&data)
                        }
                    );
                    let small = pattern(700);
                    let t = $run!(c.put("b.txt", 700, &small[..], opts)).unwrap();
                    assert_eq!(t.sha256, sha(&small));
                    let st = $run!(c.stat("a.bin")).unwrap();
                    assert_eq!((st.kind, st.size), (EntryKind::File, data.len() as u64));
                    let mut names = Vec::new();
                    let n = $run!(c.list("", |e| names
                        .push((std::string::String::from(e.name), e.size))))
                    .unwrap();
                    assert_eq!(n, 2);
                    assert_eq!(
                        names,
                        [("a.bin".into(), data.len() as u64), ("b.txt".into(), 700)]
                    );
                    let mut got = Vec::new();
                    let t = $run!(c.get_with("a.bin", None, |at, b| {
                        assert_eq!(at as usize, got.len());
                        got.extend_from_slice(b);
                    }))
                    .unwrap();
                    assert_eq!(got, data);
                    assert_eq!(
                        t,
                        Transfer {
                            size: data.len() as u64,
                            offset: 0,
                            sha256: sha(&data)
                        }
                    );
                    let mut sink: Vec<u8> = Vec::new();
                    let t = $run!(c.get("b.txt", None, &mut sink)).unwrap();
                    assert_eq!((sink, t.sha256), (small.clone(), sha(&small)));
                    // An empty file.
                    let t = $run!(c.put_slice("empty", &[], opts)).unwrap();
                    assert_eq!(t.sha256, sha(&[]));
                    let mut e = Vec::new();
                    $run!(c.get("empty", None, &mut e)).unwrap();
                    assert!(e.is_empty());

                    $run!(c.remove("b.txt")).unwrap();
                    assert_eq!(
                        $run!(c.stat("b.txt")).unwrap_err(),
                        Error::Server(ErrorCode::NOT_FOUND)
                    );
                    assert!(c.is_usable());
                    drop(c);
                    assert_eq!(w.dev.store.find("a.bin").map(|_| ()), Some(()));
                }
            }
        }

        #[test]
        fn server_errors_end_the_request_not_the_connection() {
            let cfg = config(Mode::Sealed);
            let mut mem = arena(&cfg);
            let mut w = wire(3, Mode::Sealed);
            let mut c = connect(&mut w, cfg, &mut mem).unwrap();
            let e = $run!(c.stat("nope")).unwrap_err();
            assert_eq!(e, Error::Server(ErrorCode::NOT_FOUND));
            assert_eq!(e.code(), Some(ErrorCode::NOT_FOUND));
            assert!(!e.is_fatal());
            assert!(c.message().contains("no such file"), "{}", c.message());
            let mut sink: Vec<u8> = Vec::new();
            assert_eq!(
                $run!(c.get("nope", None, &mut sink)).unwrap_err(),
                Error::Server(ErrorCode::NOT_FOUND)
            );
            assert_eq!(
                $run!(c.remove("nope")).unwrap_err(),
                Error::Server(ErrorCode::NOT_FOUND)
            );
            let o = PutOptions::default();
            $run!(c.put_slice("x", b"one", o)).unwrap();
            assert_eq!(
                $run!(c.put_slice("x", b"two", o)).unwrap_err(),
                Error::Server(ErrorCode::EXISTS)
            );
            assert_eq!(
                $run!(c.exec(Command::Shell("frobnicate"), None, |_, _| ())).unwrap_err(),
                Error::Server(ErrorCode::EXEC_FAILED)
            );
            assert!(c.message().contains("no such command"), "{}", c.message());
            assert_eq!(
                $run!(c.put_slice("../etc/passwd", b"x", o))
                    .unwrap_err()
                    .code(),
                Some(ErrorCode::PATH_REFUSED)
            );
            // Too large for the server's store: refused before any data.
            let big = vec![0u8; 300 * 1024];
            assert_eq!(
                $run!(c.put_slice("big", &big, o)).unwrap_err(),
                Error::Server(ErrorCode::NO_SPACE)
            );
            // A request longer than the negotiated header limit is not sent.
            let long = "x".repeat(600);
            assert_eq!(
                $run!(c.stat(&long)).unwrap_err(),
                Error::Request(RequestError::TooLarge)
            );
            assert_eq!($run!(c.ping(5)).unwrap(), 5);
            assert!(c.is_usable());
            assert_eq!(c.message(), "");
        }

        #[test]
        fn handshake_failures_say_why() {
            // A key here, none on the server: refused on this side.
            let cfg = config(Mode::Sealed);
            let mut mem = arena(&cfg);
            let mut w = wire(1, Mode::Open);
            let e = connect(&mut w, cfg, &mut mem).unwrap_err();
            assert_eq!(e, Error::Handshake(HandshakeError::NotAuthenticated));
            // No key here, a key there.
            let cfg = config(Mode::Open);
            let mut mem = arena(&cfg);
            let mut w = wire(1, Mode::Sealed);
            let e = connect(&mut w, cfg, &mut mem).unwrap_err();
            assert_eq!(e, Error::Refused(ErrorCode::AUTH_REQUIRED));
            // No key here, a key there, in two steps: the server's words are kept.
            let cfg = config(Mode::Open);
            let mut mem = arena(&cfg);
            let mut w = wire(1, Mode::Sealed);
            let clock = w.clock();
            let bufs = ClientBuffers::split(&mut mem, &cfg).unwrap();
            let mut c = Client::new(&mut w, cfg, bufs, clock).unwrap();
            assert!(c.session().is_none());
            assert_eq!(
                $run!(c.handshake([2; 16])).unwrap_err(),
                Error::Refused(ErrorCode::AUTH_REQUIRED)
            );
            assert!(c.message().contains("key"), "{}", c.message());
            assert_eq!($run!(c.handshake([3; 16])).unwrap_err(), Error::Closed);
            assert_eq!($run!(c.ping(1)).unwrap_err(), Error::Closed);
            // Another key.
            let cfg = ClientConfig {
                key: Some([7; 32]),
                ..config(Mode::Sealed)
            };
            let mut mem = arena(&cfg);
            let mut w = wire(1, Mode::Sealed);
            let e = connect(&mut w, cfg, &mut mem).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Refused(ErrorCode::AUTH_FAILED)
                        | Error::Handshake(HandshakeError::BadProof)
                ),
                "{e:?}"
            );
            // Encryption required, the server only seals.
            let cfg = config(Mode::Encrypted);
            let mut mem = arena(&cfg);
            let mut w = wire(1, Mode::Sealed);
            let e = connect(&mut w, cfg, &mut mem).unwrap_err();
            assert_eq!(e, Error::Handshake(HandshakeError::NoEncryption));
            // Too slow: the deadline passes.
            let cfg = ClientConfig {
                handshake_timeout_ms: 5_000,
                ..config(Mode::Open)
            };
            let mut mem = arena(&cfg);
            let mut w = wire(1, Mode::Open);
            w.slow = true;
            let e = connect(&mut w, cfg, &mut mem).unwrap_err();
            assert_eq!(e, Error::Timeout);
            // Nothing answers but the end of the stream.
            let cfg = config(Mode::Open);
            let mut mem = arena(&cfg);
            let mut w = wire(1, Mode::Open);
            w.eof = true;
            assert_eq!(connect(&mut w, cfg, &mut mem).unwrap_err(), Error::Closed);
            // Buffers too small.
            let cfg = config(Mode::Open);
            let mut w = wire(1, Mode::Open);
            let mut tiny = [0u8; 100];
            assert!(ClientBuffers::split(&mut tiny, &cfg).is_none());
            let (mut h, mut s, mut rx, mut tx) = ([0u8; 512], [0u8; 16], [0u8; 512], [0u8; 512]);
            let bufs = ClientBuffers {
                header: &mut h,
                staging: &mut s,
                frame: None,
                rx: &mut rx,
                tx: &mut tx,
            };
            let clock = w.clock();
            let e = $run!(Client::connect(&mut w, cfg, bufs, [1; 16], clock)).unwrap_err();
            assert_eq!(e, Error::Buffer);
        }

        #[test]
        fn a_cut_download_resumes_from_the_bytes_kept() {
            for mode in MODES {
                let cfg = config(mode);
                let mut mem = arena(&cfg);
                let mut w = wire(11, mode);
                let data = pattern(40_000);
                {
                    let mut c = connect(&mut w, cfg, &mut mem).unwrap();
                    $run!(c.put_slice("r.bin", &data, PutOptions::default())).unwrap();
                }
                w.reconnect();
                let mut have = Vec::new();
                {
                    let mut c = connect(&mut w, cfg, &mut mem).unwrap();
                    c.transport().cut_rx = Some(15_000);
                    let e = $run!(c.get_with("r.bin", None, |_, b| have.extend_from_slice(b)))
                        .unwrap_err();
                    assert_eq!(e, Error::Io(WireError::Cut), "{mode:?}");
                    assert!(!c.is_usable());
                    assert_eq!($run!(c.ping(1)).unwrap_err(), Error::Closed);
                }
                assert!(have.len() > 5_000 && have.len() < 15_000, "{}", have.len());
                assert_eq!(have[..], data[..have.len()]);
                w.reconnect();
                let mut c = connect(&mut w, cfg, &mut mem).unwrap();
                let resume = Resume {
                    offset: have.len() as u64,
                    prefix: Sha256::new_with_prefix(&have),
                };
                let t = $run!(c.get("r.bin", Some(resume), &mut have)).unwrap();
                assert_eq!(have, data);
                assert_eq!(t.size, data.len() as u64);
                assert!(t.offset > 0);
                assert_eq!(t.sha256, sha(&data));
                // A partial that is not the file's prefix is refused.
                let mut wrong = vec![0u8; 1000];
                let resume = Resume {
                    offset: 1000,
                    prefix: Sha256::new_with_prefix(&wrong),
                };
                assert_eq!(
                    $run!(c.get("r.bin", Some(resume), &mut wrong)).unwrap_err(),
                    Error::ResumeMismatch
                );
                assert_eq!(wrong.len(), 1000, "nothing was written");
                // A partial longer than the file: the server starts at 0,
                // which a sink that holds the partial cannot take (even when
                // the file is complete before the Cancel arrives).
                $run!(c.put_slice("small", b"tiny", PutOptions::default())).unwrap();
                let mut held = vec![7u8; 10];
                let resume = Resume {
                    offset: 10,
                    prefix: Sha256::new_with_prefix(&held),
                };
                assert_eq!(
                    $run!(c.get("small", Some(resume), &mut held)).unwrap_err(),
                    Error::ResumeMismatch
                );
                assert_eq!(held, [7u8; 10]);
                // A partial longer than the file: start over at 0 (get_with says where).
                let resume = Resume {
                    offset: 50_000,
                    prefix: Sha256::new(),
                };
                let mut starts = Vec::new();
                let t = $run!(c.get_with("r.bin", Some(resume), |at, _| starts.push(at))).unwrap();
                assert_eq!((starts[0], t.offset), (0, 0));
                assert_eq!($run!(c.ping(2)).unwrap(), 2);
            }
        }

        #[test]
        fn a_cut_upload_resumes_from_the_servers_partial() {
            for mode in MODES {
                let cfg = config(mode);
                let mut mem = arena(&cfg);
                let mut w = wire(17, mode);
                let data = pattern(60_000);
                {
                    let mut c = connect(&mut w, cfg, &mut mem).unwrap();
                    c.transport().cut_tx = Some(25_000);
                    let e = $run!(c.put_slice("k.bin", &data, PutOptions::default())).unwrap_err();
                    assert_eq!(e, Error::Io(WireError::Cut), "{mode:?}");
                }
                let kept = w.dev.store.partial("k.bin").expect("partial kept").written;
                assert!(kept > 10_000 && kept < 25_000, "{kept}");
                w.reconnect();
                let mut c = connect(&mut w, cfg, &mut mem).unwrap();
                // From a reader (read once: the prefix is hashed first).
                let opts = PutOptions {
                    force: false,
                    resume: true,
                };
                let t = $run!(c.put("k.bin", data.len() as u64, &data[..], opts)).unwrap();
                assert_eq!(
                    t,
                    Transfer {
                        size: data.len() as u64,
                        offset: kept,
                        sha256: sha(&data)
                    }
                );
                let mut back: Vec<u8> = Vec::new();
                $run!(c.get("k.bin", None, &mut back)).unwrap();
                assert_eq!(back, data);
                // A kept partial that differs from the source: refused.
                drop(c);
                w.reconnect();
                {
                    let mut c = connect(&mut w, cfg, &mut mem).unwrap();
                    c.transport().cut_tx = Some(20_000);
                    let f = PutOptions {
                        force: true,
                        resume: false,
                    };
                    $run!(c.put_slice("m.bin", &data, f)).unwrap_err();
                }
                w.reconnect();
                let mut c = connect(&mut w, cfg, &mut mem).unwrap();
                let other = pattern(60_001)[1..].to_vec();
                let opts = PutOptions {
                    force: true,
                    resume: true,
                };
                assert_eq!(
                    $run!(c.put_slice("m.bin", &other, opts)).unwrap_err(),
                    Error::ResumeMismatch
                );
                // ... and the upload without resume replaces it.
                let t = $run!(c.put_slice(
                    "m.bin",
                    &other,
                    PutOptions {
                        force: true,
                        resume: false
                    }
                ))
                .unwrap();
                assert_eq!((t.offset, t.sha256), (0, sha(&other)));
            }
        }

        #[test]
        fn a_closure_cancels_and_the_connection_goes_on() {
            for mode in MODES {
                let cfg = config(mode);
                let mut mem = arena(&cfg);
                let mut w = wire(23, mode);
                let mut c = connect(&mut w, cfg, &mut mem).unwrap();
                let data = pattern(50_000);
                $run!(c.put_slice("c.bin", &data, PutOptions::default())).unwrap();
                let mut pieces = 0;
                let e = $run!(c.get_with("c.bin", None, |_, _| {
                    pieces += 1;
                    Flow::Cancel
                }))
                .unwrap_err();
                assert_eq!(e, Error::Cancelled);
                assert_eq!(pieces, 1, "nothing is handed on after a cancel");
                let mut seen = 0;
                $run!(c.put_slice("d.bin", b"d", PutOptions::default())).unwrap();
                let e = $run!(c.list("", |_| {
                    seen += 1;
                    Flow::Cancel
                }));
                // The device answers a listing at once: it ended before the
                // Cancel arrived, but the closure saw only part of it.
                assert_eq!(e, Err(Error::Cancelled));
                assert_eq!(seen, 1);
                // A sink that fails cancels the download.
                let mut sink = FailingWriter {
                    got: Vec::new(),
                    ok: 3000,
                };
                assert_eq!(
                    $run!(c.get("c.bin", None, &mut sink)).unwrap_err(),
                    Error::Sink(embedded_io::ErrorKind::OutOfMemory)
                );
                assert_eq!(sink.got[..], data[..3000]);
                // A source that fails abandons the upload; nothing is committed.
                let src = FailingReader {
                    data: data.clone(),
                    ok: 7000,
                };
                let e = $run!(c.put("e.bin", data.len() as u64, src, PutOptions::default()))
                    .unwrap_err();
                assert_eq!(e, Error::Source(embedded_io::ErrorKind::InvalidData));
                // A source shorter than announced.
                let e =
                    $run!(c.put("e.bin", 5000, &data[..4000], PutOptions::default())).unwrap_err();
                assert_eq!(e, Error::Local(ErrorCode::CHANGED));
                assert_eq!(
                    $run!(c.stat("e.bin")).unwrap_err(),
                    Error::Server(ErrorCode::NOT_FOUND)
                );
                assert_eq!($run!(c.ping(9)).unwrap(), 9);
                let mut back: Vec<u8> = Vec::new();
                $run!(c.get("c.bin", None, &mut back)).unwrap();
                assert_eq!(back, data);
            }
        }

        #[test]
        fn the_server_closing_mid_transfer_is_reported() {
            let cfg = config(Mode::Sealed);
            let mut mem = arena(&cfg);
            let mut w = wire(29, Mode::Sealed);
            let data = pattern(30_000);
            let mut c = connect(&mut w, cfg, &mut mem).unwrap();
            $run!(c.put_slice("z", &data, PutOptions::default())).unwrap();
            let mut n = 0;
            let e = $run!(c.get_with("z", None, |_, b| {
                n += b.len();
                Flow::Continue
            }));
            assert!(e.is_ok());
            assert_eq!(n, data.len());
            c.transport().eof = true;
            assert_eq!($run!(c.ping(1)).unwrap_err(), Error::Closed);
            assert_eq!($run!(c.ping(1)).unwrap_err(), Error::Closed);
        }

        #[cfg(feature = "alloc")]
        #[test]
        fn the_alloc_conveniences() {
            let cfg = config(Mode::Encrypted);
            let mut mem = arena(&cfg);
            let mut w = wire(31, Mode::Encrypted);
            let mut c = connect(&mut w, cfg, &mut mem).unwrap();
            let data = pattern(12_345);
            $run!(c.put_slice("v.bin", &data, PutOptions::default())).unwrap();
            let (v, t) = $run!(c.get_vec("v.bin")).unwrap();
            assert_eq!((v, t.sha256), (data.clone(), sha(&data)));
            let l = $run!(c.list_vec("")).unwrap();
            assert_eq!(l.len(), 1);
            assert_eq!((l[0].name.as_str(), l[0].size), ("v.bin", 12_345));
            let o = $run!(c.exec_output(Command::Shell("echo x"), None)).unwrap();
            assert_eq!(
                (o.status, &o.stdout[..], &o.stderr[..]),
                (ExitStatus::Code(0), &b"x\n"[..], &b""[..])
            );
        }
    };
}

mod blocking_driver {
    use super::*;
    use crate::client::blocking::Client;

    macro_rules! run {
        ($e:expr) => {
            $e
        };
    }

    driver_tests!(run);
}

mod async_driver {
    use super::*;
    use crate::client::asynch::Client;

    macro_rules! run {
        ($e:expr) => {
            embassy_futures::block_on($e)
        };
    }

    driver_tests!(run);

    #[test]
    fn a_dropped_call_leaves_the_connection_closed() {
        let cfg = config(Mode::Open);
        let mut mem = arena(&cfg);
        let mut w = wire(37, Mode::Open);
        let mut c = connect(&mut w, cfg, &mut mem).unwrap();
        let data = pattern(150_000);
        {
            let fut = c.put_slice("p", &data, PutOptions::default());
            let mut fut = core::pin::pin!(fut);
            // Poll it until it waits once, then drop it.
            let mut polls = 0;
            while embassy_futures::poll_once(fut.as_mut()).is_pending() {
                polls += 1;
                if polls == 3 {
                    break;
                }
            }
            assert_eq!(polls, 3, "the put ended too soon to be dropped half-way");
        }
        assert_eq!(run!(c.ping(1)).unwrap_err(), Error::Closed);
    }
}

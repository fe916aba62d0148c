//! The hostile-input catalogue: bad inputs as data, each with the exact
//! answer a server must give, run against the real `tether serve` and the
//! simulated device alike (`tests/tests/hostile.rs`).
//!
//! A [`Case`] names what it sends ([`Act`]: raw bytes, frames the session
//! builds, or a short script of steps), at which [`Stage`] of a connection,
//! to which kind of server ([`Server`]), and what each side must answer
//! ([`Expect`]: the error code, request id and a phrase of its text, and
//! whether the connection then closes or goes on). After every case the
//! runner checks that a well-behaved client is still served, any
//! [`After`] conditions (an upload that must not have landed, a command
//! that must not have run), and that nothing outside the served root (on
//! the device: outside the files the cases may create) changed.

use std::net::Ipv4Addr;

use sha2::{Digest as _, Sha256};
use tether_proto::wire::{Flags, PREFIX_LEN};
use tether_proto::{Argv, Command, ErrorCode, Exec, Hello, Kind, Message};

use crate::peer::{header, prefix, raw_frame, Got, Peer, RecvError};

/// Which implementation a case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `tether serve` over TCP on 127.0.0.1.
    Host,
    /// The simulated device over the virtual wire.
    Device,
}

/// The server configuration a case needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Server {
    /// No key (host: `--allow-exec`).
    Plain,
    /// A pre-shared key (host: `--key-file`, `--allow-exec`).
    Keyed,
    /// No key, short deadlines (handshake 1 s, idle 2 s).
    Deadlines,
    /// A key and a short handshake deadline (1 s).
    KeyedDeadlines,
}

/// How far a connection gets before the case acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Just connected: nothing sent.
    Connected,
    /// Hello/HelloAck done (and Auth/AuthOk on a keyed server: sealed).
    Open,
}

/// What the connection does after an expected Error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// The server closes it.
    Close,
    /// It goes on: a Ping sent next is answered.
    Open,
}

/// What one side must answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Not run on this side.
    Skip,
    /// One Error frame: request id, code, a phrase of its text; then the
    /// connection closes or goes on.
    Error {
        /// Request id of the Error.
        id: u32,
        /// Its code.
        code: ErrorCode,
        /// Text it contains.
        phrase: &'static str,
        /// Afterwards.
        then: Then,
    },
    /// A successful reply of this kind and id first.
    Reply {
        /// Request id.
        id: u32,
        /// Kind.
        kind: Kind,
    },
    /// The server closes the connection without a frame.
    Closed,
    /// No reply at all: a Ping sent next is answered first.
    Nothing,
    /// The script's transfer succeeded (it checked the bytes).
    Ok,
}

/// Shorthand for an Error expectation.
pub const fn err(id: u32, code: ErrorCode, phrase: &'static str, then: Then) -> Expect {
    Expect::Error {
        id,
        code,
        phrase,
        then,
    }
}

/// What a case observed.
#[derive(Debug)]
pub enum Observed {
    /// A frame.
    Frame(Got),
    /// The connection closed without a frame.
    Closed,
    /// A script completed a transfer and checked it.
    Done,
}

/// What the fixture provides a script.
#[derive(Debug, Clone)]
pub struct Fx {
    /// Which side.
    pub side: Side,
    /// The pre-shared key of keyed servers.
    pub key: Option<[u8; 32]>,
}

/// A step-by-step exchange on one connection.
pub type Script = fn(&mut Peer<'_>, &Fx) -> Result<Observed, String>;
/// The first half of a two-connection case: bytes to take to the second.
pub type Capture = fn(&mut Peer<'_>, &Fx) -> Result<Vec<u8>, String>;
/// The second half.
pub type Replay = fn(&mut Peer<'_>, &Fx, Vec<u8>) -> Result<Observed, String>;

/// What a case sends.
#[derive(Clone)]
pub enum Act {
    /// These bytes as they are (never sealed).
    Bytes(Vec<u8>),
    /// These bytes, then the write half is closed.
    BytesThenClose(Vec<u8>),
    /// Frames around these header bytes and bodies, built by the session
    /// (sealed on a sealed session).
    Frames(Vec<(Vec<u8>, Vec<u8>)>),
    /// A script.
    Script(Script),
    /// Capture on one connection (at the case's stage), replay on a second
    /// (at the given stage).
    TwoSessions(Capture, Stage, Replay),
}

impl std::fmt::Debug for Act {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Act::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Act::BytesThenClose(b) => write!(f, "BytesThenClose({} bytes)", b.len()),
            Act::Frames(v) => write!(f, "Frames({})", v.len()),
            Act::Script(_) => write!(f, "Script"),
            Act::TwoSessions(..) => write!(f, "TwoSessions"),
        }
    }
}

/// A condition checked by a well-behaved client after the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Nothing exists under this name (an upload did not land, a command did not run).
    Missing(&'static str),
    /// This file holds exactly these bytes.
    Content(&'static str, Vec<u8>),
    /// Running this argv prints output containing this text (device commands).
    ExecOutput(&'static [&'static str], &'static str),
}

/// One hostile input.
#[derive(Debug, Clone)]
pub struct Case {
    /// Unique name.
    pub name: &'static str,
    /// The server it needs.
    pub server: Server,
    /// Where the connection is when the case acts.
    pub stage: Stage,
    /// What it sends.
    pub act: Act,
    /// The host's answer.
    pub host: Expect,
    /// The device's answer.
    pub device: Expect,
    /// Checks afterwards.
    pub after: Vec<After>,
    /// Host only: the last octet of the 127.0.0.x address to connect from
    /// (failed authentications count per address).
    pub from: u8,
}

impl Case {
    /// What `side` must answer.
    pub fn expect(&self, side: Side) -> &Expect {
        match side {
            Side::Host => &self.host,
            Side::Device => &self.device,
        }
    }
    /// The host address to connect from.
    pub fn from_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, self.from)
    }
}

fn case(name: &'static str, server: Server, stage: Stage, act: Act, both: Expect) -> Case {
    Case {
        name,
        server,
        stage,
        act,
        host: both.clone(),
        device: both,
        after: Vec::new(),
        from: 1,
    }
}

impl Case {
    fn device(mut self, e: Expect) -> Self {
        self.device = e;
        self
    }
    fn host(mut self, e: Expect) -> Self {
        self.host = e;
        self
    }
    fn after(mut self, a: After) -> Self {
        self.after.push(a);
        self
    }
    fn from(mut self, octet: u8) -> Self {
        self.from = octet;
        self
    }
}

// ---------------------------------------------------------------------
// Fixture files every target holds in its root (the runners create them).

/// `hello.txt`'s content.
pub const HELLO: &[u8] = b"hello, world\n";
/// Size of `big.bin` on the host (a Get of it stays in flight while unread).
pub const BIG_HOST: usize = 64 << 20;
/// Size of `big.bin` on the device.
pub const BIG_DEVICE: usize = 200 * 1024;

/// Bytes of `big.bin` and the one-chunk files: a fixed pattern.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ---------------------------------------------------------------------
// Helpers for scripts.

fn recv(p: &mut Peer<'_>) -> Result<Observed, String> {
    match p.recv() {
        Ok(g) => Ok(Observed::Frame(g)),
        Err(RecvError::Closed) | Err(RecvError::Eof) => Ok(Observed::Closed),
        Err(RecvError::Io(e)) if e.contains("reset") => Ok(Observed::Closed),
        Err(e) => Err(format!("reading the reply: {e:?}")),
    }
}

/// Read one frame; `Ok(Err(observed))` when it is not a `kind` of `id`
/// (an Error, or the end), which the script then reports.
fn want(p: &mut Peer<'_>, id: u32, kind: Kind) -> Result<Result<Got, Observed>, String> {
    match recv(p)? {
        Observed::Frame(g) if g.id == id && g.kind() == kind => {
            if p.sealed() && g.tag_ok != Some(true) {
                return Err(format!("{} did not verify", g.describe()));
            }
            Ok(Ok(g))
        }
        other => Ok(Err(other)),
    }
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Upload `data` to `path` announcing `size`, sending Done with `bytes`
/// and `digest`; returns what ends the request.
fn put_with(
    p: &mut Peer<'_>,
    path: &str,
    size: u64,
    data: &[u8],
    bytes: u64,
    digest: Option<[u8; 32]>,
) -> Result<Observed, String> {
    let id = 40;
    p.request(
        id,
        Message::Put {
            path,
            size,
            force: false,
            resume: false,
        },
        &[],
    )?;
    if let Err(o) = want(p, id, Kind::PutReady)? {
        return Ok(o);
    }
    for c in data.chunks(p.max_chunk as usize) {
        p.request(id, Message::Data, c)?;
    }
    p.request(
        id,
        Message::Done {
            bytes,
            sha256: digest,
        },
        &[],
    )?;
    match want(p, id, Kind::Done)? {
        Ok(g) => match g.message() {
            Message::Done {
                bytes: b,
                sha256: Some(d),
            } if b == data.len() as u64 && d == sha(data) => Ok(Observed::Done),
            m => Err(format!("the server confirmed {m:?}")),
        },
        Err(o) => Ok(o),
    }
}

/// Upload `data` to `path` correctly.
pub fn put(p: &mut Peer<'_>, path: &str, data: &[u8]) -> Result<Observed, String> {
    put_with(
        p,
        path,
        data.len() as u64,
        data,
        data.len() as u64,
        Some(sha(data)),
    )
}

/// Download `path`, requiring exactly `expect` (checked against the digest too).
pub fn get_exact(p: &mut Peer<'_>, path: &str, expect: &[u8]) -> Result<Observed, String> {
    let id = 41;
    p.request(id, Message::Get { path, offset: 0 }, &[])?;
    if let Err(o) = want(p, id, Kind::FileInfo)? {
        return Ok(o);
    }
    let mut got = Vec::new();
    loop {
        let g = p.recv_checked()?;
        if g.id != id {
            return Err(format!("unexpected {}", g.describe()));
        }
        match g.message() {
            Message::Data => got.extend_from_slice(&g.body),
            Message::Done {
                bytes,
                sha256: Some(d),
            } => {
                if got != expect || bytes != expect.len() as u64 || d != sha(expect) {
                    return Err(format!(
                        "get {path}: {} bytes (Done says {bytes}), expected {}",
                        got.len(),
                        expect.len()
                    ));
                }
                return Ok(Observed::Done);
            }
            _ => return Ok(Observed::Frame(g)),
        }
    }
}

fn frames(list: Vec<(u32, Message<'_>, Vec<u8>)>) -> Act {
    Act::Frames(
        list.into_iter()
            .map(|(id, m, body)| (header(id, m), body))
            .collect(),
    )
}

fn one(id: u32, m: Message<'_>) -> Act {
    frames(vec![(id, m, Vec::new())])
}

fn hello_header(agent: &str) -> Vec<u8> {
    header(
        0,
        Message::Hello(Hello {
            version: 1,
            max_header: 8192,
            max_chunk: 256 * 1024,
            caps: tether_proto::Caps::empty(),
            nonce: [3; 16],
            agent,
        }),
    )
}

fn hello_bytes() -> Vec<u8> {
    raw_frame(&hello_header("hostile"), &[])
}

/// A valid Hello whose header is exactly `len` bytes.
fn hello_of_len(len: usize) -> Vec<u8> {
    let base = hello_header("").len();
    let mut n = len.saturating_sub(base + 1);
    loop {
        let h = hello_header(&"a".repeat(n));
        match h.len().cmp(&len) {
            std::cmp::Ordering::Equal => return raw_frame(&h, &[]),
            std::cmp::Ordering::Less => n += 1,
            std::cmp::Ordering::Greater => n -= 1,
        }
    }
}

fn with_byte(mut f: Vec<u8>, at: usize, v: u8) -> Vec<u8> {
    f[at] = v;
    f
}

/// A Ping frame (id 5) whose prefix claims other values (checksum recomputed).
fn ping_prefix_with(body_len: u64, flags: u8) -> Vec<u8> {
    let h = header(5, Message::Ping { stamp: 1 });
    let mut f = prefix(&h, body_len, flags);
    f.extend_from_slice(&h);
    f
}

fn exec_argv<'a>(argv: &[&str], buf: &'a mut Vec<u8>) -> Message<'a> {
    let need: usize = argv.iter().map(|a| a.len() + 1).sum();
    buf.resize(need, 0);
    let a = Argv::join(argv, buf).expect("argv");
    Message::Exec(Exec {
        command: Command::Argv(a),
        timeout_ms: None,
    })
}

// ---------------------------------------------------------------------
// Scripts.

fn s_header_at_limit(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    // An Echo whose header is exactly the negotiated limit.
    let limit = p.max_header as usize;
    let mut n = limit - 8;
    let text = loop {
        let t = "e".repeat(n);
        let len = header(5, Message::Echo { text: &t }).len();
        if len == limit {
            break t;
        }
        if len < limit {
            n += 1
        } else {
            n -= 1
        }
    };
    p.request(5, Message::Echo { text: &text }, &[])?;
    recv(p)
}

fn s_header_past_limit(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    // Only the prefix: the limit is enforced before a byte of header is read.
    let h = vec![0u8; p.max_header as usize + 1];
    p.send(&prefix(&h, 0, 0))?;
    recv(p)
}

fn s_body_past_chunk(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let h = header(5, Message::Data);
    let mut f = prefix(&h, u64::from(p.max_chunk) + 1, 0);
    f.extend_from_slice(&h);
    p.send(&f)?;
    recv(p)
}

fn s_reused_id(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    // A Get of big.bin stays in flight while unread; a second request with
    // its id is refused. Then the Get is cancelled and read to its end.
    let mut b = frame_of(
        p,
        9,
        Message::Get {
            path: "big.bin",
            offset: 0,
        },
    );
    b.extend(frame_of(p, 9, Message::Stat { path: "hello.txt" }));
    p.send(&b)?;
    let mut refusal = None;
    loop {
        let g = p.recv_checked()?;
        if g.id != 9 {
            return Err(format!("unexpected {}", g.describe()));
        }
        match g.message() {
            Message::FileInfo { .. } | Message::Data => {}
            Message::Error { code, .. } if refusal.is_none() && code != ErrorCode::CANCELLED => {
                refusal = Some(g);
                p.request(0, Message::Cancel { target: 9 }, &[])?;
            }
            Message::Error { .. } | Message::Done { .. } => break,
            _ => return Err(format!("unexpected {}", g.describe())),
        }
    }
    refusal
        .map(Observed::Frame)
        .ok_or_else(|| "the reused id was not refused".to_string())
}

fn frame_of(p: &mut Peer<'_>, id: u32, m: Message<'_>) -> Vec<u8> {
    p.frame(id, m, &[])
}

/// Upload `data`, then download it again: byte-exact both ways.
fn round_trip(p: &mut Peer<'_>, path: &str, data: &[u8]) -> Result<Observed, String> {
    match put(p, path, data)? {
        Observed::Done => get_exact(p, path, data),
        o => Ok(o),
    }
}

fn s_put_empty(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    round_trip(p, "empty-up.bin", b"")
}

fn s_put_one_chunk(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let data = pattern(p.max_chunk as usize, 7);
    round_trip(p, "chunk-up.bin", &data)
}

fn s_put_chunk_plus_one(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let data = pattern(p.max_chunk as usize + 1, 9);
    round_trip(p, "chunk1-up.bin", &data)
}

fn s_get_empty(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    get_exact(p, "empty.bin", b"")
}

fn s_get_one_chunk(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let data = pattern(p.max_chunk as usize, 1);
    get_exact(p, "chunk.bin", &data)
}

fn s_put_wrong_digest(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    put_with(p, "wrong-digest.bin", 5, b"12345", 5, Some(sha(b"54321")))
}

fn s_put_no_digest(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    put_with(p, "no-digest.bin", 5, b"12345", 5, None)
}

fn s_put_too_many(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    put_with(p, "too-many.bin", 4, b"123456", 4, Some(sha(b"1234")))
}

fn s_put_too_few(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    put_with(p, "too-few.bin", 6, b"1234", 6, Some(sha(b"123456")))
}

fn s_put_done_lies(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    put_with(p, "done-lies.bin", 4, b"1234", 3, Some(sha(b"1234")))
}

fn s_put_exists(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    put(p, "hello.txt", b"replaced?")
}

fn s_put_huge_size(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    put_with(p, "huge.bin", 1 << 63, b"", 1 << 63, Some(sha(b"")))
}

fn s_put_literal_percent(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    put(p, "%2e%2e%2fescape.txt", b"stays inside")
}

fn s_put_truncated_data(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let id = 40;
    p.request(
        id,
        Message::Put {
            path: "cut.bin",
            size: 100,
            force: false,
            resume: false,
        },
        &[],
    )?;
    if let Err(o) = want(p, id, Kind::PutReady)? {
        return Ok(o);
    }
    let f = p.frame(id, Message::Data, &[7u8; 100]);
    p.send(&f[..f.len() - 60])?;
    p.close_write();
    recv(p)
}

fn s_flipped_body(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let id = 40;
    p.request(
        id,
        Message::Put {
            path: "flipped.bin",
            size: 4,
            force: false,
            resume: false,
        },
        &[],
    )?;
    if let Err(o) = want(p, id, Kind::PutReady)? {
        return Ok(o);
    }
    let mut f = p.frame(id, Message::Data, b"data");
    let n = f.len();
    // The body is not covered by the checksum: only the tag sees this.
    f[n - tether_proto::wire::TAG_LEN - 2] ^= 0x01;
    p.send(&f)?;
    let done = p.frame(
        id,
        Message::Done {
            bytes: 4,
            sha256: Some(sha(b"daua")),
        },
        &[],
    );
    let _ = p.send(&done);
    recv(p)
}

fn s_flipped_tag(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let mut f = p.frame(5, Message::Ping { stamp: 1 }, &[]);
    let n = f.len();
    f[n - 1] ^= 0x80;
    p.send(&f)?;
    recv(p)
}

fn s_header_altered_crc_fixed(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    // An attacker changes the path and recomputes the CRC (it is no MAC).
    let f = p.frame(5, Message::Stat { path: "hello.txt" }, &[]);
    let hl = u16::from_le_bytes([f[4], f[5]]) as usize;
    let mut h = f[PREFIX_LEN..PREFIX_LEN + hl].to_vec();
    let at = h.len() - 1;
    h[at] = b'x';
    let mut g = prefix(&h, 0, Flags::SEALED.bits());
    g.extend_from_slice(&h);
    g.extend_from_slice(&f[PREFIX_LEN + hl..]);
    p.send(&g)?;
    recv(p)
}

fn s_replayed(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let f = p.frame(5, Message::Ping { stamp: 1 }, &[]);
    p.send(&f)?;
    if let Err(o) = want(p, 5, Kind::Pong)? {
        return Err(format!("the original frame was not served: {o:?}"));
    }
    p.send(&f)?;
    recv(p)
}

fn s_reordered(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let a = p.frame(5, Message::Ping { stamp: 1 }, &[]);
    let b = p.frame(6, Message::Ping { stamp: 2 }, &[]);
    p.send(&b)?;
    p.send(&a)?;
    recv(p)
}

fn s_dropped(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let _lost = p.frame(5, Message::Ping { stamp: 1 }, &[]);
    let b = p.frame(6, Message::Ping { stamp: 2 }, &[]);
    p.send(&b)?;
    recv(p)
}

fn s_reflected(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    // Send the server's own sealed Pong back to it (sealed with the other
    // direction's key).
    p.request(5, Message::Ping { stamp: 1 }, &[])?;
    let g = match want(p, 5, Kind::Pong)? {
        Ok(g) => g,
        Err(o) => return Err(format!("no Pong: {o:?}")),
    };
    let _ = p.frame(6, Message::Ping { stamp: 2 }, &[]);
    p.send(&g.raw)?;
    recv(p)
}

fn s_unsealed_after_auth(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    p.send(&crate::peer::frame(5, Message::Ping { stamp: 1 }, &[]))?;
    recv(p)
}

fn s_truncated_sealed_done(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let id = 40;
    p.request(
        id,
        Message::Put {
            path: "truncated-done.bin",
            size: 4,
            force: false,
            resume: false,
        },
        &[],
    )?;
    if let Err(o) = want(p, id, Kind::PutReady)? {
        return Ok(o);
    }
    p.request(id, Message::Data, b"abcd")?;
    let done = p.frame(
        id,
        Message::Done {
            bytes: 4,
            sha256: Some(sha(b"abcd")),
        },
        &[],
    );
    p.send(&done[..done.len() - 1])?;
    p.close_write();
    recv(p)
}

fn s_tampered_exec_host(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let mut buf = Vec::new();
    let m = exec_argv(&["touch", "pwned"], &mut buf);
    let mut f = p.frame(5, m, &[]);
    let n = f.len();
    f[n - 3] ^= 0x10;
    p.send(&f)?;
    recv(p)
}

fn s_tampered_exec_device(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let mut buf = Vec::new();
    let m = exec_argv(&["led", "on"], &mut buf);
    let mut f = p.frame(5, m, &[]);
    let n = f.len();
    f[n - 3] ^= 0x10;
    p.send(&f)?;
    recv(p)
}

fn s_before_auth(p: &mut Peer<'_>, fx: &Fx) -> Result<Observed, String> {
    hello_ack_only(p, fx)?;
    p.request(5, Message::Ping { stamp: 1 }, &[])?;
    recv(p)
}

fn s_sealed_before_auth(p: &mut Peer<'_>, fx: &Fx) -> Result<Observed, String> {
    hello_ack_only(p, fx)?;
    let h = header(5, Message::Stat { path: "hello.txt" });
    let mut f = prefix(&h, 0, Flags::SEALED.bits());
    f.extend_from_slice(&h);
    f.extend_from_slice(&[0xaa; 16]);
    p.send(&f)?;
    recv(p)
}

fn s_auth_with_body(p: &mut Peer<'_>, fx: &Fx) -> Result<Observed, String> {
    hello_ack_only(p, fx)?;
    let h = header(0, Message::Auth(tether_proto::Proof { mac: [1; 32] }));
    p.send(&raw_frame(&h, b"xx"))?;
    recv(p)
}

/// Send a Hello offering authentication and read the HelloAck; stop there.
fn hello_ack_only(p: &mut Peer<'_>, fx: &Fx) -> Result<(), String> {
    let hs = tether_proto::handshake::ClientHandshake::new(
        fx.key,
        [9; 16],
        8192,
        256 * 1024,
        tether_proto::Caps::empty(),
        "hostile",
    );
    p.request(0, Message::Hello(hs.hello().clone()), &[])?;
    match want(p, 0, Kind::HelloAck)? {
        Ok(_) => Ok(()),
        Err(o) => Err(format!("no HelloAck: {o:?}")),
    }
}

fn s_wrong_proof(p: &mut Peer<'_>, fx: &Fx) -> Result<Observed, String> {
    hello_ack_only(p, fx)?;
    p.request(
        0,
        Message::Auth(tether_proto::Proof { mac: [0x42; 32] }),
        &[],
    )?;
    recv(p)
}

fn s_auth_without_seal(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let h = header(
        0,
        Message::Hello(Hello {
            version: 1,
            max_header: 8192,
            max_chunk: 256 * 1024,
            caps: tether_proto::Caps::AUTH_PSK,
            nonce: [4; 16],
            agent: "no-seal",
        }),
    );
    p.send(&raw_frame(&h, &[]))?;
    recv(p)
}

fn c_handshake_frames(p: &mut Peer<'_>, fx: &Fx) -> Result<Vec<u8>, String> {
    // A genuine client's Hello and Auth, as an eavesdropper records them.
    let mut hs = tether_proto::handshake::ClientHandshake::new(
        fx.key,
        [0x11; 16],
        8192,
        256 * 1024,
        tether_proto::Caps::empty(),
        "victim",
    );
    let hello = p.frame(0, Message::Hello(hs.hello().clone()), &[]);
    p.send(&hello)?;
    let g = p.recv().map_err(|e| format!("no HelloAck: {e:?}"))?;
    let Message::HelloAck(ack) = g.message() else {
        return Err(format!("got {}", g.describe()));
    };
    let proof = hs
        .handle_hello_ack(&ack)
        .map_err(|e| e.to_string())?
        .ok_or("the server did not ask for Auth")?;
    let auth = p.frame(0, Message::Auth(proof), &[]);
    p.send(&auth)?;
    let g = p.recv().map_err(|e| format!("no AuthOk: {e:?}"))?;
    if g.kind() != Kind::AuthOk {
        return Err(format!("got {}", g.describe()));
    }
    let mut out = (hello.len() as u32).to_le_bytes().to_vec();
    out.extend(hello);
    out.extend(auth);
    Ok(out)
}

fn r_replay_handshake(p: &mut Peer<'_>, _: &Fx, b: Vec<u8>) -> Result<Observed, String> {
    let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let (hello, auth) = b[4..].split_at(n);
    p.send(hello)?;
    match want(p, 0, Kind::HelloAck)? {
        Ok(_) => {}
        Err(o) => return Err(format!("no HelloAck: {o:?}")),
    }
    p.send(auth)?;
    recv(p)
}

fn c_sealed_stat(p: &mut Peer<'_>, _: &Fx) -> Result<Vec<u8>, String> {
    Ok(p.frame(5, Message::Stat { path: "hello.txt" }, &[]))
}

fn r_send(p: &mut Peer<'_>, _: &Fx, b: Vec<u8>) -> Result<Observed, String> {
    p.send(&b)?;
    recv(p)
}

fn s_half_hello_then_silence(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let h = hello_bytes();
    p.send(&h[..h.len() / 2])?;
    recv(p)
}

fn s_wait(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    recv(p)
}

fn s_hello_then_silence(p: &mut Peer<'_>, fx: &Fx) -> Result<Observed, String> {
    hello_ack_only(p, fx)?;
    recv(p)
}

// ---------------------------------------------------------------------
// The catalogue.

/// Every case.
pub fn catalogue() -> Vec<Case> {
    use ErrorCode as C;
    use Server::*;
    use Stage::*;
    use Then::{Close, Open as Stays};
    let hello = hello_bytes();
    let mut v = vec![
        // --- truncated frames, then the client closes ---
        case(
            "truncated after 1 byte",
            Plain,
            Connected,
            Act::BytesThenClose(hello[..1].to_vec()),
            Expect::Closed,
        ),
        case(
            "truncated inside the prefix",
            Plain,
            Connected,
            Act::BytesThenClose(hello[..10].to_vec()),
            Expect::Closed,
        ),
        case(
            "truncated before the checksum ends",
            Plain,
            Connected,
            Act::BytesThenClose(hello[..17].to_vec()),
            Expect::Closed,
        ),
        case(
            "truncated inside the header",
            Plain,
            Connected,
            Act::BytesThenClose(hello[..PREFIX_LEN + 5].to_vec()),
            Expect::Closed,
        ),
        case(
            "truncated request after Hello",
            Plain,
            Open,
            Act::BytesThenClose(
                crate::peer::frame(5, Message::Stat { path: "hello.txt" }, &[])[..20].to_vec(),
            ),
            Expect::Closed,
        ),
        // --- bad prefixes ---
        case(
            "bad magic (an HTTP request)",
            Plain,
            Connected,
            Act::Bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            err(0, C::BAD_FRAME, "magic", Close),
        ),
        case(
            "bad magic (bytes swapped)",
            Plain,
            Connected,
            Act::Bytes(with_byte(with_byte(hello.clone(), 0, b'H'), 1, b'T')),
            err(0, C::BAD_FRAME, "magic", Close),
        ),
        case(
            "bad version 2",
            Plain,
            Connected,
            Act::Bytes(with_byte(hello.clone(), 2, 2)),
            err(0, C::UNSUPPORTED_VERSION, "version 2", Close),
        ),
        case(
            "bad version 0",
            Plain,
            Connected,
            Act::Bytes(with_byte(hello.clone(), 2, 0)),
            err(0, C::UNSUPPORTED_VERSION, "version 0", Close),
        ),
        case(
            "reserved flag bit 1",
            Plain,
            Connected,
            Act::Bytes(with_byte(hello.clone(), 3, 0x02)),
            err(0, C::UNKNOWN_FLAGS, "0x02", Close),
        ),
        case(
            "reserved flag bit 7",
            Plain,
            Connected,
            Act::Bytes(with_byte(hello.clone(), 3, 0x80)),
            err(0, C::UNKNOWN_FLAGS, "0x80", Close),
        ),
        case(
            "bad checksum",
            Plain,
            Connected,
            Act::Bytes(with_byte(hello.clone(), 14, hello[14] ^ 0xff)),
            err(0, C::BAD_FRAME, "checksum", Close),
        ),
        case(
            "header_len 0",
            Plain,
            Connected,
            Act::Bytes({
                let mut p = prefix(&[], 0, 0);
                p.extend_from_slice(&[0, 0]);
                p
            }),
            err(0, C::BAD_FRAME, "empty header", Close),
        ),
        case(
            "header exactly the handshake limit (512)",
            Plain,
            Connected,
            Act::Bytes(hello_of_len(512)),
            Expect::Reply {
                id: 0,
                kind: Kind::HelloAck,
            },
        ),
        case(
            "header one past the handshake limit",
            Plain,
            Connected,
            Act::Bytes(prefix(&[0u8; 513], 0, 0)),
            err(0, C::HEADER_TOO_LARGE, "513", Close),
        ),
        case(
            "header_len 65535",
            Plain,
            Connected,
            Act::Bytes(prefix(&[0u8; 65535], 0, 0)),
            err(0, C::HEADER_TOO_LARGE, "65535", Close),
        ),
        case(
            "body_len 2^63 before Hello",
            Plain,
            Connected,
            Act::Bytes(prefix(&hello_header("x"), 1 << 63, 0)),
            err(0, C::BODY_TOO_LARGE, "9223372036854775808", Close),
        ),
        // --- the handshake ---
        case(
            "a request before Hello",
            Plain,
            Connected,
            one(5, Message::Ping { stamp: 1 }),
            err(0, C::UNEXPECTED, "Hello", Close),
        ),
        case(
            "Hello with a body",
            Plain,
            Connected,
            Act::Bytes(raw_frame(&hello_header("x"), b"body")),
            err(0, C::UNEXPECTED, "Hello", Close),
        ),
        case(
            "Hello announcing version 0",
            Plain,
            Connected,
            Act::Bytes(raw_frame(
                &{
                    let mut h = hello_header("x");
                    h[2] = 0;
                    h
                },
                &[],
            )),
            err(0, C::UNSUPPORTED_VERSION, "version 0", Close),
        ),
        case(
            "Hello with limits below 64 bytes",
            Plain,
            Connected,
            one(
                0,
                Message::Hello(Hello {
                    version: 1,
                    max_header: 10,
                    max_chunk: 10,
                    caps: tether_proto::Caps::empty(),
                    nonce: [0; 16],
                    agent: "tiny",
                }),
            ),
            err(0, C::BAD_LENGTH, "64", Close),
        ),
        case(
            "Hello that is not valid postcard",
            Plain,
            Connected,
            Act::Bytes(raw_frame(&[0, 0, 1, 0x80], &[])),
            err(0, C::INVALID_HEADER, "", Close),
        ),
        case(
            "Hello with trailing header bytes",
            Plain,
            Connected,
            Act::Bytes(raw_frame(
                &{
                    let mut h = hello_header("x");
                    h.push(0);
                    h
                },
                &[],
            )),
            err(0, C::INVALID_HEADER, "", Close),
        ),
        case(
            "second Hello",
            Plain,
            Open,
            Act::Bytes(hello.clone()),
            err(0, C::UNEXPECTED, "Hello", Stays),
        ),
        case(
            "Auth on a server without a key",
            Plain,
            Open,
            one(0, Message::Auth(tether_proto::Proof { mac: [1; 32] })),
            err(0, C::UNEXPECTED, "Auth", Stays),
        ),
        // --- lengths after Hello ---
        case(
            "header exactly the negotiated limit",
            Plain,
            Open,
            Act::Script(s_header_at_limit),
            Expect::Reply {
                id: 5,
                kind: Kind::EchoReply,
            },
        ),
        case(
            "header one past the negotiated limit",
            Plain,
            Open,
            Act::Script(s_header_past_limit),
            err(0, C::HEADER_TOO_LARGE, "exceeds", Close),
        ),
        case(
            "body_len 2^63",
            Plain,
            Open,
            Act::Bytes({
                let h = header(5, Message::Data);
                let mut f = prefix(&h, 1 << 63, 0);
                f.extend(h);
                f
            }),
            err(0, C::BODY_TOO_LARGE, "9223372036854775808", Close),
        ),
        case(
            "body_len 2^64-1",
            Plain,
            Open,
            Act::Bytes({
                let h = header(5, Message::Data);
                let mut f = prefix(&h, u64::MAX, 0);
                f.extend(h);
                f
            }),
            err(0, C::BODY_TOO_LARGE, "18446744073709551615", Close),
        ),
        case(
            "body one past the chunk limit",
            Plain,
            Open,
            Act::Script(s_body_past_chunk),
            err(0, C::BODY_TOO_LARGE, "exceeds", Close),
        ),
        case(
            "a body on a kind without one",
            Plain,
            Open,
            Act::Bytes({
                let mut f = ping_prefix_with(4, 0);
                f.extend_from_slice(b"junk");
                f
            }),
            err(5, C::UNEXPECTED, "body", Stays),
        ),
        // --- headers that do not parse ---
        case(
            "unknown kind 26",
            Plain,
            Open,
            Act::Frames(vec![(vec![5, 26], vec![])]),
            err(5, C::UNKNOWN_KIND, "", Stays),
        ),
        case(
            "unknown kind 65535",
            Plain,
            Open,
            Act::Frames(vec![(vec![5, 0xff, 0xff, 0x03], vec![])]),
            err(5, C::UNKNOWN_KIND, "", Stays),
        ),
        case(
            "string length past the header",
            Plain,
            Open,
            Act::Frames(vec![(vec![5, 6, 100, b'a', b'b', b'c'], vec![])]),
            err(5, C::INVALID_HEADER, "", Stays),
        ),
        case(
            "string not UTF-8",
            Plain,
            Open,
            Act::Frames(vec![(vec![5, 6, 2, 0xff, 0xfe], vec![])]),
            err(5, C::INVALID_HEADER, "", Stays),
        ),
        case(
            "trailing header bytes",
            Plain,
            Open,
            Act::Frames(vec![(vec![5, 4, 1, 0], vec![])]),
            err(5, C::INVALID_HEADER, "", Stays),
        ),
        case(
            "overlong varint request id",
            Plain,
            Open,
            Act::Frames(vec![(
                vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 4, 1],
                vec![],
            )]),
            err(0, C::INVALID_HEADER, "", Stays),
        ),
        case(
            "request id varint past u32",
            Plain,
            Open,
            Act::Frames(vec![(vec![0xff, 0xff, 0xff, 0xff, 0x7f, 4, 1], vec![])]),
            err(0, C::INVALID_HEADER, "", Stays),
        ),
        case(
            "overlong varint u64 field",
            Plain,
            Open,
            Act::Frames(vec![(
                {
                    let mut h = vec![5, 4];
                    h.extend([0xff; 10]);
                    h.push(0x7f);
                    h
                },
                vec![],
            )]),
            err(5, C::INVALID_HEADER, "", Stays),
        ),
        case(
            "bool field of 2",
            Plain,
            Open,
            Act::Frames(vec![(vec![5, 0x16, 1, b'x', 1, 2, 0], vec![])]),
            err(5, C::INVALID_HEADER, "", Stays),
        ),
        case(
            "Option tag of 2",
            Plain,
            Open,
            Act::Frames(vec![(vec![5, 0x0a, 0, 2, b'l', b's', 2, 1], vec![])]),
            err(5, C::INVALID_HEADER, "", Stays),
        ),
        case(
            "enum variant out of range",
            Plain,
            Open,
            Act::Frames(vec![(vec![5, 0x0a, 7, 2, b'l', b's', 0], vec![])]),
            err(5, C::INVALID_HEADER, "", Stays),
        ),
        // --- request ids and directions ---
        case(
            "request id 0",
            Plain,
            Open,
            one(0, Message::Stat { path: "hello.txt" }),
            err(0, C::BAD_REQUEST_ID, "0", Stays),
        ),
        case(
            "request id reused while in flight",
            Plain,
            Open,
            Act::Script(s_reused_id),
            err(9, C::BAD_REQUEST_ID, "in use", Stays),
        ),
        case(
            "a reply kind sent by the client (Pong)",
            Plain,
            Open,
            one(5, Message::Pong { stamp: 1 }),
            err(5, C::UNEXPECTED, "Pong", Stays),
        ),
        case(
            "a reply kind sent by the client (PutReady)",
            Plain,
            Open,
            one(
                5,
                Message::PutReady {
                    offset: 0,
                    prefix_sha256: None,
                },
            ),
            err(5, C::UNEXPECTED, "PutReady", Stays),
        ),
        case(
            "an Output with a body from the client",
            Plain,
            Open,
            frames(vec![(
                5,
                Message::Output {
                    stream: tether_proto::Stream::Stdout,
                },
                b"out".to_vec(),
            )]),
            err(5, C::UNEXPECTED, "Output", Stays),
        ),
        case(
            "an Error from the client",
            Plain,
            Open,
            one(
                5,
                Message::Error {
                    code: C::IO,
                    message: "boo",
                },
            ),
            err(5, C::UNEXPECTED, "Error", Stays),
        ),
        case(
            "Data for no upload",
            Plain,
            Open,
            frames(vec![(77, Message::Data, b"stray".to_vec())]),
            err(77, C::BAD_REQUEST_ID, "not an upload", Stays),
        ),
        case(
            "Done for no upload",
            Plain,
            Open,
            one(
                78,
                Message::Done {
                    bytes: 0,
                    sha256: None,
                },
            ),
            err(78, C::BAD_REQUEST_ID, "not an upload", Stays),
        ),
        case(
            "Cancel of an unknown request",
            Plain,
            Open,
            one(0, Message::Cancel { target: 4242 }),
            Expect::Nothing,
        ),
        // --- paths ---
        case(
            "path ..",
            Plain,
            Open,
            one(5, Message::Stat { path: ".." }),
            err(5, C::PATH_REFUSED, "..", Stays),
        ),
        case(
            "path a/../..",
            Plain,
            Open,
            one(
                5,
                Message::Get {
                    path: "a/../..",
                    offset: 0,
                },
            ),
            err(5, C::PATH_REFUSED, "..", Stays),
        ),
        case(
            "path ../outside/canary.txt",
            Plain,
            Open,
            one(
                5,
                Message::Get {
                    path: "../outside/canary.txt",
                    offset: 0,
                },
            ),
            err(5, C::PATH_REFUSED, "..", Stays),
        ),
        case(
            "put to ../outside",
            Plain,
            Open,
            Act::Script(|p, _| put(p, "../outside/new.txt", b"escape")),
            err(40, C::PATH_REFUSED, "..", Stays),
        ),
        case(
            "absolute path",
            Plain,
            Open,
            one(
                5,
                Message::Get {
                    path: "/etc/passwd",
                    offset: 0,
                },
            ),
            err(5, C::PATH_REFUSED, "absolute", Stays),
        ),
        case(
            "path //etc/passwd",
            Plain,
            Open,
            one(
                5,
                Message::Get {
                    path: "//etc/passwd",
                    offset: 0,
                },
            ),
            err(5, C::PATH_REFUSED, "absolute", Stays),
        ),
        case(
            "backslash separators",
            Plain,
            Open,
            one(
                5,
                Message::Get {
                    path: "..\\outside\\canary.txt",
                    offset: 0,
                },
            ),
            err(5, C::PATH_REFUSED, "backslash", Stays),
        ),
        case(
            "percent-encoded ../ is a literal name",
            Plain,
            Open,
            one(
                5,
                Message::Get {
                    path: "%2e%2e%2foutside%2fcanary.txt",
                    offset: 0,
                },
            ),
            err(5, C::NOT_FOUND, "", Stays),
        ),
        case(
            "put to a percent-encoded name stays inside",
            Plain,
            Open,
            Act::Script(s_put_literal_percent),
            Expect::Ok,
        )
        .after(After::Content(
            "%2e%2e%2fescape.txt",
            b"stays inside".to_vec(),
        )),
        case(
            "NUL in a path",
            Plain,
            Open,
            one(
                5,
                Message::Stat {
                    path: "hello.txt\0../../x",
                },
            ),
            err(5, C::PATH_REFUSED, "control", Stays),
        ),
        case(
            "control characters in a path",
            Plain,
            Open,
            one(
                5,
                Message::Stat {
                    path: "\x1b[2Jhello",
                },
            ),
            err(5, C::PATH_REFUSED, "control", Stays),
        ),
        case(
            "a 256-byte name",
            Plain,
            Open,
            Act::Script(|p, _| put(p, &"n".repeat(256), b"x")),
            err(40, C::PATH_REFUSED, "255", Stays),
        )
        .device(err(40, C::PATH_REFUSED, "limit of 48 bytes", Stays)),
        case(
            "a 5000-byte path",
            Plain,
            Open,
            Act::Script(|p, _| {
                p.request(
                    5,
                    Message::Stat {
                        path: &"d/".repeat(2500),
                    },
                    &[],
                )?;
                recv(p)
            }),
            err(5, C::PATH_REFUSED, "long", Stays),
        )
        .device(err(0, C::HEADER_TOO_LARGE, "exceeds", Close)),
        case(
            "a name reserved for partial uploads",
            Plain,
            Open,
            Act::Script(|p, _| put(p, ".x.tether-part", b"x")),
            err(40, C::PATH_REFUSED, "reserved", Stays),
        ),
        case(
            "get of a missing file",
            Plain,
            Open,
            one(
                5,
                Message::Get {
                    path: "missing.txt",
                    offset: 0,
                },
            ),
            err(5, C::NOT_FOUND, "", Stays),
        ),
        // --- files: empty, one chunk, lies about sizes and digests ---
        case(
            "put an empty file",
            Plain,
            Open,
            Act::Script(s_put_empty),
            Expect::Ok,
        )
        .after(After::Content("empty-up.bin", Vec::new())),
        case(
            "put exactly one chunk",
            Plain,
            Open,
            Act::Script(s_put_one_chunk),
            Expect::Ok,
        ),
        case(
            "put one chunk plus one byte",
            Plain,
            Open,
            Act::Script(s_put_chunk_plus_one),
            Expect::Ok,
        ),
        case(
            "get an empty file",
            Plain,
            Open,
            Act::Script(s_get_empty),
            Expect::Ok,
        ),
        case(
            "get exactly one chunk",
            Plain,
            Open,
            Act::Script(s_get_one_chunk),
            Expect::Ok,
        ),
        case(
            "put with a wrong digest",
            Plain,
            Open,
            Act::Script(s_put_wrong_digest),
            err(40, C::DIGEST_MISMATCH, "", Stays),
        )
        .after(After::Missing("wrong-digest.bin")),
        case(
            "put without a digest",
            Plain,
            Open,
            Act::Script(s_put_no_digest),
            err(40, C::DIGEST_MISMATCH, "", Stays),
        )
        .after(After::Missing("no-digest.bin")),
        case(
            "put with too many bytes",
            Plain,
            Open,
            Act::Script(s_put_too_many),
            err(40, C::BAD_LENGTH, "", Stays),
        )
        .after(After::Missing("too-many.bin")),
        case(
            "put with too few bytes",
            Plain,
            Open,
            Act::Script(s_put_too_few),
            err(40, C::BAD_LENGTH, "", Stays),
        )
        .after(After::Missing("too-few.bin")),
        case(
            "put whose Done lies about the size",
            Plain,
            Open,
            Act::Script(s_put_done_lies),
            err(40, C::BAD_LENGTH, "", Stays),
        )
        .after(After::Missing("done-lies.bin")),
        case(
            "put over an existing file without force",
            Plain,
            Open,
            Act::Script(s_put_exists),
            err(40, C::EXISTS, "exists", Stays),
        )
        .after(After::Content("hello.txt", HELLO.to_vec())),
        case(
            "put announcing 2^63 bytes",
            Plain,
            Open,
            Act::Script(s_put_huge_size),
            err(40, C::BAD_LENGTH, "", Stays),
        )
        .after(After::Missing("huge.bin"))
        .device(err(40, C::NO_SPACE, "store full", Stays)),
        case(
            "upload cut short, then the client closes",
            Plain,
            Open,
            Act::Script(s_put_truncated_data),
            Expect::Closed,
        )
        .after(After::Missing("cut.bin")),
        // --- exec ---
        case(
            "exec of an empty argv",
            Plain,
            Open,
            frames(vec![(
                5,
                Message::Exec(Exec {
                    command: Command::Argv(Argv("")),
                    timeout_ms: None,
                }),
                vec![],
            )]),
            err(5, C::EXEC_FAILED, "", Stays),
        ),
        case(
            "exec of a program that does not exist",
            Plain,
            Open,
            Act::Script(|p, _| {
                let mut b = Vec::new();
                let m = exec_argv(&["no-such-program-xyz"], &mut b);
                p.request(5, m, &[])?;
                recv(p)
            }),
            err(5, C::EXEC_FAILED, "no-such-program-xyz", Stays),
        ),
        // --- deadlines ---
        case(
            "a client that never sends Hello",
            Deadlines,
            Connected,
            Act::Script(s_wait),
            err(0, C::TIMEOUT, "Hello", Close),
        )
        .device(err(0, C::TIMEOUT, "handshake", Close)),
        case(
            "half a Hello, then silence",
            Deadlines,
            Connected,
            Act::Script(s_half_hello_then_silence),
            err(0, C::TIMEOUT, "Hello", Close),
        )
        .device(err(0, C::TIMEOUT, "handshake", Close)),
        case(
            "an idle connection after Hello",
            Deadlines,
            Open,
            Act::Script(s_wait),
            err(0, C::TIMEOUT, "idle", Close),
        ),
        case(
            "Hello, then no Auth",
            KeyedDeadlines,
            Connected,
            Act::Script(s_hello_then_silence),
            err(0, C::TIMEOUT, "Auth", Close),
        )
        .device(err(0, C::TIMEOUT, "handshake", Close)),
        // --- authentication ---
        case(
            "Hello without a key",
            Keyed,
            Connected,
            Act::Bytes(hello.clone()),
            err(0, C::AUTH_REQUIRED, "key", Close),
        ),
        case(
            "Hello offering AUTH_PSK but not SEAL",
            Keyed,
            Connected,
            Act::Script(s_auth_without_seal),
            err(0, C::AUTH_REQUIRED, "SEAL", Close),
        ),
        case(
            "a request before Auth",
            Keyed,
            Connected,
            Act::Script(s_before_auth),
            err(5, C::AUTH_REQUIRED, "key", Close),
        ),
        case(
            "a sealed frame before Auth",
            Keyed,
            Connected,
            Act::Script(s_sealed_before_auth),
            err(5, C::AUTH_REQUIRED, "key", Close),
        ),
        case(
            "Auth with a body",
            Keyed,
            Connected,
            Act::Script(s_auth_with_body),
            err(0, C::AUTH_REQUIRED, "key", Close),
        ),
        case(
            "Auth with a wrong proof",
            Keyed,
            Connected,
            Act::Script(s_wrong_proof),
            err(0, C::AUTH_FAILED, "key", Close),
        )
        .from(21),
        case(
            "a recorded Hello and Auth replayed",
            Keyed,
            Connected,
            Act::TwoSessions(c_handshake_frames, Connected, r_replay_handshake),
            err(0, C::AUTH_FAILED, "key", Close),
        )
        .from(22),
        case(
            "a second Auth once authenticated",
            Keyed,
            Open,
            one(0, Message::Auth(tether_proto::Proof { mac: [1; 32] })),
            err(0, C::UNEXPECTED, "Auth", Stays),
        ),
        case(
            "a second Hello once authenticated",
            Keyed,
            Open,
            Act::Frames(vec![(hello_header("again"), vec![])]),
            err(0, C::UNEXPECTED, "Hello", Stays),
        ),
        // --- sealing ---
        case(
            "an unsealed frame after Auth",
            Keyed,
            Open,
            Act::Script(s_unsealed_after_auth),
            err(0, C::INTEGRITY, "unsealed", Close),
        ),
        case(
            "a replayed sealed frame",
            Keyed,
            Open,
            Act::Script(s_replayed),
            err(0, C::INTEGRITY, "", Close),
        ),
        case(
            "sealed frames reordered",
            Keyed,
            Open,
            Act::Script(s_reordered),
            err(0, C::INTEGRITY, "", Close),
        ),
        case(
            "a sealed frame dropped",
            Keyed,
            Open,
            Act::Script(s_dropped),
            err(0, C::INTEGRITY, "", Close),
        ),
        case(
            "a sealed frame from another session",
            Keyed,
            Open,
            Act::TwoSessions(c_sealed_stat, Open, r_send),
            err(0, C::INTEGRITY, "", Close),
        ),
        case(
            "the server's own frame reflected",
            Keyed,
            Open,
            Act::Script(s_reflected),
            err(0, C::INTEGRITY, "", Close),
        ),
        case(
            "a bit flipped in a sealed body",
            Keyed,
            Open,
            Act::Script(s_flipped_body),
            err(0, C::INTEGRITY, "", Close),
        )
        .after(After::Missing("flipped.bin")),
        case(
            "a bit flipped in a tag",
            Keyed,
            Open,
            Act::Script(s_flipped_tag),
            err(0, C::INTEGRITY, "", Close),
        ),
        case(
            "a sealed header altered, checksum recomputed",
            Keyed,
            Open,
            Act::Script(s_header_altered_crc_fixed),
            err(0, C::INTEGRITY, "", Close),
        ),
        case(
            "a sealed Done cut short, then the client closes",
            Keyed,
            Open,
            Act::Script(s_truncated_sealed_done),
            Expect::Closed,
        )
        .after(After::Missing("truncated-done.bin")),
        case(
            "garbage after Auth",
            Keyed,
            Open,
            Act::Bytes(b"\x00\x01 this is not a tether frame at all".to_vec()),
            err(0, C::BAD_FRAME, "magic", Close),
        ),
        case(
            "keyed: an empty file and one chunk, sealed",
            Keyed,
            Open,
            Act::Script(|p, fx| {
                match round_trip(p, "sealed-empty.bin", b"")? {
                    Observed::Done => {}
                    o => return Ok(o),
                }
                s_get_one_chunk(p, fx)
            }),
            Expect::Ok,
        )
        .after(After::Content("sealed-empty.bin", Vec::new())),
    ];
    // Side-specific cases.
    v.extend(
        [
            case(
                "a sealed frame on a session without a key",
                Plain,
                Open,
                Act::Bytes({
                    let h = header(5, Message::Ping { stamp: 1 });
                    let mut f = prefix(&h, 0, Flags::SEALED.bits());
                    f.extend(h);
                    f.extend([0u8; 16]);
                    f
                }),
                err(5, C::UNEXPECTED, "sealed", Stays),
            ),
            case(
                "symlink pointing out of the root",
                Plain,
                Open,
                one(
                    5,
                    Message::Get {
                        path: "link_out/canary.txt",
                        offset: 0,
                    },
                ),
                err(5, C::PATH_REFUSED, "outside", Stays),
            ),
            case(
                "put through a symlink pointing out",
                Plain,
                Open,
                Act::Script(|p, _| put(p, "link_out/evil.txt", b"evil")),
                err(40, C::PATH_REFUSED, "outside", Stays),
            ),
            case(
                "remove through a symlink pointing out",
                Plain,
                Open,
                one(
                    5,
                    Message::Remove {
                        path: "link_out/canary.txt",
                    },
                ),
                err(5, C::PATH_REFUSED, "outside", Stays),
            ),
            case(
                "list through a symlink pointing out",
                Plain,
                Open,
                one(5, Message::List { path: "link_out" }),
                err(5, C::PATH_REFUSED, "outside", Stays),
            ),
            case(
                "file symlink pointing out",
                Plain,
                Open,
                one(
                    5,
                    Message::Get {
                        path: "link_file_out",
                        offset: 0,
                    },
                ),
                err(5, C::PATH_REFUSED, "outside", Stays),
            ),
            case(
                "absolute symlink",
                Plain,
                Open,
                one(
                    5,
                    Message::Get {
                        path: "abs_link",
                        offset: 0,
                    },
                ),
                err(5, C::PATH_REFUSED, "outside", Stays),
            ),
            case(
                "symlink loop",
                Plain,
                Open,
                one(
                    5,
                    Message::Get {
                        path: "loop_a",
                        offset: 0,
                    },
                ),
                err(5, C::PATH_REFUSED, "symbolic links", Stays),
            ),
            case(
                "get of a directory",
                Plain,
                Open,
                one(
                    5,
                    Message::Get {
                        path: "dir",
                        offset: 0,
                    },
                ),
                err(5, C::IS_DIRECTORY, "directory", Stays),
            ),
            case(
                "put onto a directory",
                Plain,
                Open,
                Act::Script(|p, _| put(p, "dir", b"x")),
                err(40, C::IS_DIRECTORY, "directory", Stays),
            ),
            case(
                "a file used as a directory",
                Plain,
                Open,
                Act::Script(|p, _| put(p, "hello.txt/x", b"x")),
                err(40, C::NOT_DIRECTORY, "", Stays),
            ),
            case(
                "list of a file",
                Plain,
                Open,
                one(5, Message::List { path: "hello.txt" }),
                err(5, C::NOT_DIRECTORY, "", Stays),
            ),
            case(
                "remove of the root",
                Plain,
                Open,
                one(5, Message::Remove { path: "" }),
                err(5, C::PATH_REFUSED, "root", Stays),
            ),
            case(
                "concurrent puts to one path",
                Plain,
                Open,
                Act::Script(s_concurrent_puts),
                err(40, C::BUSY, "another upload", Stays),
            )
            .after(After::Content("contended.bin", b"first one wins".to_vec())),
            case(
                "an invalid time format",
                Plain,
                Open,
                one(5, Message::Time { format: "%Q" }),
                err(5, C::INVALID_HEADER, "time format", Stays),
            ),
            case(
                "a sealed Exec with a bad tag does not run",
                Keyed,
                Open,
                Act::Script(s_tampered_exec_host),
                err(0, C::INTEGRITY, "", Close),
            )
            .after(After::Missing("pwned")),
        ]
        .map(|c| c.device(Expect::Skip)),
    );
    v.push(
        case(
            "a sealed Exec with a bad tag does not run",
            Keyed,
            Open,
            Act::Script(s_tampered_exec_device),
            err(0, C::INTEGRITY, "", Close),
        )
        .host(Expect::Skip)
        .after(After::ExecOutput(&["led"], "led off")),
    );
    v
}

/// A second connection cannot be had inside a script on the device (the
/// virtual wire is borrowed), so this case is the host's: it opens its own
/// second connection to the port the first one uses.
fn s_concurrent_puts(p: &mut Peer<'_>, _: &Fx) -> Result<Observed, String> {
    let port = CONCURRENT_PORT.with(|c| c.get());
    let first = b"first one wins";
    // First upload: announced, PutReady received, data not yet sent.
    p.request(
        50,
        Message::Put {
            path: "contended.bin",
            size: first.len() as u64,
            force: false,
            resume: false,
        },
        &[],
    )?;
    if let Err(o) = want(p, 50, Kind::PutReady)? {
        return Err(format!("the first upload was refused: {o:?}"));
    }
    // Second upload to the same path on another connection: refused.
    let mut q = Peer::new(crate::peer::tcp(port));
    q.handshake(None, [8; 16])?;
    let second = put_with(
        &mut q,
        "contended.bin",
        6,
        b"second",
        6,
        Some(sha(b"second")),
    );
    // Finish the first.
    p.request(50, Message::Data, first)?;
    p.request(
        50,
        Message::Done {
            bytes: first.len() as u64,
            sha256: Some(sha(first)),
        },
        &[],
    )?;
    match want(p, 50, Kind::Done)? {
        Ok(_) => {}
        Err(o) => return Err(format!("the first upload failed: {o:?}")),
    }
    match second? {
        Observed::Frame(g) => Ok(Observed::Frame(g)),
        o => Err(format!("the second upload was not refused: {o:?}")),
    }
}

thread_local! {
    /// The host server's port, for scripts that open a second connection.
    pub static CONCURRENT_PORT: std::cell::Cell<u16> = const { std::cell::Cell::new(0) };
}

// ---------------------------------------------------------------------
// Running.

/// One target: a host server or a simulated device of one configuration.
pub trait Target {
    /// Which side.
    fn side(&self) -> Side;
    /// The key, for keyed servers.
    fn key(&self) -> Option<[u8; 32]>;
    /// A new connection (from 127.0.0.`from` on the host).
    fn connect(&mut self, from: Ipv4Addr) -> Result<Peer<'_>, String>;
    /// A well-behaved client is served, and `after` holds.
    fn check_served(&mut self, after: &[After]) -> Result<(), String>;
    /// Nothing outside the served root changed since the target started.
    fn check_outside(&mut self) -> Result<(), String>;
    /// Between cases: let back-off periods the case started run out.
    fn settle(&mut self, case: &Case);
}

fn open_at<'t>(
    t: &'t mut dyn Target,
    stage: Stage,
    from: Ipv4Addr,
    n: u64,
) -> Result<Peer<'t>, String> {
    let key = t.key();
    let mut p = t.connect(from)?;
    if stage == Stage::Open {
        p.handshake(key, crate::peer::nonce(n))
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(p)
}

fn act(p: &mut Peer<'_>, a: &Act, expect: &Expect, fx: &Fx) -> Result<Observed, String> {
    match a {
        Act::Bytes(b) => p.send(b)?,
        Act::BytesThenClose(b) => {
            p.send(b)?;
            p.close_write();
        }
        Act::Frames(list) => {
            let mut all = Vec::new();
            for (h, body) in list {
                all.extend(p.frame_raw(h, body));
            }
            p.send(&all)?;
        }
        Act::Script(s) => return s(p, fx),
        Act::TwoSessions(..) => unreachable!("handled by the runner"),
    }
    if *expect == Expect::Nothing {
        p.request(4242, Message::Ping { stamp: 0x5eed }, &[])?;
    }
    recv(p)
}

fn verify(p: &mut Peer<'_>, got: Observed, expect: &Expect) -> Result<(), String> {
    match (expect, got) {
        (Expect::Skip, _) => Ok(()),
        (
            Expect::Error {
                id,
                code,
                phrase,
                then,
            },
            Observed::Frame(g),
        ) => {
            let Some((c, text)) = g.error() else {
                return Err(format!("expected Error {code:?}, got {}", g.describe()));
            };
            if c != *code || g.id != *id || !text.contains(phrase) {
                return Err(format!(
                    "expected Error id {id} {} containing {phrase:?}, got {}",
                    code.name().unwrap_or("?"),
                    g.describe()
                ));
            }
            if p.sealed() && g.tag_ok != Some(true) {
                return Err(format!("the Error did not verify: {}", g.describe()));
            }
            match then {
                Then::Close => p.expect_closed(),
                Then::Open => p.ping_ok(4243),
            }
        }
        (Expect::Reply { id, kind }, Observed::Frame(g)) => {
            if g.id != *id || g.kind() != *kind {
                return Err(format!("expected {kind:?} {id}, got {}", g.describe()));
            }
            if *kind == Kind::HelloAck {
                return Ok(());
            }
            p.ping_ok(4243)
        }
        (Expect::Closed, Observed::Closed) => Ok(()),
        (Expect::Nothing, Observed::Frame(g)) => match g.message() {
            Message::Pong { stamp: 0x5eed } if g.id == 4242 => Ok(()),
            _ => Err(format!("expected no reply, got {}", g.describe())),
        },
        (Expect::Ok, Observed::Done) => p.ping_ok(4243),
        (e, got) => Err(format!("expected {e:?}, got {got:?}")),
    }
}

/// Run one case on `t`; `n` numbers the connections (nonces).
pub fn run_case(t: &mut dyn Target, c: &Case, n: u64) -> Result<(), String> {
    let expect = c.expect(t.side()).clone();
    if expect == Expect::Skip {
        return Ok(());
    }
    let fx = Fx {
        side: t.side(),
        key: t.key(),
    };
    let from = c.from_addr();
    match &c.act {
        Act::TwoSessions(capture, stage2, replay) => {
            let bytes = {
                let mut p = open_at(t, c.stage, from, n)?;
                capture(&mut p, &fx)?
            };
            let mut p = open_at(t, *stage2, from, n + 1_000_000)?;
            let got = replay(&mut p, &fx, bytes)?;
            verify(&mut p, got, &expect)?;
        }
        a => {
            let mut p = open_at(t, c.stage, from, n)?;
            let got = act(&mut p, a, &expect, &fx)?;
            verify(&mut p, got, &expect)?;
        }
    }
    t.settle(c);
    t.check_served(&c.after)?;
    t.check_outside()
}

/// Run every case of `server` on `t`; returns how many ran. Failures are
/// collected and reported together.
pub fn run_all(t: &mut dyn Target, server: Server) -> usize {
    let mut ran = 0;
    let mut failed = Vec::new();
    for (i, c) in catalogue().iter().enumerate() {
        if c.server != server || *c.expect(t.side()) == Expect::Skip {
            continue;
        }
        ran += 1;
        if let Err(e) = run_case(t, c, i as u64 + 1) {
            failed.push(format!("{:?} {:?} \"{}\": {e}", t.side(), server, c.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{} case(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    ran
}

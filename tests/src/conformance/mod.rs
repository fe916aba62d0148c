//! The conformance catalogue: what a tether server must answer to inputs
//! good and bad, as data, run with the same expected replies against every
//! server there is (`tests/tests/hostile.rs`): `tether serve` over TCP,
//! the simulated device over the virtual wire, and the simulated device on
//! a real TAP in a network namespace; each in every configuration
//! ([`Server`]).
//!
//! A [`Case`] names what it sends ([`Act`]: raw bytes, frames the session
//! builds, or a short script), at which [`Stage`] of a connection, in which
//! configurations, and what the server must answer ([`Expect`]: the error
//! code, request id and a phrase of its text, and whether the connection
//! then closes or goes on). No case names a target: what depends on the
//! server is read from its HelloAck ([`Ack`]: limits and capabilities), and
//! a case that only applies to servers with (or without) a capability says
//! so ([`Case::needs`], [`Case::unless`]). After every case the runner
//! ([`run`]) checks that a well-behaved client is served, the case's
//! [`After`] conditions, that the served tree holds exactly what it held
//! plus what the case stored, and the target's own invariants (nothing
//! outside the served root changed; no upload left claimed).
//!
//! # The fixture
//! Every server starts from the same files, stored through the protocol by
//! the runner ([`run::provision`]): `hello.txt` ([`HELLO`]), `empty.bin`,
//! `chunk.bin` (exactly `max_chunk` bytes of [`pattern`]), and on a server
//! with `DIRS` `dir/inner.txt`. A server with `DIRS` serves a real tree, so
//! its fixture also holds the symbolic links the path cases try to escape
//! through (`link_out` → `../outside`, `link_file_out`, `abs_link`, the
//! loop `loop_a` ↔ `loop_b`), which the target lays (the protocol cannot
//! make links); a flat store (no `DIRS`) has one directory and no links.
//! Every server with `EXEC` runs `touch NAME` (makes an empty file in the
//! served root) and has no command `no-such-program-xyz`.

pub mod deadlines;
pub mod exec;
pub mod frames;
pub mod handshake;
pub mod kit;
pub mod paths;
pub mod run;
pub mod sealing;
pub mod targets;
pub mod transfers;

use std::cell::Cell;

use tether_proto::{Caps, ErrorCode, Kind};

use crate::peer::{Got, Peer};

/// A server configuration; every target runs each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Server {
    /// No key; exec allowed.
    Plain,
    /// A pre-shared key; exec allowed.
    Keyed,
    /// No key, short deadlines (handshake 1 s, idle 2 s).
    Deadlines,
    /// A key and short deadlines (handshake 1 s, idle 2 s).
    KeyedDeadlines,
}

impl Server {
    /// Every configuration.
    pub const ALL: [Server; 4] = [
        Server::Plain,
        Server::Keyed,
        Server::Deadlines,
        Server::KeyedDeadlines,
    ];
    /// Whether it has a key.
    pub fn keyed(self) -> bool {
        matches!(self, Server::Keyed | Server::KeyedDeadlines)
    }
    /// Whether its deadlines are short.
    pub fn short_deadlines(self) -> bool {
        matches!(self, Server::Deadlines | Server::KeyedDeadlines)
    }
}

/// How far a connection gets before the case acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Just connected: nothing sent.
    Connected,
    /// Hello sent (offering the key's capabilities on a keyed server) and
    /// HelloAck read: a keyed server now waits for Auth.
    HelloAck,
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

/// What the server announced in HelloAck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Capabilities.
    pub caps: Caps,
    /// Negotiated largest header.
    pub max_header: u16,
    /// Negotiated largest body.
    pub max_chunk: u32,
    /// Most requests in flight.
    pub max_requests: u16,
    /// Longest name.
    pub max_name: u16,
    /// Longest path.
    pub max_path: u16,
}

impl Ack {
    /// What a peer read from HelloAck.
    pub fn of(p: &Peer<'_>) -> Ack {
        Ack {
            caps: p.caps,
            max_header: p.max_header,
            max_chunk: p.max_chunk,
            max_requests: p.max_requests,
            max_name: p.max_name,
            max_path: p.max_path,
        }
    }
}

/// Text an Error must contain: fixed, or made from the server's HelloAck.
#[derive(Clone, Copy)]
pub enum Phrase {
    /// This text.
    Is(&'static str),
    /// The text this makes of the HelloAck.
    Of(fn(&Ack) -> String),
}

impl Phrase {
    /// The text for a server that announced `ack`.
    pub fn text(&self, ack: &Ack) -> String {
        match self {
            Phrase::Is(s) => s.to_string(),
            Phrase::Of(f) => f(ack),
        }
    }
}

impl std::fmt::Debug for Phrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phrase::Is(s) => write!(f, "{s:?}"),
            Phrase::Of(_) => write!(f, "<from HelloAck>"),
        }
    }
}

impl From<&'static str> for Phrase {
    fn from(s: &'static str) -> Self {
        Phrase::Is(s)
    }
}

/// What the server must answer.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// One Error frame: request id, code, a phrase of its text; then the
    /// connection closes or goes on.
    Error {
        /// Request id of the Error.
        id: u32,
        /// Its code.
        code: ErrorCode,
        /// Text it contains.
        phrase: Phrase,
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
    /// The script's exchange succeeded (it checked the bytes).
    Ok,
}

/// Shorthand for an Error expectation.
pub fn err(id: u32, code: ErrorCode, phrase: impl Into<Phrase>, then: Then) -> Expect {
    Expect::Error {
        id,
        code,
        phrase: phrase.into(),
        then,
    }
}

/// What a case observed.
pub enum Observed {
    /// A frame.
    Frame(Got),
    /// The connection closed without a frame.
    Closed,
    /// A script completed its exchange and checked it.
    Done,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Observed::Frame(g) => write!(f, "{}", g.describe()),
            Observed::Closed => write!(f, "the connection closed"),
            Observed::Done => write!(f, "the exchange completed"),
        }
    }
}

/// What a script may use besides its connection: the key, the server's
/// HelloAck, and more connections to the same server.
pub struct Fx<'t> {
    /// The pre-shared key of keyed servers.
    pub key: Option<[u8; 32]>,
    /// What the server announced.
    pub ack: Ack,
    target: &'t dyn run::Target,
    nonces: Cell<u64>,
}

impl std::fmt::Debug for Fx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fx").field("ack", &self.ack).finish()
    }
}

impl<'t> Fx<'t> {
    /// What scripts get for `target`, whose HelloAck said `ack`.
    pub fn new(target: &'t dyn run::Target, ack: Ack, first_nonce: u64) -> Self {
        Fx {
            key: target.key(),
            ack,
            target,
            nonces: Cell::new(first_nonce),
        }
    }

    /// A fresh nonce.
    pub fn nonce(&self) -> [u8; 16] {
        let n = self.nonces.get() + 1;
        self.nonces.set(n);
        crate::peer::nonce(n)
    }

    /// Another connection to the same server, from peer address `peer`
    /// (0: the usual one), at `stage`.
    pub fn connect(&self, peer: u8, stage: Stage) -> Result<Peer<'static>, String> {
        let mut p = self.target.connect(peer)?;
        match stage {
            Stage::Connected => {}
            Stage::HelloAck => kit::hello_ack_only(&mut p, self.key, self.nonce())?,
            Stage::Open => p
                .handshake(self.key, self.nonce())
                .map_err(|e| format!("handshake: {e}"))?,
        }
        Ok(p)
    }
}

/// A step-by-step exchange on the case's connection.
pub type Script = fn(&mut Peer<'_>, &Fx<'_>) -> Result<Observed, String>;

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
}

impl std::fmt::Debug for Act {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Act::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Act::BytesThenClose(b) => write!(f, "BytesThenClose({} bytes)", b.len()),
            Act::Frames(v) => write!(f, "Frames({})", v.len()),
            Act::Script(_) => write!(f, "Script"),
        }
    }
}

/// A condition a well-behaved client checks after the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Nothing exists under this name (an upload did not land, a command did not run).
    Missing(&'static str),
    /// This file holds exactly these bytes (the case stored it: from now
    /// on it is part of what the server holds).
    Content(&'static str, Vec<u8>),
    /// The case stored this file and checked its bytes: from now on it is
    /// part of what the server holds.
    Stored(&'static str),
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name, unique within each configuration.
    pub name: &'static str,
    /// The configurations it runs in.
    pub on: &'static [Server],
    /// Where the connection is when the case acts.
    pub stage: Stage,
    /// What it sends.
    pub act: Act,
    /// What the server answers.
    pub expect: Expect,
    /// Checks afterwards.
    pub after: Vec<After>,
    /// Capabilities the server must announce for the case to apply.
    pub needs: Caps,
    /// Capabilities the server must not announce for the case to apply.
    pub unless: Caps,
    /// The peer address to connect from: 0 is the one every other
    /// connection uses (failed authentications are counted per address,
    /// so a case that fails one comes from an address of its own).
    pub peer: u8,
}

/// Only without a key.
pub const PLAIN: &[Server] = &[Server::Plain];
/// Only with a key.
pub const KEYED: &[Server] = &[Server::Keyed];
/// Without and with a key (sealed).
pub const BOTH: &[Server] = &[Server::Plain, Server::Keyed];
/// Short deadlines, no key.
pub const DEADLINES: &[Server] = &[Server::Deadlines];
/// Short deadlines and a key.
pub const KEYED_DEADLINES: &[Server] = &[Server::KeyedDeadlines];

/// A case.
pub fn case(
    name: &'static str,
    on: &'static [Server],
    stage: Stage,
    act: Act,
    expect: Expect,
) -> Case {
    Case {
        name,
        on,
        stage,
        act,
        expect,
        after: Vec::new(),
        needs: Caps::empty(),
        unless: Caps::empty(),
        peer: 0,
    }
}

impl Case {
    /// Check `a` afterwards.
    pub fn after(mut self, a: After) -> Self {
        self.after.push(a);
        self
    }
    /// Applies only to servers announcing `caps`.
    pub fn needs(mut self, caps: Caps) -> Self {
        self.needs = self.needs.union(caps);
        self
    }
    /// Applies only to servers not announcing `caps`.
    pub fn unless(mut self, caps: Caps) -> Self {
        self.unless = self.unless.union(caps);
        self
    }
    /// Connect from peer address `n`.
    pub fn peer(mut self, n: u8) -> Self {
        self.peer = n;
        self
    }
    /// Whether it applies to a server that announced `ack`.
    pub fn applies(&self, ack: &Ack) -> bool {
        ack.caps.contains(self.needs) && ack.caps.0 & self.unless.0 == 0
    }
}

/// `hello.txt`'s content.
pub const HELLO: &[u8] = b"hello, world\n";

/// Bytes of the fixture's and the cases' pattern files.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Every case, family by family.
pub fn catalogue() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(frames::cases());
    v.extend(handshake::cases());
    v.extend(sealing::cases());
    v.extend(paths::cases());
    v.extend(transfers::cases());
    v.extend(exec::cases());
    v.extend(deadlines::cases());
    v
}

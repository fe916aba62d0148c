//! Running the catalogue against a [`Target`]: provision the fixture,
//! run every case of a configuration, check what the server holds after
//! each, and report every failure together.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tether_proto::{ErrorCode, Kind, Message};

use super::kit::{get_exact, put, recv, sha};
use super::{catalogue, pattern, Ack, Act, After, Case, Expect, Fx, Observed, Server, Then, HELLO};
use crate::peer::Peer;
use tether_proto::message::EntryKind;

/// A server to run the catalogue against, in one configuration.
pub trait Target {
    /// What it is, for reports.
    fn name(&self) -> &'static str;
    /// The key, for keyed servers.
    fn key(&self) -> Option<[u8; 32]>;
    /// A new connection (nothing sent) from peer address number `peer`
    /// (0: the one every other connection uses).
    fn connect(&self, peer: u8) -> Result<Peer<'static>, String>;
    /// What must hold beyond the served tree, checked over `p` (an open
    /// session) or by the target itself.
    fn invariants(&self, p: &mut Peer<'_>) -> Result<(), String>;
}

/// One entry of the served tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What it is.
    pub kind: EntryKind,
    /// Its size.
    pub size: u64,
    /// A file's SHA-256.
    pub sha: Option<[u8; 32]>,
}

/// The served tree as a well-behaved client sees it: path → entry.
pub type Model = BTreeMap<String, Item>;

/// What a configuration's run came to.
#[derive(Debug, Default)]
pub struct Tally {
    /// Cases of the configuration that applied and ran.
    pub ran: usize,
    /// Those that passed.
    pub passed: usize,
    /// Cases of the configuration that did not apply (a capability).
    pub not_applicable: Vec<&'static str>,
    /// One line per failure: target, configuration, case, expected, got.
    pub failures: Vec<String>,
}

/// Store the fixture through the protocol and take the tree as it then is.
pub fn provision(t: &dyn Target) -> Result<(Ack, Model), String> {
    let mut p = t.connect(0)?;
    p.handshake(t.key(), crate::peer::nonce(1))?;
    let ack = Ack::of(&p);
    let mut files = vec![
        ("hello.txt", HELLO.to_vec()),
        ("empty.bin", Vec::new()),
        ("chunk.bin", pattern(ack.max_chunk as usize, 1)),
    ];
    if ack.caps.contains(tether_proto::Caps::DIRS) {
        files.push(("dir/inner.txt", b"inner\n".to_vec()));
    }
    for (name, data) in &files {
        match put(&mut p, name, data)? {
            Observed::Done => {}
            o => return Err(format!("storing {name}: {o:?}")),
        }
    }
    let model = snapshot(&mut p, &ack)?;
    Ok((ack, model))
}

/// The whole tree below the root (directories followed where the server
/// has them, links not), with the digest of every file.
pub fn snapshot(p: &mut Peer<'_>, ack: &Ack) -> Result<Model, String> {
    let dirs = ack.caps.contains(tether_proto::Caps::DIRS);
    let mut out = Model::new();
    let mut todo = vec![String::new()];
    let mut id = 500;
    while let Some(d) = todo.pop() {
        id += 1;
        p.request(id, Message::List { path: &d }, &[])?;
        loop {
            let g = p.recv_checked()?;
            match g.message() {
                Message::ListEntry(e) => {
                    let path = if d.is_empty() {
                        e.name.to_string()
                    } else {
                        format!("{d}/{}", e.name)
                    };
                    if e.kind == EntryKind::Dir && dirs {
                        todo.push(path.clone());
                    }
                    let item = Item {
                        kind: e.kind,
                        size: e.size,
                        sha: None,
                    };
                    out.insert(path, item);
                }
                Message::Done { .. } if g.id == id => break,
                _ => return Err(format!("list '{d}': {}", g.describe())),
            }
        }
    }
    for (path, item) in out.iter_mut() {
        if item.kind == EntryKind::File {
            id += 1;
            item.sha = Some(sha(&fetch(p, id, path)?));
        }
    }
    Ok(out)
}

/// Download `path` whole (its digest checked).
fn fetch(p: &mut Peer<'_>, id: u32, path: &str) -> Result<Vec<u8>, String> {
    p.request(id, Message::Get { path, offset: 0 }, &[])?;
    let mut got = Vec::new();
    loop {
        let g = p.recv_checked()?;
        match g.message() {
            Message::FileInfo { .. } | Message::Data if g.id == id => {
                got.extend_from_slice(&g.body)
            }
            Message::Done { sha256, .. } if g.id == id => {
                if sha256 != Some(sha(&got)) {
                    return Err(format!("get {path}: the digest does not match the bytes"));
                }
                return Ok(got);
            }
            _ => return Err(format!("get {path}: {}", g.describe())),
        }
    }
}

/// Run every case of `server` on `t`.
pub fn run_config(t: &dyn Target, server: Server) -> Tally {
    let mut tally = Tally::default();
    let (ack, mut model) = match provision(t) {
        Ok(x) => x,
        Err(e) => {
            tally
                .failures
                .push(format!("{} {server:?}: the fixture: {e}", t.name()));
            return tally;
        }
    };
    for (i, c) in catalogue().iter().enumerate() {
        if !c.on.contains(&server) {
            continue;
        }
        if !c.applies(&ack) {
            tally.not_applicable.push(c.name);
            continue;
        }
        tally.ran += 1;
        match run_case(t, &ack, &mut model, c, i as u64 + 1) {
            Ok(()) => tally.passed += 1,
            Err(e) => {
                tally.failures.push(format!(
                    "{} {server:?} \"{}\": expected {}; {e}",
                    t.name(),
                    c.name,
                    shown(&c.expect, &ack)
                ));
                // Start the next case from what the server holds now.
                if let Ok(m) = resync(t, &ack) {
                    model = m;
                }
            }
        }
    }
    tally
}

fn resync(t: &dyn Target, ack: &Ack) -> Result<Model, String> {
    let mut p = t.connect(0)?;
    p.handshake(t.key(), crate::peer::nonce(2))?;
    snapshot(&mut p, ack)
}

/// An expectation as a failure report states it.
fn shown(e: &Expect, ack: &Ack) -> String {
    match e {
        Expect::Error {
            id,
            code,
            phrase,
            then,
        } => format!(
            "Error id {id} {} containing {:?}, then {}",
            code.name().unwrap_or("?"),
            phrase.text(ack),
            if *then == Then::Close {
                "close"
            } else {
                "open"
            }
        ),
        Expect::Reply { id, kind } => format!("{kind:?} id {id}"),
        e => format!("{e:?}"),
    }
}

/// Run one case; `n` numbers its connections' nonces.
pub fn run_case(
    t: &dyn Target,
    ack: &Ack,
    model: &mut Model,
    c: &Case,
    n: u64,
) -> Result<(), String> {
    let fx = Fx::new(t, *ack, n << 20);
    {
        let mut p = fx.connect(c.peer, c.stage)?;
        let got = act(&mut p, &c.act, &c.expect, &fx)?;
        verify(&mut p, got, &c.expect, ack)?;
    }
    check_after(t, &fx, model, &c.after)
}

fn act(p: &mut Peer<'_>, a: &Act, expect: &Expect, fx: &Fx<'_>) -> Result<Observed, String> {
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
    }
    if matches!(expect, Expect::Nothing) {
        p.request(4242, Message::Ping { stamp: 0x5eed }, &[])?;
    }
    recv(p)
}

fn verify(p: &mut Peer<'_>, got: Observed, expect: &Expect, ack: &Ack) -> Result<(), String> {
    match (expect, got) {
        (
            Expect::Error {
                id,
                code,
                phrase,
                then,
            },
            Observed::Frame(g),
        ) => {
            let phrase = phrase.text(ack);
            let Some((c, text)) = g.error() else {
                return Err(format!("got {}", g.describe()));
            };
            if c != *code || g.id != *id || !text.contains(&phrase) {
                return Err(format!("got {}", g.describe()));
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
                return Err(format!("got {}", g.describe()));
            }
            if *kind == Kind::HelloAck {
                return Ok(());
            }
            p.ping_ok(4243)
        }
        (Expect::Closed, Observed::Closed) => Ok(()),
        (Expect::Nothing, Observed::Frame(g)) => match g.message() {
            Message::Pong { stamp: 0x5eed } if g.id == 4242 => Ok(()),
            _ => Err(format!("got {}", g.describe())),
        },
        (Expect::Ok, Observed::Done) => p.ping_ok(4243),
        (_, Observed::Frame(g)) => Err(format!("got {}", g.describe())),
        (_, got) => Err(format!("got {got:?}")),
    }
}

/// After a case: a well-behaved client is served; the case's conditions
/// hold; the tree is what it was plus what the case stored; the target's
/// invariants hold.
fn check_after(
    t: &dyn Target,
    fx: &Fx<'_>,
    model: &mut Model,
    after: &[After],
) -> Result<(), String> {
    let mut p = fx
        .connect(0, super::Stage::Open)
        .map_err(|e| format!("a well-behaved client was not served: {e}"))?;
    p.ping_ok(1)
        .map_err(|e| format!("a well-behaved client was not served: {e}"))?;
    for a in after {
        match a {
            After::Missing(path) => {
                p.request(3, Message::Stat { path }, &[])?;
                let g = p.recv_checked()?;
                match g.error() {
                    Some((ErrorCode::NOT_FOUND, _)) => {}
                    _ => {
                        return Err(format!(
                            "'{path}' must not exist: stat gave {}",
                            g.describe()
                        ))
                    }
                }
            }
            After::Content(path, want) => {
                match get_exact(&mut p, path, want)? {
                    Observed::Done => {}
                    o => return Err(format!("get {path}: {o:?}")),
                }
                learn(model, path, want);
            }
            After::Stored(path) => {
                let data = fetch(&mut p, 3, path)?;
                learn(model, path, &data);
            }
        }
    }
    let now = snapshot(&mut p, &fx.ack)?;
    if now != *model {
        return Err(format!("the served tree changed: {}", diff(model, &now)));
    }
    t.invariants(&mut p)
}

/// The tree holds `path` with `data` from now on (and its parents).
fn learn(model: &mut Model, path: &str, data: &[u8]) {
    let mut at = 0;
    while let Some(i) = path[at..].find('/') {
        let dir = Item {
            kind: EntryKind::Dir,
            size: 0,
            sha: None,
        };
        model.insert(path[..at + i].to_string(), dir);
        at += i + 1;
    }
    let file = Item {
        kind: EntryKind::File,
        size: data.len() as u64,
        sha: Some(sha(data)),
    };
    model.insert(path.to_string(), file);
}

fn diff(want: &Model, got: &Model) -> String {
    let mut s = String::new();
    for (k, v) in want {
        match got.get(k) {
            None => {
                let _ = write!(s, "\n  '{k}' is gone ({:?}, {} bytes)", v.kind, v.size);
            }
            Some(g) if g != v => {
                let _ = write!(s, "\n  '{k}' changed: {:?} {} bytes", g.kind, g.size);
            }
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            let _ = write!(s, "\n  '{k}' appeared ({:?}, {} bytes)", v.kind, v.size);
        }
    }
    s
}

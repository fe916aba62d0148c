//! A scripted [`Backend`] and a checking client, shared by the engine's unit
//! tests (`server/test.rs`) and its fuzz target (`fuzz/fuzz_targets/server.rs`
//! includes this file with `#[path]`). The includer names the protocol crate
//! `tp` in the parent module (`use crate as tp;` / `use tether_proto as tp;`).
//!
//! [`Fake`] keeps files and kept partials in maps. Every `poll_*` asks
//! [`Fake::answer`] first: an injected failure, a request held by the test,
//! or the next scripted [`Answer`] (`Ready` when the script is empty) decide
//! whether it is `Ready`, `Pending` (the request is then owed a
//! `handle_ready`: [`Fake::take_ready`]) or an `Err`. It records every
//! `start`, `kill` and `end`, and panics on a broken contract: a poll between
//! `Pending` and `handle_ready`, a request started twice or ended twice,
//! upload bytes out of order, a commit whose size or digest differs from the
//! bytes it was given.
//!
//! [`Client`] is the peer: it builds frames (plain, sealed or encrypted with
//! the session keys of a real [`ClientHandshake`]) and decodes everything the
//! engine sends, checking that it is a valid frame stream, sealed with tags
//! that verify after AuthOk and encrypted where negotiated.
#![allow(dead_code)]

extern crate std;

use core::task::Poll;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use sha2::{Digest as _, Sha256};

use super::tp;
use tp::codec::{encode_frame, encode_head, Decoder, Event, Limits};
use tp::handshake::{ClientHandshake, Opener, SessionKeys, TagBuilder};
use tp::message::{Caps, Proof};
use tp::message::{
    Command, Digest, Entry, EntryKind, ErrorCode, ExitStatus, Header, Message, Stream,
};
use tp::server::{Backend, Count, Created, End, Failure, Kill, Opened, Output, Peer, Req, Start};
use tp::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN, TAG_LEN, VERSION};

/// Which backend call an answer or a failure is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    Stat,
    List,
    Open,
    Prefix,
    Read,
    Unchanged,
    Create,
    Write,
    Commit,
    Remove,
    Exec,
}

/// A scripted answer to one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ready,
    Pending,
    Fail,
}

/// The code a scripted failure carries.
pub const FAIL_CODE: ErrorCode = ErrorCode::IO;

/// One call the engine made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// `start`: the request and a description (`"Open a"`, `"Commit 3"`…).
    Start(Req, String),
    Kill(Req, Kill),
    End(Req, End),
}

/// A commit the engine asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub req: Req,
    pub path: String,
    pub size: u64,
    pub sha256: Digest,
}

#[derive(Debug)]
enum Work {
    Stat {
        path: String,
        name: String,
    },
    List {
        path: String,
        names: Option<Vec<String>>,
        next: usize,
    },
    Get {
        path: String,
        /// The content when opened.
        snap: Option<Vec<u8>>,
        prefix: Option<u64>,
        check: bool,
    },
    Put {
        path: String,
        size: u64,
        force: bool,
        resume: bool,
        created: bool,
        data: Vec<u8>,
        commit: Option<(u64, Digest)>,
    },
    Remove(String),
    Exec {
        /// Chunks still to return.
        out: VecDeque<(Stream, Vec<u8>)>,
        status: ExitStatus,
        /// Runs until killed.
        forever: bool,
        /// It could not be started.
        fails: bool,
        killed: Option<Kill>,
    },
}

/// The scripted backend.
#[derive(Debug, Default)]
pub struct Fake {
    /// Files by normalized path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Kept partial uploads by normalized path.
    pub partials: BTreeMap<String, Vec<u8>>,
    /// Answers for the next polls, in order (`Ready` once empty).
    pub answers: VecDeque<Answer>,
    /// Requests (by id) whose polls answer `Pending` until released.
    pub hold: BTreeSet<u32>,
    /// Injected failures: (request id, call).
    pub fail: BTreeSet<(u32, Call)>,
    /// Every start, kill and end, in order.
    pub log: Vec<Rec>,
    /// Every commit started.
    pub commits: Vec<Commit>,
    /// Slots that answered `Pending` and are owed a `handle_ready`.
    pending: BTreeMap<u16, Req>,
    /// Requests that became ready without being polled (a killed command).
    woken: Vec<Req>,
    /// Slots of commands that run until killed (pending, not owed a ready).
    sleeping: BTreeSet<u16>,
    /// Live requests by slot.
    ops: BTreeMap<u16, (Req, Work)>,
    /// Wall clock offset.
    pub clock: u64,
    /// What `refused` answers.
    pub refuse: Option<u64>,
    pub auth_failures: u32,
    pub counts: BTreeMap<String, u64>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            clock: 1_795_355_107_000,
            ..Fake::default()
        }
    }

    /// Requests owed a `handle_ready` (not held): the caller hands each to
    /// the engine.
    pub fn take_ready(&mut self) -> Vec<Req> {
        let held: Vec<u16> = self
            .pending
            .iter()
            .filter(|(s, r)| self.hold.contains(&r.id) || self.sleeping.contains(s))
            .map(|(s, _)| *s)
            .collect();
        let mut out: Vec<Req> = core::mem::take(&mut self.woken);
        let pending = core::mem::take(&mut self.pending);
        for (s, r) in pending {
            if held.contains(&s) {
                self.pending.insert(s, r);
            } else {
                out.push(r);
            }
        }
        out
    }

    /// Whether a request is owed a `handle_ready`.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.woken.is_empty()
    }

    /// The bytes an upload in flight was given so far (its resumed prefix
    /// and what `write` received).
    pub fn upload_bytes(&self, id: u32) -> Option<&[u8]> {
        self.ops.values().find_map(|(r, w)| match w {
            Work::Put {
                data,
                created: true,
                ..
            } if r.id == id => Some(&data[..]),
            _ => None,
        })
    }

    /// Requests started and not ended.
    pub fn live(&self) -> Vec<Req> {
        self.ops.values().map(|(r, _)| *r).collect()
    }

    /// The ends recorded for request id `id`.
    pub fn ends_of(&self, id: u32) -> Vec<End> {
        self.log
            .iter()
            .filter_map(|r| match r {
                Rec::End(q, how) if q.id == id => Some(*how),
                _ => None,
            })
            .collect()
    }

    /// The starts recorded for request id `id`.
    pub fn starts_of(&self, id: u32) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|r| match r {
                Rec::Start(q, s) if q.id == id => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// The kills recorded for request id `id`.
    pub fn kills_of(&self, id: u32) -> Vec<Kill> {
        self.log
            .iter()
            .filter_map(|r| match r {
                Rec::Kill(q, k) if q.id == id => Some(*k),
                _ => None,
            })
            .collect()
    }

    /// Every started request has exactly one end (checks the log).
    pub fn check_ends(&self) -> Result<(), String> {
        let mut open: BTreeMap<u16, u32> = BTreeMap::new();
        for r in &self.log {
            match r {
                Rec::Start(q, what) if is_first_start(what) => {
                    if let Some(id) = open.insert(q.slot, q.id) {
                        return Err(format!("{q:?} started while request {id} holds its slot"));
                    }
                }
                Rec::End(q, _) => {
                    let was = open.remove(&q.slot);
                    if was != Some(q.id) {
                        return Err(format!("{q:?} ended without being in flight"));
                    }
                }
                _ => {}
            }
        }
        if open.is_empty() {
            Ok(())
        } else {
            Err(format!("started and never ended: {open:?}"))
        }
    }

    fn bug(&self, msg: String) -> ! {
        panic!("backend contract broken: {msg}\nlog: {:?}", self.log)
    }

    /// The engine polls `req` for `call`: decide the answer.
    pub fn answer(&mut self, req: Req, call: Call) -> Answer {
        match self.ops.get(&req.slot) {
            Some((r, _)) if *r == req => {}
            _ => self.bug(format!(
                "{call:?} polled for {req:?}, which is not in flight"
            )),
        }
        if self.pending.contains_key(&req.slot) {
            self.bug(format!(
                "{call:?} polled for {req:?} after Pending and before handle_ready"
            ));
        }
        if self.fail.contains(&(req.id, call)) {
            return Answer::Fail;
        }
        if self.hold.contains(&req.id) {
            self.pending.insert(req.slot, req);
            return Answer::Pending;
        }
        let a = self.answers.pop_front().unwrap_or(Answer::Ready);
        if a == Answer::Pending {
            self.pending.insert(req.slot, req);
        }
        a
    }

    fn work(&mut self, req: Req) -> &mut Work {
        match self.ops.get_mut(&req.slot) {
            Some((r, w)) if *r == req => w,
            _ => panic!("backend contract broken: {req:?} is not in flight"),
        }
    }

    fn begin(&mut self, req: Req, w: Work) {
        if let Some((r, _)) = self.ops.get(&req.slot) {
            let r = *r;
            self.bug(format!("{req:?} started while {r:?} holds the slot"));
        }
        self.ops.insert(req.slot, (req, w));
    }
}

fn is_first_start(what: &str) -> bool {
    !(what.starts_with("HashPrefix")
        || what.starts_with("CheckUnchanged")
        || what.starts_with("Commit"))
}

fn failed<'a>(what: &'static str) -> Failure<'a> {
    Failure::new(FAIL_CODE, what)
}

/// What a command does: `sleep` runs until killed, `fail` cannot start,
/// `false` exits 1, any other prints its arguments, those starting `e:` to
/// stderr (without the prefix), one chunk each, and exits 0.
fn program(command: &Command<'_>) -> Work {
    let mut out = VecDeque::new();
    let (prog, args): (&str, Vec<&str>) = match command {
        Command::Shell(line) => ("sh", vec![*line]),
        Command::Argv(a) => {
            let mut it = a.iter();
            (it.next().unwrap_or(""), it.collect())
        }
    };
    for a in args {
        match a.strip_prefix("e:") {
            Some(e) => out.push_back((Stream::Stderr, e.as_bytes().to_vec())),
            None => out.push_back((Stream::Stdout, a.as_bytes().to_vec())),
        }
    }
    out.retain(|(_, b)| !b.is_empty());
    Work::Exec {
        out,
        status: ExitStatus::Code(i32::from(prog == "false")),
        forever: prog == "sleep",
        fails: prog == "fail",
        killed: None,
    }
}

impl Backend for Fake {
    fn start(&mut self, req: Req, work: Start<'_>) {
        let desc = match &work {
            Start::Stat { path } => format!("Stat {path}"),
            Start::List { path } => format!("List {path}"),
            Start::Open { path } => format!("Open {path}"),
            Start::HashPrefix { len } => format!("HashPrefix {len}"),
            Start::CheckUnchanged => "CheckUnchanged".to_string(),
            Start::Create {
                path,
                size,
                force,
                resume,
            } => format!("Create {path} size={size} force={force} resume={resume}"),
            Start::Commit { size, .. } => format!("Commit {size}"),
            Start::Remove { path } => format!("Remove {path}"),
            Start::Exec {
                command,
                timeout_ms,
            } => format!("Exec {command:?} timeout={timeout_ms:?}"),
            #[allow(unreachable_patterns)]
            _ => format!("{work:?}"),
        };
        self.log.push(Rec::Start(req, desc));
        match work {
            Start::Stat { path } => self.begin(
                req,
                Work::Stat {
                    path: path.to_string(),
                    name: path.name().to_string(),
                },
            ),
            Start::List { path } => self.begin(
                req,
                Work::List {
                    path: path.to_string(),
                    names: None,
                    next: 0,
                },
            ),
            Start::Open { path } => self.begin(
                req,
                Work::Get {
                    path: path.to_string(),
                    snap: None,
                    prefix: None,
                    check: false,
                },
            ),
            Start::HashPrefix { len } => match self.work(req) {
                Work::Get {
                    snap: Some(s),
                    prefix,
                    ..
                } if prefix.is_none() && len > 0 && len <= s.len() as u64 => *prefix = Some(len),
                w => {
                    let w = format!("{w:?}");
                    self.bug(format!("HashPrefix {len} for {req:?} in {w}"))
                }
            },
            Start::CheckUnchanged => match self.work(req) {
                Work::Get {
                    snap: Some(_),
                    check,
                    ..
                } if !*check => *check = true,
                w => {
                    let w = format!("{w:?}");
                    self.bug(format!("CheckUnchanged for {req:?} in {w}"))
                }
            },
            Start::Create {
                path,
                size,
                force,
                resume,
            } => self.begin(
                req,
                Work::Put {
                    path: path.to_string(),
                    size,
                    force,
                    resume,
                    created: false,
                    data: Vec::new(),
                    commit: None,
                },
            ),
            Start::Commit { size, sha256 } => {
                let w = self.work(req);
                let Work::Put {
                    path,
                    created: true,
                    data,
                    commit: commit @ None,
                    size: announced,
                    ..
                } = w
                else {
                    let w = format!("{w:?}");
                    self.bug(format!("Commit for {req:?} in {w}"));
                };
                let have: Digest = Sha256::digest(&data[..]).into();
                if size != data.len() as u64 || size != *announced || sha256 != have {
                    let msg = format!(
                        "Commit {size} of {req:?} over {} bytes given (announced {announced}), digest {} given {}",
                        data.len(),
                        hex(&sha256),
                        hex(&have)
                    );
                    self.bug(msg);
                }
                *commit = Some((size, sha256));
                let path = path.clone();
                self.commits.push(Commit {
                    req,
                    path,
                    size,
                    sha256,
                });
            }
            Start::Remove { path } => self.begin(req, Work::Remove(path.to_string())),
            Start::Exec { command, .. } => {
                let w = program(&command);
                self.begin(req, w)
            }
            #[allow(unreachable_patterns)]
            _ => self.bug(format!("unknown start for {req:?}")),
        }
    }

    fn poll_stat(&mut self, req: Req) -> Poll<Result<Entry<'_>, Failure<'_>>> {
        match self.answer(req, Call::Stat) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Err(failed("scripted stat failure"))),
            Answer::Ready => {}
        }
        let files = &self.files;
        let Some((_, Work::Stat { path, name })) = self.ops.get(&req.slot) else {
            panic!("poll_stat for {req:?}, not a Stat");
        };
        Poll::Ready(if path == "." {
            Ok(Entry {
                name: ".",
                kind: EntryKind::Dir,
                size: 0,
                modified: 0,
            })
        } else {
            match files.get(path) {
                Some(d) => Ok(Entry {
                    name,
                    kind: EntryKind::File,
                    size: d.len() as u64,
                    modified: 7,
                }),
                None => Err(Failure::new(ErrorCode::NOT_FOUND, "no such file")),
            }
        })
    }

    fn poll_list(&mut self, req: Req) -> Poll<Option<Result<Entry<'_>, Failure<'_>>>> {
        match self.answer(req, Call::List) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Some(Err(failed("scripted list failure")))),
            Answer::Ready => {}
        }
        let snapshot: Vec<String> = self.files.keys().cloned().collect();
        let files = &self.files;
        let Some((_, Work::List { path, names, next })) = self.ops.get_mut(&req.slot) else {
            panic!("poll_list for {req:?}, not a List");
        };
        if names.is_none() {
            if path != "." {
                let code = if files.contains_key(path.as_str()) {
                    ErrorCode::NOT_DIRECTORY
                } else {
                    ErrorCode::NOT_FOUND
                };
                return Poll::Ready(Some(Err(Failure::new(code, "not a directory here"))));
            }
            *names = Some(snapshot);
        }
        let names = names.as_ref().unwrap();
        let Some(name) = names.get(*next) else {
            return Poll::Ready(None);
        };
        *next += 1;
        let size = files.get(name).map_or(0, |d| d.len() as u64);
        Poll::Ready(Some(Ok(Entry {
            name,
            kind: EntryKind::File,
            size,
            modified: 7,
        })))
    }

    fn poll_open(&mut self, req: Req) -> Poll<Result<Opened, Failure<'_>>> {
        match self.answer(req, Call::Open) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Err(failed("scripted open failure"))),
            Answer::Ready => {}
        }
        let files = &self.files;
        let Some((_, Work::Get { path, snap, .. })) = self.ops.get_mut(&req.slot) else {
            panic!("poll_open for {req:?}, not a Get");
        };
        if snap.is_some() {
            panic!("poll_open for {req:?} after it opened");
        }
        Poll::Ready(match files.get(path.as_str()) {
            Some(d) => {
                *snap = Some(d.clone());
                Ok(Opened {
                    size: d.len() as u64,
                    modified: 7,
                })
            }
            None => Err(Failure::new(ErrorCode::NOT_FOUND, "no such file")),
        })
    }

    fn poll_prefix(&mut self, req: Req) -> Poll<Result<sha2::Sha256, Failure<'_>>> {
        match self.answer(req, Call::Prefix) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Err(failed("scripted prefix failure"))),
            Answer::Ready => {}
        }
        let Work::Get {
            snap: Some(s),
            prefix: Some(len),
            ..
        } = self.work(req)
        else {
            panic!("poll_prefix for {req:?} without HashPrefix");
        };
        let mut h = Sha256::new();
        h.update(&s[..*len as usize]);
        Poll::Ready(Ok(h))
    }

    fn poll_read(
        &mut self,
        req: Req,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Failure<'_>>> {
        match self.answer(req, Call::Read) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Err(failed("scripted read failure"))),
            Answer::Ready => {}
        }
        let files = &self.files;
        let Some((
            _,
            Work::Get {
                path,
                snap: Some(s),
                check: false,
                ..
            },
        )) = self.ops.get(&req.slot)
        else {
            panic!("poll_read for {req:?}: not an open Get, or after CheckUnchanged");
        };
        if offset >= s.len() as u64 || buf.is_empty() {
            panic!(
                "poll_read for {req:?} at {offset} of {} into {} bytes",
                s.len(),
                buf.len()
            );
        }
        let cur = files.get(path.as_str()).map_or(&[][..], |d| &d[..]);
        let at = (offset as usize).min(cur.len());
        let k = buf.len().min(cur.len() - at);
        buf[..k].copy_from_slice(&cur[at..at + k]);
        Poll::Ready(Ok(k))
    }

    fn poll_unchanged(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        match self.answer(req, Call::Unchanged) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Err(failed("scripted check failure"))),
            Answer::Ready => {}
        }
        let files = &self.files;
        let Some((
            _,
            Work::Get {
                path,
                snap: Some(s),
                check: true,
                ..
            },
        )) = self.ops.get(&req.slot)
        else {
            panic!("poll_unchanged for {req:?} without CheckUnchanged");
        };
        Poll::Ready(if files.get(path.as_str()) == Some(s) {
            Ok(())
        } else {
            Err(Failure::new(ErrorCode::CHANGED, "the file changed"))
        })
    }

    fn poll_create(&mut self, req: Req) -> Poll<Result<Created, Failure<'_>>> {
        match self.answer(req, Call::Create) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Err(failed("scripted create failure"))),
            Answer::Ready => {}
        }
        let busy = {
            let Some((_, Work::Put { path, created, .. })) = self.ops.get(&req.slot) else {
                panic!("poll_create for {req:?}, not a Put");
            };
            if *created {
                panic!("poll_create for {req:?} after it was created");
            }
            let path = path.clone();
            self.ops.values().any(|(r, w)| {
                *r != req && matches!(w, Work::Put { path: p, created: true, .. } if *p == path)
            })
        };
        let (files, partials) = (&self.files, &mut self.partials);
        let Some((
            _,
            Work::Put {
                path,
                size,
                force,
                resume,
                created,
                data,
                ..
            },
        )) = self.ops.get_mut(&req.slot)
        else {
            unreachable!()
        };
        if busy {
            return Poll::Ready(Err(Failure::new(
                ErrorCode::BUSY,
                "another upload holds it",
            )));
        }
        if !*force && files.contains_key(path.as_str()) {
            return Poll::Ready(Err(Failure::new(ErrorCode::EXISTS, "it exists")));
        }
        *created = true;
        let kept = partials.remove(path.as_str());
        Poll::Ready(Ok(match kept {
            Some(p) if *resume && !p.is_empty() && p.len() as u64 <= *size => {
                let hasher = Sha256::new_with_prefix(&p);
                let offset = p.len() as u64;
                *data = p;
                Created {
                    offset,
                    hasher: Some(hasher),
                }
            }
            _ => Created {
                offset: 0,
                hasher: None,
            },
        }))
    }

    fn write(&mut self, req: Req, offset: u64, bytes: &[u8]) -> Result<(), Failure<'_>> {
        match self.ops.get(&req.slot) {
            Some((r, _)) if *r == req => {}
            _ => self.bug(format!("write for {req:?}, which is not in flight")),
        }
        if self.pending.contains_key(&req.slot) {
            self.bug(format!("write for {req:?} while its Create is pending"));
        }
        let fail = self.fail.contains(&(req.id, Call::Write))
            || self.answers.front() == Some(&Answer::Fail);
        if self.answers.front() == Some(&Answer::Fail) {
            self.answers.pop_front();
        }
        let Work::Put {
            created: true,
            data,
            commit: None,
            size,
            ..
        } = self.work(req)
        else {
            panic!("write for {req:?}: not a created upload, or after Commit");
        };
        if offset != data.len() as u64 || offset + bytes.len() as u64 > *size || bytes.is_empty() {
            let msg = format!(
                "write of {} bytes at {offset} for {req:?} holding {} of {size}",
                bytes.len(),
                data.len()
            );
            self.bug(msg);
        }
        if fail {
            return Err(Failure::new(ErrorCode::NO_SPACE, "scripted write failure"));
        }
        data.extend_from_slice(bytes);
        Ok(())
    }

    fn poll_commit(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        match self.answer(req, Call::Commit) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Err(failed("scripted commit failure"))),
            Answer::Ready => {}
        }
        let Some((
            _,
            Work::Put {
                path,
                data,
                commit: Some(_),
                ..
            },
        )) = self.ops.get(&req.slot)
        else {
            panic!("poll_commit for {req:?} without Commit");
        };
        self.files.insert(path.clone(), data.clone());
        Poll::Ready(Ok(()))
    }

    fn poll_remove(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        match self.answer(req, Call::Remove) {
            Answer::Pending => return Poll::Pending,
            Answer::Fail => return Poll::Ready(Err(failed("scripted remove failure"))),
            Answer::Ready => {}
        }
        let Some((_, Work::Remove(path))) = self.ops.get(&req.slot) else {
            panic!("poll_remove for {req:?}, not a Remove");
        };
        Poll::Ready(match self.files.remove(path.as_str()) {
            Some(_) => Ok(()),
            None => Err(Failure::new(ErrorCode::NOT_FOUND, "no such file")),
        })
    }

    fn poll_exec(&mut self, req: Req, buf: &mut [u8]) -> Poll<Result<Output, Failure<'_>>> {
        // A killed command ends whatever the script says.
        let killed = matches!(self.ops.get(&req.slot), Some((r, Work::Exec { killed: Some(_), .. })) if *r == req);
        if !killed {
            match self.answer(req, Call::Exec) {
                Answer::Pending => return Poll::Pending,
                Answer::Fail => return Poll::Ready(Err(failed("scripted exec failure"))),
                Answer::Ready => {}
            }
        } else if self.pending.contains_key(&req.slot) {
            self.bug(format!("poll_exec for killed {req:?} before handle_ready"));
        }
        let Work::Exec {
            out,
            status,
            forever,
            fails,
            killed,
        } = self.work(req)
        else {
            panic!("poll_exec for {req:?}, not an Exec");
        };
        if *fails {
            return Poll::Ready(Err(Failure::new(ErrorCode::EXEC_FAILED, "no such program")));
        }
        if let Some((stream, chunk)) = out.front_mut() {
            if buf.is_empty() {
                panic!("poll_exec for {req:?} with an empty buffer");
            }
            let k = buf.len().min(chunk.len());
            buf[..k].copy_from_slice(&chunk[..k]);
            let stream = *stream;
            chunk.drain(..k);
            if chunk.is_empty() {
                out.pop_front();
            }
            return Poll::Ready(Ok(Output::Bytes(stream, k)));
        }
        match killed {
            Some(Kill::Cancel) => Poll::Ready(Ok(Output::Exited(ExitStatus::Signal(15)))),
            Some(Kill::Timeout) => Poll::Ready(Ok(Output::Exited(ExitStatus::Signal(9)))),
            None if *forever => {
                self.pending.insert(req.slot, req);
                self.sleeping.insert(req.slot);
                Poll::Pending
            }
            None => Poll::Ready(Ok(Output::Exited(*status))),
        }
    }

    fn kill(&mut self, req: Req, why: Kill) {
        self.log.push(Rec::Kill(req, why));
        let Work::Exec { killed, .. } = self.work(req) else {
            panic!("kill of {req:?}, not an Exec");
        };
        if killed.is_some() {
            panic!("{req:?} killed twice");
        }
        *killed = Some(why);
        // It exits: the engine is told.
        self.sleeping.remove(&req.slot);
        if self.pending.remove(&req.slot).is_some() {
            self.woken.push(req);
        }
    }

    fn end(&mut self, req: Req, how: End) {
        self.log.push(Rec::End(req, how));
        match self.ops.remove(&req.slot) {
            Some((r, w)) if r == req => {
                self.pending.remove(&req.slot);
                self.sleeping.remove(&req.slot);
                self.woken.retain(|q| *q != req);
                if let Work::Put {
                    path,
                    created: true,
                    data,
                    commit,
                    ..
                } = w
                {
                    match how {
                        End::Done => {
                            if commit.is_none() {
                                self.bug(format!("{req:?} ended Done without a commit"));
                            }
                        }
                        End::Failed(_) => {}
                        End::Interrupted(_) => {
                            if commit.is_none() || self.files.get(&path).is_none_or(|f| *f != data)
                            {
                                self.partials.insert(path, data);
                            }
                        }
                    }
                }
            }
            other => {
                let other = format!("{other:?}");
                self.bug(format!(
                    "end of {req:?} ({how:?}), which is not in flight: {other}"
                ))
            }
        }
    }

    fn time_ms(&mut self, now_ms: u64) -> u64 {
        self.clock + now_ms
    }

    fn refused(&mut self, _peer: Peer, _now_ms: u64) -> Option<u64> {
        self.refuse
    }

    fn auth_failed(&mut self, _peer: Peer, _now_ms: u64) -> Option<u64> {
        self.auth_failures += 1;
        None
    }

    fn auth_succeeded(&mut self, _peer: Peer) {}

    fn count(&mut self, what: Count) {
        let k = match what {
            Count::BytesIn(_) => "BytesIn".to_string(),
            Count::BytesOut(_) => "BytesOut".to_string(),
            w => format!("{w:?}"),
        };
        *self.counts.entry(k).or_default() += 1;
    }
}

pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// One frame the engine sent, decoded (and decrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub header: Vec<u8>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn head(&self) -> Header<'_> {
        Header::parse(&self.header).expect("checked when received")
    }
    pub fn id(&self) -> u32 {
        self.head().request_id
    }
    /// The error code, if it is an Error.
    pub fn error(&self) -> Option<ErrorCode> {
        match self.head().message {
            Message::Error { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The client's side: frames out, checked frames in.
pub struct Client {
    pub hs: Option<ClientHandshake<'static>>,
    pub keys: Option<SessionKeys>,
    pub encrypted: bool,
    dec: Decoder<Vec<u8>>,
    cur: Option<(PrefixRepr, Vec<u8>, Vec<u8>)>,
    tag: Option<TagBuilder>,
    /// Frames received, in order.
    pub frames: Vec<Reply>,
    /// The Auth proof to send (a HelloAck with AUTH_PSK arrived).
    pub auth: Option<Proof>,
    /// The negotiated limits, once known.
    pub limits: Option<Limits>,
    /// Total frames received.
    pub received: usize,
}

impl Client {
    /// A client with `key` (asking for encryption when `encrypt`).
    pub fn new(key: Option<[u8; 32]>, encrypt: bool, max_header: u16, max_chunk: u32) -> Client {
        let caps = if encrypt {
            Caps::ENCRYPT
        } else {
            Caps::empty()
        };
        Client {
            hs: Some(ClientHandshake::new(
                key, [7; 16], max_header, max_chunk, caps, "script/0",
            )),
            keys: None,
            encrypted: false,
            dec: Decoder::new(vec![0; 8192], Limits::HANDSHAKE),
            cur: None,
            tag: None,
            frames: Vec::new(),
            auth: None,
            limits: None,
            received: 0,
        }
    }

    /// The Hello frame.
    pub fn hello(&self) -> Vec<u8> {
        let hs = self.hs.as_ref().expect("before the handshake");
        plain(&Header::new(0, Message::Hello(hs.hello().clone())), &[])
    }

    /// One frame as this client sends it now: sealed or encrypted after AuthOk.
    pub fn frame(&mut self, h: &Header<'_>, body: &[u8]) -> Vec<u8> {
        let mut hb = vec![0u8; PREFIX_LEN + h.buffer_len()];
        let n = encode_head(h, 0, Flags::empty(), &mut hb)
            .expect("fits")
            .len();
        let header = hb[PREFIX_LEN..n].to_vec();
        self.raw(&header, body, self.keys.is_some())
    }

    /// A frame around raw header bytes (checksum valid): sealed (or
    /// encrypted, as negotiated) with the session keys when `seal` and the
    /// client has them; a sealed frame without keys gets a made-up tag.
    pub fn raw(&mut self, header: &[u8], body: &[u8], seal: bool) -> Vec<u8> {
        let enc = seal && self.encrypted;
        let flags = match (seal, enc) {
            (false, _) => Flags::empty(),
            (true, false) => Flags::SEALED,
            (true, true) => Flags::SEALED.union(Flags::ENCRYPTED),
        };
        let repr = PrefixRepr {
            version: VERSION,
            flags,
            header_len: header.len() as u16,
            body_len: body.len() as u64,
        };
        let mut f = vec![0u8; PREFIX_LEN];
        f.extend_from_slice(header);
        f.extend_from_slice(body);
        if !seal {
            repr.emit(&mut Prefix::new_unchecked(&mut f[..PREFIX_LEN]), header);
            return f;
        }
        let tag = match self.keys.as_mut() {
            Some(k) if enc => {
                let c = k.encrypt.as_mut().expect("encrypted session");
                let tag = c.seal_in_place(&repr, &mut f[PREFIX_LEN..]);
                let (p, rest) = f.split_at_mut(PREFIX_LEN);
                repr.emit(&mut Prefix::new_unchecked(p), &rest[..header.len()]);
                tag
            }
            Some(k) => {
                let (p, rest) = f.split_at_mut(PREFIX_LEN);
                repr.emit(&mut Prefix::new_unchecked(&mut *p), &rest[..header.len()]);
                let mut t = k.seal.begin(p);
                t.update(rest);
                t.finish()
            }
            None => {
                let (p, rest) = f.split_at_mut(PREFIX_LEN);
                repr.emit(&mut Prefix::new_unchecked(p), &rest[..header.len()]);
                [0x11; TAG_LEN]
            }
        };
        f.extend_from_slice(&tag);
        f
    }

    /// Skip one sequence number of the sending direction (a frame lost).
    pub fn skip_seq(&mut self) {
        if let Some(k) = self.keys.as_mut() {
            match k.encrypt.as_mut() {
                Some(c) => {
                    let mut junk = [0u8; 1];
                    let repr = PrefixRepr {
                        version: VERSION,
                        flags: Flags::SEALED.union(Flags::ENCRYPTED),
                        header_len: 1,
                        body_len: 0,
                    };
                    let _ = c.seal_in_place(&repr, &mut junk);
                }
                None => {
                    let _ = k.seal.begin(&[0u8; PREFIX_LEN]);
                }
            }
        }
    }

    /// Decode bytes the engine sent; `Err` says what is wrong with them.
    pub fn feed(&mut self, mut out: &[u8]) -> Result<(), String> {
        loop {
            let (n, r) = self.dec.handle_bytes(out);
            out = &out[n..];
            match r {
                Err(e) => return Err(format!("the engine sent bytes that do not decode: {e:?}")),
                Ok(None) => return Ok(()),
                Ok(Some(Event::Header(f))) => {
                    let sealed = f.prefix.flags.contains(Flags::SEALED);
                    let enc = f.prefix.flags.contains(Flags::ENCRYPTED);
                    match self.keys.as_mut() {
                        Some(k) => {
                            if !sealed || enc != self.encrypted {
                                return Err(format!(
                                    "after AuthOk a frame with flags {:?} (encrypted session: {})",
                                    f.prefix.flags, self.encrypted
                                ));
                            }
                            if !enc {
                                self.tag = Some(k.open.begin_frame(&f));
                            }
                        }
                        None if sealed => return Err("a sealed frame before AuthOk".to_string()),
                        None => {}
                    }
                    self.cur = Some((f.prefix, f.header.to_vec(), Vec::new()));
                }
                Ok(Some(Event::Body(b))) => {
                    if let Some(t) = self.tag.as_mut() {
                        t.update(b);
                    }
                    self.cur
                        .as_mut()
                        .expect("body in a frame")
                        .2
                        .extend_from_slice(b);
                }
                Ok(Some(Event::End { tag })) => {
                    let (repr, mut header, mut body) = self.cur.take().expect("end of a frame");
                    if let Some(k) = self.keys.as_mut() {
                        let Some(tag) = tag else {
                            return Err("a sealed frame without a tag".to_string());
                        };
                        if self.encrypted {
                            let mut all = header.clone();
                            all.extend_from_slice(&body);
                            let c = k.decrypt.as_mut().expect("encrypted session");
                            if !c.open_in_place(&repr, &mut all, &tag) {
                                return Err("an encrypted frame does not decrypt".to_string());
                            }
                            body = all.split_off(header.len());
                            header = all;
                        } else if !Opener::verify(self.tag.take().expect("tag"), &tag) {
                            return Err("a frame's tag does not verify".to_string());
                        }
                    }
                    let h = Header::parse(&header).map_err(|e| {
                        format!("the engine sent a header that does not parse: {e:?}")
                    })?;
                    let body_ok = matches!(h.message, Message::Data | Message::Output { .. })
                        || body.is_empty();
                    if !body_ok {
                        return Err(format!("a body on {h:?}"));
                    }
                    self.handshake(&h)?;
                    self.received += 1;
                    self.frames.push(Reply { header, body });
                }
            }
        }
    }

    fn handshake(&mut self, h: &Header<'_>) -> Result<(), String> {
        let Some(hs) = self.hs.as_mut() else {
            if matches!(h.message, Message::HelloAck(_) | Message::AuthOk(_)) {
                return Err(format!("{h:?} after the handshake"));
            }
            return Ok(());
        };
        match &h.message {
            Message::HelloAck(ack) => {
                let limits = Limits {
                    max_header: ack.max_header,
                    max_body: u64::from(ack.max_chunk),
                };
                self.limits = Some(limits);
                match hs.handle_hello_ack(ack) {
                    Ok(Some(proof)) => self.auth = Some(proof),
                    Ok(None) => {
                        self.dec.set_limits(limits);
                        self.hs = None;
                    }
                    Err(e) => return Err(format!("HelloAck refused by the client: {e:?}")),
                }
            }
            Message::AuthOk(p) => {
                let keys = hs
                    .handle_auth_ok(p)
                    .map_err(|e| format!("AuthOk does not prove the key: {e:?}"))?;
                self.encrypted = keys.encrypted();
                self.dec.set_encryption(self.encrypted);
                if let Some(l) = self.limits {
                    self.dec.set_limits(l);
                }
                self.keys = Some(keys);
                self.hs = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// The received frames, taken.
    pub fn take(&mut self) -> Vec<Reply> {
        core::mem::take(&mut self.frames)
    }

    /// Whether no partial frame is held.
    pub fn is_idle(&self) -> bool {
        self.dec.is_idle()
    }
}

/// An unsealed frame.
pub fn plain(h: &Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; PREFIX_LEN + h.buffer_len() + body.len()];
    let n = encode_frame(h, body, &mut b).expect("fits").len();
    b.truncate(n);
    b
}

/// SHA-256.
pub fn sha(d: &[u8]) -> Digest {
    Sha256::digest(d).into()
}

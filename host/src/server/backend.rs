//! The host's side of the engine: the [`Backend`] of one connection. File
//! work runs on blocking threads and commands as processes; what they
//! produce arrives as [`Completion`]s on the connection's channel, is kept
//! per request until the engine pulls it, and wakes the request
//! ([`ServerConn::handle_ready`](tether_proto::server::ServerConn::handle_ready)).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use sha2::Sha256;
use tether_proto::server::{
    Backend, Count, Created, End, Failure, Kill, Opened, Output, Peer, RelPath, Req, Start,
};
use tether_proto::{Entry, ErrorCode, ExitStatus, Stream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tracing::info;

use super::exec::{self, Running};
use super::files::{self, Fail, OwnedEntry, Reading, Writing};
use super::{claims, Shared};
use crate::reader::{self, ReadCmd, ReadDone};

pub use crate::reader::CHUNK;
/// Upload chunks handed to writers and not written yet, over all uploads
/// of a connection, past which the connection reads no more input.
const WRITE_BEHIND: usize = 8;

/// Work finished for a request.
#[derive(Debug)]
pub enum Completion {
    Stat(Result<OwnedEntry, Fail>),
    Listed(Result<Vec<OwnedEntry>, Fail>),
    Opened(Result<(u64, u64), Fail>),
    Prefix(Result<Sha256, Fail>),
    /// File bytes (an empty chunk: the file ended early).
    Chunk(Result<Vec<u8>, Fail>),
    Unchanged(Result<(), Fail>),
    Created(Result<(u64, Option<Sha256>), Fail>),
    /// An upload chunk was written: its buffer comes back.
    Written(Result<Vec<u8>, Fail>),
    Committed(Result<(), Fail>),
    Removed(Result<(), Fail>),
    Output(Stream, Vec<u8>),
    Exited(ExitStatus),
}

/// Which request a completion is for: its slot and the generation of the
/// request in it (a late completion of an ended request is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    slot: u16,
    gen: u64,
}

type Events = mpsc::UnboundedSender<(Key, Completion)>;

/// What an upload's writer thread is asked to do.
enum WriteCmd {
    Data(Vec<u8>, usize),
    Commit,
    Discard,
}

#[derive(Debug, Default)]
struct Get {
    opened: Option<Result<(u64, u64), Fail>>,
    prefix: Option<Result<Sha256, Fail>>,
    unchanged: Option<Result<(), Fail>>,
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already sent.
    at: usize,
    failed: Option<Fail>,
    eof: bool,
    /// The reader was asked to stream the bytes, from this offset.
    streaming: bool,
    start: u64,
    cmds: Option<std_mpsc::Sender<ReadCmd>>,
    credits: Option<std_mpsc::Sender<Vec<u8>>>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// A file being read for a Get, with the root to check its path against.
struct AtRoot {
    reading: Reading,
    shared: Arc<Shared>,
}

impl std::io::Read for AtRoot {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reading.file.read(buf)
    }
}

impl std::io::Seek for AtRoot {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.reading.file.seek(pos)
    }
}

impl reader::Source for AtRoot {
    fn size(&self) -> u64 {
        self.reading.size
    }
    fn shown(&self) -> &str {
        &self.reading.shown
    }
    fn check_unchanged(&self) -> Result<(), Fail> {
        self.reading.check_unchanged(&self.shared.root)
    }
}

#[derive(Debug, Default)]
struct Put {
    created: Option<Result<(u64, Option<Sha256>), Fail>>,
    /// Where the data started (bytes resumed), and bytes held now.
    start: u64,
    held: u64,
    committed: Option<Result<(), Fail>>,
    failed: Option<Fail>,
    fill: Vec<u8>,
    spare: Vec<Vec<u8>>,
    /// Chunks handed to the writer and not reported written yet.
    behind: usize,
    cmds: Option<std_mpsc::Sender<WriteCmd>>,
    _claim: Option<claims::Held>,
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Default)]
struct ExecState {
    running: Option<Result<Running, Fail>>,
    out: VecDeque<(Stream, Vec<u8>)>,
    at: usize,
    exited: Option<ExitStatus>,
    killed: Option<Kill>,
}

#[derive(Debug)]
enum Work {
    Stat(Option<Result<OwnedEntry, Fail>>),
    /// The listing, and the entry being sent.
    List(
        Option<Result<VecDeque<OwnedEntry>, Fail>>,
        Option<OwnedEntry>,
    ),
    Remove(Option<Result<(), Fail>>),
    Get(Box<Get>),
    Put(Box<Put>),
    Exec(Box<ExecState>),
}

/// One request's state, and what its log line says.
#[derive(Debug)]
struct Slot {
    gen: u64,
    id: u32,
    op: String,
    started: Instant,
    bytes: u64,
    work: Work,
}

/// The backend of one connection.
#[derive(Debug)]
pub struct HostBackend {
    shared: Arc<Shared>,
    peer: SocketAddr,
    events: Events,
    slots: Vec<Option<Slot>>,
    next_gen: u64,
    /// Upload chunks with their writers.
    behind: usize,
    /// Scratch for a failure's text.
    text: String,
}

fn owned_path(p: &RelPath<'_>) -> Vec<String> {
    p.components().map(str::to_string).collect()
}

/// A checked path again, from its owned components.
fn with_path<T>(parts: &[String], f: impl FnOnce(RelPath<'_>) -> T) -> T {
    let joined = parts.join("/");
    let rules = tether_proto::server::PathRules {
        max_name: u16::MAX,
        max_path: u16::MAX,
        dirs: true,
    };
    // The engine checked it already; components re-joined pass again.
    match rules.check(&joined, false) {
        Ok(p) => f(p),
        Err(_) => f(rules.check("", false).unwrap_or_else(|_| unreachable!())),
    }
}

impl HostBackend {
    /// The backend of a connection from `peer`; completions go to `events`.
    pub fn new(shared: Arc<Shared>, peer: SocketAddr, events: Events) -> Self {
        HostBackend {
            shared,
            peer,
            events,
            slots: Vec::new(),
            next_gen: 0,
            behind: 0,
            text: String::new(),
        }
    }

    /// Whether input should wait: uploads have too much not yet written.
    pub fn input_paused(&self) -> bool {
        self.behind >= WRITE_BEHIND
    }

    fn slot(&mut self, req: Req) -> Option<&mut Slot> {
        self.slots
            .get_mut(usize::from(req.slot))?
            .as_mut()
            .filter(|s| s.id == req.id)
    }

    fn fail(&mut self, f: &Fail) -> Failure<'_> {
        self.text.clear();
        self.text.push_str(&f.message);
        Failure::new(f.code, &self.text)
    }

    /// Store a completion; returns the request to wake, if it is still in flight.
    pub fn complete(&mut self, key: Key, c: Completion) -> Option<Req> {
        let s = self.slots.get_mut(usize::from(key.slot))?.as_mut()?;
        if s.gen != key.gen {
            return None;
        }
        let req = Req {
            slot: key.slot,
            id: s.id,
        };
        match (&mut s.work, c) {
            (Work::Stat(r), Completion::Stat(x)) => *r = Some(x),
            (Work::List(r, _), Completion::Listed(x)) => *r = Some(x.map(VecDeque::from)),
            (Work::Remove(r), Completion::Removed(x)) => *r = Some(x),
            (Work::Get(g), Completion::Opened(x)) => g.opened = Some(x),
            (Work::Get(g), Completion::Prefix(x)) => g.prefix = Some(x),
            (Work::Get(g), Completion::Unchanged(x)) => g.unchanged = Some(x),
            (Work::Get(g), Completion::Chunk(Ok(b))) if b.is_empty() => g.eof = true,
            (Work::Get(g), Completion::Chunk(Ok(b))) => g.chunks.push_back(b),
            (Work::Get(g), Completion::Chunk(Err(f))) => g.failed = Some(f),
            (Work::Put(p), Completion::Created(x)) => p.created = Some(x),
            (Work::Put(p), Completion::Written(x)) => {
                self.behind = self.behind.saturating_sub(1);
                p.behind = p.behind.saturating_sub(1);
                match x {
                    Ok(buf) => p.spare.push(buf),
                    Err(f) => p.failed = Some(f),
                }
            }
            (Work::Put(p), Completion::Committed(x)) => p.committed = Some(x),
            (Work::Exec(e), Completion::Output(stream, b)) => e.out.push_back((stream, b)),
            (Work::Exec(e), Completion::Exited(st)) => e.exited = Some(st),
            _ => return None,
        }
        Some(req)
    }

    fn begin(&mut self, req: Req, op: String, work: Work) -> Key {
        let i = usize::from(req.slot);
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.next_gen += 1;
        self.slots[i] = Some(Slot {
            gen: self.next_gen,
            id: req.id,
            op,
            started: Instant::now(),
            bytes: 0,
            work,
        });
        Key {
            slot: req.slot,
            gen: self.next_gen,
        }
    }

    /// Run `f` on a blocking thread; its result arrives as a completion.
    fn blocking(&self, key: Key, f: impl FnOnce(&Shared) -> Completion + Send + 'static) {
        let (shared, events) = (self.shared.clone(), self.events.clone());
        tokio::task::spawn_blocking(move || {
            let _ = events.send((key, f(&shared)));
        });
    }

    fn start_get(&mut self, req: Req, path: &RelPath<'_>) {
        let permit = match self.shared.transfer_slot() {
            Ok(p) => p,
            Err(f) => {
                let get = Get {
                    opened: Some(Err(f)),
                    ..Get::default()
                };
                self.begin(req, format!("get '{path}'"), Work::Get(Box::new(get)));
                return;
            }
        };
        let key = self.begin(req, format!("get '{path}'"), Work::Get(Box::default()));
        let parts = owned_path(path);
        let (shared, events) = (self.shared.clone(), self.events.clone());
        let events2 = events.clone();
        let reader = reader::start(
            move || {
                with_path(&parts, |p| files::open(&shared.root, &p))
                    .map(|reading| AtRoot { reading, shared })
            },
            move |r: &Result<AtRoot, Fail>| {
                let opened = r.as_ref().map(|f| (f.reading.size, f.reading.modified));
                events2
                    .send((key, Completion::Opened(opened.map_err(Clone::clone))))
                    .is_ok()
                    && r.is_ok()
            },
            move |d| {
                let c = match d {
                    ReadDone::Prefix(r) => Completion::Prefix(r),
                    ReadDone::Chunk(r) => Completion::Chunk(r),
                    ReadDone::Unchanged(r) => Completion::Unchanged(r),
                };
                events.send((key, c)).is_ok()
            },
        );
        if let Some(Slot {
            work: Work::Get(g), ..
        }) = self.slots[usize::from(req.slot)].as_mut()
        {
            g.cmds = Some(reader.cmds);
            g.credits = Some(reader.credits);
            g._permit = Some(permit);
        }
    }

    fn start_put(&mut self, req: Req, path: &RelPath<'_>, size: u64, force: bool, resume: bool) {
        let op = format!(
            "put '{path}' ({size} bytes{}{})",
            if force { ", force" } else { "" },
            if resume { ", resume" } else { "" }
        );
        let claim = self.shared.uploads.claim(&path.to_string());
        let permit = claim
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|_| self.shared.transfer_slot());
        let ((held, writing), permit) = match (claim, permit) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(f), _) | (_, Err(f)) => {
                let put = Put {
                    created: Some(Err(f)),
                    ..Put::default()
                };
                self.begin(req, op, Work::Put(Box::new(put)));
                return;
            }
        };
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let put = Put {
            cmds: Some(cmd_tx),
            _claim: Some(held),
            _permit: Some(permit),
            ..Put::default()
        };
        let key = self.begin(req, op, Work::Put(Box::new(put)));
        let parts = owned_path(path);
        let (shared, events) = (self.shared.clone(), self.events.clone());
        tokio::task::spawn_blocking(move || {
            // The last upload to this destination may still be keeping its
            // partial: a resume takes up every byte of it.
            writing.wait_for_previous(std::time::Duration::from_secs(30));
            let r = with_path(&parts, |p| {
                files::create(&shared.root, &p, size, force, resume)
            });
            let send = |c| events.send((key, c)).is_ok();
            match r {
                Ok((w, prefix)) => {
                    if send(Completion::Created(Ok((w.offset, prefix)))) {
                        serve_writes(w, &cmd_rx, &send);
                    }
                }
                Err(e) => {
                    send(Completion::Created(Err(e)));
                }
            }
            drop(writing);
        });
    }

    fn start_exec(&mut self, req: Req, command: &tether_proto::Command<'_>) {
        let op = match command {
            tether_proto::Command::Argv(a) => format!("exec {:?}", a.iter().collect::<Vec<_>>()),
            tether_proto::Command::Shell(l) => format!("exec {} {l:?}", crate::platform::SHELL),
        };
        let key = self.begin(req, op, Work::Exec(Box::default()));
        let (events, root) = (self.events.clone(), self.shared.root.path().to_path_buf());
        let (tx, mut rx) = mpsc::unbounded_channel::<(Req, Completion)>();
        let running = exec::start(req, command, &root, tx);
        // Forward the command's events under this request's key.
        tokio::spawn(async move {
            while let Some((_, c)) = rx.recv().await {
                if events.send((key, c)).is_err() {
                    return;
                }
            }
        });
        if let Some(Slot {
            work: Work::Exec(e),
            ..
        }) = self.slot(req)
        {
            e.running = Some(running);
        }
    }

    /// Send an upload's filled buffer to its writer.
    fn flush(&mut self, req: Req) {
        let mut sent = false;
        if let Some(Slot {
            work: Work::Put(p), ..
        }) = self.slot(req)
        {
            if !p.fill.is_empty() {
                let buf = std::mem::take(&mut p.fill);
                let n = buf.len();
                if let Some(c) = &p.cmds {
                    sent = c.send(WriteCmd::Data(buf, n)).is_ok();
                }
                p.behind += usize::from(sent);
            }
        }
        if sent {
            self.behind += 1;
        }
    }
}

/// An upload's writer thread: write chunks, hand their buffers back, then
/// commit, discard, or (the connection gone) keep the partial.
fn serve_writes(
    mut w: Writing,
    cmds: &std_mpsc::Receiver<WriteCmd>,
    send: &dyn Fn(Completion) -> bool,
) {
    let mut failed: Option<Fail> = None;
    while let Ok(cmd) = cmds.recv() {
        match cmd {
            WriteCmd::Data(buf, n) => {
                let r = match &failed {
                    Some(_) => Ok(()),
                    None => w.write(&buf[..n]),
                };
                if let Err(f) = &r {
                    failed = Some(f.clone());
                }
                if !send(Completion::Written(r.map(|()| buf))) {
                    break;
                }
            }
            WriteCmd::Commit => {
                // After a failed write (its chunk may be the last, sent
                // just before the Commit) the partial is short: it is kept,
                // never renamed to the destination.
                let r = match failed {
                    Some(f) => {
                        w.keep();
                        Err(f)
                    }
                    None => w.commit(),
                };
                send(Completion::Committed(r));
                return;
            }
            WriteCmd::Discard => {
                w.discard();
                return;
            }
        }
    }
    w.keep();
}

fn ready<T>(o: &Option<T>) -> Poll<&T> {
    match o {
        Some(x) => Poll::Ready(x),
        None => Poll::Pending,
    }
}

impl Backend for HostBackend {
    fn start(&mut self, req: Req, work: Start<'_>) {
        match work {
            Start::Stat { path } => {
                let key = self.begin(req, format!("stat '{path}'"), Work::Stat(None));
                let parts = owned_path(&path);
                self.blocking(key, move |s| {
                    Completion::Stat(with_path(&parts, |p| files::stat(&s.root, &p)))
                });
            }
            Start::List { path } => {
                let key = self.begin(req, format!("ls '{path}'"), Work::List(None, None));
                let parts = owned_path(&path);
                self.blocking(key, move |s| {
                    Completion::Listed(with_path(&parts, |p| files::list(&s.root, &p)))
                });
            }
            Start::Remove { path } => {
                let key = self.begin(req, format!("rm '{path}'"), Work::Remove(None));
                let parts = owned_path(&path);
                self.blocking(key, move |s| {
                    Completion::Removed(with_path(&parts, |p| files::remove(&s.root, &p)))
                });
            }
            Start::Open { path } => self.start_get(req, &path),
            Start::HashPrefix { len } => self.read_cmd(req, ReadCmd::Hash(len)),
            Start::CheckUnchanged => self.read_cmd(req, ReadCmd::Check),
            Start::Create {
                path,
                size,
                force,
                resume,
            } => self.start_put(req, &path, size, force, resume),
            Start::Commit { .. } => {
                self.flush(req);
                if let Some(Slot {
                    work: Work::Put(p), ..
                }) = self.slot(req)
                {
                    if let Some(c) = &p.cmds {
                        let _ = c.send(WriteCmd::Commit);
                    }
                }
            }
            Start::Exec { command, .. } => self.start_exec(req, &command),
            _ => {}
        }
    }

    fn poll_stat(&mut self, req: Req) -> Poll<Result<Entry<'_>, Failure<'_>>> {
        let failed = match self.slot(req).map(|s| &s.work) {
            Some(Work::Stat(Some(Err(f)))) => f.clone(),
            Some(Work::Stat(Some(Ok(_)))) => {
                return match self.slot(req).map(|s| &s.work) {
                    Some(Work::Stat(Some(Ok(e)))) => Poll::Ready(Ok(e.as_entry())),
                    _ => Poll::Pending,
                };
            }
            _ => return Poll::Pending,
        };
        Poll::Ready(Err(self.fail(&failed)))
    }

    fn poll_list(&mut self, req: Req) -> Poll<Option<Result<Entry<'_>, Failure<'_>>>> {
        // Advance (a short borrow), then lend the entry now current.
        let failed = match self.slot(req).map(|s| &mut s.work) {
            Some(Work::List(Some(Err(f)), _)) => Some(f.clone()),
            Some(Work::List(Some(Ok(q)), cur)) => {
                *cur = q.pop_front();
                None
            }
            _ => return Poll::Pending,
        };
        if let Some(f) = failed {
            return Poll::Ready(Some(Err(self.fail(&f))));
        }
        match self.slot(req).map(|s| &s.work) {
            Some(Work::List(_, Some(e))) => Poll::Ready(Some(Ok(e.as_entry()))),
            _ => Poll::Ready(None),
        }
    }

    fn poll_open(&mut self, req: Req) -> Poll<Result<Opened, Failure<'_>>> {
        let r = match self.slot(req).map(|s| &s.work) {
            Some(Work::Get(g)) => match ready(&g.opened) {
                Poll::Ready(r) => r.clone(),
                Poll::Pending => return Poll::Pending,
            },
            _ => return Poll::Pending,
        };
        Poll::Ready(match r {
            Ok((size, modified)) => Ok(Opened { size, modified }),
            Err(f) => Err(self.fail(&f)),
        })
    }

    fn poll_prefix(&mut self, req: Req) -> Poll<Result<Sha256, Failure<'_>>> {
        let r = match self.slot(req).map(|s| &mut s.work) {
            Some(Work::Get(g)) => match g.prefix.take() {
                Some(r) => r,
                None => return Poll::Pending,
            },
            _ => return Poll::Pending,
        };
        Poll::Ready(r.map_err(|f| self.fail(&f)))
    }

    fn poll_read(
        &mut self,
        req: Req,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Failure<'_>>> {
        let failed = {
            let Some(slot) = self.slot(req) else {
                return Poll::Pending;
            };
            let Work::Get(g) = &mut slot.work else {
                return Poll::Pending;
            };
            if !g.streaming {
                // The first read: stream from the engine's offset.
                g.streaming = true;
                g.start = offset;
                if let Some(c) = &g.cmds {
                    let _ = c.send(ReadCmd::Stream(offset));
                }
                slot.op.push_str(&format!(" from {offset}"));
            }
            match g.failed.clone() {
                Some(f) => f,
                None => {
                    let Some(front) = g.chunks.front() else {
                        return if g.eof {
                            Poll::Ready(Ok(0))
                        } else {
                            Poll::Pending
                        };
                    };
                    let n = buf.len().min(front.len() - g.at);
                    buf[..n].copy_from_slice(&front[g.at..g.at + n]);
                    g.at += n;
                    if g.at == front.len() {
                        g.at = 0;
                        if let (Some(b), Some(credits)) = (g.chunks.pop_front(), &g.credits) {
                            let _ = credits.send(b);
                        }
                    }
                    slot.bytes += n as u64;
                    return Poll::Ready(Ok(n));
                }
            }
        };
        Poll::Ready(Err(self.fail(&failed)))
    }

    fn poll_unchanged(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        let r = match self.slot(req).map(|s| &mut s.work) {
            Some(Work::Get(g)) => match g.unchanged.take() {
                Some(r) => r,
                None => return Poll::Pending,
            },
            _ => return Poll::Pending,
        };
        Poll::Ready(r.map_err(|f| self.fail(&f)))
    }

    fn poll_create(&mut self, req: Req) -> Poll<Result<Created, Failure<'_>>> {
        let r = match self.slot(req).map(|s| &mut s.work) {
            Some(Work::Put(p)) => match p.created.take() {
                Some(r) => {
                    if let Ok((offset, _)) = &r {
                        p.start = *offset;
                        p.held = *offset;
                    }
                    r
                }
                None => return Poll::Pending,
            },
            _ => return Poll::Pending,
        };
        Poll::Ready(match r {
            Ok((offset, hasher)) => Ok(Created { offset, hasher }),
            Err(f) => Err(self.fail(&f)),
        })
    }

    fn write(&mut self, req: Req, _offset: u64, data: &[u8]) -> Result<(), Failure<'_>> {
        let mut sent = 0;
        let failed = {
            let Some(slot) = self.slot(req) else {
                return Ok(());
            };
            slot.bytes += data.len() as u64;
            let Work::Put(p) = &mut slot.work else {
                return Ok(());
            };
            p.held += data.len() as u64;
            match p.failed.clone() {
                Some(f) => Some(f),
                None => {
                    let mut rest = data;
                    while !rest.is_empty() {
                        if p.fill.capacity() == 0 {
                            p.fill = p.spare.pop().unwrap_or_default();
                            p.fill.clear();
                            p.fill.reserve(CHUNK);
                        }
                        let k = rest.len().min(CHUNK - p.fill.len());
                        p.fill.extend_from_slice(&rest[..k]);
                        rest = &rest[k..];
                        if p.fill.len() == CHUNK {
                            let buf = std::mem::take(&mut p.fill);
                            if p.cmds
                                .as_ref()
                                .is_some_and(|c| c.send(WriteCmd::Data(buf, CHUNK)).is_ok())
                            {
                                sent += 1;
                            }
                        }
                    }
                    p.behind += sent;
                    None
                }
            }
        };
        self.behind += sent;
        match failed {
            Some(f) => Err(self.fail(&f)),
            None => Ok(()),
        }
    }

    fn poll_commit(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        let r = match self.slot(req).map(|s| &mut s.work) {
            Some(Work::Put(p)) => {
                if let Some(f) = p.failed.take() {
                    Err(f)
                } else {
                    match p.committed.take() {
                        Some(r) => r,
                        None => return Poll::Pending,
                    }
                }
            }
            _ => return Poll::Pending,
        };
        Poll::Ready(r.map_err(|f| self.fail(&f)))
    }

    fn poll_remove(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        let r = match self.slot(req).map(|s| &mut s.work) {
            Some(Work::Remove(r)) => match r.take() {
                Some(r) => r,
                None => return Poll::Pending,
            },
            _ => return Poll::Pending,
        };
        Poll::Ready(r.map_err(|f| self.fail(&f)))
    }

    fn poll_exec(&mut self, req: Req, buf: &mut [u8]) -> Poll<Result<Output, Failure<'_>>> {
        let Some(slot) = self.slot(req) else {
            return Poll::Pending;
        };
        let Work::Exec(e) = &mut slot.work else {
            return Poll::Pending;
        };
        let window = match &e.running {
            Some(Ok(r)) => r.window.clone(),
            Some(Err(f)) => {
                let f = f.clone();
                return Poll::Ready(Err(self.fail(&f)));
            }
            None => return Poll::Pending,
        };
        if let Some((stream, front)) = e.out.front() {
            let stream = *stream;
            let n = buf.len().min(front.len() - e.at);
            buf[..n].copy_from_slice(&front[e.at..e.at + n]);
            e.at += n;
            if e.at == front.len() {
                e.at = 0;
                e.out.pop_front();
            }
            window.add_permits(n);
            slot.bytes += n as u64;
            return Poll::Ready(Ok(Output::Bytes(stream, n)));
        }
        match e.exited {
            Some(st) => Poll::Ready(Ok(Output::Exited(st))),
            None => Poll::Pending,
        }
    }

    fn kill(&mut self, req: Req, why: Kill) {
        if let Some(Slot {
            work: Work::Exec(e),
            ..
        }) = self.slot(req)
        {
            if let Some(Ok(r)) = &e.running {
                r.kill(why);
                e.killed = Some(why);
            }
        }
    }

    fn end(&mut self, req: Req, how: End) {
        let Some(mut slot) = self
            .slots
            .get_mut(usize::from(req.slot))
            .and_then(Option::take)
        else {
            return;
        };
        if let Work::Put(p) = &mut slot.work {
            // Its chunks still with the writer are reported to a slot that
            // is gone: they no longer hold this connection's input back.
            self.behind = self.behind.saturating_sub(p.behind);
            match (&p.cmds, how) {
                (Some(c), End::Failed(_)) => {
                    let _ = c.send(WriteCmd::Discard);
                }
                // Cancelled or cut off: the partial kept holds every byte
                // received (the writer writes them, then keeps it).
                (Some(c), End::Interrupted(_)) if !p.fill.is_empty() => {
                    let buf = std::mem::take(&mut p.fill);
                    let n = buf.len();
                    let _ = c.send(WriteCmd::Data(buf, n));
                }
                _ => {}
            }
        }
        let secs = slot.started.elapsed().as_secs_f64();
        let result = outcome(how, &slot.work);
        info!(peer = %self.peer, req = req.id, op = %slot.op, %result, bytes = slot.bytes, secs);
    }

    fn time_ms(&mut self, _now_ms: u64) -> u64 {
        crate::timefmt::unix_ms()
    }

    fn refused(&mut self, peer: Peer, now_ms: u64) -> Option<u64> {
        let left = self.shared.backoff().check(peer, now_ms);
        if let Some(ms) = left {
            tracing::warn!(
                "{} refused: backing off after failed authentications ({} s left)",
                self.peer,
                ms.div_ceil(1000)
            );
        }
        left
    }

    fn auth_failed(&mut self, peer: Peer, now_ms: u64) -> Option<u64> {
        let r = self.shared.backoff().record_failure(peer, now_ms);
        tracing::warn!(
            "{}: authentication failed (wrong key){}",
            self.peer.ip(),
            r.map_or(String::new(), |ms| format!(
                "; refusing it for {} s",
                ms / 1000
            ))
        );
        r
    }

    fn auth_succeeded(&mut self, peer: Peer) {
        self.shared.backoff().record_success(peer);
    }

    fn count(&mut self, what: Count) {
        if matches!(what, Count::IntegrityFailure) {
            tracing::warn!(peer = %self.peer, "integrity check failed: a frame was replayed, reordered, altered or cut; closing");
        }
    }
}

/// What a request's log line says of how it ended.
fn outcome(how: End, work: &Work) -> String {
    let code = |c: ErrorCode| c.name().unwrap_or("?").to_string();
    match (how, work) {
        (End::Done, Work::Exec(e)) => match (e.killed, e.exited) {
            (Some(Kill::Cancel), _) => "exit Cancelled".into(),
            (Some(Kill::Timeout), _) => "exit TimedOut".into(),
            (None, Some(st)) => format!("exit {st:?}"),
            (None, None) => "ok".into(),
        },
        (End::Done, Work::Get(g)) if g.start > 0 => format!("ok, resumed at {}", g.start),
        (End::Done, Work::Put(p)) if p.start > 0 => format!("ok, resumed at {}", p.start),
        (End::Done, _) => "ok".into(),
        (End::Interrupted(c), Work::Put(p)) => format!(
            "interrupted ({}); {} bytes kept for resuming",
            code(c),
            p.held
        ),
        (End::Failed(c) | End::Interrupted(c), _) => format!("error {}", code(c)),
    }
}

impl HostBackend {
    fn read_cmd(&mut self, req: Req, cmd: ReadCmd) {
        if let Some(Slot {
            work: Work::Get(g), ..
        }) = self.slot(req)
        {
            if let Some(c) = &g.cmds {
                let _ = c.send(cmd);
            }
        }
    }
}

/// Failure of a request that could not even be tried.
pub fn internal(what: &str) -> Fail {
    Fail::new(ErrorCode::INTERNAL, format!("internal error: {what}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use tether_proto::server::{Backoff, BackoffPolicy, PathRules};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::server::files::Root;

    const RULES: PathRules = PathRules {
        max_name: 255,
        max_path: 4095,
        dirs: true,
    };

    fn backend(
        root: &std::path::Path,
    ) -> (HostBackend, mpsc::UnboundedReceiver<(Key, Completion)>) {
        let cfg = crate::server::ServerConfig::new(root.to_path_buf());
        let shared = Arc::new(Shared {
            engine: cfg.engine(),
            root: Root::open(root).unwrap(),
            uploads: Arc::default(),
            transfers: Arc::new(Semaphore::new(4)),
            backoff: Mutex::new(Backoff::new(BackoffPolicy::HOST)),
            epoch: Instant::now(),
            cfg,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        (
            HostBackend::new(shared, "127.0.0.1:1".parse().unwrap(), tx),
            rx,
        )
    }

    async fn create(
        bk: &mut HostBackend,
        rx: &mut mpsc::UnboundedReceiver<(Key, Completion)>,
        req: Req,
        name: &str,
        size: u64,
    ) {
        let path = RULES.check(name, true).unwrap();
        let (force, resume) = (false, false);
        bk.start(
            req,
            Start::Create {
                path,
                size,
                force,
                resume,
            },
        );
        let (key, c) = rx.recv().await.unwrap();
        assert!(matches!(c, Completion::Created(Ok(_))));
        assert_eq!(bk.complete(key, c), Some(req));
    }

    #[test]
    fn a_commit_after_a_failed_write_keeps_the_partial() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let path = RULES.check("f.bin", true).unwrap();
        let (w, _) = files::create(&root, &path, 8, false, false).unwrap();
        // /dev/full: every write fails with ENOSPC, like a full disk.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let w = w.into_file(full);
        let (cmds, rx) = std_mpsc::channel();
        cmds.send(WriteCmd::Data(vec![1; 8], 8)).unwrap();
        cmds.send(WriteCmd::Commit).unwrap();
        let done = Mutex::new(Vec::new());
        serve_writes(w, &rx, &|c| {
            done.lock().unwrap().push(c);
            true
        });
        let done = done.into_inner().unwrap();
        assert!(matches!(done[0], Completion::Written(Err(_))), "{done:?}");
        assert!(
            matches!(&done[1], Completion::Committed(Err(f)) if f.code == ErrorCode::NO_SPACE),
            "{done:?}"
        );
        assert!(
            !dir.path().join("f.bin").exists(),
            "a short file was committed"
        );
        assert!(dir.path().join(files::part_name("f.bin")).exists());
    }

    #[tokio::test]
    async fn an_ended_upload_holds_no_input_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut bk, mut rx) = backend(dir.path());
        let a = Req { slot: 0, id: 1 };
        create(&mut bk, &mut rx, a, "a.bin", 100 * CHUNK as u64).await;
        let chunk = vec![7u8; CHUNK];
        for i in 0..WRITE_BEHIND {
            bk.write(a, (i * CHUNK) as u64, &chunk).unwrap();
        }
        assert!(bk.input_paused());
        // It fails with its chunks still with the writer, whose reports
        // then find no request.
        bk.end(a, End::Failed(ErrorCode::DIGEST_MISMATCH));
        assert!(!bk.input_paused(), "{} chunks still count", bk.behind);
        while let Ok(Some((key, c))) =
            tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
        {
            assert_eq!(bk.complete(key, c), None);
        }
        assert_eq!(bk.behind, 0);
    }

    #[tokio::test]
    async fn a_cancelled_upload_keeps_every_byte_received() {
        let dir = tempfile::tempdir().unwrap();
        let (mut bk, mut rx) = backend(dir.path());
        let b = Req { slot: 1, id: 2 };
        create(&mut bk, &mut rx, b, "b.bin", 10).await;
        // Fewer bytes than a chunk: still in memory when the upload ends.
        bk.write(b, 0, b"12345").unwrap();
        bk.end(b, End::Interrupted(ErrorCode::CANCELLED));
        let part = dir.path().join(files::part_name("b.bin"));
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&part).map_or(0, |m| m.len()) != 5 {
            assert!(
                Instant::now() < end,
                "the partial does not hold the 5 bytes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::read(&part).unwrap(), b"12345");
    }
}

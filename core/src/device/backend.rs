//! The device's [`Backend`]: every operation the engine asks for is done at
//! once, over the [`Store`], the [`Commands`] and the [`Clock`]. What a
//! request needs between calls is one small [`DevReq`] per engine slot.

use core::fmt::{self, Write as _};
use core::task::Poll;

use sha2::{Digest as _, Sha256};

use crate::message::{Command, Entry, EntryKind, ErrorCode, ExitStatus, Stream};
use crate::server::{
    Backend, Count, Created, End, Failure, Kill, Opened, Output, Peer, RelPath, Req, Start,
};
use crate::text::Text;

use super::clock::Clock;
use super::commands::{self, Commands, Output as CmdOutput, MAX_ARGS};
use super::store::{FileId, Store, StoreError};
use super::{ConnMem, Device, MemReport};

/// Longest name a listing keeps to find the next one (the store's names
/// are sorted by the engine's rule: byte order).
pub(crate) const LIST_NAME_MAX: usize = 64;

/// Why a device operation failed, beyond the store's own errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Store(StoreError),
    /// List of a file.
    NotDirectory,
    /// Another upload holds the name.
    UploadBusy,
    /// Every upload slot of the device is taken.
    Uploads,
    /// The file changed (replaced or removed) while it was being sent.
    Changed,
    /// Another command is running on this connection.
    ExecBusy,
    /// More than [`MAX_ARGS`] arguments.
    TooManyArgs,
}

impl Fault {
    fn code(self) -> ErrorCode {
        match self {
            Fault::Store(e) => e.code(),
            Fault::NotDirectory => ErrorCode::NOT_DIRECTORY,
            Fault::UploadBusy | Fault::Uploads | Fault::ExecBusy => ErrorCode::BUSY,
            Fault::Changed => ErrorCode::CHANGED,
            Fault::TooManyArgs => ErrorCode::TOO_LARGE,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Store(e) => write!(f, "{e}"),
            Fault::NotDirectory => write!(f, "not a directory: the root is the only one"),
            Fault::UploadBusy => write!(
                f,
                "another upload to this name is in progress; try again later"
            ),
            Fault::Uploads => write!(
                f,
                "the device runs its limit of {} uploads; try again later",
                super::MAX_UPLOADS
            ),
            Fault::Changed => write!(
                f,
                "the file changed while being sent; nothing was committed: run the get again"
            ),
            Fault::ExecBusy => write!(
                f,
                "a command is already running on this connection (one at a time)"
            ),
            Fault::TooManyArgs => write!(f, "more than {MAX_ARGS} arguments"),
        }
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Store(e)
    }
}

/// A command's result in the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    /// Output still to send (stdout and stderr ranges), then the code.
    Output {
        out: (usize, usize),
        err: (usize, usize),
        code: i32,
    },
    /// It could not run; the message is `out[..len]`.
    Failed { code: ErrorCode, len: usize },
}

/// What a request of one slot needs between calls.
#[derive(Debug, Clone)]
pub(crate) enum DevReq {
    None,
    /// A Stat's file (`None`: the root).
    Stat(Result<Option<FileId>, Fault>),
    Remove(Result<(), Fault>),
    /// A listing: the last name sent.
    List(Result<Option<heapless::String<LIST_NAME_MAX>>, Fault>),
    /// A Get: the file, its generation, and the prefix to hash.
    Get(Result<(FileId, u32), Fault>, u64),
    /// An upload: its temporary slot, the bytes resumed, whether it may
    /// replace a file; then the commit's result.
    Put(
        Result<(FileId, u64), Fault>,
        bool,
        Option<Result<(), Fault>>,
    ),
    Exec(Ran),
}

/// The device's side of one connection for one engine call.
pub(crate) struct DevBackend<'a, S, C, K, const N: usize> {
    pub dev: &'a mut Device<S, C, K>,
    pub reqs: &'a mut [DevReq; N],
    /// The connection's command output buffer.
    pub out: &'a mut [u8],
    /// Scratch for failure texts.
    pub text: &'a mut Text<96>,
    pub mem: ConnMem,
    /// The caller's monotonic time of this call.
    pub now: u64,
}

impl<S: Store, C: Clock, K: Commands, const N: usize> DevBackend<'_, S, C, K, N> {
    fn fail(&mut self, fault: Fault) -> Failure<'_> {
        *self.text = Text::new();
        let _ = write!(self.text, "{fault}");
        Failure::new(fault.code(), self.text.as_str())
    }

    fn slot(&mut self, req: Req) -> &mut DevReq {
        &mut self.reqs[usize::from(req.slot)]
    }

    fn lookup(&self, path: &RelPath<'_>) -> Result<Option<FileId>, Fault> {
        if path.is_root() {
            return Ok(None);
        }
        match self.dev.store.find(path.name()) {
            Some(id) => Ok(Some(id)),
            None => Err(Fault::Store(StoreError::NotFound)),
        }
    }

    fn open(&self, path: &RelPath<'_>) -> Result<(FileId, u32), Fault> {
        let id = self
            .lookup(path)?
            .ok_or(Fault::Store(StoreError::NotFound))?;
        let m = self
            .dev
            .store
            .meta(id)
            .ok_or(Fault::Store(StoreError::NotFound))?;
        Ok((id, m.generation))
    }

    /// The file of a Get, if it is still the one opened.
    fn same_file(&self, file: &Result<(FileId, u32), Fault>) -> Result<FileId, Fault> {
        let (id, gen) = (*file)?;
        match self.dev.store.meta(id) {
            Some(m) if m.generation == gen => Ok(id),
            _ => Err(Fault::Changed),
        }
    }

    /// Prepare an upload: claim the name, take up or drop a kept partial,
    /// reserve the space (evicting other kept partials if needed).
    fn create(
        &mut self,
        name: &str,
        size: u64,
        force: bool,
        resume: bool,
    ) -> Result<(FileId, u64), Fault> {
        let store = &mut self.dev.store;
        let claimed = |id: FileId| self.dev.uploads.contains(&Some(id));
        if let Some(p) = store.partial(name) {
            if claimed(p.id) {
                return Err(Fault::UploadBusy);
            }
        }
        if !force && store.find(name).is_some() {
            return Err(Fault::Store(StoreError::Exists));
        }
        let free = self
            .dev
            .uploads
            .iter()
            .position(Option::is_none)
            .ok_or(Fault::Uploads)?;
        let kept = store.partial(name);
        let (tmp, resumed) = match kept {
            Some(p) if resume && p.size == size => (p.id, p.written),
            _ => {
                if let Some(p) = kept {
                    store.discard(p.id);
                }
                (self.begin(name, size)?, 0)
            }
        };
        self.dev.uploads[free] = Some(tmp);
        Ok((tmp, resumed))
    }

    /// Reserve a temporary slot, evicting kept partials when out of room.
    fn begin(&mut self, name: &str, size: u64) -> Result<FileId, Fault> {
        match self.dev.store.begin(name, size) {
            Err(StoreError::NoSpace { .. } | StoreError::NoSlot { .. }) => {
                let mut at = None;
                while let Some(id) = self.dev.store.next_partial(at) {
                    if !self.dev.uploads.contains(&Some(id)) {
                        self.dev.store.discard(id);
                    }
                    at = Some(id);
                }
                Ok(self.dev.store.begin(name, size)?)
            }
            r => Ok(r?),
        }
    }

    fn release(&mut self, tmp: FileId) {
        for u in &mut self.dev.uploads {
            if *u == Some(tmp) {
                *u = None;
            }
        }
    }

    /// The next name after `last` in byte order.
    fn next_name(&self, last: Option<&str>) -> Option<FileId> {
        let mut best: Option<(FileId, &str)> = None;
        let mut at = None;
        while let Some(id) = self.dev.store.next(at) {
            at = Some(id);
            let Some(m) = self.dev.store.meta(id) else {
                continue;
            };
            let after = last.is_none_or(|l| m.name > l);
            if after && best.is_none_or(|(_, b)| m.name < b) {
                best = Some((id, m.name));
            }
        }
        best.map(|(id, _)| id)
    }

    fn exec(&mut self, req: Req, command: &Command<'_>, now: u64) -> Ran {
        let busy = self
            .reqs
            .iter()
            .enumerate()
            .any(|(i, r)| i != usize::from(req.slot) && matches!(r, DevReq::Exec(_)));
        if busy {
            return self.ran_failed(Fault::ExecBusy);
        }
        let mut args = [""; MAX_ARGS];
        let argc = match command {
            Command::Argv(v) => collect_args(v.iter(), &mut args),
            Command::Shell(line) => collect_args(line.split_whitespace(), &mut args),
        };
        if argc > MAX_ARGS {
            return self.ran_failed(Fault::TooManyArgs);
        }
        let args = &args[..argc];
        let program = args.first().copied().unwrap_or("");
        let extra = self.dev.config.extra_ram;
        let mut out = CmdOutput::new(self.out);
        let mem = MemReport {
            conn: self.mem,
            extra,
        };
        let (mut ctx, firmware) = self.dev.ctx(now, mem);
        let Some(code) = commands::run(firmware, &mut ctx, args, &mut out) else {
            let mut t = Text::<96>::new();
            let _ = write!(t, "no such command: {program} (try help)");
            let len = t.as_str().len().min(self.out.len());
            self.out[..len].copy_from_slice(&t.as_str().as_bytes()[..len]);
            return Ran::Failed {
                code: ErrorCode::EXEC_FAILED,
                len,
            };
        };
        if out.truncated() {
            out.note_truncated();
        }
        let (o, e) = out.ranges();
        Ran::Output {
            out: (o.start, o.end),
            err: (e.start, e.end),
            code,
        }
    }

    fn ran_failed(&mut self, fault: Fault) -> Ran {
        let mut t = Text::<96>::new();
        let _ = write!(t, "{fault}");
        let len = t.as_str().len().min(self.out.len());
        self.out[..len].copy_from_slice(&t.as_str().as_bytes()[..len]);
        Ran::Failed {
            code: fault.code(),
            len,
        }
    }
}

/// Copy up to [`MAX_ARGS`] arguments; returns how many there were.
fn collect_args<'a>(it: impl Iterator<Item = &'a str>, args: &mut [&'a str; MAX_ARGS]) -> usize {
    let mut n = 0;
    for a in it {
        if let Some(slot) = args.get_mut(n) {
            *slot = a;
        }
        n += 1;
    }
    n
}

impl<S: Store, C: Clock, K: Commands, const N: usize> Backend for DevBackend<'_, S, C, K, N> {
    fn start(&mut self, req: Req, work: Start<'_>) {
        let now = self.now;
        let r = match work {
            Start::Stat { path } => DevReq::Stat(self.lookup(&path)),
            Start::List { path } => DevReq::List(match self.lookup(&path) {
                Ok(None) => Ok(None),
                Ok(Some(_)) => Err(Fault::NotDirectory),
                Err(e) => Err(e),
            }),
            Start::Open { path } => DevReq::Get(self.open(&path), 0),
            Start::HashPrefix { len } => {
                if let DevReq::Get(_, p) = self.slot(req) {
                    *p = len;
                }
                return;
            }
            Start::CheckUnchanged => return,
            Start::Create {
                path,
                size,
                force,
                resume,
            } => DevReq::Put(self.create(path.name(), size, force, resume), force, None),
            Start::Commit { .. } => {
                let modified = self.dev.clock.unix_ms(now).map_or(0, |ms| ms / 1000);
                if let DevReq::Put(Ok((tmp, _)), force, None) = *self.slot(req) {
                    let r = self
                        .dev
                        .store
                        .commit(tmp, modified, force)
                        .map_err(Fault::Store);
                    self.release(tmp);
                    *self.slot(req) = DevReq::Put(Ok((tmp, 0)), force, Some(r));
                }
                return;
            }
            Start::Remove { path } => DevReq::Remove(self.lookup(&path).and_then(|id| {
                let id = id.ok_or(Fault::Store(StoreError::NotFound))?;
                self.dev.store.remove(id).map_err(Fault::Store)
            })),
            Start::Exec { command, .. } => DevReq::Exec(self.exec(req, &command, now)),
        };
        *self.slot(req) = r;
    }

    fn poll_stat(&mut self, req: Req) -> Poll<Result<Entry<'_>, Failure<'_>>> {
        let r = match self.slot(req) {
            DevReq::Stat(r) => *r,
            _ => Err(Fault::Store(StoreError::NotFound)),
        };
        Poll::Ready(match r {
            Ok(None) => Ok(Entry {
                name: ".",
                kind: EntryKind::Dir,
                size: 0,
                modified: 0,
            }),
            Ok(Some(id)) => match self.dev.store.meta(id) {
                Some(m) => Ok(Entry {
                    name: m.name,
                    kind: EntryKind::File,
                    size: m.size,
                    modified: m.modified,
                }),
                None => Err(Failure::new(ErrorCode::NOT_FOUND, "no such file")),
            },
            Err(f) => Err(self.fail(f)),
        })
    }

    fn poll_list(&mut self, req: Req) -> Poll<Option<Result<Entry<'_>, Failure<'_>>>> {
        let last = match self.slot(req) {
            DevReq::List(Ok(last)) => last.clone(),
            DevReq::List(Err(f)) => {
                let f = *f;
                return Poll::Ready(Some(Err(self.fail(f))));
            }
            _ => return Poll::Ready(None),
        };
        let Some(id) = self.next_name(last.as_deref()) else {
            return Poll::Ready(None);
        };
        let Some(m) = self.dev.store.meta(id) else {
            return Poll::Ready(None);
        };
        let mut name = heapless::String::new();
        let _ = name.push_str(crate::text::clip(m.name, LIST_NAME_MAX));
        self.reqs[usize::from(req.slot)] = DevReq::List(Ok(Some(name)));
        let Some(m) = self.dev.store.meta(id) else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(Ok(Entry {
            name: m.name,
            kind: EntryKind::File,
            size: m.size,
            modified: m.modified,
        })))
    }

    fn poll_open(&mut self, req: Req) -> Poll<Result<Opened, Failure<'_>>> {
        let file = match self.slot(req) {
            DevReq::Get(f, _) => *f,
            _ => Err(Fault::Store(StoreError::NotFound)),
        };
        let r = file.and_then(|(id, _)| self.dev.store.meta(id).ok_or(Fault::Changed));
        Poll::Ready(match r {
            Ok(m) => Ok(Opened {
                size: m.size,
                modified: m.modified,
            }),
            Err(f) => Err(self.fail(f)),
        })
    }

    fn poll_prefix(&mut self, req: Req) -> Poll<Result<Sha256, Failure<'_>>> {
        let DevReq::Get(file, len) = self.slot(req).clone() else {
            return Poll::Ready(Err(self.fail(Fault::Changed)));
        };
        let id = match self.same_file(&file) {
            Ok(id) => id,
            Err(f) => return Poll::Ready(Err(self.fail(f))),
        };
        let mut h = Sha256::new();
        let mut buf = [0u8; 128];
        let mut at = 0;
        while at < len {
            let want = ((len - at) as usize).min(buf.len());
            match self.dev.store.read(id, at, &mut buf[..want]) {
                Ok(k) if k > 0 => {
                    h.update(&buf[..k]);
                    at += k as u64;
                }
                Ok(_) => return Poll::Ready(Err(self.fail(Fault::Changed))),
                Err(e) => return Poll::Ready(Err(self.fail(Fault::Store(e)))),
            }
        }
        Poll::Ready(Ok(h))
    }

    fn poll_read(
        &mut self,
        req: Req,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Failure<'_>>> {
        let DevReq::Get(file, _) = self.slot(req).clone() else {
            return Poll::Ready(Err(self.fail(Fault::Changed)));
        };
        let r = self
            .same_file(&file)
            .and_then(|id| self.dev.store.read(id, offset, buf).map_err(Fault::Store));
        Poll::Ready(r.map_err(|f| self.fail(f)))
    }

    fn poll_unchanged(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        let DevReq::Get(file, _) = self.slot(req).clone() else {
            return Poll::Ready(Err(self.fail(Fault::Changed)));
        };
        Poll::Ready(self.same_file(&file).map(|_| ()).map_err(|f| self.fail(f)))
    }

    fn poll_create(&mut self, req: Req) -> Poll<Result<Created, Failure<'_>>> {
        let DevReq::Put(r, _, _) = self.slot(req).clone() else {
            return Poll::Ready(Err(self.fail(Fault::Store(StoreError::NotFound))));
        };
        let (tmp, resumed) = match r {
            Ok(x) => x,
            Err(f) => return Poll::Ready(Err(self.fail(f))),
        };
        if resumed == 0 {
            return Poll::Ready(Ok(Created {
                offset: 0,
                hasher: None,
            }));
        }
        let mut h = Sha256::new();
        let mut buf = [0u8; 128];
        let mut at = 0;
        while at < resumed {
            let want = ((resumed - at) as usize).min(buf.len());
            match self.dev.store.read_partial(tmp, at, &mut buf[..want]) {
                Ok(k) if k > 0 => {
                    h.update(&buf[..k]);
                    at += k as u64;
                }
                _ => break,
            }
        }
        Poll::Ready(Ok(Created {
            offset: at,
            hasher: Some(h),
        }))
    }

    fn write(&mut self, req: Req, offset: u64, data: &[u8]) -> Result<(), Failure<'_>> {
        let tmp = match self.slot(req) {
            DevReq::Put(Ok((tmp, _)), _, None) => *tmp,
            _ => return Err(self.fail(Fault::Store(StoreError::NotFound))),
        };
        match self.dev.store.write(tmp, offset, data) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(Fault::Store(e))),
        }
    }

    fn poll_commit(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        let r = match self.slot(req) {
            DevReq::Put(_, _, Some(r)) => *r,
            _ => Err(Fault::Store(StoreError::NotFound)),
        };
        Poll::Ready(r.map_err(|f| self.fail(f)))
    }

    fn poll_remove(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>> {
        let r = match self.slot(req) {
            DevReq::Remove(r) => *r,
            _ => Err(Fault::Store(StoreError::NotFound)),
        };
        Poll::Ready(r.map_err(|f| self.fail(f)))
    }

    fn poll_exec(&mut self, req: Req, buf: &mut [u8]) -> Poll<Result<Output, Failure<'_>>> {
        let ran = match &mut self.reqs[usize::from(req.slot)] {
            DevReq::Exec(r) => r,
            _ => return Poll::Ready(Ok(Output::Exited(ExitStatus::Code(-1)))),
        };
        match ran {
            Ran::Failed { code, len } => {
                let (code, len) = (*code, *len);
                let message = core::str::from_utf8(&self.out[..len]).unwrap_or("");
                Poll::Ready(Err(Failure::new(code, message)))
            }
            Ran::Output { out, err, code } => {
                let (seg, stream) = if out.0 < out.1 {
                    (out, Stream::Stdout)
                } else if err.0 < err.1 {
                    (err, Stream::Stderr)
                } else {
                    return Poll::Ready(Ok(Output::Exited(ExitStatus::Code(*code))));
                };
                let k = buf.len().min(seg.1 - seg.0);
                buf[..k].copy_from_slice(&self.out[seg.0..seg.0 + k]);
                seg.0 += k;
                Poll::Ready(Ok(Output::Bytes(stream, k)))
            }
        }
    }

    fn kill(&mut self, req: Req, _why: Kill) {
        // Commands ran to completion at start: drop what is left to send.
        if let DevReq::Exec(Ran::Output { out, err, .. }) = self.slot(req) {
            out.0 = out.1;
            err.0 = err.1;
        }
    }

    fn end(&mut self, req: Req, how: End) {
        let r = core::mem::replace(self.slot(req), DevReq::None);
        if let DevReq::Put(Ok((tmp, _)), _, None) = r {
            if matches!(how, End::Failed(_)) {
                self.dev.store.discard(tmp);
            }
            self.release(tmp);
        }
    }

    fn time_ms(&mut self, now_ms: u64) -> u64 {
        self.dev.time_ms(now_ms)
    }

    fn refused(&mut self, peer: Peer, now_ms: u64) -> Option<u64> {
        self.dev.backoff.check(peer, now_ms)
    }

    fn auth_failed(&mut self, peer: Peer, now_ms: u64) -> Option<u64> {
        self.dev.backoff.record_failure(peer, now_ms)
    }

    fn auth_succeeded(&mut self, peer: Peer) {
        self.dev.backoff.record_success(peer);
    }

    fn count(&mut self, what: Count) {
        let s = &mut self.dev.stats;
        match what {
            Count::FrameIn => s.frames_in += 1,
            Count::FrameOut => s.frames_out += 1,
            Count::BytesIn(n) => s.bytes_in += n,
            Count::BytesOut(n) => s.bytes_out += n,
            Count::ErrorSent => s.errors_sent += 1,
            Count::BadFrame => s.bad_frames += 1,
            Count::AuthFailure => s.auth_failures += 1,
            Count::BackoffRefusal => s.backoff_refusals += 1,
            Count::IntegrityFailure => s.integrity_failures += 1,
            Count::Timeout => s.timeouts += 1,
            Count::FileStored => s.files_stored += 1,
            Count::FileSent => s.files_sent += 1,
        }
    }
}

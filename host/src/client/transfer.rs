//! `tether get` and `tether put`: streamed in constant memory, SHA-256
//! verified end to end (by the core's client engine, while receiving or
//! sending), resumable, and atomic (the destination name only ever holds a
//! complete, verified file).
//!
//! The network side runs on the async task; file reading or writing runs
//! on a blocking thread; a few chunk buffers circulate between them.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::task::Poll;
use std::time::{Duration, Instant};

use sha2::Sha256;
use tether_proto::client::{Event, LocalFailure, ReqId, Request, Resume, Uploads};
use tether_proto::{Digest, ErrorCode};
use tokio::sync::mpsc;

use super::remote::{closed, Local};
use super::Remote;
use crate::error::Error;
use crate::progress::Progress;
use crate::reader::{self, ReadCmd, ReadDone, Reader};
use crate::server::files::Fail;
use crate::PART_SUFFIX;

/// Options of a transfer.
#[derive(Debug, Clone, Default)]
pub struct TransferOpts {
    /// Replace an existing destination.
    pub force: bool,
    /// Continue from a partial left by an earlier attempt.
    pub resume: bool,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Limit the transfer to this many bytes per second.
    pub limit_rate: Option<u64>,
    /// Retries after a BUSY server (transfer limit, a destination being uploaded).
    pub retries: u32,
    /// Wait before the first retry; doubles after each (at most 30 s).
    pub retry_delay: Duration,
}

/// What a finished transfer did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Size of the whole file.
    pub size: u64,
    /// Bytes that were already in place (resumed from).
    pub resumed_at: u64,
    /// Bytes that crossed the network this time.
    pub transferred: u64,
    /// SHA-256 of the whole file.
    pub digest: Digest,
    /// Time taken.
    pub elapsed: Duration,
    /// A partial was found but did not match, so the transfer started over.
    pub restarted: bool,
    /// The destination already held exactly this file: nothing was sent.
    pub identical: bool,
}

/// The partial download beside `local`: `LOCAL.tether-part`, or, where that
/// name would exceed 255 bytes, one made from the name's SHA-256.
pub fn part_path(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plain = format!("{name}{PART_SUFFIX}");
    let part = if plain.len() <= 255 {
        plain
    } else {
        use sha2::Digest as _;
        let h = Sha256::digest(name.as_bytes());
        format!(".{}{PART_SUFFIX}", hex::encode(&h[..16]))
    };
    local.with_file_name(part)
}

/// Paces a transfer to a byte rate.
#[derive(Debug)]
struct Throttle {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }
    fn account(&mut self, n: usize) {
        self.bytes += n as u64;
    }
    /// When the next byte may move.
    fn due(&self) -> Option<Instant> {
        let rate = self.rate?;
        let at = self.start + Duration::from_secs_f64(self.bytes as f64 / rate.max(1) as f64);
        (at > Instant::now()).then_some(at)
    }
}

/// Retry `attempt` while the server answers BUSY, as `opts` allows.
async fn with_retries<T, F>(opts: &TransferOpts, mut attempt: F) -> Result<T, Error>
where
    F: AsyncFnMut() -> Result<T, Error>,
{
    let mut delay = opts.retry_delay;
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(Error::Remote {
                code: ErrorCode::BUSY,
                message,
            }) if tries < opts.retries => {
                tries += 1;
                tracing::warn!(
                    "{message}; retrying in {delay:.1?} (retry {tries} of {})",
                    opts.retries
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            r => return r,
        }
    }
}

// ---------------------------------------------------------------- get

/// What the writer thread of a download is asked.
enum WriteMsg {
    Data(Vec<u8>),
    /// The partial does not hold a prefix of the file: start it over.
    Truncate,
}

/// The download's local side: bytes to the writer thread, in order.
struct Download {
    tx: mpsc::Sender<WriteMsg>,
    /// Written back by the writer thread (for reuse), or its failure.
    back: mpsc::UnboundedReceiver<Result<Vec<u8>, io::Error>>,
    spare: Vec<Vec<u8>>,
    waiting: VecDeque<WriteMsg>,
    failed: Option<io::Error>,
    throttle: Throttle,
    progress: Progress,
    received: u64,
}

impl Download {
    fn queue(&mut self, m: WriteMsg) {
        if !self.waiting.is_empty() {
            self.waiting.push_back(m);
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(m)) = self.tx.try_send(m) {
            self.waiting.push_back(m);
        }
    }

    fn data(&mut self, bytes: &[u8]) {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.received += bytes.len() as u64;
        self.progress.inc(bytes.len() as u64);
        self.throttle.account(bytes.len());
        self.queue(WriteMsg::Data(buf));
    }
}

impl Uploads for Download {
    fn hash_prefix(&mut self, _: ReqId, _: u64) -> Poll<Result<Sha256, LocalFailure<'_>>> {
        Poll::Pending
    }
    fn read(&mut self, _: ReqId, _: u64, _: &mut [u8]) -> Poll<Result<usize, LocalFailure<'_>>> {
        Poll::Pending
    }
    fn check_unchanged(&mut self, _: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        Poll::Pending
    }
}

impl Local for Download {
    async fn ready(&mut self, paused: bool) -> Option<ReqId> {
        loop {
            while let Ok(r) = self.back.try_recv() {
                match r {
                    Ok(buf) => self.spare.push(buf),
                    Err(e) => self.failed = Some(e),
                }
            }
            if let Some(m) = self.waiting.pop_front() {
                if self.tx.send(m).await.is_err() {
                    std::future::pending::<()>().await;
                }
                return None;
            }
            if paused {
                // Paused by the rate limit (checked again: it may be over).
                if let Some(at) = self.throttle.due() {
                    tokio::time::sleep_until(at.into()).await;
                }
                return None;
            }
            match self.back.recv().await {
                Some(Ok(buf)) => self.spare.push(buf),
                Some(Err(e)) => {
                    self.failed = Some(e);
                    return None;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
    fn paused(&self) -> bool {
        !self.waiting.is_empty() || self.throttle.due().is_some()
    }
}

/// Open the partial download; with `resume`, hash what it holds.
fn open_partial(part: &Path, resume: bool) -> io::Result<(File, Option<Resume>)> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)?;
    let len = f.metadata()?.len();
    if resume && len > 0 {
        let mut src = LocalFile::new(f, String::new(), len)?;
        let prefix = reader::hash_prefix(&mut src, len).map_err(|e| io::Error::other(e.message))?;
        return Ok((
            src.file,
            Some(Resume {
                offset: len,
                prefix,
            }),
        ));
    }
    f.set_len(0)?;
    Ok((f, None))
}

/// The writer thread's ends: what to write, buffers written (or the
/// failure), and the thread (the synced file when all went well).
type Writer = (
    mpsc::Sender<WriteMsg>,
    mpsc::UnboundedReceiver<Result<Vec<u8>, io::Error>>,
    tokio::task::JoinHandle<io::Result<File>>,
);

/// The writer thread: bytes to the partial, buffers back.
fn start_writer(mut file: File) -> Writer {
    let (tx, mut rx) = mpsc::channel::<WriteMsg>(4);
    let (back_tx, back) = mpsc::unbounded_channel();
    let handle = tokio::task::spawn_blocking(move || {
        while let Some(m) = rx.blocking_recv() {
            let r = match m {
                WriteMsg::Data(buf) => file.write_all(&buf).map(|()| buf),
                WriteMsg::Truncate => file
                    .set_len(0)
                    .and_then(|()| file.seek(SeekFrom::Start(0)))
                    .map(|_| Vec::new()),
            };
            let failed = r.is_err();
            let _ = back_tx.send(r);
            if failed {
                return Err(io::Error::other("write failed"));
            }
        }
        file.sync_all()?;
        Ok(file)
    });
    (tx, back, handle)
}

/// Download `remote` to `local`.
pub async fn get(
    remote: &mut Remote,
    path: &str,
    local: &Path,
    opts: &TransferOpts,
) -> Result<Report, Error> {
    if local.symlink_metadata().is_ok() && !opts.force {
        return Err(Error::Exists(local.to_path_buf()));
    }
    if let Some(dir) = local.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::local(
                "cannot save into",
                dir,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "the directory does not exist: create it, or name another destination",
                ),
            ));
        }
    }
    let part = part_path(local);
    let (p2, resume) = (part.clone(), opts.resume);
    let (file, mut held) = tokio::task::spawn_blocking(move || open_partial(&p2, resume))
        .await
        .map_err(|_| Error::Usage("the file thread failed".into()))?
        .map_err(|e| Error::local("cannot open the partial download", &part, e))?;
    let t0 = Instant::now();
    let (tx, back, writer) = start_writer(file);
    let mut side = Download {
        tx,
        back,
        spare: Vec::new(),
        waiting: VecDeque::new(),
        failed: None,
        throttle: Throttle::new(opts.limit_rate),
        progress: Progress::new(false, "get", 0, 0),
        received: 0,
    };
    let mut restarted = false;
    let r = loop {
        let resumed_at = held.as_ref().map_or(0, |r| r.offset);
        let r = with_retries(opts, async || {
            receive(remote, path, held.clone(), &mut side, opts).await
        })
        .await;
        match r {
            Ok(Received::Mismatch) => {
                tracing::info!(
                    "the partial download does not match the remote file; starting over"
                );
                side.queue(WriteMsg::Truncate);
                held = None;
                restarted = true;
            }
            Ok(Received::Done {
                size,
                offset,
                digest,
            }) => {
                break Ok((size, offset, digest, resumed_at));
            }
            Err(e) => break Err(e),
        }
    };
    side.progress.finish();
    let Download {
        tx,
        waiting,
        failed,
        ..
    } = side;
    for m in waiting {
        let _ = tx.send(m).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|_| Error::Usage("the writer thread failed".into()))?;
    let (size, offset, digest, _) = r?;
    if let Some(e) = failed {
        return Err(Error::local("cannot write", &part, e));
    }
    let file = written.map_err(|e| Error::local("cannot write", &part, e))?;
    drop(file);
    if local.symlink_metadata().is_ok() && !opts.force {
        return Err(Error::Exists(local.to_path_buf()));
    }
    std::fs::rename(&part, local)
        .map_err(|e| Error::local("cannot rename the verified download to", local, e))?;
    Ok(Report {
        size,
        resumed_at: offset,
        transferred: size - offset,
        digest,
        elapsed: t0.elapsed(),
        restarted,
        identical: false,
    })
}

enum Received {
    Done {
        size: u64,
        offset: u64,
        digest: Digest,
    },
    Mismatch,
}

/// One Get request to its end.
async fn receive(
    remote: &mut Remote,
    path: &str,
    resume: Option<Resume>,
    side: &mut Download,
    opts: &TransferOpts,
) -> Result<Received, Error> {
    let req = remote.request(Request::Get { path, resume }).await?;
    let host = remote.host.clone();
    let mut offset = 0;
    let mut result = None;
    while result.is_none() {
        remote
            .step(side, &mut |ev, side| {
                match ev {
                    Event::GetStarted {
                        req: r,
                        size,
                        offset: at,
                        ..
                    } if r == req => {
                        offset = at;
                        side.progress = Progress::new(opts.progress, "get", size, at);
                    }
                    Event::Data { req: r, bytes } if r == req => side.data(bytes),
                    Event::Finished {
                        req: r,
                        bytes,
                        sha256,
                    } if r == req => {
                        result = Some(Ok(Received::Done {
                            size: bytes,
                            offset,
                            digest: sha256.unwrap_or_default(),
                        }))
                    }
                    Event::ResumeMismatch { req: r } if r == req => {
                        result = Some(Ok(Received::Mismatch))
                    }
                    Event::Failed {
                        req: r,
                        code,
                        message,
                        ..
                    } if r == req => result = Some(Err(failed(code, message))),
                    Event::Closed(e) => result = Some(Err(closed(&host, e))),
                    _ => {}
                }
                Ok(())
            })
            .await?;
        if let Some(e) = side.failed.take() {
            let _ = remote.cancel(req).await;
            return Err(Error::local("cannot write", "the partial download", e));
        }
    }
    result.unwrap_or_else(|| unreachable!())
}

/// A request's failure, local (a digest) or the server's.
fn failed(code: ErrorCode, message: &str) -> Error {
    Error::Remote {
        code,
        message: message.to_string(),
    }
}

// ---------------------------------------------------------------- put

/// The local file being uploaded, and what identifies its content.
#[derive(Debug)]
struct LocalFile {
    file: File,
    shown: String,
    size: u64,
    identity: Option<Identity>,
}

impl LocalFile {
    fn new(file: File, shown: String, size: u64) -> io::Result<Self> {
        let m = file.metadata()?;
        Ok(LocalFile {
            identity: Some(identity(&m)),
            file,
            shown,
            size,
        })
    }

    /// Open `path` again for one attempt of an upload: it must still be
    /// the file the command looked at first (`was`), or the upload would
    /// send another one under the first one's size.
    fn reopen(path: &Path, shown: &str, size: u64, was: Identity) -> Result<Self, Fail> {
        let f = File::open(path)
            .and_then(|f| LocalFile::new(f, shown.to_string(), size))
            .map_err(|e| crate::server::files::io_fail(&e, shown))?;
        if f.identity != Some(was) {
            return Err(reader::changed(shown));
        }
        Ok(f)
    }
}

/// Size, modification time, inode, change time (s, ns).
type Identity = (u64, Option<std::time::SystemTime>, u64, i64, i64);

/// What says a file is still the one opened: size, modification time,
/// inode and change time (a write in place moves the change time even
/// when it restores the modification time).
fn identity(m: &std::fs::Metadata) -> Identity {
    #[cfg(unix)]
    let (ino, ct, ctn) = {
        use std::os::unix::fs::MetadataExt;
        (m.ino(), m.ctime(), m.ctime_nsec())
    };
    #[cfg(not(unix))]
    let (ino, ct, ctn) = (0, 0, 0);
    (m.len(), m.modified().ok(), ino, ct, ctn)
}

impl io::Read for LocalFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut self.file, buf)
    }
}

impl io::Seek for LocalFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl reader::Source for LocalFile {
    fn size(&self) -> u64 {
        self.size
    }
    fn shown(&self) -> &str {
        &self.shown
    }
    fn check_unchanged(&self) -> Result<(), Fail> {
        let now = self.file.metadata().map(|m| identity(&m)).ok();
        let at_path = std::fs::metadata(&self.shown).map(|m| identity(&m)).ok();
        if now != self.identity || at_path.is_some_and(|p| p.2 != self.identity.map_or(0, |i| i.2))
        {
            return Err(reader::changed(&self.shown));
        }
        Ok(())
    }
}

/// The upload's local side: the reader thread's answers, kept until the
/// engine asks.
struct Upload {
    reader: Reader,
    answers: mpsc::UnboundedReceiver<ReadDone>,
    chunks: VecDeque<Vec<u8>>,
    at: usize,
    prefix: Option<Result<Sha256, Fail>>,
    unchanged: Option<Result<(), Fail>>,
    failed: Option<Fail>,
    asked: bool,
    checking: bool,
    throttled: bool,
    eof: bool,
    waiting: Option<ReqId>,
    throttle: Throttle,
    progress: Progress,
    sent: u64,
}

impl Upload {
    fn take(&mut self, d: ReadDone) {
        match d {
            ReadDone::Prefix(r) => self.prefix = Some(r),
            ReadDone::Unchanged(r) => self.unchanged = Some(r),
            ReadDone::Chunk(Ok(b)) if b.is_empty() => self.eof = true,
            ReadDone::Chunk(Ok(b)) => self.chunks.push_back(b),
            ReadDone::Chunk(Err(f)) => self.failed = Some(f),
        }
    }

    fn wait(&mut self, req: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        self.waiting = Some(req);
        Poll::Pending
    }
}

fn local(f: &Fail) -> LocalFailure<'_> {
    LocalFailure {
        code: f.code,
        message: &f.message,
    }
}

impl Uploads for Upload {
    fn hash_prefix(&mut self, req: ReqId, len: u64) -> Poll<Result<Sha256, LocalFailure<'_>>> {
        if !self.asked {
            self.asked = true;
            let _ = self.reader.cmds.send(ReadCmd::Hash(len));
        }
        if self.prefix.is_none() {
            self.waiting = Some(req);
            return Poll::Pending;
        }
        self.asked = false;
        match self.prefix.take() {
            Some(Ok(h)) => Poll::Ready(Ok(h)),
            Some(Err(f)) => {
                self.failed = Some(f);
                Poll::Ready(Err(local(
                    self.failed.as_ref().unwrap_or_else(|| unreachable!()),
                )))
            }
            None => Poll::Pending,
        }
    }

    fn read(
        &mut self,
        req: ReqId,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, LocalFailure<'_>>> {
        if !self.asked {
            self.asked = true;
            let _ = self.reader.cmds.send(ReadCmd::Stream(offset));
        }
        if self.failed.is_some() {
            return Poll::Ready(Err(local(
                self.failed.as_ref().unwrap_or_else(|| unreachable!()),
            )));
        }
        if self.throttle.due().is_some() {
            self.waiting = Some(req);
            self.throttled = true;
            return Poll::Pending;
        }
        let Some(front) = self.chunks.front() else {
            if self.eof {
                return Poll::Ready(Ok(0));
            }
            self.waiting = Some(req);
            return Poll::Pending;
        };
        let n = buf.len().min(front.len() - self.at);
        buf[..n].copy_from_slice(&front[self.at..self.at + n]);
        self.at += n;
        if self.at == front.len() {
            self.at = 0;
            if let Some(b) = self.chunks.pop_front() {
                let _ = self.reader.credits.send(b);
            }
        }
        self.sent += n as u64;
        self.progress.inc(n as u64);
        self.throttle.account(n);
        Poll::Ready(Ok(n))
    }

    fn check_unchanged(&mut self, req: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        if self.unchanged.is_none() {
            // The reader answers in order: a Check sent after the stream
            // (or with none, for an empty file) comes after its last chunk.
            if !self.checking {
                self.checking = true;
                let _ = self.reader.cmds.send(ReadCmd::Check);
            }
            return self.wait(req);
        }
        self.checking = false;
        match self.unchanged.take() {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(f)) => {
                self.failed = Some(f);
                Poll::Ready(Err(local(
                    self.failed.as_ref().unwrap_or_else(|| unreachable!()),
                )))
            }
            None => Poll::Pending,
        }
    }
}

impl Local for Upload {
    async fn ready(&mut self, _: bool) -> Option<ReqId> {
        if self.throttled {
            // Checked again: the pause may be over already.
            self.throttled = false;
            if let Some(at) = self.throttle.due() {
                tokio::time::sleep_until(at.into()).await;
            }
            return self.waiting.take();
        }
        match self.answers.recv().await {
            Some(d) => {
                self.take(d);
                while let Ok(d) = self.answers.try_recv() {
                    self.take(d);
                }
                self.waiting.take()
            }
            None => std::future::pending().await,
        }
    }
}

/// Upload `local` to `remote`.
pub async fn put(
    remote: &mut Remote,
    local: &Path,
    path: &str,
    opts: &TransferOpts,
) -> Result<Report, Error> {
    let file = File::open(local).map_err(|e| Error::local("cannot open", local, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::local("cannot read", local, e))?;
    if !meta.is_file() {
        return Err(Error::local(
            "cannot upload",
            local,
            io::Error::other("it is not a regular file"),
        ));
    }
    drop(file);
    let size = meta.len();
    let was = identity(&meta);
    let t0 = Instant::now();
    let mut resume = opts.resume;
    let mut restarted = false;
    loop {
        let r = with_retries(opts, async || {
            send(remote, (local, was), path, size, resume, opts).await
        })
        .await;
        match r {
            Ok(Sent::Mismatch) => {
                tracing::info!("the server's partial upload does not match; starting over");
                resume = false;
                restarted = true;
            }
            Ok(Sent::Done { offset, digest }) => {
                return Ok(Report {
                    size,
                    resumed_at: offset,
                    transferred: size - offset,
                    digest,
                    elapsed: t0.elapsed(),
                    restarted,
                    identical: false,
                })
            }
            Err(Error::Remote {
                code: ErrorCode::EXISTS,
                message,
            }) if !opts.force => {
                return match identical(remote, (local, was), path, size).await? {
                    Some(digest) => Ok(Report {
                        size,
                        resumed_at: size,
                        transferred: 0,
                        digest,
                        elapsed: t0.elapsed(),
                        restarted,
                        identical: true,
                    }),
                    None => Err(Error::Remote {
                        code: ErrorCode::EXISTS,
                        message,
                    }),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

enum Sent {
    Done { offset: u64, digest: Digest },
    Mismatch,
}

/// Start a reader thread over the local file.
fn open_upload(local: &Path, size: u64, was: Identity, opts: &TransferOpts) -> Upload {
    let (tx, answers) = mpsc::unbounded_channel();
    let (p, shown) = (local.to_path_buf(), local.display().to_string());
    let tx2 = tx.clone();
    let reader = reader::start(
        move || LocalFile::reopen(&p, &shown, size, was),
        move |r: &Result<LocalFile, Fail>| match r {
            Ok(_) => true,
            Err(f) => {
                let _ = tx2.send(ReadDone::Chunk(Err(f.clone())));
                false
            }
        },
        move |d| tx.send(d).is_ok(),
    );
    Upload {
        reader,
        answers,
        chunks: VecDeque::new(),
        at: 0,
        prefix: None,
        unchanged: None,
        failed: None,
        asked: false,
        checking: false,
        throttled: false,
        eof: false,
        waiting: None,
        throttle: Throttle::new(opts.limit_rate),
        progress: Progress::new(false, "put", size, 0),
        sent: 0,
    }
}

/// One Put request to its end.
async fn send(
    remote: &mut Remote,
    (local, was): (&Path, Identity),
    path: &str,
    size: u64,
    resume: bool,
    opts: &TransferOpts,
) -> Result<Sent, Error> {
    let mut side = open_upload(local, size, was, opts);
    let req = remote
        .request(Request::Put {
            path,
            size,
            force: opts.force,
            resume,
        })
        .await?;
    let host = remote.host.clone();
    let mut offset = 0;
    let mut result = None;
    while result.is_none() {
        remote
            .step(&mut side, &mut |ev, side| {
                match ev {
                    Event::PutStarted { req: r, offset: at } if r == req => {
                        offset = at;
                        side.progress = Progress::new(opts.progress, "put", size, at);
                    }
                    Event::Finished { req: r, sha256, .. } if r == req => {
                        result = Some(Ok(Sent::Done {
                            offset,
                            digest: sha256.unwrap_or_default(),
                        }))
                    }
                    Event::ResumeMismatch { req: r } if r == req => {
                        result = Some(Ok(Sent::Mismatch))
                    }
                    Event::Failed {
                        req: r,
                        code,
                        message,
                        origin,
                    } if r == req => {
                        result = Some(Err(match origin {
                            tether_proto::client::Origin::Local => Error::Local {
                                what: "cannot upload",
                                path: local.to_path_buf(),
                                source: io::Error::other(message.to_string()),
                            },
                            _ => failed(code, message),
                        }))
                    }
                    Event::Closed(e) => result = Some(Err(closed(&host, e))),
                    _ => {}
                }
                Ok(())
            })
            .await?;
    }
    side.progress.finish();
    result.unwrap_or_else(|| unreachable!())
}

/// The destination exists: whether it holds exactly `local` (a Get from
/// its end, whose prefix digest is the whole file's). Returns its digest.
async fn identical(
    remote: &mut Remote,
    (local, was): (&Path, Identity),
    path: &str,
    size: u64,
) -> Result<Option<Digest>, Error> {
    let (p, shown) = (local.to_path_buf(), local.display().to_string());
    let prefix = tokio::task::spawn_blocking(move || {
        let mut f = LocalFile::reopen(&p, &shown, size, was)
            .map_err(|f| Error::local("cannot read", &p, io::Error::other(f.message)))?;
        reader::hash_prefix(&mut f, size)
            .map_err(|e| Error::local("cannot read", &p, io::Error::other(e.message)))
    })
    .await
    .map_err(|_| Error::Usage("the file thread failed".into()))??;
    let req = remote
        .request(Request::Get {
            path,
            resume: Some(Resume {
                offset: size,
                prefix,
            }),
        })
        .await?;
    let host = remote.host.clone();
    let mut result: Option<Result<Option<Digest>, Error>> = None;
    let (mut other_size, mut cancelled) = (false, false);
    while result.is_none() {
        remote
            .step(&mut super::remote::Nothing, &mut |ev, _| {
                match ev {
                    // Another size: not the same file; its bytes are not wanted.
                    Event::GetStarted { req: r, offset, .. } if r == req && offset != size => {
                        other_size = true
                    }
                    Event::Finished {
                        req: r,
                        bytes,
                        sha256,
                    } if r == req => {
                        let same = bytes == size && !other_size;
                        result = Some(Ok(if same { sha256 } else { None }))
                    }
                    Event::ResumeMismatch { req: r } if r == req => result = Some(Ok(None)),
                    Event::Failed { req: r, .. } if r == req => result = Some(Ok(None)),
                    Event::Closed(e) => result = Some(Err(closed(&host, e))),
                    _ => {}
                }
                Ok(())
            })
            .await?;
        if other_size && !cancelled && result.is_none() {
            cancelled = true;
            remote.cancel(req).await?;
        }
    }
    result.unwrap_or(Ok(None))
}

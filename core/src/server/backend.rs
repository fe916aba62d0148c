//! What a server supplies to the engine: its storage, its commands, its
//! clock and its shared tables, behind one trait.
//!
//! The engine decides everything the protocol states (which request may
//! run, paths, limits, digests, replies, their texts for protocol errors);
//! a [`Backend`] only does the work. Work is started with
//! [`Backend::start`] and its result is pulled with the `poll_*` method of
//! that operation. A backend that can do the work at once (a device's RAM
//! store) answers `Ready` on the first poll; one that must wait (a host's
//! file system on a blocking thread, a process) answers `Pending` and calls
//! [`ServerConn::handle_ready`](super::ServerConn::handle_ready) for that
//! request when a poll would make progress. The engine never polls a
//! request between a `Pending` and its `handle_ready`.
//!
//! Body bytes never pass through engine-owned memory: [`Backend::poll_read`]
//! and [`Backend::poll_exec`] write straight into the frame being composed,
//! and [`Backend::write`] gets upload bytes straight from the input.
//!
//! Every request the engine started ends with exactly one [`Backend::end`]
//! call, after which the backend forgets it (and stops the work if any).

use core::task::Poll;

use sha2::Sha256;

use crate::message::{Command, Digest, Entry, ErrorCode, ExitStatus, Stream};

use super::backoff::Peer;
use super::path::RelPath;

/// One request in flight: the engine's slot for it and its wire id. A
/// backend keys its per-request state by `slot` (`0..max_requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Req {
    /// Index of the engine's slot, `0..N`.
    pub slot: u16,
    /// The request id the client chose.
    pub id: u32,
}

/// Why an operation failed: the code and text of the request's Error
/// reply. The text says what went wrong (naming the path) and, where it
/// helps, what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    /// The error code.
    pub code: ErrorCode,
    /// The text.
    pub message: &'a str,
}

impl<'a> Failure<'a> {
    /// A failure.
    pub const fn new(code: ErrorCode, message: &'a str) -> Self {
        Failure { code, message }
    }
}

/// A file opened for a Get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Its size when opened: the Get sends exactly this many bytes.
    pub size: u64,
    /// Modification time, whole seconds since the Unix epoch (0 if unknown).
    pub modified: u64,
}

/// Where an upload starts.
#[derive(Debug, Clone)]
pub struct Created {
    /// Bytes already held from an earlier attempt (0 unless resuming).
    pub offset: u64,
    /// SHA-256 state over those bytes (`None` when `offset` is 0).
    pub hasher: Option<Sha256>,
}

/// What a running command produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// This many bytes of this stream were written to the buffer.
    Bytes(Stream, usize),
    /// It exited (all its output was returned before).
    Exited(ExitStatus),
}

/// Work to start for a request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Start<'a> {
    /// Describe `path` (a symlink itself, not followed): then
    /// [`Backend::poll_stat`].
    Stat {
        /// The checked path.
        path: RelPath<'a>,
    },
    /// List the directory `path`, sorted by name in byte order, without
    /// partial uploads and names that are not UTF-8: then
    /// [`Backend::poll_list`].
    List {
        /// The checked path.
        path: RelPath<'a>,
    },
    /// Open the file `path` for reading: then [`Backend::poll_open`].
    Open {
        /// The checked path.
        path: RelPath<'a>,
    },
    /// Hash the first `len` bytes of the opened file: then
    /// [`Backend::poll_prefix`].
    HashPrefix {
        /// Bytes to hash (at most the size it was opened with).
        len: u64,
    },
    /// Check that the opened file is still the one opened (same size,
    /// modification time and identity): then [`Backend::poll_unchanged`].
    CheckUnchanged,
    /// Prepare an upload of `size` bytes to `path`: refuse an existing
    /// destination without `force` (`EXISTS`), claim the destination
    /// (`BUSY` if another upload holds it), create missing parents (servers
    /// with directories), and with `resume` take up the partial kept from
    /// an earlier attempt if there is one no longer than `size` (else start
    /// empty, dropping it): then [`Backend::poll_create`].
    Create {
        /// The checked path.
        path: RelPath<'a>,
        /// The announced size.
        size: u64,
        /// Replace an existing destination.
        force: bool,
        /// Take up a kept partial.
        resume: bool,
    },
    /// Every byte arrived and its SHA-256 matched: make the upload durable
    /// and give it its name (replacing an older file when `force`): then
    /// [`Backend::poll_commit`].
    Commit {
        /// The verified size.
        size: u64,
        /// The verified digest.
        sha256: Digest,
    },
    /// Remove the file, symlink or empty directory `path` (`NOT_EMPTY` for
    /// a directory with entries): then [`Backend::poll_remove`].
    Remove {
        /// The checked path.
        path: RelPath<'a>,
    },
    /// Run `command` (the engine checked the policy; it also enforces
    /// `timeout_ms` and calls [`Backend::kill`]): then
    /// [`Backend::poll_exec`].
    Exec {
        /// What to run.
        command: Command<'a>,
        /// The request's timeout, for the backend's information.
        timeout_ms: Option<u32>,
    },
}

/// Why a command is to be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// The client cancelled it: end it gently (SIGTERM, then SIGKILL).
    Cancel,
    /// Its timeout passed: end it now.
    Timeout,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its final reply was sent.
    Done,
    /// It failed with this code; an upload's partial is discarded.
    Failed(ErrorCode),
    /// It stopped early (cancelled, the connection ended, a write failed);
    /// an upload's partial is kept for resuming (servers with `RESUME`).
    Interrupted(ErrorCode),
}

/// Something worth counting (a device's `stats`, a host's metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Count {
    /// A frame was received.
    FrameIn,
    /// A frame was sent.
    FrameOut,
    /// Bytes received.
    BytesIn(u64),
    /// Bytes sent.
    BytesOut(u64),
    /// An Error frame was sent.
    ErrorSent,
    /// A received frame failed to decode or parse.
    BadFrame,
    /// An Auth proof was wrong.
    AuthFailure,
    /// A connection was refused for back-off.
    BackoffRefusal,
    /// A frame failed its tag, or arrived unsealed after Auth.
    IntegrityFailure,
    /// A connection was closed by a deadline.
    Timeout,
    /// An upload was committed.
    FileStored,
    /// A download completed.
    FileSent,
}

/// A server's side of the engine (see the [module docs](self)).
pub trait Backend {
    /// Start work for `req`.
    fn start(&mut self, req: Req, work: Start<'_>);

    /// The result of [`Start::Stat`]: the entry (its name is the path's
    /// last component, `.` for the root).
    fn poll_stat(&mut self, req: Req) -> Poll<Result<Entry<'_>, Failure<'_>>>;

    /// The next entry of [`Start::List`]; `Ready(None)` at the end.
    fn poll_list(&mut self, req: Req) -> Poll<Option<Result<Entry<'_>, Failure<'_>>>>;

    /// The result of [`Start::Open`].
    fn poll_open(&mut self, req: Req) -> Poll<Result<Opened, Failure<'_>>>;

    /// The result of [`Start::HashPrefix`]: SHA-256 state over the prefix.
    fn poll_prefix(&mut self, req: Req) -> Poll<Result<Sha256, Failure<'_>>>;

    /// Bytes of the opened file from `offset` into `buf` (at least one when
    /// `offset` is below the size it was opened with; `Ok(0)` means the
    /// file ended early: it shrank).
    fn poll_read(
        &mut self,
        req: Req,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Failure<'_>>>;

    /// The result of [`Start::CheckUnchanged`] (`CHANGED` if it changed).
    fn poll_unchanged(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>>;

    /// The result of [`Start::Create`].
    fn poll_create(&mut self, req: Req) -> Poll<Result<Created, Failure<'_>>>;

    /// Upload bytes for offset `offset`, in order. Never blocks: a backend
    /// that writes elsewhere queues them (and the driver reads no more
    /// input while its queue is full). A failure ends the upload.
    fn write(&mut self, req: Req, offset: u64, data: &[u8]) -> Result<(), Failure<'_>>;

    /// The result of [`Start::Commit`].
    fn poll_commit(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>>;

    /// The result of [`Start::Remove`].
    fn poll_remove(&mut self, req: Req) -> Poll<Result<(), Failure<'_>>>;

    /// Output of the command of [`Start::Exec`], written into `buf`, or its
    /// exit once all output was returned; `Err` if it could not be started.
    fn poll_exec(&mut self, req: Req, buf: &mut [u8]) -> Poll<Result<Output, Failure<'_>>>;

    /// Stop the command of `req` (its exit is still polled).
    fn kill(&mut self, req: Req, why: Kill);

    /// `req` is over: forget it, stop its work, release what it holds.
    fn end(&mut self, req: Req, how: End);

    /// The wall clock at the caller's monotonic `now_ms`: Unix milliseconds,
    /// or milliseconds since boot on a device without one.
    fn time_ms(&mut self, now_ms: u64) -> u64;

    /// How many more milliseconds `peer` is refused after failed
    /// authentications (`None`: serve it).
    fn refused(&mut self, peer: Peer, now_ms: u64) -> Option<u64>;

    /// `peer`'s Auth proof was wrong; returns the refusal period this
    /// starts, if any.
    fn auth_failed(&mut self, peer: Peer, now_ms: u64) -> Option<u64>;

    /// `peer` authenticated.
    fn auth_succeeded(&mut self, peer: Peer);

    /// Count something (no-op by default).
    fn count(&mut self, what: Count) {
        let _ = what;
    }
}

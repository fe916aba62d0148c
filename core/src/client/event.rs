//! What the client engine is asked ([`Request`]), what it reports
//! ([`Event`]), and what a client supplies for uploads ([`Uploads`]).

use core::fmt;
use core::task::Poll;

use sha2::Sha256;

use crate::handshake::HandshakeError;
use crate::message::{Caps, Command, Digest, Entry, ErrorCode, ExitStatus, Stream};

/// One request in flight: the engine's slot for it and its current wire
/// id (a transfer restarted after a resume mismatch gets a new id in the
/// same slot; the slot identifies the request to its caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReqId {
    /// The engine's slot, `0..N`.
    pub slot: u16,
    /// The request id on the wire.
    pub id: u32,
}

/// Where a Get resumes: the bytes the caller already holds.
#[derive(Debug, Clone)]
pub struct Resume {
    /// How many bytes (a prefix of the file) it holds.
    pub offset: u64,
    /// SHA-256 state over them.
    pub prefix: Sha256,
}

/// A request to send.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Request<'a> {
    /// Liveness; answered by [`Event::Pong`].
    Ping {
        /// Echoed back.
        stamp: u64,
    },
    /// Answered by [`Event::Echo`].
    Echo {
        /// The text.
        text: &'a str,
    },
    /// Answered by [`Event::Time`].
    Time {
        /// The format (the core's dialect; empty for the default).
        format: &'a str,
    },
    /// Run a command: [`Event::Output`]s, then [`Event::Exit`].
    Exec {
        /// What to run.
        command: Command<'a>,
        /// The server kills it after this many milliseconds.
        timeout_ms: Option<u32>,
    },
    /// Describe a path: one [`Event::Entry`] ends it.
    Stat {
        /// The path.
        path: &'a str,
    },
    /// List a directory: [`Event::Entry`]s, then [`Event::Finished`].
    List {
        /// The directory.
        path: &'a str,
    },
    /// Download: [`Event::GetStarted`], [`Event::Data`]s (hashed and
    /// counted by the engine), then [`Event::Finished`] with the verified
    /// digest.
    Get {
        /// The remote file.
        path: &'a str,
        /// What the caller holds already, if anything.
        resume: Option<Resume>,
    },
    /// Upload `size` bytes read through [`Uploads`]: [`Event::PutStarted`],
    /// then [`Event::Finished`] once the server verified and committed.
    Put {
        /// The remote destination.
        path: &'a str,
        /// The whole file's size.
        size: u64,
        /// Replace an existing destination.
        force: bool,
        /// Take up the server's partial of an earlier attempt.
        resume: bool,
    },
    /// Remove a file or empty directory: [`Event::Finished`].
    Remove {
        /// The path.
        path: &'a str,
    },
}

/// What the server announced in HelloAck, and how the session is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfo<'a> {
    /// The server's software.
    pub agent: &'a str,
    /// Its capabilities.
    pub caps: Caps,
    /// Negotiated largest header.
    pub max_header: u16,
    /// Negotiated largest body.
    pub max_chunk: u32,
    /// Most requests in flight it runs.
    pub max_requests: u16,
    /// Longest name it accepts.
    pub max_name: u16,
    /// Longest path it accepts.
    pub max_path: u16,
    /// Both sides proved the key; every frame is sealed.
    pub authenticated: bool,
    /// Every frame is encrypted too.
    pub encrypted: bool,
}

/// Why a connection failed or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError<'a> {
    /// The server refused it, or ended it, with an Error (request id 0).
    Server {
        /// Its code.
        code: ErrorCode,
        /// Its text.
        message: &'a str,
    },
    /// The handshake could not be completed with this server (keys,
    /// encryption, versions, limits).
    Handshake(HandshakeError),
    /// What came back before the handshake is not tether.
    NotTether(&'a str),
    /// A frame failed its tag or did not decrypt: the connection was
    /// tampered with or corrupted.
    Integrity(&'a str),
    /// The server broke the protocol (a frame that is not allowed here).
    Protocol(&'a str),
    /// The handshake took longer than the deadline.
    Timeout,
    /// With requests in flight, nothing arrived for this many milliseconds
    /// after a keepalive Ping: the server or the path to it is gone.
    Stalled(u32),
}

impl fmt::Display for ConnError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Server { code, message } => {
                write!(f, "{message} [{}]", code.name().unwrap_or("?"))
            }
            ConnError::Handshake(e) => write!(f, "{e}"),
            ConnError::NotTether(d) => write!(f, "not a tether server: {d}"),
            ConnError::Integrity(d) => write!(
                f,
                "integrity check failed: the connection was tampered with or corrupted ({d})"
            ),
            ConnError::Protocol(d) => write!(f, "protocol error: {d}"),
            ConnError::Timeout => write!(f, "the handshake did not complete in time"),
            ConnError::Stalled(ms) => write!(
                f,
                "the server stopped answering (nothing for {} s after a keepalive Ping)",
                ms / 1000
            ),
        }
    }
}

/// Whose error ended a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The server answered with an Error.
    Server,
    /// This side found it (a digest or size that does not match, a local
    /// file that failed or changed): the engine cancelled the request.
    Local,
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The handshake completed.
    Connected(ServerInfo<'a>),
    /// The connection failed or ended; nothing more will happen on it.
    Closed(ConnError<'a>),
    /// Answer to Ping.
    Pong {
        /// The request.
        req: ReqId,
        /// Its stamp.
        stamp: u64,
    },
    /// Answer to Echo.
    Echo {
        /// The request.
        req: ReqId,
        /// The text.
        text: &'a str,
    },
    /// Answer to Time.
    Time {
        /// The request.
        req: ReqId,
        /// Unix milliseconds (or since boot, on a device without a clock).
        unix_ms: u64,
        /// The formatted time.
        text: &'a str,
    },
    /// A command's output, as produced.
    Output {
        /// The request.
        req: ReqId,
        /// Which stream.
        stream: Stream,
        /// The bytes (verified on a sealed session).
        bytes: &'a [u8],
    },
    /// A command ended.
    Exit {
        /// The request.
        req: ReqId,
        /// How.
        status: ExitStatus,
    },
    /// An entry of a Stat or List.
    Entry {
        /// The request.
        req: ReqId,
        /// The entry.
        entry: Entry<'a>,
    },
    /// A Get's file: the Data that follows starts at `offset` (0 if the
    /// caller's partial did not match or was past the end: the caller
    /// starts its partial over).
    GetStarted {
        /// The request.
        req: ReqId,
        /// The file's size.
        size: u64,
        /// Its modification time, Unix seconds.
        modified: u64,
        /// Where the data starts.
        offset: u64,
    },
    /// File bytes of a Get, in order.
    Data {
        /// The request.
        req: ReqId,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A Put's data starts at `offset` (the server kept that many bytes of
    /// an earlier attempt, and they match the caller's file).
    PutStarted {
        /// The request.
        req: ReqId,
        /// Where the data starts.
        offset: u64,
    },
    /// The request completed: a Stat, List (`bytes` = entries), Remove
    /// (`bytes` = 0), Get (`bytes` = size, `sha256` verified against the
    /// bytes received), Put (`bytes` = size, `sha256` verified by the
    /// server and matching what was sent).
    Finished {
        /// The request.
        req: ReqId,
        /// Count, or size.
        bytes: u64,
        /// The whole file's SHA-256, for transfers.
        sha256: Option<Digest>,
    },
    /// A resumed transfer was cancelled because the two partial copies
    /// differ (the server's prefix digest is not the caller's): start it
    /// over without resuming (a Get: truncate the partial first).
    ResumeMismatch {
        /// The request (ended).
        req: ReqId,
    },
    /// The request ended with an error (the connection goes on).
    Failed {
        /// The request.
        req: ReqId,
        /// Whose error.
        origin: Origin,
        /// Its code.
        code: ErrorCode,
        /// Its text.
        message: &'a str,
    },
}

impl Event<'_> {
    /// The request an event is about (`None` for [`Event::Connected`] and
    /// [`Event::Closed`], which are about the connection).
    pub fn req(&self) -> Option<ReqId> {
        match self {
            Event::Connected(_) | Event::Closed(_) => None,
            Event::Pong { req, .. }
            | Event::Echo { req, .. }
            | Event::Time { req, .. }
            | Event::Output { req, .. }
            | Event::Exit { req, .. }
            | Event::Entry { req, .. }
            | Event::GetStarted { req, .. }
            | Event::Data { req, .. }
            | Event::PutStarted { req, .. }
            | Event::Finished { req, .. }
            | Event::ResumeMismatch { req }
            | Event::Failed { req, .. } => Some(*req),
        }
    }
}

/// A failure of the caller's side of an upload: its Error's code and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalFailure<'a> {
    /// A code (`IO`, `CHANGED`, ...).
    pub code: ErrorCode,
    /// What went wrong, and what to do.
    pub message: &'a str,
}

/// What a client supplies for its uploads; like the server's backend, an
/// answer may be `Pending` and the caller then calls
/// [`ClientConn::handle_ready`](super::ClientConn::handle_ready).
pub trait Uploads {
    /// SHA-256 state over the first `len` bytes of the upload's file (to
    /// check the server's kept partial).
    fn hash_prefix(&mut self, req: ReqId, len: u64) -> Poll<Result<Sha256, LocalFailure<'_>>>;
    /// Bytes of the file from `offset` into `buf` (at least one while
    /// `offset` is below the size; `Ok(0)` means it ended early).
    fn read(
        &mut self,
        req: ReqId,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, LocalFailure<'_>>>;
    /// All bytes were read: is the file still the one it was (size,
    /// modification time)? (`CHANGED` if not: nothing is committed.)
    fn check_unchanged(&mut self, req: ReqId) -> Poll<Result<(), LocalFailure<'_>>>;
}

/// A client without uploads.
impl Uploads for () {
    fn hash_prefix(&mut self, _: ReqId, _: u64) -> Poll<Result<Sha256, LocalFailure<'_>>> {
        Poll::Ready(Err(LocalFailure {
            code: ErrorCode::IO,
            message: "no uploads",
        }))
    }
    fn read(&mut self, _: ReqId, _: u64, _: &mut [u8]) -> Poll<Result<usize, LocalFailure<'_>>> {
        Poll::Ready(Ok(0))
    }
    fn check_unchanged(&mut self, _: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        Poll::Ready(Ok(()))
    }
}

/// Why a request could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RequestError {
    /// Not connected (yet, or any more).
    NotConnected,
    /// Every request slot is in use: wait for an [`Event::Finished`] or
    /// [`Event::Failed`] (or the server's `max_requests` is reached).
    Busy,
    /// The staging queue is full: transmit, then ask again.
    NoRoom,
    /// The request is longer than the negotiated header limit.
    TooLarge,
    /// The request cannot be encoded (an argument with a NUL).
    Invalid,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotConnected => write!(f, "not connected"),
            RequestError::Busy => write!(f, "too many requests in flight"),
            RequestError::NoRoom => write!(f, "no room to queue the request yet"),
            RequestError::TooLarge => {
                write!(f, "the request is longer than the server's header limit")
            }
            RequestError::Invalid => write!(f, "the request cannot be encoded"),
        }
    }
}

impl core::error::Error for RequestError {}

//! The frame header: a request id and one [`Message`], postcard-encoded.
//!
//! Strings and byte arrays borrow from the buffer they were parsed from, so
//! parsing never allocates. The variant order of [`Message`] *is* the wire
//! kind number (a postcard varint); new kinds are only ever appended.
//!
//! Invariants: a header that parses is well-formed postcard with every field
//! present; [`Header::parse`] rejects trailing bytes, so one header has
//! exactly one encoding.

use core::fmt;
use serde::{Deserialize, Serialize};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Every frame's header: which request it belongs to and what it says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// Chosen by the requester, unique among its requests in flight on one
    /// connection; every reply (and every data frame of a request) carries it.
    /// Id 0 is used for connection-level frames (Hello, HelloAck, Auth, AuthOk)
    /// and for errors about frames whose id could not be read.
    pub request_id: u32,
    /// The message.
    #[serde(borrow)]
    pub message: Message<'a>,
}

/// Stable wire numbers of the message kinds (the postcard variant index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum Kind {
    Hello = 0,
    HelloAck = 1,
    Auth = 2,
    AuthOk = 3,
    Ping = 4,
    Pong = 5,
    Echo = 6,
    EchoReply = 7,
    Time = 8,
    TimeReply = 9,
    Exec = 10,
    Output = 11,
    Exit = 12,
    Cancel = 13,
    Stat = 14,
    StatReply = 15,
    List = 16,
    ListEntry = 17,
    Get = 18,
    FileInfo = 19,
    Data = 20,
    Done = 21,
    Put = 22,
    PutReady = 23,
    Remove = 24,
    Error = 25,
}

impl Kind {
    /// Number of kinds defined by wire version 1.
    pub const COUNT: u32 = 26;

    /// The kind with wire number `n`, if version 1 defines it.
    pub fn from_u32(n: u32) -> Option<Kind> {
        use Kind::*;
        const ALL: [Kind; Kind::COUNT as usize] = [
            Hello, HelloAck, Auth, AuthOk, Ping, Pong, Echo, EchoReply, Time, TimeReply, Exec,
            Output, Exit, Cancel, Stat, StatReply, List, ListEntry, Get, FileInfo, Data, Done, Put,
            PutReady, Remove, Error,
        ];
        ALL.get(n as usize).copied()
    }

    /// Whether frames of this kind may carry a body.
    pub fn has_body(self) -> bool {
        matches!(self, Kind::Output | Kind::Data)
    }
}

/// Everything a frame can say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// Client → server, first frame of a connection.
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// Server → client, answers Hello with the negotiated limits.
    #[serde(borrow)]
    HelloAck(HelloAck<'a>),
    /// Client → server: proof of the pre-shared key over both nonces.
    Auth(Proof),
    /// Server → client: the server's proof; the session is authenticated.
    AuthOk(Proof),
    /// Liveness probe; answered by Pong with the same stamp.
    Ping {
        /// Opaque, echoed back (clients put a send time here).
        stamp: u64,
    },
    /// Answer to Ping.
    Pong {
        /// The Ping's stamp.
        stamp: u64,
    },
    /// Echo service request.
    Echo {
        /// Text to echo.
        text: &'a str,
    },
    /// Echo service reply: the request's text upper-cased (ASCII letters).
    EchoReply {
        /// The upper-cased text.
        text: &'a str,
    },
    /// Time service request.
    Time {
        /// strftime-style format; empty selects the default `%Y-%m-%dT%H:%M:%SZ`.
        format: &'a str,
    },
    /// Time service reply.
    TimeReply {
        /// Milliseconds since the Unix epoch (or since boot on a device with no wall clock).
        unix_ms: u64,
        /// The time formatted as asked.
        text: &'a str,
    },
    /// Run a command; answered by Output frames and one Exit.
    #[serde(borrow)]
    Exec(Exec<'a>),
    /// A chunk of a running command's output; the body holds the bytes, untouched.
    Output {
        /// Which stream the bytes came from.
        stream: Stream,
    },
    /// A command ended; the last frame of an Exec.
    Exit {
        /// How it ended.
        status: ExitStatus,
    },
    /// Stop a request in flight (Exec or a transfer). No reply of its own: the
    /// request ends with Exit(Cancelled) or Error(CANCELLED).
    Cancel {
        /// Request id to cancel.
        target: u32,
    },
    /// Describe one path.
    Stat {
        /// Path relative to the served root.
        path: &'a str,
    },
    /// Answer to Stat.
    #[serde(borrow)]
    StatReply(Entry<'a>),
    /// List a directory; answered by ListEntry frames and Done.
    List {
        /// Directory relative to the served root; empty is the root.
        path: &'a str,
    },
    /// One directory entry of a List.
    #[serde(borrow)]
    ListEntry(Entry<'a>),
    /// Download a file from `offset`; answered by FileInfo, Data frames, Done.
    Get {
        /// Path relative to the served root.
        path: &'a str,
        /// Where to start; 0 for a whole file. Bytes before it are the
        /// requester's partial copy, checked against FileInfo's prefix digest.
        offset: u64,
    },
    /// First reply to Get.
    FileInfo {
        /// Size of the whole file.
        size: u64,
        /// Modification time, seconds since the Unix epoch (0 if unknown).
        modified: u64,
        /// Offset the Data frames start at (the Get's offset, or 0 if it was past the end).
        offset: u64,
        /// SHA-256 of bytes `0..offset` when `offset > 0`.
        prefix_sha256: Option<Digest>,
    },
    /// File bytes of a Get or Put, in order; the body holds them.
    Data,
    /// A request completed. After Get: the whole file's size and SHA-256.
    /// From the client after a Put's data: what it sent. After Put: the
    /// size and digest the server verified and committed. After List/Remove:
    /// entries or bytes removed, no digest.
    Done {
        /// Byte count (whole file, or entries for List).
        bytes: u64,
        /// SHA-256 of the whole file, where one was transferred.
        sha256: Option<Digest>,
    },
    /// Upload a file; answered by PutReady, then the client sends Data frames
    /// and Done, and the server answers Done once the digest is verified.
    Put {
        /// Destination relative to the served root.
        path: &'a str,
        /// Size of the whole file.
        size: u64,
        /// Replace an existing destination.
        force: bool,
        /// Continue a partial upload left by an earlier attempt, if any.
        resume: bool,
    },
    /// The server is ready for a Put's data, starting at `offset`.
    PutReady {
        /// Bytes the server already holds (0 unless resuming).
        offset: u64,
        /// SHA-256 of the bytes the server holds when `offset > 0`; the client
        /// compares it with its own file and restarts (resume = false) on a mismatch.
        prefix_sha256: Option<Digest>,
    },
    /// Remove a file (or an empty directory); answered by Done.
    Remove {
        /// Path relative to the served root.
        path: &'a str,
    },
    /// A request failed, or a frame was refused.
    Error {
        /// What went wrong (see [`ErrorCode`]).
        code: ErrorCode,
        /// Short human-readable detail.
        message: &'a str,
    },
}

impl Message<'_> {
    /// The wire kind of this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::HelloAck(_) => Kind::HelloAck,
            Message::Auth(_) => Kind::Auth,
            Message::AuthOk(_) => Kind::AuthOk,
            Message::Ping { .. } => Kind::Ping,
            Message::Pong { .. } => Kind::Pong,
            Message::Echo { .. } => Kind::Echo,
            Message::EchoReply { .. } => Kind::EchoReply,
            Message::Time { .. } => Kind::Time,
            Message::TimeReply { .. } => Kind::TimeReply,
            Message::Exec(_) => Kind::Exec,
            Message::Output { .. } => Kind::Output,
            Message::Exit { .. } => Kind::Exit,
            Message::Cancel { .. } => Kind::Cancel,
            Message::Stat { .. } => Kind::Stat,
            Message::StatReply(_) => Kind::StatReply,
            Message::List { .. } => Kind::List,
            Message::ListEntry(_) => Kind::ListEntry,
            Message::Get { .. } => Kind::Get,
            Message::FileInfo { .. } => Kind::FileInfo,
            Message::Data => Kind::Data,
            Message::Done { .. } => Kind::Done,
            Message::Put { .. } => Kind::Put,
            Message::PutReady { .. } => Kind::PutReady,
            Message::Remove { .. } => Kind::Remove,
            Message::Error { .. } => Kind::Error,
        }
    }
}

/// Capability bits exchanged in Hello and HelloAck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Caps(pub u32);

impl Caps {
    /// The peer runs commands (Exec).
    pub const EXEC: Caps = Caps(1 << 0);
    /// The peer accepts shell lines, not only argv.
    pub const SHELL: Caps = Caps(1 << 1);
    /// The peer serves files (Stat, List, Get).
    pub const FILES: Caps = Caps(1 << 2);
    /// The peer accepts writes (Put, Remove).
    pub const WRITE: Caps = Caps(1 << 3);
    /// Pre-shared-key authentication: offered (Hello) / required (HelloAck).
    pub const AUTH_PSK: Caps = Caps(1 << 4);
    /// After authentication, every frame carries a 16-byte MAC tag (SEALED).
    pub const SEAL: Caps = Caps(1 << 5);
    /// After authentication, headers and bodies are encrypted.
    pub const ENCRYPT: Caps = Caps(1 << 6);
    /// The server has directories: paths may contain `/`, Put creates
    /// parents. Without it the namespace is flat (the root is the only
    /// directory).
    pub const DIRS: Caps = Caps(1 << 7);
    /// The server keeps an interrupted upload and resumes it (`PutReady`
    /// with an offset > 0 when `Put.resume` is set).
    pub const RESUME: Caps = Caps(1 << 8);

    /// No capabilities.
    pub const fn empty() -> Self {
        Caps(0)
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }
    /// Union.
    #[must_use]
    pub const fn union(self, other: Caps) -> Self {
        Caps(self.0 | other.0)
    }
    /// Intersection.
    #[must_use]
    pub const fn intersection(self, other: Caps) -> Self {
        Caps(self.0 & other.0)
    }
}

/// The opening frame of a connection (client → server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// Highest wire version the client speaks.
    pub version: u8,
    /// Largest header the client accepts.
    pub max_header: u16,
    /// Largest body the client accepts in one frame.
    pub max_chunk: u32,
    /// What the client offers and wants.
    pub caps: Caps,
    /// Fresh random challenge for authentication.
    pub nonce: [u8; 16],
    /// Software name and version, for logs (`tether/0.1.0`).
    pub agent: &'a str,
}

/// The server's answer to Hello: the limits both sides now use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck<'a> {
    /// The version the connection speaks.
    pub version: u8,
    /// Largest header either side may send: the smaller of both limits.
    pub max_header: u16,
    /// Largest body either side may send in one frame: the smaller of both limits.
    pub max_chunk: u32,
    /// What the server offers; AUTH_PSK set means the client must authenticate.
    pub caps: Caps,
    /// Fresh random challenge for authentication.
    pub nonce: [u8; 16],
    /// Software name and version, for logs.
    pub agent: &'a str,
    /// Most requests the server runs at once on this connection (Ping,
    /// Echo, Time and Cancel never count); one more is answered `BUSY`.
    pub max_requests: u16,
    /// Longest name (one path component) the server accepts, in bytes.
    pub max_name: u16,
    /// Longest path the server accepts, in bytes.
    pub max_path: u16,
}

/// An authentication proof: HMAC-SHA256 over the transcript (see `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The MAC.
    pub mac: [u8; 32],
}

/// A command to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec<'a> {
    /// What to run.
    #[serde(borrow)]
    pub command: Command<'a>,
    /// Kill the command after this many milliseconds.
    pub timeout_ms: Option<u32>,
}

/// How a command is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command<'a> {
    /// Program and arguments, run without a shell. Arguments are separated by
    /// NUL bytes (which no argument can contain); see [`Argv`].
    #[serde(borrow)]
    Argv(Argv<'a>),
    /// One line for the server's shell (`sh -c LINE`).
    Shell(&'a str),
}

/// A NUL-separated argument vector, borrowed: `"ls\0-l\0/tmp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Argv<'a>(pub &'a str);

impl<'a> Argv<'a> {
    /// The arguments, program first.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> {
        let s = self.0;
        s.split('\0').filter(move |_| !s.is_empty())
    }
    /// The program name, if any.
    pub fn program(&self) -> Option<&'a str> {
        self.iter().next().filter(|p| !p.is_empty())
    }
    /// Join `args` into `buf` with NUL separators; returns the argv, or the
    /// size `buf` must have. An argument containing NUL is refused (`None`
    /// size means the arguments themselves are invalid).
    pub fn join<'b, S: AsRef<str>>(
        args: &[S],
        buf: &'b mut [u8],
    ) -> Result<Argv<'b>, Option<usize>> {
        let mut need = 0usize;
        for (i, a) in args.iter().enumerate() {
            let a = a.as_ref();
            if a.contains('\0') {
                return Err(None);
            }
            need += a.len() + usize::from(i > 0);
        }
        if need > buf.len() {
            return Err(Some(need));
        }
        let mut at = 0;
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                buf[at] = 0;
                at += 1;
            }
            buf[at..at + a.as_ref().len()].copy_from_slice(a.as_ref().as_bytes());
            at += a.as_ref().len();
        }
        // Only whole UTF-8 strings and ASCII NULs were copied.
        match core::str::from_utf8(&buf[..at]) {
            Ok(s) => Ok(Argv(s)),
            Err(_) => Err(None),
        }
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// A Cancel ended it.
    Cancelled,
}

impl ExitStatus {
    /// The exit code a shell would report: the code, 128 + signal, 124 for a
    /// timeout (as `timeout(1)`), 130 for a cancel (as Ctrl-C).
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
            ExitStatus::TimedOut => 124,
            ExitStatus::Cancelled => 130,
        }
    }
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else (device, socket, fifo).
    Other,
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<'a> {
    /// The name (last path component; for Stat, the path as asked).
    pub name: &'a str,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch (0 if unknown).
    pub modified: u64,
}

/// A numeric error code; the table is in PROTOCOL.md. Unknown codes from a
/// newer peer are kept, not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct ErrorCode(pub u16);

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $num:literal, $text:literal; )*) => {
        impl ErrorCode {
            $( $(#[$doc])* pub const $name: ErrorCode = ErrorCode($num); )*
            /// Every code version 1 defines.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];
            /// A short description, or `None` for a code this version does not define.
            pub fn describe(self) -> Option<&'static str> {
                match self.0 {
                    $( $num => Some($text), )*
                    _ => None,
                }
            }
            /// The constant's name (`NOT_FOUND`), or `None` if unknown.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $num => Some(stringify!($name)), )*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// The frame was malformed: bad magic, checksum or length.
    BAD_FRAME = 1, "malformed frame";
    /// The wire version is not spoken here.
    UNSUPPORTED_VERSION = 2, "unsupported protocol version";
    /// The frame set flags this peer does not know.
    UNKNOWN_FLAGS = 3, "unknown frame flags";
    /// The header is longer than the negotiated limit.
    HEADER_TOO_LARGE = 4, "header too large";
    /// The body is longer than the negotiated chunk limit.
    BODY_TOO_LARGE = 5, "body too large";
    /// The message kind is not defined by this version.
    UNKNOWN_KIND = 6, "unknown message kind";
    /// The header is not valid postcard for its kind.
    INVALID_HEADER = 7, "invalid header";
    /// The message is not allowed now, in this direction, or with a body.
    UNEXPECTED = 8, "unexpected message";
    /// The request id is unknown, or already in use.
    BAD_REQUEST_ID = 9, "bad request id";
    /// Authenticate first.
    AUTH_REQUIRED = 10, "authentication required";
    /// Authentication failed: wrong key.
    AUTH_FAILED = 11, "authentication failed";
    /// Too many connections, requests or transfers; try again later.
    BUSY = 12, "server busy";
    /// A deadline passed (handshake, idle, or request).
    TIMEOUT = 13, "timed out";
    /// A frame failed its MAC, or arrived out of sequence.
    INTEGRITY = 14, "integrity check failed";
    /// No such file or directory.
    NOT_FOUND = 20, "not found";
    /// The destination exists (use force to replace it).
    EXISTS = 21, "already exists";
    /// The server may not access the path.
    PERMISSION_DENIED = 22, "permission denied";
    /// The path escapes the served root or is not a valid name.
    PATH_REFUSED = 23, "path refused";
    /// A directory where a file was expected.
    IS_DIRECTORY = 24, "is a directory";
    /// A file where a directory was expected.
    NOT_DIRECTORY = 25, "not a directory";
    /// The store or disk is full.
    NO_SPACE = 26, "no space left";
    /// The data received does not match its SHA-256.
    DIGEST_MISMATCH = 27, "digest mismatch";
    /// The server is read-only.
    READ_ONLY = 28, "read-only";
    /// An I/O error on the server.
    IO = 29, "i/o error";
    /// The server does not run commands.
    EXEC_DISABLED = 30, "exec is disabled";
    /// The command could not be started.
    EXEC_FAILED = 31, "command failed to start";
    /// The command is not on the server's allow-list.
    NOT_ALLOWED = 32, "command not allowed";
    /// The request was cancelled.
    CANCELLED = 33, "cancelled";
    /// A request or reply does not fit (a datagram, or the store).
    TOO_LARGE = 34, "too large";
    /// A size or length in the request is inconsistent.
    BAD_LENGTH = 35, "length mismatch";
    /// A bug or unexpected condition on the server.
    INTERNAL = 36, "internal error";
    /// A directory that is not empty cannot be removed.
    NOT_EMPTY = 37, "directory not empty";
    /// The file changed while it was being sent; nothing was committed.
    CHANGED = 38, "file changed while being sent";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.describe() {
            Some(d) => write!(f, "{d} (code {})", self.0),
            None => write!(f, "error code {}", self.0),
        }
    }
}

/// Why a header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HeaderErrorKind {
    /// The kind number is not defined by this version (given).
    UnknownKind(u32),
    /// The bytes are not a valid header of a known kind.
    Invalid,
    /// Valid header followed by extra bytes.
    TrailingBytes,
    /// A value in a longer encoding than needed (an overlong varint).
    NonCanonical,
}

/// A header that could not be parsed, with the request id when it was readable,
/// so that the Error reply can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HeaderError {
    /// The request id, if the first field parsed.
    pub request_id: Option<u32>,
    /// What was wrong.
    pub kind: HeaderErrorKind,
}

impl HeaderError {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            HeaderErrorKind::UnknownKind(_) => ErrorCode::UNKNOWN_KIND,
            _ => ErrorCode::INVALID_HEADER,
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            HeaderErrorKind::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            HeaderErrorKind::Invalid => write!(f, "invalid header encoding"),
            HeaderErrorKind::TrailingBytes => write!(f, "header has trailing bytes"),
            HeaderErrorKind::NonCanonical => write!(f, "header uses an overlong encoding"),
        }
    }
}

impl core::error::Error for HeaderError {}

/// Why a header could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is too small; it must hold `needed` bytes. Nothing was written.
    BufferTooSmall {
        /// Bytes the buffer must hold.
        needed: usize,
    },
    /// The header is longer than the limit (given), or than a prefix can describe.
    HeaderTooLarge {
        /// Encoded header length.
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// A message that cannot be encoded (an argument containing NUL).
    Invalid,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "buffer too small: {needed} bytes needed")
            }
            EncodeError::HeaderTooLarge { len, max } => {
                write!(f, "header of {len} bytes exceeds the limit of {max}")
            }
            EncodeError::Invalid => write!(f, "message cannot be encoded"),
        }
    }
}

impl core::error::Error for EncodeError {}

fn read_varint_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut v: u32 = 0;
    for (i, b) in bytes.iter().enumerate().take(5) {
        if i == 4 && b & 0x70 != 0 {
            // Bits past 32: not a u32 (and no id to answer with).
            return None;
        }
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

/// A postcard flavor that writes while its buffer has room and counts every
/// byte: [`Header::buffer_len`] (no buffer) and [`Header::emit`] serialize
/// through it alike.
struct Counted<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl postcard::ser_flavors::Flavor for Counted<'_> {
    type Output = usize;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.len + data.len();
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(data);
        }
        self.len = end;
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if let Some(dst) = self.buf.get_mut(self.len) {
            *dst = data;
        }
        self.len += 1;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.len)
    }
}

impl<'a> Header<'a> {
    /// Parse a header from exactly `bytes` (the frame's header bytes).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, HeaderError> {
        let first = read_varint_u32(bytes);
        let request_id = first.map(|(id, _)| id);
        match postcard::take_from_bytes::<Header<'a>>(bytes) {
            // Overlong varints decode to the same value: only the canonical length is accepted.
            Ok((h, [])) if h.buffer_len() == bytes.len() => Ok(h),
            Ok((_, [])) => Err(HeaderError {
                request_id,
                kind: HeaderErrorKind::NonCanonical,
            }),
            Ok(_) => Err(HeaderError {
                request_id,
                kind: HeaderErrorKind::TrailingBytes,
            }),
            Err(_) => {
                let kind = match first.and_then(|(_, rest)| read_varint_u32(rest)) {
                    Some((k, _)) if Kind::from_u32(k).is_none() => HeaderErrorKind::UnknownKind(k),
                    _ => HeaderErrorKind::Invalid,
                };
                Err(HeaderError { request_id, kind })
            }
        }
    }

    /// Encoded length of this header.
    pub fn buffer_len(&self) -> usize {
        self.encode(&mut [])
    }

    /// Encode into `buf`, returning the used sub-slice; if `buf` is too small
    /// nothing is written and the needed size is reported.
    pub fn emit<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
        let needed = self.buffer_len();
        if needed > buf.len() {
            return Err(EncodeError::BufferTooSmall { needed });
        }
        match self.encode(buf) {
            n if n == needed => Ok(&mut buf[..n]),
            _ => Err(EncodeError::Invalid),
        }
    }

    /// Serialize into as much of `buf` as it holds; returns the whole
    /// length. Sizing and writing share this one serializer instance (a
    /// second postcard instance for sizing cost about 1 KiB of flash).
    fn encode(&self, buf: &mut [u8]) -> usize {
        postcard::serialize_with_flavor::<Self, _, usize>(self, Counted { buf, len: 0 })
            .unwrap_or(usize::MAX)
    }

    /// Shorthand constructor.
    pub fn new(request_id: u32, message: Message<'a>) -> Self {
        Header {
            request_id,
            message,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn kind_numbers_match_variant_order() {
        let m = Message::Remove { path: "x" };
        let mut buf = [0u8; 16];
        let h = Header::new(0, m);
        let b = h.emit(&mut buf).unwrap();
        assert_eq!(b[1], Kind::Remove as u8);
        assert_eq!(Kind::from_u32(Kind::COUNT), None);
        assert_eq!(Kind::from_u32(25), Some(Kind::Error));
    }

    #[test]
    fn unknown_kind_is_named_with_request_id() {
        let e = Header::parse(&[0x05, 0x63]).unwrap_err();
        assert_eq!(e.request_id, Some(5));
        assert_eq!(e.kind, HeaderErrorKind::UnknownKind(0x63));
        assert_eq!(e.code(), ErrorCode::UNKNOWN_KIND);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let e = Header::parse(&[0x01, 0x14, 0x00]).unwrap_err();
        assert_eq!(e.kind, HeaderErrorKind::TrailingBytes);
        assert_eq!(Header::parse(&[0x01, 0x14]).unwrap().message, Message::Data);
    }

    #[test]
    fn overlong_varint_is_refused() {
        // Request id 26 as 0x9a 0x00 instead of 0x1a.
        let e = Header::parse(&[0x9a, 0x00, 0x04, 0x0c]).unwrap_err();
        assert_eq!(e.kind, HeaderErrorKind::NonCanonical);
        assert!(Header::parse(&[0x1a, 0x04, 0x0c]).is_ok());
    }

    #[test]
    fn request_id_past_u32_has_no_id_to_answer_with() {
        // Five bytes whose last carries bits 32..35: not a u32.
        let e = Header::parse(&[0xff, 0xff, 0xff, 0xff, 0x7f, 0x04, 0x01]).unwrap_err();
        assert_eq!(e.request_id, None);
        let h = Header::parse(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x04, 0x01]).unwrap();
        assert_eq!(h.request_id, u32::MAX);
    }

    #[test]
    fn small_buffer_reports_needed_size_and_is_untouched() {
        let h = Header::new(1, Message::Echo { text: "hello" });
        let mut buf = [0xAAu8; 4];
        assert_eq!(
            h.emit(&mut buf),
            Err(EncodeError::BufferTooSmall { needed: 8 })
        );
        assert_eq!(buf, [0xAA; 4]);
    }

    #[test]
    fn argv_joins_and_splits() {
        let mut buf = [0u8; 32];
        let a = Argv::join(&["ls", "-l", "a b"], &mut buf).unwrap();
        assert_eq!(a.0, "ls\0-l\0a b");
        assert_eq!(
            a.iter().collect::<heapless::Vec<_, 4>>().as_slice(),
            &["ls", "-l", "a b"]
        );
        assert_eq!(a.program(), Some("ls"));
        assert_eq!(Argv("").iter().count(), 0);
        assert_eq!(Argv::join(&["a\0b"], &mut buf), Err(None));
        assert_eq!(Argv::join(&["abc", "def"], &mut buf[..3]), Err(Some(7)));
    }

    #[test]
    fn error_codes_are_unique_and_described() {
        for (i, a) in ErrorCode::ALL.iter().enumerate() {
            assert!(a.describe().is_some());
            for b in &ErrorCode::ALL[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(ErrorCode(999).describe(), None);
    }
}

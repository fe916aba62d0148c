//! One framed TCP connection: an owned view of the messages, a [`Reader`]
//! built on the core's `AsyncFrameReader`, and a cloneable [`Writer`].
//!
//! Every frame sent goes through [`Writer::send`], and every frame received
//! through [`Reader::next`] / [`Reader::body`]: the two places where the
//! per-frame sealing of the security issue slots in (a `Sealer` in the
//! writer, an `Opener` fed the reader's header and body bytes).

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use tether_proto::codec::Limits;
use tether_proto::io::AsyncFrameReader;
use tether_proto::message::{Entry, EntryKind, Proof};
use tether_proto::wire::{Flags, PREFIX_LEN};
use tether_proto::{
    encode_head, Argv, Caps, Command, DecodeError, Digest, ErrorCode, Exec, ExitStatus, FrameError,
    Header, HeaderError, Hello, Message, Stream,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A directory entry, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    /// Name (or path, for Stat).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub modified: u64,
}

impl OwnedEntry {
    fn from_entry(e: &Entry<'_>) -> Self {
        OwnedEntry {
            name: e.name.to_string(),
            kind: e.kind,
            size: e.size,
            modified: e.modified,
        }
    }
    /// Borrowed view for sending.
    pub fn as_entry(&self) -> Entry<'_> {
        Entry {
            name: &self.name,
            kind: self.kind,
            size: self.size,
            modified: self.modified,
        }
    }
}

/// The handshake fields of a Hello or HelloAck, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedHello {
    /// Wire version.
    pub version: u8,
    /// Largest header.
    pub max_header: u16,
    /// Largest body per frame.
    pub max_chunk: u32,
    /// Capabilities.
    pub caps: Caps,
    /// Nonce.
    pub nonce: [u8; 16],
    /// Peer software.
    pub agent: String,
}

impl OwnedHello {
    /// As a Hello.
    pub fn as_hello(&self) -> Hello<'_> {
        Hello {
            version: self.version,
            max_header: self.max_header,
            max_chunk: self.max_chunk,
            caps: self.caps,
            nonce: self.nonce,
            agent: &self.agent,
        }
    }
}

/// A command to run, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedCommand {
    /// Program and arguments.
    Argv(Vec<String>),
    /// A shell line.
    Shell(String),
}

/// Every message, owned (strings copied out of the header buffer), so that it
/// can be held across awaits while the reader goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Msg {
    Hello(OwnedHello),
    HelloAck(OwnedHello),
    Auth(Proof),
    AuthOk(Proof),
    Ping {
        stamp: u64,
    },
    Pong {
        stamp: u64,
    },
    Echo {
        text: String,
    },
    EchoReply {
        text: String,
    },
    Time {
        format: String,
    },
    TimeReply {
        unix_ms: u64,
        text: String,
    },
    Exec {
        command: OwnedCommand,
        timeout_ms: Option<u32>,
    },
    Output {
        stream: Stream,
    },
    Exit {
        status: ExitStatus,
    },
    Cancel {
        target: u32,
    },
    Stat {
        path: String,
    },
    StatReply(OwnedEntry),
    List {
        path: String,
    },
    ListEntry(OwnedEntry),
    Get {
        path: String,
        offset: u64,
    },
    FileInfo {
        size: u64,
        modified: u64,
        offset: u64,
        prefix_sha256: Option<Digest>,
    },
    Data,
    Done {
        bytes: u64,
        sha256: Option<Digest>,
    },
    Put {
        path: String,
        size: u64,
        force: bool,
        resume: bool,
    },
    PutReady {
        offset: u64,
        prefix_sha256: Option<Digest>,
    },
    Remove {
        path: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Msg {
    /// Copy a parsed message.
    pub fn from_message(m: &Message<'_>) -> Msg {
        let hello = |version, max_header, max_chunk, caps, nonce, agent: &str| OwnedHello {
            version,
            max_header,
            max_chunk,
            caps,
            nonce,
            agent: agent.to_string(),
        };
        match m {
            Message::Hello(h) => Msg::Hello(hello(
                h.version,
                h.max_header,
                h.max_chunk,
                h.caps,
                h.nonce,
                h.agent,
            )),
            Message::HelloAck(h) => Msg::HelloAck(hello(
                h.version,
                h.max_header,
                h.max_chunk,
                h.caps,
                h.nonce,
                h.agent,
            )),
            Message::Auth(p) => Msg::Auth(*p),
            Message::AuthOk(p) => Msg::AuthOk(*p),
            Message::Ping { stamp } => Msg::Ping { stamp: *stamp },
            Message::Pong { stamp } => Msg::Pong { stamp: *stamp },
            Message::Echo { text } => Msg::Echo {
                text: text.to_string(),
            },
            Message::EchoReply { text } => Msg::EchoReply {
                text: text.to_string(),
            },
            Message::Time { format } => Msg::Time {
                format: format.to_string(),
            },
            Message::TimeReply { unix_ms, text } => Msg::TimeReply {
                unix_ms: *unix_ms,
                text: text.to_string(),
            },
            Message::Exec(e) => Msg::Exec {
                command: match e.command {
                    Command::Argv(a) => OwnedCommand::Argv(a.iter().map(String::from).collect()),
                    Command::Shell(s) => OwnedCommand::Shell(s.to_string()),
                },
                timeout_ms: e.timeout_ms,
            },
            Message::Output { stream } => Msg::Output { stream: *stream },
            Message::Exit { status } => Msg::Exit { status: *status },
            Message::Cancel { target } => Msg::Cancel { target: *target },
            Message::Stat { path } => Msg::Stat {
                path: path.to_string(),
            },
            Message::StatReply(e) => Msg::StatReply(OwnedEntry::from_entry(e)),
            Message::List { path } => Msg::List {
                path: path.to_string(),
            },
            Message::ListEntry(e) => Msg::ListEntry(OwnedEntry::from_entry(e)),
            Message::Get { path, offset } => Msg::Get {
                path: path.to_string(),
                offset: *offset,
            },
            Message::FileInfo {
                size,
                modified,
                offset,
                prefix_sha256,
            } => Msg::FileInfo {
                size: *size,
                modified: *modified,
                offset: *offset,
                prefix_sha256: *prefix_sha256,
            },
            Message::Data => Msg::Data,
            Message::Done { bytes, sha256 } => Msg::Done {
                bytes: *bytes,
                sha256: *sha256,
            },
            Message::Put {
                path,
                size,
                force,
                resume,
            } => Msg::Put {
                path: path.to_string(),
                size: *size,
                force: *force,
                resume: *resume,
            },
            Message::PutReady {
                offset,
                prefix_sha256,
            } => Msg::PutReady {
                offset: *offset,
                prefix_sha256: *prefix_sha256,
            },
            Message::Remove { path } => Msg::Remove {
                path: path.to_string(),
            },
            Message::Error { code, message } => Msg::Error {
                code: *code,
                message: message.to_string(),
            },
        }
    }

    /// A short name for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello(_) => "Hello",
            Msg::HelloAck(_) => "HelloAck",
            Msg::Auth(_) => "Auth",
            Msg::AuthOk(_) => "AuthOk",
            Msg::Ping { .. } => "Ping",
            Msg::Pong { .. } => "Pong",
            Msg::Echo { .. } => "Echo",
            Msg::EchoReply { .. } => "EchoReply",
            Msg::Time { .. } => "Time",
            Msg::TimeReply { .. } => "TimeReply",
            Msg::Exec { .. } => "Exec",
            Msg::Output { .. } => "Output",
            Msg::Exit { .. } => "Exit",
            Msg::Cancel { .. } => "Cancel",
            Msg::Stat { .. } => "Stat",
            Msg::StatReply(_) => "StatReply",
            Msg::List { .. } => "List",
            Msg::ListEntry(_) => "ListEntry",
            Msg::Get { .. } => "Get",
            Msg::FileInfo { .. } => "FileInfo",
            Msg::Data => "Data",
            Msg::Done { .. } => "Done",
            Msg::Put { .. } => "Put",
            Msg::PutReady { .. } => "PutReady",
            Msg::Remove { .. } => "Remove",
            Msg::Error { .. } => "Error",
        }
    }

    /// Whether frames of this message may carry a body.
    pub fn has_body(&self) -> bool {
        matches!(self, Msg::Output { .. } | Msg::Data)
    }
}

/// Cut `s` to at most `max` bytes on a character boundary (error texts must
/// fit the negotiated header size).
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One received frame's header.
#[derive(Debug)]
pub struct Incoming {
    /// The request id.
    pub id: u32,
    /// The message.
    pub msg: Msg,
    /// Length of the body that follows (read it with [`Reader::body`]).
    pub body_len: u64,
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("the peer closed the connection in the middle of a frame")]
    Eof,
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are not valid tether frames; the connection cannot go on.
    #[error("{0}")]
    Decode(DecodeError),
    /// A frame arrived whole but its header could not be parsed; the
    /// connection can go on (the body is skipped by the next read).
    #[error("{err}")]
    Header {
        /// What was wrong.
        err: HeaderError,
        /// The frame's body length.
        body_len: u64,
    },
}

impl From<FrameError<io::Error>> for ReadError {
    fn from(e: FrameError<io::Error>) -> Self {
        match e {
            FrameError::Io(e) => ReadError::Io(e),
            FrameError::Closed => ReadError::Closed,
            FrameError::UnexpectedEof => ReadError::Eof,
            FrameError::Decode(d) => ReadError::Decode(d),
            other => ReadError::Io(io::Error::other(other.to_string())),
        }
    }
}

/// Size of a reader's receive buffer.
const RX_BUF: usize = 64 * 1024;

/// Reads frames from the read half of a TCP connection.
pub struct Reader {
    inner: AsyncFrameReader<FromTokio<OwnedReadHalf>, Vec<u8>, Vec<u8>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("limits", &self.inner.limits())
            .finish()
    }
}

impl Reader {
    /// A reader with the handshake limits in force.
    pub fn new(rd: OwnedReadHalf) -> Self {
        Reader {
            inner: AsyncFrameReader::new(
                FromTokio::new(rd),
                vec![0u8; tether_proto::HOST_MAX_HEADER as usize],
                vec![0u8; RX_BUF],
                Limits::HANDSHAKE,
            ),
        }
    }

    /// Apply the negotiated limits.
    pub fn set_limits(&mut self, max_header: u16, max_chunk: u32) {
        self.inner.set_limits(Limits {
            max_header,
            max_body: u64::from(max_chunk),
        });
    }

    /// The next frame's header (skipping the unread rest of the previous
    /// frame). Cancel-safe: dropping the future loses no bytes.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        let frame = self.inner.read_frame().await?;
        let body_len = frame.prefix.body_len;
        match frame.parse() {
            Ok(h) => Ok(Incoming {
                id: h.request_id,
                msg: Msg::from_message(&h.message),
                body_len,
            }),
            Err(err) => Err(ReadError::Header { err, body_len }),
        }
    }

    /// Read body bytes of the current frame into `buf`; 0 means it is complete.
    pub async fn body(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        Ok(self.inner.read_body(buf).await?)
    }

    /// Fill `buf` with the current frame's whole body (which must fit).
    pub async fn body_exact(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        let mut have = 0;
        while have < buf.len() {
            let n = self.body(&mut buf[have..]).await?;
            if n == 0 {
                break;
            }
            have += n;
        }
        Ok(have)
    }

    /// Read and drop whatever the peer still sends, until it closes or
    /// `limit` passes (a polite close: no reset destroys our last frame).
    pub async fn drain(&mut self, limit: Duration) {
        use tokio::io::AsyncReadExt as _;
        let io = self.inner.get_mut().inner_mut();
        let mut scratch = [0u8; 4096];
        let _ = tokio::time::timeout(limit, async {
            while let Ok(n) = io.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Read and drop the rest of the current frame's body.
    pub async fn skip_body(&mut self) -> Result<(), ReadError> {
        Ok(self.inner.skip_body().await?)
    }
}

struct WriterInner {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    scratch: Vec<u8>,
    max_header: usize,
    failed: bool,
}

/// Sends frames; cheap to clone, one frame at a time (frames of concurrent
/// requests interleave whole). A frame that cannot be written within the
/// stall timeout fails the writer, so a peer that stops reading cannot hold
/// a task forever.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<tokio::sync::Mutex<WriterInner>>,
    stall: Duration,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stall", &self.stall)
            .finish()
    }
}

/// Bodies up to this size are copied behind the head and sent in one write.
const COALESCE: usize = 16 * 1024;

impl Writer {
    /// A writer over the write half; the handshake header limit applies.
    pub fn new(wr: OwnedWriteHalf, stall: Duration) -> Self {
        Writer {
            inner: Arc::new(tokio::sync::Mutex::new(WriterInner {
                io: Box::new(wr),
                scratch: vec![0u8; PREFIX_LEN + tether_proto::HOST_MAX_HEADER as usize + COALESCE],
                max_header: Limits::HANDSHAKE.max_header as usize,
                failed: false,
            })),
            stall,
        }
    }

    /// Apply the negotiated header limit.
    pub async fn set_max_header(&self, max_header: u16) {
        self.inner.lock().await.max_header = max_header as usize;
    }

    /// Send one frame with `body`.
    pub async fn send(&self, id: u32, msg: Message<'_>, body: &[u8]) -> io::Result<()> {
        let header = Header::new(id, msg);
        let mut g = self.inner.lock().await;
        if g.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection failed earlier",
            ));
        }
        let inner = &mut *g;
        let max_header = inner.max_header;
        let head = encode_head(
            &header,
            body.len() as u64,
            Flags::empty(),
            &mut inner.scratch,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
        .len();
        if head - PREFIX_LEN > max_header {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a {:?} header of {} bytes exceeds the peer's limit of {max_header} bytes",
                    header.message.kind(),
                    head - PREFIX_LEN
                ),
            ));
        }
        let write = async {
            if body.len() <= COALESCE {
                inner.scratch[head..head + body.len()].copy_from_slice(body);
                inner
                    .io
                    .write_all(&inner.scratch[..head + body.len()])
                    .await?;
            } else {
                // Head and body in one system call where the socket takes both.
                let mut bufs = [IoSlice::new(&inner.scratch[..head]), IoSlice::new(body)];
                let mut rest = &mut bufs[..];
                while !rest.is_empty() {
                    let n = inner.io.write_vectored(rest).await?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "the socket accepted no data",
                        ));
                    }
                    IoSlice::advance_slices(&mut rest, n);
                }
            }
            inner.io.flush().await
        };
        let r = match tokio::time::timeout(self.stall, write).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer accepted no data for {:?}; giving up on it",
                    self.stall
                ),
            )),
        };
        if r.is_err() {
            g.failed = true;
        }
        r
    }

    /// Send an Error frame (message clipped to fit).
    pub async fn send_error(&self, id: u32, code: ErrorCode, message: &str) -> io::Result<()> {
        self.send(
            id,
            Message::Error {
                code,
                message: clip(message, 400),
            },
            &[],
        )
        .await
    }

    /// Close the sending direction (after a last Error, say).
    pub async fn shutdown(&self) {
        let mut g = self.inner.lock().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), g.io.shutdown()).await;
    }
}

/// Build an Exec message (argv joined with NULs into `buf`).
pub fn exec_message<'a>(
    command: &'a OwnedCommand,
    timeout_ms: Option<u32>,
    buf: &'a mut Vec<u8>,
) -> Result<Message<'a>, String> {
    let command = match command {
        OwnedCommand::Shell(s) => Command::Shell(s),
        OwnedCommand::Argv(args) => {
            let need: usize = args.iter().map(|a| a.len() + 1).sum();
            buf.resize(need, 0);
            match Argv::join(args, buf) {
                Ok(a) => Command::Argv(a),
                Err(_) => {
                    return Err("an argument contains a NUL byte, which cannot be sent".into())
                }
            }
        }
    };
    Ok(Message::Exec(Exec {
        command,
        timeout_ms,
    }))
}

//! One framed TCP connection: an owned view of the messages, a [`Reader`]
//! built on the core's `AsyncFrameReader`, and a cloneable [`Writer`].
//!
//! Every frame sent goes through [`Writer::send`], and every frame received
//! through [`Reader::next`] / [`Reader::body_all`]: the two places where
//! frames are sealed and checked once a session is authenticated (a
//! [`Sealer`] in the writer, an [`Opener`] fed the reader's header and body
//! bytes), or, with ENCRYPT negotiated, encrypted and decrypted whole (a
//! [`FrameCipher`] on each side).

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use embedded_io_adapters::tokio_1::FromTokio;
use tether_proto::codec::Limits;
use tether_proto::handshake::{FrameCipher, Opener, Sealer, TagBuilder};
use tether_proto::io::AsyncFrameReader;
use tether_proto::message::{Entry, EntryKind, Proof};
use tether_proto::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN, TAG_LEN, VERSION};
use tether_proto::{
    encode_head, Argv, Caps, Command, DecodeError, Digest, ErrorCode, Exec, ExitStatus, FrameError,
    Header, HeaderError, Hello, HelloAck, Message, Stream,
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
    /// HelloAck only: requests in flight, name and path limits (0 in a Hello).
    pub limits: (u16, u16, u16),
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

    /// As a HelloAck.
    pub fn as_hello_ack(&self) -> HelloAck<'_> {
        HelloAck {
            version: self.version,
            max_header: self.max_header,
            max_chunk: self.max_chunk,
            caps: self.caps,
            nonce: self.nonce,
            agent: &self.agent,
            max_requests: self.limits.0,
            max_name: self.limits.1,
            max_path: self.limits.2,
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
            limits: (0, 0, 0),
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
            Message::HelloAck(h) => Msg::HelloAck(OwnedHello {
                limits: (h.max_requests, h.max_name, h.max_path),
                ..hello(
                    h.version,
                    h.max_header,
                    h.max_chunk,
                    h.caps,
                    h.nonce,
                    h.agent,
                )
            }),
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
    /// Length of the body that follows (read it with [`Reader::body_all`]).
    pub body_len: u64,
    /// Whether the frame carried a tag (flag SEALED). On a sealed session
    /// every frame does and its tag verified (on an encrypted session the
    /// frame also decrypted); on an unsealed one a sealed frame cannot be
    /// checked and its tag was skipped.
    pub sealed: bool,
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
    /// On a sealed session, a frame's tag did not verify (it was altered,
    /// replayed, reordered, spliced or cut short) or a frame came unsealed
    /// (or, on an encrypted session, unencrypted); the connection cannot go on.
    #[error("integrity check failed: {0}")]
    Integrity(&'static str),
    /// A frame's body does not fit the buffer offered for it.
    #[error("a frame body of {len} bytes exceeds the {room}-byte buffer for it")]
    BodyTooLong {
        /// The body's length.
        len: u64,
        /// The buffer's.
        room: usize,
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

/// The frame being read on a sealed session: its tag so far, and (for a
/// frame handed out only once verified) what to hand out.
#[derive(Debug)]
struct Cur {
    tag: TagBuilder,
    held: Option<Result<Incoming, ReadError>>,
}

/// An encrypted frame being collected: its prefix, header length, and how
/// much of header ‖ body is in [`Reader::plain`].
#[derive(Debug, Clone, Copy)]
struct EncCur {
    prefix: PrefixRepr,
    header_len: usize,
    have: usize,
    total: usize,
}

/// Reads frames from the read half of a TCP connection.
///
/// Once [`Reader::set_opener`] was called (after authentication), every
/// frame must be sealed and its tag is checked before the frame is handed
/// out: [`Reader::next`] returns a frame without a body only after its tag
/// verified, and a frame with a body right after its header; its body,
/// read with [`Reader::body_all`], is returned only once the tag verified.
/// A failure is [`ReadError::Integrity`].
///
/// Once [`Reader::set_decryptor`] was called instead (ENCRYPT negotiated),
/// every frame must be sealed and encrypted: [`Reader::next`] collects its
/// header, body and tag into one buffer, decrypts and verifies it there,
/// and only then parses the header; [`Reader::body_all`] hands out the
/// decrypted body from that buffer.
pub struct Reader {
    inner: AsyncFrameReader<FromTokio<OwnedReadHalf>, Vec<u8>, Vec<u8>>,
    opener: Option<Opener>,
    cur: Option<Cur>,
    scratch: Vec<u8>,
    /// With encryption: the cipher of incoming frames.
    decrypt: Option<FrameCipher>,
    /// With encryption: header ‖ body of the current frame (ciphertext
    /// until it opened, plaintext after), grown to at most
    /// `max_header + max_chunk`.
    plain: Vec<u8>,
    /// With encryption: the frame being collected (kept across cancelled
    /// reads).
    enc: Option<EncCur>,
    /// With encryption: the range of `plain` holding the decrypted body not
    /// yet handed out.
    body: std::ops::Range<usize>,
    /// A check failed: nothing more is read.
    broken: Option<&'static str>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("limits", &self.inner.limits())
            .field("sealed", &self.is_sealed())
            .field("encrypted", &self.decrypt.is_some())
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
            opener: None,
            cur: None,
            scratch: vec![0u8; 16 * 1024],
            decrypt: None,
            plain: Vec::new(),
            enc: None,
            body: 0..0,
            broken: None,
        }
    }

    /// Apply the negotiated limits.
    pub fn set_limits(&mut self, max_header: u16, max_chunk: u32) {
        self.inner.set_limits(Limits {
            max_header,
            max_body: u64::from(max_chunk),
        });
    }

    /// From the next frame on, require sealed frames and check their tags.
    pub fn set_opener(&mut self, opener: Opener) {
        self.opener = Some(opener);
    }

    /// From the next frame on, require sealed and encrypted frames
    /// (`SEALED | ENCRYPTED`) and decrypt them; frames that are not, or do
    /// not open, are [`ReadError::Integrity`].
    pub fn set_decryptor(&mut self, cipher: FrameCipher) {
        self.opener = None;
        self.decrypt = Some(cipher);
        self.inner.set_encryption(true);
    }

    /// Whether frames are checked (sealed, or encrypted).
    pub fn is_sealed(&self) -> bool {
        self.opener.is_some() || self.decrypt.is_some()
    }

    /// Whether frames are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.decrypt.is_some()
    }

    fn fail(&mut self, why: &'static str) -> ReadError {
        self.broken = Some(why);
        ReadError::Integrity(why)
    }

    /// Read what is left of the current sealed frame (feeding its tag),
    /// check the tag, and give back what was held for after the check.
    async fn finish_frame(&mut self) -> Result<Option<Result<Incoming, ReadError>>, ReadError> {
        if self.cur.is_none() {
            return Ok(None);
        }
        loop {
            let n = self.inner.read_body(&mut self.scratch).await?;
            if n == 0 {
                break;
            }
            if let Some(c) = &mut self.cur {
                c.tag.update(&self.scratch[..n]);
            }
        }
        let Some(cur) = self.cur.take() else {
            return Ok(None);
        };
        let Some(tag) = self.inner.tag() else {
            return Err(self.fail("a sealed frame ended without its tag"));
        };
        if !Opener::verify(cur.tag, &tag) {
            return Err(self
                .fail("a frame's tag does not verify (altered, replayed, reordered or spliced)"));
        }
        Ok(cur.held)
    }

    /// The next frame's header (skipping the unread rest of the previous
    /// frame). Cancel-safe: dropping the future loses no bytes.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(why) = self.broken {
                return Err(ReadError::Integrity(why));
            }
            if self.decrypt.is_some() {
                return self.next_encrypted().await;
            }
            if let Some(held) = self.finish_frame().await? {
                return held;
            }
            let frame = self.inner.read_frame().await?;
            let body_len = frame.prefix.body_len;
            let sealed = frame.prefix.flags.contains(Flags::SEALED);
            let parsed = match frame.parse() {
                Ok(h) => Ok(Incoming {
                    id: h.request_id,
                    msg: Msg::from_message(&h.message),
                    body_len,
                    sealed,
                }),
                Err(err) => Err(ReadError::Header { err, body_len }),
            };
            let Some(opener) = &mut self.opener else {
                return parsed;
            };
            if !sealed {
                return Err(self.fail("a frame arrived unsealed on a sealed session"));
            }
            let tag = opener.begin_frame(&frame);
            if matches!(&parsed, Ok(i) if i.body_len > 0) {
                // The caller reads (and so verifies) the body.
                self.cur = Some(Cur { tag, held: None });
                return parsed;
            }
            self.cur = Some(Cur {
                tag,
                held: Some(parsed),
            });
        }
    }

    /// The next frame of an encrypted session: collect header, body and tag
    /// (state kept in `self`, so a cancelled call loses nothing), decrypt,
    /// and only then parse the header. The previous frame's unread body
    /// (already verified) is dropped.
    async fn next_encrypted(&mut self) -> Result<Incoming, ReadError> {
        if self.enc.is_none() {
            self.body = 0..0;
            let frame = self.inner.read_frame().await?;
            let flags = frame.prefix.flags;
            let prefix = frame.prefix;
            let header_len = frame.header.len();
            let total =
                header_len.saturating_add(usize::try_from(prefix.body_len).unwrap_or(usize::MAX));
            let want = Flags::SEALED.union(Flags::ENCRYPTED);
            if flags != want {
                let why = if flags.contains(Flags::SEALED) {
                    "a frame arrived sealed but not encrypted on an encrypted session"
                } else {
                    "a frame arrived unsealed on an encrypted session"
                };
                return Err(self.fail(why));
            }
            // The decoder bounded both lengths by the negotiated limits.
            if self.plain.len() < total {
                self.plain.resize(total, 0);
            }
            self.plain[..header_len].copy_from_slice(frame.header);
            self.enc = Some(EncCur {
                prefix,
                header_len,
                have: header_len,
                total,
            });
        }
        while let Some(cur) = self.enc.as_mut() {
            if cur.have >= cur.total {
                break;
            }
            let n = self
                .inner
                .read_body(&mut self.plain[cur.have..cur.total])
                .await?;
            if n == 0 {
                return Err(ReadError::Eof);
            }
            cur.have += n;
        }
        // The tag (a buffer of at least a tag's length, so the decoder
        // takes it whole from what is buffered).
        while self.inner.read_body(&mut self.scratch[..64]).await? > 0 {}
        let Some(cur) = self.enc.take() else {
            return Err(self.fail("an encrypted frame was lost"));
        };
        let Some(tag) = self.inner.tag() else {
            return Err(self.fail("an encrypted frame ended without its tag"));
        };
        let opened = match self.decrypt.as_mut() {
            Some(c) => c.open_in_place(&cur.prefix, &mut self.plain[..cur.total], &tag),
            None => false,
        };
        if !opened {
            return Err(self.fail(
                "a frame does not decrypt (altered, replayed, reordered, spliced or not from this session)",
            ));
        }
        let body_len = (cur.total - cur.header_len) as u64;
        match Header::parse(&self.plain[..cur.header_len]) {
            Ok(h) => {
                let inc = Incoming {
                    id: h.request_id,
                    msg: Msg::from_message(&h.message),
                    body_len,
                    sealed: true,
                };
                self.body = cur.header_len..cur.total;
                Ok(inc)
            }
            Err(err) => Err(ReadError::Header { err, body_len }),
        }
    }

    /// Read the current frame's whole body into `buf` (which must hold it)
    /// and, on a sealed session, check the frame's tag: the bytes are only
    /// returned once they verified. On an encrypted session the body was
    /// decrypted and verified with its frame: it is copied out.
    pub async fn body_all(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if self.decrypt.is_some() {
            let len = self.body.len();
            if len > buf.len() {
                return Err(ReadError::BodyTooLong {
                    len: len as u64,
                    room: buf.len(),
                });
            }
            buf[..len].copy_from_slice(&self.plain[self.body.clone()]);
            self.body = 0..0;
            return Ok(len);
        }
        let len = self.inner.body_remaining();
        if len > buf.len() as u64 {
            return Err(ReadError::BodyTooLong {
                len,
                room: buf.len(),
            });
        }
        let len = len as usize;
        let mut have = 0;
        while have < len {
            let n = self.inner.read_body(&mut buf[have..len]).await?;
            if n == 0 {
                break;
            }
            if let Some(c) = &mut self.cur {
                c.tag.update(&buf[have..have + n]);
            }
            have += n;
        }
        if let Some(Err(e)) = self.finish_frame().await? {
            return Err(e);
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
}

struct WriterInner {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    scratch: Vec<u8>,
    max_header: usize,
    failed: bool,
    sealer: Option<Sealer>,
    /// With encryption: the cipher of outgoing frames (used instead of `sealer`).
    cipher: Option<FrameCipher>,
    /// With encryption: one whole frame (prefix, header, body, tag), grown
    /// to the largest frame sent (at most `max_header + max_chunk` plus 34).
    frame: Vec<u8>,
}

/// Sends frames; cheap to clone, one frame at a time (frames of concurrent
/// requests interleave whole). A frame that cannot be written within the
/// stall timeout fails the writer, so a peer that stops reading cannot hold
/// a task forever.
///
/// After [`Writer::set_sealer`] every frame is sealed: flag SEALED and a
/// 16-byte tag over the sequence number, prefix, header and body. After
/// [`Writer::set_cipher`] instead, every frame is `SEALED | ENCRYPTED`:
/// header and body encrypted together with ChaCha20-Poly1305 and the AEAD
/// tag appended. Tags (and ciphertexts) are computed under the same lock
/// that orders the writes, so sequence numbers follow the order frames
/// reach the wire.
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
                scratch: vec![
                    0u8;
                    PREFIX_LEN
                        + tether_proto::HOST_MAX_HEADER as usize
                        + COALESCE
                        + TAG_LEN
                ],
                max_header: Limits::HANDSHAKE.max_header as usize,
                failed: false,
                sealer: None,
                cipher: None,
                frame: Vec::new(),
            })),
            stall,
        }
    }

    /// Apply the negotiated header limit.
    pub async fn set_max_header(&self, max_header: u16) {
        self.inner.lock().await.max_header = max_header as usize;
    }

    /// Seal every frame sent from now on.
    pub async fn set_sealer(&self, sealer: Sealer) {
        self.inner.lock().await.sealer = Some(sealer);
    }

    /// Encrypt (and so seal) every frame sent from now on.
    pub async fn set_cipher(&self, cipher: FrameCipher) {
        let mut g = self.inner.lock().await;
        g.sealer = None;
        g.cipher = Some(cipher);
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
        if inner.cipher.is_some() {
            let r = self.send_encrypted(inner, &header, body).await;
            if r.as_ref()
                .is_err_and(|e| e.kind() != io::ErrorKind::InvalidInput)
            {
                g.failed = true;
            }
            return r;
        }
        let flags = if inner.sealer.is_some() {
            Flags::SEALED
        } else {
            Flags::empty()
        };
        let head = encode_head(&header, body.len() as u64, flags, &mut inner.scratch)
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
        // From here on the frame counts: its sequence number is taken.
        let tag = inner.sealer.as_mut().map(|s| {
            let mut t = s.begin(&inner.scratch[..head]);
            t.update(body);
            t.finish()
        });
        let tag_len = if tag.is_some() { TAG_LEN } else { 0 };
        let write = async {
            if body.len() <= COALESCE {
                inner.scratch[head..head + body.len()].copy_from_slice(body);
                let end = head + body.len();
                if let Some(t) = &tag {
                    inner.scratch[end..end + TAG_LEN].copy_from_slice(t);
                }
                inner.io.write_all(&inner.scratch[..end + tag_len]).await?;
            } else {
                // Head, body and tag in one system call where the socket takes them.
                let tag_bytes = tag.unwrap_or([0; TAG_LEN]);
                let mut bufs = [
                    IoSlice::new(&inner.scratch[..head]),
                    IoSlice::new(body),
                    IoSlice::new(&tag_bytes[..tag_len]),
                ];
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

    /// One frame on an encrypted session: header and body into one buffer
    /// behind room for the prefix, encrypted in place, the prefix (its
    /// checksum over the ciphertext header) in front and the tag behind,
    /// then one write. Called with the lock held.
    async fn send_encrypted(
        &self,
        inner: &mut WriterInner,
        header: &Header<'_>,
        body: &[u8],
    ) -> io::Result<()> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let room = header.buffer_len();
        if room > inner.max_header {
            return Err(invalid(format!(
                "a {:?} header of {room} bytes exceeds the peer's limit of {} bytes",
                header.message.kind(),
                inner.max_header
            )));
        }
        let need = PREFIX_LEN + room + body.len() + TAG_LEN;
        if inner.frame.len() < need {
            inner.frame.resize(need, 0);
        }
        let (prefix, rest) = inner.frame.split_at_mut(PREFIX_LEN);
        let header_len = header.emit(rest).map_err(|e| invalid(e.to_string()))?.len();
        let plain_len = header_len + body.len();
        rest[header_len..plain_len].copy_from_slice(body);
        let repr = PrefixRepr {
            version: VERSION,
            flags: Flags::SEALED.union(Flags::ENCRYPTED),
            header_len: header_len as u16,
            body_len: body.len() as u64,
        };
        let Some(cipher) = inner.cipher.as_mut() else {
            return Err(invalid("the session is not encrypted".into()));
        };
        // From here on the frame counts: its sequence number is taken.
        let tag = cipher.seal_in_place(&repr, &mut rest[..plain_len]);
        repr.emit(&mut Prefix::new_unchecked(prefix), &rest[..header_len]);
        rest[plain_len..plain_len + TAG_LEN].copy_from_slice(&tag);
        let end = PREFIX_LEN + plain_len + TAG_LEN;
        let write = async {
            inner.io.write_all(&inner.frame[..end]).await?;
            inner.io.flush().await
        };
        match tokio::time::timeout(self.stall, write).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer accepted no data for {:?}; giving up on it",
                    self.stall
                ),
            )),
        }
    }

    /// Send nothing more: later sends fail (the connection is ending).
    pub async fn stop(&self) {
        self.inner.lock().await.failed = true;
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

#[cfg(test)]
mod test {
    use super::*;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// The bytes a [`Writer`] with `cipher` sends for `frames`.
    async fn wire(cipher: FrameCipher, frames: &[(u32, Message<'_>, Vec<u8>)]) -> Vec<u8> {
        let (a, b) = pair().await;
        let (_ar, aw) = a.into_split();
        let w = Writer::new(aw, Duration::from_secs(30));
        w.set_max_header(8192).await;
        w.set_cipher(cipher).await;
        for (id, m, body) in frames {
            w.send(*id, m.clone(), body).await.unwrap();
        }
        w.shutdown().await;
        let mut out = Vec::new();
        let (mut br, _bw) = b.into_split();
        br.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn encrypted_frames_survive_reads_cancelled_anywhere() {
        let key = [5u8; 32];
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
        let frames = [
            (1, Message::Ping { stamp: 7 }, Vec::new()),
            (2, Message::Data, body.clone()),
            (3, Message::Echo { text: "after" }, Vec::new()),
            (2, Message::Data, b"tail".to_vec()),
        ];
        let bytes = wire(FrameCipher::new(key), &frames).await;
        assert!(
            !bytes.windows(5).any(|w| w == b"after"),
            "the header text is encrypted"
        );
        let flags: Vec<u8> = {
            let mut v = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let hl = u16::from_le_bytes([bytes[at + 4], bytes[at + 5]]) as usize;
                let mut bl = [0u8; 8];
                bl.copy_from_slice(&bytes[at + 6..at + 14]);
                v.push(bytes[at + 3]);
                at += PREFIX_LEN + hl + u64::from_le_bytes(bl) as usize + TAG_LEN;
            }
            v
        };
        assert_eq!(flags, [0x03; 4]);

        // Fed in small pieces, with every read polled once and dropped
        // whenever it is not done: no byte and no sequence number is lost.
        let (c, d) = pair().await;
        let (dr, _dw) = d.into_split();
        let mut reader = Reader::new(dr);
        reader.set_decryptor(FrameCipher::new(key));
        reader.set_limits(8192, 256 * 1024);
        let (_cr, mut cw) = c.into_split();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut cancelled = 0;
        for piece in bytes.chunks(997) {
            cw.write_all(piece).await.unwrap();
            cw.flush().await.unwrap();
            tokio::task::yield_now().await;
            loop {
                match tokio::time::timeout(Duration::ZERO, reader.next()).await {
                    Ok(r) => {
                        let inc = r.unwrap();
                        let n = reader.body_all(&mut buf).await.unwrap();
                        got.push((inc.id, inc.msg, buf[..n].to_vec()));
                    }
                    Err(_) => {
                        cancelled += 1;
                        break;
                    }
                }
            }
        }
        assert!(
            cancelled > frames.len(),
            "reads were cut short: {cancelled}"
        );
        assert_eq!(got.len(), frames.len());
        for ((id, m, b), (gid, gm, gb)) in frames.iter().zip(&got) {
            assert_eq!((id, &Msg::from_message(m), b), (gid, gm, gb));
        }
        // A replay of the last frame does not decrypt, and the reader stays broken.
        let last = &bytes[bytes.len() - (PREFIX_LEN + 2 + 4 + TAG_LEN)..];
        assert_eq!(last[0..2], *b"TH");
        cw.write_all(last).await.unwrap();
        let e = reader.next().await.unwrap_err();
        assert!(
            matches!(e, ReadError::Integrity(w) if w.contains("does not decrypt")),
            "{e}"
        );
        assert!(matches!(reader.next().await, Err(ReadError::Integrity(_))));
    }
}

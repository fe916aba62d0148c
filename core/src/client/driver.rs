//! What the [`blocking`](super::blocking) and [`asynch`](super::asynch)
//! drivers share: their error, buffers, clock and results, and the one
//! sans-IO loop both run ([`Core::step`]): they differ only in how they
//! read and write.
//!
//! A driver runs one request at a time over the engine (a
//! [`ClientConn`] with one slot): it queues the request, then alternates
//! between writing what the engine has to send and reading what the
//! server answers, handing the request's events to the operation, until
//! the request's slot is free again.

use core::fmt;
use core::task::Poll;

use sha2::{Digest as _, Sha256};

use crate::handshake::HandshakeError;
use crate::message::{Caps, Digest, Entry, EntryKind, ErrorCode, ExitStatus, Stream};
use crate::text::{clip, Text};

use super::{
    Buffers, ClientConfig, ClientConn, ConnError, Event, LocalFailure, Origin, ReqId, Request,
    RequestError, Uploads,
};

/// The caller's clock: monotonic milliseconds, for the handshake deadline.
/// Any `FnMut() -> u64` is one (`|| embassy_time::Instant::now().as_millis()`).
pub trait Clock {
    /// Milliseconds since any fixed point (boot, say).
    fn now_ms(&mut self) -> u64;
}

impl<F: FnMut() -> u64> Clock for F {
    fn now_ms(&mut self) -> u64 {
        self()
    }
}

/// What a caller's closure answers to output, data or an entry: go on, or
/// ask the server to stop the request. A closure returning `()` goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Cancel the request: the server is asked to stop it, nothing more is
    /// handed to the closure, and once the request ended the call returns
    /// [`Error::Cancelled`] (even if the server had completed it first).
    Cancel,
}

impl From<()> for Flow {
    fn from((): ()) -> Flow {
        Flow::Continue
    }
}

/// What went wrong in a driver call. `E` is the transport's error.
///
/// The text that came with an error (the server's message, or what the
/// engine found wrong) is kept by the client until the next call:
/// `client.message()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error<E> {
    /// The transport failed (the connection is unusable now).
    Io(E),
    /// The connection is over: the server closed it (the transport read
    /// nothing, or wrote nothing), an earlier error ended it, or an earlier
    /// call was abandoned half-way (an async call's future dropped).
    Closed,
    /// The server answered the request with an Error (the connection goes
    /// on).
    Server(ErrorCode),
    /// The server refused the connection, or ended it, with an Error.
    Refused(ErrorCode),
    /// The handshake failed on this side: the keys differ, the server does
    /// not authenticate although a key is set, or does not encrypt although
    /// encryption is required.
    Handshake(HandshakeError),
    /// What answered Hello is not a tether server.
    NotTether,
    /// A frame failed its tag or did not decrypt: the connection was
    /// tampered with or corrupted (it is closed).
    Integrity,
    /// The server broke the protocol (the connection is closed).
    Protocol,
    /// The handshake did not complete before its deadline.
    Timeout,
    /// This side refused the result: a download whose bytes do not match
    /// the server's size or SHA-256 (`BAD_LENGTH`, `DIGEST_MISMATCH`), an
    /// upload whose source ended early (`CHANGED`). Nothing was kept.
    Local(ErrorCode),
    /// The upload's source failed to read.
    Source(embedded_io::ErrorKind),
    /// The download's sink failed to write (the request was cancelled).
    Sink(embedded_io::ErrorKind),
    /// A resumed transfer was stopped because the two partial copies
    /// differ: run it again without resuming.
    ResumeMismatch,
    /// The caller's closure cancelled the request (and the request ended).
    Cancelled,
    /// The request could not be sent: longer than the server's header
    /// limit (`TooLarge`), larger than the staging buffer (`NoRoom`), or
    /// not encodable (`Invalid`).
    Request(RequestError),
    /// A buffer given to the driver is too small for what it must hold.
    Buffer,
}

impl<E> Error<E> {
    /// The protocol error code, for errors that carry one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server(c) | Error::Refused(c) | Error::Local(c) => Some(*c),
            Error::Handshake(h) => Some(h.code()),
            _ => None,
        }
    }

    /// Whether the connection can still be used after this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Server(_)
                | Error::Local(_)
                | Error::Source(_)
                | Error::Sink(_)
                | Error::ResumeMismatch
                | Error::Cancelled
                | Error::Request(_)
        )
    }

    /// The same error with the transport's error mapped.
    pub fn map_io<F>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Error::Io(e) => Error::Io(f(e)),
            Error::Closed => Error::Closed,
            Error::Server(c) => Error::Server(c),
            Error::Refused(c) => Error::Refused(c),
            Error::Handshake(h) => Error::Handshake(h),
            Error::NotTether => Error::NotTether,
            Error::Integrity => Error::Integrity,
            Error::Protocol => Error::Protocol,
            Error::Timeout => Error::Timeout,
            Error::Local(c) => Error::Local(c),
            Error::Source(k) => Error::Source(k),
            Error::Sink(k) => Error::Sink(k),
            Error::ResumeMismatch => Error::ResumeMismatch,
            Error::Cancelled => Error::Cancelled,
            Error::Request(r) => Error::Request(r),
            Error::Buffer => Error::Buffer,
        }
    }
}

fn code_name(c: ErrorCode) -> &'static str {
    c.name().unwrap_or("?")
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "transport error: {e:?}"),
            Error::Closed => write!(f, "the connection is closed"),
            Error::Server(c) => write!(f, "the server refused the request [{}]", code_name(*c)),
            Error::Refused(c) => write!(f, "the server refused the connection [{}]", code_name(*c)),
            Error::Handshake(h) => write!(f, "handshake: {h}"),
            Error::NotTether => write!(f, "not a tether server"),
            Error::Integrity => write!(
                f,
                "integrity check failed: the connection was tampered with or corrupted"
            ),
            Error::Protocol => write!(f, "the server broke the protocol"),
            Error::Timeout => write!(f, "the handshake did not complete in time"),
            Error::Local(c) => write!(f, "the result was refused here [{}]", code_name(*c)),
            Error::Source(k) => write!(f, "the upload's source failed: {k:?}"),
            Error::Sink(k) => write!(f, "the download's sink failed: {k:?}"),
            Error::ResumeMismatch => write!(
                f,
                "the partial copies differ: run it again without resuming"
            ),
            Error::Cancelled => write!(f, "cancelled"),
            Error::Request(r) => write!(f, "{r}"),
            Error::Buffer => write!(f, "a buffer given to the client is too small"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// The caller's buffers for a driver: the engine's three, and the driver's
/// receive and transmit buffers. See [`ClientBuffers::split`] for sizes.
#[derive(Debug)]
pub struct ClientBuffers<'b> {
    /// One frame header: at least the largest header accepted
    /// ([`ClientConfig::max_header`]; it caps it).
    pub header: &'b mut [u8],
    /// Requests waiting to be sent: at least the longest request plus 64
    /// bytes (a path or a command line plus about 60).
    pub staging: &'b mut [u8],
    /// With a key: one whole frame body (and its header, when encrypted),
    /// held until its tag verified; its size caps the chunk size offered.
    /// `None` without a key.
    pub frame: Option<&'b mut [u8]>,
    /// Bytes read from the transport (any size from 64 bytes; larger reads
    /// fewer times).
    pub rx: &'b mut [u8],
    /// Frames written to the transport: at least 256 bytes; an upload
    /// frames at most this much per Data frame, so `max_chunk + 128` lets
    /// every frame be whole.
    pub tx: &'b mut [u8],
}

/// Room the transmit buffer needs at least (the engine frames upload data
/// only into this much room).
pub const MIN_TX: usize = 256;
/// Room the receive buffer needs at least.
pub const MIN_RX: usize = 64;

impl<'b> ClientBuffers<'b> {
    /// Bytes [`split`](Self::split) needs for `cfg` (with `rx` receive
    /// bytes; 1024 is a good figure).
    pub const fn arena_len(cfg: &ClientConfig, rx: usize) -> usize {
        let (h, tx, frame) = Self::sizes(cfg);
        h + (h + 128) + frame + tx + rx
    }

    const fn sizes(cfg: &ClientConfig) -> (usize, usize, usize) {
        let h = cfg.max_header as usize;
        let c = cfg.max_chunk as usize;
        let tx = if c + 128 > MIN_TX * 2 {
            c + 128
        } else {
            MIN_TX * 2
        };
        let frame = if cfg.key.is_some() { h + c } else { 0 };
        (h, tx, frame)
    }

    /// Cut one arena into the buffers `cfg` needs: a header of
    /// `max_header`, staging of `max_header + 128`, with a key a frame
    /// buffer of `max_header + max_chunk`, a transmit buffer of
    /// `max_chunk + 128` (at least 512), and the rest for receiving.
    /// `None` if the arena is smaller than [`arena_len`](Self::arena_len)
    /// with 64 receive bytes.
    pub fn split(arena: &'b mut [u8], cfg: &ClientConfig) -> Option<Self> {
        if arena.len() < Self::arena_len(cfg, MIN_RX) {
            return None;
        }
        let (h, tx, frame) = Self::sizes(cfg);
        let (header, rest) = arena.split_at_mut(h);
        let (staging, rest) = rest.split_at_mut(h + 128);
        let (frame, rest) = rest.split_at_mut(frame);
        let (tx, rx) = rest.split_at_mut(tx);
        Some(ClientBuffers {
            header,
            staging,
            frame: cfg.key.is_some().then_some(frame),
            rx,
            tx,
        })
    }
}

/// The server a client is connected to, as its HelloAck announced, and
/// how the session is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The server's software (cut to 64 bytes).
    pub agent: heapless::String<64>,
    /// Its capabilities.
    pub caps: Caps,
    /// Negotiated largest header.
    pub max_header: u16,
    /// Negotiated largest body per frame.
    pub max_chunk: u32,
    /// Most requests in flight it runs.
    pub max_requests: u16,
    /// Longest name it accepts.
    pub max_name: u16,
    /// Longest path it accepts.
    pub max_path: u16,
    /// Both sides proved the key: every frame is sealed.
    pub authenticated: bool,
    /// Every frame is encrypted too.
    pub encrypted: bool,
}

/// A completed transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transfer {
    /// The whole file's size.
    pub size: u64,
    /// Where this call's data started (above 0 when resumed).
    pub offset: u64,
    /// The whole file's SHA-256: a download's computed here over every byte
    /// and equal to the server's; an upload's computed here and confirmed
    /// by the server.
    pub sha256: Digest,
}

/// What Stat tells about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo {
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (0 for a directory).
    pub size: u64,
    /// Modification time, Unix seconds (0 if unknown).
    pub modified: u64,
}

/// The server's time, its text in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time<'o> {
    /// Unix milliseconds (or since boot, on a device without a clock).
    pub unix_ms: u64,
    /// The formatted time (cut to the caller's buffer).
    pub text: &'o str,
}

/// How an upload goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Replace an existing file of that name.
    pub force: bool,
    /// Take up the server's partial of an earlier attempt (its prefix is
    /// checked against the source's first bytes; they are read and hashed
    /// first). A source that cannot be read again then ends the call with
    /// [`Error::ResumeMismatch`] when they differ.
    pub resume: bool,
}

/// An upload from bytes in memory.
#[derive(Debug)]
pub(crate) struct SliceSource<'a>(pub &'a [u8]);

impl Uploads for SliceSource<'_> {
    fn hash_prefix(&mut self, _: ReqId, len: u64) -> Poll<Result<Sha256, LocalFailure<'_>>> {
        let Some(prefix) = usize::try_from(len).ok().and_then(|n| self.0.get(..n)) else {
            return Poll::Ready(Err(changed()));
        };
        Poll::Ready(Ok(Sha256::new_with_prefix(prefix)))
    }
    fn read(
        &mut self,
        _: ReqId,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, LocalFailure<'_>>> {
        let at = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - at);
        buf[..n].copy_from_slice(&self.0[at..at + n]);
        Poll::Ready(Ok(n))
    }
    fn check_unchanged(&mut self, _: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        Poll::Ready(Ok(()))
    }
}

fn changed() -> LocalFailure<'static> {
    LocalFailure {
        code: ErrorCode::CHANGED,
        message: "the source ended before its announced size; nothing was committed",
    }
}

/// An upload from a reader, read once, in order.
#[derive(Debug)]
pub(crate) struct ReadSource<R> {
    pub r: R,
    pub pos: u64,
    /// Why the reader failed, if it did.
    pub failed: Option<embedded_io::ErrorKind>,
}

impl<R: embedded_io::Read> ReadSource<R> {
    pub(crate) fn new(r: R) -> Self {
        ReadSource {
            r,
            pos: 0,
            failed: None,
        }
    }

    fn fail(&mut self, e: R::Error) -> LocalFailure<'static> {
        use embedded_io::Error as _;
        self.failed = Some(e.kind());
        LocalFailure {
            code: ErrorCode::IO,
            message: "the upload's source failed to read; nothing was committed",
        }
    }
}

impl<R: embedded_io::Read> Uploads for ReadSource<R> {
    fn hash_prefix(&mut self, _: ReqId, len: u64) -> Poll<Result<Sha256, LocalFailure<'_>>> {
        let mut h = Sha256::new();
        let mut scratch = [0u8; 64];
        while self.pos < len {
            let want = (len - self.pos).min(scratch.len() as u64) as usize;
            match self.r.read(&mut scratch[..want]) {
                Ok(0) => return Poll::Ready(Err(changed())),
                Ok(n) => {
                    h.update(&scratch[..n]);
                    self.pos += n as u64;
                }
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            }
        }
        if self.pos != len {
            return Poll::Ready(Err(out_of_order()));
        }
        Poll::Ready(Ok(h))
    }
    fn read(
        &mut self,
        _: ReqId,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, LocalFailure<'_>>> {
        if offset != self.pos {
            return Poll::Ready(Err(out_of_order()));
        }
        match self.r.read(buf) {
            Ok(n) => {
                self.pos += n as u64;
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(self.fail(e))),
        }
    }
    fn check_unchanged(&mut self, _: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        Poll::Ready(Ok(()))
    }
}

fn out_of_order() -> LocalFailure<'static> {
    LocalFailure {
        code: ErrorCode::IO,
        message: "the engine asked a reader for bytes out of order",
    }
}

/// What a driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Write `tx[..n]`.
    Write(usize),
    /// Read into [`Core::rx_space`], then call [`Core::received`].
    Read,
    /// The call is complete.
    Done,
}

/// What the driver waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Idle,
    Connect,
    Request(ReqId),
}

/// What an operation does with its request's events. [`Core::step`]
/// takes it (and the upload source) as trait objects, so the event loop
/// is compiled once per client, not once per operation (flash).
pub(crate) trait OnEvent {
    /// An event of the request.
    fn event(&mut self, ev: &Event<'_>) -> Flow;
}

/// An operation: its events, then its result.
pub(crate) trait Handler: OnEvent {
    type Output;
    /// The request ended (`ended` says how); the result.
    fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<Self::Output, Error<E>>;
}

/// A `dyn Uploads` as a sized [`Uploads`] for the engine.
struct DynUploads<'a>(&'a mut dyn Uploads);

impl Uploads for DynUploads<'_> {
    fn hash_prefix(&mut self, req: ReqId, len: u64) -> Poll<Result<Sha256, LocalFailure<'_>>> {
        self.0.hash_prefix(req, len)
    }
    fn read(
        &mut self,
        req: ReqId,
        offset: u64,
        buf: &mut [u8],
    ) -> Poll<Result<usize, LocalFailure<'_>>> {
        self.0.read(req, offset, buf)
    }
    fn check_unchanged(&mut self, req: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        self.0.check_unchanged(req)
    }
}

/// The sans-IO half of a driver.
#[derive(Debug)]
pub(crate) struct Core<'b, C> {
    pub conn: ClientConn<&'b mut [u8], 1>,
    pub rx: &'b mut [u8],
    rx_at: usize,
    rx_end: usize,
    pub tx: &'b mut [u8],
    pub clock: C,
    /// The text of the last error.
    pub text: Text,
    pub session: Option<Session>,
    wait: Wait,
    /// The connection can no longer be used.
    dead: bool,
    /// How the current request ended, if it failed.
    failure: Option<Failure>,
    /// The caller asked to cancel the current request; the Cancel was sent.
    cancel: (bool, bool),
}

/// A failure found in the events (transport-independent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Server(ErrorCode),
    Refused(ErrorCode),
    Handshake(HandshakeError),
    NotTether,
    Integrity,
    Protocol,
    Timeout,
    Local(ErrorCode),
    ResumeMismatch,
    Cancelled,
}

impl<E> From<Failure> for Error<E> {
    fn from(f: Failure) -> Error<E> {
        match f {
            Failure::Server(c) => Error::Server(c),
            Failure::Refused(c) => Error::Refused(c),
            Failure::Handshake(h) => Error::Handshake(h),
            Failure::NotTether => Error::NotTether,
            Failure::Integrity => Error::Integrity,
            Failure::Protocol => Error::Protocol,
            Failure::Timeout => Error::Timeout,
            Failure::Local(c) => Error::Local(c),
            Failure::ResumeMismatch => Error::ResumeMismatch,
            Failure::Cancelled => Error::Cancelled,
        }
    }
}

fn set_text(t: &mut Text, s: &str) {
    *t = Text::new();
    let _ = fmt::Write::write_str(t, s);
}

impl<'b, C: Clock> Core<'b, C> {
    /// A driver's engine over the caller's buffers (not connected yet).
    pub(crate) fn new(cfg: ClientConfig, bufs: ClientBuffers<'b>, clock: C) -> Result<Self, ()> {
        if bufs.tx.len() < MIN_TX || bufs.rx.len() < MIN_RX {
            return Err(());
        }
        let conn = ClientConn::new(
            cfg,
            Buffers {
                header: bufs.header,
                staging: bufs.staging,
                frame: bufs.frame,
            },
        );
        Ok(Core {
            conn,
            rx: bufs.rx,
            rx_at: 0,
            rx_end: 0,
            tx: bufs.tx,
            clock,
            text: Text::new(),
            session: None,
            wait: Wait::Idle,
            dead: false,
            failure: None,
            cancel: (false, false),
        })
    }

    /// Queue Hello.
    pub(crate) fn begin_connect<E>(&mut self, nonce: [u8; 16]) -> Result<(), Error<E>> {
        if self.dead || self.wait != Wait::Idle || self.session.is_some() {
            self.dead = true;
            return Err(Error::Closed);
        }
        let now = self.clock.now_ms();
        self.conn.connect(now, nonce);
        if !self.conn.wants_transmit() {
            // Hello did not fit the staging buffer.
            self.dead = true;
            return Err(Error::Buffer);
        }
        self.start(Wait::Connect);
        Ok(())
    }

    /// Queue a request.
    pub(crate) fn begin<E>(&mut self, r: Request<'_>) -> Result<(), Error<E>> {
        if self.dead || self.wait != Wait::Idle || self.conn.is_closed() {
            // An earlier call was abandoned half-way: the stream is in an
            // unknown state.
            self.dead = true;
            return Err(Error::Closed);
        }
        let req = self.conn.request(r).map_err(|e| match e {
            RequestError::NotConnected => Error::Closed,
            e => Error::Request(e),
        })?;
        self.start(Wait::Request(req));
        Ok(())
    }

    fn start(&mut self, w: Wait) {
        self.wait = w;
        self.failure = None;
        self.cancel = (false, false);
        self.text = Text::new();
    }

    /// The caller's call ended (an I/O error, or done).
    pub(crate) fn end(&mut self) {
        self.wait = Wait::Idle;
    }

    /// The transport failed or ended: the connection is over.
    pub(crate) fn broken(&mut self) {
        self.dead = true;
        self.wait = Wait::Idle;
    }

    fn done(&self) -> bool {
        match self.wait {
            Wait::Idle => true,
            Wait::Connect => self.session.is_some(),
            Wait::Request(_) => self.conn.in_flight() == 0,
        }
    }

    /// Where to read into (the unconsumed bytes moved to the front first).
    pub(crate) fn rx_space(&mut self) -> &mut [u8] {
        if self.rx_at > 0 {
            self.rx.copy_within(self.rx_at..self.rx_end, 0);
            self.rx_end -= self.rx_at;
            self.rx_at = 0;
        }
        &mut self.rx[self.rx_end..]
    }

    /// `n` bytes were read into [`rx_space`](Self::rx_space).
    pub(crate) fn received(&mut self, n: usize) {
        self.rx_end = (self.rx_end + n).min(self.rx.len());
    }

    /// The next thing to do for the current call.
    pub(crate) fn step<E>(
        &mut self,
        uploads: &mut dyn Uploads,
        h: &mut dyn OnEvent,
    ) -> Result<Next, Error<E>> {
        let mut uploads = DynUploads(uploads);
        if let Some(due) = self.conn.poll_timeout() {
            let now = self.clock.now_ms();
            if now >= due {
                self.conn.handle_timeout(now);
            }
        }
        loop {
            self.events(h)?;
            if self.done() {
                return Ok(Next::Done);
            }
            if let (Wait::Request(req), (true, false)) = (self.wait, self.cancel) {
                match self.conn.cancel(req) {
                    Ok(()) => self.cancel.1 = true,
                    // The staging queue is full: send first, cancel next time.
                    Err(RequestError::NoRoom) => {}
                    Err(_) => self.cancel.1 = true,
                }
            }
            let now = self.clock.now_ms();
            let n = self.conn.poll_transmit(now, self.tx, &mut uploads);
            if n > 0 {
                return Ok(Next::Write(n));
            }
            // Transmitting may have made events (an upload started or failed).
            if !self.events(h)? {
                if self.done() {
                    return Ok(Next::Done);
                }
                if self.rx_at == 0 && self.rx_end == self.rx.len() {
                    // A full buffer the engine does not take.
                    self.dead = true;
                    return Err(Error::Buffer);
                }
                return Ok(Next::Read);
            }
        }
    }

    /// Feed the engine the bytes received so far and act on its events;
    /// returns whether anything happened.
    fn events<E>(&mut self, h: &mut dyn OnEvent) -> Result<bool, Error<E>> {
        let mut any = false;
        loop {
            let now = self.clock.now_ms();
            let (used, ev) = self
                .conn
                .handle_bytes(now, &self.rx[self.rx_at..self.rx_end]);
            self.rx_at += used;
            let Some(ev) = ev else {
                if used == 0 {
                    break;
                }
                any = true;
                continue;
            };
            any = true;
            match &ev {
                Event::Connected(i) => {
                    let mut agent = heapless::String::new();
                    let _ = agent.push_str(clip(i.agent, 64));
                    self.session = Some(Session {
                        agent,
                        caps: i.caps,
                        max_header: i.max_header,
                        max_chunk: i.max_chunk,
                        max_requests: i.max_requests,
                        max_name: i.max_name,
                        max_path: i.max_path,
                        authenticated: i.authenticated,
                        encrypted: i.encrypted,
                    });
                }
                Event::Closed(e) => {
                    let f = match *e {
                        ConnError::Server { code, .. } => Failure::Refused(code),
                        ConnError::Handshake(h) => Failure::Handshake(h),
                        ConnError::NotTether(_) => Failure::NotTether,
                        ConnError::Integrity(_) => Failure::Integrity,
                        ConnError::Protocol(_) => Failure::Protocol,
                        ConnError::Timeout | ConnError::Stalled(_) => Failure::Timeout,
                    };
                    match e {
                        ConnError::Server { message, .. }
                        | ConnError::NotTether(message)
                        | ConnError::Integrity(message)
                        | ConnError::Protocol(message) => set_text(&mut self.text, message),
                        e => self.text = crate::text::text(format_args!("{e}")),
                    }
                    self.dead = true;
                    self.wait = Wait::Idle;
                    return Err(f.into());
                }
                ev => {
                    let Wait::Request(req) = self.wait else {
                        continue;
                    };
                    if ev.req() != Some(req) {
                        // A reply of nothing this driver asked: the engine
                        // checked it belongs to a request in flight.
                        continue;
                    }
                    let cancelled = self.cancel.0;
                    match ev {
                        Event::Failed {
                            origin,
                            code,
                            message,
                            ..
                        } => {
                            set_text(&mut self.text, message);
                            self.failure = Some(match origin {
                                _ if cancelled && *code == ErrorCode::CANCELLED => {
                                    Failure::Cancelled
                                }
                                Origin::Server => Failure::Server(*code),
                                Origin::Local => Failure::Local(*code),
                            });
                        }
                        Event::ResumeMismatch { .. } => {
                            self.failure = Some(Failure::ResumeMismatch)
                        }
                        Event::Exit {
                            status: ExitStatus::Cancelled,
                            ..
                        } if cancelled => self.failure = Some(Failure::Cancelled),
                        // After a cancel, the closure gets nothing more.
                        Event::Output { .. } | Event::Data { .. } | Event::Entry { .. }
                            if cancelled => {}
                        ev => {
                            if h.event(ev) == Flow::Cancel && !cancelled {
                                self.cancel.0 = true;
                            }
                        }
                    }
                }
            }
        }
        Ok(any)
    }

    /// How the current request ended.
    pub(crate) fn outcome<E>(&self) -> Result<(), Error<E>> {
        match self.failure {
            Some(f) => Err(f.into()),
            // The closure saw only part of it.
            None if self.cancel.0 => Err(Error::Cancelled),
            None => Ok(()),
        }
    }

    /// Whether the connection can take requests.
    pub(crate) fn usable(&self) -> bool {
        !self.dead && self.conn.is_connected()
    }
}

/// Copy `s` into `out`, cut at a character boundary.
fn copy_str<'o>(s: &str, out: &'o mut [u8]) -> &'o str {
    let s = clip(s, out.len());
    out[..s.len()].copy_from_slice(s.as_bytes());
    core::str::from_utf8(&out[..s.len()]).unwrap_or("")
}

/// The operations, as [`Handler`]s.
pub(crate) mod ops {
    use super::*;

    fn missing<E>() -> Error<E> {
        Error::Protocol
    }

    /// The handshake.
    #[derive(Debug)]
    pub(crate) struct Connect;

    impl OnEvent for Connect {
        fn event(&mut self, _: &Event<'_>) -> Flow {
            Flow::Continue
        }
    }

    impl Handler for Connect {
        type Output = ();
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<(), Error<E>> {
            ended
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Ping(pub Option<u64>);

    impl OnEvent for Ping {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            if let Event::Pong { stamp, .. } = ev {
                self.0 = Some(*stamp);
            }
            Flow::Continue
        }
    }

    impl Handler for Ping {
        type Output = u64;
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<u64, Error<E>> {
            ended?;
            self.0.ok_or_else(missing)
        }
    }

    #[derive(Debug)]
    pub(crate) struct Echo<'o> {
        pub out: &'o mut [u8],
        pub len: Option<usize>,
    }

    impl<'o> OnEvent for Echo<'o> {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            if let Event::Echo { text, .. } = ev {
                self.len = Some(copy_str(text, self.out).len());
            }
            Flow::Continue
        }
    }

    impl<'o> Handler for Echo<'o> {
        type Output = &'o str;
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<&'o str, Error<E>> {
            ended?;
            let n = self.len.ok_or_else(missing)?;
            let out: &'o [u8] = self.out;
            Ok(core::str::from_utf8(&out[..n]).unwrap_or(""))
        }
    }

    #[derive(Debug)]
    pub(crate) struct TimeOp<'o> {
        pub out: &'o mut [u8],
        pub got: Option<(u64, usize)>,
    }

    impl<'o> OnEvent for TimeOp<'o> {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            if let Event::Time { unix_ms, text, .. } = ev {
                self.got = Some((*unix_ms, copy_str(text, self.out).len()));
            }
            Flow::Continue
        }
    }

    impl<'o> Handler for TimeOp<'o> {
        type Output = Time<'o>;
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<Time<'o>, Error<E>> {
            ended?;
            let (unix_ms, n) = self.got.ok_or_else(missing)?;
            let out: &'o [u8] = self.out;
            Ok(Time {
                unix_ms,
                text: core::str::from_utf8(&out[..n]).unwrap_or(""),
            })
        }
    }

    pub(crate) struct Exec<F> {
        pub f: F,
        pub status: Option<ExitStatus>,
    }

    impl<F: FnMut(Stream, &[u8]) -> R, R: Into<Flow>> OnEvent for Exec<F> {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            match ev {
                Event::Output { stream, bytes, .. } => (self.f)(*stream, bytes).into(),
                Event::Exit { status, .. } => {
                    self.status = Some(*status);
                    Flow::Continue
                }
                _ => Flow::Continue,
            }
        }
    }

    impl<F: FnMut(Stream, &[u8]) -> R, R: Into<Flow>> Handler for Exec<F> {
        type Output = ExitStatus;
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<ExitStatus, Error<E>> {
            ended?;
            self.status.ok_or_else(missing)
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Stat(pub Option<EntryInfo>);

    impl OnEvent for Stat {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            if let Event::Entry { entry, .. } = ev {
                self.0 = Some(EntryInfo {
                    kind: entry.kind,
                    size: entry.size,
                    modified: entry.modified,
                });
            }
            Flow::Continue
        }
    }

    impl Handler for Stat {
        type Output = EntryInfo;
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<EntryInfo, Error<E>> {
            ended?;
            self.0.ok_or_else(missing)
        }
    }

    pub(crate) struct List<F> {
        pub f: F,
        pub count: Option<u64>,
    }

    impl<F: FnMut(&Entry<'_>) -> R, R: Into<Flow>> OnEvent for List<F> {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            match ev {
                Event::Entry { entry, .. } => (self.f)(entry).into(),
                Event::Finished { bytes, .. } => {
                    self.count = Some(*bytes);
                    Flow::Continue
                }
                _ => Flow::Continue,
            }
        }
    }

    impl<F: FnMut(&Entry<'_>) -> R, R: Into<Flow>> Handler for List<F> {
        type Output = u64;
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<u64, Error<E>> {
            ended?;
            self.count.ok_or_else(missing)
        }
    }

    /// A download: bytes to `f` with their offset in the file.
    pub(crate) struct Get<F> {
        pub f: F,
        /// Where the data must start (a resume into a sink that cannot
        /// start over); a different start cancels.
        pub strict: Option<u64>,
        pub mismatch: bool,
        pub pos: u64,
        pub offset: u64,
        pub done: Option<(u64, Digest)>,
    }

    impl<F> Get<F> {
        pub(crate) fn new(f: F, strict: Option<u64>) -> Self {
            Get {
                f,
                strict,
                mismatch: false,
                pos: 0,
                offset: 0,
                done: None,
            }
        }
    }

    impl<F: FnMut(u64, &[u8]) -> R, R: Into<Flow>> OnEvent for Get<F> {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            match ev {
                Event::GetStarted { offset, .. } => {
                    self.pos = *offset;
                    self.offset = *offset;
                    if self.strict.is_some_and(|s| s != *offset) {
                        self.mismatch = true;
                        return Flow::Cancel;
                    }
                    Flow::Continue
                }
                Event::Data { bytes, .. } => {
                    let at = self.pos;
                    self.pos += bytes.len() as u64;
                    (self.f)(at, bytes).into()
                }
                Event::Finished {
                    bytes,
                    sha256: Some(d),
                    ..
                } => {
                    self.done = Some((*bytes, *d));
                    Flow::Continue
                }
                _ => Flow::Continue,
            }
        }
    }

    impl<F: FnMut(u64, &[u8]) -> R, R: Into<Flow>> Handler for Get<F> {
        type Output = Transfer;
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<Transfer, Error<E>> {
            match ended {
                Err(Error::Cancelled) if self.mismatch => return Err(Error::ResumeMismatch),
                e => e?,
            }
            let (size, sha256) = self.done.ok_or_else(missing)?;
            Ok(Transfer {
                size,
                offset: self.offset,
                sha256,
            })
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Put {
        pub offset: u64,
        pub done: Option<(u64, Digest)>,
    }

    impl OnEvent for Put {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            match ev {
                Event::PutStarted { offset, .. } => self.offset = *offset,
                Event::Finished {
                    bytes,
                    sha256: Some(d),
                    ..
                } => self.done = Some((*bytes, *d)),
                _ => {}
            }
            Flow::Continue
        }
    }

    impl Handler for Put {
        type Output = Transfer;
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<Transfer, Error<E>> {
            ended?;
            let (size, sha256) = self.done.ok_or_else(missing)?;
            Ok(Transfer {
                size,
                offset: self.offset,
                sha256,
            })
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct Remove(pub bool);

    impl OnEvent for Remove {
        fn event(&mut self, ev: &Event<'_>) -> Flow {
            if let Event::Finished { .. } = ev {
                self.0 = true;
            }
            Flow::Continue
        }
    }

    impl Handler for Remove {
        type Output = ();
        fn finish<E>(self, ended: Result<(), Error<E>>) -> Result<(), Error<E>> {
            ended?;
            self.0.then_some(()).ok_or_else(missing)
        }
    }
}

/// A download into an `embedded_io::Write`: bytes written in order; a
/// failed write cancels.
pub(crate) struct SinkWriter<'w, W> {
    pub w: &'w mut W,
    pub failed: Option<embedded_io::ErrorKind>,
}

impl<W: embedded_io::Write> SinkWriter<'_, W> {
    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> Flow {
        use embedded_io::Error as _;
        while !bytes.is_empty() {
            match self.w.write(bytes) {
                Ok(0) => {
                    self.failed = Some(embedded_io::ErrorKind::WriteZero);
                    return Flow::Cancel;
                }
                Ok(n) => bytes = &bytes[n..],
                Err(e) => {
                    self.failed = Some(e.kind());
                    return Flow::Cancel;
                }
            }
        }
        Flow::Continue
    }
}

/// An owned entry of a listing (the `alloc` conveniences).
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    /// The name.
    pub name: alloc::string::String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub modified: u64,
}

#[cfg(feature = "alloc")]
impl From<&Entry<'_>> for OwnedEntry {
    fn from(e: &Entry<'_>) -> Self {
        OwnedEntry {
            name: e.name.into(),
            kind: e.kind,
            size: e.size,
            modified: e.modified,
        }
    }
}

/// A finished command's output (the `alloc` conveniences).
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: alloc::vec::Vec<u8>,
    /// Its stderr.
    pub stderr: alloc::vec::Vec<u8>,
}

//! One TCP connection's protocol state machine (see the module docs of
//! [`device`](super) for the call order and the semantics).

use core::fmt;

use sha2::{Digest as _, Sha256};

use crate::codec::{encode_frame, encode_head, Decoder, Event, Frame, Limits};
use crate::handshake::{
    HandshakeError, Opener, ServerHandshake, ServerPolicy, SessionKeys, TagBuilder,
};
use crate::message::{
    Caps, Command, Entry, EntryKind, ErrorCode, ExitStatus, Header, Message, Stream,
};
use crate::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN, TAG_LEN, VERSION};

use super::backoff::Peer;
use super::clock::{format_time, Clock};
use super::commands::{self, Commands, Output, MAX_ARGS};
use super::datagram::{encode_echo_reply, TIME_TEXT_MAX};
use super::store::{FileId, Store};
use super::{msg, normalize, Device, MemReport, SessionMem, CLOSE_GRACE_MS};

/// Room kept in the transmit buffer for one reply (beyond an Echo's size).
const REPLY_ROOM: usize = 256;
/// The transmit buffer must exceed the header limit by this much (an Echo
/// reply's prefix and slack, plus a tag).
const TX_SLACK: usize = 32 + TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Closed,
    /// Waiting for Hello.
    Hello,
    /// HelloAck sent; waiting for a valid Auth (keyed devices only).
    Auth,
    /// Serving requests.
    Open,
    /// A fatal error was sent; close once it is out.
    Closing,
}

/// Authentication and sealing state.
#[derive(Debug, Clone)]
enum Security {
    /// Before Hello, and until Auth verified on a keyed device.
    Handshake(ServerHandshake),
    /// No key: nothing is authenticated or sealed.
    Plain,
    /// Authenticated: every frame both ways is sealed.
    Sealed(SessionKeys),
}

/// How a running request ends after a Cancel (or a client Error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    /// End with Error CANCELLED / Exit Cancelled.
    Reply,
    /// The client gave up (sent Error): end without another frame.
    Silent,
}

#[derive(Debug, Clone)]
enum Op {
    Idle,
    Exec {
        id: u32,
        out: (usize, usize),
        err: (usize, usize),
        code: i32,
        stop: Stop,
    },
    List {
        id: u32,
        cursor: Option<FileId>,
        count: u64,
        stop: Stop,
    },
    Get {
        id: u32,
        file: FileId,
        size: u64,
        pos: u64,
        hasher: Sha256,
        failed: bool,
        stop: Stop,
    },
    Put {
        id: u32,
        tmp: FileId,
        size: u64,
        got: u64,
        hasher: Sha256,
        force: bool,
    },
}

impl Op {
    fn id(&self) -> Option<u32> {
        match *self {
            Op::Idle => None,
            Op::Exec { id, .. } | Op::List { id, .. } | Op::Get { id, .. } | Op::Put { id, .. } => {
                Some(id)
            }
        }
    }
    fn stop_mut(&mut self) -> Option<&mut Stop> {
        match self {
            Op::Exec { stop, .. } | Op::List { stop, .. } | Op::Get { stop, .. } => Some(stop),
            Op::Idle | Op::Put { .. } => None,
        }
    }
}

/// An error to send as soon as there is room (found while reading a body).
#[derive(Debug, Clone, Copy)]
struct Deferred {
    id: u32,
    code: ErrorCode,
    message: &'static str,
}

enum Outcome {
    Done,
    Blocked,
    SetLimits(Limits),
}

/// Everything but the decoder, so that a frame borrowed from the decoder
/// can be dispatched while this part is mutated.
struct State<B> {
    tx: B,
    tx_start: usize,
    tx_end: usize,
    out: B,
    header_buf: usize,
    /// Body bytes the running request still owes the frame whose head was queued.
    body_left: u64,
    phase: Phase,
    /// The decoder's current frame awaits dispatch (no room to reply yet).
    held: bool,
    deferred: Option<Deferred>,
    /// The current frame's body is upload data.
    rx_put: bool,
    op: Op,
    /// The last upload that failed: its late Data and Done are dropped silently.
    aborted: Option<u32>,
    max_chunk: u32,
    nonce: [u8; 16],
    sec: Security,
    /// The tag being computed over the sealed frame being received.
    rx_tag: Option<TagBuilder>,
    /// The sealed frame being received is upload data, streamed to the
    /// store as it arrives (not dispatched at its end).
    rx_streamed: bool,
    /// The tag being computed over the sealed frame whose body is being sent.
    tx_tag: Option<TagBuilder>,
    peer: Peer,
    /// Deadlines, copied from the config at accept.
    handshake_ms: u32,
    idle_ms: u32,
    /// When the connection was accepted.
    accepted_ms: u64,
    /// When a byte last moved either way.
    active_ms: u64,
    /// The close grace passed: close without delivering what is queued.
    force_close: bool,
}

/// One connection: feed it received bytes, poll it for bytes to send.
///
/// `B` is the caller's buffer type (`&'static mut [u8]` on firmware). The
/// three buffers: `header` holds one frame header (its length caps the
/// negotiated `max_header`); `tx` queues reply frames and must be at least
/// 304 bytes (the header limit is also capped at `tx.len() - 48`); `output`
/// holds a command's output (stdout ¾, stderr ¼) and is scratch for Get.
pub struct Session<B> {
    dec: Decoder<B>,
    st: State<B>,
}

impl<B> fmt::Debug for Session<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("phase", &self.st.phase)
            .field("op", &self.st.op)
            .field("tx_queued", &(self.st.tx_end - self.st.tx_start))
            .finish_non_exhaustive()
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Session<B> {
    /// A session with no connection yet.
    pub fn new(header: B, tx: B, output: B) -> Self {
        let header_buf = header.as_ref().len();
        Session {
            dec: Decoder::new(header, Limits::HANDSHAKE),
            st: State {
                tx,
                tx_start: 0,
                tx_end: 0,
                out: output,
                header_buf,
                body_left: 0,
                phase: Phase::Closed,
                held: false,
                deferred: None,
                rx_put: false,
                op: Op::Idle,
                aborted: None,
                max_chunk: 64,
                nonce: [0; 16],
                sec: Security::Plain,
                rx_tag: None,
                rx_streamed: false,
                tx_tag: None,
                peer: Peer::UNKNOWN,
                handshake_ms: 0,
                idle_ms: 0,
                accepted_ms: 0,
                active_ms: 0,
                force_close: false,
            },
        }
    }

    /// A connection from `peer` was accepted at `now_ms`: start over,
    /// expecting Hello. `nonce` must be fresh and unpredictable (it goes
    /// into HelloAck and the authentication transcript). `peer` keys the
    /// back-off after failed authentication ([`Peer::UNKNOWN`] on links
    /// without addresses).
    pub fn handle_accept<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        peer: Peer,
        nonce: [u8; 16],
        now_ms: u64,
    ) {
        self.handle_close(dev);
        dev.stats.connections += 1;
        self.dec.reset();
        self.dec.set_limits(Limits::HANDSHAKE);
        let st = &mut self.st;
        st.tx_start = 0;
        st.tx_end = 0;
        st.body_left = 0;
        st.held = false;
        st.deferred = None;
        st.rx_put = false;
        st.aborted = None;
        st.nonce = nonce;
        st.sec = Security::Handshake(ServerHandshake::new(dev.config.key));
        st.peer = peer;
        st.handshake_ms = dev.config.handshake_timeout_ms;
        st.idle_ms = dev.config.idle_timeout_ms;
        st.accepted_ms = now_ms;
        st.active_ms = now_ms;
        st.phase = Phase::Hello;
    }

    /// The connection ended (either side closed or it was reset): drop any
    /// upload in progress, anything queued and the session keys.
    pub fn handle_close<S: Store, C: Clock, K: Commands>(&mut self, dev: &mut Device<S, C, K>) {
        self.st.abort_op(dev);
        self.st.phase = Phase::Closed;
        self.st.tx_start = 0;
        self.st.tx_end = 0;
        self.st.body_left = 0;
        self.st.held = false;
        self.st.deferred = None;
        self.st.sec = Security::Plain;
        self.st.rx_tag = None;
        self.st.rx_streamed = false;
        self.st.tx_tag = None;
        self.st.force_close = false;
    }

    /// Whether a connection is being served.
    pub fn is_open(&self) -> bool {
        self.st.phase != Phase::Closed
    }

    /// Whether the session authenticated its peer (and seals every frame).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.st.sec, Security::Sealed(_))
    }

    /// Whether the session wants the connection closed now (after a fatal
    /// error, once the Error frame is out, or when the close grace passed).
    pub fn poll_close(&self) -> bool {
        let st = &self.st;
        st.phase == Phase::Closing
            && (st.force_close
                || (st.tx_start == st.tx_end && st.body_left == 0 && st.deferred.is_none()))
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called
    /// (the caller's monotonic ms), if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        let st = &self.st;
        let after = |from: u64, ms: u32| (ms > 0).then(|| from.saturating_add(u64::from(ms)));
        match st.phase {
            Phase::Closed => None,
            Phase::Hello | Phase::Auth => after(st.accepted_ms, st.handshake_ms),
            Phase::Open => after(st.active_ms, st.idle_ms),
            Phase::Closing if st.force_close => None,
            Phase::Closing => Some(st.active_ms.saturating_add(CLOSE_GRACE_MS)),
        }
    }

    /// Enforce the deadlines at `now_ms` (call at least when
    /// [`poll_timeout`](Self::poll_timeout) is due; calling more often is
    /// harmless). A handshake not completed in time, or an open connection
    /// idle too long, gets Error `TIMEOUT` and closes; a closing connection
    /// whose peer does not take the final Error is closed without it.
    pub fn handle_timeout<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        now_ms: u64,
    ) {
        let Some(due) = self.poll_timeout() else {
            return;
        };
        if now_ms < due {
            return;
        }
        let st = &mut self.st;
        match st.phase {
            Phase::Closed => {}
            Phase::Hello | Phase::Auth => {
                dev.stats.timeouts += 1;
                let m = msg(format_args!(
                    "handshake not completed within {} ms; closing",
                    st.handshake_ms
                ));
                st.fatal(dev, 0, ErrorCode::TIMEOUT, m.as_str());
                st.active_ms = now_ms;
            }
            Phase::Open => {
                dev.stats.timeouts += 1;
                let m = msg(format_args!(
                    "connection idle for {} ms; closing",
                    st.idle_ms
                ));
                st.fatal(dev, 0, ErrorCode::TIMEOUT, m.as_str());
                st.active_ms = now_ms;
            }
            Phase::Closing => {
                dev.stats.timeouts += 1;
                st.force_close = true;
            }
        }
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has (or may make) bytes to send.
    pub fn wants_transmit(&self) -> bool {
        let st = &self.st;
        st.tx_start < st.tx_end
            || st.body_left > 0
            || (matches!(st.phase, Phase::Auth | Phase::Open) && st.pending())
            || (st.phase == Phase::Open
                && matches!(st.op, Op::Exec { .. } | Op::List { .. } | Op::Get { .. }))
    }

    /// RAM this session uses.
    pub fn mem(&self) -> SessionMem {
        SessionMem {
            header_buf: self.st.header_buf,
            tx_buf: self.st.tx.as_ref().len(),
            tx_queued: self.st.tx_end - self.st.tx_start,
            output_buf: self.st.out.as_ref().len(),
            state: core::mem::size_of::<Self>(),
        }
    }

    /// Feed received bytes; returns how many were consumed. Fewer than
    /// `input.len()` means the session is waiting for room to reply: keep
    /// the rest queued and offer it again after [`poll_transmit`](Self::poll_transmit).
    pub fn handle_bytes<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        input: &[u8],
        now_ms: u64,
    ) -> usize {
        let mut used = 0;
        loop {
            if matches!(self.st.phase, Phase::Closed | Phase::Closing) {
                used = input.len();
                break;
            }
            let pending = self.st.pending();
            if pending && !self.unblock(dev, now_ms) {
                break;
            }
            if pending {
                continue;
            }
            let (n, r) = self.dec.handle_bytes(&input[used..]);
            used += n;
            match r {
                Ok(None) => break,
                Ok(Some(Event::Header(f))) => {
                    dev.stats.frames_in += 1;
                    let st = &mut self.st;
                    st.rx_put = false;
                    st.rx_streamed = false;
                    let Security::Sealed(keys) = &mut st.sec else {
                        st.held = true;
                        continue;
                    };
                    if !f.prefix.flags.contains(Flags::SEALED) {
                        dev.stats.integrity_failures += 1;
                        st.fatal(
                            dev,
                            0,
                            ErrorCode::INTEGRITY,
                            "unsealed frame on an authenticated session; closing",
                        );
                        used = input.len();
                        break;
                    }
                    st.rx_tag = Some(keys.open.begin_frame(&f));
                    // Upload data goes to the temporary slot as it streams
                    // in; the upload is committed only by a Done whose tag
                    // verified. Everything else waits for its tag.
                    if let Ok(h) = f.parse() {
                        if h.message == Message::Data
                            && matches!(st.op, Op::Put { id, .. } if id == h.request_id)
                        {
                            st.rx_put = true;
                            st.rx_streamed = true;
                        }
                    }
                }
                Ok(Some(Event::Body(b))) => {
                    if let Some(t) = self.st.rx_tag.as_mut() {
                        t.update(b);
                    }
                    if self.st.rx_put {
                        self.st.put_body(dev, b);
                    }
                }
                Ok(Some(Event::End { tag })) => {
                    let st = &mut self.st;
                    st.rx_put = false;
                    let Some(builder) = st.rx_tag.take() else {
                        continue;
                    };
                    if !tag.is_some_and(|t| Opener::verify(builder, &t)) {
                        dev.stats.integrity_failures += 1;
                        st.fatal(
                            dev,
                            0,
                            ErrorCode::INTEGRITY,
                            "frame failed its integrity check (replayed, reordered, altered or cut); closing",
                        );
                        used = input.len();
                        break;
                    }
                    // Verified: act on it now (it stays readable in the
                    // decoder until more input is fed).
                    st.held = !st.rx_streamed;
                    st.rx_streamed = false;
                }
                Err(e) => {
                    dev.stats.bad_frames += 1;
                    let m = msg(format_args!("{e}"));
                    self.st.fatal(dev, 0, e.code(), m.as_str());
                    used = input.len();
                    break;
                }
            }
        }
        dev.stats.bytes_in += used as u64;
        if used > 0 {
            self.st.active_ms = now_ms;
        }
        used
    }

    /// Write bytes to send into `out`; returns how many. Call whenever the
    /// connection can take more, and again after [`handle_bytes`](Self::handle_bytes).
    pub fn poll_transmit<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        out: &mut [u8],
        now_ms: u64,
    ) -> usize {
        let mut n = 0;
        while n < out.len() {
            let st = &mut self.st;
            if st.tx_start < st.tx_end {
                let k = (st.tx_end - st.tx_start).min(out.len() - n);
                out[n..n + k].copy_from_slice(&st.tx.as_ref()[st.tx_start..st.tx_start + k]);
                st.tx_start += k;
                n += k;
                continue;
            }
            st.tx_start = 0;
            st.tx_end = 0;
            if st.body_left > 0 {
                n += st.body(dev, &mut out[n..]);
                continue;
            }
            if st.pending() {
                if self.unblock(dev, now_ms) {
                    continue;
                }
                break;
            }
            if st.phase != Phase::Open {
                break;
            }
            if !self.st.advance(dev) {
                break;
            }
        }
        dev.stats.bytes_out += n as u64;
        if n > 0 {
            self.st.active_ms = now_ms;
        }
        n
    }

    /// Send the deferred error or dispatch the held frame if there is room;
    /// returns whether it did.
    fn unblock<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        now_ms: u64,
    ) -> bool {
        if let Some(d) = self.st.deferred {
            if !self.st.room(REPLY_ROOM) {
                return false;
            }
            self.st.deferred = None;
            self.st.error(dev, d.id, d.code, d.message);
            return true;
        }
        if !self.st.held {
            return false;
        }
        let mem = self.mem();
        // An unsealed frame is dispatched at its header, a sealed one at its end.
        let Some(frame) = self.dec.frame().or_else(|| self.dec.ended_frame()) else {
            self.st.held = false;
            return true;
        };
        match self.st.dispatch(dev, frame, now_ms, mem) {
            Outcome::Blocked => false,
            Outcome::Done => {
                self.st.held = false;
                true
            }
            Outcome::SetLimits(l) => {
                self.st.held = false;
                self.dec.set_limits(l);
                true
            }
        }
    }
}

impl<B> State<B> {
    /// A held frame or a deferred error waits to be dispatched or sent.
    /// Nothing is said about a sealed frame being received (not even an
    /// upload error found in its body) before its tag verified.
    fn pending(&self) -> bool {
        self.held || (self.deferred.is_some() && self.rx_tag.is_none())
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> State<B> {
    /// Whether a reply of up to `need` bytes can be queued now.
    fn room(&mut self, need: usize) -> bool {
        if self.body_left > 0 {
            return false;
        }
        if self.tx_start > 0 {
            let (s, e) = (self.tx_start, self.tx_end);
            self.tx.as_mut().copy_within(s..e, 0);
            self.tx_end = e - s;
            self.tx_start = 0;
        }
        self.tx.as_ref().len() - self.tx_end >= need
    }

    /// Where frames may be encoded in the transmit buffer: from `tx_end` to
    /// the returned end, which leaves room for a tag on a sealed session.
    fn tx_limit(&self) -> usize {
        let reserve = if matches!(self.sec, Security::Sealed(_)) {
            TAG_LEN
        } else {
            0
        };
        self.tx
            .as_ref()
            .len()
            .saturating_sub(reserve)
            .max(self.tx_end)
    }

    /// A body-less frame was encoded (unsealed) at `tx[tx_end..tx_end + len]`
    /// by one of the encoders: on a sealed session set its SEALED flag
    /// (re-emitting the prefix and checksum) and append its tag; queue it.
    /// Room for the tag was kept by [`tx_limit`](Self::tx_limit).
    fn commit<S, C, K>(&mut self, dev: &mut Device<S, C, K>, len: usize) {
        let start = self.tx_end;
        if let Security::Sealed(keys) = &mut self.sec {
            let frame = &mut self.tx.as_mut()[start..start + len + TAG_LEN];
            let (prefix, rest) = frame.split_at_mut(PREFIX_LEN);
            let header = &rest[..len - PREFIX_LEN];
            let repr = PrefixRepr {
                version: VERSION,
                flags: Flags::SEALED,
                header_len: header.len() as u16,
                body_len: 0,
            };
            repr.emit(&mut Prefix::new_unchecked(&mut *prefix), header);
            let mut tag = keys.seal.begin(prefix);
            tag.update(header);
            let tag = tag.finish();
            frame[len..].copy_from_slice(&tag);
            self.tx_end += len + TAG_LEN;
        } else {
            self.tx_end += len;
        }
        dev.stats.frames_out += 1;
    }

    /// Queue a body-less frame (room was checked).
    fn push<S, C, K>(&mut self, dev: &mut Device<S, C, K>, h: &Header<'_>) {
        let (end, limit) = (self.tx_end, self.tx_limit());
        match encode_frame(h, &[], &mut self.tx.as_mut()[end..limit]) {
            Ok(f) => {
                let n = f.len();
                self.commit(dev, n);
            }
            Err(_) => {
                // Only an oversized reply can fail; say so instead.
                let e = Header::new(
                    h.request_id,
                    Message::Error {
                        code: ErrorCode::INTERNAL,
                        message: "reply does not fit the transmit buffer",
                    },
                );
                if let Ok(f) = encode_frame(&e, &[], &mut self.tx.as_mut()[end..limit]) {
                    let n = f.len();
                    self.commit(dev, n);
                    dev.stats.errors_sent += 1;
                }
            }
        }
    }

    /// Queue a frame head whose `body_len` bytes the running request
    /// supplies (through [`body`](Self::body), which also appends the tag on
    /// a sealed session).
    fn push_head<S, C, K>(
        &mut self,
        dev: &mut Device<S, C, K>,
        h: &Header<'_>,
        body_len: u64,
    ) -> bool {
        let (end, limit) = (self.tx_end, self.tx_limit());
        let flags = match self.sec {
            Security::Sealed(_) => Flags::SEALED,
            _ => Flags::empty(),
        };
        let n = match encode_head(h, body_len, flags, &mut self.tx.as_mut()[end..limit]) {
            Ok(f) => f.len(),
            Err(_) => return false,
        };
        if let Security::Sealed(keys) = &mut self.sec {
            let tag = keys.seal.begin(&self.tx.as_ref()[end..end + n]);
            self.tx_tag = Some(tag);
        }
        self.tx_end += n;
        self.body_left = body_len;
        dev.stats.frames_out += 1;
        if body_len == 0 {
            self.end_body();
        }
        true
    }

    /// The body of the frame in flight is out: append its tag, if sealed.
    fn end_body(&mut self) {
        if let Some(t) = self.tx_tag.take() {
            let tag = t.finish();
            let end = self.tx_end;
            if let Some(slot) = self.tx.as_mut().get_mut(end..end + TAG_LEN) {
                slot.copy_from_slice(&tag);
                self.tx_end += TAG_LEN;
            }
        }
    }

    fn error<S, C, K>(
        &mut self,
        dev: &mut Device<S, C, K>,
        id: u32,
        code: ErrorCode,
        message: &str,
    ) {
        dev.stats.errors_sent += 1;
        self.push(dev, &Header::new(id, Message::Error { code, message }));
    }

    /// Send Error (with request id `id`) and close once it is out.
    fn fatal<S: Store, C, K>(
        &mut self,
        dev: &mut Device<S, C, K>,
        id: u32,
        code: ErrorCode,
        message: &str,
    ) {
        self.abort_op(dev);
        self.held = false;
        self.deferred = None;
        self.rx_tag = None;
        self.rx_streamed = false;
        if self.room(REPLY_ROOM) {
            self.error(dev, id, code, message);
        } else {
            // A frame is half sent: the Error follows once its body is out.
            self.deferred = Some(Deferred {
                id,
                code,
                message: "connection failed; closing",
            });
        }
        self.phase = Phase::Closing;
    }

    fn abort_op<S: Store, C, K>(&mut self, dev: &mut Device<S, C, K>) {
        if let Op::Put { tmp, id, .. } = self.op {
            dev.store.discard(tmp);
            self.aborted = Some(id);
        }
        self.rx_put = false;
        if self.body_left == 0 {
            self.op = Op::Idle;
        } else if let Some(stop) = self.op.stop_mut() {
            *stop = Stop::Silent;
        }
    }

    /// Body bytes of an upload.
    fn put_body<S: Store, C, K>(&mut self, dev: &mut Device<S, C, K>, b: &[u8]) {
        let Op::Put {
            id,
            tmp,
            size,
            ref mut got,
            ref mut hasher,
            ..
        } = self.op
        else {
            self.rx_put = false;
            return;
        };
        let failure = if *got + b.len() as u64 > size {
            Some((
                ErrorCode::BAD_LENGTH,
                "upload data exceeds the announced size",
            ))
        } else if dev.store.write(tmp, *got, b).is_err() {
            Some((ErrorCode::IO, "store write failed; upload discarded"))
        } else {
            hasher.update(b);
            *got += b.len() as u64;
            None
        };
        if let Some((code, message)) = failure {
            dev.store.discard(tmp);
            self.op = Op::Idle;
            self.aborted = Some(id);
            self.rx_put = false;
            self.deferred = Some(Deferred { id, code, message });
        }
    }

    /// Supply body bytes of the frame in flight.
    fn body<S: Store, C, K>(&mut self, dev: &mut Device<S, C, K>, out: &mut [u8]) -> usize {
        let want = (out.len() as u64).min(self.body_left) as usize;
        let out = &mut out[..want];
        let n = match &mut self.op {
            Op::Get {
                file,
                pos,
                hasher,
                failed,
                ..
            } => {
                let k = if *failed {
                    0
                } else {
                    dev.store.read(*file, *pos, out).unwrap_or(0)
                };
                if k == 0 {
                    // The file vanished or the medium failed mid-frame: pad
                    // the frame, then end the request with an error.
                    *failed = true;
                    out.fill(0);
                    want
                } else {
                    hasher.update(&out[..k]);
                    *pos += k as u64;
                    k
                }
            }
            Op::Exec { out: o, err: e, .. } => {
                let seg = if o.0 < o.1 { o } else { e };
                let k = want.min(seg.1 - seg.0);
                out[..k].copy_from_slice(&self.out.as_ref()[seg.0..seg.0 + k]);
                seg.0 += k;
                k
            }
            // No request owes a body: pad (cannot happen).
            _ => {
                out.fill(0);
                want
            }
        };
        if let Some(t) = self.tx_tag.as_mut() {
            t.update(&out[..n]);
        }
        self.body_left -= n as u64;
        if self.body_left == 0 {
            self.end_body();
        }
        n
    }

    /// At a frame boundary with an empty tx buffer: queue the running
    /// request's next frame. Returns whether it did.
    fn advance<S: Store, C, K>(&mut self, dev: &mut Device<S, C, K>) -> bool {
        let chunk = u64::from(self.max_chunk);
        match &mut self.op {
            Op::Idle | Op::Put { .. } => false,
            Op::Exec {
                id,
                out,
                err,
                code,
                stop,
            } => {
                let (id, code, stop) = (*id, *code, *stop);
                let status = match stop {
                    Stop::Silent => {
                        self.op = Op::Idle;
                        return true;
                    }
                    Stop::Reply => Some(ExitStatus::Cancelled),
                    Stop::No if out.0 == out.1 && err.0 == err.1 => Some(ExitStatus::Code(code)),
                    Stop::No => None,
                };
                if let Some(status) = status {
                    self.op = Op::Idle;
                    self.push(dev, &Header::new(id, Message::Exit { status }));
                    return true;
                }
                let (stream, len) = if out.0 < out.1 {
                    (Stream::Stdout, out.1 - out.0)
                } else {
                    (Stream::Stderr, err.1 - err.0)
                };
                let len = (len as u64).min(chunk);
                self.push_head(dev, &Header::new(id, Message::Output { stream }), len)
            }
            Op::List {
                id,
                cursor,
                count,
                stop,
            } => {
                let id = *id;
                match *stop {
                    Stop::Silent => {
                        self.op = Op::Idle;
                        return true;
                    }
                    Stop::Reply => {
                        self.op = Op::Idle;
                        self.error(dev, id, ErrorCode::CANCELLED, "list cancelled");
                        return true;
                    }
                    Stop::No => {}
                }
                match dev.store.next(*cursor) {
                    Some(f) => {
                        *cursor = Some(f);
                        *count += 1;
                        if let Some(m) = dev.store.meta(f) {
                            let e = Entry {
                                name: m.name,
                                kind: EntryKind::File,
                                size: m.size,
                                modified: m.modified,
                            };
                            let h = Header::new(id, Message::ListEntry(e));
                            let (end, limit) = (self.tx_end, self.tx_limit());
                            if let Ok(f) = encode_frame(&h, &[], &mut self.tx.as_mut()[end..limit])
                            {
                                let n = f.len();
                                self.commit(dev, n);
                            }
                        }
                    }
                    None => {
                        let count = *count;
                        self.op = Op::Idle;
                        self.push(
                            dev,
                            &Header::new(
                                id,
                                Message::Done {
                                    bytes: count,
                                    sha256: None,
                                },
                            ),
                        );
                    }
                }
                true
            }
            Op::Get {
                id,
                size,
                pos,
                failed,
                stop,
                hasher,
                ..
            } => {
                let id = *id;
                if *failed {
                    self.op = Op::Idle;
                    self.error(dev, id, ErrorCode::IO, "file read failed during transfer");
                    return true;
                }
                match *stop {
                    Stop::Silent => {
                        self.op = Op::Idle;
                        return true;
                    }
                    Stop::Reply => {
                        self.op = Op::Idle;
                        self.error(dev, id, ErrorCode::CANCELLED, "download cancelled");
                        return true;
                    }
                    Stop::No => {}
                }
                if *pos < *size {
                    let n = (*size - *pos).min(chunk);
                    return self.push_head(dev, &Header::new(id, Message::Data), n);
                }
                let digest: [u8; 32] = hasher.clone().finalize().into();
                let bytes = *size;
                self.op = Op::Idle;
                dev.stats.files_sent += 1;
                self.push(
                    dev,
                    &Header::new(
                        id,
                        Message::Done {
                            bytes,
                            sha256: Some(digest),
                        },
                    ),
                );
                true
            }
        }
    }

    /// Act on one received frame (its body, if any, follows).
    fn dispatch<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        frame: Frame<'_>,
        now_ms: u64,
        mem: SessionMem,
    ) -> Outcome {
        let has_body = frame.prefix.body_len > 0;
        let need = REPLY_ROOM.max(frame.header.len() + PREFIX_LEN + 16 + TAG_LEN);
        let h = match frame.parse() {
            Ok(h) => h,
            Err(e) => {
                if !self.room(need) {
                    return Outcome::Blocked;
                }
                dev.stats.bad_frames += 1;
                let m = msg(format_args!("{e}"));
                match self.phase {
                    Phase::Hello => self.fatal(dev, 0, e.code(), m.as_str()),
                    Phase::Auth => self.auth_required(dev, e.request_id.unwrap_or(0)),
                    _ => self.error(dev, e.request_id.unwrap_or(0), e.code(), m.as_str()),
                }
                return Outcome::Done;
            }
        };
        let id = h.request_id;
        let kind = h.message.kind();

        if self.phase == Phase::Hello {
            if !self.room(need) {
                return Outcome::Blocked;
            }
            return self.hello(dev, &h, has_body, now_ms);
        }
        if self.phase == Phase::Auth {
            if !self.room(need) {
                return Outcome::Blocked;
            }
            let sealed = frame.prefix.flags.contains(Flags::SEALED);
            self.auth(dev, &h, has_body || sealed, now_ms);
            return Outcome::Done;
        }

        // Frames that need no reply of their own.
        match h.message {
            Message::Data if self.op.id() == Some(id) && matches!(self.op, Op::Put { .. }) => {
                self.rx_put = true;
                return Outcome::Done;
            }
            Message::Data | Message::Done { .. } if self.aborted == Some(id) => {
                return Outcome::Done;
            }
            Message::Cancel { target } if !matches!(self.op, Op::Put { .. }) => {
                if self.op.id() == Some(target) {
                    if let Some(stop) = self.op.stop_mut() {
                        if *stop == Stop::No {
                            *stop = Stop::Reply;
                        }
                    }
                }
                return Outcome::Done;
            }
            Message::Error { .. } => {
                // The client gave up on a request: end it without a reply.
                if self.op.id() == Some(id) {
                    if let Op::Put { tmp, .. } = self.op {
                        dev.store.discard(tmp);
                        self.aborted = Some(id);
                        self.op = Op::Idle;
                    } else if let Some(stop) = self.op.stop_mut() {
                        *stop = Stop::Silent;
                    }
                }
                return Outcome::Done;
            }
            _ => {}
        }

        if !self.room(need) {
            return Outcome::Blocked;
        }
        if has_body && kind != crate::message::Kind::Data {
            let m = msg(format_args!("{kind:?} frames carry no body"));
            self.error(dev, id, ErrorCode::UNEXPECTED, m.as_str());
            return Outcome::Done;
        }
        match h.message {
            Message::Ping { stamp } => {
                self.push(dev, &Header::new(id, Message::Pong { stamp }));
            }
            Message::Cancel { target } => {
                // The running request is an upload.
                if self.op.id() == Some(target) {
                    self.abort_op(dev);
                    self.error(
                        dev,
                        target,
                        ErrorCode::CANCELLED,
                        "upload cancelled and discarded",
                    );
                }
            }
            Message::Data => {
                self.error(
                    dev,
                    id,
                    ErrorCode::UNEXPECTED,
                    "Data for no upload in progress",
                );
            }
            Message::Done { bytes, sha256 } => match self.op {
                Op::Put { id: pid, .. } if pid == id => self.finish_put(dev, bytes, sha256, now_ms),
                _ => self.error(
                    dev,
                    id,
                    ErrorCode::UNEXPECTED,
                    "Done for no upload in progress",
                ),
            },
            Message::Hello(_) => {
                self.error(
                    dev,
                    id,
                    ErrorCode::UNEXPECTED,
                    "Hello was already exchanged",
                );
            }
            Message::Echo { .. }
            | Message::Time { .. }
            | Message::Exec(_)
            | Message::Stat { .. }
            | Message::List { .. }
            | Message::Get { .. }
            | Message::Put { .. }
            | Message::Remove { .. }
                if !matches!(self.op, Op::Idle) =>
            {
                let m = msg(format_args!(
                    "busy with request {} (one request at a time per connection)",
                    self.op.id().unwrap_or(0)
                ));
                self.error(dev, id, ErrorCode::BUSY, m.as_str());
            }
            Message::Echo { text } => {
                let (end, limit) = (self.tx_end, self.tx_limit());
                if let Ok(f) = encode_echo_reply(id, text, &mut self.tx.as_mut()[end..limit]) {
                    let n = f.len();
                    self.commit(dev, n);
                } else {
                    self.error(dev, id, ErrorCode::TOO_LARGE, "echo reply does not fit");
                }
            }
            Message::Time { format } => {
                let unix_ms = dev.time_ms(now_ms);
                let mut buf = [0u8; TIME_TEXT_MAX];
                match format_time(unix_ms, format, &mut buf) {
                    Some(text) => {
                        self.push(dev, &Header::new(id, Message::TimeReply { unix_ms, text }))
                    }
                    None => {
                        let m = msg(format_args!(
                            "formatted time longer than {TIME_TEXT_MAX} bytes"
                        ));
                        self.error(dev, id, ErrorCode::TOO_LARGE, m.as_str());
                    }
                }
            }
            Message::Exec(e) => self.exec(dev, id, &e.command, now_ms, mem),
            Message::Stat { path } => self.stat(dev, id, path),
            Message::List { path } => match normalize(path) {
                Ok(None) => {
                    self.op = Op::List {
                        id,
                        cursor: None,
                        count: 0,
                        stop: Stop::No,
                    }
                }
                Ok(Some(name)) if dev.store.find(name).is_some() => {
                    let m = msg(format_args!(
                        "not a directory: {name} (the root is the only one)"
                    ));
                    self.error(dev, id, ErrorCode::NOT_DIRECTORY, m.as_str());
                }
                Ok(Some(name)) => self.not_found(dev, id, name),
                Err(()) => self.refused(dev, id, path),
            },
            Message::Get { path, offset } => self.get(dev, id, path, offset),
            Message::Put {
                path,
                size,
                force,
                resume: _,
            } => self.put(dev, id, path, size, force),
            Message::Remove { path } => match normalize(path) {
                Ok(None) => self.error(
                    dev,
                    id,
                    ErrorCode::IS_DIRECTORY,
                    "cannot remove the root directory",
                ),
                Ok(Some(name)) => match dev.store.find(name) {
                    Some(f) => match dev.store.remove(f) {
                        Ok(()) => self.push(
                            dev,
                            &Header::new(
                                id,
                                Message::Done {
                                    bytes: 0,
                                    sha256: None,
                                },
                            ),
                        ),
                        Err(e) => {
                            let m = msg(format_args!("{e}"));
                            self.error(dev, id, e.code(), m.as_str());
                        }
                    },
                    None => self.not_found(dev, id, name),
                },
                Err(()) => self.refused(dev, id, path),
            },
            _ => {
                let m = msg(format_args!("{kind:?} is not a request this device serves"));
                self.error(dev, id, ErrorCode::UNEXPECTED, m.as_str());
            }
        }
        Outcome::Done
    }

    fn hello<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        h: &Header<'_>,
        has_body: bool,
        now_ms: u64,
    ) -> Outcome {
        let Message::Hello(hello) = &h.message else {
            let m = msg(format_args!(
                "expected Hello as the first frame, got {:?}",
                h.message.kind()
            ));
            self.fatal(dev, 0, ErrorCode::UNEXPECTED, m.as_str());
            return Outcome::Done;
        };
        if has_body {
            self.fatal(dev, 0, ErrorCode::UNEXPECTED, "Hello frames carry no body");
            return Outcome::Done;
        }
        let Security::Handshake(hs) = &mut self.sec else {
            self.fatal(dev, 0, ErrorCode::INTERNAL, "handshake state lost");
            return Outcome::Done;
        };
        if hs.needs_auth() {
            if let Some(wait) = dev.backoff.check(self.peer, now_ms) {
                dev.stats.backoff_refusals += 1;
                let m = msg(format_args!(
                    "authentication failed recently from {:?}; retry in {} ms",
                    self.peer, wait
                ));
                self.fatal(dev, 0, ErrorCode::BUSY, m.as_str());
                return Outcome::Done;
            }
        }
        let cfg = dev.config;
        let cap = self
            .header_buf
            .min(self.tx.as_ref().len().saturating_sub(TX_SLACK))
            .min(usize::from(u16::MAX)) as u16;
        let policy = ServerPolicy {
            max_header: cfg.max_header.min(cap),
            max_chunk: cfg.max_chunk,
            // The device seals but does not encrypt: never negotiate ENCRYPT.
            caps: Caps(cfg.caps.0 & !Caps::ENCRYPT.0),
            max_requests: 64,
            max_name: 255,
            max_path: 4095,
        };
        match hs.handle_hello(hello, &policy, self.nonce, cfg.agent) {
            Ok(ack) => {
                let keyed = hs.needs_auth();
                if keyed && !ack.caps.contains(Caps::SEAL) {
                    // Authentication without sealing would let anyone on
                    // the path take over the session after Auth.
                    self.fatal(
                        dev,
                        0,
                        ErrorCode::AUTH_REQUIRED,
                        "this device requires authentication with sealed frames (AUTH_PSK and SEAL)",
                    );
                    return Outcome::Done;
                }
                let limits = Limits {
                    max_header: ack.max_header,
                    max_body: u64::from(ack.max_chunk),
                };
                self.max_chunk = ack.max_chunk;
                self.push(dev, &Header::new(0, Message::HelloAck(ack)));
                if keyed {
                    self.phase = Phase::Auth;
                } else {
                    self.sec = Security::Plain;
                    self.phase = Phase::Open;
                }
                Outcome::SetLimits(limits)
            }
            Err(e) => {
                let m = msg(format_args!("{e}"));
                self.fatal(dev, 0, e.code(), m.as_str());
                Outcome::Done
            }
        }
    }

    fn auth_required<S: Store, C, K>(&mut self, dev: &mut Device<S, C, K>, id: u32) {
        self.fatal(
            dev,
            id,
            ErrorCode::AUTH_REQUIRED,
            "authenticate first: this device requires a pre-shared key",
        );
    }

    /// The frame after HelloAck on a keyed device: it must be a valid Auth.
    fn auth<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        h: &Header<'_>,
        body_or_sealed: bool,
        now_ms: u64,
    ) {
        let (Message::Auth(proof), false) = (&h.message, body_or_sealed) else {
            return self.auth_required(dev, h.request_id);
        };
        let Security::Handshake(hs) = &mut self.sec else {
            return self.fatal(dev, 0, ErrorCode::INTERNAL, "handshake state lost");
        };
        match hs.handle_auth(proof) {
            Ok((reply, keys)) => {
                dev.backoff.record_success(self.peer);
                // AuthOk is the last unsealed frame.
                self.push(dev, &Header::new(h.request_id, Message::AuthOk(reply)));
                self.sec = Security::Sealed(keys);
                self.phase = Phase::Open;
            }
            Err(HandshakeError::BadProof) => {
                dev.stats.auth_failures += 1;
                let wait = dev.backoff.record_failure(self.peer, now_ms);
                let m = msg(format_args!(
                    "authentication failed: the keys differ (next attempt in {wait} ms)"
                ));
                self.fatal(dev, h.request_id, ErrorCode::AUTH_FAILED, m.as_str());
            }
            Err(e) => {
                let m = msg(format_args!("{e}"));
                self.fatal(dev, h.request_id, e.code(), m.as_str());
            }
        }
    }

    fn not_found<S, C, K>(&mut self, dev: &mut Device<S, C, K>, id: u32, name: &str) {
        let m = msg(format_args!("no such file: {name}"));
        self.error(dev, id, ErrorCode::NOT_FOUND, m.as_str());
    }

    fn refused<S, C, K>(&mut self, dev: &mut Device<S, C, K>, id: u32, path: &str) {
        let m = msg(format_args!(
            "invalid path {path:?}: the store is flat (no subdirectories)"
        ));
        self.error(dev, id, ErrorCode::PATH_REFUSED, m.as_str());
    }

    fn stat<S: Store, C, K>(&mut self, dev: &mut Device<S, C, K>, id: u32, path: &str) {
        let entry = match normalize(path) {
            Ok(None) => Entry {
                name: "/",
                kind: EntryKind::Dir,
                size: 0,
                modified: 0,
            },
            Ok(Some(name)) => match dev.store.find(name).and_then(|f| dev.store.meta(f)) {
                Some(m) => Entry {
                    name,
                    kind: EntryKind::File,
                    size: m.size,
                    modified: m.modified,
                },
                None => return self.not_found(dev, id, name),
            },
            Err(()) => return self.refused(dev, id, path),
        };
        self.push(dev, &Header::new(id, Message::StatReply(entry)));
    }

    fn get<S: Store, C, K>(&mut self, dev: &mut Device<S, C, K>, id: u32, path: &str, offset: u64) {
        let name = match normalize(path) {
            Ok(Some(name)) => name,
            Ok(None) => {
                return self.error(dev, id, ErrorCode::IS_DIRECTORY, "cannot Get a directory");
            }
            Err(()) => return self.refused(dev, id, path),
        };
        let Some((file, meta)) = dev
            .store
            .find(name)
            .and_then(|f| Some((f, dev.store.meta(f)?)))
        else {
            return self.not_found(dev, id, name);
        };
        let (size, modified) = (meta.size, meta.modified);
        let start = if offset > size { 0 } else { offset };
        let mut hasher = Sha256::new();
        let mut prefix = None;
        if start > 0 {
            let mut at = 0u64;
            let scratch = self.out.as_mut();
            while at < start {
                let want = ((start - at) as usize).min(scratch.len());
                match dev.store.read(file, at, &mut scratch[..want]) {
                    Ok(k) if k > 0 => {
                        hasher.update(&scratch[..k]);
                        at += k as u64;
                    }
                    _ => return self.error(dev, id, ErrorCode::IO, "file read failed"),
                }
            }
            prefix = Some(hasher.clone().finalize().into());
        }
        self.push(
            dev,
            &Header::new(
                id,
                Message::FileInfo {
                    size,
                    modified,
                    offset: start,
                    prefix_sha256: prefix,
                },
            ),
        );
        self.op = Op::Get {
            id,
            file,
            size,
            pos: start,
            hasher,
            failed: false,
            stop: Stop::No,
        };
    }

    fn put<S: Store, C, K>(
        &mut self,
        dev: &mut Device<S, C, K>,
        id: u32,
        path: &str,
        size: u64,
        force: bool,
    ) {
        let name = match normalize(path) {
            Ok(Some(name)) => name,
            Ok(None) => {
                return self.error(
                    dev,
                    id,
                    ErrorCode::IS_DIRECTORY,
                    "cannot Put to the root directory",
                );
            }
            Err(()) => return self.refused(dev, id, path),
        };
        if !force && dev.store.find(name).is_some() {
            let m = msg(format_args!("{name} exists (use force to replace it)"));
            return self.error(dev, id, ErrorCode::EXISTS, m.as_str());
        }
        match dev.store.begin(name, size) {
            Ok(tmp) => {
                self.push(
                    dev,
                    &Header::new(
                        id,
                        Message::PutReady {
                            offset: 0,
                            prefix_sha256: None,
                        },
                    ),
                );
                self.aborted = None;
                self.op = Op::Put {
                    id,
                    tmp,
                    size,
                    got: 0,
                    hasher: Sha256::new(),
                    force,
                };
            }
            Err(e) => {
                let m = msg(format_args!("{e}"));
                self.error(dev, id, e.code(), m.as_str());
            }
        }
    }

    fn finish_put<S: Store, C: Clock, K>(
        &mut self,
        dev: &mut Device<S, C, K>,
        bytes: u64,
        sha256: Option<[u8; 32]>,
        now_ms: u64,
    ) {
        let Op::Put {
            id,
            tmp,
            size,
            got,
            ref hasher,
            force,
        } = self.op
        else {
            return;
        };
        let digest: [u8; 32] = hasher.clone().finalize().into();
        self.op = Op::Idle;
        let failure = if bytes != size || got != size {
            Some((
                ErrorCode::BAD_LENGTH,
                msg(format_args!(
                    "upload of {size} bytes ended after {got} (client says {bytes}); discarded"
                )),
            ))
        } else if sha256.is_none() {
            Some((
                ErrorCode::DIGEST_MISMATCH,
                msg(format_args!(
                    "the upload's Done must carry its SHA-256; discarded"
                )),
            ))
        } else if sha256 != Some(digest) {
            Some((
                ErrorCode::DIGEST_MISMATCH,
                msg(format_args!(
                    "SHA-256 of the received data does not match; discarded"
                )),
            ))
        } else {
            let modified = dev.clock.unix_ms(now_ms).map_or(0, |ms| ms / 1000);
            match dev.store.commit(tmp, modified, force) {
                Ok(()) => None,
                Err(e) => Some((e.code(), msg(format_args!("{e}")))),
            }
        };
        match failure {
            None => {
                dev.stats.files_stored += 1;
                self.push(
                    dev,
                    &Header::new(
                        id,
                        Message::Done {
                            bytes: size,
                            sha256: Some(digest),
                        },
                    ),
                );
            }
            Some((code, m)) => {
                dev.store.discard(tmp);
                self.error(dev, id, code, m.as_str());
            }
        }
    }

    fn exec<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        id: u32,
        command: &Command<'_>,
        now_ms: u64,
        mem: SessionMem,
    ) {
        let mut args = [""; MAX_ARGS];
        let argc = match command {
            Command::Argv(v) => collect_args(v.iter(), &mut args),
            Command::Shell(line) => collect_args(line.split_whitespace(), &mut args),
        };
        if argc > MAX_ARGS {
            let m = msg(format_args!("more than {MAX_ARGS} arguments"));
            return self.error(dev, id, ErrorCode::TOO_LARGE, m.as_str());
        }
        let args = &args[..argc];
        let Some(&program) = args.first().filter(|p| !p.is_empty()) else {
            return self.error(dev, id, ErrorCode::EXEC_FAILED, "empty command");
        };
        let extra = dev.config.extra_ram;
        let mut out = Output::new(self.out.as_mut());
        let (mut ctx, firmware) = dev.ctx(
            now_ms,
            MemReport {
                session: mem,
                extra,
            },
        );
        let code = commands::run(firmware, &mut ctx, args, &mut out);
        let Some(code) = code else {
            let m = msg(format_args!("no such command: {program} (try help)"));
            return self.error(dev, id, ErrorCode::EXEC_FAILED, m.as_str());
        };
        if out.truncated() {
            out.note_truncated();
        }
        let (o, e) = out.ranges();
        self.op = Op::Exec {
            id,
            out: (o.start, o.end),
            err: (e.start, e.end),
            code,
            stop: Stop::No,
        };
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

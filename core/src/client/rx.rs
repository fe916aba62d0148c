//! The client's input: decoding, checking seals and opening encrypted
//! frames, the handshake, and checking every reply against the request it
//! answers.
//!
//! An unsealed frame is acted on at its header, its body (Data, Output)
//! handed on as it streams in. A sealed frame's body is held in the frame
//! buffer and handed on once the tag verified; an encrypted frame is
//! collected whole there and opened first.

use sha2::{Digest as _, Sha256};

use crate::codec::{DecodeError, Event as DecEvent, Limits};
use crate::handshake::{HandshakeError, Opener, TagBuilder};
use crate::message::{Digest, ErrorCode, Header, Message, Stream};
use crate::outgoing::{self, Staging};
use crate::text::{text, Text};
use crate::wire::{Flags, PrefixRepr, TAG_LEN};

use super::event::{ConnError, Event, Origin, ReqId, ServerInfo};
use super::slot::{GetPhase, Op, PutPhase, Slot};
use super::{ClientConn, Phase, State};

/// What HelloAck announced.
#[derive(Debug, Clone, Default)]
pub(crate) struct Announced {
    pub agent: heapless::String<64>,
    pub caps: crate::message::Caps,
    pub max_header: u16,
    pub max_chunk: u32,
    pub max_requests: u16,
    pub max_name: u16,
    pub max_path: u16,
}

/// An event made outside `handle_bytes`, given by the next call.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Connected,
    PutStarted(ReqId, u64),
    Failed(ReqId, Origin, ErrorCode, Text),
    Closed(CloseWhy),
}

/// Why the connection is over, with the text when the engine made it.
#[derive(Debug, Clone)]
pub(crate) enum CloseWhy {
    Handshake(HandshakeError),
    NotTether(Text),
    Integrity(Text),
    Protocol(Text),
    Timeout,
    Stalled(u32),
}

/// Where the body of the frame being received goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Route {
    /// Nowhere (dropped; it still feeds the tag).
    #[default]
    Skip,
    /// Handed on as it streams in (unsealed).
    Stream(usize, BodyKind),
    /// Collected in the frame buffer (sealed or encrypted).
    Collect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Data,
    Output(Stream),
}

/// Receive state.
#[derive(Debug, Default)]
pub(crate) struct Rx {
    pub pending: Option<Pending>,
    pub timed_out: bool,
    route: Route,
    tag: Option<TagBuilder>,
    /// The frame being collected: its prefix and the bytes in the frame
    /// buffer so far.
    collect: Option<(PrefixRepr, usize)>,
    /// Frame-level text of the last Closed event.
    close_text: Text,
}

/// What stopped the input loop.
enum Stop {
    /// An unsealed frame's header arrived.
    Header,
    /// A sealed frame ended and verified.
    Sealed,
    /// An encrypted frame was opened.
    Opened,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, const N: usize> ClientConn<B, N> {
    /// Feed received bytes; returns how many were consumed and at most one
    /// event. Call again (with the rest) until it consumes nothing and
    /// gives no event. Events of transmit (an upload's start or failure)
    /// come from here too: call it after [`poll_transmit`](Self::poll_transmit)
    /// even with no new input.
    pub fn handle_bytes<'a>(&'a mut self, now: u64, input: &'a [u8]) -> (usize, Option<Event<'a>>) {
        if self.st.rx.timed_out && self.st.phase != Phase::Closed {
            self.st.rx.timed_out = false;
            let why = match self.st.phase {
                Phase::Open => CloseWhy::Stalled(self.st.cfg.stall_timeout_ms),
                _ => CloseWhy::Timeout,
            };
            self.st.phase = Phase::Closed;
            self.st.rx.pending = Some(Pending::Closed(why));
        }
        // Connected: the decoder takes on the negotiated limits.
        if let Some((limits, encryption)) = self.st.rx_limits() {
            self.dec.set_limits(limits);
            self.dec.set_encryption(encryption);
        }
        if self.st.rx.pending.is_some() {
            return (0, self.st.take_pending());
        }
        let mut used = 0;
        let stop = loop {
            if self.st.phase == Phase::Closed {
                return (input.len(), None);
            }
            if !self.start_collect() {
                return (used, None);
            }
            let (n, ev) = self.dec.handle_bytes(&input[used..]);
            used += n;
            if n > 0 {
                self.st.alive.received(now);
            }
            match ev {
                Ok(None) => return (used, None),
                Err(e) => {
                    self.st.decode_failed(e);
                    return (input.len(), self.st.take_pending());
                }
                Ok(Some(DecEvent::Header(f))) => {
                    if self.st.on_header(&f) {
                        break Stop::Header;
                    }
                }
                Ok(Some(DecEvent::Body(b))) => {
                    if let Some(ev) = self.st.on_body(b, &mut self.frame) {
                        return (used, Some(ev));
                    }
                }
                Ok(Some(DecEvent::End { tag })) => match self.st.on_end(tag, &mut self.frame) {
                    Some(s) => break s,
                    None if self.st.rx.pending.is_some() => return (used, self.st.take_pending()),
                    None => {}
                },
            }
        };
        let ev = match stop {
            Stop::Header => match self.dec.frame() {
                Some(f) => self.st.on_frame(&mut self.staging, f.header, None),
                None => None,
            },
            Stop::Sealed => {
                let body_len = self.st.rx.collect.take().map_or(0, |(_, n)| n);
                match (self.dec.ended_frame(), &self.frame) {
                    (Some(f), Some(buf)) => {
                        let body = &buf.as_ref()[..body_len];
                        self.st.on_frame(&mut self.staging, f.header, Some(body))
                    }
                    (Some(f), None) => self.st.on_frame(&mut self.staging, f.header, Some(&[])),
                    _ => None,
                }
            }
            Stop::Opened => {
                let (repr, len) = self.st.rx.collect.take().unwrap_or((
                    PrefixRepr {
                        version: 1,
                        flags: Flags::empty(),
                        header_len: 0,
                        body_len: 0,
                    },
                    0,
                ));
                let h = usize::from(repr.header_len);
                match &self.frame {
                    Some(buf) if len >= h => {
                        let (header, body) = buf.as_ref()[..len].split_at(h);
                        self.st.on_frame(&mut self.staging, header, Some(body))
                    }
                    _ => None,
                }
            }
        };
        match ev {
            Some(e) => (used, Some(e)),
            None => (used, self.st.take_pending()),
        }
    }

    /// An encrypted frame's header arrived: copy it to the frame buffer
    /// first (false if there is no buffer big enough: the connection fails).
    fn start_collect(&mut self) -> bool {
        let Some((repr, 0)) = self.st.rx.collect else {
            return true;
        };
        if !self.st.keys.as_ref().is_some_and(|k| k.encrypted()) {
            return true;
        }
        let need = usize::from(repr.header_len) + repr.body_len as usize;
        let (Some(buf), Some(f)) = (self.frame.as_mut(), self.dec.frame()) else {
            self.st
                .protocol(format_args!("an encrypted frame and no frame buffer"));
            return true;
        };
        match buf.as_mut().get_mut(..need) {
            Some(dst) => {
                dst[..f.header.len()].copy_from_slice(f.header);
                self.st.rx.collect = Some((repr, f.header.len()));
            }
            None => self
                .st
                .protocol(format_args!("a frame larger than negotiated")),
        }
        true
    }
}

impl<const N: usize> State<N> {
    pub(super) fn take_pending(&mut self) -> Option<Event<'_>> {
        let p = self.rx.pending.take()?;
        Some(match p {
            Pending::Connected => Event::Connected(self.info()),
            Pending::PutStarted(req, offset) => Event::PutStarted { req, offset },
            Pending::Failed(req, origin, code, t) => {
                self.rx.close_text = t;
                Event::Failed {
                    req,
                    origin,
                    code,
                    message: self.rx.close_text.as_str(),
                }
            }
            Pending::Closed(why) => {
                let kind = match &why {
                    CloseWhy::NotTether(_) => 1,
                    CloseWhy::Integrity(_) => 2,
                    _ => 3,
                };
                let err = match why {
                    CloseWhy::Handshake(e) => Some(ConnError::Handshake(e)),
                    CloseWhy::Timeout => Some(ConnError::Timeout),
                    CloseWhy::Stalled(ms) => Some(ConnError::Stalled(ms)),
                    CloseWhy::NotTether(t) | CloseWhy::Integrity(t) | CloseWhy::Protocol(t) => {
                        self.rx.close_text = t;
                        None
                    }
                };
                let s = self.rx.close_text.as_str();
                Event::Closed(err.unwrap_or(match kind {
                    1 => ConnError::NotTether(s),
                    2 => ConnError::Integrity(s),
                    _ => ConnError::Protocol(s),
                }))
            }
        })
    }

    fn info(&self) -> ServerInfo<'_> {
        let a = &self.server;
        ServerInfo {
            agent: &a.agent,
            caps: a.caps,
            max_header: a.max_header,
            max_chunk: a.max_chunk,
            max_requests: a.max_requests,
            max_name: a.max_name,
            max_path: a.max_path,
            authenticated: self.keys.is_some(),
            encrypted: self.keys.as_ref().is_some_and(|k| k.encrypted()),
        }
    }

    /// End the connection with an engine-made reason.
    fn close(&mut self, why: CloseWhy) {
        self.phase = Phase::Closed;
        self.rx.pending = Some(Pending::Closed(why));
    }

    pub(super) fn protocol(&mut self, args: core::fmt::Arguments<'_>) {
        self.close(CloseWhy::Protocol(text(args)));
    }

    fn integrity(&mut self, why: &str) {
        self.close(CloseWhy::Integrity(text(format_args!("{why}"))));
    }

    fn decode_failed(&mut self, e: DecodeError) {
        if self.phase == Phase::Hello {
            self.close(CloseWhy::NotTether(text(format_args!(
                "it answered with bytes that are not a tether frame: {e}"
            ))));
        } else {
            self.protocol(format_args!("{e}"));
        }
    }

    /// The limits and encryption the decoder takes on once connected.
    fn rx_limits(&mut self) -> Option<(Limits, bool)> {
        if self.phase != Phase::Open || self.limits_set {
            return None;
        }
        self.limits_set = true;
        Some((
            Limits {
                max_header: self.server.max_header,
                max_body: u64::from(self.server.max_chunk),
            },
            self.keys.as_ref().is_some_and(|k| k.encrypted()),
        ))
    }

    /// A frame's prefix and header arrived; returns whether to act on it now.
    fn on_header(&mut self, f: &crate::codec::Frame<'_>) -> bool {
        let prefix = f.prefix;
        self.rx.route = Route::Skip;
        let Some(keys) = self.keys.as_mut() else {
            if prefix.flags.contains(Flags::SEALED) && self.phase == Phase::Open {
                self.protocol(format_args!("a sealed frame on a session without keys"));
                return false;
            }
            return true;
        };
        if let Some(why) = keys.protection_fault(prefix.flags) {
            self.integrity(why);
            return false;
        }
        if keys.encrypted() {
            self.rx.route = Route::Collect;
            self.rx.collect = Some((prefix, 0));
            return false;
        }
        // The tag starts over the prefix and header as received.
        self.rx.tag = Some(keys.open.begin_frame(f));
        self.rx.route = Route::Collect;
        self.rx.collect = Some((prefix, 0));
        false
    }

    fn on_body<'i, B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        b: &'i [u8],
        frame: &mut Option<B>,
    ) -> Option<Event<'i>> {
        if let Some(t) = self.rx.tag.as_mut() {
            t.update(b);
        }
        match self.rx.route {
            Route::Skip => None,
            Route::Stream(i, kind) => self.streamed(i, kind, b),
            Route::Collect => {
                let (_, at) = self.rx.collect.as_mut()?;
                let dst = frame
                    .as_mut()
                    .and_then(|f| f.as_mut().get_mut(*at..*at + b.len()));
                match dst {
                    Some(d) => {
                        d.copy_from_slice(b);
                        *at += b.len();
                    }
                    None => self.protocol(format_args!("a frame body larger than negotiated")),
                }
                None
            }
        }
    }

    fn on_end<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tag: Option<[u8; TAG_LEN]>,
        frame: &mut Option<B>,
    ) -> Option<Stop> {
        self.rx.route = Route::Skip;
        if let Some(builder) = self.rx.tag.take() {
            if !tag.is_some_and(|t| Opener::verify(builder, &t)) {
                self.integrity("a frame failed its tag: replayed, reordered, altered or cut");
                return None;
            }
            return Some(Stop::Sealed);
        }
        let (repr, len) = self.rx.collect?;
        let keys = self.keys.as_mut()?;
        let cipher = keys.decrypt.as_mut()?;
        let data = frame.as_mut()?.as_mut().get_mut(..len)?;
        match tag {
            Some(t) if cipher.open_in_place(&repr, data, &t) => Some(Stop::Opened),
            _ => {
                self.integrity("a frame does not decrypt: replayed, reordered, altered or cut");
                None
            }
        }
    }
}

impl<const N: usize> State<N> {
    /// Act on one whole frame (its header, and its body when it was held
    /// until verified); returns the event it makes.
    fn on_frame<'h, B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tx: &mut Staging<B>,
        header: &'h [u8],
        body: Option<&'h [u8]>,
    ) -> Option<Event<'h>> {
        let h = match Header::parse(header) {
            Ok(h) => h,
            Err(e) => {
                if self.phase == Phase::Hello {
                    self.close(CloseWhy::NotTether(text(format_args!(
                        "its answer to Hello does not parse: {e}"
                    ))));
                } else {
                    self.protocol(format_args!("a frame's header does not parse: {e}"));
                }
                return None;
            }
        };
        match self.phase {
            Phase::Hello | Phase::Auth => self.handshake(tx, h),
            Phase::Open => self.reply(h, body),
            Phase::Idle | Phase::Closed => None,
        }
    }

    /// A reply of an open connection.
    fn reply<'h>(&mut self, h: Header<'h>, body: Option<&'h [u8]>) -> Option<Event<'h>> {
        if h.request_id == 0 {
            if let Message::Error { code, message } = h.message {
                self.phase = Phase::Closed;
                return Some(Event::Closed(ConnError::Server { code, message }));
            }
            if let Message::Pong { .. } = h.message {
                // The keepalive's answer: its bytes already counted.
                return None;
            }
            self.protocol(format_args!("{:?} with request id 0", h.message.kind()));
            return None;
        }
        let Some(i) = self.table.find(h.request_id) else {
            self.protocol(format_args!(
                "{:?} for request {}, which is not in flight",
                h.message.kind(),
                h.request_id
            ));
            return None;
        };
        let req = self.table.req(i);
        if let Message::Error { code, message } = h.message {
            return self.ended_by_error(i, code, message);
        }
        match (&self.table.slots[i].op, &h.message) {
            (Op::Exec, Message::Output { stream }) => self.body(i, BodyKind::Output(*stream), body),
            (Op::Get(_), Message::Data) => self.body(i, BodyKind::Data, body),
            (Op::Get(_), Message::FileInfo { .. }) | (Op::Get(_), Message::Done { .. }) => {
                self.get_reply(i, &h.message)
            }
            (Op::Put(_), Message::PutReady { .. }) | (Op::Put(_), Message::Done { .. }) => {
                self.put_reply(i, &h.message)
            }
            _ => self.simple_reply(i, req, h.message),
        }
    }

    /// A reply that is an event of its own.
    fn simple_reply<'h>(&mut self, i: usize, req: ReqId, m: Message<'h>) -> Option<Event<'h>> {
        let ev = match (&mut self.table.slots[i].op, m) {
            (Op::Ping, Message::Pong { stamp }) => Event::Pong { req, stamp },
            (Op::Echo, Message::EchoReply { text }) => Event::Echo { req, text },
            (Op::Time, Message::TimeReply { unix_ms, text }) => Event::Time { req, unix_ms, text },
            (Op::Exec, Message::Exit { status }) => Event::Exit { req, status },
            (Op::Stat, Message::StatReply(entry)) => Event::Entry { req, entry },
            (Op::List { count }, Message::ListEntry(entry)) => {
                *count += 1;
                return Some(Event::Entry { req, entry });
            }
            (Op::List { count }, Message::Done { bytes, .. }) => {
                if bytes != *count {
                    let c = *count;
                    self.protocol(format_args!(
                        "the listing's Done says {bytes} entries, {c} arrived"
                    ));
                    return None;
                }
                Event::Finished {
                    req,
                    bytes,
                    sha256: None,
                }
            }
            (Op::Remove, Message::Done { .. }) => Event::Finished {
                req,
                bytes: 0,
                sha256: None,
            },
            (_, m) => {
                self.protocol(format_args!(
                    "{:?} does not answer request {}",
                    m.kind(),
                    req.id
                ));
                return None;
            }
        };
        self.table.slots[i] = Slot::FREE;
        Some(ev)
    }

    /// A body frame's header (unsealed: stream what follows) or whole
    /// verified body.
    fn body<'h>(&mut self, i: usize, kind: BodyKind, body: Option<&'h [u8]>) -> Option<Event<'h>> {
        match body {
            None => {
                self.rx.route = Route::Stream(i, kind);
                None
            }
            Some(b) => self.streamed(i, kind, b),
        }
    }

    /// Body bytes of request `i`: counted and hashed (Get), handed on.
    fn streamed<'b>(&mut self, i: usize, kind: BodyKind, b: &'b [u8]) -> Option<Event<'b>> {
        let req = self.table.req(i);
        match (kind, &mut self.table.slots[i].op) {
            (BodyKind::Output(stream), Op::Exec) => Some(Event::Output {
                req,
                stream,
                bytes: b,
            }),
            (BodyKind::Data, Op::Get(g)) => match g.phase {
                GetPhase::Data => {
                    if g.got + b.len() as u64 > g.size {
                        let size = g.size;
                        self.protocol(format_args!(
                            "the server sent more than the announced {size} bytes"
                        ));
                        return None;
                    }
                    g.got += b.len() as u64;
                    g.hasher.update(b);
                    Some(Event::Data { req, bytes: b })
                }
                // A cancelled transfer's data is dropped.
                GetPhase::Mismatch => None,
                GetPhase::Info(_) => {
                    self.protocol(format_args!("Data before FileInfo"));
                    None
                }
            },
            _ => None,
        }
    }

    fn get_reply<'h>(&mut self, i: usize, m: &Message<'h>) -> Option<Event<'h>> {
        let req = self.table.req(i);
        let Op::Get(g) = &mut self.table.slots[i].op else {
            return None;
        };
        match (m, &mut g.phase) {
            (
                Message::FileInfo {
                    size,
                    modified,
                    offset,
                    prefix_sha256,
                },
                GetPhase::Info(held),
            ) => {
                let (size, modified, offset) = (*size, *modified, *offset);
                match (offset, held.take()) {
                    (0, _) => g.hasher = Sha256::new(),
                    (o, Some((have, prefix))) if o == have => {
                        let ours: Digest = prefix.clone().finalize().into();
                        if *prefix_sha256 != Some(ours) {
                            g.phase = GetPhase::Mismatch;
                            return None;
                        }
                        g.hasher = prefix;
                    }
                    (o, _) => {
                        self.protocol(format_args!(
                            "FileInfo starts at {o}, which is not where this side asked"
                        ));
                        return None;
                    }
                }
                if offset > size {
                    self.protocol(format_args!("FileInfo starts past the file's size"));
                    return None;
                }
                g.size = size;
                g.got = offset;
                g.phase = GetPhase::Data;
                Some(Event::GetStarted {
                    req,
                    size,
                    modified,
                    offset,
                })
            }
            (Message::Done { .. }, GetPhase::Mismatch) => {
                self.table.slots[i] = Slot::FREE;
                Some(Event::ResumeMismatch { req })
            }
            (Message::Done { bytes, sha256 }, GetPhase::Data) => {
                let digest: Digest = g.hasher.clone().finalize().into();
                let (size, got) = (g.size, g.got);
                self.table.slots[i] = Slot::FREE;
                if *bytes != size || got != size {
                    self.rx.pending = Some(Pending::Failed(
                        req,
                        Origin::Local,
                        ErrorCode::BAD_LENGTH,
                        text(format_args!(
                            "the server announced {size} bytes, sent {got}, and its Done says {bytes}; nothing was kept"
                        )),
                    ));
                    return None;
                }
                if *sha256 != Some(digest) {
                    self.rx.pending = Some(Pending::Failed(
                        req,
                        Origin::Local,
                        ErrorCode::DIGEST_MISMATCH,
                        text(format_args!(
                            "the SHA-256 of the bytes received differs from the server's; nothing was kept: run the get again"
                        )),
                    ));
                    return None;
                }
                Some(Event::Finished {
                    req,
                    bytes: size,
                    sha256: Some(digest),
                })
            }
            (m, _) => {
                self.protocol(format_args!("{:?} out of order in a Get", m.kind()));
                None
            }
        }
    }

    fn put_reply<'h>(&mut self, i: usize, m: &Message<'h>) -> Option<Event<'h>> {
        let req = self.table.req(i);
        let Op::Put(p) = &mut self.table.slots[i].op else {
            return None;
        };
        match (m, p.phase) {
            (
                Message::PutReady {
                    offset,
                    prefix_sha256,
                },
                PutPhase::Ready,
            ) => {
                if *offset == 0 {
                    p.phase = PutPhase::Sending;
                    return Some(Event::PutStarted { req, offset: 0 });
                }
                match (p.resume, prefix_sha256) {
                    (true, Some(theirs)) if *offset <= p.size => {
                        p.phase = PutPhase::Prefix {
                            offset: *offset,
                            theirs: *theirs,
                        };
                        None
                    }
                    _ => {
                        self.protocol(format_args!(
                            "PutReady at {offset} for an upload that does not resume there"
                        ));
                        None
                    }
                }
            }
            (Message::Done { bytes, sha256 }, PutPhase::Committing) => {
                let (size, sent) = (p.size, p.sent);
                self.table.slots[i] = Slot::FREE;
                if *bytes != size || *sha256 != sent {
                    self.protocol(format_args!(
                        "the server confirmed {bytes} bytes with another digest than the {size} sent"
                    ));
                    return None;
                }
                Some(Event::Finished {
                    req,
                    bytes: size,
                    sha256: *sha256,
                })
            }
            (m, _) => {
                self.protocol(format_args!("{:?} out of order in a Put", m.kind()));
                None
            }
        }
    }

    /// A request ended with the server's Error.
    fn ended_by_error<'h>(
        &mut self,
        i: usize,
        code: ErrorCode,
        message: &'h str,
    ) -> Option<Event<'h>> {
        let req = self.table.req(i);
        let quiet = match &self.table.slots[i].op {
            Op::Get(g) => matches!(g.phase, GetPhase::Mismatch),
            Op::Put(p) => matches!(p.phase, PutPhase::Mismatch | PutPhase::Abandoned),
            _ => false,
        };
        let mismatch = match &self.table.slots[i].op {
            Op::Get(g) => matches!(g.phase, GetPhase::Mismatch),
            Op::Put(p) => matches!(p.phase, PutPhase::Mismatch),
            _ => false,
        };
        self.table.slots[i] = Slot::FREE;
        if mismatch {
            return Some(Event::ResumeMismatch { req });
        }
        if quiet {
            return None;
        }
        Some(Event::Failed {
            req,
            origin: Origin::Server,
            code,
            message,
        })
    }

    /// HelloAck, Auth/AuthOk, or the server's refusal.
    fn handshake<'h, B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tx: &mut Staging<B>,
        h: Header<'h>,
    ) -> Option<Event<'h>> {
        match (self.phase, h.message) {
            (_, Message::Error { code, message }) => {
                self.phase = Phase::Closed;
                Some(Event::Closed(ConnError::Server { code, message }))
            }
            (Phase::Hello, Message::HelloAck(ack)) => {
                let hs = self.hs.as_mut()?;
                let r = hs.handle_hello_ack(&ack);
                let a = &mut self.server;
                a.agent.clear();
                let _ = a.agent.push_str(crate::text::clip(ack.agent, 64));
                a.caps = ack.caps;
                a.max_header = ack
                    .max_header
                    .min(self.header_cap.min(usize::from(u16::MAX)) as u16);
                a.max_chunk = ack.max_chunk;
                a.max_requests = ack.max_requests;
                a.max_name = ack.max_name;
                a.max_path = ack.max_path;
                match r {
                    Ok(Some(proof)) => {
                        let auth = Header::new(0, Message::Auth(proof));
                        if let Some(n) = outgoing::compose(None, tx.free(), &auth) {
                            tx.commit(n);
                        }
                        self.phase = Phase::Auth;
                        None
                    }
                    Ok(None) => self.connected(),
                    Err(HandshakeError::NotAuthenticated) if self.cfg.accept_unauthenticated => {
                        self.connected()
                    }
                    Err(e) => {
                        self.close(CloseWhy::Handshake(e));
                        None
                    }
                }
            }
            (Phase::Auth, Message::AuthOk(proof)) => {
                let hs = self.hs.as_mut()?;
                match hs.handle_auth_ok(&proof) {
                    Ok(keys) if !self.server.caps.contains(crate::message::Caps::SEAL) => {
                        let _ = keys;
                        self.protocol(format_args!(
                            "the server authenticated but does not seal frames"
                        ));
                        None
                    }
                    Ok(keys) => {
                        self.keys = Some(keys);
                        self.connected()
                    }
                    Err(e) => {
                        self.close(CloseWhy::Handshake(e));
                        None
                    }
                }
            }
            (Phase::Hello, m) => {
                self.close(CloseWhy::NotTether(text(format_args!(
                    "it answered Hello with {:?}",
                    m.kind()
                ))));
                None
            }
            (_, m) => {
                self.protocol(format_args!("expected AuthOk, got {:?}", m.kind()));
                None
            }
        }
    }

    fn connected<'h>(&mut self) -> Option<Event<'h>> {
        self.phase = Phase::Open;
        self.hs = None;
        self.rx.pending = Some(Pending::Connected);
        None
    }
}

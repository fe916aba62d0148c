//! Acting on a received frame: the handshake, then requests. Replies made
//! here go to the staging queue (the frame waits while there is no room).

use crate::codec::{Frame, Limits};
use crate::handshake::{HandshakeError, ServerPolicy};
use crate::message::{Caps, Command, Digest, ErrorCode, Header, Kind, Message};
use crate::text::{clip, text};
use crate::time::{format_time, TimeError, TIME_TEXT_MAX};
use crate::wire::{Flags, PrefixRepr, PREFIX_LEN, TAG_LEN};

use super::backend::{Backend, Count, End, Start};
use super::rx::Route;
use super::slot::{Exec, Get, GetPhase, Op, Put, PutFault, PutPhase, Slot};
use super::tx::{Security, Staging};
use super::{Fatal, Phase, State, MAX_ERROR_TEXT};
use crate::outgoing as tx;

/// Room kept in the staging queue for one Error reply.
const REPLY_ROOM: usize = PREFIX_LEN + TAG_LEN + 16 + MAX_ERROR_TEXT;

/// A reply made from a request's header is at most this much longer.
pub(super) const REPLY_SLACK: usize = PREFIX_LEN + TAG_LEN + 16;

/// What a client without the key is told.
pub(super) const AUTH_REQUIRED_TEXT: &str =
    "this server requires a key: authenticate with its pre-shared key";

/// A received frame as dispatch sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawFrame<'a> {
    pub prefix: PrefixRepr,
    pub header: &'a [u8],
    /// The whole body of an opened (encrypted) frame; `None` when the body
    /// streams after the header (or was streamed before the end).
    pub body: Option<&'a [u8]>,
}

impl<'a> RawFrame<'a> {
    pub(super) fn streaming(f: Frame<'a>) -> Self {
        RawFrame {
            prefix: f.prefix,
            header: f.header,
            body: None,
        }
    }
}

impl<const N: usize> State<N> {
    /// Act on one frame; `false` if there is no room to reply yet.
    pub(super) fn dispatch<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        f: RawFrame<'_>,
        tx: &mut Staging<B>,
        now: u64,
        bk: &mut K,
    ) -> bool {
        let need = REPLY_ROOM.max(f.header.len() + REPLY_SLACK);
        if !tx.has_room(need) {
            return false;
        }
        if self.phase == Phase::Open {
            if let Some(i) = self.upload_target(f.header) {
                if !self.created(i, tx, bk) {
                    return false;
                }
            }
        }
        match self.phase {
            Phase::Hello => self.on_hello(f, tx, now, bk),
            Phase::Auth => self.on_auth(f, tx, now, bk),
            Phase::Open => self.on_frame(f, tx, now, bk),
            Phase::Closed | Phase::Closing => {}
        }
        true
    }

    /// Queue a body-less reply (room was checked).
    pub(super) fn reply<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        h: &Header<'_>,
        bk: &mut K,
    ) {
        match tx::compose(self.sec.keys(), tx.free(), h) {
            Some(n) => {
                tx.commit(n);
                bk.count(Count::FrameOut);
            }
            None => {
                let e = Header::new(
                    h.request_id,
                    Message::Error {
                        code: ErrorCode::INTERNAL,
                        message: "the reply does not fit this server's buffers",
                    },
                );
                if let Some(n) = tx::compose(self.sec.keys(), tx.free(), &e) {
                    tx.commit(n);
                    bk.count(Count::FrameOut);
                    bk.count(Count::ErrorSent);
                }
            }
        }
    }

    /// Queue an Error reply.
    pub(super) fn error<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        code: ErrorCode,
        message: &str,
        bk: &mut K,
    ) {
        bk.count(Count::ErrorSent);
        let message = clip(message, MAX_ERROR_TEXT);
        self.reply(tx, &Header::new(id, Message::Error { code, message }), bk);
    }

    /// Send Error and close once it is out; every request ends.
    pub(super) fn fatal<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        code: ErrorCode,
        message: &str,
        bk: &mut K,
    ) {
        // Upload data that may have been tampered with is not kept.
        self.end_all_keeping(code != ErrorCode::INTEGRITY, bk);
        self.rx = super::rx::Rx::new();
        self.phase = Phase::Closing;
        if tx.has_room(REPLY_ROOM) {
            self.error(tx, id, code, message, bk);
        } else {
            self.fatal = Some(Fatal { id, code });
        }
    }

    /// End every request in flight (the connection is over).
    pub(super) fn end_all<K: Backend>(&mut self, bk: &mut K) {
        self.end_all_keeping(true, bk);
    }

    /// End every request in flight; uploads keep their partial if `keep`
    /// and the server resumes.
    fn end_all_keeping<K: Backend>(&mut self, keep: bool, bk: &mut K) {
        let resume = keep && self.cfg.caps.contains(Caps::RESUME);
        for i in 0..N {
            if self.table.slots[i].is_free() {
                continue;
            }
            let how = match self.table.slots[i].op {
                Op::Put(_) if !resume => End::Failed(ErrorCode::CANCELLED),
                _ => End::Interrupted(ErrorCode::CANCELLED),
            };
            self.finish(i, how, bk);
        }
    }

    /// Request `i` is over.
    pub(super) fn finish<K: Backend>(&mut self, i: usize, how: End, bk: &mut K) {
        let req = self.table.req(i);
        let was_put = matches!(self.table.slots[i].op, Op::Put(_));
        self.table.slots[i] = Slot::FREE;
        if was_put {
            self.table.upload_ended(req.id);
        }
        if matches!(self.rx.route, Route::Put(s) if s == i) {
            self.rx.route = Route::Skip;
        }
        bk.end(req, how);
    }

    fn on_hello<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        f: RawFrame<'_>,
        tx: &mut Staging<B>,
        now: u64,
        bk: &mut K,
    ) {
        let h = match Header::parse(f.header) {
            Ok(h) => h,
            Err(e) => {
                bk.count(Count::BadFrame);
                let t = text(format_args!("invalid Hello: {e}"));
                return self.fatal(tx, 0, e.code(), t.as_str(), bk);
            }
        };
        let sealed = f.prefix.flags.contains(Flags::SEALED);
        if matches!(h.message, Message::Hello(_)) && h.request_id != 0 {
            // The transcript hashes the Hello with id 0: a client that
            // hashed the id it sent would fail its Auth for no clear reason.
            let t = text(format_args!(
                "Hello must carry request id 0, not {}",
                h.request_id
            ));
            return self.fatal(tx, 0, ErrorCode::UNEXPECTED, t.as_str(), bk);
        }
        let (Message::Hello(hello), false, false) = (&h.message, f.prefix.body_len > 0, sealed)
        else {
            let t = text(format_args!(
                "expected Hello as the first frame, got {:?}{}",
                h.message.kind(),
                if sealed { " (sealed)" } else { "" }
            ));
            return self.fatal(tx, 0, ErrorCode::UNEXPECTED, t.as_str(), bk);
        };
        let policy = self.policy(hello.caps);
        let Security::Handshake(hs) = &mut self.sec else {
            return self.fatal(tx, 0, ErrorCode::INTERNAL, "handshake state lost", bk);
        };
        let ack = match hs.handle_hello(hello, &policy, self.nonce, self.cfg.agent) {
            Ok(ack) => ack,
            Err(HandshakeError::AuthRequired) => {
                return self.fatal(tx, 0, ErrorCode::AUTH_REQUIRED, AUTH_REQUIRED_TEXT, bk);
            }
            Err(e) => {
                let t = text(format_args!("handshake refused: {e}"));
                return self.fatal(tx, 0, e.code(), t.as_str(), bk);
            }
        };
        let keyed = hs.needs_auth();
        if keyed && !ack.caps.contains(Caps::SEAL) {
            return self.fatal(
                tx,
                0,
                ErrorCode::AUTH_REQUIRED,
                "this server seals every frame after authentication (AUTH_PSK and SEAL), and the client did not offer SEAL: update the client",
                bk,
            );
        }
        let _ = now;
        self.max_header = ack.max_header;
        self.max_chunk = ack.max_chunk;
        self.reply(tx, &Header::new(0, Message::HelloAck(ack)), bk);
        if keyed {
            // An unauthenticated peer keeps the handshake's 512 bytes.
            self.phase = Phase::Auth;
        } else {
            self.sec = Security::Plain;
            self.phase = Phase::Open;
            self.rx.decoder = Some((self.negotiated(), false));
        }
    }

    /// What this connection offers a client whose Hello has `client_caps`.
    fn policy(&self, client_caps: Caps) -> ServerPolicy {
        // An Echo's reply is as long as its request: it must fit the staging queue.
        let cap = self
            .header_cap
            .min(self.staging_cap.saturating_sub(REPLY_SLACK))
            .min(usize::from(u16::MAX))
            .min(self.cfg.max_header.into()) as u16;
        let mut caps = self.cfg.caps;
        let mut max_chunk = self.cfg.max_chunk;
        let encrypt = self.cfg.key.is_some()
            && client_caps.contains(Caps::ENCRYPT)
            && self.frame_cap.is_some();
        if !encrypt {
            caps = Caps(caps.0 & !Caps::ENCRYPT.0);
        } else if let Some(c @ 1..) = self.frame_cap {
            // A whole encrypted frame must fit the frame buffer.
            let room = c.saturating_sub(usize::from(cap)).min(u32::MAX as usize) as u32;
            max_chunk = max_chunk.min(room);
        }
        ServerPolicy {
            max_header: cap,
            max_chunk,
            caps,
            max_requests: N.min(usize::from(u16::MAX)) as u16,
            max_name: self.cfg.max_name,
            max_path: self.cfg.max_path,
        }
    }

    fn negotiated(&self) -> Limits {
        Limits {
            max_header: self.max_header,
            max_body: u64::from(self.max_chunk),
        }
    }

    /// The frame after HelloAck on a keyed server: it must be a valid Auth.
    fn on_auth<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        f: RawFrame<'_>,
        tx: &mut Staging<B>,
        now: u64,
        bk: &mut K,
    ) {
        let h = match Header::parse(f.header) {
            Ok(h) => h,
            Err(e) => {
                bk.count(Count::BadFrame);
                let id = e.request_id.unwrap_or(0);
                return self.fatal(tx, id, ErrorCode::AUTH_REQUIRED, AUTH_REQUIRED_TEXT, bk);
            }
        };
        let plain = f.prefix.body_len == 0 && !f.prefix.flags.contains(Flags::SEALED);
        let proof = match (&h.message, plain, h.request_id) {
            (Message::Auth(p), true, 0) => *p,
            _ => {
                return self.fatal(
                    tx,
                    h.request_id,
                    ErrorCode::AUTH_REQUIRED,
                    AUTH_REQUIRED_TEXT,
                    bk,
                )
            }
        };
        let Security::Handshake(hs) = &mut self.sec else {
            return self.fatal(tx, 0, ErrorCode::INTERNAL, "handshake state lost", bk);
        };
        match hs.handle_auth(&proof) {
            Ok((reply, keys)) => {
                bk.auth_succeeded(self.peer);
                // AuthOk is the last unsealed frame.
                self.reply(tx, &Header::new(0, Message::AuthOk(reply)), bk);
                let encrypted = keys.encrypted();
                self.sec = Security::Sealed(keys);
                self.phase = Phase::Open;
                self.rx.decoder = Some((self.negotiated(), encrypted));
            }
            Err(HandshakeError::BadProof) => {
                bk.count(Count::AuthFailure);
                let period = bk.auth_failed(self.peer, now);
                let t = match period {
                    Some(ms) => text(format_args!(
                        "authentication failed: the client's key differs from the server's; too many failures from {}: new connections are refused for {} s",
                        self.peer,
                        ms.div_ceil(1000)
                    )),
                    None => text(format_args!(
                        "authentication failed: the client's key differs from the server's"
                    )),
                };
                self.fatal(tx, 0, ErrorCode::AUTH_FAILED, t.as_str(), bk);
            }
            Err(e) => {
                let t = text(format_args!("authentication refused: {e}"));
                self.fatal(tx, 0, e.code(), t.as_str(), bk);
            }
        }
    }

    /// A frame of an open connection.
    fn on_frame<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        f: RawFrame<'_>,
        tx: &mut Staging<B>,
        now: u64,
        bk: &mut K,
    ) {
        let h = match Header::parse(f.header) {
            Ok(h) => h,
            Err(e) => {
                bk.count(Count::BadFrame);
                let t = text(format_args!("frame refused: {e}"));
                return self.error(tx, e.request_id.unwrap_or(0), e.code(), t.as_str(), bk);
            }
        };
        let id = h.request_id;
        let kind = h.message.kind();
        if matches!(self.sec, Security::Plain) && f.prefix.flags.contains(Flags::SEALED) {
            let t = text(format_args!(
                "a sealed {kind:?} frame on a session without keys (the server has no key, or authentication did not happen): its tag cannot be checked"
            ));
            return self.error(tx, id, ErrorCode::UNEXPECTED, t.as_str(), bk);
        }
        if f.prefix.body_len > 0 && !kind.has_body() {
            let t = text(format_args!("{kind:?} frames carry no body"));
            return self.error(tx, id, ErrorCode::UNEXPECTED, t.as_str(), bk);
        }
        match h.message {
            Message::Ping { stamp } => {
                self.reply(tx, &Header::new(id, Message::Pong { stamp }), bk)
            }
            Message::Echo { text } => self.echo(tx, id, text, bk),
            Message::Time { format } => self.time(tx, id, format, now, bk),
            Message::Cancel { target } => self.cancel(target, bk),
            Message::Data => self.data(tx, id, f.body, bk),
            Message::Done { bytes, sha256 } => self.upload_done(tx, id, bytes, sha256, bk),
            Message::Exec(e) => self.exec(tx, id, e.command, e.timeout_ms, now, bk),
            Message::Stat { path } => self.file_request(tx, id, Kind::Stat, path, 0, bk),
            Message::List { path } => self.file_request(tx, id, Kind::List, path, 0, bk),
            Message::Get { path, offset } => self.file_request(tx, id, Kind::Get, path, offset, bk),
            Message::Remove { path } => self.file_request(tx, id, Kind::Remove, path, 0, bk),
            Message::Put {
                path,
                size,
                force,
                resume,
            } => self.put(tx, id, path, size, force, resume, bk),
            Message::Hello(_) | Message::Auth(_) => {
                let t = text(format_args!("{kind:?} was already exchanged"));
                self.error(tx, id, ErrorCode::UNEXPECTED, t.as_str(), bk);
            }
            Message::Error { .. } => self.error(
                tx,
                id,
                ErrorCode::UNEXPECTED,
                "an Error frame is not a request (to stop a request, send Cancel)",
                bk,
            ),
            _ => {
                let t = text(format_args!(
                    "{kind:?} is a reply; a client does not send it"
                ));
                self.error(tx, id, ErrorCode::UNEXPECTED, t.as_str(), bk);
            }
        }
    }

    fn echo<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        text_in: &str,
        bk: &mut K,
    ) {
        let h = Header::new(id, Message::EchoReply { text: text_in });
        let len = text_in.len();
        let n = tx::compose_with(self.sec.keys(), tx.free(), &h, |hb| {
            let at = hb.len() - len;
            hb[at..].make_ascii_uppercase();
        });
        match n {
            Some(n) => {
                tx.commit(n);
                bk.count(Count::FrameOut);
            }
            None => self.error(
                tx,
                id,
                ErrorCode::TOO_LARGE,
                "the echo reply does not fit",
                bk,
            ),
        }
    }

    fn time<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        format: &str,
        now: u64,
        bk: &mut K,
    ) {
        let unix_ms = bk.time_ms(now);
        let mut buf = [0u8; TIME_TEXT_MAX];
        match format_time(unix_ms, format, &mut buf) {
            Ok(t) => self.reply(
                tx,
                &Header::new(id, Message::TimeReply { unix_ms, text: t }),
                bk,
            ),
            Err(e @ TimeError::BadFormat { .. }) => {
                let t = text(format_args!("{e}"));
                self.error(tx, id, ErrorCode::INVALID_HEADER, t.as_str(), bk);
            }
            Err(e) => {
                let t = text(format_args!("{e}"));
                self.error(tx, id, ErrorCode::TOO_LARGE, t.as_str(), bk);
            }
        }
    }

    /// A Cancel: no reply of its own; the target ends with its own.
    fn cancel<K: Backend>(&mut self, target: u32, bk: &mut K) {
        let Some(i) = self.table.find(target) else {
            return;
        };
        let req = self.table.req(i);
        let slot = &mut self.table.slots[i];
        match &mut slot.op {
            Op::List { cancelled, .. } | Op::Get { cancelled, .. } => {
                *cancelled = true;
                slot.wait = false;
            }
            Op::Exec(e) if e.killed.is_none() => {
                e.killed = Some(super::backend::Kill::Cancel);
                bk.kill(req, super::backend::Kill::Cancel);
            }
            Op::Put(p) if matches!(p.phase, PutPhase::Create | PutPhase::Receiving) => {
                p.phase = PutPhase::Fault(PutFault::Cancelled);
                slot.wait = false;
                if matches!(self.rx.route, Route::Put(s) if s == i) {
                    self.rx.route = Route::Skip;
                }
            }
            // Stat and Remove answer at once; a command already killed, an
            // upload committing or failing, ends on its own.
            _ => {}
        }
    }

    /// A new request: the id must be new and a slot free.
    fn admit<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        bk: &mut K,
    ) -> Option<usize> {
        if self.draining {
            self.error(
                tx,
                id,
                ErrorCode::BUSY,
                "the server is shutting down; try again later",
                bk,
            );
            return None;
        }
        if id == 0 {
            self.error(
                tx,
                id,
                ErrorCode::BAD_REQUEST_ID,
                "request id 0 is reserved for the handshake; number requests from 1",
                bk,
            );
            return None;
        }
        if self.table.find(id).is_some() {
            let t = text(format_args!(
                "request id {id} is in use by a request in flight"
            ));
            self.error(tx, id, ErrorCode::BAD_REQUEST_ID, t.as_str(), bk);
            return None;
        }
        let free = self.table.free_slot();
        if free.is_none() {
            let t = text(format_args!(
                "{N} requests are already in flight on this connection (max_requests); wait for one to end"
            ));
            self.error(tx, id, ErrorCode::BUSY, t.as_str(), bk);
        }
        free
    }

    fn exec<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        command: Command<'_>,
        timeout_ms: Option<u32>,
        now: u64,
        bk: &mut K,
    ) {
        let Some(i) = self.admit(tx, id, bk) else {
            return;
        };
        if let Err(r) = self.exec_allowed(&command) {
            let t = text(format_args!("{r}"));
            return self.error(tx, id, r.code(), t.as_str(), bk);
        }
        self.table.slots[i] = Slot {
            id,
            wait: false,
            op: Op::Exec(Exec {
                deadline: timeout_ms.map(|ms| now.saturating_add(u64::from(ms))),
                killed: None,
            }),
        };
        let req = self.table.req(i);
        bk.start(
            req,
            Start::Exec {
                command,
                timeout_ms,
            },
        );
    }

    /// The policy for commands: capabilities, the allow-list, an argv.
    fn exec_allowed<'c>(&self, command: &Command<'c>) -> Result<(), ExecRefusal<'c>> {
        let caps = self.cfg.caps;
        if !caps.contains(Caps::EXEC) {
            return Err(ExecRefusal::Disabled);
        }
        let argv = match command {
            Command::Shell(_)
                if !caps.contains(Caps::SHELL) || self.cfg.allowed_commands.is_some() =>
            {
                return Err(ExecRefusal::Shell);
            }
            Command::Shell(line) if line.trim().is_empty() => return Err(ExecRefusal::Empty),
            Command::Shell(_) => return Ok(()),
            Command::Argv(a) => a,
        };
        let program = argv.program().ok_or(ExecRefusal::Empty)?;
        match self.cfg.allowed_commands {
            Some(list) if !list.contains(&program) => Err(ExecRefusal::NotListed(program)),
            _ => Ok(()),
        }
    }

    /// Stat, List, Get and Remove: capabilities, the path, then the work.
    fn file_request<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        kind: Kind,
        path: &str,
        offset: u64,
        bk: &mut K,
    ) {
        let Some(i) = self.admit(tx, id, bk) else {
            return;
        };
        if kind == Kind::Remove && !self.cfg.caps.contains(Caps::WRITE) {
            return self.read_only(tx, id, bk);
        }
        if kind != Kind::Remove && !self.cfg.caps.contains(Caps::FILES) {
            return self.error(
                tx,
                id,
                ErrorCode::PERMISSION_DENIED,
                "this server does not serve files",
                bk,
            );
        }
        let file = matches!(kind, Kind::Get | Kind::Remove);
        let rel = match self.cfg.path_rules().check(path, file) {
            Ok(rel) => rel,
            Err(r) if kind == Kind::Remove && r.code == ErrorCode::IS_DIRECTORY => {
                return self.error(
                    tx,
                    id,
                    ErrorCode::PATH_REFUSED,
                    "the served root cannot be removed",
                    bk,
                );
            }
            Err(r) => {
                let t = text(format_args!("{r}"));
                return self.error(tx, id, r.code, t.as_str(), bk);
            }
        };
        let (op, work) = match kind {
            Kind::Stat => (Op::Stat, Start::Stat { path: rel }),
            Kind::List => (
                Op::List {
                    sent: 0,
                    cancelled: false,
                },
                Start::List { path: rel },
            ),
            Kind::Remove => (Op::Remove, Start::Remove { path: rel }),
            _ => (
                Op::Get {
                    get: Get {
                        phase: GetPhase::Open,
                        asked: offset,
                        size: 0,
                        modified: 0,
                        start: 0,
                        pos: 0,
                        hasher: Default::default(),
                    },
                    cancelled: false,
                },
                Start::Open { path: rel },
            ),
        };
        self.table.slots[i] = Slot {
            id,
            wait: false,
            op,
        };
        let req = self.table.req(i);
        bk.start(req, work);
        self.kick(i, tx, bk);
    }

    fn read_only<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        bk: &mut K,
    ) {
        self.error(
            tx,
            id,
            ErrorCode::READ_ONLY,
            "this server is read-only: uploads and removals are refused (downloads work)",
            bk,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn put<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        path: &str,
        size: u64,
        force: bool,
        resume: bool,
        bk: &mut K,
    ) {
        let Some(i) = self.admit(tx, id, bk) else {
            return;
        };
        if !self.cfg.caps.contains(Caps::WRITE) {
            return self.read_only(tx, id, bk);
        }
        let rel = match self.cfg.path_rules().check(path, true) {
            Ok(rel) => rel,
            Err(r) => {
                let t = text(format_args!("{r}"));
                return self.error(tx, id, r.code, t.as_str(), bk);
            }
        };
        self.table.slots[i] = Slot {
            id,
            wait: false,
            op: Op::Put(Put {
                phase: PutPhase::Create,
                size,
                start: 0,
                got: 0,
                hasher: Default::default(),
            }),
        };
        let resume = resume && self.cfg.caps.contains(Caps::RESUME);
        let req = self.table.req(i);
        bk.start(
            req,
            Start::Create {
                path: rel,
                size,
                force,
                resume,
            },
        );
        self.kick(i, tx, bk);
    }

    /// Data: upload bytes for a receiving upload, else refused (or dropped,
    /// for an upload that ended lately).
    fn data<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        body: Option<&[u8]>,
        bk: &mut K,
    ) {
        let found = self.table.find(id);
        let phase = found.and_then(|i| match &self.table.slots[i].op {
            Op::Put(p) => Some(p.phase),
            _ => None,
        });
        match (found, phase) {
            (Some(i), Some(PutPhase::Receiving)) => match body {
                Some(b) => self.upload_data(i, b, bk),
                None => self.rx.route = Route::Put(i),
            },
            (Some(i), Some(PutPhase::Create)) => {
                if let Op::Put(p) = &mut self.table.slots[i].op {
                    p.phase = PutPhase::Fault(PutFault::Early);
                }
                self.table.slots[i].wait = false;
            }
            // Ending already: the rest of its data is dropped.
            (Some(_), Some(PutPhase::Commit | PutPhase::Fault(_))) => {}
            (None, _) if self.table.recently_ended(id) => {}
            _ => {
                let t = text(format_args!(
                    "Data for request {id}, which is not an upload in progress on this connection"
                ));
                self.error(tx, id, ErrorCode::BAD_REQUEST_ID, t.as_str(), bk);
            }
        }
    }

    /// The client's Done of an upload: check length and digest, then commit.
    fn upload_done<B: AsRef<[u8]> + AsMut<[u8]>, K: Backend>(
        &mut self,
        tx: &mut Staging<B>,
        id: u32,
        bytes: u64,
        sha256: Option<Digest>,
        bk: &mut K,
    ) {
        let found = self.table.find(id);
        let Some((i, Op::Put(p))) = found.map(|i| (i, &mut self.table.slots[i].op)) else {
            if !self.table.recently_ended(id) {
                let t = text(format_args!(
                    "Done for request {id}, which is not an upload in progress on this connection"
                ));
                self.error(tx, id, ErrorCode::BAD_REQUEST_ID, t.as_str(), bk);
            }
            return;
        };
        match p.phase {
            PutPhase::Receiving => {}
            PutPhase::Create => {
                p.phase = PutPhase::Fault(PutFault::Early);
                self.table.slots[i].wait = false;
                return;
            }
            PutPhase::Commit | PutPhase::Fault(_) => return,
        }
        let digest: Digest = sha2::Digest::finalize(p.hasher.clone()).into();
        p.phase = if bytes != p.size || p.got != p.size {
            PutPhase::Fault(PutFault::Length { claimed: bytes })
        } else if sha256.is_none() {
            PutPhase::Fault(PutFault::NoDigest)
        } else if sha256 != Some(digest) {
            PutPhase::Fault(PutFault::Digest)
        } else {
            PutPhase::Commit
        };
        self.table.slots[i].wait = false;
        if self.table.slots[i].op_is_commit() {
            let req = self.table.req(i);
            let size = bytes;
            bk.start(
                req,
                Start::Commit {
                    size,
                    sha256: digest,
                },
            );
        }
        self.kick(i, tx, bk);
    }
}

/// Why a command is not run.
#[derive(Debug, Clone, Copy)]
enum ExecRefusal<'c> {
    Disabled,
    Shell,
    Empty,
    NotListed(&'c str),
}

impl ExecRefusal<'_> {
    fn code(&self) -> ErrorCode {
        match self {
            ExecRefusal::Disabled => ErrorCode::EXEC_DISABLED,
            ExecRefusal::Shell | ExecRefusal::NotListed(_) => ErrorCode::NOT_ALLOWED,
            ExecRefusal::Empty => ErrorCode::EXEC_FAILED,
        }
    }
}

impl core::fmt::Display for ExecRefusal<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ExecRefusal::Disabled => write!(f, "exec is disabled on this server (its operator can enable it)"),
            ExecRefusal::Shell => write!(
                f,
                "shell lines are refused here: run the program as an argv (tether exec HOST -- PROGRAM ARGS)"
            ),
            ExecRefusal::Empty => write!(f, "empty command: give a program to run"),
            ExecRefusal::NotListed(p) => write!(
                f,
                "'{}' is not on this server's allow-list; names must match exactly, paths included",
                clip(p, 64)
            ),
        }
    }
}

impl Slot {
    fn op_is_commit(&self) -> bool {
        matches!(
            self.op,
            Op::Put(Put {
                phase: PutPhase::Commit,
                ..
            })
        )
    }
}

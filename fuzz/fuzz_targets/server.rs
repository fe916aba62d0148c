//! The server engine (`server::ServerConn`) with the scripted asynchronous
//! backend of its unit tests (`core/src/server/test/script.rs`, included
//! here): unkeyed, keyed, or keyed and encrypted (first byte), with a
//! normal or a minimal staging queue. The input then chooses, op by op: raw
//! byte chunks; well-formed requests (Ping, Echo, Time, Stat, List, Get with
//! an offset, Put with resume, Exec of a program that prints, sleeps, fails
//! or exits 1, with a timeout, Remove, Cancel); upload Data and Done with the
//! right or a wrong digest; frames around arbitrary header bytes, sealed with
//! the real session keys or tampered (tag or body bit flipped, a sequence
//! number skipped, unsealed); the backend's next answers (ready, pending,
//! fail), requests held and released, `handle_ready`, files that shrink or
//! change, the clock and deadlines, `poll_transmit` buffer sizes (1 byte
//! up), and reconnections.
//!
//! Checked on every run: no panic (the backend panics on a broken contract:
//! a poll between Pending and handle_ready, a request started or ended
//! twice, upload bytes out of order, a commit whose size or digest is not
//! that of the bytes it was given); every byte the engine sends decodes as a
//! frame stream, with tags that verify after AuthOk and encrypted where
//! negotiated, and nothing after a fatal Error; `wants_transmit` and
//! `is_busy` are never false while `poll_transmit` sends; the engine never
//! stalls (it takes input or sends); a sealed frame whose tag fails gets no
//! reply and has no effect (nothing started, committed or killed), only a
//! fatal Error; nothing is committed without a Done, sent as a valid frame,
//! whose digest is that of the bytes the backend was given; every `start`
//! has exactly one `end` once the connection is closed; `poll_close` is true
//! after a fatal Error went out.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use tether_proto as tp;

#[path = "../../core/src/server/test/script.rs"]
mod script;

use script::{plain, sha, Answer, Call, Client, Fake, Rec};
use tp::message::{Argv, Command, Digest, ErrorCode, Exec};
use tp::server::{Buffers, Peer, ServerConfig, ServerConn};
use tp::{Caps, Header, Message};

const KEY: [u8; 32] = [0x5a; 32];
const N: usize = 3;
const MAX_RECONNECTS: u32 = 4;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn b(&mut self) -> u8 {
        self.u8().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.b()) | u16::from(self.b()) << 8
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// Errors with request id 0 after which the session must close.
const FATAL: [ErrorCode; 9] = [
    ErrorCode::BAD_FRAME,
    ErrorCode::UNSUPPORTED_VERSION,
    ErrorCode::UNKNOWN_FLAGS,
    ErrorCode::HEADER_TOO_LARGE,
    ErrorCode::BODY_TOO_LARGE,
    ErrorCode::INTEGRITY,
    ErrorCode::TIMEOUT,
    ErrorCode::AUTH_REQUIRED,
    ErrorCode::AUTH_FAILED,
];

struct H {
    conn: ServerConn<Vec<u8>, N>,
    bk: Fake,
    cl: Client,
    key: Option<[u8; 32]>,
    encrypt: bool,
    now: u64,
    tx_step: usize,
    reconnects: u32,
    /// Only whole frames were fed on this connection.
    clean: bool,
    /// Raw bytes were fed on this connection (they may hold frames).
    raw: bool,
    /// Done frames sent as valid frames on this connection: (id, bytes, digest).
    dones: Vec<(u32, u64, Digest)>,
    /// Commits already checked.
    commits_seen: usize,
    /// A fatal Error arrived on this connection.
    fatal: bool,
}

fn config(key: Option<[u8; 32]>, resume: bool) -> ServerConfig {
    let mut caps = Caps::EXEC
        .union(Caps::SHELL)
        .union(Caps::FILES)
        .union(Caps::WRITE)
        .union(Caps::ENCRYPT);
    if resume {
        caps = caps.union(Caps::RESUME);
    }
    ServerConfig {
        caps,
        key,
        max_header: 512,
        max_chunk: 512,
        max_name: 64,
        max_path: 128,
        ..ServerConfig::default()
    }
}

impl H {
    fn new(mode: u8) -> H {
        let key = (mode & 1 != 0).then_some(KEY);
        let encrypt = key.is_some() && mode & 2 != 0;
        let cfg = config(key, mode & 4 == 0);
        // A minimal staging queue: the engine's control room (266 bytes).
        let staging = if mode & 8 != 0 { 266 } else { 2048 };
        // Without a frame buffer ENCRYPT is not offered (to unkeyed peers).
        let frame = (encrypt || mode & 16 == 0).then(|| vec![0u8; 1024 + 512]);
        let conn = ServerConn::new(
            cfg,
            Buffers {
                header: vec![0; 512],
                staging: vec![0; staging],
                frame,
            },
        );
        let mut bk = Fake::new();
        bk.files.insert("a".into(), Vec::new());
        bk.files.insert("b".into(), (0..100u8).collect());
        bk.files
            .insert("c".into(), (0..3000u32).map(|i| (i * 7) as u8).collect());
        bk.partials.insert("p".into(), vec![0x33; 50]);
        H {
            conn,
            bk,
            cl: Client::new(key, encrypt, 4096, 4096),
            key,
            encrypt,
            now: 0,
            tx_step: 700,
            reconnects: 0,
            clean: true,
            raw: false,
            dones: Vec::new(),
            commits_seen: 0,
            fatal: false,
        }
    }

    /// One poll_transmit; what comes out is checked.
    fn pump(&mut self) -> usize {
        let wants = self.conn.wants_transmit();
        let busy = self.conn.is_busy();
        let mut buf = vec![0u8; self.tx_step.max(1)];
        let n = self.conn.poll_transmit(self.now, &mut buf, &mut self.bk);
        assert!(n <= buf.len());
        assert!(
            n == 0 || wants,
            "wants_transmit was false, then {n} bytes were sent"
        );
        assert!(
            n == 0 || busy,
            "is_busy was false, then {n} bytes were sent"
        );
        if n == 0 {
            return 0;
        }
        if let Err(e) = self.cl.feed(&buf[..n]) {
            panic!("{e}");
        }
        for r in self.cl.take() {
            assert!(!self.fatal, "a frame after the fatal Error: {:?}", r.head());
            if let (0, Some(code)) = (r.id(), r.error()) {
                self.fatal |= FATAL.contains(&code);
            }
        }
        n
    }

    fn wake(&mut self) -> usize {
        let ready = self.bk.take_ready();
        for r in &ready {
            self.conn.handle_ready(*r);
        }
        ready.len()
    }

    /// Send and wake until nothing moves.
    fn settle(&mut self) {
        let mut rounds = 0;
        while self.pump() + self.wake() > 0 {
            rounds += 1;
            assert!(rounds < 1_000_000, "endless output");
        }
    }

    /// Feed bytes; the engine must take input or send.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.conn.handle_bytes(self.now, bytes, &mut self.bk);
            assert!(n <= bytes.len());
            bytes = &bytes[n..];
            if n == 0 {
                let moved = self.pump() + self.wake();
                assert!(
                    moved > 0,
                    "stalled: the engine takes no input and sends nothing"
                );
            }
        }
    }

    /// A frame sent as a valid frame (sealed when the session is): a Done
    /// in it may commit.
    fn send_valid(&mut self, h: &Header<'_>, body: &[u8]) {
        if let Message::Done {
            bytes,
            sha256: Some(d),
        } = h.message
        {
            self.dones.push((h.request_id, bytes, d));
        }
        let f = self.cl.frame(h, body);
        self.feed(&f);
    }

    fn connect(&mut self) {
        self.conn.handle_close(&mut self.bk);
        self.check_closed();
        let nonce = [self.reconnects as u8 + 4; 16];
        self.conn
            .handle_accept(self.now, Peer::ipv4([10, 0, 0, 1]), nonce, &mut self.bk);
        self.cl = Client::new(self.key, self.encrypt, 4096, 4096);
        self.clean = true;
        self.raw = false;
        self.dones.clear();
        self.fatal = false;
        let hello = self.cl.hello();
        self.feed(&hello);
        self.settle();
        if let Some(proof) = self.cl.auth.take() {
            self.feed(&plain(&Header::new(0, Message::Auth(proof)), &[]));
            self.settle();
            assert!(
                self.cl.keys.is_some() || self.conn.poll_close(),
                "the right key did not authenticate"
            );
        }
        if self.encrypt && self.cl.keys.is_some() {
            assert!(self.conn.is_encrypted());
        }
    }

    /// Every request started on the closed connection ended once.
    fn check_closed(&mut self) {
        if let Err(e) = self.bk.check_ends() {
            panic!("{e}");
        }
        assert!(self.bk.live().is_empty());
    }

    /// Nothing was committed without a valid Done with its digest.
    fn check_commits(&mut self) {
        for c in &self.bk.commits[self.commits_seen..] {
            let forged = self.raw && self.key.is_none();
            assert!(
                forged || self.dones.contains(&(c.req.id, c.size, c.sha256)),
                "committed {c:?} without a Done of that digest: {:?}",
                self.dones
            );
        }
        self.commits_seen = self.bk.commits.len();
    }

    fn id(&mut self, inp: &mut Input<'_>) -> u32 {
        u32::from(inp.b() % 5)
    }

    fn path(inp: &mut Input<'_>) -> &'static str {
        ["a", "b", "c", "p", "", "nope", "../x", "d/e"][usize::from(inp.b() % 8)]
    }

    /// A well-formed request.
    fn request(&mut self, inp: &mut Input<'_>) {
        let k = inp.b();
        let id = self.id(inp);
        let path = Self::path(inp);
        let mut argv = [0u8; 64];
        match k % 11 {
            0 => self.send_valid(&Header::new(id, Message::Ping { stamp: 5 }), &[]),
            1 => self.send_valid(&Header::new(id, Message::Echo { text: "abc" }), &[]),
            2 => self.send_valid(&Header::new(id, Message::Time { format: "%F" }), &[]),
            3 => self.send_valid(&Header::new(id, Message::Stat { path }), &[]),
            4 => self.send_valid(&Header::new(id, Message::List { path }), &[]),
            5 => {
                let offset = u64::from(inp.u16()) % 3200;
                self.send_valid(&Header::new(id, Message::Get { path, offset }), &[])
            }
            6 => {
                let size = u64::from(inp.u16()) % 2000;
                let f = inp.b();
                let h = Header::new(
                    id,
                    Message::Put {
                        path,
                        size,
                        force: f & 1 != 0,
                        resume: f & 2 != 0,
                    },
                );
                self.send_valid(&h, &[])
            }
            7 => {
                let prog = ["echo", "sleep", "fail", "false"][usize::from(k >> 4) % 4];
                let args: &[&str] = match k >> 6 {
                    0 => &[prog],
                    1 => &[prog, "out"],
                    2 => &[prog, "a long line of output for a small buffer", "e:err"],
                    _ => &[prog, "e:only stderr"],
                };
                let argv = Argv::join(args, &mut argv).expect("fits");
                let timeout_ms = (k & 8 != 0).then(|| u32::from(inp.u16()));
                let h = Header::new(
                    id,
                    Message::Exec(Exec {
                        command: Command::Argv(argv),
                        timeout_ms,
                    }),
                );
                self.send_valid(&h, &[])
            }
            8 => self.send_valid(&Header::new(id, Message::Remove { path }), &[]),
            9 => {
                let target = self.id(inp);
                self.send_valid(&Header::new(0, Message::Cancel { target }), &[])
            }
            _ => {
                // Data for an upload: pattern bytes, within the chunk limit.
                let len = usize::from(inp.u16()) % 600;
                let body: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
                self.send_valid(&Header::new(id, Message::Data), &body)
            }
        }
    }

    /// Done for an upload: the digest of what the backend was given, or a
    /// wrong one, with the right or a wrong length.
    fn done(&mut self, inp: &mut Input<'_>) {
        let id = self.id(inp);
        let how = inp.b();
        let (len, digest) = match self.bk.upload_bytes(id) {
            Some(d) => (d.len() as u64, sha(d)),
            None => (u64::from(how), [how; 32]),
        };
        let mut bytes = len;
        let mut digest = Some(digest);
        match how % 8 {
            0 => digest = Some([1; 32]),
            1 => digest = None,
            2 => bytes += 1,
            _ => {}
        }
        // The announced size, when the upload is complete, is what counts.
        if how & 0x80 != 0 {
            bytes = u64::from(inp.u16());
        }
        self.send_valid(
            &Header::new(
                id,
                Message::Done {
                    bytes,
                    sha256: digest,
                },
            ),
            &[],
        );
    }

    /// A frame around fuzzed header bytes, valid or tampered.
    fn fuzzed_frame(&mut self, inp: &mut Input<'_>, op: u8) {
        let hlen = usize::from(inp.b()).max(1);
        let header = inp.take(hlen).to_vec();
        let header = if header.is_empty() { vec![0u8] } else { header };
        let blen = usize::from(inp.u16()) % 700;
        let body = inp.take(blen).to_vec();
        let tamper = if op & 0x80 != 0 { inp.b() & 7 } else { 0 };
        let sealed_session = self.cl.keys.is_some();
        if tamper == 0 || !sealed_session {
            let seal = sealed_session != (tamper & 1 != 0);
            if seal == sealed_session {
                self.note_done(&header);
            }
            let f = self.cl.raw(&header, &body, seal);
            self.feed(&f);
            return;
        }
        // A sealed session meets an altered, replayed or unsealed frame:
        // no reply, no effect, a fatal Error and a close.
        // Quiet first: what comes out next answers this frame.
        self.settle();
        let check =
            self.clean && !self.fatal && !self.conn.poll_close() && self.conn.is_authenticated();
        let live: BTreeSet<u32> = self.bk.live().iter().map(|r| r.id).collect();
        let log_at = self.bk.log.len();
        let f = match tamper {
            1 => self.cl.raw(&header, &body, false),
            2 | 6 => {
                self.cl.skip_seq();
                self.cl.raw(&header, &body, true)
            }
            4 => {
                // Valid once: its replay is the tampered frame.
                self.note_done(&header);
                self.cl.raw(&header, &body, true)
            }
            _ => {
                let mut f = self.cl.raw(&header, &body, true);
                let i = usize::from(inp.b()) % (body.len() + 16);
                let at = f.len() - 16 - body.len() + i;
                f[at] ^= 1 << (inp.b() % 8);
                f
            }
        };
        let replay = tamper == 4;
        if replay {
            // The first one is valid: send it, then the same bytes again.
            self.feed(&f);
            if !check || self.conn.poll_close() {
                return;
            }
            self.settle();
        }
        let live_now: BTreeSet<u32> = self.bk.live().iter().map(|r| r.id).collect();
        let log_now = self.bk.log.len();
        let (live, log_at) = if replay {
            (live_now, log_now)
        } else {
            (live, log_at)
        };
        let mut got = Vec::new();
        self.feed(&f);
        // Collect what comes out now.
        let mut rounds = 0;
        loop {
            let wants = self.conn.wants_transmit();
            let mut buf = vec![0u8; self.tx_step.max(1)];
            let n = self.conn.poll_transmit(self.now, &mut buf, &mut self.bk);
            assert!(
                n == 0 || wants,
                "wants_transmit was false, then {n} bytes were sent"
            );
            if let Err(e) = self.cl.feed(&buf[..n]) {
                panic!("{e}");
            }
            got.extend(self.cl.take());
            if n == 0 && self.wake() == 0 {
                break;
            }
            rounds += 1;
            assert!(rounds < 1_000_000);
        }
        if !check {
            for r in &got {
                if let (0, Some(code)) = (r.id(), r.error()) {
                    self.fatal |= FATAL.contains(&code);
                }
            }
            return;
        }
        for r in &got[..got.len().saturating_sub(1)] {
            let h = r.head();
            assert!(
                live.contains(&h.request_id)
                    && !matches!(
                        h.message,
                        Message::Pong { .. }
                            | Message::EchoReply { .. }
                            | Message::TimeReply { .. }
                    ),
                "a reply to a frame whose tag failed (tamper {tamper}): {h:?}"
            );
        }
        let last = got.last().map(|r| (r.id(), r.error()));
        assert!(
            matches!(last, Some((0, Some(c))) if FATAL.contains(&c)),
            "a frame whose tag failed (tamper {tamper}) did not end the session: {last:?} (header {} bytes, body {}, closing {}, open {}, queued {}, wants {}, fatal {}, in flight {})",
            header.len(),
            body.len(),
            self.conn.poll_close(),
            self.conn.is_open(),
            self.conn.queued(),
            self.conn.wants_transmit(),
            self.fatal,
            self.conn.in_flight()
        );
        self.fatal = true;
        for r in &self.bk.log[log_at..] {
            let ok = match r {
                Rec::End(..) => true,
                Rec::Start(q, s) => {
                    live.contains(&q.id)
                        && (s.starts_with("HashPrefix") || s.starts_with("CheckUnchanged"))
                }
                Rec::Kill(..) => false,
            };
            assert!(
                ok,
                "a frame whose tag failed (tamper {tamper}) had an effect: {r:?}"
            );
        }
        assert!(self.conn.poll_close(), "not closing after the fatal Error");
    }

    /// A Done in these header bytes, sent as a valid frame, may commit.
    fn note_done(&mut self, header: &[u8]) {
        if let Ok(Header {
            request_id,
            message:
                Message::Done {
                    bytes,
                    sha256: Some(d),
                },
        }) = Header::parse(header)
        {
            self.dones.push((request_id, bytes, d));
        }
    }

    /// A whole upload with the right digest (or a wrong one).
    fn upload(&mut self, inp: &mut Input<'_>) {
        let id = self.id(inp);
        let path = Self::path(inp);
        let size = usize::from(inp.u16()) % 1500;
        let flags = inp.b();
        self.send_valid(
            &Header::new(
                id,
                Message::Put {
                    path,
                    size: size as u64,
                    force: true,
                    resume: flags & 1 != 0,
                },
            ),
            &[],
        );
        self.settle();
        let Some(have) = self.bk.upload_bytes(id).map(<[u8]>::len) else {
            return;
        };
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        let mut at = have.min(size);
        let chunk = 1 + usize::from(flags >> 2) * 8;
        while at < size {
            let end = (at + chunk).min(size).min(at + 512);
            let body = data[at..end].to_vec();
            self.send_valid(&Header::new(id, Message::Data), &body);
            at = end;
        }
        let digest = match self.bk.upload_bytes(id) {
            Some(d) if flags & 2 == 0 => sha(d),
            _ => [9; 32],
        };
        self.send_valid(
            &Header::new(
                id,
                Message::Done {
                    bytes: size as u64,
                    sha256: Some(digest),
                },
            ),
            &[],
        );
    }

    fn run(&mut self, inp: &mut Input<'_>) {
        self.connect();
        while let Some(op) = inp.u8() {
            match op % 12 {
                0 => {
                    let len = usize::from(inp.b()) * (1 + usize::from(op >> 6));
                    let bytes = inp.take(len).to_vec();
                    self.clean &= bytes.is_empty();
                    self.raw |= !bytes.is_empty();
                    self.feed(&bytes);
                }
                1 | 2 => self.request(inp),
                3 => self.done(inp),
                4 => self.fuzzed_frame(inp, op),
                5 => {
                    for _ in 0..=(op >> 4) {
                        let a = match inp.b() % 5 {
                            0 | 1 => Answer::Ready,
                            2 | 3 => Answer::Pending,
                            _ => Answer::Fail,
                        };
                        self.bk.answers.push_back(a);
                    }
                }
                6 => {
                    if op & 0x10 != 0 {
                        self.settle();
                    } else {
                        self.wake();
                    }
                }
                7 => {
                    self.now += u64::from(inp.u16()) * u64::from(1 + (op >> 4));
                    self.conn.handle_timeout(self.now, &mut self.bk);
                }
                8 => {
                    self.tx_step = match op >> 5 {
                        0..=3 => usize::from(inp.b() % 16) + 1,
                        4 | 5 => usize::from(inp.b()) * 8 + 1,
                        _ => 4096,
                    };
                    self.pump();
                }
                9 => {
                    // A file changes or shrinks under a reader; a failure is injected.
                    let b = inp.b();
                    let id = self.id(inp);
                    match b % 4 {
                        0 => {
                            if let Some(f) = self.bk.files.get_mut("c") {
                                f.truncate(usize::from(b) * 8);
                            }
                        }
                        1 => {
                            if let Some(f) = self.bk.files.get_mut("c") {
                                if let Some(x) = f.first_mut() {
                                    *x ^= 1;
                                }
                            }
                        }
                        2 => {
                            let call = [
                                Call::Read,
                                Call::Write,
                                Call::Commit,
                                Call::Create,
                                Call::Exec,
                            ][usize::from(b >> 2) % 5];
                            self.bk.fail.insert((id, call));
                        }
                        _ => self.bk.fail.clear(),
                    }
                }
                10 => {
                    let id = self.id(inp);
                    if op & 0x10 != 0 {
                        self.bk.hold.insert(id);
                    } else {
                        self.bk.hold.remove(&id);
                        self.wake();
                    }
                }
                _ => {
                    if op & 0xf0 == 0xf0 && self.reconnects < MAX_RECONNECTS {
                        self.reconnects += 1;
                        self.connect();
                    } else {
                        self.upload(inp);
                    }
                }
            }
            self.pump();
            self.check_commits();
            if self.fatal {
                self.settle();
                if !self.conn.poll_close() {
                    // The Error is out; the grace ends it in any case.
                    self.now += 2_000;
                    self.conn.handle_timeout(self.now, &mut self.bk);
                }
                assert!(
                    self.conn.poll_close(),
                    "a fatal Error went out and the session stays open"
                );
                if self.reconnects < MAX_RECONNECTS {
                    self.reconnects += 1;
                    self.connect();
                } else {
                    break;
                }
            }
        }
        // The peer reads everything, then goes away.
        self.bk.hold.clear();
        self.settle();
        self.check_commits();
        self.conn.handle_close(&mut self.bk);
        self.check_closed();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mode = inp.b();
    H::new(mode).run(&mut inp);
});

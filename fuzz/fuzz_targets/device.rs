//! The device state machine (`device::DeviceConn` on a `RamStore`) driven by
//! arbitrary input, in four modes (first byte): no key with raw bytes; no
//! key, Hello done, then frames built from the input (valid checksums,
//! arbitrary headers and bodies); a key with raw bytes (never authenticated);
//! a key, authenticated by the harness's `ClientHandshake`, then frames
//! built from the input and sealed (some tampered: tag or body bit flipped,
//! a sequence number skipped, unsealed). Bytes go in arbitrary splits,
//! interleaved with `poll_transmit` of arbitrary sizes, deadlines and
//! well-formed uploads as a client makes them (Put, wait for PutReady,
//! Data from its offset, Done), resuming kept partials or not. Requests
//! are pipelined (the device serves two at once) and connections are cut
//! in the middle of uploads.
//!
//! Checked: no panic; the session never stalls (it either takes input or
//! has output); everything it sends decodes, with headers that parse and
//! bodies within the negotiated limits; after AuthOk every frame it sends
//! is sealed and its tag verifies; a tampered sealed frame ends the session
//! with INTEGRITY and nothing after it; without the key it never
//! authenticates, runs a command or stores a file; PutReady's offset is at
//! most the size and carries a prefix digest exactly when it is not 0; a
//! resumed upload whose prefix digest matched, completed by a client that
//! sent the right bytes, is never refused for its length or digest; no
//! upload stays claimed after its connection (interrupted ones are kept as
//! partials for resuming, within the store's upload slots).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};
use tether_proto::codec::{encode_head, Decoder, Event, Limits};
use tether_proto::device::commands::Table;
use tether_proto::device::store::Store;
use tether_proto::device::{Config, Device, DeviceConn, OffsetClock, Peer, RamStore};
use tether_proto::handshake::{ClientHandshake, Opener, SessionKeys, TagBuilder};
use tether_proto::message::Proof;
use tether_proto::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN, TAG_LEN, VERSION};
use tether_proto::{Caps, Header, Message};

const KEY: [u8; 32] = [0x5a; 32];
const MAX_RECONNECTS: u32 = 3;

type Dev = Device<RamStore<Vec<u8>, 4>, OffsetClock, Table<'static, ()>>;

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8().unwrap_or(0)) | u16::from(self.u8().unwrap_or(0)) << 8
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

#[derive(PartialEq)]
enum Mode {
    OpenRaw,
    OpenFrames,
    KeyedRaw,
    KeyedFrames,
}

struct Harness {
    dev: Dev,
    s: DeviceConn<Vec<u8>>,
    mode: Mode,
    now: u64,
    tx_step: usize,
    split: usize,
    reconnects: u32,
    // The client's view of the connection.
    dec: Decoder<Vec<u8>>,
    keys: Option<SessionKeys>,
    rx_tag: Option<TagBuilder>,
    hs: Option<ClientHandshake<'static>>,
    auth_to_send: Option<Proof>,
    max_body: u64,
    /// Header of the last whole frame received, and of the one in progress.
    last: Option<Vec<u8>>,
    current: Option<Vec<u8>>,
    /// Only whole frames were sent on this connection (no raw bytes that
    /// may have left a partial frame).
    clean: bool,
    /// Headers of the frames received since the harness last looked.
    replies: Vec<Vec<u8>>,
}

impl Harness {
    fn new(mode: Mode) -> Harness {
        let key = matches!(mode, Mode::KeyedRaw | Mode::KeyedFrames).then_some(KEY);
        let mut dev = Device::new(
            Config {
                key,
                ..Config::DEFAULT
            },
            RamStore::new(vec![0u8; 8 * 1024]),
            OffsetClock { offset_ms: 1 << 40 },
            Table {
                state: (),
                commands: &[],
            },
            0,
        );
        let mut s: DeviceConn<Vec<u8>> = DeviceConn::new(vec![0; 512], vec![0; 640], vec![0; 512]);
        s.handle_accept(&mut dev, Peer::ipv4([10, 0, 0, 1]), [3; 16], 0);
        Harness {
            dev,
            s,
            mode,
            now: 0,
            tx_step: 700,
            split: 64,
            reconnects: 0,
            dec: Decoder::new(
                vec![0; 1024],
                Limits {
                    max_header: 1024,
                    max_body: 1024,
                },
            ),
            keys: None,
            rx_tag: None,
            hs: None,
            auth_to_send: None,
            max_body: 1024,
            last: None,
            current: None,
            clean: true,
            replies: Vec::new(),
        }
    }

    /// Feed bytes in `split`-sized pieces; the session must always either
    /// take input or produce output.
    fn feed(&mut self, bytes: &[u8]) {
        for piece in bytes.chunks(self.split.max(1)) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = self.s.handle_bytes(&mut self.dev, rest, self.now);
                assert!(n <= rest.len());
                rest = &rest[n..];
                if n == 0 {
                    let m = self.pump();
                    assert!(m > 0, "session stalled: takes no input and sends nothing");
                }
            }
        }
    }

    /// One poll_transmit of `tx_step` bytes; what comes out is checked.
    fn pump(&mut self) -> usize {
        let mut buf = vec![0u8; self.tx_step.max(1)];
        let n = self.s.poll_transmit(&mut self.dev, &mut buf, self.now);
        assert!(n <= buf.len());
        self.check_output(&buf[..n]);
        n
    }

    fn drain(&mut self) {
        let mut rounds = 0;
        while self.pump() > 0 {
            rounds += 1;
            assert!(rounds < 1_000_000, "endless output");
        }
    }

    /// Decode what the device sent, as a client would.
    fn check_output(&mut self, mut out: &[u8]) {
        loop {
            let (n, r) = self.dec.handle_bytes(out);
            out = &out[n..];
            match r.expect("the device sent bytes that do not decode") {
                None => break,
                Some(Event::Header(f)) => {
                    assert!(f.prefix.body_len <= self.max_body);
                    let h = Header::parse(f.header).expect("the device sent an invalid header");
                    self.current = Some(f.header.to_vec());
                    if let Some(k) = self.keys.as_mut() {
                        assert!(
                            f.prefix.flags.contains(Flags::SEALED),
                            "unsealed frame after AuthOk: {h:?}"
                        );
                        self.rx_tag = Some(k.open.begin_frame(&f));
                    }
                    // The handshake, when the harness runs one.
                    if let Some(hs) = self.hs.as_mut() {
                        match &h.message {
                            Message::HelloAck(ack) => {
                                self.max_body = u64::from(ack.max_chunk);
                                self.auth_to_send = hs.handle_hello_ack(ack).ok().flatten();
                            }
                            Message::AuthOk(p) => {
                                self.keys =
                                    Some(hs.handle_auth_ok(p).expect("the device proves the key"));
                                self.hs = None;
                            }
                            _ => {}
                        }
                    }
                    if self.mode == Mode::KeyedRaw {
                        assert!(
                            !matches!(h.message, Message::AuthOk(_)),
                            "authenticated without the key"
                        );
                    }
                }
                Some(Event::Body(b)) => {
                    if let Some(t) = self.rx_tag.as_mut() {
                        t.update(b);
                    }
                }
                Some(Event::End { tag }) => {
                    self.last = self.current.take();
                    if let Some(h) = &self.last {
                        if self.replies.len() < 64 {
                            self.replies.push(h.clone());
                        }
                    }
                    if let Some(t) = self.rx_tag.take() {
                        let tag = tag.expect("sealed frame without a tag");
                        assert!(Opener::verify(t, &tag), "the device's tag does not verify");
                    }
                }
            }
        }
    }

    /// A new connection, with the client's handshake where the mode has one.
    fn connect(&mut self) {
        self.s.handle_close(&mut self.dev);
        self.check_closed();
        let nonce = [self.reconnects as u8 + 4; 16];
        self.s
            .handle_accept(&mut self.dev, Peer::ipv4([10, 0, 0, 1]), nonce, self.now);
        self.dec.reset();
        self.dec.set_limits(Limits {
            max_header: 1024,
            max_body: 1024,
        });
        self.keys = None;
        self.rx_tag = None;
        self.hs = None;
        self.auth_to_send = None;
        self.max_body = 1024;
        self.last = None;
        self.current = None;
        self.clean = true;
        let key = match self.mode {
            Mode::OpenRaw | Mode::KeyedRaw => return,
            Mode::OpenFrames => None,
            Mode::KeyedFrames => Some(KEY),
        };
        let hs = ClientHandshake::new(key, [9; 16], 4096, 4096, Caps::empty(), "fuzz");
        let hello = frame(&Header::new(0, Message::Hello(hs.hello().clone())), &[]);
        self.hs = Some(hs);
        self.feed(&hello);
        self.drain();
        if let Some(proof) = self.auth_to_send.take() {
            self.feed(&frame(&Header::new(0, Message::Auth(proof)), &[]));
            self.drain();
        }
        if key.is_some() && self.keys.is_none() && !self.s.poll_close() {
            panic!("the right key did not authenticate");
        }
    }

    /// The connection is closed: no upload stays claimed; what was cut is
    /// kept as a partial (the device resumes), within its upload slots.
    fn check_closed(&self) {
        assert_eq!(
            self.dev.uploads_in_progress(),
            0,
            "an upload stayed claimed after its connection"
        );
        let u = self.dev.store.usage();
        assert!(u.files + u.pending <= u.max_files);
    }

    /// A frame around raw `header` bytes (checksum valid), sealed with the
    /// client's keys when it has them; `tamper` bits alter it.
    fn build(&mut self, header: &[u8], body: &[u8], tamper: u8) -> Vec<u8> {
        let header = if header.is_empty() {
            &[0u8][..]
        } else {
            header
        };
        let sealed = self.keys.is_some() != (tamper & 1 != 0);
        let repr = PrefixRepr {
            version: VERSION,
            flags: if sealed {
                Flags::SEALED
            } else {
                Flags::empty()
            },
            header_len: header.len() as u16,
            body_len: body.len() as u64,
        };
        let mut f = vec![0u8; PREFIX_LEN];
        repr.emit(&mut Prefix::new_unchecked(&mut f[..]), header);
        f.extend_from_slice(header);
        f.extend_from_slice(body);
        if sealed {
            let tag = match self.keys.as_mut() {
                Some(k) => {
                    if tamper & 2 != 0 {
                        // A skipped sequence number (a frame dropped or reordered).
                        let _ = k.seal.begin(b"");
                    }
                    let mut t = k.seal.begin(&f[..PREFIX_LEN + header.len()]);
                    t.update(body);
                    t.finish()
                }
                None => [0x11; TAG_LEN],
            };
            f.extend_from_slice(&tag);
            if tamper & 4 != 0 {
                let i = usize::from(tamper >> 3) % f.len();
                // Past the prefix and header the checksum does not see it.
                f[i.max(PREFIX_LEN + header.len())] ^= 0x20;
            }
        }
        f
    }

    /// A well-formed upload as a client makes it: Put, PutReady, Data from
    /// its offset, Done with the digest of the whole file (or, when `cut`,
    /// the connection ends in the middle). The content depends only on the
    /// offset, so a partial kept from an earlier upload of the harness has
    /// the right prefix.
    fn upload(&mut self, id: u32, name: &str, size: usize, resume: bool, cut: bool) {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        // Start from a quiet session, so that the replies below are this upload's.
        self.drain();
        let checked = self.clean && !self.s.poll_close() && self.s.is_open();
        self.replies.clear();
        let put = self.message(
            Header::new(
                id,
                Message::Put {
                    path: name,
                    size: size as u64,
                    force: true,
                    resume,
                },
            ),
            &[],
        );
        self.feed(&put);
        self.drain();
        let ready = self.replies.iter().find_map(|h| match Header::parse(h) {
            Ok(Header {
                request_id,
                message:
                    Message::PutReady {
                        offset,
                        prefix_sha256,
                    },
            }) if request_id == id => Some((offset, prefix_sha256)),
            _ => None,
        });
        let Some((offset, prefix)) = ready else {
            // Refused (busy, exists, no space, a bad name, no session):
            // a client sends nothing more for it.
            return;
        };
        assert!(
            offset <= size as u64,
            "PutReady offset {offset} past the size {size}"
        );
        assert_eq!(
            prefix.is_some(),
            offset > 0,
            "PutReady prefix digest iff offset > 0"
        );
        assert!(resume || offset == 0, "resumed without being asked");
        let offset = offset as usize;
        let matches = prefix.is_none_or(|p| p == <[u8; 32]>::from(Sha256::digest(&data[..offset])));
        if !matches {
            // Another client's partial: cancel, as a client does.
            let c = self.message(Header::new(0, Message::Cancel { target: id }), &[]);
            self.feed(&c);
            return;
        }
        let end = if cut {
            offset + (size - offset) / 2
        } else {
            size
        };
        let mut wire = Vec::new();
        for c in data[offset..end].chunks(1000) {
            wire.extend(self.message(Header::new(id, Message::Data), c));
        }
        if cut {
            self.feed(&wire);
            self.drain();
            self.reconnects += 1;
            self.connect();
            return;
        }
        let digest: [u8; 32] = Sha256::digest(&data).into();
        wire.extend(self.message(
            Header::new(
                id,
                Message::Done {
                    bytes: size as u64,
                    sha256: Some(digest),
                },
            ),
            &[],
        ));
        self.replies.clear();
        self.feed(&wire);
        self.drain();
        if !checked || self.s.poll_close() {
            return;
        }
        for h in &self.replies {
            if let Ok(Header {
                request_id,
                message: Message::Error { code, message },
            }) = Header::parse(h)
            {
                assert!(
                    request_id != id
                        || !matches!(
                            code,
                            tether_proto::ErrorCode::DIGEST_MISMATCH
                                | tether_proto::ErrorCode::BAD_LENGTH
                        ),
                    "a correct upload (offset {offset} of {size}) was refused: {code:?} {message}"
                );
            }
        }
    }

    fn message(&mut self, h: Header<'_>, body: &[u8]) -> Vec<u8> {
        let mut hb = [0u8; 512];
        let n = encode_head(&h, 0, Flags::empty(), &mut hb)
            .expect("fits")
            .len();
        let header = hb[PREFIX_LEN..n].to_vec();
        self.build(&header, body, 0)
    }

    fn run(&mut self, inp: &mut Input<'_>) {
        self.connect();
        while let Some(op) = inp.u8() {
            match op % 8 {
                0 | 1 => {
                    let len = usize::from(inp.u8().unwrap_or(0)) * (1 + usize::from(op >> 5));
                    let bytes = inp.take(len);
                    self.clean &= bytes.is_empty();
                    self.feed(bytes);
                }
                2..=4 => {
                    let hlen = usize::from(inp.u8().unwrap_or(0));
                    let header = inp.take(hlen);
                    let blen = usize::from(inp.u16()) % 1100;
                    let body = inp.take(blen);
                    let tamper = if op & 0x80 != 0 {
                        inp.u8().unwrap_or(0)
                    } else {
                        0
                    };
                    self.drain();
                    // A sealed session meets an altered, replayed or
                    // unsealed frame: INTEGRITY, and nothing after it.
                    let refuse = self.keys.is_some()
                        && tamper & 7 != 0
                        && self.clean
                        && !self.s.poll_close()
                        && body.len() as u64 <= self.max_body;
                    let f = self.build(header, body, tamper);
                    self.feed(&f);
                    if refuse {
                        self.drain();
                        let last = self.last.as_deref().map(Header::parse);
                        assert!(
                            matches!(
                                last,
                                Some(Ok(Header {
                                    request_id: 0,
                                    message: Message::Error {
                                        code: tether_proto::ErrorCode::INTEGRITY,
                                        ..
                                    }
                                }))
                            ),
                            "a tampered frame was not refused: {last:?}"
                        );
                        assert!(self.s.poll_close());
                    }
                }
                5 => {
                    let id = u32::from(inp.u8().unwrap_or(1));
                    let nlen = usize::from(inp.u8().unwrap_or(0) % 12);
                    let name = String::from_utf8_lossy(inp.take(nlen)).into_owned();
                    let size = usize::from(inp.u16()) % 3000;
                    let cut = op & 0x40 != 0 && self.reconnects < MAX_RECONNECTS;
                    self.upload(id, &name, size, op & 0x20 != 0, cut);
                }
                6 => {
                    self.now += u64::from(inp.u16()) * 10;
                    self.s.handle_timeout(&mut self.dev, self.now);
                }
                _ => {
                    self.tx_step = usize::from(inp.u8().unwrap_or(0)) * 8 + 1;
                    self.split = usize::from(inp.u8().unwrap_or(0)) + 1;
                    self.drain();
                }
            }
            self.pump();
            if self.s.poll_close() && self.reconnects < MAX_RECONNECTS {
                self.drain();
                self.reconnects += 1;
                self.connect();
            }
            if self.mode == Mode::KeyedRaw {
                assert!(!self.s.is_authenticated(), "authenticated without the key");
                assert_eq!(self.dev.stats().files_stored, 0);
                assert!(!self.dev.led());
            }
        }
        self.drain();
        self.s.handle_close(&mut self.dev);
        self.check_closed();
    }
}

/// An unsealed frame.
fn frame(h: &Header<'_>, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 1024 + body.len()];
    let n = tether_proto::encode_frame(h, body, &mut b)
        .expect("fits")
        .len();
    b.truncate(n);
    b
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mode = match inp.u8().unwrap_or(0) % 4 {
        0 => Mode::OpenRaw,
        1 => Mode::OpenFrames,
        2 => Mode::KeyedRaw,
        _ => Mode::KeyedFrames,
    };
    Harness::new(mode).run(&mut inp);
});

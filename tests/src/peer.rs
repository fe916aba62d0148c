//! A raw protocol peer for tests that must misbehave: it sends any bytes
//! (crafted frames, garbage, replays) and reads whatever comes back, over a
//! real TCP socket or the simulator's virtual wire alike.
//!
//! It speaks the handshake through the core's `ClientHandshake`, seals what
//! it sends once authenticated (each [`Peer::frame`] takes the next sequence
//! number, so a frame built and not sent, or sent twice, is a gap or a
//! replay), and checks the tag of every sealed frame it receives. With
//! [`Peer::handshake_caps`] and `Caps::ENCRYPT` it encrypts what it sends
//! and decrypts what it receives instead (`SEALED | ENCRYPTED` frames).

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use tether_proto::codec::{Decoder, Event, Limits};
use tether_proto::handshake::{ClientHandshake, FrameCipher, Opener, Sealer, SessionKeys};
use tether_proto::outgoing::{self, Protection};
use tether_proto::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN, VERSION};
use tether_proto::{Caps, DecodeError, ErrorCode, Header, HeaderError, Kind, Message};

/// A byte stream to a server.
pub trait Link {
    /// Send all of `b`.
    fn send(&mut self, b: &[u8]) -> Result<(), String>;
    /// Read some bytes; `Ok(0)` when the peer closed.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String>;
    /// Close the sending direction (the server sees end of stream).
    fn close_write(&mut self);
}

impl Link for TcpStream {
    fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.write_all(b).map_err(|e| e.to_string())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        std::io::Read::read(self, buf).map_err(|e| e.to_string())
    }
    fn close_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Link for std::os::unix::net::UnixStream {
    fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.write_all(b).map_err(|e| e.to_string())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        std::io::Read::read(self, buf).map_err(|e| e.to_string())
    }
    fn close_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// A TCP connection to 127.0.0.1:`port` from the local address `from`
/// (any 127.0.0.0/8 address: lets a test be several peers), with a
/// generous read timeout.
pub fn tcp_from(from: std::net::Ipv4Addr, port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&std::net::SocketAddr::from((from, 0)).into())
        .expect("bind the local address");
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect");
    let t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    t.set_nodelay(true).expect("nodelay");
    t
}

/// A TCP connection to 127.0.0.1:`port`.
pub fn tcp(port: u16) -> TcpStream {
    tcp_from(std::net::Ipv4Addr::LOCALHOST, port)
}

/// The simulator's virtual TCP stream as a [`Link`].
#[derive(Debug)]
pub struct Virt<'n>(pub tether_sim::virt::VirtualTcp<'n>);

impl Link for Virt<'_> {
    fn send(&mut self, mut b: &[u8]) -> Result<(), String> {
        use tether_sim::embedded_io::Write as _;
        while !b.is_empty() {
            let n = self.0.write(b).map_err(|e| e.to_string())?;
            b = &b[n..];
        }
        self.0.flush().map_err(|e| e.to_string())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        use tether_sim::embedded_io::Read as _;
        self.0.read(buf).map_err(|e| e.to_string())
    }
    fn close_write(&mut self) {
        self.0.shutdown();
    }
}

/// The header bytes of `msg` with request id `id`.
pub fn header(id: u32, msg: Message<'_>) -> Vec<u8> {
    let h = Header::new(id, msg);
    let mut b = vec![0u8; h.buffer_len()];
    let n = h.emit(&mut b).expect("encode header").len();
    b.truncate(n);
    b
}

/// A prefix for `header` announcing `body_len`, with `flags` and a correct checksum.
pub fn prefix(header: &[u8], body_len: u64, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; PREFIX_LEN];
    PrefixRepr {
        version: VERSION,
        flags: Flags::from_bits_retain(flags),
        header_len: header.len() as u16,
        body_len,
    }
    .emit(&mut Prefix::new_unchecked(&mut p[..]), header);
    p
}

/// A whole unsealed frame around arbitrary header bytes.
pub fn raw_frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    outgoing::raw_frame(Protection::Plain, header, body)
}

/// A whole unsealed frame.
pub fn frame(id: u32, msg: Message<'_>, body: &[u8]) -> Vec<u8> {
    raw_frame(&header(id, msg), body)
}

/// A whole frame sealed with `sealer` (flag SEALED, HMAC tag; takes its
/// next sequence number), written by the core's one frame writer.
pub fn sealed_frame(sealer: &mut Sealer, header: &[u8], body: &[u8]) -> Vec<u8> {
    outgoing::raw_frame(Protection::Seal(sealer), header, body)
}

/// A whole frame encrypted with `cipher` (flags `SEALED | ENCRYPTED`,
/// header ‖ body ChaCha20-Poly1305 ciphertext, the checksum over the
/// ciphertext header; takes its next sequence number).
pub fn encrypted_frame(cipher: &mut FrameCipher, header: &[u8], body: &[u8]) -> Vec<u8> {
    outgoing::raw_frame(Protection::Encrypt(cipher), header, body)
}

/// Recompute the prefix checksum of the whole frame `f` (after its header
/// bytes were changed on purpose), as an attacker on the path can.
pub fn fix_checksum(f: &mut [u8]) {
    let repr = PrefixRepr::parse(&Prefix::new_unchecked(&f[..PREFIX_LEN])).expect("a valid prefix");
    let header = f[PREFIX_LEN..PREFIX_LEN + repr.header_len as usize].to_vec();
    repr.emit(&mut Prefix::new_unchecked(&mut f[..PREFIX_LEN]), &header);
}

/// One frame received.
#[derive(Debug, Clone)]
pub struct Got {
    /// Request id.
    pub id: u32,
    /// Raw header bytes.
    pub header: Vec<u8>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Whether it carried a tag.
    pub sealed: bool,
    /// Whether the tag verified (sealed frames on an authenticated session;
    /// for an encrypted frame: whether it decrypted).
    pub tag_ok: Option<bool>,
    /// Whether it was flagged ENCRYPTED (`header` and `body` are then the
    /// decrypted bytes).
    pub encrypted: bool,
    /// The frame's bytes as received.
    pub raw: Vec<u8>,
}

impl Got {
    /// The message.
    pub fn message(&self) -> Message<'_> {
        Header::parse(&self.header)
            .expect("the server sent a parsable header")
            .message
    }
    /// The kind.
    pub fn kind(&self) -> Kind {
        self.message().kind()
    }
    /// Code and text of an Error frame.
    pub fn error(&self) -> Option<(ErrorCode, String)> {
        match self.message() {
            Message::Error { code, message } => Some((code, message.to_string())),
            _ => None,
        }
    }
    /// One line for assertion messages.
    pub fn describe(&self) -> String {
        match self.error() {
            Some((code, text)) => format!(
                "id {} Error {} {text:?}",
                self.id,
                code.name()
                    .map_or_else(|| code.0.to_string(), str::to_string)
            ),
            None => format!("id {} {:?}", self.id, self.message()),
        }
    }
}

/// Why nothing (more) was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// The server closed the connection (between frames).
    Closed,
    /// The server closed in the middle of a frame.
    Eof,
    /// The transport failed (a read timeout, a reset).
    Io(String),
    /// The server sent bytes that are not a frame.
    Decode(DecodeError),
    /// The server sent a header that does not parse.
    Header(HeaderError),
    /// On an encrypted session, a frame did not decrypt.
    Integrity,
}

/// A raw client connection.
pub struct Peer<'a> {
    link: Box<dyn Link + 'a>,
    rx: Vec<u8>,
    keys: Option<SessionKeys>,
    /// Negotiated header limit (the handshake's until HelloAck).
    pub max_header: u16,
    /// Negotiated chunk limit.
    pub max_chunk: u32,
    /// The server's capabilities.
    pub caps: Caps,
    /// HelloAck's `max_requests`, `max_name` and `max_path` (0 before it).
    pub max_requests: u16,
    /// Longest name the server accepts.
    pub max_name: u16,
    /// Longest path the server accepts.
    pub max_path: u16,
}

impl std::fmt::Debug for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("sealed", &self.keys.is_some())
            .field("max_header", &self.max_header)
            .field("max_chunk", &self.max_chunk)
            .finish()
    }
}

impl<'a> Peer<'a> {
    /// A peer over `link`, before Hello.
    pub fn new(link: impl Link + 'a) -> Self {
        Peer {
            link: Box::new(link),
            rx: Vec::new(),
            keys: None,
            max_header: Limits::HANDSHAKE.max_header,
            max_chunk: Limits::HANDSHAKE.max_body as u32,
            caps: Caps::empty(),
            max_requests: 0,
            max_name: 0,
            max_path: 0,
        }
    }

    /// Whether frames are sealed.
    pub fn sealed(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether frames are encrypted (ENCRYPT negotiated).
    pub fn encrypted(&self) -> bool {
        self.keys.as_ref().is_some_and(|k| k.encrypted())
    }

    /// Send raw bytes.
    pub fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.link.send(b)
    }

    /// Close the sending direction.
    pub fn close_write(&mut self) {
        self.link.close_write();
    }

    /// A frame around `header` bytes as this session sends it: sealed (and
    /// taking the next sequence number) once authenticated, encrypted where
    /// ENCRYPT was negotiated.
    pub fn frame_raw(&mut self, header: &[u8], body: &[u8]) -> Vec<u8> {
        if self.encrypted() {
            return self.encrypted_frame_raw(header, body);
        }
        self.sealed_frame_raw(header, body)
    }

    /// A frame whose header ‖ body is encrypted with the session's cipher
    /// (taking its next sequence number), flags `SEALED | ENCRYPTED`.
    ///
    /// # Panics
    /// When the session is not encrypted.
    pub fn encrypted_frame_raw(&mut self, header: &[u8], body: &[u8]) -> Vec<u8> {
        let cipher = self
            .keys
            .as_mut()
            .and_then(|k| k.encrypt.as_mut())
            .expect("an encrypted session");
        encrypted_frame(cipher, header, body)
    }

    /// A frame sealed with the session's HMAC key (flag SEALED only; on an
    /// encrypted session that is the wrong protection), or unsealed before
    /// authentication.
    pub fn sealed_frame_raw(&mut self, header: &[u8], body: &[u8]) -> Vec<u8> {
        match &mut self.keys {
            None => raw_frame(header, body),
            Some(k) => sealed_frame(&mut k.seal, header, body),
        }
    }

    /// `msg` as this session sends it (see [`Peer::frame_raw`]).
    pub fn frame(&mut self, id: u32, msg: Message<'_>, body: &[u8]) -> Vec<u8> {
        self.frame_raw(&header(id, msg), body)
    }

    /// Build and send `msg`.
    pub fn request(&mut self, id: u32, msg: Message<'_>, body: &[u8]) -> Result<(), String> {
        let f = self.frame(id, msg, body);
        self.send(&f)
    }

    /// The next whole frame.
    pub fn recv(&mut self) -> Result<Got, RecvError> {
        loop {
            if let Some(r) = self.try_decode() {
                return r;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = self.link.read(&mut chunk).map_err(RecvError::Io)?;
            if n == 0 {
                return Err(if self.rx.is_empty() {
                    RecvError::Closed
                } else {
                    RecvError::Eof
                });
            }
            self.rx.extend_from_slice(&chunk[..n]);
        }
    }

    /// Decode one frame from the buffered bytes, if they hold a whole one.
    fn try_decode(&mut self) -> Option<Result<Got, RecvError>> {
        let mut hbuf = vec![0u8; u16::MAX as usize];
        let mut dec = Decoder::new(
            &mut hbuf[..],
            Limits {
                max_header: u16::MAX,
                max_body: 16 << 20,
            },
        );
        dec.set_encryption(self.encrypted());
        let mut used = 0;
        let mut got: Option<(PrefixRepr, Vec<u8>)> = None;
        let mut body = Vec::new();
        loop {
            let (n, ev) = dec.handle_bytes(&self.rx[used..]);
            used += n;
            match ev {
                Err(e) => return Some(Err(RecvError::Decode(e))),
                Ok(None) => return None,
                Ok(Some(Event::Header(f))) => got = Some((f.prefix, f.header.to_vec())),
                Ok(Some(Event::Body(b))) => body.extend_from_slice(b),
                Ok(Some(Event::End { tag })) => {
                    let (repr, mut header) = got.expect("a header before the end");
                    let frame: Vec<u8> = self.rx.drain(..used).collect();
                    let encrypted = repr.flags.contains(Flags::ENCRYPTED);
                    if encrypted {
                        // Open header ‖ body, then parse the plaintext header.
                        let (Some(cipher), Some(t)) =
                            (self.keys.as_mut().and_then(|k| k.decrypt.as_mut()), tag)
                        else {
                            return Some(Err(RecvError::Integrity));
                        };
                        let hl = header.len();
                        let mut plain = std::mem::take(&mut header);
                        plain.extend_from_slice(&body);
                        if !cipher.open_in_place(&repr, &mut plain, &t) {
                            return Some(Err(RecvError::Integrity));
                        }
                        body = plain.split_off(hl);
                        header = plain;
                    }
                    let tag_ok = match (&mut self.keys, tag) {
                        _ if encrypted => Some(true),
                        (Some(k), Some(t)) => {
                            let mut b = k.open.begin(&frame[..PREFIX_LEN + header.len()]);
                            b.update(&body);
                            Some(Opener::verify(b, &t))
                        }
                        _ => None,
                    };
                    let id = match Header::parse(&header) {
                        Ok(h) => h.request_id,
                        Err(e) => return Some(Err(RecvError::Header(e))),
                    };
                    return Some(Ok(Got {
                        id,
                        header,
                        body,
                        sealed: repr.flags.contains(Flags::SEALED),
                        tag_ok,
                        encrypted,
                        raw: frame,
                    }));
                }
            }
        }
    }

    /// The next frame, which on a sealed session must be sealed and verify.
    pub fn recv_checked(&mut self) -> Result<Got, String> {
        let g = self.recv().map_err(|e| format!("no frame: {e:?}"))?;
        if self.encrypted() && !g.encrypted {
            return Err(format!(
                "the server's frame was not encrypted on an encrypted session: {}",
                g.describe()
            ));
        }
        if self.keys.is_some() && g.tag_ok != Some(true) {
            return Err(format!(
                "the server's frame did not verify on a sealed session: {} (sealed {}, tag {:?})",
                g.describe(),
                g.sealed,
                g.tag_ok
            ));
        }
        Ok(g)
    }

    /// Hello (and Auth with `key`): `Ok` once the session is open, `Err`
    /// with the server's frame (or a description) otherwise.
    pub fn handshake(&mut self, key: Option<[u8; 32]>, nonce: [u8; 16]) -> Result<(), String> {
        self.handshake_caps(key, nonce, Caps::empty())
    }

    /// [`Peer::handshake`] offering `caps` (`Caps::ENCRYPT`: require encryption).
    pub fn handshake_caps(
        &mut self,
        key: Option<[u8; 32]>,
        nonce: [u8; 16],
        caps: Caps,
    ) -> Result<(), String> {
        let mut hs = ClientHandshake::new(key, nonce, 8192, 256 * 1024, caps, "hostile");
        let hello = self.frame(0, Message::Hello(hs.hello().clone()), &[]);
        self.send(&hello)?;
        let g = self.recv().map_err(|e| format!("no HelloAck: {e:?}"))?;
        let Message::HelloAck(ack) = g.message() else {
            return Err(format!("answered Hello with {}", g.describe()));
        };
        let proof = hs
            .handle_hello_ack(&ack)
            .map_err(|e| format!("HelloAck refused: {e}"))?;
        let (mh, mc, caps) = (ack.max_header, ack.max_chunk, ack.caps);
        let (mr, mn, mp) = (ack.max_requests, ack.max_name, ack.max_path);
        if let Some(p) = proof {
            self.request(0, Message::Auth(p), &[])?;
            let g = self.recv().map_err(|e| format!("no AuthOk: {e:?}"))?;
            let Message::AuthOk(ok) = g.message() else {
                return Err(format!("answered Auth with {}", g.describe()));
            };
            let keys = hs
                .handle_auth_ok(&ok)
                .map_err(|e| format!("AuthOk refused: {e}"))?;
            self.keys = Some(keys);
        }
        self.max_header = mh;
        self.max_chunk = mc;
        self.caps = caps;
        self.max_requests = mr;
        self.max_name = mn;
        self.max_path = mp;
        Ok(())
    }

    /// Send a Ping and require that the very next frame is its Pong.
    pub fn ping_ok(&mut self, id: u32) -> Result<(), String> {
        self.request(id, Message::Ping { stamp: 0x5eed }, &[])?;
        let g = self.recv_checked()?;
        match g.message() {
            Message::Pong { stamp: 0x5eed } if g.id == id => Ok(()),
            _ => Err(format!("expected Pong {id}, got {}", g.describe())),
        }
    }

    /// Require that the server closes the connection next, sending nothing more.
    pub fn expect_closed(&mut self) -> Result<(), String> {
        match self.recv() {
            Err(RecvError::Closed) | Err(RecvError::Eof) => Ok(()),
            Err(RecvError::Io(e)) if e.contains("reset") => Ok(()),
            Err(e) => Err(format!("expected the server to close, got {e:?}")),
            Ok(g) => Err(format!(
                "expected the server to close, got {}",
                g.describe()
            )),
        }
    }
}

/// A fresh nonce (tests need no secrecy, only distinct values).
pub fn nonce(n: u64) -> [u8; 16] {
    let mut b = [0x6eu8; 16];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b
}

//! A small blocking tether client over any `embedded-io` stream, built on
//! the core's frame drivers. It drives the device over the virtual wire
//! (where the host `tether` binary, which needs real sockets, cannot go) and
//! checks every reply it gets; the demo and the tests use it.
//!
//! With a key it authenticates through the core's
//! [`ClientHandshake`](tether_proto::handshake::ClientHandshake) (the same
//! state machine as the host client) and then seals every frame it sends
//! and checks the tag of every frame it receives.

use std::fmt;

use sha2::{Digest as _, Sha256};
use tether_proto::codec::{encode_head, Limits};
use tether_proto::handshake::{ClientHandshake, HandshakeError, Opener, SessionKeys, KEY_LEN};
use tether_proto::io::{write_frame, FrameReader};
use tether_proto::message::{EntryKind, Stream};
use tether_proto::wire::Flags;
use tether_proto::{Argv, Caps, Command, ErrorCode, Exec, ExitStatus, FrameError, Header, Message};

/// What went wrong on the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The transport or the framing failed.
    Io(String),
    /// The device answered with an Error frame.
    Remote {
        /// Request id of the Error.
        id: u32,
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The device answered something the protocol does not allow here.
    Protocol(String),
    /// The handshake failed on this side (the device does not
    /// authenticate, or its proof is wrong).
    Handshake(HandshakeError),
    /// A frame from the device was unsealed or failed its tag.
    Integrity(String),
}

impl ClientError {
    /// The Error frame's code, if the device sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Remote { code, message, .. } => write!(f, "device: {message} ({code})"),
            ClientError::Protocol(e) => write!(f, "protocol violation: {e}"),
            ClientError::Handshake(e) => write!(f, "handshake: {e}"),
            ClientError::Integrity(e) => write!(f, "integrity: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl<E: fmt::Debug> From<FrameError<E>> for ClientError {
    fn from(e: FrameError<E>) -> Self {
        ClientError::Io(e.to_string())
    }
}

/// Client result.
pub type Result<T> = std::result::Result<T, ClientError>;

/// One received frame: raw header bytes and the whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The header bytes.
    pub header: Vec<u8>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The parsed header.
    pub fn parse(&self) -> Result<Header<'_>> {
        Header::parse(&self.header).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// A finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// A file or directory as Stat and List describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (Unix seconds).
    pub modified: u64,
}

/// A connected, handshaken client.
pub struct Client<T: embedded_io::Read + embedded_io::Write> {
    rd: FrameReader<T, Vec<u8>, Vec<u8>>,
    buf: Vec<u8>,
    next_id: u32,
    /// Negotiated largest body per frame.
    pub max_chunk: u32,
    /// Negotiated largest header.
    pub max_header: u16,
    /// The device's agent string.
    pub agent: String,
    /// The device's capabilities.
    pub caps: Caps,
    /// Sealing keys, once authenticated.
    keys: Option<SessionKeys>,
}

impl<T: embedded_io::Read + embedded_io::Write> fmt::Debug for Client<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("agent", &self.agent)
            .field("max_chunk", &self.max_chunk)
            .finish_non_exhaustive()
    }
}

fn unexpected(what: &str, m: &Message<'_>) -> ClientError {
    ClientError::Protocol(format!("expected {what}, got {:?}", m.kind()))
}

impl<T: embedded_io::Read + embedded_io::Write> Client<T>
where
    T::Error: fmt::Debug,
{
    /// Say Hello over `io` and wait for HelloAck, without a key (a device
    /// that requires one answers `AUTH_REQUIRED`).
    pub fn connect(io: T) -> Result<Self> {
        Self::connect_with_key(io, None)
    }

    /// Say Hello over `io`; with `key`, authenticate (Auth/AuthOk) and seal
    /// everything after. A device that does not authenticate is refused
    /// when a key is given ([`ClientError::Handshake`]).
    pub fn connect_with_key(io: T, key: Option<[u8; KEY_LEN]>) -> Result<Self> {
        let mut c = Client {
            rd: FrameReader::new(io, vec![0; 8192], vec![0; 16 * 1024], Limits::HANDSHAKE),
            buf: vec![0; 64 * 1024],
            next_id: 1,
            max_chunk: 0,
            max_header: 0,
            agent: String::new(),
            caps: Caps::empty(),
            keys: None,
        };
        let mut hs = ClientHandshake::new(
            key,
            rand::random(),
            tether_proto::HOST_MAX_HEADER,
            tether_proto::HOST_MAX_CHUNK,
            Caps::EXEC
                .union(Caps::SHELL)
                .union(Caps::FILES)
                .union(Caps::WRITE),
            concat!("tether-sim-client/", env!("CARGO_PKG_VERSION")),
        );
        c.send(&Header::new(0, Message::Hello(hs.hello().clone())), &[])?;
        let r = c.expect(0)?;
        let h = r.parse()?;
        let Message::HelloAck(ack) = &h.message else {
            return Err(unexpected("HelloAck", &h.message));
        };
        let proof = hs.handle_hello_ack(ack).map_err(ClientError::Handshake)?;
        let (max_header, max_chunk, agent, caps) = (
            ack.max_header,
            ack.max_chunk,
            ack.agent.to_string(),
            ack.caps,
        );
        c.max_header = max_header;
        c.max_chunk = max_chunk;
        c.agent = agent;
        c.caps = caps;
        c.rd.set_limits(Limits {
            max_header,
            max_body: u64::from(max_chunk),
        });
        if let Some(proof) = proof {
            c.send(&Header::new(0, Message::Auth(proof)), &[])?;
            let r = c.expect(0)?;
            let h = r.parse()?;
            let Message::AuthOk(p) = &h.message else {
                return Err(unexpected("AuthOk", &h.message));
            };
            c.keys = Some(hs.handle_auth_ok(p).map_err(ClientError::Handshake)?);
        }
        Ok(c)
    }

    /// Whether the session is authenticated (and every frame sealed).
    pub fn is_sealed(&self) -> bool {
        self.keys.is_some()
    }

    /// The transport.
    pub fn transport(&mut self) -> &mut T {
        self.rd.get_mut()
    }

    /// A fresh request id.
    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Send one frame (sealed once authenticated).
    pub fn send(&mut self, h: &Header<'_>, body: &[u8]) -> Result<()> {
        if self.keys.is_some() {
            let f = self.seal_frame(h, body)?;
            return self.send_raw(&f);
        }
        write_frame(self.rd.get_mut(), h, body, &mut self.buf)?;
        Ok(())
    }

    /// The bytes of one sealed frame, taking the next sequence number,
    /// without sending it (hostile tests replay, reorder or alter them).
    pub fn seal_frame(&mut self, h: &Header<'_>, body: &[u8]) -> Result<Vec<u8>> {
        let Some(keys) = self.keys.as_mut() else {
            return Err(ClientError::Protocol("not authenticated".into()));
        };
        let head = encode_head(h, body.len() as u64, Flags::SEALED, &mut self.buf)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut tag = keys.seal.begin(head);
        tag.update(body);
        let mut f = head.to_vec();
        f.extend_from_slice(body);
        f.extend_from_slice(&tag.finish());
        Ok(f)
    }

    /// [`seal_frame`](Self::seal_frame) for a frame given as its prefix and
    /// header bytes (SEALED flag set, any header, even one that does not
    /// parse) and its body: returns head, body and tag.
    pub fn seal_head(&mut self, head: &[u8], body: &[u8]) -> Result<Vec<u8>> {
        let Some(keys) = self.keys.as_mut() else {
            return Err(ClientError::Protocol("not authenticated".into()));
        };
        let mut tag = keys.seal.begin(head);
        tag.update(body);
        let mut f = head.to_vec();
        f.extend_from_slice(body);
        f.extend_from_slice(&tag.finish());
        Ok(f)
    }

    /// Send raw bytes (hostile tests).
    pub fn send_raw(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = self
                .rd
                .get_mut()
                .write(bytes)
                .map_err(|e| ClientError::Io(format!("{e:?}")))?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Receive one frame, whatever it is (its tag checked once authenticated).
    pub fn recv(&mut self) -> Result<Reply> {
        let frame = self.rd.read_frame()?;
        let header = frame.header.to_vec();
        let mut tag = match self.keys.as_mut() {
            Some(k) if frame.prefix.flags.contains(Flags::SEALED) => {
                Some(k.open.begin_frame(&frame))
            }
            Some(_) => {
                return Err(ClientError::Integrity(
                    "unsealed frame on an authenticated session".into(),
                ))
            }
            None => None,
        };
        let mut body = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.rd.read_body(&mut chunk)?;
            if n == 0 {
                break;
            }
            if let Some(t) = tag.as_mut() {
                t.update(&chunk[..n]);
            }
            body.extend_from_slice(&chunk[..n]);
        }
        if let Some(t) = tag {
            let ok = self.rd.tag().is_some_and(|got| Opener::verify(t, &got));
            if !ok {
                return Err(ClientError::Integrity("a frame failed its tag".into()));
            }
        }
        Ok(Reply { header, body })
    }

    /// Receive one frame for request `id`; an Error frame becomes `Err`.
    pub fn expect(&mut self, id: u32) -> Result<Reply> {
        let r = self.recv()?;
        let h = r.parse()?;
        if let Message::Error { code, message } = h.message {
            return Err(ClientError::Remote {
                id: h.request_id,
                code,
                message: message.to_string(),
            });
        }
        if h.request_id != id {
            return Err(ClientError::Protocol(format!(
                "reply for request {} while waiting for {id}",
                h.request_id
            )));
        }
        Ok(r)
    }

    fn request(&mut self, m: Message<'_>) -> Result<(u32, Reply)> {
        let id = self.id();
        self.send(&Header::new(id, m), &[])?;
        Ok((id, self.expect(id)?))
    }

    /// Ping; returns the echoed stamp.
    pub fn ping(&mut self, stamp: u64) -> Result<u64> {
        let (_, r) = self.request(Message::Ping { stamp })?;
        match r.parse()?.message {
            Message::Pong { stamp } => Ok(stamp),
            m => Err(unexpected("Pong", &m)),
        }
    }

    /// Echo; returns the device's text.
    pub fn echo(&mut self, text: &str) -> Result<String> {
        let (_, r) = self.request(Message::Echo { text })?;
        match r.parse()?.message {
            Message::EchoReply { text } => Ok(text.to_string()),
            m => Err(unexpected("EchoReply", &m)),
        }
    }

    /// The device's time.
    pub fn time(&mut self, format: &str) -> Result<(u64, String)> {
        let (_, r) = self.request(Message::Time { format })?;
        match r.parse()?.message {
            Message::TimeReply { unix_ms, text } => Ok((unix_ms, text.to_string())),
            m => Err(unexpected("TimeReply", &m)),
        }
    }

    /// Run a command given as arguments.
    pub fn exec(&mut self, args: &[&str]) -> Result<ExecOutput> {
        let mut b = vec![0u8; args.iter().map(|a| a.len() + 1).sum()];
        let argv = Argv::join(args, &mut b)
            .map_err(|_| ClientError::Protocol("argument contains NUL".into()))?;
        self.run(Command::Argv(argv))
    }

    /// Run a command line.
    pub fn exec_line(&mut self, line: &str) -> Result<ExecOutput> {
        self.run(Command::Shell(line))
    }

    fn run(&mut self, command: Command<'_>) -> Result<ExecOutput> {
        let id = self.id();
        self.send(
            &Header::new(
                id,
                Message::Exec(Exec {
                    command,
                    timeout_ms: None,
                }),
            ),
            &[],
        )?;
        let mut out = ExecOutput {
            stdout: Vec::new(),
            stderr: Vec::new(),
            status: ExitStatus::Code(0),
        };
        loop {
            let r = self.expect(id)?;
            match r.parse()?.message {
                Message::Output {
                    stream: Stream::Stdout,
                } => out.stdout.extend_from_slice(&r.body),
                Message::Output {
                    stream: Stream::Stderr,
                } => out.stderr.extend_from_slice(&r.body),
                Message::Exit { status } => {
                    out.status = status;
                    return Ok(out);
                }
                m => return Err(unexpected("Output or Exit", &m)),
            }
        }
    }

    /// Describe a path.
    pub fn stat(&mut self, path: &str) -> Result<FileEntry> {
        let (_, r) = self.request(Message::Stat { path })?;
        match r.parse()?.message {
            Message::StatReply(e) => Ok(FileEntry {
                name: e.name.into(),
                kind: e.kind,
                size: e.size,
                modified: e.modified,
            }),
            m => Err(unexpected("StatReply", &m)),
        }
    }

    /// List a directory.
    pub fn list(&mut self, path: &str) -> Result<Vec<FileEntry>> {
        let id = self.id();
        self.send(&Header::new(id, Message::List { path }), &[])?;
        let mut v = Vec::new();
        loop {
            let r = self.expect(id)?;
            match r.parse()?.message {
                Message::ListEntry(e) => v.push(FileEntry {
                    name: e.name.into(),
                    kind: e.kind,
                    size: e.size,
                    modified: e.modified,
                }),
                Message::Done { bytes, .. } if bytes == v.len() as u64 => return Ok(v),
                Message::Done { bytes, .. } => {
                    return Err(ClientError::Protocol(format!(
                        "list says {bytes} entries, sent {}",
                        v.len()
                    )))
                }
                m => return Err(unexpected("ListEntry or Done", &m)),
            }
        }
    }

    /// Download a whole file, checking its size and SHA-256.
    pub fn get(&mut self, path: &str) -> Result<Vec<u8>> {
        let (id, r) = self.request(Message::Get { path, offset: 0 })?;
        let size = match r.parse()?.message {
            Message::FileInfo {
                size, offset: 0, ..
            } => size,
            m => return Err(unexpected("FileInfo from offset 0", &m)),
        };
        let mut data = Vec::with_capacity(size as usize);
        let mut h = Sha256::new();
        loop {
            let r = self.expect(id)?;
            match r.parse()?.message {
                Message::Data => {
                    if r.body.len() > self.max_chunk as usize {
                        return Err(ClientError::Protocol("Data over max_chunk".into()));
                    }
                    h.update(&r.body);
                    data.extend_from_slice(&r.body);
                }
                Message::Done { bytes, sha256 } => {
                    let mine: [u8; 32] = h.finalize().into();
                    if bytes != size || data.len() as u64 != size {
                        return Err(ClientError::Protocol(format!(
                            "got {} bytes of {size} (Done says {bytes})",
                            data.len()
                        )));
                    }
                    if sha256 != Some(mine) {
                        return Err(ClientError::Protocol("SHA-256 mismatch".into()));
                    }
                    return Ok(data);
                }
                m => return Err(unexpected("Data or Done", &m)),
            }
        }
    }

    /// Upload `data` to `path`; returns the SHA-256 the device verified.
    pub fn put(&mut self, path: &str, data: &[u8], force: bool) -> Result<[u8; 32]> {
        let size = data.len() as u64;
        let (id, r) = self.request(Message::Put {
            path,
            size,
            force,
            resume: false,
        })?;
        match r.parse()?.message {
            Message::PutReady { offset: 0, .. } => {}
            m => return Err(unexpected("PutReady at 0", &m)),
        }
        for chunk in data.chunks(self.max_chunk.max(1) as usize) {
            self.send(&Header::new(id, Message::Data), chunk)?;
        }
        let digest: [u8; 32] = Sha256::digest(data).into();
        self.send(
            &Header::new(
                id,
                Message::Done {
                    bytes: size,
                    sha256: Some(digest),
                },
            ),
            &[],
        )?;
        let r = self.expect(id)?;
        match r.parse()?.message {
            Message::Done {
                bytes,
                sha256: Some(d),
            } if bytes == size && d == digest => Ok(d),
            m => Err(unexpected("Done with the upload's digest", &m)),
        }
    }

    /// Remove a file.
    pub fn remove(&mut self, path: &str) -> Result<()> {
        let (_, r) = self.request(Message::Remove { path })?;
        match r.parse()?.message {
            Message::Done { .. } => Ok(()),
            m => Err(unexpected("Done", &m)),
        }
    }
}

/// Encode one request as a UDP datagram.
pub fn datagram(h: &Header<'_>) -> Vec<u8> {
    let mut b = vec![0u8; tether_proto::MAX_DATAGRAM * 2];
    let n = tether_proto::encode_frame(h, &[], &mut b)
        .map(|f| f.len())
        .unwrap_or(0);
    b.truncate(n);
    b
}

/// Check that `d` is exactly one whole frame and return its header bytes.
pub fn parse_datagram(d: &[u8]) -> Result<Vec<u8>> {
    let mut hb = vec![0u8; 2048];
    let mut dec = tether_proto::Decoder::new(
        &mut hb[..],
        Limits {
            max_header: 2048,
            max_body: 0,
        },
    );
    let (n, r) = dec.handle_bytes(d);
    match r {
        Ok(Some(tether_proto::Event::Header(f))) if n == d.len() => Ok(f.header.to_vec()),
        Ok(_) => Err(ClientError::Protocol(
            "datagram is not one whole frame".into(),
        )),
        Err(e) => Err(ClientError::Protocol(e.to_string())),
    }
}

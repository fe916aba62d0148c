//! A connection to a server: the core's client engine driven over a tokio
//! TCP stream. This moves bytes and hands each event to the command that
//! asked; every protocol rule (handshake, sealing, ids, replies, digests,
//! resume checks) is the engine's.

use std::future::Future;
use std::net::SocketAddr;

use std::task::Poll;

use tether_proto::client::{
    Buffers, ClientConfig, ClientConn, ConnError, Event, LocalFailure, ReqId, Request,
    RequestError, Uploads,
};
use tether_proto::handshake::HandshakeError;
use tether_proto::{Caps, ErrorCode};
use tokio::net::TcpStream;

use crate::error::Error;

/// Most requests a command keeps in flight on one connection.
pub const IN_FLIGHT: usize = 8;

type Engine = ClientConn<Vec<u8>, IN_FLIGHT>;

/// The smallest read buffer (grown while reads fill it).
const SMALL: usize = 16 * 1024;
/// The largest read buffer.
const READ_MAX: usize = 512 * 1024;

/// What the server announced.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// Its software.
    pub agent: String,
    /// Its capabilities.
    pub caps: Caps,
    /// The negotiated largest body.
    pub max_chunk: u32,
    /// The negotiated largest header.
    pub max_header: u16,
    /// Requests in flight it runs.
    pub max_requests: u16,
    /// Authenticated and sealed.
    pub authenticated: bool,
    /// Encrypted too.
    pub encrypted: bool,
}

/// What a command brings besides the connection: its upload source, and
/// where what it receives goes.
pub trait Local: Uploads {
    /// Resolves when an upload's data the engine waited for is ready (the
    /// request to wake), or when a full local queue drained (`None`).
    /// Never resolves when there is nothing to wait for. `paused` is what
    /// [`Local::paused`] said when the caller stopped reading: then this
    /// resolves once that pause may be over (the socket is not watched).
    fn ready(&mut self, paused: bool) -> impl Future<Output = Option<ReqId>>;
    /// Whether input must wait (what arrived is not written yet).
    fn paused(&self) -> bool {
        false
    }
}

/// A command with nothing to upload or write.
#[derive(Debug, Default)]
pub struct Nothing;

impl Uploads for Nothing {
    fn hash_prefix(&mut self, _: ReqId, _: u64) -> Poll<Result<sha2::Sha256, LocalFailure<'_>>> {
        Poll::Ready(Err(NO_UPLOAD))
    }
    fn read(&mut self, _: ReqId, _: u64, _: &mut [u8]) -> Poll<Result<usize, LocalFailure<'_>>> {
        Poll::Ready(Err(NO_UPLOAD))
    }
    fn check_unchanged(&mut self, _: ReqId) -> Poll<Result<(), LocalFailure<'_>>> {
        Poll::Ready(Err(NO_UPLOAD))
    }
}

const NO_UPLOAD: LocalFailure<'static> = LocalFailure {
    code: ErrorCode::INTERNAL,
    message: "this command uploads nothing",
};

impl Local for Nothing {
    async fn ready(&mut self, _: bool) -> Option<ReqId> {
        std::future::pending().await
    }
}

/// A connected, handshaken connection to a server.
#[derive(Debug)]
pub struct Remote {
    conn: Engine,
    stream: TcpStream,
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    out_at: usize,
    out_end: usize,
    eof: bool,
    /// The host as the user named it.
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
    /// What the server announced (after the handshake).
    pub info: ServerInfo,
    epoch: std::time::Instant,
}

impl Remote {
    /// An engine over `stream`, before the handshake.
    pub fn new(stream: TcpStream, host: String, addr: SocketAddr, cfg: ClientConfig) -> Self {
        let header = usize::from(cfg.max_header);
        let frame = cfg.key.map(|_| vec![0; header + cfg.max_chunk as usize]);
        let conn = ClientConn::new(
            cfg,
            Buffers {
                header: vec![0; header],
                staging: vec![0; header + 1024],
                frame,
            },
        );
        Remote {
            conn,
            stream,
            input: Vec::new(),
            filled: 0,
            output: Vec::new(),
            out_at: 0,
            out_end: 0,
            eof: false,
            host,
            addr,
            info: ServerInfo {
                agent: String::new(),
                caps: Caps::empty(),
                max_chunk: 0,
                max_header: 0,
                max_requests: 0,
                authenticated: false,
                encrypted: false,
            },
            epoch: std::time::Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Run the handshake to its end.
    pub async fn handshake(&mut self, nonce: [u8; 16]) -> Result<(), Error> {
        let now = self.now();
        self.conn.connect(now, nonce);
        let mut result = None;
        while result.is_none() {
            let host = self.host.clone();
            let mut info = None;
            self.step(&mut Nothing, &mut |ev, _| {
                match ev {
                    Event::Connected(i) => {
                        info = Some(ServerInfo {
                            agent: i.agent.to_string(),
                            caps: i.caps,
                            max_chunk: i.max_chunk,
                            max_header: i.max_header,
                            max_requests: i.max_requests,
                            authenticated: i.authenticated,
                            encrypted: i.encrypted,
                        });
                        result = Some(Ok(()));
                    }
                    Event::Closed(e) => result = Some(Err(refusal(&host, e))),
                    _ => {}
                }
                Ok(())
            })
            .await
            .map_err(|e| match e {
                // A reset, not a close: a server refusing a flood of
                // connections does that, as does a busy listener.
                Error::Lost { detail, .. } if !self.eof => Error::HandshakeReset {
                    host: self.host.clone(),
                    detail,
                },
                Error::Lost { detail, .. } => Error::NotTether {
                    host: self.host.clone(),
                    detail: format!(
                        "it closed the connection without answering the handshake ({detail})"
                    ),
                },
                e => e,
            })?;
            if let Some(i) = info {
                self.info = i;
            }
        }
        result.unwrap_or(Ok(()))
    }

    /// Queue a request (sending what is queued first when the queue is full).
    pub async fn request(&mut self, r: Request<'_>) -> Result<ReqId, Error> {
        loop {
            match self.conn.request(r.clone()) {
                Ok(id) => return Ok(id),
                Err(RequestError::NoRoom) => self.flush().await?,
                Err(RequestError::TooLarge) => {
                    return Err(Error::Usage(format!(
                        "the request is longer than the server's header limit of {} bytes: shorten the path or command",
                        self.info.max_header
                    )))
                }
                Err(e) => return Err(Error::Usage(format!("cannot send this request: {e}"))),
            }
        }
    }

    /// Ask the server to stop `req`.
    pub async fn cancel(&mut self, req: ReqId) -> Result<(), Error> {
        loop {
            match self.conn.cancel(req) {
                Err(RequestError::NoRoom) => self.flush().await?,
                _ => return Ok(()),
            }
        }
    }

    /// Send everything queued.
    async fn flush(&mut self) -> Result<(), Error> {
        loop {
            self.produce(&mut Nothing);
            if self.out_at == self.out_end {
                return Ok(());
            }
            self.stream.writable().await.map_err(|e| self.lost(e))?;
            self.write().map_err(|e| self.lost(e))?;
        }
    }

    /// One step: send what the engine has, hand it what arrived (each event
    /// to `on_event`, with the command's local side); if nothing happened,
    /// wait until the socket or the local side can move. Cancel-safe at
    /// its wait.
    pub async fn step<L: Local>(
        &mut self,
        local: &mut L,
        on_event: &mut dyn FnMut(Event<'_>, &mut L) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.produce(local);
        if self.out_at < self.out_end {
            self.write().map_err(|e| self.lost(e))?;
        }
        if self.consume(local, on_event)? > 0 {
            return Ok(());
        }
        if self.conn.is_closed() {
            return Err(Error::Lost {
                host: self.host.clone(),
                detail: "the connection is closed".into(),
            });
        }
        if self.eof {
            return Err(self.lost(std::io::Error::other("the server closed the connection")));
        }
        self.produce(local);
        let writing = self.out_at < self.out_end;
        let paused = local.paused();
        let reading = !paused && self.filled < READ_MAX;
        let deadline = self.conn.poll_timeout().map(|ms| {
            let left = ms.saturating_sub(self.now());
            tokio::time::Instant::now() + std::time::Duration::from_millis(left)
        });
        tokio::select! {
            r = self.stream.readable(), if reading => {
                r.map_err(|e| self.lost(e))?;
                self.read().map_err(|e| self.lost(e))?;
            }
            r = self.stream.writable(), if writing => {
                r.map_err(|e| self.lost(e))?;
                self.write().map_err(|e| self.lost(e))?;
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                let now = self.now();
                self.conn.handle_timeout(now);
            }
            r = local.ready(paused) => {
                if let Some(req) = r {
                    self.conn.handle_ready(req);
                }
            }
        }
        Ok(())
    }

    fn lost(&self, e: std::io::Error) -> Error {
        Error::Lost {
            host: self.host.clone(),
            detail: e.to_string(),
        }
    }

    /// Let the engine fill the write buffer when it is empty.
    fn produce<L: Local>(&mut self, local: &mut L) {
        if self.out_at < self.out_end || !self.conn.wants_transmit() {
            return;
        }
        let want = (self.conn.max_chunk() as usize + 1024).max(SMALL);
        if self.output.len() < want {
            self.output.resize(want, 0);
        }
        let now = self.now();
        let n = self.conn.poll_transmit(now, &mut self.output, local);
        self.out_at = 0;
        self.out_end = n;
    }

    fn write(&mut self) -> std::io::Result<()> {
        match self
            .stream
            .try_write(&self.output[self.out_at..self.out_end])
        {
            Ok(n) => {
                self.out_at += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn read(&mut self) -> std::io::Result<()> {
        if self.input.len() < SMALL {
            self.input.resize(SMALL, 0);
        }
        if self.filled == self.input.len() && self.input.len() < READ_MAX {
            let grown = (self.input.len() * 4).min(READ_MAX);
            self.input.resize(grown, 0);
        }
        match self.stream.try_read(&mut self.input[self.filled..]) {
            Ok(0) => {
                self.eof = true;
                Ok(())
            }
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Hand the engine what arrived, event by event; returns how many events.
    fn consume<L: Local>(
        &mut self,
        local: &mut L,
        on_event: &mut dyn FnMut(Event<'_>, &mut L) -> Result<(), Error>,
    ) -> Result<usize, Error> {
        let mut at = 0;
        let mut events = 0;
        loop {
            if local.paused() && at < self.filled {
                break;
            }
            let now = self.now();
            let (used, ev) = self.conn.handle_bytes(now, &self.input[at..self.filled]);
            at += used;
            match ev {
                Some(e) => {
                    events += 1;
                    if let Err(e) = on_event(e, local) {
                        self.input.copy_within(at..self.filled, 0);
                        self.filled -= at;
                        return Err(e);
                    }
                }
                None if used == 0 => break,
                None => {}
            }
        }
        self.input.copy_within(at..self.filled, 0);
        self.filled -= at;
        Ok(events)
    }

    /// The capabilities the server announced, even if the handshake failed.
    pub fn server_caps(&self) -> Caps {
        self.conn.server_caps()
    }

    /// Whether the server has closed this connection (checked without
    /// waiting; an idle-timeout Error arriving unasked counts as closing).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        if self.eof || self.conn.is_closed() {
            return true;
        }
        match self.stream.try_read(&mut b) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// How the handshake ended, as the user's error.
fn refusal(host: &str, e: ConnError<'_>) -> Error {
    let host = host.to_string();
    match e {
        ConnError::Server { code, message } => Error::Rejected {
            host,
            code,
            message: message.to_string(),
        },
        ConnError::Handshake(HandshakeError::NoEncryption) => Error::NoEncryption {
            host,
            authenticates: false,
        },
        ConnError::Handshake(HandshakeError::NotAuthenticated) => Error::Unauthenticated { host },
        ConnError::Handshake(HandshakeError::BadProof) => Error::ServerProof { host },
        ConnError::Handshake(HandshakeError::AuthRequired) => Error::Rejected {
            host,
            code: ErrorCode::AUTH_REQUIRED,
            message: "the server requires authentication, and no key is set".into(),
        },
        ConnError::Handshake(e) => Error::NotTether {
            host,
            detail: format!("its HelloAck is not acceptable: {e}"),
        },
        ConnError::NotTether(d) => Error::NotTether {
            host,
            detail: d.to_string(),
        },
        ConnError::Integrity(d) => Error::Integrity {
            host,
            detail: d.to_string(),
        },
        ConnError::Timeout => Error::HandshakeTimeout {
            host,
            after: std::time::Duration::ZERO,
        },
        e => Error::Protocol {
            host,
            detail: e.to_string(),
        },
    }
}

/// A connection-level failure after the handshake, as the user's error.
pub fn closed(host: &str, e: ConnError<'_>) -> Error {
    match e {
        ConnError::Server { code, message } => Error::Remote {
            code,
            message: message.to_string(),
        },
        ConnError::Integrity(d) => Error::Integrity {
            host: host.to_string(),
            detail: d.to_string(),
        },
        e @ ConnError::Stalled(_) => Error::Lost {
            host: host.to_string(),
            detail: e.to_string(),
        },
        e => Error::Protocol {
            host: host.to_string(),
            detail: e.to_string(),
        },
    }
}

//! The client side: connecting (with retries and clear failures), the
//! handshake, and the commands built on a [`Session`].

pub mod exec;
pub mod fs;
pub mod transfer;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tether_proto::handshake::{ClientHandshake, HandshakeError};
use tether_proto::{Caps, ErrorCode, Message};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::addr::HostSpec;
use crate::conn::{Incoming, Msg, ReadError, Reader, Writer};
use crate::error::Error;
use crate::key::Key;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOpts {
    /// Extra attempts after a refused connection (or a busy server).
    pub retries: u32,
    /// Wait before the first retry; doubles after each (at most 30 s).
    pub retry_delay: Duration,
    /// Limit for the TCP connect and for the handshake.
    pub connect_timeout: Duration,
    /// The pre-shared key: with one, the server must prove it holds the
    /// same key and every frame is sealed.
    pub key: Option<Key>,
    /// With a key, still accept a server that does not authenticate
    /// (unprotected session).
    pub insecure: bool,
    /// Require encryption (needs a key): a server that does not offer it is
    /// refused rather than used with integrity protection only.
    pub encrypt: bool,
}

impl Default for ConnectOpts {
    fn default() -> Self {
        ConnectOpts {
            retries: 0,
            retry_delay: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
            key: None,
            insecure: false,
            encrypt: false,
        }
    }
}

/// A connected, handshaken connection to a server.
#[derive(Debug)]
pub struct Session {
    /// Frames from the server.
    pub reader: Reader,
    /// Frames to the server.
    pub writer: Writer,
    /// The host as the user named it.
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
    /// Negotiated largest body per frame.
    pub max_chunk: usize,
    /// The server's capabilities.
    pub caps: Caps,
    /// The server's software.
    pub server_agent: String,
    /// Whether the session is authenticated and every frame sealed.
    pub sealed: bool,
    /// Whether every frame is also encrypted.
    pub encrypted: bool,
    next_id: u32,
}

/// Resolve `host` to socket addresses.
pub async fn resolve(host: &HostSpec) -> Result<Vec<SocketAddr>, Error> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.host.as_str(), host.port))
        .await
        .map_err(|source| Error::Resolve {
            host: host.host.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Resolve {
            host: host.host.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        });
    }
    Ok(addrs)
}

/// Why `--encrypt` without a key is refused.
pub const ENCRYPT_NEEDS_KEY: &str = "--encrypt (or TETHER_ENCRYPT) needs a key: encryption keys are derived from the pre-shared key during authentication. Pass --key-file PATH or set TETHER_KEY_FILE=PATH (the server's key, made with `tether keygen`), or drop --encrypt";

enum Attempt {
    Retry(Error),
    Fail(Error),
}

/// Connect to `host` and complete the handshake, retrying refused
/// connections (and busy servers) `opts.retries` times with backoff.
pub async fn connect(host: &HostSpec, opts: &ConnectOpts) -> Result<Session, Error> {
    if opts.encrypt && opts.key.is_none() {
        return Err(Error::Usage(ENCRYPT_NEEDS_KEY.into()));
    }
    let addrs = resolve(host).await?;
    let label = host.to_string();
    let mut delay = opts.retry_delay;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut last = None;
        for &addr in &addrs {
            match try_connect(&label, addr, opts, attempt).await {
                Ok(s) => return Ok(s),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry(e)) => last = Some(e),
            }
        }
        let Some(e) = last else {
            unreachable!("at least one address")
        };
        if attempt > opts.retries {
            return Err(e);
        }
        warn!(
            "{e}; retrying in {delay:.1?} (retry {attempt} of {})",
            opts.retries
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn try_connect(
    label: &str,
    addr: SocketAddr,
    opts: &ConnectOpts,
    attempt: u32,
) -> Result<Session, Attempt> {
    let host = label.to_string();
    let stream = match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(Attempt::Fail(Error::ConnectTimeout {
                host,
                after: opts.connect_timeout,
            }))
        }
        Ok(Err(e)) => {
            return Err(match e.kind() {
                io::ErrorKind::ConnectionRefused => Attempt::Retry(Error::Refused {
                    host,
                    addr,
                    attempts: attempt,
                }),
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    Attempt::Fail(Error::Unreachable { host, source: e })
                }
                io::ErrorKind::TimedOut => Attempt::Fail(Error::ConnectTimeout {
                    host,
                    after: opts.connect_timeout,
                }),
                _ => Attempt::Fail(Error::Connect { host, source: e }),
            })
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut reader = Reader::new(rd);
    let writer = Writer::new(wr, Duration::from_secs(300));
    let deadline = tokio::time::Instant::now() + opts.connect_timeout;
    let fail = |e: Error| Err(Attempt::Fail(e));
    let not_tether = |detail: String| {
        Attempt::Fail(Error::NotTether {
            host: label.to_string(),
            detail,
        })
    };
    let nonce = crate::key::nonce().map_err(|e| {
        Attempt::Fail(Error::Connect {
            host: label.to_string(),
            source: e,
        })
    })?;
    let mut hs = ClientHandshake::new(
        opts.key.as_ref().map(|k| k.0),
        nonce,
        tether_proto::HOST_MAX_HEADER,
        tether_proto::HOST_MAX_CHUNK,
        if opts.encrypt {
            Caps::ENCRYPT
        } else {
            Caps::empty()
        },
        crate::AGENT,
    );
    if let Err(e) = writer
        .send(0, Message::Hello(hs.hello().clone()), &[])
        .await
    {
        return Err(not_tether(format!(
            "it closed the connection at once ({e})"
        )));
    }
    let timeout = || {
        Attempt::Fail(Error::HandshakeTimeout {
            host: label.to_string(),
            after: opts.connect_timeout,
        })
    };
    let reply = match tokio::time::timeout_at(deadline, reader.next()).await {
        Err(_) => return Err(timeout()),
        Ok(Ok(r)) => r,
        Ok(Err(ReadError::Decode(e))) => {
            return Err(not_tether(format!(
                "it answered with bytes that are not a tether frame: {e}"
            )))
        }
        Ok(Err(ReadError::Header { err, .. })) => {
            return Err(not_tether(format!(
                "its answer to Hello does not parse: {err}"
            )))
        }
        Ok(Err(e)) => {
            return Err(not_tether(format!(
                "it closed the connection without answering the handshake ({e})"
            )))
        }
    };
    let rejected = |code: ErrorCode, message: String| {
        let e = Error::Rejected {
            host: label.to_string(),
            code,
            message,
        };
        if code == ErrorCode::BUSY {
            Attempt::Retry(e)
        } else {
            Attempt::Fail(e)
        }
    };
    let ack = match reply.msg {
        Msg::HelloAck(ack) => ack,
        Msg::Error { code, message } => return Err(rejected(code, message)),
        other => {
            return Err(not_tether(format!(
                "it answered Hello with {}",
                other.name()
            )))
        }
    };
    let mut sealed = false;
    let mut encrypted = false;
    match hs.handle_hello_ack(&ack.as_hello_ack()) {
        Ok(None) => {}
        Err(HandshakeError::NoEncryption) => {
            return fail(Error::NoEncryption {
                host: label.to_string(),
                authenticates: ack.caps.contains(Caps::AUTH_PSK),
            })
        }
        Err(HandshakeError::NotAuthenticated) if opts.insecure => {
            warn!("{label} does not authenticate: continuing without protection (--insecure)");
        }
        Err(HandshakeError::NotAuthenticated) => {
            return fail(Error::Unauthenticated {
                host: label.to_string(),
            })
        }
        Err(HandshakeError::AuthRequired) => {
            return fail(Error::Rejected {
                host: label.to_string(),
                code: ErrorCode::AUTH_REQUIRED,
                message: "the server requires authentication, and no key is set".into(),
            })
        }
        Err(e) => {
            return Err(not_tether(format!("its HelloAck is not acceptable: {e}")));
        }
        Ok(Some(proof)) => {
            if let Err(e) = writer.send(0, Message::Auth(proof), &[]).await {
                return fail(Error::Lost {
                    host: label.to_string(),
                    detail: format!("sending Auth: {e}"),
                });
            }
            let r = match tokio::time::timeout_at(deadline, reader.next()).await {
                Err(_) => return Err(timeout()),
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    return fail(Error::Lost {
                        host: label.to_string(),
                        detail: format!("during authentication: {e}"),
                    })
                }
            };
            let keys = match r.msg {
                Msg::AuthOk(p) if r.body_len == 0 && !r.sealed => match hs.handle_auth_ok(&p) {
                    Ok(k) => k,
                    Err(_) => {
                        return fail(Error::ServerProof {
                            host: label.to_string(),
                        })
                    }
                },
                Msg::Error { code, message } => return Err(rejected(code, message)),
                other => {
                    return fail(Error::Protocol {
                        host: label.to_string(),
                        detail: format!("expected AuthOk, got {}", other.name()),
                    })
                }
            };
            if !ack.caps.contains(Caps::SEAL) {
                return fail(Error::Protocol {
                    host: label.to_string(),
                    detail: "the server authenticated but does not seal frames".into(),
                });
            }
            match (keys.encrypt, keys.decrypt) {
                (Some(enc), Some(dec)) => {
                    writer.set_cipher(enc).await;
                    reader.set_decryptor(dec);
                    encrypted = true;
                }
                _ if opts.encrypt => {
                    // The handshake refuses this already; never go on unencrypted.
                    return fail(Error::NoEncryption {
                        host: label.to_string(),
                        authenticates: true,
                    });
                }
                _ => {
                    writer.set_sealer(keys.seal).await;
                    reader.set_opener(keys.open);
                }
            }
            sealed = true;
        }
    }
    let max_chunk = ack.max_chunk.min(tether_proto::HOST_MAX_CHUNK);
    let max_header = ack.max_header.min(tether_proto::HOST_MAX_HEADER);
    reader.set_limits(max_header, max_chunk);
    writer.set_max_header(max_header).await;
    debug!(
        "connected to {label} ({addr}): {} chunk {max_chunk} header {max_header} caps {:#x}{}",
        ack.agent,
        ack.caps.0,
        match (sealed, encrypted) {
            (true, true) => ", authenticated, encrypted",
            (true, false) => ", authenticated, sealed",
            _ => "",
        }
    );
    Ok(Session {
        reader,
        writer,
        host: label.to_string(),
        addr,
        max_chunk: max_chunk as usize,
        caps: ack.caps,
        server_agent: ack.agent,
        sealed,
        encrypted,
        next_id: 1,
    })
}

impl Session {
    /// A fresh request id.
    pub fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Send a frame.
    pub async fn send(&self, id: u32, msg: Message<'_>, body: &[u8]) -> Result<(), Error> {
        self.writer.send(id, msg, body).await.map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidInput {
                Error::Usage(format!("cannot send this request: {e}"))
            } else {
                self.lost(e.to_string())
            }
        })
    }

    /// The connection broke.
    pub fn lost(&self, detail: String) -> Error {
        Error::Lost {
            host: self.host.clone(),
            detail,
        }
    }

    /// A frame the protocol does not allow here.
    pub fn protocol(&self, detail: String) -> Error {
        Error::Protocol {
            host: self.host.clone(),
            detail,
        }
    }

    /// The next frame of request `id`. A connection-level Error (id 0) is
    /// returned as an error; frames of other requests are skipped.
    pub async fn recv(&mut self, id: u32) -> Result<Incoming, Error> {
        loop {
            let inc = self.recv_any().await?;
            if inc.id == id {
                return Ok(inc);
            }
            if inc.id == 0 {
                if let Msg::Error { code, message } = inc.msg {
                    return Err(Error::Remote { code, message });
                }
            }
            debug!("skipping {} for request {}", inc.msg.name(), inc.id);
        }
    }

    /// The next frame, of any request.
    pub async fn recv_any(&mut self) -> Result<Incoming, Error> {
        match self.reader.next().await {
            Ok(i) => Ok(i),
            Err(ReadError::Header { err, .. }) => {
                Err(self.protocol(format!("a frame's header does not parse: {err}")))
            }
            Err(ReadError::Decode(e)) => Err(self.protocol(e.to_string())),
            Err(e) => Err(self.read_error(e)),
        }
    }

    fn read_error(&self, e: ReadError) -> Error {
        match e {
            ReadError::Integrity(why) => Error::Integrity {
                host: self.host.clone(),
                detail: why.to_string(),
            },
            ReadError::BodyTooLong { .. } => self.protocol(e.to_string()),
            e => self.lost(e.to_string()),
        }
    }

    /// Read the current frame's whole body into `buf`, which must hold it
    /// (on a sealed session the bytes are returned only once they verified).
    pub async fn body(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        match self.reader.body_all(buf).await {
            Ok(n) => Ok(n),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// Answer an unexpected reply: a remote Error becomes [`Error::Remote`].
    pub fn unexpected(&self, msg: Msg, wanted: &str) -> Error {
        match msg {
            Msg::Error { code, message } => Error::Remote { code, message },
            other => self.protocol(format!("expected {wanted}, got {}", other.name())),
        }
    }

    /// Whether the server has closed this idle connection (checked without
    /// waiting; anything arriving unasked, such as an idle-timeout Error,
    /// counts as closing).
    pub async fn is_closed(&mut self) -> bool {
        tokio::time::timeout(Duration::ZERO, self.reader.next())
            .await
            .is_ok()
    }
}

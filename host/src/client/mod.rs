//! The client side: connecting (with retries and clear failures), and the
//! commands, each on a [`Remote`] (the core's client engine over TCP).

pub mod exec;
pub mod fs;
pub mod remote;
pub mod transfer;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tether_proto::client::ClientConfig;
use tether_proto::{Caps, ErrorCode};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::addr::HostSpec;
use crate::error::Error;
use crate::key::Key;

pub use remote::Remote;

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
pub async fn connect(host: &HostSpec, opts: &ConnectOpts) -> Result<Remote, Error> {
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

/// One attempt at one address: TCP connect, then the handshake.
async fn try_connect(
    label: &str,
    addr: SocketAddr,
    opts: &ConnectOpts,
    attempt: u32,
) -> Result<Remote, Attempt> {
    let stream = tcp_connect(label, addr, opts, attempt).await?;
    let _ = stream.set_nodelay(true);
    let cfg = ClientConfig {
        agent: crate::AGENT,
        max_header: tether_proto::HOST_MAX_HEADER,
        max_chunk: tether_proto::HOST_MAX_CHUNK,
        key: opts.key.as_ref().map(|k| k.0),
        encrypt: opts.encrypt,
        accept_unauthenticated: opts.insecure,
        handshake_timeout_ms: 0,
        ..ClientConfig::DEFAULT
    };
    let mut remote = Remote::new(stream, label.to_string(), addr, cfg);
    let nonce = crate::key::nonce().map_err(|e| {
        Attempt::Fail(Error::Connect {
            host: label.to_string(),
            source: e,
        })
    })?;
    match tokio::time::timeout(opts.connect_timeout, remote.handshake(nonce)).await {
        Err(_) => Err(Attempt::Fail(Error::HandshakeTimeout {
            host: label.to_string(),
            after: opts.connect_timeout,
        })),
        Ok(Err(
            e @ Error::Rejected {
                code: ErrorCode::BUSY,
                ..
            },
        )) => Err(Attempt::Retry(e)),
        Ok(Err(e @ Error::HandshakeReset { .. })) => Err(Attempt::Retry(e)),
        Ok(Err(Error::Unauthenticated { .. })) if opts.insecure => {
            unreachable!("accepted by the engine with --insecure")
        }
        Ok(Err(Error::NoEncryption { host, .. })) => Err(Attempt::Fail(Error::NoEncryption {
            authenticates: remote.server_caps().contains(Caps::AUTH_PSK),
            host,
        })),
        Ok(Err(e)) => Err(Attempt::Fail(e)),
        Ok(Ok(())) => {
            let i = &remote.info;
            if opts.key.is_some() && !i.authenticated {
                warn!("{label} does not authenticate: continuing without protection (--insecure)");
            }
            debug!(
                "connected to {label} ({addr}): {} chunk {} header {} caps {:#x}{}",
                i.agent,
                i.max_chunk,
                i.max_header,
                i.caps.0,
                match (i.authenticated, i.encrypted) {
                    (true, true) => ", authenticated, encrypted",
                    (true, false) => ", authenticated, sealed",
                    _ => "",
                }
            );
            Ok(remote)
        }
    }
}

/// The TCP connect, with its failures sorted into retry or fail.
async fn tcp_connect(
    label: &str,
    addr: SocketAddr,
    opts: &ConnectOpts,
    attempt: u32,
) -> Result<TcpStream, Attempt> {
    let host = label.to_string();
    match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(Attempt::Fail(Error::ConnectTimeout {
            host,
            after: opts.connect_timeout,
        })),
        Ok(Err(e)) => Err(match e.kind() {
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
        }),
        Ok(Ok(s)) => Ok(s),
    }
}

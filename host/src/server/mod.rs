//! `tether serve`: the core's server engine driven over TCP with tokio, its
//! backend on the file system (cap-std) and processes, and the datagram
//! services over UDP on the same port.
//!
//! Every connection runs in its own task ([`driver`]), with its engine
//! ([`tether_proto::server::ServerConn`]) and its [`backend::HostBackend`]:
//! file work on blocking threads, commands as processes, so a slow or
//! stalled client only ever delays itself. What the protocol says (the
//! handshake, sealing, ids, paths, digests, replies) is the engine's; this
//! module moves bytes, runs the work, and keeps what all connections share
//! (the root, the transfer limit, the uploads in progress, the back-off).
//!
//! Shutdown (Ctrl-C / SIGTERM): stop accepting, refuse new requests with
//! BUSY, cancel running commands, let transfers in flight finish within the
//! grace period; whatever is cut off stays resumable (a Put's partial is
//! kept beside its destination, a Get's on the client).

pub mod backend;
mod claims;
mod driver;
pub mod exec;
pub mod files;
pub mod udp;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tether_proto::server::{Backoff, BackoffPolicy};
use tether_proto::{Caps, ErrorCode};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::key::Key;
use files::{Fail, Root};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Directory the files are confined to (and commands run in).
    pub root: PathBuf,
    /// Whether Exec is served.
    pub allow_exec: bool,
    /// Most connections served at once; more are refused with BUSY.
    pub max_connections: usize,
    /// Time a new connection has to send Hello (and Auth).
    pub handshake_timeout: Duration,
    /// A connection moving no byte for this long while no request waits on
    /// the server (a command, a file) is closed.
    pub idle_timeout: Duration,
    /// How long transfers in flight may go on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// The pre-shared key: with one, every connection must authenticate
    /// and every frame after that is sealed.
    pub key: Option<Key>,
    /// With a key: offer encryption (ENCRYPT) to clients that ask for it.
    pub offer_encryption: bool,
    /// Refuse Put and Remove (READ_ONLY).
    pub read_only: bool,
    /// When set, Exec runs only programs whose argv[0] equals one of these
    /// exactly, and shell lines are refused (NOT_ALLOWED).
    pub allow_cmds: Option<Vec<String>>,
    /// Most Get and Put requests running at once, server-wide; more are
    /// refused with BUSY.
    pub max_transfers: usize,
}

impl ServerConfig {
    /// A configuration with the defaults of `tether serve` for `root`.
    pub fn new(root: PathBuf) -> Self {
        ServerConfig {
            root,
            allow_exec: false,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(10),
            key: None,
            offer_encryption: true,
            read_only: false,
            allow_cmds: None,
            max_transfers: 64,
        }
    }

    /// What the engine announces and enforces for this configuration.
    fn engine(&self) -> tether_proto::server::ServerConfig {
        let mut caps = Caps::FILES.union(Caps::DIRS).union(Caps::RESUME);
        if !self.read_only {
            caps = caps.union(Caps::WRITE);
        }
        if self.allow_exec {
            caps = caps.union(Caps::EXEC);
            if self.allow_cmds.is_none() {
                caps = caps.union(Caps::SHELL);
            }
        }
        if self.key.is_some() && self.offer_encryption {
            caps = caps.union(Caps::ENCRYPT);
        }
        // The allow-list lives as long as the server: leaked once at start.
        let allowed = self.allow_cmds.as_ref().map(|l| {
            let v: Vec<&'static str> = l
                .iter()
                .map(|s| &*Box::leak(s.clone().into_boxed_str()))
                .collect();
            &*Box::leak(v.into_boxed_slice())
        });
        tether_proto::server::ServerConfig {
            agent: crate::AGENT,
            max_header: tether_proto::HOST_MAX_HEADER,
            max_chunk: tether_proto::HOST_MAX_CHUNK,
            caps,
            max_name: 255,
            max_path: 4095,
            key: self.key.as_ref().map(|k| k.0),
            handshake_timeout_ms: millis(self.handshake_timeout),
            idle_timeout_ms: millis(self.idle_timeout),
            allowed_commands: allowed,
        }
    }
}

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

/// Whether serving on `listen` is allowed: without a key only a loopback
/// address is, unless `insecure`.
pub fn check_exposure(listen: SocketAddr, keyed: bool, insecure: bool) -> Result<(), String> {
    if keyed || insecure || listen.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to serve on {listen} without a key: anyone who can reach that address could read and write the files under --root (and run commands, with --allow-exec). Create a key with `tether keygen tether.key`, then start with `--key-file tether.key` (or TETHER_KEY_FILE=tether.key) and give clients the same file; or listen on 127.0.0.1; or pass --insecure to serve unauthenticated anyway"
    ))
}

/// The sockets a server listens on.
#[derive(Debug)]
pub struct Bound {
    tcp: TcpListener,
    udp: UdpSocket,
}

impl Bound {
    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Bind TCP and UDP on `addr` (port 0 picks one port free for both).
pub async fn bind(addr: SocketAddr) -> io::Result<Bound> {
    let mut last = None;
    for _ in 0..50 {
        let tcp = TcpListener::bind(addr).await?;
        let at = tcp.local_addr()?;
        match UdpSocket::bind(at).await {
            Ok(udp) => return Ok(Bound { tcp, udp }),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both TCP and UDP")))
}

/// Peers the back-off table remembers.
const BACKOFF_PEERS: usize = 4096;

/// What every connection of a server shares.
#[derive(Debug)]
pub struct Shared {
    cfg: ServerConfig,
    engine: tether_proto::server::ServerConfig,
    root: Root,
    uploads: Arc<claims::Claims>,
    transfers: Arc<Semaphore>,
    backoff: Mutex<Backoff<BACKOFF_PEERS>>,
    /// The monotonic clock's start: engines get milliseconds since.
    epoch: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn backoff(&self) -> MutexGuard<'_, Backoff<BACKOFF_PEERS>> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place among the server's concurrent transfers, or BUSY.
    fn transfer_slot(&self) -> Result<OwnedSemaphorePermit, Fail> {
        self.transfers.clone().try_acquire_owned().map_err(|_| {
            Fail::new(
                ErrorCode::BUSY,
                format!(
                    "the server is running its limit of {} transfers (--max-transfers); try again later",
                    self.cfg.max_transfers
                ),
            )
        })
    }
}

/// Most refusals (BUSY at connect) being delivered at once; past that a
/// connection is closed without a word, so a flood of connections cannot
/// make the server hold ever more of them.
const MAX_REFUSING: usize = 64;

/// Serve until `shutdown` completes, then drain as described in the module docs.
pub async fn serve(
    cfg: ServerConfig,
    bound: Bound,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let root = Root::open(&cfg.root).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open root directory '{}': {e}", cfg.root.display()),
        )
    })?;
    let addr = bound.local_addr()?;
    announce(&cfg, &root, addr);
    let shared = Arc::new(Shared {
        engine: cfg.engine(),
        root,
        uploads: Arc::default(),
        transfers: Arc::new(Semaphore::new(cfg.max_transfers.max(1))),
        backoff: Mutex::new(Backoff::new(BackoffPolicy::HOST)),
        epoch: Instant::now(),
        cfg,
    });
    let (sd_tx, sd_rx) = watch::channel(false);
    let udp = tokio::spawn(udp::serve(Arc::new(bound.udp), sd_rx.clone()));
    let limit = Arc::new(Semaphore::new(shared.cfg.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = bound.tcp.accept() => match r {
                Ok((stream, peer)) => {
                    let (shared, sd) = (shared.clone(), sd_rx.clone());
                    match limit.clone().try_acquire_owned() {
                        Ok(permit) => {
                            conns.spawn(driver::connection(shared, stream, peer, sd, None, permit));
                        }
                        Err(_) => match refusing.clone().try_acquire_owned() {
                            Ok(permit) => {
                                warn!("{peer} refused: {} connections already", shared.cfg.max_connections);
                                let why = "the server has reached its connection limit; try again later";
                                conns.spawn(driver::connection(shared, stream, peer, sd, Some(why), permit));
                            }
                            Err(_) => drop(stream),
                        },
                    }
                }
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(bound.tcp);
    info!(
        "shutting down: {} connection(s) open, waiting up to {:?} for transfers in flight",
        conns.len(),
        shared.cfg.shutdown_grace
    );
    let _ = sd_tx.send(true);
    let all_done = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(shared.cfg.shutdown_grace, all_done)
        .await
        .is_err()
    {
        warn!("grace period over: closing the remaining connections (partial uploads are kept for resuming)");
        conns.shutdown().await;
    }
    let _ = udp.await;
    info!("stopped");
    Ok(())
}

fn announce(cfg: &ServerConfig, root: &Root, addr: SocketAddr) {
    info!(
        "serving {} on {addr} (tcp and udp), exec {}{}",
        root.path().display(),
        match (&cfg.allow_exec, &cfg.allow_cmds) {
            (false, _) => "disabled".to_string(),
            (true, None) => "enabled".to_string(),
            (true, Some(l)) => format!("limited to {}", l.join(", ")),
        },
        if cfg.read_only { ", read-only" } else { "" }
    );
    if cfg.key.is_some() && cfg.offer_encryption {
        info!("key set: clients must authenticate; every frame after that is sealed (HMAC-SHA256), and encrypted (ChaCha20-Poly1305) for clients that ask for it (--encrypt)");
    } else if cfg.key.is_some() {
        info!("key set: clients must authenticate; every frame after that is sealed (HMAC-SHA256); encryption is not offered (--no-encrypt), so clients that require it are refused");
    } else if addr.ip().is_loopback() {
        warn!("no key: serving unauthenticated on loopback only");
    } else {
        warn!("no key and --insecure: serving UNAUTHENTICATED on {addr}; anyone who can reach it is served");
    }
}

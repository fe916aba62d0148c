//! `tether serve`: the protocol over TCP and the datagram services over UDP
//! on the same port.
//!
//! Every connection runs in its own task and every request (exec, stat,
//! list, get, put, remove) in its own task within it, so a slow or stalled
//! client only ever delays itself. A connection's frames are read by one
//! loop that dispatches them: requests start tasks, `Data`/`Done` of a Put
//! go to that upload's channel, `Cancel` trips the target's cancel flag.
//!
//! Shutdown (Ctrl-C / SIGTERM): stop accepting, refuse new requests with
//! BUSY, cancel running commands, let transfers in flight finish within the
//! grace period; whatever is cut off stays resumable (a Put's partial is
//! kept beside its destination, a Get's on the client).

pub mod backoff;
pub mod exec;
pub mod files;
pub mod udp;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use tether_proto::handshake::{HandshakeError, ServerHandshake, ServerPolicy};
use tether_proto::{Caps, Digest, ErrorCode, Message};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::conn::{Incoming, Msg, OwnedCommand, ReadError, Reader, Writer};
use crate::key::Key;
use crate::pool::{Chunk, Pool, Returner};
use files::{RelPath, Root};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Directory the files are confined to (and commands run in).
    pub root: PathBuf,
    /// Whether Exec is served.
    pub allow_exec: bool,
    /// Most connections served at once; more are refused with BUSY.
    pub max_connections: usize,
    /// Time a new connection has to send Hello.
    pub handshake_timeout: Duration,
    /// An idle connection (no request in flight, no frame) is closed after
    /// this; also the longest a peer may refuse to accept data.
    pub idle_timeout: Duration,
    /// How long transfers in flight may go on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// The pre-shared key: with one, every connection must authenticate
    /// and every frame after that is sealed.
    pub key: Option<Key>,
    /// With a key: offer encryption (ENCRYPT) to clients that ask for it;
    /// their frames are then encrypted both ways. Default on.
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
}

/// What a client without the key is told.
pub const AUTH_REQUIRED_TEXT: &str =
    "this server requires a key: set TETHER_KEY_FILE or use --key-file";

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

/// Most requests in flight on one connection.
pub const MAX_REQUESTS: usize = 64;

/// Why a request failed: the code and text of its Error reply.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({code})")]
pub struct ReqError {
    /// The code.
    pub code: ErrorCode,
    /// The text.
    pub message: String,
}

impl ReqError {
    /// An error.
    pub fn new(code: ErrorCode, message: String) -> Self {
        ReqError { code, message }
    }
    /// The connection failed while answering.
    pub fn lost(e: io::Error) -> Self {
        ReqError::new(ErrorCode::IO, format!("connection lost: {e}"))
    }
    fn cancelled() -> Self {
        ReqError::new(ErrorCode::CANCELLED, "cancelled".into())
    }
    fn internal(what: &str) -> Self {
        ReqError::new(ErrorCode::INTERNAL, format!("internal error: {what}"))
    }
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

struct Ctx {
    cfg: ServerConfig,
    root: Root,
    uploads: Mutex<HashSet<String>>,
    transfers: Arc<Semaphore>,
    backoff: backoff::Backoff,
}

/// Marks a destination as being uploaded to, for the guard's lifetime.
struct UploadClaim {
    ctx: Arc<Ctx>,
    path: String,
}

impl Drop for UploadClaim {
    fn drop(&mut self) {
        if let Ok(mut u) = self.ctx.uploads.lock() {
            u.remove(&self.path);
        }
    }
}

fn claim(ctx: &Arc<Ctx>, path: &RelPath) -> Result<UploadClaim, ReqError> {
    let mut u = ctx
        .uploads
        .lock()
        .map_err(|_| ReqError::internal("upload table poisoned"))?;
    if !u.insert(path.0.clone()) {
        return Err(ReqError::new(
            ErrorCode::BUSY,
            format!("another upload to '{}' is in progress", path.0),
        ));
    }
    Ok(UploadClaim {
        ctx: ctx.clone(),
        path: path.0.clone(),
    })
}

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
    let ctx = Arc::new(Ctx {
        root,
        uploads: Mutex::new(HashSet::new()),
        transfers: Arc::new(Semaphore::new(cfg.max_transfers.max(1))),
        backoff: backoff::Backoff::new(),
        cfg,
    });
    let (sd_tx, sd_rx) = watch::channel(false);
    let udp = tokio::spawn(udp::serve(Arc::new(bound.udp), sd_rx.clone()));
    let limit = Arc::new(Semaphore::new(ctx.cfg.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = bound.tcp.accept() => match r {
                Ok((stream, peer)) if ctx.backoff.refused(peer.ip(), Instant::now()).is_some() => {
                    let left = ctx.backoff.refused(peer.ip(), Instant::now()).unwrap_or_default();
                    let msg = format!(
                        "too many failed authentications from {}: refused for {} s more; check the key (TETHER_KEY_FILE or --key-file) and retry after that",
                        peer.ip(),
                        left.as_secs() + 1
                    );
                    warn!("{peer} refused: backing off after failed authentications ({} s left)", left.as_secs() + 1);
                    refuse_bounded(&mut conns, &refusing, stream, msg);
                }
                Ok((stream, peer)) => match limit.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (ctx, sd) = (ctx.clone(), sd_rx.clone());
                        conns.spawn(async move {
                            connection(ctx, stream, peer, sd).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        warn!("{peer} refused: {} connections already", ctx.cfg.max_connections);
                        refuse_bounded(
                            &mut conns,
                            &refusing,
                            stream,
                            "the server has reached its connection limit; try again later".into(),
                        );
                    }
                },
                Err(e) => {
                    // Out of descriptors, say: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(bound.tcp);
    let n = conns.len();
    info!(
        "shutting down: {n} connection(s) open, waiting up to {:?} for transfers in flight",
        ctx.cfg.shutdown_grace
    );
    let _ = sd_tx.send(true);
    let all_done = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(ctx.cfg.shutdown_grace, all_done)
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

/// Most refusals (BUSY at connect) being delivered at once; past that a
/// connection is closed without a word, so a flood of connections cannot
/// make the server hold ever more of them.
const MAX_REFUSING: usize = 64;

fn refuse_bounded(
    conns: &mut JoinSet<()>,
    refusing: &Arc<Semaphore>,
    stream: TcpStream,
    msg: String,
) {
    match refusing.clone().try_acquire_owned() {
        Ok(permit) => {
            conns.spawn(async move {
                refuse(stream, ErrorCode::BUSY, &msg).await;
                drop(permit);
            });
        }
        Err(_) => drop(stream),
    }
}

/// Tell a connection why it is refused and close it, with small buffers
/// and short deadlines (it never gets a reader or writer of its own).
async fn refuse(mut stream: TcpStream, code: ErrorCode, msg: &str) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = [0u8; 512];
    let h = tether_proto::Header::new(
        0,
        Message::Error {
            code,
            message: crate::conn::clip(msg, 400),
        },
    );
    let Ok(frame) = tether_proto::encode_frame(&h, &[], &mut buf) else {
        return;
    };
    let frame = frame.to_vec();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(&frame).await?;
        stream.shutdown().await
    })
    .await;
    // Read what the peer still sends for a moment, so the Error is not
    // lost to a reset.
    let mut scratch = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = stream.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Close politely: stop sending, then read (and drop) what the peer still
/// sends for a moment, so the last frame is not lost to a reset.
async fn close(w: &Writer, r: &mut Reader) {
    w.shutdown().await;
    r.drain(Duration::from_secs(2)).await;
}

async fn connection(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr, sd: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let (rd, wr) = stream.into_split();
    let mut reader = Reader::new(rd);
    let writer = Writer::new(wr, ctx.cfg.idle_timeout);
    let (hello, chunk) = match handshake(&ctx, &mut reader, &writer, peer.ip()).await {
        Ok(h) => h,
        Err(e) => {
            info!(%peer, "connection refused: {e}");
            close(&writer, &mut reader).await;
            return;
        }
    };
    debug!(%peer, agent = %hello, sealed = reader.is_sealed(), encrypted = reader.is_encrypted(), "connected");
    let mut conn = Conn {
        ctx,
        peer,
        writer,
        chunk,
        reqs: HashMap::new(),
        uploads: HashMap::new(),
        tasks: JoinSet::new(),
        done: mpsc::unbounded_channel(),
        draining: false,
        ended: VecDeque::new(),
    };
    let why = conn.run(&mut reader, sd).await;
    // The connection is over (the peer left, or its last Error is out):
    // requests still running end without another frame.
    conn.writer.stop().await;
    for r in conn.reqs.values() {
        let _ = r.cancel.send(true);
    }
    conn.uploads.clear();
    while conn.tasks.join_next().await.is_some() {}
    debug!(%peer, "closing after {:.1?}: {why}", started.elapsed());
    close(&conn.writer, &mut reader).await;
}

/// Hello (and, with a key, Auth) within the handshake deadline. Returns
/// the peer's agent and the negotiated chunk size.
async fn handshake(
    ctx: &Ctx,
    reader: &mut Reader,
    writer: &Writer,
    ip: IpAddr,
) -> Result<(String, usize), String> {
    let deadline = tokio::time::Instant::now() + ctx.cfg.handshake_timeout;
    let refuse = |id: u32, code: ErrorCode, msg: String| async move {
        let _ = writer.send_error(id, code, &msg).await;
        Err::<(String, usize), String>(msg)
    };
    let first = tokio::time::timeout_at(deadline, reader.next()).await;
    let inc = match first {
        Err(_) => {
            let msg = format!("no Hello within {:?}; closing", ctx.cfg.handshake_timeout);
            return refuse(0, ErrorCode::TIMEOUT, msg).await;
        }
        Ok(Err(ReadError::Decode(e))) => {
            return refuse(0, e.code(), format!("not a tether frame: {e}")).await;
        }
        Ok(Err(ReadError::Header { err, .. })) => {
            let id = err.request_id.unwrap_or(0);
            return refuse(id, err.code(), format!("invalid Hello: {err}")).await;
        }
        Ok(Err(e)) => return Err(format!("closed before Hello: {e}")),
        Ok(Ok(inc)) => inc,
    };
    let hello = match inc.msg {
        Msg::Hello(h) if inc.body_len == 0 && !inc.sealed => h,
        other => {
            let msg = format!(
                "expected Hello as the first frame, got {}{}",
                other.name(),
                if inc.sealed { " (sealed)" } else { "" }
            );
            return refuse(0, ErrorCode::UNEXPECTED, msg).await;
        }
    };
    let mut caps = Caps::FILES;
    if !ctx.cfg.read_only {
        caps = caps.union(Caps::WRITE);
    }
    if ctx.cfg.allow_exec {
        caps = caps.union(Caps::EXEC);
        if ctx.cfg.allow_cmds.is_none() {
            caps = caps.union(Caps::SHELL);
        }
    }
    if ctx.cfg.key.is_some() && ctx.cfg.offer_encryption {
        // Negotiated only with clients that ask for it (and authenticate).
        caps = caps.union(Caps::ENCRYPT);
    }
    let policy = ServerPolicy {
        max_header: tether_proto::HOST_MAX_HEADER,
        max_chunk: tether_proto::HOST_MAX_CHUNK,
        caps,
        max_requests: 64,
        max_name: 255,
        max_path: 4095,
    };
    let nonce = crate::key::nonce().map_err(|e| e.to_string())?;
    let mut hs = ServerHandshake::new(ctx.cfg.key.as_ref().map(|k| k.0));
    let ack = match hs.handle_hello(&hello.as_hello(), &policy, nonce, crate::AGENT) {
        Ok(a) => a,
        Err(HandshakeError::AuthRequired) => {
            return refuse(0, ErrorCode::AUTH_REQUIRED, AUTH_REQUIRED_TEXT.into()).await;
        }
        Err(e) => return refuse(0, e.code(), format!("handshake refused: {e}")).await,
    };
    if hs.needs_auth() && !ack.caps.contains(Caps::SEAL) {
        let msg = "this server seals every frame after authentication, and the client did not offer SEAL: update the client".to_string();
        return refuse(0, ErrorCode::AUTH_REQUIRED, msg).await;
    }
    writer
        .send(0, Message::HelloAck(ack.clone()), &[])
        .await
        .map_err(|e| format!("sending HelloAck failed: {e}"))?;
    if hs.needs_auth() {
        // Still at the handshake limits: an unauthenticated peer gets 512 bytes.
        let inc = match tokio::time::timeout_at(deadline, reader.next()).await {
            Err(_) => {
                let msg = format!(
                    "no Auth within {:?} of connecting; closing",
                    ctx.cfg.handshake_timeout
                );
                return refuse(0, ErrorCode::TIMEOUT, msg).await;
            }
            Ok(Err(ReadError::Decode(e))) => {
                return refuse(0, e.code(), format!("not a tether frame: {e}")).await;
            }
            Ok(Err(ReadError::Header { err, .. })) => {
                let id = err.request_id.unwrap_or(0);
                return refuse(id, ErrorCode::AUTH_REQUIRED, AUTH_REQUIRED_TEXT.into()).await;
            }
            Ok(Err(e)) => return Err(format!("closed before Auth: {e}")),
            Ok(Ok(inc)) => inc,
        };
        let proof = match inc.msg {
            Msg::Auth(p) if inc.body_len == 0 && !inc.sealed => p,
            _ => {
                return refuse(inc.id, ErrorCode::AUTH_REQUIRED, AUTH_REQUIRED_TEXT.into()).await;
            }
        };
        match hs.handle_auth(&proof) {
            Ok((reply, keys)) => {
                ctx.backoff.succeeded(ip);
                writer
                    .send(0, Message::AuthOk(reply), &[])
                    .await
                    .map_err(|e| format!("sending AuthOk failed: {e}"))?;
                match (keys.encrypt, keys.decrypt) {
                    (Some(enc), Some(dec)) => {
                        writer.set_cipher(enc).await;
                        reader.set_decryptor(dec);
                    }
                    _ => {
                        writer.set_sealer(keys.seal).await;
                        reader.set_opener(keys.open);
                    }
                }
            }
            Err(HandshakeError::BadProof) => {
                let period = ctx.backoff.failed(ip, Instant::now());
                warn!(
                    "{ip}: authentication failed (wrong key){}",
                    period.map_or(String::new(), |p| format!(
                        "; refusing it for {} s",
                        p.as_secs()
                    ))
                );
                let mut msg =
                    "authentication failed: the client's key differs from the server's".to_string();
                if let Some(p) = period {
                    msg += &format!(
                        "; too many failures from {ip}: new connections are refused for {} s",
                        p.as_secs()
                    );
                }
                return refuse(0, ErrorCode::AUTH_FAILED, msg).await;
            }
            Err(e) => return refuse(0, e.code(), format!("authentication refused: {e}")).await,
        }
    }
    reader.set_limits(ack.max_header, ack.max_chunk);
    writer.set_max_header(ack.max_header).await;
    Ok((hello.agent, ack.max_chunk as usize))
}

struct Req {
    cancel: watch::Sender<bool>,
    is_exec: bool,
    /// An upload: it only progresses when the client sends, so the idle
    /// timeout applies to it.
    is_upload: bool,
}

/// What the connection loop hands an upload's blocking writer.
enum UpMsg {
    Data(Chunk),
    Done { bytes: u64, sha256: Option<Digest> },
}

struct Upload {
    tx: mpsc::Sender<UpMsg>,
    pool: Pool,
}

struct Conn {
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    writer: Writer,
    chunk: usize,
    reqs: HashMap<u32, Req>,
    uploads: HashMap<u32, Upload>,
    tasks: JoinSet<()>,
    done: (mpsc::UnboundedSender<u32>, mpsc::UnboundedReceiver<u32>),
    draining: bool,
    /// Ids of uploads that ended lately: their Data and Done, still in
    /// flight from the client, are dropped rather than refused.
    ended: VecDeque<u32>,
}

/// Uploads remembered in [`Conn::ended`].
const ENDED_UPLOADS: usize = 64;

/// What a finished request reports for the log: result text and bytes.
type Outcome = Result<(String, u64), ReqError>;

/// Resolves once the request is cancelled (or its connection is gone).
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Conn {
    async fn run(&mut self, reader: &mut Reader, mut sd: watch::Receiver<bool>) -> String {
        let idle = self.ctx.cfg.idle_timeout;
        loop {
            if self.draining && self.reqs.is_empty() {
                return "server shutting down".into();
            }
            let r = tokio::select! {
                biased;
                Some(id) = self.done.1.recv() => {
                    if self.reqs.remove(&id).is_some_and(|r| r.is_upload) {
                        self.upload_ended(id);
                    }
                    continue;
                }
                r = sd.changed(), if !self.draining => {
                    let _ = r;
                    self.draining = true;
                    for r in self.reqs.values().filter(|r| r.is_exec) {
                        let _ = r.cancel.send(true);
                    }
                    continue;
                }
                _ = tokio::time::sleep(idle), if self.reqs.values().all(|r| r.is_upload) => {
                    let msg = if self.reqs.is_empty() {
                        format!("idle for {idle:?}; closing (reconnect to go on)")
                    } else {
                        format!("no data for {idle:?} during an upload; closing (the partial is kept: run the put again to resume)")
                    };
                    let _ = self.writer.send_error(0, ErrorCode::TIMEOUT, &msg).await;
                    return msg;
                }
                r = reader.next() => r,
            };
            let inc = match r {
                Ok(inc) => inc,
                Err(ReadError::Header { err, .. }) => {
                    let id = err.request_id.unwrap_or(0);
                    let msg = format!("frame refused: {err}");
                    debug!(peer = %self.peer, "{msg}");
                    if self.writer.send_error(id, err.code(), &msg).await.is_err() {
                        return "connection lost".into();
                    }
                    continue;
                }
                Err(ReadError::Decode(e)) => {
                    let msg = format!("{e}; closing the connection");
                    let _ = self.writer.send_error(0, e.code(), &msg).await;
                    return msg;
                }
                Err(e @ ReadError::Integrity(_)) => {
                    let msg = format!("{e}; closing the connection");
                    warn!(peer = %self.peer, "{msg}");
                    let _ = self.writer.send_error(0, ErrorCode::INTEGRITY, &msg).await;
                    return msg;
                }
                Err(e) => return e.to_string(),
            };
            if let Err(e) = self.dispatch(reader, inc).await {
                return e;
            }
        }
    }

    /// An upload is over: forget its channel, remember its id for a while.
    fn upload_ended(&mut self, id: u32) {
        self.uploads.remove(&id);
        if self.ended.contains(&id) {
            return;
        }
        if self.ended.len() >= ENDED_UPLOADS {
            self.ended.pop_front();
        }
        self.ended.push_back(id);
    }

    /// Handle one frame; `Err` ends the connection.
    async fn dispatch(&mut self, reader: &mut Reader, inc: Incoming) -> Result<(), String> {
        let Incoming {
            id,
            msg,
            body_len,
            sealed,
        } = inc;
        let lost = |e: io::Error| format!("connection lost: {e}");
        if sealed && !reader.is_sealed() {
            let m = format!(
                "a sealed {} frame on a session without keys (the server has no key, or authentication did not happen); its tag cannot be checked",
                msg.name()
            );
            return self
                .writer
                .send_error(id, ErrorCode::UNEXPECTED, &m)
                .await
                .map_err(lost);
        }
        if body_len > 0 && !msg.has_body() {
            let m = format!("{} frames carry no body", msg.name());
            return self
                .writer
                .send_error(id, ErrorCode::UNEXPECTED, &m)
                .await
                .map_err(lost);
        }
        let peer = self.peer;
        match msg {
            Msg::Ping { stamp } => {
                self.writer
                    .send(id, Message::Pong { stamp }, &[])
                    .await
                    .map_err(lost)?;
                info!(%peer, req = id, op = "ping", result = "ok", bytes = 0u64, secs = 0.0);
            }
            Msg::Echo { text } => {
                let up = text.to_ascii_uppercase();
                self.writer
                    .send(id, Message::EchoReply { text: &up }, &[])
                    .await
                    .map_err(lost)?;
                info!(%peer, req = id, op = "echo", result = "ok", bytes = up.len() as u64, secs = 0.0);
            }
            Msg::Time { format } => {
                let r = match crate::timefmt::now(&format) {
                    Ok((unix_ms, text)) => {
                        self.writer
                            .send(
                                id,
                                Message::TimeReply {
                                    unix_ms,
                                    text: &text,
                                },
                                &[],
                            )
                            .await
                    }
                    Err(m) => {
                        self.writer
                            .send_error(id, ErrorCode::INVALID_HEADER, &m)
                            .await
                    }
                };
                r.map_err(lost)?;
                info!(%peer, req = id, op = "time", result = "ok", bytes = 0u64, secs = 0.0);
            }
            Msg::Cancel { target } => {
                // No reply: an unknown target may just have finished.
                if let Some(r) = self.reqs.get(&target) {
                    let _ = r.cancel.send(true);
                }
                // An upload stops receiving at once; its task answers CANCELLED.
                if self.uploads.contains_key(&target) {
                    self.upload_ended(target);
                }
            }
            Msg::Data | Msg::Done { .. } if !self.uploads.contains_key(&id) => {
                if self.ended.contains(&id) {
                    // A finished or cancelled upload: drop the frame (the
                    // reader skips and checks its body).
                    return Ok(());
                }
                let m = format!(
                    "{} for request {id}, which is not an upload in progress on this connection",
                    msg.name()
                );
                info!(%peer, req = id, op = msg.name(), result = %m, bytes = 0u64, secs = 0.0);
                self.writer
                    .send_error(id, ErrorCode::BAD_REQUEST_ID, &m)
                    .await
                    .map_err(lost)?;
            }
            Msg::Data => {
                let Some(up) = self.uploads.get_mut(&id) else {
                    return Ok(());
                };
                let mut buf = up.pool.take();
                let n = match reader.body_all(&mut buf).await {
                    Ok(n) => n,
                    Err(e @ ReadError::Integrity(_)) => {
                        let msg = format!("{e}; closing the connection");
                        warn!(%peer, "{msg}");
                        let _ = self.writer.send_error(0, ErrorCode::INTEGRITY, &msg).await;
                        return Err(msg);
                    }
                    Err(e) => return Err(format!("reading data: {e}")),
                };
                if up
                    .tx
                    .send(UpMsg::Data(Chunk { buf, len: n }))
                    .await
                    .is_err()
                {
                    self.upload_ended(id);
                }
            }
            Msg::Done { bytes, sha256 } => {
                if let Some(up) = self.uploads.get(&id) {
                    let _ = up.tx.send(UpMsg::Done { bytes, sha256 }).await;
                }
                self.upload_ended(id);
            }
            Msg::Exec { .. }
            | Msg::Stat { .. }
            | Msg::List { .. }
            | Msg::Get { .. }
            | Msg::Put { .. }
            | Msg::Remove { .. } => {
                let refuse = if id == 0 {
                    Some((
                        ErrorCode::BAD_REQUEST_ID,
                        "request id 0 is reserved; number requests from 1".to_string(),
                    ))
                } else if self.reqs.contains_key(&id) {
                    Some((
                        ErrorCode::BAD_REQUEST_ID,
                        format!("request id {id} is already in use on this connection"),
                    ))
                } else if self.draining {
                    Some((
                        ErrorCode::BUSY,
                        "the server is shutting down; try again later".to_string(),
                    ))
                } else if self.reqs.len() >= MAX_REQUESTS {
                    Some((
                        ErrorCode::BUSY,
                        format!(
                            "too many requests in flight on this connection (limit {MAX_REQUESTS})"
                        ),
                    ))
                } else {
                    None
                };
                if let Some((code, m)) = refuse {
                    info!(%peer, req = id, op = msg.name(), result = %m, bytes = 0u64, secs = 0.0);
                    return self.writer.send_error(id, code, &m).await.map_err(lost);
                }
                self.start(id, msg);
            }
            other => {
                let m = format!("{} is not a request a client may send", other.name());
                self.writer
                    .send_error(id, ErrorCode::UNEXPECTED, &m)
                    .await
                    .map_err(lost)?;
            }
        }
        Ok(())
    }

    /// Start a request task.
    fn start(&mut self, id: u32, msg: Msg) {
        let (cancel_tx, cancel) = watch::channel(false);
        let ctx = self.ctx.clone();
        let w = self.writer.clone();
        let chunk = self.chunk;
        let is_exec = matches!(msg, Msg::Exec { .. });
        let is_upload = matches!(msg, Msg::Put { .. });
        let (op, fut): (
            String,
            std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>,
        ) = match msg {
            Msg::Exec {
                command,
                timeout_ms,
            } => {
                let op = match &command {
                    OwnedCommand::Argv(a) => format!("exec {a:?}"),
                    OwnedCommand::Shell(s) => format!("exec --shell {s:?}"),
                };
                (
                    op,
                    Box::pin(do_exec(
                        ctx,
                        w.clone(),
                        id,
                        command,
                        timeout_ms,
                        chunk,
                        cancel,
                    )),
                )
            }
            Msg::Stat { path } => (
                format!("stat {path:?}"),
                Box::pin(do_stat(ctx, w.clone(), id, path)),
            ),
            Msg::List { path } => (
                format!("ls {path:?}"),
                Box::pin(do_list(ctx, w.clone(), id, path, cancel)),
            ),
            Msg::Remove { path } => (
                format!("rm {path:?}"),
                Box::pin(do_remove(ctx, w.clone(), id, path)),
            ),
            Msg::Get { path, offset } => (
                format!("get {path:?} from {offset}"),
                Box::pin(do_get(ctx, w.clone(), id, path, offset, chunk, cancel)),
            ),
            Msg::Put {
                path,
                size,
                force,
                resume,
            } => {
                let (tx, rx) = mpsc::channel(4);
                let pool = Pool::new(chunk);
                let ret = pool.returner();
                self.uploads.insert(id, Upload { tx, pool });
                (
                    format!(
                        "put {path:?} ({size} bytes{}{})",
                        if force { ", force" } else { "" },
                        if resume { ", resume" } else { "" }
                    ),
                    Box::pin(do_put(
                        ctx,
                        w.clone(),
                        id,
                        path,
                        size,
                        force,
                        resume,
                        rx,
                        ret,
                        cancel,
                    )),
                )
            }
            other => {
                let m = other.name().to_string();
                (
                    m.clone(),
                    Box::pin(async move { Err(ReqError::internal(&m)) }),
                )
            }
        };
        self.reqs.insert(
            id,
            Req {
                cancel: cancel_tx,
                is_exec,
                is_upload,
            },
        );
        let done = self.done.0.clone();
        let peer = self.peer;
        self.tasks.spawn(async move {
            let t0 = Instant::now();
            let r = fut.await;
            let secs = t0.elapsed().as_secs_f64();
            match r {
                Ok((result, bytes)) => {
                    info!(%peer, req = id, %op, %result, bytes, secs);
                }
                Err(e) => {
                    let _ = w.send_error(id, e.code, &e.message).await;
                    let result = format!("error {}: {}", e.code.name().unwrap_or("?"), e.message);
                    info!(%peer, req = id, %op, %result, bytes = 0u64, secs);
                }
            }
            let _ = done.send(id);
        });
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReqError> + Send + 'static,
) -> Result<T, ReqError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ReqError::internal("file task failed"))?
}

async fn do_exec(
    ctx: Arc<Ctx>,
    w: Writer,
    id: u32,
    command: OwnedCommand,
    timeout_ms: Option<u32>,
    chunk: usize,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    if !ctx.cfg.allow_exec {
        return Err(ReqError::new(
            ErrorCode::EXEC_DISABLED,
            "exec is disabled on this server (its operator can enable it with `tether serve --allow-exec`)".into(),
        ));
    }
    if let Some(allowed) = &ctx.cfg.allow_cmds {
        exec::check_allowed(&command, allowed)?;
    }
    let (status, bytes) =
        exec::run(&w, id, &command, timeout_ms, ctx.root.path(), chunk, cancel).await?;
    w.send(id, Message::Exit { status }, &[])
        .await
        .map_err(ReqError::lost)?;
    Ok((format!("exit {status:?}"), bytes))
}

async fn do_stat(ctx: Arc<Ctx>, w: Writer, id: u32, path: String) -> Outcome {
    let rel = files::check_path(&path, false)?;
    let e = blocking(move || files::stat(&ctx.root, &rel)).await?;
    w.send(id, Message::StatReply(e.as_entry()), &[])
        .await
        .map_err(ReqError::lost)?;
    Ok(("ok".into(), 0))
}

fn read_only(ctx: &Ctx, what: &str) -> Result<(), ReqError> {
    if ctx.cfg.read_only {
        return Err(ReqError::new(
            ErrorCode::READ_ONLY,
            format!("this server is read-only (--read-only): {what} is refused; download with `tether get` instead"),
        ));
    }
    Ok(())
}

/// A place among the server's concurrent transfers, or BUSY.
fn transfer_slot(ctx: &Ctx) -> Result<tokio::sync::OwnedSemaphorePermit, ReqError> {
    ctx.transfers.clone().try_acquire_owned().map_err(|_| {
        ReqError::new(
            ErrorCode::BUSY,
            format!(
                "the server is already running its limit of {} transfers (--max-transfers); try again later",
                ctx.cfg.max_transfers
            ),
        )
    })
}

async fn do_remove(ctx: Arc<Ctx>, w: Writer, id: u32, path: String) -> Outcome {
    read_only(&ctx, "removing")?;
    let rel = files::check_path(&path, true)?;
    blocking(move || files::remove(&ctx.root, &rel)).await?;
    w.send(
        id,
        Message::Done {
            bytes: 0,
            sha256: None,
        },
        &[],
    )
    .await
    .map_err(ReqError::lost)?;
    Ok(("removed".into(), 0))
}

async fn do_list(
    ctx: Arc<Ctx>,
    w: Writer,
    id: u32,
    path: String,
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    let rel = files::check_path(&path, false)?;
    let (tx, mut rx) = mpsc::channel(64);
    let lister = tokio::task::spawn_blocking(move || {
        files::list(&ctx.root, &rel, |e| tx.blocking_send(e).is_ok())
    });
    let mut sent = 0u64;
    loop {
        let e = tokio::select! {
            e = rx.recv() => e,
            _ = cancelled(&mut cancel) => return Err(ReqError::cancelled()),
        };
        let Some(e) = e else { break };
        w.send(id, Message::ListEntry(e.as_entry()), &[])
            .await
            .map_err(ReqError::lost)?;
        sent += 1;
    }
    let n = lister
        .await
        .map_err(|_| ReqError::internal("list task failed"))??;
    debug_assert!(n >= sent);
    w.send(
        id,
        Message::Done {
            bytes: sent,
            sha256: None,
        },
        &[],
    )
    .await
    .map_err(ReqError::lost)?;
    Ok((format!("{sent} entries"), 0))
}

/// What a Get's reader thread sends.
enum FromFile {
    Chunk(Chunk),
    End(Digest),
    Fail(ReqError),
}

struct GetStart {
    size: u64,
    modified: u64,
    offset: u64,
    prefix: Option<Digest>,
}

async fn do_get(
    ctx: Arc<Ctx>,
    w: Writer,
    id: u32,
    path: String,
    offset: u64,
    chunk: usize,
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    let rel = files::check_path(&path, true)?;
    let _slot = transfer_slot(&ctx)?;
    let (info_tx, info_rx) = oneshot::channel::<Result<GetStart, ReqError>>();
    let (tx, mut rx) = mpsc::channel::<FromFile>(4);
    let pool = Pool::new(chunk);
    let ret = pool.returner();
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut gf = match files::open_get(&ctx.root, &rel) {
            Ok(f) => f,
            Err(e) => {
                let _ = info_tx.send(Err(e));
                return;
            }
        };
        let start = if offset <= gf.size { offset } else { 0 };
        let mut buf = pool.take();
        let hasher = match files::hash_prefix(&mut gf.file, start, &mut buf) {
            Ok(h) => h,
            Err(e) => {
                let _ = info_tx.send(Err(files::io_error(&e, &rel.0)));
                return;
            }
        };
        let mut hasher = hasher;
        let prefix = (start > 0).then(|| hasher.clone().finalize().into());
        let _ = info_tx.send(Ok(GetStart {
            size: gf.size,
            modified: gf.modified,
            offset: start,
            prefix,
        }));
        let mut left = gf.size - start;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let mut have = 0;
            while have < want {
                match gf.file.read(&mut buf[have..want]) {
                    Ok(0) => break,
                    Ok(n) => have += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(FromFile::Fail(files::io_error(&e, &rel.0)));
                        return;
                    }
                }
            }
            if have < want {
                let _ = tx.blocking_send(FromFile::Fail(ReqError::new(
                    ErrorCode::IO,
                    format!("'{}' shrank while being sent; try again", rel.0),
                )));
                return;
            }
            hasher.update(&buf[..have]);
            left -= have as u64;
            let full = std::mem::take(&mut buf);
            if tx
                .blocking_send(FromFile::Chunk(Chunk {
                    buf: full,
                    len: have,
                }))
                .is_err()
            {
                return;
            }
            buf = pool.take();
        }
        let _ = tx.blocking_send(FromFile::End(hasher.finalize().into()));
    });
    let info = info_rx
        .await
        .map_err(|_| ReqError::internal("reader thread ended"))??;
    w.send(
        id,
        Message::FileInfo {
            size: info.size,
            modified: info.modified,
            offset: info.offset,
            prefix_sha256: info.prefix,
        },
        &[],
    )
    .await
    .map_err(ReqError::lost)?;
    let mut sent = 0u64;
    loop {
        let m = tokio::select! {
            biased;
            _ = cancelled(&mut cancel) => return Err(ReqError::cancelled()),
            m = rx.recv() => m,
        };
        match m {
            Some(FromFile::Chunk(c)) => {
                w.send(id, Message::Data, c.bytes())
                    .await
                    .map_err(ReqError::lost)?;
                sent += c.len as u64;
                ret.give(c.buf);
            }
            Some(FromFile::End(d)) => {
                w.send(
                    id,
                    Message::Done {
                        bytes: info.size,
                        sha256: Some(d),
                    },
                    &[],
                )
                .await
                .map_err(ReqError::lost)?;
                let how = if info.offset > 0 {
                    format!("ok, resumed at {}, sha256 {}", info.offset, hex::encode(d))
                } else {
                    format!("ok, sha256 {}", hex::encode(d))
                };
                return Ok((how, sent));
            }
            Some(FromFile::Fail(e)) => return Err(e),
            None => return Err(ReqError::internal("reader thread ended")),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn do_put(
    ctx: Arc<Ctx>,
    w: Writer,
    id: u32,
    path: String,
    size: u64,
    force: bool,
    resume: bool,
    mut rx: mpsc::Receiver<UpMsg>,
    ret: Returner,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    read_only(&ctx, "uploading")?;
    let rel = files::check_path(&path, true)?;
    let _claim = claim(&ctx, &rel)?;
    let _slot = transfer_slot(&ctx)?;
    let ctx2 = ctx.clone();
    let rel2 = rel.clone();
    let mut target =
        blocking(move || files::open_put(&ctx2.root, &rel2, size, force, resume)).await?;
    let start = target.offset;
    let prefix = (start > 0).then(|| target.hasher.clone().finalize().into());
    w.send(
        id,
        Message::PutReady {
            offset: start,
            prefix_sha256: prefix,
        },
        &[],
    )
    .await
    .map_err(ReqError::lost)?;
    // The blocking side hashes and writes every chunk the connection hands it.
    let shown = rel.0.clone();
    let (target, end) = tokio::task::spawn_blocking(move || {
        while let Some(m) = rx.blocking_recv() {
            match m {
                UpMsg::Data(c) => {
                    if target.offset + c.len as u64 > size {
                        let e = ReqError::new(
                            ErrorCode::BAD_LENGTH,
                            format!("more data than the announced {size} bytes"),
                        );
                        return (target, Err(e));
                    }
                    if let Err(e) = target.write(c.bytes()) {
                        let e = files::io_error(&e, &shown);
                        return (target, Err(e));
                    }
                    ret.give(c.buf);
                }
                UpMsg::Done { bytes, sha256 } => return (target, Ok(Some((bytes, sha256)))),
            }
        }
        (target, Ok(None))
    })
    .await
    .map_err(|_| ReqError::internal("writer thread failed"))?;
    let received = target.offset - start;
    let (bytes, sha256) = match end {
        Err(e) => {
            if e.code == ErrorCode::BAD_LENGTH {
                let _ = tokio::task::spawn_blocking(move || target.discard()).await;
            }
            return Err(e);
        }
        Ok(None) => {
            let _ = target.file.sync_data();
            return Err(if *cancel.borrow() {
                ReqError::new(
                    ErrorCode::CANCELLED,
                    format!("cancelled; {} bytes kept for resuming", target.offset),
                )
            } else {
                ReqError::lost(io::Error::other(format!(
                    "upload interrupted; {} bytes kept for resuming",
                    target.offset
                )))
            });
        }
        Ok(Some(d)) => d,
    };
    let digest: Digest = target.hasher.clone().finalize().into();
    if bytes != size || target.offset != size {
        let have = target.offset;
        let _ = tokio::task::spawn_blocking(move || target.discard()).await;
        return Err(ReqError::new(
            ErrorCode::BAD_LENGTH,
            format!("announced {size} bytes, Done says {bytes}, received {have}; the partial was discarded, send it again"),
        ));
    }
    if sha256 != Some(digest) {
        let _ = tokio::task::spawn_blocking(move || target.discard()).await;
        return Err(ReqError::new(
            ErrorCode::DIGEST_MISMATCH,
            format!(
                "the data received hashes to {}, the client announced {}; nothing was stored, send it again",
                hex::encode(digest),
                sha256.map(hex::encode).unwrap_or_else(|| "no digest".into())
            ),
        ));
    }
    let shown = rel.0.clone();
    blocking(move || target.commit(force, &shown)).await?;
    w.send(
        id,
        Message::Done {
            bytes: size,
            sha256: Some(digest),
        },
        &[],
    )
    .await
    .map_err(ReqError::lost)?;
    let how = if start > 0 {
        format!("ok, resumed at {start}, sha256 {}", hex::encode(digest))
    } else {
        format!("ok, sha256 {}", hex::encode(digest))
    };
    Ok((how, received))
}

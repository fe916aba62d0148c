//! One connection: the engine driven over a tokio TCP stream. This moves
//! bytes between the socket and the engine, hands the engine the work its
//! backend finished, and keeps the engine's clock and deadlines; it has no
//! protocol rule of its own.
//!
//! Buffers follow the traffic: the read and write buffers start small, grow
//! while they fill, and are given back when the connection is idle, so an
//! idle connection holds little more than the engine.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tether_proto::server::{Buffers, Peer, ServerConn, CLOSE_GRACE_MS};
use tether_proto::ErrorCode;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tracing::debug;

use super::backend::{HostBackend, CHUNK};
use super::Shared;

/// Most requests in flight on one connection (announced as `max_requests`).
pub const MAX_REQUESTS: usize = 32;

/// The smallest read and write buffers (grown while they fill).
const SMALL: usize = 4096;
/// The largest write buffer: one whole Data frame of the negotiated size.
const LARGE: usize = CHUNK + 16 * 1024;
/// The largest read buffer.
const READ_MAX: usize = 256 * 1024;

type Engine = ServerConn<Vec<u8>, MAX_REQUESTS>;

fn peer_of(ip: IpAddr) -> Peer {
    match ip {
        IpAddr::V4(a) => Peer::ipv4(a.octets()),
        IpAddr::V6(a) => Peer::ipv6(a.octets()),
    }
}

/// Bytes waiting to go out: `buf[at..end]`.
#[derive(Debug, Default)]
struct Outgoing {
    buf: Vec<u8>,
    at: usize,
    end: usize,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.at == self.end
    }
}

/// Bytes read and not yet taken by the engine: `buf[..len]`.
#[derive(Debug, Default)]
struct Incoming {
    buf: Vec<u8>,
    len: usize,
}

/// Serve one connection until it closes. With `refuse`, the connection
/// is told why it is refused (BUSY) and closed. `permit` (its place in the
/// connection limit) is given back as soon as the engine is done, before
/// the polite close: a closing connection serves no one.
pub async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    refuse: Option<&'static str>,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut bk = HostBackend::new(shared.clone(), peer, events_tx);
    let frame = shared.engine.caps.contains(tether_proto::Caps::ENCRYPT);
    let mut conn: Engine = ServerConn::new(
        shared.engine,
        Buffers {
            header: vec![0; usize::from(shared.engine.max_header)],
            staging: vec![0; usize::from(shared.engine.max_header) + 1024],
            // Given on demand, only to encrypted sessions.
            frame: frame.then(Vec::new),
        },
    );
    let nonce = match crate::key::nonce() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("no randomness for a nonce: {e}; closing {peer}");
            return;
        }
    };
    conn.handle_accept(shared.now_ms(), peer_of(peer.ip()), nonce, &mut bk);
    if let Some(why) = refuse {
        conn.handle_refuse(ErrorCode::BUSY, why, &mut bk);
    }
    let mut input = Incoming::default();
    let mut output = Outgoing::default();
    let mut eof = false;
    let mut draining = false;
    let mut closing_at: Option<tokio::time::Instant> = None;
    let why = loop {
        let now = shared.now_ms();
        feed(&mut conn, &mut bk, &mut input, now);
        produce(&mut conn, &mut bk, &mut output, now);
        if conn.poll_close() {
            let at = *closing_at.get_or_insert_with(|| {
                tokio::time::Instant::now() + Duration::from_millis(CLOSE_GRACE_MS)
            });
            if output.is_empty() || tokio::time::Instant::now() >= at {
                break "closed by the server";
            }
        }
        // The peer sent its last byte: finish what needs no more input.
        if eof && output.is_empty() && !conn.is_busy() {
            break "closed by the peer";
        }
        if draining && conn.in_flight() == 0 && output.is_empty() {
            break "server shutting down";
        }
        if conn.in_flight() == 0 && output.is_empty() && input.len == 0 {
            relax(&mut conn, &mut input, &mut output);
        }
        let can_read = !eof
            && !bk.input_paused()
            && input.len < READ_MAX
            && conn.wants_frame_buffer().is_none();
        let deadline = conn.poll_timeout().map(|ms| {
            let left = ms.saturating_sub(shared.now_ms());
            tokio::time::Instant::now() + Duration::from_millis(left)
        });
        tokio::select! {
            r = stream.readable(), if can_read => {
                if r.is_err() || read(&stream, &mut input) {
                    eof = true;
                }
            }
            r = stream.writable(), if !output.is_empty() => {
                if r.is_err() || write(&stream, &mut output).is_err() {
                    break "connection lost";
                }
            }
            Some((key, c)) = events.recv() => {
                if let Some(req) = bk.complete(key, c) {
                    conn.handle_ready(req);
                }
                // Take every completion that is already there.
                while let Ok((key, c)) = events.try_recv() {
                    if let Some(req) = bk.complete(key, c) {
                        conn.handle_ready(req);
                    }
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                conn.handle_timeout(shared.now_ms(), &mut bk);
            }
            r = shutdown.changed(), if !draining => {
                let _ = r;
                draining = true;
                conn.handle_shutdown(&mut bk);
            }
        }
    };
    conn.handle_close(&mut bk);
    debug!(%peer, "connection over: {why}");
    drop(permit);
    close(stream).await;
}

/// Offer the engine what was read; keep what it did not take.
fn feed(conn: &mut Engine, bk: &mut HostBackend, input: &mut Incoming, now: u64) {
    while input.len > 0 && !bk.input_paused() {
        let n = conn.handle_bytes(now, &input.buf[..input.len], bk);
        input.buf.copy_within(n..input.len, 0);
        input.len -= n;
        // An encrypted frame waits for a buffer to be opened in.
        if let Some(need) = conn.wants_frame_buffer() {
            conn.provide_frame_buffer(vec![0; need]);
            continue;
        }
        if n == 0 {
            return;
        }
    }
}

/// Let the engine fill the write buffer when it is empty.
fn produce(conn: &mut Engine, bk: &mut HostBackend, output: &mut Outgoing, now: u64) {
    if !output.is_empty() || !conn.wants_transmit() {
        return;
    }
    // Requests in flight may send whole Data frames; replies alone are small.
    let want = if conn.in_flight() > 0 { LARGE } else { SMALL };
    if output.buf.len() < want {
        output.buf.resize(want, 0);
    }
    let n = conn.poll_transmit(now, &mut output.buf, bk);
    output.at = 0;
    output.end = n;
}

/// Read what the socket has; returns whether the peer closed.
fn read(stream: &TcpStream, input: &mut Incoming) -> bool {
    if input.buf.len() < SMALL {
        input.buf.resize(SMALL, 0);
    }
    if input.len == input.buf.len() && input.buf.len() < READ_MAX {
        let grown = (input.buf.len() * 4).min(READ_MAX);
        input.buf.resize(grown, 0);
    }
    match stream.try_read(&mut input.buf[input.len..]) {
        Ok(0) => true,
        Ok(n) => {
            input.len += n;
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

fn write(stream: &TcpStream, output: &mut Outgoing) -> std::io::Result<()> {
    match stream.try_write(&output.buf[output.at..output.end]) {
        Ok(n) => {
            output.at += n;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// An idle connection gives its buffers back (the next read or reply
/// takes a small one again): thousands of idle connections then hold only
/// the engine and its header and staging buffers.
fn relax(conn: &mut Engine, input: &mut Incoming, output: &mut Outgoing) {
    if input.buf.capacity() > 0 || output.buf.capacity() > 0 {
        *input = Incoming::default();
        *output = Outgoing::default();
    }
    drop(conn.take_frame_buffer());
}

/// Close politely: stop sending, then read (and drop) what the peer still
/// sends for a moment, so the last frame is not lost to a reset.
async fn close(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
    let mut scratch = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

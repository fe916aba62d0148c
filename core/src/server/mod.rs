//! The server connection engine: every rule the protocol states for the
//! side that serves, once, sans-IO (bytes in, bytes out, the caller's
//! clock and buffers), for a host and a device alike.
//!
//! A [`ServerConn`] is one connection. Its driver (tokio on a host,
//! smoltcp or embassy-net on a device, a test harness) moves bytes and
//! does the work the engine asks of its [`Backend`]: storage, commands,
//! the clock, the shared back-off table.
//!
//! # Call order
//! ```text
//! accept:    conn.handle_accept(now, peer, nonce, &mut backend)
//! loop:
//!   n = conn.handle_bytes(now, received, &mut backend)   // drop n bytes from the receive queue;
//!                                                         // the rest stays queued (backpressure)
//!   n = conn.poll_transmit(now, out, &mut backend)        // send out[..n]
//!   work the backend finished for a request:  conn.handle_ready(req)
//!   at conn.poll_timeout():  conn.handle_timeout(now, &mut backend)
//!   if conn.poll_close() { close the connection }
//! the connection ended (either side):  conn.handle_close(&mut backend)
//! ```
//! `now` is the caller's monotonic time in milliseconds.
//!
//! # What it does
//! * Hello/HelloAck with the limits and capabilities of [`ServerConfig`]
//!   (and `max_requests = N`, `max_name`, `max_path`); with a key, Auth,
//!   then every frame sealed (HMAC-SHA256) or, where negotiated, encrypted
//!   (ChaCha20-Poly1305). A sealed frame is acted on only once its tag
//!   verified; upload data streams to the backend as it arrives, and
//!   nothing is committed before a Done whose tag verified.
//! * Up to `N` requests in flight (Ping, Echo, Time and Cancel never take
//!   a slot), each in its [`Slot`](slot::Slot); outgoing frames are taken
//!   from the requests in turn, one frame each, so a long Get never
//!   starves a Pong or another request's reply.
//! * Paths ([`path`]), request ids, policy (capabilities, allowed
//!   commands), Get with resume (prefix digest) and the file's SHA-256,
//!   Put with resume, digest check and commit, Exec with output, exit,
//!   cancel and timeout, Stat, List, Remove, deadlines.
//!
//! # Buffers
//! The caller owns them ([`Buffers`]): `header` holds one frame header (its
//! length caps the negotiated `max_header`); `staging` queues replies made
//! while input is handled and frames that do not fit the caller's output
//! buffer (at least `max_header + 64` bytes and [`ServerConn::control_room`]);
//! `frame` holds one whole encrypted frame (`max_header + max_chunk`) and is
//! only needed where ENCRYPT is offered.

pub mod backend;
pub mod backoff;
mod dispatch;
pub mod path;
mod rx;
mod slot;
mod step;
#[cfg(test)]
mod test;
mod tx;

use crate::codec::{Decoder, Limits};
use crate::handshake::KEY_LEN;
use crate::message::{Caps, ErrorCode};
use crate::wire::{PREFIX_LEN, TAG_LEN};

pub use backend::{Backend, Count, Created, End, Failure, Kill, Opened, Output, Req, Start};
pub use backoff::{Backoff, BackoffPolicy, Peer};
pub use path::{PathRules, RelPath, PART_SUFFIX};

use slot::Table;
use tx::{Security, Staging};

/// A connection whose final Error cannot be delivered (the peer does not
/// read) is dropped this long after the error, in milliseconds.
pub const CLOSE_GRACE_MS: u64 = 2_000;

/// Longest error text sent, in bytes (longer texts are cut).
pub const MAX_ERROR_TEXT: usize = 200;

/// What a server announces and accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Software name and version sent in HelloAck.
    pub agent: &'static str,
    /// Largest header accepted (also capped by the buffers).
    pub max_header: u16,
    /// Largest body per frame, both directions.
    pub max_chunk: u32,
    /// What the server offers: `EXEC`, `SHELL`, `FILES`, `WRITE`, `DIRS`,
    /// `RESUME`, and `ENCRYPT` (negotiated with keyed clients that ask).
    /// `AUTH_PSK` and `SEAL` follow from `key`.
    pub caps: Caps,
    /// Longest name accepted, in bytes.
    pub max_name: u16,
    /// Longest path accepted, in bytes.
    pub max_path: u16,
    /// The pre-shared key: with one, every connection must authenticate
    /// and every frame after that is sealed. `Debug` never shows it.
    pub key: Option<[u8; KEY_LEN]>,
    /// Hello (and Auth, when keyed) must complete within this many
    /// milliseconds of the accept (0: no deadline).
    pub handshake_timeout_ms: u32,
    /// A connection on which no byte moves for this many milliseconds
    /// while no request runs on the server's side is closed (0: never).
    pub idle_timeout_ms: u32,
    /// With a list, Exec runs only programs whose argv[0] is on it,
    /// exactly (and the server should not offer `SHELL`).
    pub allowed_commands: Option<&'static [&'static str]>,
}

impl core::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("agent", &self.agent)
            .field("max_header", &self.max_header)
            .field("max_chunk", &self.max_chunk)
            .field("caps", &self.caps)
            .field("max_name", &self.max_name)
            .field("max_path", &self.max_path)
            .field("key", &self.key.map(|_| "<redacted>"))
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("allowed_commands", &self.allowed_commands)
            .finish()
    }
}

impl Default for ServerConfig {
    /// A server with nothing offered but files, 512-byte headers and
    /// chunks, no key, 10 s to authenticate, 2 minutes of idleness.
    fn default() -> Self {
        ServerConfig {
            agent: concat!("tether/", env!("CARGO_PKG_VERSION")),
            max_header: 512,
            max_chunk: 512,
            caps: Caps::FILES,
            max_name: 255,
            max_path: 4095,
            key: None,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 120_000,
            allowed_commands: None,
        }
    }
}

impl ServerConfig {
    /// The path rules this configuration announces.
    pub fn path_rules(&self) -> PathRules {
        PathRules {
            max_name: self.max_name,
            max_path: self.max_path,
            dirs: self.caps.contains(Caps::DIRS),
        }
    }
}

/// The caller's buffers for one connection (see the [module docs](self)).
#[derive(Debug)]
pub struct Buffers<B> {
    /// One frame header.
    pub header: B,
    /// The staging queue for outgoing frames.
    pub staging: B,
    /// One whole encrypted frame; `None` where ENCRYPT is not offered, or
    /// to give it only when [`ServerConn::wants_frame_buffer`] asks.
    pub frame: Option<B>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Closed,
    /// Waiting for Hello.
    Hello,
    /// HelloAck sent; waiting for a valid Auth (keyed servers only).
    Auth,
    /// Serving requests.
    Open,
    /// A fatal error is being sent; close once it is out.
    Closing,
}

/// The Error to send before closing, when it did not fit at once (a
/// frame was half out): its text is then the code's description.
#[derive(Debug, Clone, Copy)]
struct Fatal {
    id: u32,
    code: ErrorCode,
}

/// Everything but the decoder and the caller's buffers, so that a frame
/// borrowed from the decoder can be dispatched while this part changes.
#[derive(Debug)]
struct State<const N: usize> {
    cfg: ServerConfig,
    phase: Phase,
    sec: Security,
    table: Table<N>,
    rx: rx::Rx,
    peer: Peer,
    nonce: [u8; 16],
    /// The negotiated largest body.
    max_chunk: u32,
    /// The negotiated largest header.
    max_header: u16,
    /// Capacity of the header buffer.
    header_cap: usize,
    /// Capacity of the staging queue.
    staging_cap: usize,
    /// Capacity of the frame buffer (`None`: no encryption; `Some(0)`:
    /// given on demand).
    frame_cap: Option<usize>,
    /// When the connection was accepted / when a byte last moved.
    accepted_ms: u64,
    active_ms: u64,
    fatal: Option<Fatal>,
    /// The close grace passed: close without delivering what is queued.
    force_close: bool,
    /// Refuse new requests (the server is shutting down).
    draining: bool,
    /// Where the next turn of the transmit round starts.
    turn: usize,
}

/// One connection of a server (see the [module docs](self)). `B` is the
/// caller's buffer type (`&'static mut [u8]` on firmware, `Box<[u8]>` or
/// `Vec<u8>` on a host); `N` the most requests in flight.
pub struct ServerConn<B, const N: usize> {
    dec: Decoder<B>,
    staging: Staging<B>,
    frame: Option<B>,
    st: State<N>,
}

impl<B, const N: usize> core::fmt::Debug for ServerConn<B, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerConn")
            .field("phase", &self.st.phase)
            .field("in_flight", &self.st.table.in_flight())
            .finish_non_exhaustive()
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, const N: usize> ServerConn<B, N> {
    /// An engine with no connection yet.
    pub fn new(cfg: ServerConfig, bufs: Buffers<B>) -> Self {
        let header_cap = bufs.header.as_ref().len();
        let staging_cap = bufs.staging.as_ref().len();
        let frame_cap = bufs.frame.as_ref().map(|f| f.as_ref().len());
        ServerConn {
            dec: Decoder::new(bufs.header, Limits::HANDSHAKE),
            staging: Staging::new(bufs.staging),
            frame: bufs.frame,
            st: State {
                cfg,
                phase: Phase::Closed,
                sec: Security::Plain,
                table: Table::new(),
                rx: rx::Rx::new(),
                peer: Peer::UNKNOWN,
                nonce: [0; 16],
                max_chunk: Limits::HANDSHAKE.max_body as u32,
                max_header: Limits::HANDSHAKE.max_header,
                header_cap,
                staging_cap,
                frame_cap,
                accepted_ms: 0,
                active_ms: 0,
                fatal: None,
                force_close: false,
                draining: false,
                turn: 0,
            },
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.st.cfg
    }

    /// Serve the next connection with `cfg` (takes effect at the next
    /// [`handle_accept`](Self::handle_accept)).
    pub fn reconfigure(&mut self, cfg: ServerConfig) {
        self.st.cfg = cfg;
    }

    /// Bytes waiting in the staging queue.
    pub fn queued(&self) -> usize {
        self.staging.queued()
    }

    /// A connection from `peer` was accepted at `now`: start over,
    /// expecting Hello. `nonce` must be fresh and unpredictable (it goes
    /// into HelloAck and the authentication transcript). A peer that is
    /// backing off after failed authentications is told so and closed.
    pub fn handle_accept<K: Backend>(&mut self, now: u64, peer: Peer, nonce: [u8; 16], bk: &mut K) {
        self.handle_close(bk);
        self.dec.reset();
        // A handshake frame whose reply could never fit the staging queue
        // is refused (HEADER_TOO_LARGE) rather than held until the deadline.
        let room = self.st.staging_cap.saturating_sub(dispatch::REPLY_SLACK);
        let room = room.min(usize::from(u16::MAX)) as u16;
        self.dec.set_limits(Limits {
            max_header: Limits::HANDSHAKE.max_header.min(room),
            ..Limits::HANDSHAKE
        });
        self.dec.set_encryption(false);
        self.staging.clear();
        let st = &mut self.st;
        st.sec = Security::Handshake(crate::handshake::ServerHandshake::new(st.cfg.key));
        st.table.forget_ended();
        st.rx = rx::Rx::new();
        st.peer = peer;
        st.nonce = nonce;
        st.accepted_ms = now;
        st.active_ms = now;
        st.max_chunk = Limits::HANDSHAKE.max_body as u32;
        st.max_header = Limits::HANDSHAKE.max_header;
        st.phase = Phase::Hello;
        if st.cfg.key.is_some() {
            if let Some(wait) = bk.refused(peer, now) {
                bk.count(Count::BackoffRefusal);
                let t = crate::text::text(format_args!(
                    "too many failed authentications from {peer}: refused for {} s more; check the key (TETHER_KEY_FILE or --key-file) and retry after that",
                    wait.div_ceil(1000)
                ));
                st.fatal(&mut self.staging, 0, ErrorCode::BUSY, t.as_str(), bk);
            }
        }
    }

    /// The connection ended (either side closed, or it was reset): every
    /// request still in flight ends ([`Backend::end`]), what is queued and
    /// the session keys are dropped.
    pub fn handle_close<K: Backend>(&mut self, bk: &mut K) {
        self.st.end_all(bk);
        self.st.phase = Phase::Closed;
        self.st.sec = Security::Plain;
        self.st.rx = rx::Rx::new();
        self.st.fatal = None;
        self.st.force_close = false;
        self.staging.clear();
    }

    /// The work the backend does for `req` can make progress: poll it again.
    pub fn handle_ready(&mut self, req: Req) {
        if let Some(s) = self.st.table.slots.get_mut(usize::from(req.slot)) {
            if !s.is_free() && s.id == req.id {
                s.wait = false;
            }
        }
    }

    /// Refuse new requests from now on (`BUSY`: the server is shutting
    /// down) and stop running commands (they end `Exit{Cancelled}`);
    /// transfers in flight go on. [`in_flight`](Self::in_flight) says when
    /// the connection may be closed.
    pub fn handle_shutdown<K: Backend>(&mut self, bk: &mut K) {
        self.st.draining = true;
        for i in 0..N {
            let req = self.st.table.req(i);
            let slot = &mut self.st.table.slots[i];
            if let slot::Op::Exec(e) = &mut slot.op {
                if e.killed.is_none() {
                    e.killed = Some(Kill::Cancel);
                    bk.kill(req, Kill::Cancel);
                }
            }
        }
    }

    /// Refuse the connection just accepted: an Error with request id 0
    /// (`BUSY` for a server at its connection limit), then close.
    pub fn handle_refuse<K: Backend>(&mut self, code: ErrorCode, message: &str, bk: &mut K) {
        if self.st.phase == Phase::Hello {
            self.st.fatal(&mut self.staging, 0, code, message, bk);
        }
    }

    /// Whether a connection is being served.
    pub fn is_open(&self) -> bool {
        self.st.phase != Phase::Closed
    }

    /// Whether the peer authenticated (every frame is sealed).
    pub fn is_authenticated(&self) -> bool {
        matches!(self.st.sec, Security::Sealed(_))
    }

    /// Whether frames are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.st.sec.encrypted()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.st.table.in_flight()
    }

    /// Whether the server side has something to do or send without
    /// further input: a request waits on the backend or has frames to send.
    pub fn is_busy(&self) -> bool {
        self.wants_transmit() || self.st.table.slots.iter().any(|s| s.wait)
    }

    /// The negotiated largest header and body (the handshake's 512 bytes
    /// before Hello).
    pub fn limits(&self) -> (u16, u32) {
        (self.st.max_header, self.st.max_chunk)
    }

    /// Bytes [`poll_transmit`](Self::poll_transmit) needs in `out` to write
    /// a reply there directly (smaller buffers get frames through the
    /// staging queue).
    pub fn control_room(&self) -> usize {
        self.st.control_room()
    }

    /// Whether the session wants the connection closed now (after a fatal
    /// error, once the Error frame is out, or when the close grace passed).
    pub fn poll_close(&self) -> bool {
        let st = &self.st;
        st.phase == Phase::Closing
            && (st.force_close || (self.staging.queued() == 0 && st.fatal.is_none()))
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called
    /// (the caller's monotonic ms), if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.st.poll_timeout()
    }

    /// Enforce the deadlines at `now`: the handshake, idleness, commands'
    /// timeouts, and the close grace. Calling it early is harmless.
    pub fn handle_timeout<K: Backend>(&mut self, now: u64, bk: &mut K) {
        self.st.handle_timeout(now, &mut self.staging, bk);
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has, or may make,
    /// bytes to send.
    pub fn wants_transmit(&self) -> bool {
        self.staging.queued() > 0
            || self.st.fatal.is_some()
            || self.st.rx.held != rx::Held::None
            || (self.st.phase == Phase::Open && self.st.has_work())
    }

    /// Write bytes to send into `out`; returns how many. Call whenever the
    /// connection can take more, after [`handle_bytes`](Self::handle_bytes)
    /// and after [`handle_ready`](Self::handle_ready).
    pub fn poll_transmit<K: Backend>(&mut self, now: u64, out: &mut [u8], bk: &mut K) -> usize {
        let mut n = self.st.transmit(&mut self.staging, out, bk);
        // A frame that waited for room and ended its input (handle_bytes
        // took every byte) is acted on here: no more input may come.
        if self.st.rx.held != rx::Held::None && self.dispatch_held(now, bk) {
            n += self.st.transmit(&mut self.staging, &mut out[n..], bk);
        }
        if n > 0 {
            bk.count(Count::BytesOut(n as u64));
            self.st.active_ms = now;
        }
        n
    }

    /// The size of frame buffer the engine waits for, if it does: an
    /// encrypted frame arrived and [`Buffers::frame`] was not given (or is
    /// too small). Give one with [`provide_frame_buffer`](Self::provide_frame_buffer).
    pub fn wants_frame_buffer(&self) -> Option<usize> {
        let need = self.st.rx.frame_need()?;
        let have = self.frame.as_ref().map_or(0, |f| f.as_ref().len());
        (have < need).then_some(need)
    }

    /// Give (or replace) the buffer for encrypted frames; returns the old
    /// one. A zero-length buffer means: offer encryption, and ask for the
    /// buffer when it is needed ([`wants_frame_buffer`](Self::wants_frame_buffer)).
    pub fn provide_frame_buffer(&mut self, buf: B) -> Option<B> {
        let cap = buf.as_ref().len();
        if self.st.frame_cap.is_none_or(|c| c == 0 || cap > 0) {
            self.st.frame_cap = Some(cap.max(self.st.frame_cap.unwrap_or(0)));
        }
        self.frame.replace(buf)
    }

    /// Take the frame buffer back while no encrypted frame is being
    /// received (to free memory on an idle connection).
    pub fn take_frame_buffer(&mut self) -> Option<B> {
        if self.st.rx.frame_need().is_some() {
            return None;
        }
        self.frame.take()
    }
}

impl<const N: usize> State<N> {
    /// Bytes a reply may take on this connection: an Error with its text,
    /// or an entry with the longest name.
    fn control_room(&self) -> usize {
        let body = (usize::from(self.cfg.max_name) + 32).max(MAX_ERROR_TEXT + 16);
        PREFIX_LEN + TAG_LEN + 16 + body
    }

    /// Whether any request may have a frame to send.
    fn has_work(&self) -> bool {
        self.table.slots.iter().any(|s| s.wants_transmit())
    }
}

//! The client connection engine: every rule the protocol states for the
//! side that asks, once, sans-IO, for the `tether` CLI, firmware and tests
//! alike.
//!
//! A [`ClientConn`] is one connection. Its driver (tokio in the CLI,
//! [`blocking`] over `embedded_io`, [`asynch`] over `embedded_io_async`)
//! moves bytes and, for uploads, reads the caller's file ([`Uploads`]).
//!
//! # Call order
//! ```text
//! conn.connect(now, nonce)                        // queues Hello
//! loop:
//!   n = conn.poll_transmit(now, out, &mut uploads)  // send out[..n]
//!   (n, ev) = conn.handle_bytes(now, received)      // drop n bytes; act on ev; repeat while either
//!                                                   // consumes bytes or yields an event
//!   on Event::Connected: conn.request(...) as needed, conn.cancel(req)
//!   an upload's file answered Pending, then is ready: conn.handle_ready(req)
//!   at conn.poll_timeout(): conn.handle_timeout(now)
//! ```
//!
//! # What it does
//! * Hello with the caller's limits and key; refuses a server that does not
//!   authenticate when a key is set, or does not encrypt when encryption is
//!   required (no downgrade); Auth, the server's proof, then every frame
//!   sealed or encrypted. Bodies of sealed frames are handed on only once
//!   their tag verified.
//! * Requests in flight up to `N` and the server's `max_requests`, each with
//!   its own id; every reply is checked against what its request allows.
//! * Get: the caller's partial is compared with the server's prefix digest
//!   (a mismatch cancels: [`Event::ResumeMismatch`]); every byte is counted
//!   and hashed; [`Event::Finished`] carries the digest only when it equals
//!   the server's. Put: the server's kept partial is compared with the
//!   caller's file, the data is read, hashed and framed here, the file is
//!   checked not to have changed before Done, and the server's Done must
//!   confirm the size and digest sent.

pub mod asynch;
pub mod blocking;
mod driver;
mod event;
mod liveness;
mod rx;
mod slot;
mod tx;

pub use driver::{
    ClientBuffers, Clock, EntryInfo, Error, Flow, PutOptions, Session, Time, Transfer, MIN_RX,
    MIN_TX,
};
#[cfg(feature = "alloc")]
pub use driver::{ExecOutput, OwnedEntry};
pub use event::{
    ConnError, Event, LocalFailure, Origin, ReqId, Request, RequestError, Resume, ServerInfo,
    Uploads,
};

use crate::codec::{Decoder, Limits};
use crate::handshake::{ClientHandshake, SessionKeys, KEY_LEN};
use crate::message::Caps;
use crate::outgoing::Staging;

use slot::Table;

/// How a client connects.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Software name and version sent in Hello.
    pub agent: &'static str,
    /// Largest header this side accepts (also capped by the header buffer).
    pub max_header: u16,
    /// Largest body this side accepts.
    pub max_chunk: u32,
    /// The pre-shared key: with one, the server must prove it and every
    /// frame is sealed. `Debug` never shows it.
    pub key: Option<[u8; KEY_LEN]>,
    /// Require encryption (with a key): a server that does not offer it is
    /// refused rather than used with integrity protection only.
    pub encrypt: bool,
    /// With a key, still accept a server that does not authenticate (an
    /// unprotected session): off unless the user asked.
    pub accept_unauthenticated: bool,
    /// The handshake must complete within this many milliseconds (0: no deadline).
    pub handshake_timeout_ms: u32,
    /// With requests in flight and no byte moving either way for this many
    /// milliseconds, send a Ping so that a server that is gone is noticed
    /// (0: never).
    pub keepalive_ms: u32,
    /// Close with [`ConnError::Stalled`] when nothing arrives this many
    /// milliseconds after that Ping (0: wait for ever).
    pub stall_timeout_ms: u32,
}

impl ClientConfig {
    /// A device-sized client: 512-byte headers, 1 KiB chunks, no key (set
    /// one: `ClientConfig { key: Some(k), ..ClientConfig::DEFAULT }`), a
    /// 10 s handshake deadline.
    pub const DEFAULT: ClientConfig = ClientConfig {
        agent: concat!("tether-client/", env!("CARGO_PKG_VERSION")),
        max_header: 512,
        max_chunk: 1024,
        key: None,
        encrypt: false,
        accept_unauthenticated: false,
        handshake_timeout_ms: 10_000,
        keepalive_ms: 5_000,
        stall_timeout_ms: 20_000,
    };
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig::DEFAULT
    }
}

impl core::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("agent", &self.agent)
            .field("max_header", &self.max_header)
            .field("max_chunk", &self.max_chunk)
            .field("key", &self.key.map(|_| "<redacted>"))
            .field("encrypt", &self.encrypt)
            .field("accept_unauthenticated", &self.accept_unauthenticated)
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .field("keepalive_ms", &self.keepalive_ms)
            .field("stall_timeout_ms", &self.stall_timeout_ms)
            .finish()
    }
}

/// The caller's buffers for one connection.
#[derive(Debug)]
pub struct Buffers<B> {
    /// One frame header (at least the largest header accepted).
    pub header: B,
    /// The staging queue for requests (at least the largest header sent
    /// plus 64 bytes).
    pub staging: B,
    /// One whole frame body (and header, when encrypted): sealed bodies are
    /// held here until their tag verified. Its size caps the chunk size
    /// offered. `None` for a client that never holds a key.
    pub frame: Option<B>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `connect` was not called.
    Idle,
    /// Hello sent; waiting for HelloAck.
    Hello,
    /// Auth sent; waiting for AuthOk.
    Auth,
    /// Serving requests.
    Open,
    /// Over (an [`Event::Closed`] was given).
    Closed,
}

/// Everything but the decoder and the caller's buffers.
#[derive(Debug)]
struct State<const N: usize> {
    cfg: ClientConfig,
    phase: Phase,
    hs: Option<ClientHandshake<'static>>,
    keys: Option<SessionKeys>,
    table: Table<N>,
    rx: rx::Rx,
    /// What HelloAck announced.
    server: rx::Announced,
    /// When `connect` was called.
    started_ms: u64,
    /// Where the next transmit round starts.
    turn: usize,
    /// Capacity of the header and frame buffers.
    header_cap: usize,
    frame_cap: usize,
    /// The decoder took on the negotiated limits.
    limits_set: bool,
    /// When bytes last moved (noticing a server that is gone).
    alive: liveness::Liveness,
}

/// One connection of a client (see the [module docs](self)). `B` is the
/// caller's buffer type, `N` the most requests in flight.
pub struct ClientConn<B, const N: usize> {
    dec: Decoder<B>,
    staging: Staging<B>,
    frame: Option<B>,
    st: State<N>,
}

impl<B, const N: usize> core::fmt::Debug for ClientConn<B, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientConn")
            .field("phase", &self.st.phase)
            .field("in_flight", &self.st.table.in_flight())
            .finish_non_exhaustive()
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, const N: usize> ClientConn<B, N> {
    /// An engine for one connection.
    pub fn new(cfg: ClientConfig, bufs: Buffers<B>) -> Self {
        let header_cap = bufs.header.as_ref().len();
        let frame_cap = bufs.frame.as_ref().map_or(0, |f| f.as_ref().len());
        ClientConn {
            dec: Decoder::new(bufs.header, Limits::HANDSHAKE),
            staging: Staging::new(bufs.staging),
            frame: bufs.frame,
            st: State {
                cfg,
                phase: Phase::Idle,
                hs: None,
                keys: None,
                table: Table::new(),
                rx: rx::Rx::default(),
                server: rx::Announced::default(),
                started_ms: 0,
                turn: 0,
                header_cap,
                frame_cap,
                limits_set: false,
                alive: liveness::Liveness::default(),
            },
        }
    }

    /// Start the handshake at `now`: queue Hello. `nonce` must be fresh and
    /// unpredictable.
    pub fn connect(&mut self, now: u64, nonce: [u8; 16]) {
        self.st.connect(&mut self.staging, now, nonce);
    }

    /// Whether requests may be sent.
    pub fn is_connected(&self) -> bool {
        self.st.phase == Phase::Open
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.st.phase == Phase::Closed
    }

    /// The capabilities HelloAck announced (empty before it arrives); set
    /// even when the handshake then failed, to explain why.
    pub fn server_caps(&self) -> crate::message::Caps {
        self.st.server.caps
    }

    /// The negotiated largest body per frame.
    pub fn max_chunk(&self) -> u32 {
        self.st.server.max_chunk
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.st.table.in_flight()
    }

    /// Queue a request; its replies come as events for the returned id.
    pub fn request(&mut self, r: Request<'_>) -> Result<ReqId, RequestError> {
        self.st.request(&mut self.staging, r)
    }

    /// Ask the server to stop `req` (it ends with its own last reply: an
    /// Exit Cancelled or a Failed CANCELLED, or its normal end if that was
    /// first).
    pub fn cancel(&mut self, req: ReqId) -> Result<(), RequestError> {
        self.st.cancel(&mut self.staging, req)
    }

    /// An upload's file can make progress: poll it again.
    pub fn handle_ready(&mut self, req: ReqId) {
        if let Some(s) = self.st.table.slots.get_mut(usize::from(req.slot)) {
            if !s.is_free() && s.id == req.id {
                s.wait = false;
            }
        }
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has, or may make, bytes.
    pub fn wants_transmit(&self) -> bool {
        self.staging.queued() > 0 || self.st.table.slots.iter().any(|s| s.wants_transmit())
    }

    /// Write bytes to send into `out`; returns how many. Upload data is
    /// read through `uploads` straight into `out`.
    pub fn poll_transmit<U: Uploads>(
        &mut self,
        now: u64,
        out: &mut [u8],
        uploads: &mut U,
    ) -> usize {
        let n = self.st.transmit(&mut self.staging, out, uploads);
        if n > 0 {
            self.st.alive.sent(now);
        }
        n
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        let cfg = &self.st.cfg;
        match self.st.phase {
            Phase::Hello | Phase::Auth if cfg.handshake_timeout_ms > 0 => Some(
                self.st
                    .started_ms
                    .saturating_add(u64::from(cfg.handshake_timeout_ms)),
            ),
            Phase::Open if self.in_flight() > 0 => self
                .st
                .alive
                .next(cfg.keepalive_ms, cfg.stall_timeout_ms)
                .map(|(at, _)| at),
            _ => None,
        }
    }

    /// Enforce the deadlines at `now`: the handshake's (an
    /// [`Event::Closed`] with [`ConnError::Timeout`] follows from the next
    /// `handle_bytes`), and, with requests in flight, the keepalive Ping
    /// and the stall deadline ([`ConnError::Stalled`]).
    pub fn handle_timeout(&mut self, now: u64) {
        if self.poll_timeout().is_none_or(|at| now < at) {
            return;
        }
        if self.st.phase != Phase::Open {
            self.st.rx.timed_out = true;
            return;
        }
        let cfg = &self.st.cfg;
        match self
            .st
            .alive
            .due(now, cfg.keepalive_ms, cfg.stall_timeout_ms)
        {
            Some(liveness::Due::Probe) if self.st.probe(&mut self.staging, now) => {
                self.st.alive.probing(now);
            }
            Some(liveness::Due::Stalled) => self.st.rx.timed_out = true,
            Some(liveness::Due::Probe) | None => {}
        }
    }
}

impl<const N: usize> State<N> {
    /// What Hello offers: the caller's limits, capped by its buffers.
    fn hello_limits(&self) -> (u16, u32) {
        let header = self.header_cap.min(usize::from(self.cfg.max_header)) as u16;
        let mut chunk = self.cfg.max_chunk;
        if self.cfg.key.is_some() {
            // A sealed body is held whole until its tag verifies (with the
            // header too, when encrypted).
            let room = self.frame_cap.saturating_sub(usize::from(header));
            chunk = chunk.min(room.min(u32::MAX as usize) as u32);
        }
        (header, chunk)
    }

    fn connect<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        tx: &mut Staging<B>,
        now: u64,
        nonce: [u8; 16],
    ) {
        let (max_header, max_chunk) = self.hello_limits();
        let caps = if self.cfg.encrypt {
            Caps::ENCRYPT
        } else {
            Caps::empty()
        };
        let hs = ClientHandshake::new(
            self.cfg.key,
            nonce,
            max_header,
            max_chunk,
            caps,
            self.cfg.agent,
        );
        let hello = crate::Header::new(0, crate::Message::Hello(hs.hello().clone()));
        if let Some(n) = crate::outgoing::compose(None, tx.free(), &hello) {
            tx.commit(n);
        }
        self.hs = Some(hs);
        self.started_ms = now;
        self.phase = Phase::Hello;
    }
}

#[cfg(test)]
mod test;

#[cfg(test)]
mod driver_test;

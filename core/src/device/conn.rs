//! One connection of a device: the server engine with the device's backend
//! (see the [module docs](super) for the call order).

use core::fmt;

use crate::server::{Buffers, Peer, ServerConn};
use crate::text::Text;

use super::backend::{DevBackend, DevReq};
use super::clock::Clock;
use super::commands::Commands;
use super::store::Store;
use super::{ConnMem, Device};

/// One connection: feed it received bytes, poll it for bytes to send.
///
/// `B` is the caller's buffer type (`&'static mut [u8]` on firmware); `N`
/// the most requests in flight (2 by default: a Ping, Cancel or Stat while
/// a Get streams; each more costs a request slot, about 200 bytes). The
/// buffers: `header` holds one frame header (its length caps the
/// negotiated `max_header`); `staging` queues replies (at least
/// `max_header + 64` bytes, and 304 at the least); `output` holds a
/// command's output (stdout ¾, stderr ¼). With
/// [`with_frame_buffer`](Self::with_frame_buffer) and `ENCRYPT` in the
/// config's caps, keyed clients may have their frames encrypted.
pub struct DeviceConn<B, const N: usize = 2> {
    conn: ServerConn<B, N>,
    reqs: [DevReq; N],
    out: B,
    text: Text<96>,
    header_buf: usize,
    staging_buf: usize,
}

impl<B, const N: usize> fmt::Debug for DeviceConn<B, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConn")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, const N: usize> DeviceConn<B, N> {
    /// A connection slot with no connection yet.
    pub fn new(header: B, staging: B, output: B) -> Self {
        let (header_buf, staging_buf) = (header.as_ref().len(), staging.as_ref().len());
        DeviceConn {
            conn: ServerConn::new(
                crate::server::ServerConfig::default(),
                Buffers {
                    header,
                    staging,
                    frame: None,
                },
            ),
            reqs: [const { DevReq::None }; N],
            out: output,
            text: Text::new(),
            header_buf,
            staging_buf,
        }
    }

    /// Give the connection a buffer for whole encrypted frames (`max_header
    /// + max_chunk` bytes; a smaller one lowers the chunk size of encrypted
    /// sessions), so that `ENCRYPT` in the config is offered.
    pub fn with_frame_buffer(mut self, frame: B) -> Self {
        self.conn.provide_frame_buffer(frame);
        self
    }

    /// Run `f` on the engine with this connection's device backend.
    fn with_backend<S: Store, C: Clock, K: Commands, R>(
        &mut self,
        dev: &mut Device<S, C, K>,
        now: u64,
        f: impl FnOnce(&mut ServerConn<B, N>, &mut DevBackend<'_, S, C, K, N>) -> R,
    ) -> R {
        let mem = self.mem();
        let mut bk = DevBackend {
            dev,
            reqs: &mut self.reqs,
            out: self.out.as_mut(),
            text: &mut self.text,
            mem,
            now,
        };
        f(&mut self.conn, &mut bk)
    }

    /// A connection from `peer` was accepted at `now_ms`: start over,
    /// expecting Hello. `nonce` must be fresh and unpredictable. `peer` keys
    /// the back-off after failed authentication ([`Peer::UNKNOWN`] on links
    /// without addresses).
    pub fn handle_accept<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        peer: Peer,
        nonce: [u8; 16],
        now_ms: u64,
    ) {
        self.handle_close(dev);
        dev.stats.connections += 1;
        self.conn.reconfigure(dev.server_config());
        self.with_backend(dev, now_ms, |c, bk| {
            c.handle_accept(now_ms, peer, nonce, bk)
        });
    }

    /// The connection ended (either side closed or it was reset): requests
    /// in flight end (an upload's partial is kept for resuming), queued
    /// bytes and the session keys are dropped.
    pub fn handle_close<S: Store, C: Clock, K: Commands>(&mut self, dev: &mut Device<S, C, K>) {
        self.with_backend(dev, 0, |c, bk| c.handle_close(bk));
    }

    /// Feed received bytes; returns how many were consumed. Fewer than
    /// `input.len()` means the connection is waiting for room to reply:
    /// keep the rest queued and offer it again after
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn handle_bytes<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        input: &[u8],
        now_ms: u64,
    ) -> usize {
        self.with_backend(dev, now_ms, |c, bk| c.handle_bytes(now_ms, input, bk))
    }

    /// Write bytes to send into `out`; returns how many. Call whenever the
    /// connection can take more, and again after
    /// [`handle_bytes`](Self::handle_bytes).
    pub fn poll_transmit<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        out: &mut [u8],
        now_ms: u64,
    ) -> usize {
        self.with_backend(dev, now_ms, |c, bk| c.poll_transmit(now_ms, out, bk))
    }

    /// Enforce the deadlines at `now_ms` (call at least when
    /// [`poll_timeout`](Self::poll_timeout) is due).
    pub fn handle_timeout<S: Store, C: Clock, K: Commands>(
        &mut self,
        dev: &mut Device<S, C, K>,
        now_ms: u64,
    ) {
        self.with_backend(dev, now_ms, |c, bk| c.handle_timeout(now_ms, bk));
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.conn.poll_timeout()
    }

    /// Whether the connection should be closed now.
    pub fn poll_close(&self) -> bool {
        self.conn.poll_close()
    }

    /// Whether a connection is being served.
    pub fn is_open(&self) -> bool {
        self.conn.is_open()
    }

    /// Whether the peer authenticated (and every frame is sealed).
    pub fn is_authenticated(&self) -> bool {
        self.conn.is_authenticated()
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has (or may make) bytes to send.
    pub fn wants_transmit(&self) -> bool {
        self.conn.wants_transmit()
    }

    /// The engine (for what it reports: limits, requests in flight).
    pub fn engine(&self) -> &ServerConn<B, N> {
        &self.conn
    }

    /// RAM this connection uses.
    pub fn mem(&self) -> ConnMem {
        ConnMem {
            header_buf: self.header_buf,
            staging_buf: self.staging_buf,
            queued: self.conn.queued(),
            output_buf: self.out.as_ref().len(),
            state: core::mem::size_of::<Self>(),
        }
    }
}

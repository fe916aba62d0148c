//! What a device supplies to the server engine, and the engine driven by
//! it: `no_std`, no heap, sans-IO.
//!
//! A device supplies a file [`Store`] (over flash on a real board), a
//! [`Clock`] and its [`Commands`]; a [`Device`] holds them with what every
//! connection shares (counters, the back-off table, the uploads in
//! progress, the simulated LED). Each connection (TCP, or a serial line) is
//! a [`DeviceConn`]: the protocol's [`ServerConn`](crate::server::ServerConn)
//! engine, with the device's [`Backend`](crate::server::Backend), which
//! does every operation at once, in the call that asks for it. UDP
//! datagrams are answered by [`Device::handle_datagram`]. Nothing owns a
//! socket or reads a clock: the caller passes received bytes and its
//! monotonic time in milliseconds (`now_ms`), and sends what they produce.
//!
//! # Call order
//! ```text
//! boot:        dev = Device::new(config, store, clock, commands, now_ms)
//! accept:      conn.handle_accept(&mut dev, peer, nonce, now_ms)
//! loop, for each connection:
//!   n = conn.handle_bytes(&mut dev, received, now_ms)   // drop n bytes from the receive queue;
//!                                                        // the rest stays queued (backpressure)
//!   n = conn.poll_transmit(&mut dev, send_space, now_ms) // send those n bytes
//!   repeat both while either makes progress
//!   conn.handle_timeout(&mut dev, now_ms)               // deadlines (wake at poll_timeout())
//!   if conn.poll_close() { close the connection }
//! connection ended (either side): conn.handle_close(&mut dev)
//! datagram:    n = dev.handle_datagram(datagram, now_ms, reply_buf); send reply_buf[..n] if n > 0
//! always:      while let Some(ev) = dev.poll_event() { drive the LED pin; on Reboot flush,
//!              then dev.handle_reboot(now_ms) and reset every connection (or reset the MCU) }
//! ```
//!
//! # What the device announces
//! The engine states the protocol's rules; what is the device's own is
//! announced in HelloAck: a flat namespace (no `DIRS`: one name, at most
//! the store's [`Store::max_name`] bytes), `RESUME` (an interrupted upload's
//! temporary slot is kept until it completes, is replaced, or the device
//! reboots; it is evicted when the space is needed), `max_requests` = the
//! connection's `N` (2 by default: a Ping, a Cancel or a Stat while a Get
//! streams). Commands are built-in functions ([`commands`]) that run to
//! completion at once; their output is kept in the connection's output
//! buffer (cut, with a note, where it does not fit) and one command runs
//! at a time per connection. A shell line is split on whitespace.
//!
//! # RAM
//! Per connection: the caller's buffers (header ≥ negotiated `max_header`;
//! staging ≥ `max_header + 64`; output, which holds a command's output)
//! plus the [`DeviceConn`] itself (decoder, handshake or session keys, the
//! request slots with a SHA-256 state each; `mem` prints the sizes). The
//! [`Device`] is a few hundred bytes plus the store. UDP needs one reply
//! buffer of [`MAX_DATAGRAM`](crate::MAX_DATAGRAM) bytes. Nothing is
//! allocated.
//!
//! UDP datagrams are never authenticated (section 2.3 of PROTOCOL.md): they
//! serve Ping, Echo and Time only, which change nothing and reveal liveness
//! and the clock. A firmware that wants no unauthenticated service simply
//! opens no UDP socket.

mod backend;
pub mod clock;
pub mod commands;
mod conn;
mod datagram;
mod page;
pub mod store;

pub use crate::server::{Peer, CLOSE_GRACE_MS};
pub use clock::{Clock, NoWallClock, OffsetClock};
pub use commands::{Cmd, Commands, Ctx, Output, Table};
pub use conn::DeviceConn;
pub use store::{FileId, RamStore, Store, StoreError};

use core::fmt;

use crate::handshake::KEY_LEN;
use crate::message::Caps;
use crate::server::{Backoff, BackoffPolicy, ServerConfig};

/// How many peers the back-off table tracks.
pub const BACKOFF_PEERS: usize = 4;

/// Most uploads in progress at once, over all connections.
pub const MAX_UPLOADS: usize = 4;

/// What a device announces and accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Software name and version sent in HelloAck (`tether-sim/0.1.0`).
    pub agent: &'static str,
    /// Largest header accepted after Hello (also capped by the session's buffers).
    pub max_header: u16,
    /// Largest body per frame, both directions. Received Data goes straight
    /// to the store and sent Data straight from it, so this costs no RAM.
    pub max_chunk: u32,
    /// Capabilities offered in HelloAck (`EXEC`, `SHELL`, `FILES`,
    /// `WRITE`; `RESUME` is always added, `DIRS` never: the store is flat).
    pub caps: Caps,
    /// Extra lines for the `mem` command: the firmware's own RAM use
    /// (socket buffers, say), as (what, bytes).
    pub extra_ram: &'static [(&'static str, usize)],
    /// The pre-shared key. With one, every connection must authenticate and
    /// every frame after that is sealed; without, anyone who can connect is
    /// served. Where the key is kept (flash, a secure element) is the
    /// firmware's business; it is never printed (`Debug` redacts it).
    pub key: Option<[u8; KEY_LEN]>,
    /// Hello (and Auth, when keyed) must complete within this many
    /// milliseconds of the accept (0: no deadline).
    pub handshake_timeout_ms: u32,
    /// An open connection that moves no byte either way for this many
    /// milliseconds is closed (0: never).
    pub idle_timeout_ms: u32,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("agent", &self.agent)
            .field("max_header", &self.max_header)
            .field("max_chunk", &self.max_chunk)
            .field("caps", &self.caps)
            .field("extra_ram", &self.extra_ram)
            .field("key", &self.key.map(|_| "<redacted>"))
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .finish()
    }
}

impl Config {
    /// 512-byte headers, 1 KiB chunks; exec, shell lines, files, writes.
    pub const DEFAULT: Config = Config {
        agent: concat!("tether-device/", env!("CARGO_PKG_VERSION")),
        max_header: 512,
        max_chunk: 1024,
        caps: Caps::EXEC
            .union(Caps::SHELL)
            .union(Caps::FILES)
            .union(Caps::WRITE),
        extra_ram: &[],
        key: None,
        handshake_timeout_ms: 10_000,
        idle_timeout_ms: 120_000,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// Counters since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received (TCP and UDP).
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Error frames sent.
    pub errors_sent: u64,
    /// Frames received that failed to decode or parse.
    pub bad_frames: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// UDP datagrams received.
    pub datagrams: u64,
    /// Uploads committed.
    pub files_stored: u64,
    /// Downloads completed.
    pub files_sent: u64,
    /// Auth frames with a wrong proof.
    pub auth_failures: u64,
    /// Hellos refused because their peer was backing off.
    pub backoff_refusals: u64,
    /// Frames that failed their tag or arrived unsealed after Auth.
    pub integrity_failures: u64,
    /// Connections closed by a deadline (handshake, idle, close grace).
    pub timeouts: u64,
}

/// RAM used by one connection, as reported by `mem`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnMem {
    /// Header buffer bytes.
    pub header_buf: usize,
    /// Staging buffer bytes.
    pub staging_buf: usize,
    /// Bytes waiting in the staging buffer.
    pub queued: usize,
    /// Output buffer bytes.
    pub output_buf: usize,
    /// The [`DeviceConn`] itself.
    pub state: usize,
}

impl ConnMem {
    /// Everything.
    pub fn total(&self) -> usize {
        self.header_buf + self.staging_buf + self.output_buf + self.state
    }
}

/// What `mem` reports.
#[derive(Debug, Clone, Copy)]
pub struct MemReport<'a> {
    /// The connection running the command.
    pub conn: ConnMem,
    /// The firmware's lines from [`Config::extra_ram`].
    pub extra: &'a [(&'static str, usize)],
}

/// Something the firmware must act on (see [`Device::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Event {
    /// Drive the user LED.
    Led(bool),
    /// Flush what the sessions have queued, then reset (call [`Device::handle_reboot`]
    /// and reset every session, or reset the MCU).
    Reboot,
}

/// The device: what all sessions share.
pub struct Device<S, C, K> {
    /// The file store.
    pub store: S,
    /// The wall clock.
    pub clock: C,
    /// The firmware's commands.
    pub commands: K,
    config: Config,
    stats: Stats,
    backoff: Backoff<BACKOFF_PEERS>,
    /// Temporary slots of the uploads in progress (claimed by a connection).
    uploads: [Option<FileId>; MAX_UPLOADS],
    led: bool,
    led_changed: bool,
    reboot: bool,
    boot_ms: u64,
}

impl<S, C, K> fmt::Debug for Device<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .field("led", &self.led)
            .finish_non_exhaustive()
    }
}

impl<S: Store, C: Clock, K: Commands> Device<S, C, K> {
    /// Boot at `now_ms`: uploads cut by the last reset are dropped.
    pub fn new(config: Config, mut store: S, clock: C, commands: K, now_ms: u64) -> Self {
        store.recover();
        Device {
            store,
            clock,
            commands,
            config,
            stats: Stats::default(),
            backoff: Backoff::new(BackoffPolicy::DEVICE),
            uploads: [None; MAX_UPLOADS],
            led: false,
            led_changed: false,
            reboot: false,
            boot_ms: now_ms,
        }
    }

    /// Reset everything but the store (which stands for flash) at `now_ms`:
    /// counters, LED (an [`Event::Led`]`(false)` follows if it was on),
    /// uptime, the back-off table and uploads in progress. Reset the
    /// sessions too.
    pub fn handle_reboot(&mut self, now_ms: u64) {
        self.store.recover();
        self.stats = Stats::default();
        self.backoff.clear();
        self.uploads = [None; MAX_UPLOADS];
        self.led_changed = self.led;
        self.led = false;
        self.reboot = false;
        self.boot_ms = now_ms;
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since boot.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Uploads in progress, claimed by a connection (the store's other
    /// temporary slots are interrupted uploads kept for resuming).
    pub fn uploads_in_progress(&self) -> usize {
        self.uploads.iter().filter(|u| u.is_some()).count()
    }

    /// The back-off table (peers whose authentication failed).
    pub fn backoff(&self) -> &Backoff<BACKOFF_PEERS> {
        &self.backoff
    }

    /// What the engine serves each connection with: the configuration,
    /// the store's name limit, a flat namespace, resume.
    pub fn server_config(&self) -> ServerConfig {
        let c = &self.config;
        let max_name = self.store.max_name().min(usize::from(u16::MAX)) as u16;
        ServerConfig {
            agent: c.agent,
            max_header: c.max_header,
            max_chunk: c.max_chunk,
            caps: Caps((c.caps.0 | Caps::RESUME.0) & !Caps::DIRS.0),
            max_name,
            max_path: max_name,
            key: c.key,
            handshake_timeout_ms: c.handshake_timeout_ms,
            idle_timeout_ms: c.idle_timeout_ms,
            allowed_commands: None,
        }
    }

    /// The LED's state.
    pub fn led(&self) -> bool {
        self.led
    }

    /// Milliseconds since boot.
    pub fn uptime_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.boot_ms)
    }

    /// The next thing the firmware must do.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.led_changed {
            self.led_changed = false;
            return Some(Event::Led(self.led));
        }
        if self.reboot {
            self.reboot = false;
            return Some(Event::Reboot);
        }
        None
    }

    /// Unix milliseconds, or milliseconds since boot without a wall clock.
    fn time_ms(&self, now_ms: u64) -> u64 {
        self.clock
            .unix_ms(now_ms)
            .unwrap_or_else(|| self.uptime_ms(now_ms))
    }

    fn ctx<'a>(&'a mut self, now_ms: u64, mem: MemReport<'a>) -> (Ctx<'a>, &'a mut K) {
        let uptime_ms = self.uptime_ms(now_ms);
        let unix_ms = self.clock.unix_ms(now_ms);
        (
            Ctx {
                now_ms,
                uptime_ms,
                unix_ms,
                stats: self.stats,
                uploads: self.uploads.iter().filter(|u| u.is_some()).count(),
                store: &mut self.store,
                mem,
                led: &mut self.led,
                led_changed: &mut self.led_changed,
                reboot: &mut self.reboot,
            },
            &mut self.commands,
        )
    }
}

#[cfg(test)]
mod test;

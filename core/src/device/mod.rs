//! Serving tether on a device: `no_std`, no heap, sans-IO.
//!
//! A [`Device`] holds what every connection shares: the file [`Store`], the
//! [`Clock`], the firmware's [`Commands`], counters and the simulated LED.
//! Each TCP connection gets a [`Session`], whose buffers the caller owns.
//! UDP datagrams are answered by [`Device::handle_datagram`]. Neither owns a
//! socket or reads a clock: the caller passes received bytes and its
//! monotonic time in milliseconds (`now_ms`), and sends what they produce.
//!
//! # Call order
//! ```text
//! boot:        dev = Device::new(config, store, clock, commands, now_ms)
//! accept:      session.handle_accept(&mut dev, peer, nonce, now_ms)
//! loop, for each connection:
//!   n = session.handle_bytes(&mut dev, received, now_ms)   // drop n bytes from the receive queue;
//!                                                           // the rest stays queued (backpressure)
//!   n = session.poll_transmit(&mut dev, send_space, now_ms) // send those n bytes
//!   repeat both while either makes progress
//!   session.handle_timeout(&mut dev, now_ms)               // deadlines (wake at poll_timeout())
//!   if session.poll_close() { close the connection }
//! connection ended (either side): session.handle_close(&mut dev)
//! datagram:    n = dev.handle_datagram(datagram, now_ms, reply_buf); send reply_buf[..n] if n > 0
//! always:      while let Some(ev) = dev.poll_event() { drive the LED pin; on Reboot flush,
//!              then dev.handle_reboot(now_ms) and reset every session (or reset the MCU) }
//! ```
//!
//! # Semantics a client can rely on
//! * A connection opens with Hello → HelloAck (limits from
//!   [`handshake::negotiate`](crate::handshake::negotiate), as on the host)
//!   or Error, then the connection closes.
//! * With a key in [`Config::key`] the device requires authentication
//!   ([`handshake::ServerHandshake`](crate::handshake::ServerHandshake), the
//!   same state machine as the host): a Hello without AUTH_PSK and SEAL is
//!   answered `AUTH_REQUIRED`; after HelloAck the next frame must be a valid
//!   Auth: anything else gets `AUTH_REQUIRED` (with its request id), a wrong
//!   proof `AUTH_FAILED`, and the connection closes. After AuthOk every frame
//!   both ways is sealed; a frame that is unsealed or whose tag fails
//!   (replayed, reordered, altered, spliced, cut short) gets `INTEGRITY` and
//!   the connection closes. A sealed frame is acted on only once its tag
//!   verified; upload data is written to the temporary slot as it streams
//!   in, but nothing is committed before the Done frame's tag verified.
//! * A peer whose Auth failed is refused (`BUSY`, at its next Hello) for a
//!   back-off that doubles per failure ([`backoff`]).
//! * Deadlines ([`Session::handle_timeout`]): the handshake (Hello, and Auth
//!   when keyed) must complete within [`Config::handshake_timeout_ms`] of
//!   the accept; an open connection that moves no byte either way for
//!   [`Config::idle_timeout_ms`] is closed (Error `TIMEOUT`); a connection
//!   whose final Error cannot be delivered is dropped after
//!   [`CLOSE_GRACE_MS`].
//! * One request runs at a time per connection. While one runs, Ping is
//!   answered, Cancel of the running request is honoured between frames
//!   (Get and List end with Error CANCELLED, Exec with Exit Cancelled, Put
//!   discards the upload and ends with Error CANCELLED), and any other
//!   request is answered Error BUSY.
//! * Exec runs a built-in or firmware command ([`commands`]); an unknown
//!   name is answered Error EXEC_FAILED naming it. There is no
//!   shell: a `Command::Shell` line is split on whitespace and run as argv.
//!   `timeout_ms` is ignored (commands run to completion at once).
//! * Files live in a flat namespace; paths may start with `/` or `./`; the
//!   root (`""`, `/` or `.`) is the only directory.
//! * Put reserves a temporary slot of the announced size (NO_SPACE if the
//!   store cannot hold it; replacing a file needs room for both copies
//!   until the commit), hashes while receiving, and commits only when the
//!   client's Done carries the matching SHA-256. Resume is not offered:
//!   PutReady.offset is always 0.
//! * A frame that fails to decode gets Error (id 0) and the connection is
//!   closed; a header that fails to parse gets Error with its request id and
//!   the connection goes on.
//!
//! # RAM
//! Per connection: the three caller buffers (header ≥ negotiated
//! `max_header`; tx ≥ `max_header + 48`; output, which holds a command's
//! output and scratch) plus the [`Session`] itself (≈ 900 bytes on a 64-bit
//! host: decoder state, a SHA-256 state and the request in progress, the
//! handshake or the two sealing keys, and one HMAC state per direction for
//! the frame in flight). The [`Device`] is ≈ 300 bytes (config, counters,
//! the back-off table) plus the store. UDP needs one reply buffer of
//! [`MAX_DATAGRAM`](crate::MAX_DATAGRAM) bytes. Nothing is allocated.
//!
//! UDP datagrams are never authenticated (section 2.3 of PROTOCOL.md): they
//! serve Ping, Echo and Time only, which change nothing and reveal liveness
//! and the clock. A firmware that wants no unauthenticated service simply
//! opens no UDP socket.

pub mod backoff;
pub mod clock;
pub mod commands;
mod datagram;
mod session;
pub mod store;

pub use backoff::{Backoff, Peer};
pub use clock::{Clock, NoWallClock, OffsetClock};
pub use commands::{Cmd, Commands, Ctx, Output, Table};
pub use session::Session;
pub use store::{FileId, RamStore, Store, StoreError};

use core::fmt;

use crate::handshake::KEY_LEN;
use crate::message::Caps;

/// A connection whose final Error cannot be delivered (the peer does not
/// read) is dropped this long after the error, in milliseconds.
pub const CLOSE_GRACE_MS: u64 = 2_000;

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
    /// Capabilities offered in HelloAck.
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

/// RAM used by one session, as reported by `mem`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionMem {
    /// Header buffer bytes.
    pub header_buf: usize,
    /// Transmit buffer bytes.
    pub tx_buf: usize,
    /// Bytes waiting in the transmit buffer.
    pub tx_queued: usize,
    /// Output buffer bytes.
    pub output_buf: usize,
    /// The session struct itself.
    pub state: usize,
}

impl SessionMem {
    /// Everything.
    pub fn total(&self) -> usize {
        self.header_buf + self.tx_buf + self.output_buf + self.state
    }
}

/// What `mem` reports.
#[derive(Debug, Clone, Copy)]
pub struct MemReport<'a> {
    /// The session running the command.
    pub session: SessionMem,
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
    backoff: Backoff,
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
            backoff: Backoff::new(),
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

    /// The back-off table (peers whose authentication failed).
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
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

/// A short message built with `write!`, cut at [`Msg::CAP`] bytes.
pub(crate) struct Msg {
    buf: [u8; Msg::CAP],
    len: usize,
}

impl Msg {
    pub(crate) const CAP: usize = 96;

    pub(crate) fn new() -> Self {
        Msg {
            buf: [0; Msg::CAP],
            len: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole characters are ever appended.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            let n = ch.len_utf8();
            if self.len + n > Msg::CAP {
                break;
            }
            ch.encode_utf8(&mut self.buf[self.len..]);
            self.len += n;
        }
        Ok(())
    }
}

/// `format_args!` into a [`Msg`].
pub(crate) fn msg(args: fmt::Arguments<'_>) -> Msg {
    let mut m = Msg::new();
    let _ = fmt::Write::write_fmt(&mut m, args);
    m
}

/// Normalise a request path to a store name: `Ok(None)` is the root.
pub(crate) fn normalize(path: &str) -> Result<Option<&str>, ()> {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else {
            break;
        }
    }
    match p {
        "" | "." => Ok(None),
        _ if p == ".." || p.contains('/') || p.bytes().any(|b| b < 0x20 || b == 0x7f) => Err(()),
        _ => Ok(Some(p)),
    }
}

#[cfg(test)]
mod test;

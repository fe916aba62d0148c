//! # tether-sim
//!
//! The device logic of [`tether_proto::device`] running on smoltcp, as it
//! would on a microcontroller: [`SimDevice`] owns a smoltcp interface, a
//! few TCP listeners and one UDP socket on the protocol port, and feeds them
//! to [`DeviceConn`]s and [`Device::handle_datagram`]. The network device
//! (`phy`) is the caller's: a TAP interface in the `tether-sim` binary, or
//! the in-memory [`virt`] wire in tests.
//!
//! Everything the device side uses is allocated once, at start: socket
//! buffers, session buffers and the store. See [`SimConfig::ram`] for the
//! table that `mem` prints and the README documents.

pub mod http;
pub mod jobs;
pub mod virt;

/// The network stack the simulator runs on (re-exported for tests).
pub use smoltcp;

/// The I/O traits [`virt::VirtualTcp`] implements (re-exported for tests).
pub use embedded_io;

use core::fmt::Write as _;

use sha2::{Digest as _, Sha256};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy;
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use tether_proto::device::commands::{Cmd, Ctx, Output, Table};
use tether_proto::device::{
    Config, Device, DeviceConn, Event, OffsetClock, Peer, RamStore, CLOSE_GRACE_MS,
};
use tether_proto::handshake::KEY_LEN;
use tether_proto::{DEFAULT_PORT, MAX_DATAGRAM};

/// A pre-shared key; `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(pub [u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Why a key file was refused (the key itself is never part of the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not exactly 64 hexadecimal digits (and at most one final newline).
    Format(String),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Format(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for KeyError {}

impl Key {
    /// Parse a key file's contents: exactly 64 hexadecimal digits, then
    /// optionally one newline (`\n` or `\r\n`); nothing else (the format
    /// `tether keygen` writes).
    pub fn parse(text: &[u8]) -> Result<Key, KeyError> {
        let body = text
            .strip_suffix(b"\r\n")
            .or_else(|| text.strip_suffix(b"\n"))
            .unwrap_or(text);
        if body.len() != 2 * KEY_LEN {
            return Err(KeyError::Format(format!(
                "a key is 64 hexadecimal digits and at most one newline; this has {} bytes",
                text.len()
            )));
        }
        let mut k = [0u8; KEY_LEN];
        for (i, pair) in body.chunks(2).enumerate() {
            let hex = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            };
            match (hex(pair[0]), hex(pair[1])) {
                (Some(h), Some(l)) => k[i] = h << 4 | l,
                _ => {
                    return Err(KeyError::Format(format!(
                        "a key is 64 hexadecimal digits; byte {} is not one",
                        2 * i + usize::from(hex(pair[0]).is_some()) + 1
                    )))
                }
            }
        }
        Ok(Key(k))
    }
}

/// Most files the simulated store holds.
pub const STORE_FILES: usize = 32;

/// The simulator's store: RAM standing in for flash.
pub type SimStore = RamStore<Box<[u8]>, STORE_FILES>;

/// The device logic as the simulator instantiates it.
pub type SimDev = Device<SimStore, OffsetClock, Table<'static, jobs::Jobs>>;

/// How to build a simulated device.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address and prefix.
    pub ip: Ipv4Cidr,
    /// Default route, if any.
    pub gateway: Option<Ipv4Address>,
    /// Ethernet address.
    pub mac: EthernetAddress,
    /// TCP and UDP port.
    pub port: u16,
    /// TCP connections served at once (one listening socket each).
    pub connections: usize,
    /// TCP receive buffer per connection.
    pub tcp_rx: usize,
    /// TCP transmit buffer per connection.
    pub tcp_tx: usize,
    /// UDP datagrams buffered each way.
    pub udp_packets: usize,
    /// DeviceConn header buffer (caps the negotiated max_header).
    pub header_buf: usize,
    /// DeviceConn transmit buffer.
    pub tx_buf: usize,
    /// DeviceConn output buffer (command output).
    pub output_buf: usize,
    /// Store capacity in bytes.
    pub store_bytes: usize,
    /// Largest frame body, both ways.
    pub max_chunk: u32,
    /// Unix milliseconds at time 0 (the device's wall clock).
    pub unix_ms_at_zero: u64,
    /// Seed for TCP sequence numbers (handshake nonces are always drawn
    /// from the OS-seeded CSPRNG).
    pub seed: u64,
    /// The pre-shared key: with one, every connection must authenticate
    /// and every frame after that is sealed.
    pub key: Option<Key>,
    /// Hello (and Auth) must complete within this many ms of the accept.
    pub handshake_timeout_ms: u32,
    /// An open connection moving no byte for this many ms is closed.
    pub idle_timeout_ms: u32,
    /// Print connections, LED changes and reboots to stderr.
    pub verbose: bool,
    /// Serve the status page on port 80 ([`http`]).
    pub http: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            ip: Ipv4Cidr::new(Ipv4Address::new(192, 168, 69, 1), 24),
            gateway: None,
            mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            port: DEFAULT_PORT,
            connections: 2,
            tcp_rx: 4096,
            tcp_tx: 4096,
            udp_packets: 2,
            header_buf: 512,
            tx_buf: 640,
            output_buf: 768,
            store_bytes: 2 << 20,
            max_chunk: 1024,
            // 2026-11-22T00:00:00Z
            unix_ms_at_zero: 1_795_305_600_000,
            seed: 1,
            key: None,
            handshake_timeout_ms: Config::DEFAULT.handshake_timeout_ms,
            idle_timeout_ms: Config::DEFAULT.idle_timeout_ms,
            verbose: false,
            http: false,
        }
    }
}

impl SimConfig {
    /// The device's RAM, by use: (what, bytes), every connection counted.
    /// The store (metadata table, then arena) is listed last.
    pub fn ram(&self) -> Vec<(&'static str, usize)> {
        let n = self.connections;
        let udp = 2 * self.udp_packets * MAX_DATAGRAM;
        let session = std::mem::size_of::<DeviceConn<&mut [u8]>>();
        let store_table = std::mem::size_of::<SimStore>() - std::mem::size_of::<Box<[u8]>>();
        let http = self.http.then(http::ram).into_iter().flatten();
        let mut v = vec![
            ("tcp socket buffers", n * (self.tcp_rx + self.tcp_tx)),
            ("udp socket buffers", udp),
            ("udp reply buffer", MAX_DATAGRAM),
            (
                "session buffers",
                n * (self.header_buf + self.tx_buf + self.output_buf),
            ),
            ("session state", n * session),
            (
                "client (push/fetch) socket and driver buffers",
                self.tcp_rx + self.tcp_tx + jobs::ARENA,
            ),
            ("device state", std::mem::size_of::<SimDev>() - store_table),
            ("store table", store_table),
            ("store arena", self.store_bytes),
        ];
        v.splice(6..6, http);
        v
    }
}

fn sha256_cmd(_: &mut jobs::Jobs, ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    let [_, name] = args else {
        let _ = writeln!(out.err(), "usage: sha256 NAME");
        return 2;
    };
    let Some(id) = ctx.store.find(name) else {
        let _ = writeln!(out.err(), "sha256: no such file: {name}");
        return 1;
    };
    let mut h = Sha256::new();
    let mut buf = [0u8; 256];
    let mut at = 0u64;
    loop {
        match ctx.store.read(id, at, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                at += n as u64;
            }
            Err(e) => {
                let _ = writeln!(out.err(), "sha256: {e}");
                return 1;
            }
        }
    }
    let _ = writeln!(out, "{}  {name}", hex::encode(h.finalize()));
    0
}

fn cat_cmd(_: &mut jobs::Jobs, ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    let [_, name] = args else {
        let _ = writeln!(out.err(), "usage: cat NAME");
        return 2;
    };
    let Some(id) = ctx.store.find(name) else {
        let _ = writeln!(out.err(), "cat: no such file: {name}");
        return 1;
    };
    let mut buf = [0u8; 128];
    let mut at = 0u64;
    while let Ok(n @ 1..) = ctx.store.read(id, at, &mut buf) {
        out.write(false, &buf[..n]);
        at += n as u64;
        if out.truncated() {
            break;
        }
    }
    0
}

fn touch_cmd(_: &mut jobs::Jobs, ctx: &mut Ctx<'_>, args: &[&str], out: &mut Output<'_>) -> i32 {
    let [_, name] = args else {
        let _ = writeln!(out.err(), "usage: touch NAME");
        return 2;
    };
    if ctx.store.find(name).is_some() {
        return 0;
    }
    let modified = ctx.unix_ms.map_or(0, |ms| ms / 1000);
    let made = ctx.store.begin(name, 0).and_then(|tmp| {
        let r = ctx.store.commit(tmp, modified, false);
        if r.is_err() {
            ctx.store.discard(tmp);
        }
        r
    });
    match made {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(out.err(), "touch: {name}: {e}");
            1
        }
    }
}

/// The simulator's own commands: the firmware-author example.
pub static SIM_COMMANDS: [Cmd<jobs::Jobs>; 6] = [
    Cmd {
        name: "sha256",
        usage: "sha256 NAME           SHA-256 of a stored file",
        run: sha256_cmd,
    },
    Cmd {
        name: "cat",
        usage: "cat NAME              print a stored file (up to 576 bytes)",
        run: cat_cmd,
    },
    Cmd {
        name: "push",
        usage: "push HOST[:PORT] NAME [REMOTE]   put a stored file to a tether server (the device's key)",
        run: jobs::job_cmd,
    },
    Cmd {
        name: "fetch",
        usage: "fetch HOST[:PORT] NAME [LOCAL]   get a tether server's file into the store",
        run: jobs::job_cmd,
    },
    Cmd {
        name: "jobs",
        usage: "jobs                  how the last push or fetch is going or ended",
        run: jobs::jobs_cmd,
    },
    Cmd {
        name: "touch",
        usage: "touch NAME            create an empty file (an existing one is kept)",
        run: touch_cmd,
    },
];

struct Conn {
    handle: SocketHandle,
    session: DeviceConn<Box<[u8]>>,
    /// When the socket is reset if it is still half-open (SYN received,
    /// never established) or still closing (the peer never finishes the
    /// close): no peer holds a connection slot past a deadline.
    socket_deadline: Option<u64>,
}

/// What [`SimDevice::poll`] reports besides progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollOutcome {
    /// Application work was done (bytes moved between sockets and sessions).
    pub worked: bool,
    /// The device rebooted.
    pub rebooted: bool,
}

/// A tether device on a smoltcp interface.
pub struct SimDevice {
    /// The device logic.
    pub dev: SimDev,
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
    udp: SocketHandle,
    udp_out: Box<[u8]>,
    http: Option<http::HttpServer>,
    /// The device's own client socket (push and fetch), and its driver's
    /// buffers: allocated at boot, as a firmware would.
    client: SocketHandle,
    client_mem: Box<[u8]>,
    client_port: u16,
    config: SimConfig,
    reboot_pending: bool,
    /// LED transitions seen (for tests and the log).
    pub led_log: Vec<bool>,
    /// Reboots done.
    pub reboots: u32,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("config", &self.config)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

fn ms(now: Instant) -> u64 {
    now.total_millis().max(0) as u64
}

impl SimDevice {
    /// Boot a device on `phy` at `now`.
    pub fn new<D: phy::Device + ?Sized>(config: SimConfig, phy: &mut D, now: Instant) -> Self {
        let mut ic = IfaceConfig::new(HardwareAddress::Ethernet(config.mac));
        ic.random_seed = config.seed;
        let mut iface = Interface::new(ic, phy, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::Ipv4(config.ip));
        });
        if let Some(gw) = config.gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        let mut sockets = SocketSet::new(Vec::new());
        let mut conns = Vec::new();
        for _ in 0..config.connections.max(1) {
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; config.tcp_rx]),
                tcp::SocketBuffer::new(vec![0; config.tcp_tx]),
            );
            s.set_nagle_enabled(false);
            s.set_keep_alive(Some(Duration::from_secs(30)));
            s.set_timeout(Some(Duration::from_secs(120)));
            let handle = sockets.add(s);
            let buf = |n: usize| vec![0u8; n].into_boxed_slice();
            let session = DeviceConn::new(
                buf(config.header_buf),
                buf(config.tx_buf),
                buf(config.output_buf),
            );
            conns.push(Conn {
                handle,
                session,
                socket_deadline: None,
            });
        }
        let udp_buf = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; config.udp_packets],
                vec![0; config.udp_packets * MAX_DATAGRAM],
            )
        };
        let mut u = udp::Socket::new(udp_buf(), udp_buf());
        let _ = u.bind(config.port);
        let udp = sockets.add(u);
        let http = config
            .http
            .then(|| http::HttpServer::new(&mut sockets, config.verbose));
        let client = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; config.tcp_rx]),
            tcp::SocketBuffer::new(vec![0; config.tcp_tx]),
        ));
        // The `mem` command reports these lines; they live as long as the process.
        let extra: &'static [(&'static str, usize)] = Box::leak(config.ram().into_boxed_slice());
        let dev_config = Config {
            agent: concat!("tether-sim/", env!("CARGO_PKG_VERSION")),
            max_chunk: config.max_chunk,
            extra_ram: extra,
            key: config.key.map(|k| k.0),
            handshake_timeout_ms: config.handshake_timeout_ms,
            idle_timeout_ms: config.idle_timeout_ms,
            ..Config::DEFAULT
        };
        let dev = Device::new(
            dev_config,
            RamStore::new(vec![0u8; config.store_bytes].into_boxed_slice()),
            OffsetClock {
                offset_ms: config.unix_ms_at_zero,
            },
            Table {
                state: jobs::Jobs::new(),
                commands: &SIM_COMMANDS,
            },
            ms(now),
        );
        SimDevice {
            dev,
            iface,
            sockets,
            conns,
            udp,
            udp_out: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            http,
            client,
            client_mem: vec![0u8; jobs::ARENA].into_boxed_slice(),
            client_port: (config.seed % 16384) as u16,
            config,
            reboot_pending: false,
            led_log: Vec::new(),
            reboots: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// TCP connection slots in use (neither listening nor closed).
    pub fn slots_in_use(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| {
                let s = self.sockets.get::<tcp::Socket<'_>>(c.handle).state();
                !matches!(s, tcp::State::Listen | tcp::State::Closed)
            })
            .count()
    }

    /// A handshake nonce: from the OS-seeded CSPRNG, never from `seed`. A
    /// predictable or repeated server nonce would let a recorded session's
    /// Auth be replayed (a firmware takes its nonces from a TRNG).
    fn nonce(&mut self) -> [u8; 16] {
        rand::random()
    }

    fn log(&self, args: std::fmt::Arguments<'_>) {
        if self.config.verbose {
            eprintln!("[tether-sim] {args}");
        }
    }

    /// Run the network stack and the device until neither has more to do
    /// at `now`.
    pub fn poll<D: phy::Device + ?Sized>(&mut self, now: Instant, phy: &mut D) -> PollOutcome {
        let mut out = PollOutcome::default();
        for _ in 0..256 {
            self.iface.poll(now, phy, &mut self.sockets);
            let w = self.serve(now);
            out.worked |= w;
            if self.reboot_pending && self.drained() {
                self.reboot(now);
                out.rebooted = true;
                continue;
            }
            if !w {
                break;
            }
        }
        out
    }

    /// When to poll next (`None`: only when a packet arrives or, with a
    /// session open, at its next deadline).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        if self.reboot_pending {
            return Some(Duration::from_millis(1));
        }
        let net = self.iface.poll_delay(now, &self.sockets);
        let now_ms = ms(now);
        let session = self
            .conns
            .iter()
            .flat_map(|c| [c.session.poll_timeout(), c.socket_deadline])
            .chain([self.http.as_ref().and_then(|h| h.poll_timeout())])
            .flatten()
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms)));
        match (net, session) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn drained(&self) -> bool {
        self.conns.iter().all(|c| {
            let s = self.sockets.get::<tcp::Socket<'_>>(c.handle);
            !c.session.wants_transmit() && s.send_queue() == 0
        })
    }

    fn reboot(&mut self, now: Instant) {
        self.log(format_args!(
            "reboot: resetting device state (files survive)"
        ));
        for c in &mut self.conns {
            self.sockets.get_mut::<tcp::Socket<'_>>(c.handle).abort();
            c.session.handle_close(&mut self.dev);
        }
        self.dev.handle_reboot(ms(now));
        self.reboot_pending = false;
        self.reboots += 1;
    }

    /// Move bytes between sockets and sessions; returns whether any moved.
    fn serve(&mut self, now: Instant) -> bool {
        let now_ms = ms(now);
        let mut worked = false;
        let port = self.config.port;
        for i in 0..self.conns.len() {
            let handle = self.conns[i].handle;
            let state = self.sockets.get::<tcp::Socket<'_>>(handle).state();
            use tcp::State as S;
            let session_open = self.conns[i].session.is_open();
            match state {
                // TIME_WAIT only guards against a late retransmitted FIN:
                // free the socket for the next connection at once.
                S::Closed | S::TimeWait => {
                    if state == S::TimeWait {
                        self.sockets.get_mut::<tcp::Socket<'_>>(handle).abort();
                    }
                    if session_open {
                        self.conns[i].session.handle_close(&mut self.dev);
                        self.log(format_args!("connection {i} reset"));
                    }
                    self.conns[i].socket_deadline = None;
                    let _ = self.sockets.get_mut::<tcp::Socket<'_>>(handle).listen(port);
                    continue;
                }
                S::Listen => {
                    self.conns[i].socket_deadline = None;
                    continue;
                }
                S::SynSent | S::SynReceived => {
                    // A handshake that never completes (a SYN flood) frees
                    // the slot at the handshake deadline.
                    let limit = u64::from(self.config.handshake_timeout_ms);
                    if limit > 0 {
                        let due = *self.conns[i].socket_deadline.get_or_insert(now_ms + limit);
                        if now_ms >= due {
                            self.sockets.get_mut::<tcp::Socket<'_>>(handle).abort();
                            self.log(format_args!("connection {i}: TCP handshake timed out"));
                            worked = true;
                        }
                    }
                    continue;
                }
                S::Established | S::CloseWait if !session_open && !self.reboot_pending => {
                    self.conns[i].socket_deadline = None;
                    let nonce = self.nonce();
                    let remote = self
                        .sockets
                        .get::<tcp::Socket<'_>>(handle)
                        .remote_endpoint();
                    // The back-off after failed authentication is per address.
                    let peer = match remote.map(|e| e.addr) {
                        Some(IpAddress::Ipv4(a)) => Peer::ipv4(a.octets()),
                        _ => Peer::UNKNOWN,
                    };
                    let c = &mut self.conns[i];
                    c.session.handle_accept(&mut self.dev, peer, nonce, now_ms);
                    if let Some(p) = remote {
                        self.log(format_args!("connection {i} from {p}"));
                    }
                    worked = true;
                }
                S::Established | S::CloseWait => {}
                // Closing: nothing more to serve; a peer that never
                // finishes the close (reads nothing, sends no FIN) is reset
                // after the close grace.
                _ => {
                    if session_open {
                        self.conns[i].session.handle_close(&mut self.dev);
                    }
                    let due = *self.conns[i]
                        .socket_deadline
                        .get_or_insert(now_ms + CLOSE_GRACE_MS);
                    if now_ms >= due {
                        self.sockets.get_mut::<tcp::Socket<'_>>(handle).abort();
                        self.log(format_args!("connection {i}: close not completed, reset"));
                        worked = true;
                    }
                    continue;
                }
            }
            // After a reboot request, only flush: no new input is served.
            let reading = !self.reboot_pending;
            let sock = self.sockets.get_mut::<tcp::Socket<'_>>(handle);
            let c = &mut self.conns[i];
            let dev = &mut self.dev;
            // Handshake, idle and close deadlines.
            let before = dev.stats().timeouts;
            c.session.handle_timeout(dev, now_ms);
            if dev.stats().timeouts != before {
                worked = true;
                if self.config.verbose {
                    eprintln!("[tether-sim] connection {i}: deadline passed");
                }
            }
            loop {
                let mut moved = false;
                while reading && sock.can_recv() {
                    let n = sock
                        .recv(|buf| {
                            let n = c.session.handle_bytes(dev, buf, now_ms);
                            (n, n)
                        })
                        .unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    moved = true;
                }
                while sock.can_send() && c.session.wants_transmit() {
                    let n = sock
                        .send(|buf| {
                            let n = c.session.poll_transmit(dev, buf, now_ms);
                            (n, n)
                        })
                        .unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    moved = true;
                }
                worked |= moved;
                if !moved {
                    break;
                }
            }
            let closing = c.session.poll_close()
                || (sock.state() == S::CloseWait
                    && !sock.can_recv()
                    && !c.session.wants_transmit());
            if closing {
                if c.session.wants_transmit() {
                    // The close grace passed with the final Error undelivered
                    // (the peer reads nothing): reset, free the slot now.
                    sock.abort();
                } else {
                    sock.close();
                }
                c.session.handle_close(dev);
                worked = true;
            }
        }
        worked |= self.serve_udp(now_ms);
        let (open, ip) = (self.slots_in_use(), self.config.ip.address());
        if let Some(h) = &mut self.http {
            worked |= h.serve(&mut self.sockets, &self.dev, ip, open, now_ms);
        }
        while let Some(ev) = self.dev.poll_event() {
            match ev {
                Event::Led(on) => {
                    self.led_log.push(on);
                    self.log(format_args!("LED {}", if on { "on" } else { "off" }));
                }
                Event::Reboot => {
                    self.log(format_args!("reboot requested"));
                    self.reboot_pending = true;
                }
                _ => {}
            }
            worked = true;
        }
        worked
    }

    fn serve_udp(&mut self, now_ms: u64) -> bool {
        let mut worked = false;
        loop {
            let sock = self.sockets.get_mut::<udp::Socket<'_>>(self.udp);
            if !sock.can_send() {
                break;
            }
            let Ok((data, meta)) = sock.recv() else { break };
            let n = self.dev.handle_datagram(data, now_ms, &mut self.udp_out);
            if n > 0 {
                let _ = sock.send_slice(&self.udp_out[..n], meta.endpoint);
            }
            worked = true;
        }
        worked
    }
}

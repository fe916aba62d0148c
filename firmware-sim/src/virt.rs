//! The virtual wire: a host-side and a device-side smoltcp interface joined
//! in memory, with smoltcp's seeded [`FaultInjector`] on the device's port
//! and a virtual clock, so runs are deterministic and need no privileges.
//!
//! Time only moves when nothing else can: [`VirtualNet::pump`] runs both
//! stacks until they are quiet, then jumps the clock to the next timer
//! (a retransmission, a delayed ACK). Every blocking wait has a budget of
//! virtual time ([`VirtualNet::patience`]), so a stuck exchange ends with
//! [`NetError::TimedOut`] instead of hanging.
//!
//! [`VirtualTcp`] is a blocking `embedded-io` stream over a host-side TCP
//! socket, for the core's blocking client driver
//! (`tether_proto::client::blocking::Client`) or a raw test peer.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::rc::Rc;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{
    self, ChecksumCapabilities, DeviceCapabilities, FaultInjector, Medium, PcapMode, PcapWriter,
};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr,
    IpListenEndpoint, Ipv4Address, Ipv4Cidr,
};

use crate::{SimConfig, SimDevice};

/// Ethernet frames, one way.
#[derive(Debug, Clone, Default)]
struct Pipe {
    q: Rc<RefCell<VecDeque<Vec<u8>>>>,
    sent: Rc<Cell<u64>>,
}

/// One end of the wire: a smoltcp Ethernet device.
#[derive(Debug)]
pub struct Port {
    rx: Pipe,
    tx: Pipe,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct RxToken(Vec<u8>);

#[doc(hidden)]
#[derive(Debug)]
pub struct TxToken(Pipe);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0u8; len];
        let r = f(&mut b);
        self.0.q.borrow_mut().push_back(b);
        self.0.sent.set(self.0.sent.get() + 1);
        r
    }
}

impl phy::Device for Port {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c.checksum = ChecksumCapabilities::default();
        c
    }

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken)> {
        let f = self.rx.q.borrow_mut().pop_front()?;
        Some((RxToken(f), TxToken(self.tx.clone())))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken> {
        Some(TxToken(self.tx.clone()))
    }
}

/// The device side's network device: faults, then a capture, then the wire.
pub type DevicePhy = FaultInjector<PcapWriter<Port, Box<dyn Write>>>;

/// Faults and capture on the device's port.
pub struct VirtualConfig {
    /// Fault injector seed.
    pub seed: u32,
    /// Chance of dropping a frame, in percent (each direction).
    pub drop_pct: u8,
    /// Chance of flipping a bit in a frame, in percent (each direction).
    pub corrupt_pct: u8,
    /// Drop frames larger than this (0: no limit).
    pub size_limit: usize,
    /// Frames per interval the device may send (0: no limit).
    pub tx_rate_limit: u64,
    /// Frames per interval the device may receive (0: no limit).
    pub rx_rate_limit: u64,
    /// The rate-limit interval.
    pub shaping_interval: Duration,
    /// Write every frame the device sees to this pcap sink.
    pub pcap: Option<Box<dyn Write>>,
    /// The device.
    pub device: SimConfig,
}

impl fmt::Debug for VirtualConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualConfig")
            .field("seed", &self.seed)
            .field("drop_pct", &self.drop_pct)
            .field("corrupt_pct", &self.corrupt_pct)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Default for VirtualConfig {
    fn default() -> Self {
        VirtualConfig {
            seed: 0x7e7e_7e7e,
            drop_pct: 0,
            corrupt_pct: 0,
            size_limit: 0,
            tx_rate_limit: 0,
            rx_rate_limit: 0,
            shaping_interval: Duration::from_millis(0),
            pcap: None,
            device: SimConfig::default(),
        }
    }
}

/// Why a blocking operation on the virtual wire gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetError {
    /// Nothing happened within the virtual-time budget.
    TimedOut,
    /// The connection was refused or reset.
    Reset,
    /// Nothing is in flight and no timer is set: no progress is possible.
    Stalled,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::TimedOut => write!(f, "timed out (virtual time)"),
            NetError::Reset => write!(f, "connection refused or reset"),
            NetError::Stalled => write!(f, "network stalled: nothing in flight, no timer set"),
        }
    }
}

impl std::error::Error for NetError {}

impl embedded_io::Error for NetError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            NetError::TimedOut => embedded_io::ErrorKind::TimedOut,
            NetError::Reset => embedded_io::ErrorKind::ConnectionReset,
            NetError::Stalled => embedded_io::ErrorKind::Other,
        }
    }
}

/// Host and device on one in-memory Ethernet segment.
pub struct VirtualNet {
    now: Instant,
    host_phy: Port,
    dev_phy: DevicePhy,
    to_dev: Pipe,
    to_host: Pipe,
    host: Interface,
    host_sockets: SocketSet<'static>,
    udp: SocketHandle,
    icmp: SocketHandle,
    closed: Vec<SocketHandle>,
    next_port: u16,
    dev_ip: Ipv4Address,
    dev_port: u16,
    /// The simulated device.
    pub device: SimDevice,
    /// Virtual time a blocking wait may take without progress.
    pub patience: Duration,
}

impl fmt::Debug for VirtualNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualNet")
            .field("now", &self.now)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// The host side's address on the wire.
pub const HOST_IP: Ipv4Address = Ipv4Address::new(192, 168, 69, 100);

impl VirtualNet {
    /// Build the wire, boot the device at virtual time 0.
    pub fn new(cfg: VirtualConfig) -> Self {
        let to_dev = Pipe::default();
        let to_host = Pipe::default();
        let now = Instant::from_millis(0);
        let mut host_phy = Port {
            rx: to_host.clone(),
            tx: to_dev.clone(),
        };
        let dev_port = Port {
            rx: to_dev.clone(),
            tx: to_host.clone(),
        };
        let sink: Box<dyn Write> = cfg.pcap.unwrap_or_else(|| Box::new(std::io::sink()));
        let mut dev_phy =
            FaultInjector::new(PcapWriter::new(dev_port, sink, PcapMode::Both), cfg.seed);
        dev_phy.set_drop_chance(cfg.drop_pct.min(100));
        dev_phy.set_corrupt_chance(cfg.corrupt_pct.min(100));
        dev_phy.set_max_packet_size(cfg.size_limit);
        dev_phy.set_max_tx_rate(cfg.tx_rate_limit);
        dev_phy.set_max_rx_rate(cfg.rx_rate_limit);
        dev_phy.set_bucket_interval(cfg.shaping_interval);
        let dev_ip = cfg.device.ip.address();
        let dev_port_no = cfg.device.port;
        let device = SimDevice::new(cfg.device, &mut dev_phy, now);

        let mut ic = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress([
            0x02, 0, 0, 0, 0, 0x02,
        ])));
        ic.random_seed = u64::from(cfg.seed) ^ 0x5eed;
        let mut host = Interface::new(ic, &mut host_phy, now);
        host.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(HOST_IP, 24)));
        });
        let mut host_sockets = SocketSet::new(Vec::new());
        let udp_buf = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; 8],
                vec![0; 8 * tether_proto::MAX_DATAGRAM],
            )
        };
        let mut u = udp::Socket::new(udp_buf(), udp_buf());
        let _ = u.bind(40_000);
        let udp = host_sockets.add(u);
        let icmp_buf =
            || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4096]);
        let mut i = icmp::Socket::new(icmp_buf(), icmp_buf());
        let _ = i.bind(icmp::Endpoint::Ident(0x7e7e));
        let icmp = host_sockets.add(i);
        VirtualNet {
            now,
            host_phy,
            dev_phy,
            to_dev,
            to_host,
            host,
            host_sockets,
            udp,
            icmp,
            closed: Vec::new(),
            next_port: 49_152,
            dev_ip,
            dev_port: dev_port_no,
            device,
            patience: Duration::from_secs(600),
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Frames sent on the wire so far, both ways.
    pub fn frames(&self) -> u64 {
        self.to_dev.sent.get() + self.to_host.sent.get()
    }

    /// Run both stacks at the current time until both are quiet; returns
    /// whether anything happened.
    pub fn step(&mut self) -> bool {
        let mut any = false;
        for _ in 0..100_000 {
            let before = self.frames();
            self.host
                .poll(self.now, &mut self.host_phy, &mut self.host_sockets);
            let o = self.device.poll(self.now, &mut self.dev_phy);
            let queued = !self.to_dev.q.borrow().is_empty() || !self.to_host.q.borrow().is_empty();
            let moved = self.frames() != before || o.worked || o.rebooted;
            any |= moved;
            if !moved && !queued {
                break;
            }
        }
        any
    }

    /// Make progress: run the stacks, or if they are quiet, move the clock
    /// to the next timer. Fails past `deadline` or when nothing is scheduled.
    pub fn pump(&mut self, deadline: Instant) -> Result<(), NetError> {
        if self.step() {
            return Ok(());
        }
        let host = self.host.poll_delay(self.now, &self.host_sockets);
        let dev = self.device.poll_delay(self.now);
        let d = match (host, dev) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return Err(NetError::Stalled),
        };
        let d = d.max(Duration::from_millis(1));
        if self.now + d > deadline {
            self.now = deadline;
            return Err(NetError::TimedOut);
        }
        self.now += d;
        Ok(())
    }

    /// Let `d` of virtual time pass, serving whatever happens meanwhile.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while self.pump(until).is_ok() {}
        self.now = until;
        self.step();
    }

    fn reap(&mut self) {
        let mut keep = Vec::new();
        for h in self.closed.drain(..) {
            let s = self.host_sockets.get::<tcp::Socket<'_>>(h);
            if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                self.host_sockets.remove(h);
            } else {
                keep.push(h);
            }
        }
        self.closed = keep;
    }

    /// Open a TCP connection from the host to the device.
    pub fn connect(&mut self) -> Result<VirtualTcp<'_>, NetError> {
        let conn = self.open_tcp(None)?;
        Ok(VirtualTcp { net: self, conn })
    }

    /// Open a TCP connection from the host to the device, from `from` (an
    /// address on the host's /24 other than [`HOST_IP`] takes the host
    /// interface's second address: a test can be several peers), and
    /// name it by handle: for callers that keep the net elsewhere (several
    /// connections used in turn, the net behind a `RefCell`). Use it with
    /// [`tcp_read`](Self::tcp_read), [`tcp_write`](Self::tcp_write) and
    /// [`close_tcp`](Self::close_tcp).
    pub fn open_tcp(&mut self, from: Option<Ipv4Address>) -> Result<TcpConn, NetError> {
        self.reap();
        let local = from.unwrap_or(HOST_IP);
        if local != HOST_IP {
            self.host.update_ip_addrs(|a| {
                a.truncate(1);
                let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(local, 24)));
            });
        }
        let port = self.next_port;
        self.next_port = if port == u16::MAX { 49_152 } else { port + 1 };
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
            tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        );
        s.set_nagle_enabled(false);
        let handle = self.host_sockets.add(s);
        let remote = (self.dev_ip, self.dev_port);
        let endpoint = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(local)),
            port,
        };
        let r = self
            .host_sockets
            .get_mut::<tcp::Socket<'_>>(handle)
            .connect(self.host.context(), remote, endpoint);
        if r.is_err() {
            self.host_sockets.remove(handle);
            return Err(NetError::Reset);
        }
        let deadline = self.now + self.patience;
        loop {
            match self.host_sockets.get::<tcp::Socket<'_>>(handle).state() {
                // A device that answers and closes at once (a refusal) leaves
                // the connection half closed already: still connected.
                tcp::State::Established | tcp::State::CloseWait => break,
                tcp::State::Closed => {
                    self.host_sockets.remove(handle);
                    return Err(NetError::Reset);
                }
                _ => {}
            }
            if let Err(e) = self.pump(deadline) {
                self.host_sockets.remove(handle);
                return Err(e);
            }
        }
        Ok(TcpConn(handle))
    }

    fn sock(&mut self, c: TcpConn) -> &mut tcp::Socket<'static> {
        self.host_sockets.get_mut::<tcp::Socket<'static>>(c.0)
    }

    /// Read from connection `c`, waiting (in virtual time) for at least one
    /// byte; `Ok(0)` once the device closed its side.
    pub fn tcp_read(&mut self, c: TcpConn, buf: &mut [u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.now + self.patience;
        loop {
            let s = self.sock(c);
            if s.can_recv() {
                return s.recv_slice(buf).map_err(|_| NetError::Reset);
            }
            if !s.may_recv() {
                return Ok(0);
            }
            self.pump(deadline)?;
        }
    }

    /// Queue bytes on connection `c`, waiting (in virtual time) for room
    /// for at least one; returns how many were taken.
    pub fn tcp_write(&mut self, c: TcpConn, buf: &[u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.now + self.patience;
        loop {
            let s = self.sock(c);
            if !s.may_send() {
                return Err(NetError::Reset);
            }
            if s.can_send() {
                match s.send_slice(buf) {
                    Ok(n) if n > 0 => return Ok(n),
                    Ok(_) => {}
                    Err(_) => return Err(NetError::Reset),
                }
            }
            self.pump(deadline)?;
        }
    }

    /// Close the sending half of `c` and wait until the device has seen it.
    pub fn tcp_shutdown(&mut self, c: TcpConn) {
        self.sock(c).close();
        let deadline = self.now + Duration::from_secs(5);
        while !matches!(
            self.sock(c).state(),
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::FinWait2
        ) {
            if self.pump(deadline).is_err() {
                break;
            }
        }
    }

    /// Done with `c`: close it (its socket is freed once the close completes).
    pub fn close_tcp(&mut self, c: TcpConn) {
        self.tcp_shutdown(c);
        self.closed.push(c.0);
    }

    /// Send one datagram to the device's UDP port and wait for one reply,
    /// resending up to `retries` times after a second of silence.
    pub fn udp_request(&mut self, datagram: &[u8], retries: u32) -> Result<Vec<u8>, NetError> {
        let remote = (self.dev_ip, self.dev_port);
        for _ in 0..=retries {
            let _ = self
                .host_sockets
                .get_mut::<udp::Socket<'_>>(self.udp)
                .send_slice(datagram, remote);
            let deadline = self.now + Duration::from_secs(1);
            loop {
                let s = self.host_sockets.get_mut::<udp::Socket<'_>>(self.udp);
                if let Ok((d, _)) = s.recv() {
                    return Ok(d.to_vec());
                }
                match self.pump(deadline) {
                    Ok(()) => {}
                    Err(NetError::TimedOut) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(NetError::TimedOut)
    }
}

impl VirtualNet {
    /// Send an ICMP echo request to the device; returns the round trip in
    /// virtual time, or `None` if no matching reply came within a second.
    pub fn icmp_ping(&mut self, seq_no: u16) -> Option<Duration> {
        let payload = *b"tether-sim icmp";
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x7e7e,
            seq_no,
            data: &payload,
        };
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        let to = IpAddress::Ipv4(self.dev_ip);
        let s = self.host_sockets.get_mut::<icmp::Socket<'_>>(self.icmp);
        let buf = s.send(repr.buffer_len(), to).ok()?;
        repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
        let start = self.now;
        let deadline = self.now + Duration::from_secs(1);
        loop {
            let s = self.host_sockets.get_mut::<icmp::Socket<'_>>(self.icmp);
            while let Ok((bytes, from)) = s.recv() {
                let Ok(p) = Icmpv4Packet::new_checked(bytes) else {
                    continue;
                };
                if let Ok(Icmpv4Repr::EchoReply {
                    ident: 0x7e7e,
                    seq_no: n,
                    data,
                }) = Icmpv4Repr::parse(&p, &caps)
                {
                    if n == seq_no && data == payload && from == to {
                        return Some(self.now - start);
                    }
                }
            }
            self.pump(deadline).ok()?;
        }
    }
}

/// A TCP connection on the virtual wire, named by handle (see
/// [`VirtualNet::open_tcp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConn(SocketHandle);

/// A blocking TCP stream on the virtual wire (host side).
pub struct VirtualTcp<'n> {
    net: &'n mut VirtualNet,
    conn: TcpConn,
}

impl fmt::Debug for VirtualTcp<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualTcp")
            .field("conn", &self.conn)
            .finish()
    }
}

impl VirtualTcp<'_> {
    /// The network this stream runs on.
    pub fn net(&mut self) -> &mut VirtualNet {
        self.net
    }

    /// Close the sending half and wait until the device has seen it.
    pub fn shutdown(&mut self) {
        self.net.tcp_shutdown(self.conn);
    }
}

impl Drop for VirtualTcp<'_> {
    fn drop(&mut self) {
        self.net.close_tcp(self.conn);
    }
}

impl embedded_io::ErrorType for VirtualTcp<'_> {
    type Error = NetError;
}

impl embedded_io::Read for VirtualTcp<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        self.net.tcp_read(self.conn, buf)
    }
}

impl embedded_io::Write for VirtualTcp<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        self.net.tcp_write(self.conn, buf)
    }

    fn flush(&mut self) -> Result<(), NetError> {
        self.net.step();
        Ok(())
    }
}

//! tether on QEMU's `mps2-an386` (Cortex-M4F): served over TCP and UDP
//! port 7117 through the board's LAN9118 (embassy-net) and over UART0 as a
//! raw byte stream, with a RAM store standing in for flash. The log goes to
//! UART1. See README.md for the memory map, provisioning and porting.
#![no_std]
#![no_main]

mod client;
mod http;
mod hw;
mod link;
mod nic;
mod rng;
mod serve;
mod time;
mod uart;

use core::mem::MaybeUninit;

use board::prov::{self, Provisioning};
use embassy_executor::Spawner;
use embassy_net::tcp::TcpSocket;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use embassy_time::Duration;
use static_cell::StaticCell;
use tether_proto::{DEFAULT_PORT, MAX_DATAGRAM};

use crate::link::{TcpLink, UartLink};
use crate::nic::Nic;
use crate::serve::{BoardEvent, Conn, Settings, Shared};
use crate::time::now_ms;

/// TCP connections served at once.
const TCP_CONNS: usize = 2;
/// TCP receive window and send buffer per connection. The receive window
/// stays below the LAN9118's RX data FIFO (about 10 KiB on QEMU's model), so
/// a full window of segments is never dropped by the NIC.
const TCP_RX: usize = 8 * 1024;
const TCP_TX: usize = 8 * 1024;
/// Session buffers: frame header, reply queue, command output.
const HEADER: usize = 512;
const TX: usize = 640;
const OUTPUT: usize = 768;
/// Largest frame body.
const MAX_CHUNK: u32 = 4096;
/// The file store: 12 MiB of the board's 16 MiB PSRAM, standing in for
/// external flash (room for a 4 MiB file and its replacement).
const STORE_BYTES: usize = 12 << 20;

/// The store arena, in PSRAM (memory.x: section `.psram`, not loaded).
#[unsafe(link_section = ".psram")]
static mut STORE: MaybeUninit<[u8; STORE_BYTES]> = MaybeUninit::uninit();

/// Buffers of one session.
struct SessionBufs {
    header: [u8; HEADER],
    tx: [u8; TX],
    output: [u8; OUTPUT],
}

impl SessionBufs {
    const fn new() -> Self {
        SessionBufs {
            header: [0; HEADER],
            tx: [0; TX],
            output: [0; OUTPUT],
        }
    }

    fn conn(&'static mut self) -> Conn {
        Conn::new(&mut self.header, &mut self.tx, &mut self.output)
    }
}

/// One TCP connection's buffers: session, socket receive, socket send.
type TcpSlot = (SessionBufs, [u8; TCP_RX], [u8; TCP_TX]);

/// RAM by use, reported by the `mem` command.
static RAM: [(&str, usize); 9] = [
    ("tcp socket buffers", TCP_CONNS * (TCP_RX + TCP_TX)),
    ("udp socket buffers", 4 * MAX_DATAGRAM),
    ("udp request+reply", 2 * MAX_DATAGRAM),
    ("session buffers (3)", 3 * (HEADER + TX + OUTPUT)),
    ("session state (3)", 3 * Conn::STATE_BYTES),
    ("nic frame buffers", 2 * board::lan9118::MAX_FRAME),
    ("uart pipes", 2 * uart::PIPE),
    (
        "client (push/fetch): socket + buffers",
        client::SOCK_RX + client::SOCK_TX + client::ARENA,
    ),
    (
        "status page (2): sockets + request buffers + state",
        http::CONNS * (http::SOCK_RX + http::SOCK_TX + http::REQUEST_BUF + http::STATE_BYTES),
    ),
];

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write as _;
    // The log UART only: UART0 carries the protocol.
    let _ = writeln!(uart::Log, "PANIC: {info}");
    // A real board resets (QEMU runs with -no-reboot, so it exits: visible).
    cortex_m::peripheral::SCB::sys_reset()
}

fn halt(why: core::fmt::Arguments<'_>) -> ! {
    log!("halted: {why}");
    loop {
        cortex_m::asm::wfi();
    }
}

/// Read the provisioning block, then wipe its seed from memory.
fn provisioning() -> Result<Provisioning, prov::ProvError> {
    let at = prov::ADDR as *mut [u8; prov::LEN];
    // SAFETY: memory.x keeps ADDR..ADDR+LEN out of the image; nothing else
    // refers to it; the start script loads the block there.
    let bytes = unsafe { core::ptr::read_volatile(at) };
    let p = Provisioning::parse(&bytes);
    for i in 44..76 {
        // SAFETY: as above; within the block.
        unsafe { core::ptr::write_volatile((at as *mut u8).add(i), 0) };
    }
    p
}

/// Act on board events (the LED); called after any session step.
pub fn board_events(sh: &Shared) {
    while let Some(ev) = sh.poll_events() {
        match ev {
            BoardEvent::Led(on) => {
                hw::led(on);
                log!("LED {}", if on { "on" } else { "off" });
            }
        }
    }
    if sh.finish_reboot(now_ms()) {
        log!("reboot: device state reset (files kept)");
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let cp =
        cortex_m::Peripherals::take().unwrap_or_else(|| halt(format_args!("peripherals taken")));
    uart::init_log();
    time::init(cp.SYST);
    log!(
        "tether-firmware-qemu {} on mps2-an386",
        env!("CARGO_PKG_VERSION")
    );

    let p = provisioning()
        .unwrap_or_else(|e| halt(format_args!("{e}: no seed for nonces, refusing to serve")));
    rng::seed(p.seed);
    log!(
        "provisioned: key {}, address {}.{}.{}.{}/{}, clock {}",
        if p.key.is_some() {
            "yes"
        } else {
            "no (serves anyone)"
        },
        p.ip.addr[0],
        p.ip.addr[1],
        p.ip.addr[2],
        p.ip.addr[3],
        p.ip.prefix,
        if p.unix_ms.is_some() { "set" } else { "unset" },
    );

    // SAFETY: STORE is only referenced here, once; zeroing makes it initialised.
    let arena: &'static mut [u8] = unsafe {
        let s = &mut *core::ptr::addr_of_mut!(STORE);
        s.as_mut_ptr().write_bytes(0, 1);
        &mut *s.as_mut_ptr()
    };
    static SHARED: StaticCell<Shared> = StaticCell::new();
    let now = now_ms();
    let sh: &'static Shared = SHARED.init(Shared::new(
        Settings {
            key: p.key,
            unix_ms_at_boot: p.unix_ms.map(|t| t.saturating_sub(now)),
            max_chunk: MAX_CHUNK,
            ram: &RAM,
        },
        arena,
        now,
    ));

    // UART0: the serial link, independent of the network.
    uart::init_link();
    static UART_BUFS: StaticCell<SessionBufs> = StaticCell::new();
    spawner.spawn(
        uart_task(UART_BUFS.init(SessionBufs::new()).conn(), sh)
            .unwrap_or_else(|_| halt(format_args!("spawn"))),
    );

    let nic = Nic::new().unwrap_or_else(|e| halt(format_args!("LAN9118: {e:?}")));
    let mac = nic.mac();
    log!(
        "LAN9118 up, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    let [a, b, c, d] = p.ip.addr;
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), p.ip.prefix),
        gateway: p
            .ip
            .gateway
            .map(|[a, b, c, d]| Ipv4Address::new(a, b, c, d)),
        dns_servers: heapless::Vec::new(),
    });
    // The TCP slots, the UDP socket, the client's socket and the status page's.
    static RESOURCES: StaticCell<StackResources<{ TCP_CONNS + 2 + http::CONNS }>> =
        StaticCell::new();
    static NIC: StaticCell<Nic> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        NIC.init(nic),
        config,
        RESOURCES.init(StackResources::new()),
        rng::u64(),
    );
    spawner.spawn(net_task(runner).unwrap_or_else(|_| halt(format_args!("spawn"))));
    spawner.spawn(udp_task(stack, sh).unwrap_or_else(|_| halt(format_args!("spawn"))));
    static TCP_BUFS: StaticCell<[TcpSlot; TCP_CONNS]> = StaticCell::new();
    let bufs = TCP_BUFS.init([const { (SessionBufs::new(), [0; TCP_RX], [0; TCP_TX]) }; TCP_CONNS]);
    for (i, (s, rx, tx)) in bufs.iter_mut().enumerate() {
        spawner.spawn(
            tcp_task(i, stack, s.conn(), rx, tx, sh)
                .unwrap_or_else(|_| halt(format_args!("spawn"))),
        );
    }
    static CLIENT: StaticCell<client::ClientMem> = StaticCell::new();
    spawner.spawn(
        client::client_task(stack, sh, p.key, CLIENT.init(client::ClientMem::new()))
            .unwrap_or_else(|_| halt(format_args!("spawn"))),
    );
    static HTTP: StaticCell<[http::HttpMem; http::CONNS]> = StaticCell::new();
    let http_mem = HTTP.init([const { http::HttpMem::new() }; http::CONNS]);
    for (i, mem) in http_mem.iter_mut().enumerate() {
        spawner.spawn(
            http::http_task(i, stack, sh, p.ip.addr, mem)
                .unwrap_or_else(|_| halt(format_args!("spawn"))),
        );
    }
    log!("serving tether on TCP and UDP port {DEFAULT_PORT} and on UART0");
    log!("status page on http://{a}.{b}.{c}.{d}:{}/", http::PORT);
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, &'static mut Nic>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn udp_task(stack: Stack<'static>, sh: &'static Shared) {
    static META: StaticCell<[PacketMetadata; 4]> = StaticCell::new();
    static BUFS: StaticCell<[[u8; 2 * MAX_DATAGRAM]; 2]> = StaticCell::new();
    static IO: StaticCell<[[u8; MAX_DATAGRAM]; 2]> = StaticCell::new();
    let meta = META.init([PacketMetadata::EMPTY; 4]);
    let [rx_meta, tx_meta] = meta.split_at_mut(2).into();
    let [rx_buf, tx_buf] = BUFS.init([[0; 2 * MAX_DATAGRAM]; 2]);
    let [req, reply] = IO.init([[0; MAX_DATAGRAM]; 2]);
    let mut sock = UdpSocket::new(stack, rx_meta, rx_buf, tx_meta, tx_buf);
    if sock.bind(DEFAULT_PORT).is_err() {
        halt(format_args!("UDP port {DEFAULT_PORT} taken"));
    }
    loop {
        // A datagram larger than `req` is refused by the socket (truncated): dropped.
        let Ok((n, meta)) = sock.recv_from(req).await else {
            continue;
        };
        let r = sh.answer_datagram(&req[..n], now_ms(), reply);
        if r > 0 {
            let _ = sock.send_to(&reply[..r], meta.endpoint).await;
        }
        board_events(sh);
    }
}

#[embassy_executor::task(pool_size = TCP_CONNS)]
async fn tcp_task(
    slot: usize,
    stack: Stack<'static>,
    mut conn: Conn,
    rx: &'static mut [u8; TCP_RX],
    tx: &'static mut [u8; TCP_TX],
    sh: &'static Shared,
) {
    loop {
        let mut sock = TcpSocket::new(stack, rx, tx);
        sock.set_nagle_enabled(false);
        // A handshake that never completes frees the slot after this.
        sock.set_timeout(Some(Duration::from_secs(10)));
        if sock.accept(DEFAULT_PORT).await.is_ok() && sock.may_recv() && !sh.reboot_pending() {
            sock.set_timeout(Some(Duration::from_secs(120)));
            sock.set_keep_alive(Some(Duration::from_secs(30)));
            let ip = match sock.remote_endpoint().map(|e| e.addr) {
                Some(embassy_net::IpAddress::Ipv4(a)) => Some(a.octets()),
                _ => None,
            };
            if let Some(e) = sock.remote_endpoint() {
                log!("tcp {slot}: connection from {e}");
            }
            conn.open(sh, ip, rng::nonce(), now_ms());
            link::serve(&mut TcpLink(&mut sock), &mut conn, sh).await;
            board_events(sh);
            sock.close();
            // Let the peer read what was sent and the FIN, within a bound.
            let _ = embassy_time::with_timeout(Duration::from_secs(2), sock.flush()).await;
            log!("tcp {slot}: closed");
        }
        sock.abort();
        let _ = embassy_time::with_timeout(Duration::from_millis(100), sock.flush()).await;
        drop(sock);
    }
}

#[embassy_executor::task]
async fn uart_task(mut conn: Conn, sh: &'static Shared) {
    let mut link = UartLink::new();
    loop {
        // A serial line has no connection: a session starts at the first byte.
        while !link.has_input() {
            uart::wait_readable().await;
        }
        if sh.reboot_pending() {
            embassy_time::Timer::after_millis(10).await;
            board_events(sh);
            continue;
        }
        conn.open(sh, None, rng::nonce(), now_ms());
        link::serve(&mut link, &mut conn, sh).await;
        board_events(sh);
    }
}

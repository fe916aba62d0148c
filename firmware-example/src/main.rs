//! The smallest real firmware around tether's device logic: one TCP session
//! and the UDP service, a 16 KiB RAM store, no heap.
//!
//! A real board replaces the opaque "network" below (`black_box`) with its
//! TCP/IP stack (smoltcp, embassy-net, lwIP) exactly as `firmware-sim` does,
//! takes nonces from its hardware RNG, and keeps the store in flash.
//! `make size` builds this for `thumbv7em-none-eabihf` and reports flash and
//! RAM; `make test` builds it so a change that stops the device logic from
//! linking into firmware fails CI.
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use panic_halt as _;
use tether_proto::device::{Config, Device, DeviceConn, NoWallClock, Peer, RamStore};
use tether_proto::MAX_DATAGRAM;

/// Per-connection buffers: header (negotiated max_header), transmit queue, command output.
const HEADER: usize = 512;
const TX: usize = 640;
const OUTPUT: usize = 768;

#[entry]
fn main() -> ! {
    let mut arena = [0u8; 16 * 1024];
    let store: RamStore<&mut [u8], 16> = RamStore::new(&mut arena[..]);
    let mut now_ms = 0u64;
    let config = Config {
        agent: "tether-fw/0.1.0",
        ..Config::default()
    };
    let mut dev = Device::new(config, store, NoWallClock, (), now_ms);

    let (mut h, mut t, mut o) = ([0u8; HEADER], [0u8; TX], [0u8; OUTPUT]);
    let mut session: DeviceConn<_> = DeviceConn::new(&mut h[..], &mut t[..], &mut o[..]);
    session.handle_accept(&mut dev, Peer([0; 16]), black_box([0x5a; 16]), now_ms);

    let mut rx = [0u8; 256];
    let mut tx = [0u8; 256];
    let mut reply = [0u8; MAX_DATAGRAM];
    loop {
        // Stand-in for the NIC: bytes the optimiser cannot see through.
        let n = black_box(&mut rx).len();
        let used = session.handle_bytes(&mut dev, &rx[..n], now_ms);
        let sent = session.poll_transmit(&mut dev, &mut tx, now_ms);
        black_box((used, &tx[..sent]));
        session.handle_timeout(&mut dev, now_ms);
        if session.poll_close() {
            session.handle_close(&mut dev);
            session.handle_accept(&mut dev, Peer([0; 16]), black_box([0x5a; 16]), now_ms);
        }
        let r = dev.handle_datagram(black_box(&rx[..n]), now_ms, &mut reply);
        black_box(&reply[..r]);
        while let Some(ev) = dev.poll_event() {
            black_box(ev);
        }
        now_ms = black_box(now_ms + 1);
        cortex_m::asm::nop();
    }
}

//! The CMSDK APB UARTs: UART1 is the log (blocking writes), UART0 the
//! protocol link, interrupt-driven through two byte pipes.
//!
//! UART0 receive: the RX interrupt moves each byte into `RX`. When `RX` is
//! full the handler masks the RX interrupt and leaves the byte in the
//! UART's buffer, so the sender is held back instead of bytes being lost
//! (on QEMU the chardev then stops delivering; on hardware, with a one-byte
//! buffer, a byte would be lost past that point: a real board needs a DMA
//! or FIFO UART, or flow control, at high baud rates). The reader unmasks it
//! again once it has made room.
//!
//! UART0 transmit: bytes queued in `TX` are moved to the UART by the TX
//! interrupt, which fires each time the UART's one-byte buffer empties.

use core::fmt;

use board::cmsdk;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::pipe::Pipe;
use embassy_sync::signal::Signal;

use crate::hw::{self, Irq, Mmio, SYSCLK_HZ, UART0, UART1};

/// Baud rate programmed into both UARTs (QEMU does not pace to it).
pub const BAUD: u32 = 115_200;
/// Bytes buffered each way on UART0.
pub const PIPE: usize = 1024;

static RX: Pipe<CriticalSectionRawMutex, PIPE> = Pipe::new();
static TX: Pipe<CriticalSectionRawMutex, PIPE> = Pipe::new();

fn setup(u: Mmio, ctrl: u32) {
    u.write(cmsdk::CTRL, 0);
    u.write(cmsdk::BAUDDIV, cmsdk::bauddiv(SYSCLK_HZ, BAUD));
    u.write(
        cmsdk::STATE,
        cmsdk::STATE_TX_OVERRUN | cmsdk::STATE_RX_OVERRUN,
    );
    u.write(cmsdk::INTSTATUS, 0xf);
    u.write(cmsdk::CTRL, ctrl);
}

/// Set up UART1 for the log.
pub fn init_log() {
    setup(UART1, cmsdk::CTRL_TX_EN);
}

/// Set up UART0 for the protocol link and unmask its interrupts.
pub fn init_link() {
    setup(
        UART0,
        cmsdk::CTRL_TX_EN | cmsdk::CTRL_RX_EN | cmsdk::CTRL_RX_INT | cmsdk::CTRL_TX_INT,
    );
    hw::enable(Irq::Uart0Rx);
    hw::enable(Irq::Uart0Tx);
}

/// The log on UART1, for `write!`.
#[derive(Debug)]
pub struct Log;

impl fmt::Write for Log {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            while UART1.read(cmsdk::STATE) & cmsdk::STATE_TX_FULL != 0 {}
            UART1.write(cmsdk::DATA, u32::from(b));
        }
        Ok(())
    }
}

/// One line on the log (UART1), prefixed with the uptime in milliseconds.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::uart::Log, "[{:>8}] {}", $crate::time::now_ms(), format_args!($($arg)*));
    }};
}

static RX_READY: Signal<CriticalSectionRawMutex, ()> = Signal::new();
static TX_ROOM: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// Whether received bytes wait in the pipe.
pub fn readable() -> bool {
    !RX.is_empty()
}

/// Wait until received bytes wait in the pipe.
pub async fn wait_readable() {
    // The signal latches: a byte that arrives after the check still wakes us.
    while RX.is_empty() {
        RX_READY.wait().await;
    }
}

/// Move received bytes into `buf`; returns how many (0 when none wait).
pub fn try_read(buf: &mut [u8]) -> usize {
    let n = RX.try_read(buf).unwrap_or(0);
    if n > 0 {
        // There is room again: let the handler take a byte it left waiting.
        critical_section::with(|_| {
            UART0.write(cmsdk::CTRL, UART0.read(cmsdk::CTRL) | cmsdk::CTRL_RX_INT);
        });
        hw::pend(Irq::Uart0Rx);
    }
    n
}

/// Wait until the transmit pipe has room.
pub async fn wait_writable() {
    while TX.is_full() {
        TX_ROOM.wait().await;
    }
}

/// Room in the transmit pipe.
pub fn write_room() -> usize {
    TX.free_capacity()
}

/// Queue `bytes` for UART0; returns how many fit (0 when the pipe is full).
pub fn try_write(bytes: &[u8]) -> usize {
    // The pipe takes one contiguous run per call: a write that wraps around
    // its end takes two.
    let mut n = 0;
    while n < bytes.len() {
        match TX.try_write(&bytes[n..]) {
            Ok(k) if k > 0 => n += k,
            _ => break,
        }
    }
    if n > 0 {
        hw::pend(Irq::Uart0Tx);
    }
    n
}

/// UART0 RX interrupt.
pub unsafe extern "C" fn uart0_rx_irq() {
    UART0.write(cmsdk::INTSTATUS, cmsdk::INT_RX);
    let mut got = false;
    while UART0.read(cmsdk::STATE) & cmsdk::STATE_RX_FULL != 0 {
        if RX.is_full() {
            // Hold the byte in the UART (the sender waits) until there is room.
            UART0.write(cmsdk::CTRL, UART0.read(cmsdk::CTRL) & !cmsdk::CTRL_RX_INT);
            break;
        }
        let b = UART0.read(cmsdk::DATA) as u8;
        let _ = RX.try_write(&[b]);
        got = true;
    }
    if got {
        RX_READY.signal(());
    }
}

/// UART0 TX interrupt.
pub unsafe extern "C" fn uart0_tx_irq() {
    UART0.write(cmsdk::INTSTATUS, cmsdk::INT_TX);
    let mut sent = false;
    while UART0.read(cmsdk::STATE) & cmsdk::STATE_TX_FULL == 0 {
        let mut b = [0u8; 1];
        match TX.try_read(&mut b) {
            Ok(1) => {
                UART0.write(cmsdk::DATA, u32::from(b[0]));
                sent = true;
            }
            _ => break,
        }
    }
    if sent {
        TX_ROOM.signal(());
    }
}

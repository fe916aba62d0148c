//! The LAN9118 as an embassy-net device: frames move through the driver in
//! `board::lan9118`; the Ethernet interrupt (RX status FIFO level) wakes
//! the network stack's runner.

use core::task::Context;

use board::lan9118::{self, Lan9118, MAX_FRAME};
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::waitqueue::AtomicWaker;

use crate::hw::{self, Irq, Mmio, ETH};

static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// The controller plus one frame buffer each way.
pub struct Nic {
    hw: Lan9118<Mmio>,
    rx: [u8; MAX_FRAME],
    tx: [u8; MAX_FRAME],
    /// Frames dropped on receive (errored, runt, too long).
    pub rx_dropped: u32,
}

impl Nic {
    /// Bring the controller up and unmask its interrupt.
    pub fn new() -> Result<Nic, lan9118::InitError> {
        let hw = Lan9118::init(ETH)?;
        hw::enable(Irq::Ethernet);
        Ok(Nic {
            hw,
            rx: [0; MAX_FRAME],
            tx: [0; MAX_FRAME],
            rx_dropped: 0,
        })
    }

    /// The station address.
    pub fn mac(&self) -> [u8; 6] {
        self.hw.mac()
    }
}

/// A received frame.
pub struct Rx<'a>(&'a mut [u8]);

/// Room for one frame to send.
pub struct Tx<'a> {
    hw: &'a mut Lan9118<Mmio>,
    buf: &'a mut [u8; MAX_FRAME],
}

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MAX_FRAME);
        let r = f(&mut self.buf[..len]);
        self.hw.transmit(&self.buf[..len]);
        r
    }
}

impl Driver for Nic {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(Rx<'_>, Tx<'_>)> {
        // Register before looking, so a frame arriving after the look wakes us.
        RX_WAKER.register(cx.waker());
        if !self.hw.tx_ready(MAX_FRAME) {
            // No TX interrupt is used: the FIFO drains in microseconds.
            cx.waker().wake_by_ref();
            return None;
        }
        loop {
            match self.hw.receive(&mut self.rx)? {
                Ok(n) => {
                    let tx = Tx {
                        hw: &mut self.hw,
                        buf: &mut self.tx,
                    };
                    return Some((Rx(&mut self.rx[..n]), tx));
                }
                Err(_) => self.rx_dropped = self.rx_dropped.wrapping_add(1),
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context<'_>) -> Option<Tx<'_>> {
        if !self.hw.tx_ready(MAX_FRAME) {
            cx.waker().wake_by_ref();
            return None;
        }
        Some(Tx {
            hw: &mut self.hw,
            buf: &mut self.tx,
        })
    }

    fn link_state(&mut self, _cx: &mut Context<'_>) -> LinkState {
        if self.hw.link_up() {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.max_transmission_unit = MAX_FRAME;
        c
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.hw.mac())
    }
}

/// The Ethernet interrupt: acknowledge and wake the stack.
pub unsafe extern "C" fn ethernet_irq() {
    lan9118::ack_interrupts(&ETH);
    RX_WAKER.wake();
}

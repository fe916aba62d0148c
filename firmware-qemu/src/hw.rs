//! The mps2-an386 board: memory-mapped registers, the interrupt lines this
//! firmware uses and its vector table (QEMU hw/arm/mps2.c; ARM AN386).

use core::ptr::{read_volatile, write_volatile};

use board::lan9118;

/// SYSCLK: the core, SysTick and APB peripherals run at 25 MHz.
pub const SYSCLK_HZ: u32 = 25_000_000;
/// CMSDK APB UART0: the protocol link.
pub const UART0: Mmio = Mmio(0x4000_4000);
/// CMSDK APB UART1: the log.
pub const UART1: Mmio = Mmio(0x4000_5000);
/// LAN9118 Ethernet controller.
pub const ETH: Mmio = Mmio(0x4020_0000);
/// FPGA I/O: user LEDs in bits 1:0 of its first register.
pub const FPGAIO_LED: Mmio = Mmio(0x4002_8000);

/// A block of 32-bit registers at a fixed address.
#[derive(Debug, Clone, Copy)]
pub struct Mmio(pub usize);

impl Mmio {
    /// Read the register at `offset`.
    #[inline]
    pub fn read(self, offset: usize) -> u32 {
        // SAFETY: the address is one of the board's device registers above,
        // 4-byte aligned, and device registers have no Rust-visible aliasing.
        unsafe { read_volatile((self.0 + offset) as *const u32) }
    }

    /// Write the register at `offset`.
    #[inline]
    pub fn write(self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.0 + offset) as *mut u32, value) }
    }
}

impl lan9118::Bus for Mmio {
    fn read(&self, offset: usize) -> u32 {
        Mmio::read(*self, offset)
    }
    fn write(&self, offset: usize, value: u32) {
        Mmio::write(*self, offset, value)
    }
}

/// The external interrupts used (NVIC numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Irq {
    /// UART0 received a byte.
    Uart0Rx = 0,
    /// UART0's transmit buffer emptied.
    Uart0Tx = 1,
    /// The LAN9118.
    Ethernet = 13,
}

// SAFETY: the numbers are the board's external interrupt lines, all < 32.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// An interrupt handler as the vector table holds it.
pub type Vector = unsafe extern "C" fn();

unsafe extern "C" {
    fn DefaultHandler();
}

/// The 32 external interrupt vectors of the AN385/AN386 image (cortex-m-rt
/// places them after the exception vectors; its `device` feature expects
/// this table and `device.x`). Lines this firmware does not use go to
/// cortex-m-rt's `DefaultHandler`.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [Vector; 32] = {
    let mut v: [Vector; 32] = [DefaultHandler; 32];
    v[Irq::Uart0Rx as usize] = crate::uart::uart0_rx_irq;
    v[Irq::Uart0Tx as usize] = crate::uart::uart0_tx_irq;
    v[Irq::Ethernet as usize] = crate::nic::ethernet_irq;
    v
};

/// Unmask `irq` in the NVIC.
pub fn enable(irq: Irq) {
    // SAFETY: every handler this firmware unmasks only touches state that
    // is shared through critical sections or atomics.
    unsafe { cortex_m::peripheral::NVIC::unmask(irq) }
}

/// Make `irq` pending (its handler runs as soon as it is unmasked).
pub fn pend(irq: Irq) {
    cortex_m::peripheral::NVIC::pend(irq)
}

/// Drive the board's user LED 0.
pub fn led(on: bool) {
    let v = FPGAIO_LED.read(0);
    FPGAIO_LED.write(0, if on { v | 1 } else { v & !1 });
}

//! ARM CMSDK APB UART (Cortex-M System Design Kit, ARM DDI0479): register
//! offsets and bits. The board has five; QEMU connects `-serial` options to
//! them in order (UART0 at 0x4000_4000 first).

/// Received / transmitted byte.
pub const DATA: usize = 0x00;
/// Status: TX full, RX full, overruns.
pub const STATE: usize = 0x04;
/// Enables.
pub const CTRL: usize = 0x08;
/// Interrupt status (write 1 to clear).
pub const INTSTATUS: usize = 0x0c;
/// Baud rate divider (at least 16).
pub const BAUDDIV: usize = 0x10;

/// STATE: a byte waits to be sent.
pub const STATE_TX_FULL: u32 = 1 << 0;
/// STATE: a received byte waits.
pub const STATE_RX_FULL: u32 = 1 << 1;
/// STATE: TX overrun (write 1 to clear).
pub const STATE_TX_OVERRUN: u32 = 1 << 2;
/// STATE: RX overrun: a byte was lost (write 1 to clear).
pub const STATE_RX_OVERRUN: u32 = 1 << 3;

/// CTRL: transmitter enable.
pub const CTRL_TX_EN: u32 = 1 << 0;
/// CTRL: receiver enable.
pub const CTRL_RX_EN: u32 = 1 << 1;
/// CTRL: TX interrupt (TX buffer emptied).
pub const CTRL_TX_INT: u32 = 1 << 2;
/// CTRL: RX interrupt (byte received).
pub const CTRL_RX_INT: u32 = 1 << 3;

/// INTSTATUS: TX.
pub const INT_TX: u32 = 1 << 0;
/// INTSTATUS: RX.
pub const INT_RX: u32 = 1 << 1;

/// The divider for `baud` from a `pclk` Hz clock: rounded to the nearest,
/// never below the minimum of 16.
pub const fn bauddiv(pclk: u32, baud: u32) -> u32 {
    let d = (pclk + baud / 2) / baud;
    if d < 16 {
        16
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divider() {
        assert_eq!(bauddiv(25_000_000, 115_200), 217);
        assert_eq!(bauddiv(25_000_000, 921_600), 27);
        assert_eq!(bauddiv(25_000_000, 3_000_000), 16, "clamped to the minimum");
    }
}

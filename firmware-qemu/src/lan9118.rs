//! SMSC LAN9118 (and its software-compatible LAN9220) Ethernet controller,
//! programmed through its 32-bit register window: reset, MAC address, MAC
//! and PHY set-up, and frames in and out through the PIO FIFOs.
//!
//! Written from the SMSC LAN9118 datasheet's register map (the same one the
//! Linux smsc911x and RTEMS drivers use) and checked against QEMU's model
//! (hw/net/lan9118.c), which is what `mps2-an386` boots with. Register
//! access goes through [`Bus`], so the logic runs in host unit tests against
//! a fake register bank; the firmware's `Bus` is volatile MMIO at
//! 0x4020_0000.
//!
//! What the driver relies on, and why:
//! * A received frame is announced by one word in the RX status FIFO
//!   (length including the 4-byte FCS in bits 29:16, error summary in bit
//!   15); its bytes follow in the RX data FIFO as `ceil(len / 4)` words,
//!   little-endian, with RX_CFG's offset and end padding left at 0. A frame
//!   that is in error or does not fit the caller's buffer is read out and
//!   dropped word by word (QEMU's RX_DP_CTRL fast-forward does not release
//!   FIFO space, so it is not used).
//! * A frame is sent as TX command A (first and last segment, buffer
//!   length), TX command B (tag, packet length) and its bytes as words.
//!   TX status is allowed to overrun (TXSAO) and drained when present, so a
//!   full status FIFO never stops transmission.
//! * The interrupt pin is set active-high push-pull; only "RX status FIFO
//!   level" (at least one frame) is enabled.

/// 32-bit register access at byte offsets from the controller's base.
pub trait Bus {
    /// Read the register at `offset`.
    fn read(&self, offset: usize) -> u32;
    /// Write `value` to the register at `offset`.
    fn write(&self, offset: usize, value: u32);
}

/// Register offsets.
pub mod reg {
    /// RX data FIFO port.
    pub const RX_DATA_FIFO: usize = 0x00;
    /// TX data FIFO port.
    pub const TX_DATA_FIFO: usize = 0x20;
    /// RX status FIFO port (pops).
    pub const RX_STATUS_FIFO: usize = 0x40;
    /// TX status FIFO port (pops).
    pub const TX_STATUS_FIFO: usize = 0x48;
    /// Chip id (bits 31:16) and revision.
    pub const ID_REV: usize = 0x50;
    /// Interrupt pin configuration.
    pub const IRQ_CFG: usize = 0x54;
    /// Interrupt status (write 1 to clear).
    pub const INT_STS: usize = 0x58;
    /// Interrupt enable.
    pub const INT_EN: usize = 0x5c;
    /// Reads 0x8765_4321 in the right byte order.
    pub const BYTE_TEST: usize = 0x64;
    /// FIFO level interrupt thresholds.
    pub const FIFO_INT: usize = 0x68;
    /// Receive configuration.
    pub const RX_CFG: usize = 0x6c;
    /// Transmit configuration.
    pub const TX_CFG: usize = 0x70;
    /// Hardware configuration (soft reset, FIFO sizes).
    pub const HW_CFG: usize = 0x74;
    /// RX FIFO information: status words used (23:16), data bytes used (15:0).
    pub const RX_FIFO_INF: usize = 0x7c;
    /// TX FIFO information: status words used (23:16), data space free (15:0).
    pub const TX_FIFO_INF: usize = 0x80;
    /// Power management; bit 0 is READY.
    pub const PMT_CTRL: usize = 0x84;
    /// MAC CSR indirect access: command.
    pub const MAC_CSR_CMD: usize = 0xa4;
    /// MAC CSR indirect access: data.
    pub const MAC_CSR_DATA: usize = 0xa8;
}

/// MAC CSR indices (through MAC_CSR_CMD / MAC_CSR_DATA).
pub mod mac {
    /// MAC control.
    pub const CR: u32 = 1;
    /// Address bytes 4 and 5.
    pub const ADDRH: u32 = 2;
    /// Address bytes 0 to 3.
    pub const ADDRL: u32 = 3;
    /// MII access (PHY register number, direction, busy).
    pub const MII_ACC: u32 = 6;
    /// MII data.
    pub const MII_DATA: u32 = 7;
    /// MAC_CR: receiver enable.
    pub const CR_RXEN: u32 = 1 << 2;
    /// MAC_CR: transmitter enable.
    pub const CR_TXEN: u32 = 1 << 3;
    /// MAC_CR: full duplex.
    pub const CR_FDPX: u32 = 1 << 20;
    /// MAC_CR: promiscuous (set after reset; cleared by the driver).
    pub const CR_PRMS: u32 = 1 << 18;
}

/// Bits used by the driver.
pub mod bits {
    /// MAC_CSR_CMD: busy / start.
    pub const CSR_BUSY: u32 = 1 << 31;
    /// MAC_CSR_CMD: read (clear: write).
    pub const CSR_READ: u32 = 1 << 30;
    /// HW_CFG: soft reset.
    pub const HW_SRST: u32 = 1 << 0;
    /// HW_CFG: must be written as one.
    pub const HW_MBO: u32 = 1 << 20;
    /// HW_CFG: TX FIFO size 5 KiB (the reset default).
    pub const HW_TX_FIF_5K: u32 = 5 << 16;
    /// PMT_CTRL: the device is ready after reset.
    pub const PMT_READY: u32 = 1 << 0;
    /// TX_CFG: transmitter on.
    pub const TX_ON: u32 = 1 << 1;
    /// TX_CFG: TX status may overrun (transmission never stalls on it).
    pub const TX_SAO: u32 = 1 << 2;
    /// IRQ_CFG: interrupt pin enabled.
    pub const IRQ_EN: u32 = 1 << 8;
    /// IRQ_CFG: active high.
    pub const IRQ_POL: u32 = 1 << 4;
    /// IRQ_CFG: push-pull.
    pub const IRQ_TYPE: u32 = 1 << 0;
    /// INT_STS / INT_EN: RX status FIFO level reached.
    pub const INT_RSFL: u32 = 1 << 3;
    /// TX command A: first segment.
    pub const TXA_FIRST: u32 = 1 << 13;
    /// TX command A: last segment.
    pub const TXA_LAST: u32 = 1 << 12;
    /// RX status: error summary.
    pub const RXS_ES: u32 = 1 << 15;
    /// MII_ACC: busy / start.
    pub const MII_BUSY: u32 = 1 << 0;
    /// MII_ACC: write (clear: read).
    pub const MII_WRITE: u32 = 1 << 1;
    /// PHY basic status: link up.
    pub const BSR_LINK: u32 = 1 << 2;
    /// PHY basic control: auto-negotiation enable.
    pub const BCR_ANEG: u32 = 1 << 12;
    /// PHY basic control: restart auto-negotiation.
    pub const BCR_ANEG_RESTART: u32 = 1 << 9;
}

/// The value BYTE_TEST reads when the bus is wired right.
pub const BYTE_TEST_VALUE: u32 = 0x8765_4321;

/// The internal PHY's address on the MII bus.
pub const PHY_ADDR: u32 = 1;

/// Largest Ethernet frame without FCS (1500-byte MTU).
pub const MAX_FRAME: usize = 1514;

/// Register reads allowed while waiting for reset or a CSR to finish.
const SPIN: u32 = 100_000;

/// Chip ids of the LAN911x/LAN921x family this driver accepts (ID_REV 31:16).
const IDS: [u16; 9] = [
    0x0115, 0x0116, 0x0117, 0x0118, 0x115a, 0x117a, 0x9210, 0x9218, 0x9220,
];

/// Why the controller could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// BYTE_TEST did not read 0x8765_4321 (nothing there, or wrong endianness).
    ByteTest(u32),
    /// ID_REV names a chip this driver does not know.
    UnknownChip(u32),
    /// Soft reset or READY did not complete.
    ResetTimeout,
    /// A MAC CSR access stayed busy.
    CsrTimeout,
}

/// Why a received frame was dropped (it was read out of the FIFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxError {
    /// The controller flagged it (CRC, runt, too long, collision...).
    Errored,
    /// Shorter than an Ethernet header plus FCS.
    Runt(usize),
    /// Longer than the caller's buffer.
    TooLong(usize),
}

/// TX command A for a frame of `len` bytes sent as one segment.
pub const fn tx_cmd_a(len: usize) -> u32 {
    bits::TXA_FIRST | bits::TXA_LAST | (len as u32 & 0x7ff)
}

/// TX command B: `tag` (echoed in TX status) and the packet length.
pub const fn tx_cmd_b(tag: u16, len: usize) -> u32 {
    (tag as u32) << 16 | (len as u32 & 0x7ff)
}

/// Frame length including FCS, from an RX status word.
pub const fn rx_status_len(status: u32) -> usize {
    ((status >> 16) & 0x3fff) as usize
}

/// Data FIFO words holding `len` bytes.
pub const fn words(len: usize) -> usize {
    len.div_ceil(4)
}

/// The MAC address from the ADDRL and ADDRH CSRs.
pub const fn mac_from_csr(addrl: u32, addrh: u32) -> [u8; 6] {
    let l = addrl.to_le_bytes();
    let h = addrh.to_le_bytes();
    [l[0], l[1], l[2], l[3], h[0], h[1]]
}

/// MII_ACC value to read (`write` false) or write PHY register `reg`.
pub const fn mii_acc(reg: u32, write: bool) -> u32 {
    PHY_ADDR << 11 | (reg & 0x1f) << 6 | if write { bits::MII_WRITE } else { 0 } | bits::MII_BUSY
}

/// A LAN9118 brought up and ready to move frames.
#[derive(Debug)]
pub struct Lan9118<B> {
    bus: B,
    mac: [u8; 6],
    tag: u16,
}

impl<B: Bus> Lan9118<B> {
    /// Identify, reset and configure the controller: MAC address as found
    /// (loaded from its EEPROM), exact-match and broadcast filtering, full
    /// duplex, PHY auto-negotiation, transmitter and receiver on, RX
    /// interrupt enabled on an active-high pin.
    pub fn init(bus: B) -> Result<Self, InitError> {
        let bt = bus.read(reg::BYTE_TEST);
        if bt != BYTE_TEST_VALUE {
            return Err(InitError::ByteTest(bt));
        }
        let id = bus.read(reg::ID_REV);
        if !IDS.contains(&((id >> 16) as u16)) {
            return Err(InitError::UnknownChip(id));
        }
        // Keep the pin quiet while resetting.
        bus.write(reg::INT_EN, 0);
        bus.write(reg::HW_CFG, bits::HW_SRST);
        if !spin(|| bus.read(reg::HW_CFG) & bits::HW_SRST == 0)
            || !spin(|| bus.read(reg::PMT_CTRL) & bits::PMT_READY != 0)
        {
            return Err(InitError::ResetTimeout);
        }
        bus.write(reg::HW_CFG, bits::HW_MBO | bits::HW_TX_FIF_5K);
        let mut nic = Lan9118 {
            bus,
            mac: [0; 6],
            tag: 0,
        };
        let l = nic.mac_read(mac::ADDRL)?;
        let h = nic.mac_read(mac::ADDRH)?;
        nic.mac = mac_from_csr(l, h);
        nic.phy_write(0, bits::BCR_ANEG | bits::BCR_ANEG_RESTART)?;
        nic.mac_write(mac::CR, mac::CR_TXEN | mac::CR_RXEN | mac::CR_FDPX)?;
        nic.bus.write(reg::RX_CFG, 0);
        nic.bus.write(reg::TX_CFG, bits::TX_ON | bits::TX_SAO);
        // Interrupt at one RX status word (level 0), the default TX levels.
        nic.bus.write(reg::FIFO_INT, 0x4800_0000);
        nic.bus.write(reg::INT_STS, u32::MAX);
        nic.bus.write(reg::INT_EN, bits::INT_RSFL);
        nic.bus
            .write(reg::IRQ_CFG, bits::IRQ_EN | bits::IRQ_POL | bits::IRQ_TYPE);
        Ok(nic)
    }

    /// The station address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether a received frame is waiting.
    pub fn rx_pending(&self) -> bool {
        (self.bus.read(reg::RX_FIFO_INF) >> 16) & 0xff != 0
    }

    /// Take the next received frame into `buf`: `None` when none waits,
    /// `Some(Ok(n))` for `n` bytes (FCS stripped), `Some(Err(_))` for a
    /// frame that was dropped.
    pub fn receive(&mut self, buf: &mut [u8]) -> Option<Result<usize, RxError>> {
        if !self.rx_pending() {
            return None;
        }
        let status = self.bus.read(reg::RX_STATUS_FIFO);
        let len = rx_status_len(status);
        let n = words(len);
        let bad = if status & bits::RXS_ES != 0 {
            Some(RxError::Errored)
        } else if len < 14 + 4 {
            Some(RxError::Runt(len))
        } else if len - 4 > buf.len() {
            Some(RxError::TooLong(len))
        } else {
            None
        };
        if let Some(e) = bad {
            for _ in 0..n {
                self.bus.read(reg::RX_DATA_FIFO);
            }
            return Some(Err(e));
        }
        let data = len - 4;
        for i in 0..n {
            let w = self.bus.read(reg::RX_DATA_FIFO).to_le_bytes();
            let at = i * 4;
            if at < data {
                let k = (data - at).min(4);
                buf[at..at + k].copy_from_slice(&w[..k]);
            }
        }
        Some(Ok(data))
    }

    /// Whether a frame of `len` bytes fits the TX data FIFO now (drains TX
    /// status words on the way).
    pub fn tx_ready(&self, len: usize) -> bool {
        let inf = self.bus.read(reg::TX_FIFO_INF);
        for _ in 0..(inf >> 16) & 0xff {
            self.bus.read(reg::TX_STATUS_FIFO);
        }
        (inf & 0xffff) as usize >= 4 * words(len) + 8
    }

    /// Queue `frame` (at most [`MAX_FRAME`] bytes; longer is cut there) for
    /// transmission. Check [`tx_ready`](Self::tx_ready) first.
    pub fn transmit(&mut self, frame: &[u8]) {
        let frame = &frame[..frame.len().min(MAX_FRAME)];
        self.tag = self.tag.wrapping_add(1);
        self.bus.write(reg::TX_DATA_FIFO, tx_cmd_a(frame.len()));
        self.bus
            .write(reg::TX_DATA_FIFO, tx_cmd_b(self.tag, frame.len()));
        for chunk in frame.chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.bus.write(reg::TX_DATA_FIFO, u32::from_le_bytes(w));
        }
    }

    /// Whether the PHY reports link.
    pub fn link_up(&self) -> bool {
        self.phy_read(1).is_ok_and(|bsr| bsr & bits::BSR_LINK != 0)
    }

    fn csr_wait(&self) -> Result<(), InitError> {
        if spin(|| self.bus.read(reg::MAC_CSR_CMD) & bits::CSR_BUSY == 0) {
            Ok(())
        } else {
            Err(InitError::CsrTimeout)
        }
    }

    /// Read MAC CSR `index`.
    pub fn mac_read(&self, index: u32) -> Result<u32, InitError> {
        self.csr_wait()?;
        self.bus
            .write(reg::MAC_CSR_CMD, bits::CSR_BUSY | bits::CSR_READ | index);
        self.csr_wait()?;
        Ok(self.bus.read(reg::MAC_CSR_DATA))
    }

    /// Write MAC CSR `index`.
    pub fn mac_write(&self, index: u32, value: u32) -> Result<(), InitError> {
        self.csr_wait()?;
        self.bus.write(reg::MAC_CSR_DATA, value);
        self.bus.write(reg::MAC_CSR_CMD, bits::CSR_BUSY | index);
        self.csr_wait()
    }

    fn mii_wait(&self) -> Result<(), InitError> {
        for _ in 0..SPIN / 100 {
            if self.mac_read(mac::MII_ACC)? & bits::MII_BUSY == 0 {
                return Ok(());
            }
        }
        Err(InitError::CsrTimeout)
    }

    /// Read PHY register `r`.
    pub fn phy_read(&self, r: u32) -> Result<u32, InitError> {
        self.mii_wait()?;
        self.mac_write(mac::MII_ACC, mii_acc(r, false))?;
        self.mii_wait()?;
        Ok(self.mac_read(mac::MII_DATA)? & 0xffff)
    }

    /// Write PHY register `r`.
    pub fn phy_write(&self, r: u32, value: u32) -> Result<(), InitError> {
        self.mii_wait()?;
        self.mac_write(mac::MII_DATA, value & 0xffff)?;
        self.mac_write(mac::MII_ACC, mii_acc(r, true))?;
        self.mii_wait()
    }
}

/// Read and clear the pending interrupt causes: what the interrupt handler
/// does (it needs no driver state, only the registers).
pub fn ack_interrupts<B: Bus>(bus: &B) -> u32 {
    let s = bus.read(reg::INT_STS);
    bus.write(reg::INT_STS, s);
    s
}

fn spin(mut done: impl FnMut() -> bool) -> bool {
    (0..SPIN).any(|_| done())
}

#[cfg(test)]
mod tests;

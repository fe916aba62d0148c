//! The driver against a fake register bank that behaves like QEMU's model
//! (hw/net/lan9118.c) in what the driver uses.

extern crate std;

use super::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::vec::Vec;

#[derive(Default, Debug)]
struct Chip {
    id: u32,
    byte_test: u32,
    hw_cfg: u32,
    pmt: u32,
    reset_polls: u32,
    int_sts: u32,
    int_en: u32,
    irq_cfg: u32,
    tx_cfg: u32,
    rx_cfg: u32,
    fifo_int: u32,
    mac_cr: u32,
    mac_data: u32,
    mac_addr: [u8; 6],
    mii_data: u32,
    phy_bcr: u32,
    rx_status: VecDeque<u32>,
    rx_data: VecDeque<u32>,
    tx_words: Vec<u32>,
    tx_status: VecDeque<u32>,
    tx_free: u32,
    underflows: u32,
}

#[derive(Debug)]
struct Fake(RefCell<Chip>);

impl Fake {
    fn qemu() -> Fake {
        Fake(RefCell::new(Chip {
            id: 0x0118_0001,
            byte_test: BYTE_TEST_VALUE,
            hw_cfg: 0x0005_0004,
            pmt: 1,
            mac_cr: mac::CR_PRMS,
            mac_addr: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            tx_free: 4608,
            ..Chip::default()
        }))
    }

    /// A frame arriving from the wire, stored as QEMU stores it.
    fn arrive(&self, frame: &[u8]) {
        let mut c = self.0.borrow_mut();
        let mut bytes = frame.to_vec();
        bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // FCS
        for w in bytes.chunks(4) {
            let mut b = [0u8; 4];
            b[..w.len()].copy_from_slice(w);
            c.rx_data.push_back(u32::from_le_bytes(b));
        }
        c.rx_status.push_back(((frame.len() as u32) + 4) << 16);
        c.int_sts |= bits::INT_RSFL;
    }

    fn mac_csr(&self, cmd: u32) {
        let mut c = self.0.borrow_mut();
        let index = cmd & 0xf;
        if cmd & bits::CSR_READ != 0 {
            c.mac_data = match index {
                mac::CR => c.mac_cr,
                mac::ADDRH => u32::from(c.mac_addr[4]) | u32::from(c.mac_addr[5]) << 8,
                mac::ADDRL => {
                    u32::from_le_bytes([c.mac_addr[0], c.mac_addr[1], c.mac_addr[2], c.mac_addr[3]])
                }
                mac::MII_ACC => 0,
                mac::MII_DATA => c.mii_data,
                other => panic!("read of MAC CSR {other}"),
            };
        } else {
            let v = c.mac_data;
            match index {
                mac::CR => c.mac_cr = v,
                mac::MII_DATA => c.mii_data = v,
                mac::MII_ACC => {
                    assert_eq!((v >> 11) & 0x1f, PHY_ADDR, "PHY address");
                    let r = (v >> 6) & 0x1f;
                    if v & bits::MII_WRITE != 0 {
                        assert_eq!(r, 0, "only BCR is written");
                        c.phy_bcr = c.mii_data;
                    } else {
                        c.mii_data = match r {
                            0 => c.phy_bcr,
                            1 => 0x7809 | 0x0024,
                            other => panic!("read of PHY register {other}"),
                        };
                    }
                }
                other => panic!("write of MAC CSR {other}"),
            }
        }
    }
}

impl Bus for &Fake {
    fn read(&self, offset: usize) -> u32 {
        let mut c = self.0.borrow_mut();
        match offset {
            reg::RX_DATA_FIFO => c.rx_data.pop_front().unwrap_or_else(|| {
                c.underflows += 1;
                0
            }),
            reg::RX_STATUS_FIFO => c.rx_status.pop_front().unwrap_or(0),
            reg::TX_STATUS_FIFO => c.tx_status.pop_front().unwrap_or(0),
            reg::ID_REV => c.id,
            reg::BYTE_TEST => c.byte_test,
            reg::HW_CFG => {
                if c.reset_polls > 0 {
                    c.reset_polls -= 1;
                    if c.reset_polls == 0 {
                        c.hw_cfg &= !bits::HW_SRST;
                    }
                }
                c.hw_cfg
            }
            reg::PMT_CTRL => c.pmt,
            reg::INT_STS => c.int_sts,
            reg::RX_FIFO_INF => (c.rx_status.len() as u32) << 16 | (c.rx_data.len() as u32 * 4),
            reg::TX_FIFO_INF => (c.tx_status.len() as u32) << 16 | c.tx_free,
            reg::MAC_CSR_CMD => 0,
            reg::MAC_CSR_DATA => c.mac_data,
            other => panic!("read of register {other:#x}"),
        }
    }

    fn write(&self, offset: usize, value: u32) {
        if offset == reg::MAC_CSR_CMD {
            assert!(value & bits::CSR_BUSY != 0, "CSR command without busy");
            self.mac_csr(value);
            return;
        }
        let mut c = self.0.borrow_mut();
        match offset {
            reg::TX_DATA_FIFO => c.tx_words.push(value),
            reg::HW_CFG if value & bits::HW_SRST != 0 => {
                c.hw_cfg = 0x0005_0004 | bits::HW_SRST;
                c.reset_polls = 3;
                c.int_en = 0;
                c.mac_cr = mac::CR_PRMS;
            }
            reg::HW_CFG => c.hw_cfg = value,
            reg::INT_STS => c.int_sts &= !value,
            reg::INT_EN => c.int_en = value,
            reg::IRQ_CFG => c.irq_cfg = value,
            reg::TX_CFG => c.tx_cfg = value,
            reg::RX_CFG => c.rx_cfg = value,
            reg::FIFO_INT => c.fifo_int = value,
            reg::MAC_CSR_DATA => c.mac_data = value,
            other => panic!("write of register {other:#x}"),
        }
    }
}

#[test]
fn init_configures_mac_phy_fifos_and_the_interrupt_pin() {
    let f = Fake::qemu();
    let nic = Lan9118::init(&f).expect("init");
    assert_eq!(nic.mac(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    let c = f.0.borrow();
    assert_eq!(c.hw_cfg & bits::HW_SRST, 0, "reset completed");
    assert_eq!(c.mac_cr, mac::CR_TXEN | mac::CR_RXEN | mac::CR_FDPX);
    assert_eq!(c.mac_cr & mac::CR_PRMS, 0, "not promiscuous");
    assert_eq!(c.phy_bcr, bits::BCR_ANEG | bits::BCR_ANEG_RESTART);
    assert_eq!(c.tx_cfg, bits::TX_ON | bits::TX_SAO);
    assert_eq!(c.rx_cfg, 0, "no RX offset or end padding");
    assert_eq!(c.int_en, bits::INT_RSFL);
    // QEMU drives the pin active-low unless POL and TYPE are both set.
    assert_eq!(c.irq_cfg, bits::IRQ_EN | bits::IRQ_POL | bits::IRQ_TYPE);
    drop(c);
    assert!(nic.link_up());
}

#[test]
fn init_refuses_what_is_not_a_lan9118() {
    let f = Fake::qemu();
    f.0.borrow_mut().byte_test = 0x4321_8765;
    assert_eq!(
        Lan9118::init(&f).unwrap_err(),
        InitError::ByteTest(0x4321_8765)
    );
    let f = Fake::qemu();
    f.0.borrow_mut().id = 0x1234_0000;
    assert_eq!(
        Lan9118::init(&f).unwrap_err(),
        InitError::UnknownChip(0x1234_0000)
    );
    let f = Fake::qemu();
    f.0.borrow_mut().pmt = 0;
    assert_eq!(Lan9118::init(&f).unwrap_err(), InitError::ResetTimeout);
}

#[test]
fn frames_of_every_length_modulo_4_come_back_whole_without_fcs() {
    let f = Fake::qemu();
    let mut nic = Lan9118::init(&f).unwrap();
    assert!(nic.receive(&mut [0u8; MAX_FRAME]).is_none());
    for len in [60usize, 61, 62, 63, 64, 1514] {
        let frame: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        f.arrive(&frame);
        let mut buf = [0u8; MAX_FRAME];
        assert_eq!(nic.receive(&mut buf), Some(Ok(len)));
        assert_eq!(&buf[..len], &frame[..]);
        assert!(f.0.borrow().rx_data.is_empty(), "FIFO drained for {len}");
    }
    assert_eq!(f.0.borrow().underflows, 0);
}

#[test]
fn bad_frames_are_dropped_and_the_next_frame_is_intact() {
    let f = Fake::qemu();
    let mut nic = Lan9118::init(&f).unwrap();
    let big: Vec<u8> = (0..1000).map(|i| i as u8).collect();
    let good: Vec<u8> = (0..77).map(|i| (255 - i) as u8).collect();
    f.arrive(&big);
    f.arrive(&good);
    let mut small = [0u8; 600];
    assert_eq!(nic.receive(&mut small), Some(Err(RxError::TooLong(1004))));
    assert_eq!(nic.receive(&mut small), Some(Ok(77)));
    assert_eq!(&small[..77], &good[..]);

    // A status with the error summary bit, then a runt.
    {
        let mut c = f.0.borrow_mut();
        c.rx_status.push_back(68 << 16 | bits::RXS_ES);
        c.rx_data.extend([0u32; 17]);
        c.rx_status.push_back(8 << 16);
        c.rx_data.extend([0u32; 2]);
    }
    f.arrive(&good);
    assert_eq!(nic.receive(&mut small), Some(Err(RxError::Errored)));
    assert_eq!(nic.receive(&mut small), Some(Err(RxError::Runt(8))));
    assert_eq!(nic.receive(&mut small), Some(Ok(77)));
    assert_eq!(f.0.borrow().underflows, 0);
    assert!(nic.receive(&mut small).is_none());
}

#[test]
fn transmit_writes_commands_then_little_endian_words() {
    let f = Fake::qemu();
    let mut nic = Lan9118::init(&f).unwrap();
    let frame: Vec<u8> = (1..=61).collect();
    assert!(nic.tx_ready(frame.len()));
    nic.transmit(&frame);
    let c = f.0.borrow();
    assert_eq!(c.tx_words[0], bits::TXA_FIRST | bits::TXA_LAST | 61);
    assert_eq!(c.tx_words[1] & 0xffff, 61);
    assert_eq!(c.tx_words.len(), 2 + 16);
    assert_eq!(c.tx_words[2], u32::from_le_bytes([1, 2, 3, 4]));
    assert_eq!(c.tx_words[17], 61, "last word: one byte, zero padded");
}

#[test]
fn tx_ready_needs_room_and_drains_status() {
    let f = Fake::qemu();
    let nic = Lan9118::init(&f).unwrap();
    {
        let mut c = f.0.borrow_mut();
        c.tx_status.extend([1 << 16, 2 << 16, 3 << 16]);
        c.tx_free = 4 * words(1514) as u32 + 7;
    }
    assert!(!nic.tx_ready(1514));
    assert!(f.0.borrow().tx_status.is_empty(), "status words drained");
    assert!(nic.tx_ready(1000));
}

#[test]
fn interrupts_are_read_and_cleared() {
    let f = Fake::qemu();
    let nic = Lan9118::init(&f).unwrap();
    f.arrive(&[0u8; 60]);
    assert_eq!(ack_interrupts(&&f) & bits::INT_RSFL, bits::INT_RSFL);
    assert_eq!(f.0.borrow().int_sts, 0);
    assert!(nic.rx_pending(), "clearing the cause keeps the frame");
}

#[test]
fn encodings() {
    assert_eq!(tx_cmd_a(1514), 0x3000 | 1514);
    assert_eq!(tx_cmd_b(0xabcd, 60), 0xabcd_003c);
    assert_eq!(rx_status_len(0x0040_0000 | 0x2000), 64);
    assert_eq!(words(61), 16);
    assert_eq!(words(64), 16);
    assert_eq!(
        mac_from_csr(0x1200_5452, 0x5634),
        [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    );
    assert_eq!(mii_acc(1, false), 1 << 11 | 1 << 6 | 1);
    assert_eq!(mii_acc(0, true), 1 << 11 | 3);
}

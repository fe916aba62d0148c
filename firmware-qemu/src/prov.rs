//! The provisioning block: what a board's factory programming and TRNG
//! would give the firmware, placed in memory before boot.
//!
//! On QEMU the start script writes it (`-device loader,file=prov.bin,addr=`
//! [`ADDR`]) with a fresh seed from `/dev/urandom` on every start, the key
//! from the key file, the address and the wall-clock time. A real board
//! takes the seed from its TRNG, the key from OTP or a secure element, and
//! the time from its RTC (see the README's porting guide).
//!
//! Layout, 128 bytes, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `TPRV` |
//! | 4 | 2 | version, 1 |
//! | 6 | 2 | length, 128 |
//! | 8 | 4 | flags: bit 0 key present, bit 1 address present, bit 2 time present |
//! | 12 | 32 | pre-shared key (zero without flag bit 0) |
//! | 44 | 32 | random seed for the CSPRNG (never all zero) |
//! | 76 | 4 | IPv4 address |
//! | 80 | 1 | prefix length (1..=32) |
//! | 81 | 3 | zero |
//! | 84 | 4 | IPv4 gateway (0.0.0.0: none) |
//! | 88 | 8 | Unix time in milliseconds when the block was written |
//! | 96 | 28 | zero |
//! | 124 | 4 | CRC-32 (ISO-HDLC, as zlib's crc32) of bytes 0..124 |

/// Where the block is loaded (the last 4 KiB of the code SSRAM, outside
/// the image: see memory.x).
pub const ADDR: usize = 0x003f_f000;
/// Bytes in the block.
pub const LEN: usize = 128;
/// Version this firmware reads.
pub const VERSION: u16 = 1;
/// First four bytes.
pub const MAGIC: [u8; 4] = *b"TPRV";

const FLAG_KEY: u32 = 1 << 0;
const FLAG_IP: u32 = 1 << 1;
const FLAG_TIME: u32 = 1 << 2;
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// An IPv4 address with its prefix, and an optional gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4 {
    /// Address.
    pub addr: [u8; 4],
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<[u8; 4]>,
}

impl Ipv4 {
    /// The address used when the block names none.
    pub const DEFAULT: Ipv4 = Ipv4 {
        addr: [192, 168, 69, 2],
        prefix: 24,
        gateway: None,
    };
}

/// What the block carries.
#[derive(Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// The pre-shared key, if the device is keyed.
    pub key: Option<[u8; 32]>,
    /// Seed for the nonce generator.
    pub seed: [u8; 32],
    /// Network address ([`Ipv4::DEFAULT`] when absent).
    pub ip: Ipv4,
    /// Unix milliseconds at provisioning (the RTC's value at power-on).
    pub unix_ms: Option<u64>,
}

impl core::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Provisioning")
            .field("key", &self.key.map(|_| "<redacted>"))
            .field("seed", &"<redacted>")
            .field("ip", &self.ip)
            .field("unix_ms", &self.unix_ms)
            .finish()
    }
}

/// Why a block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvError {
    /// No block there (wrong magic): nothing was loaded.
    Missing,
    /// A version or length this firmware does not read.
    Version(u16, u16),
    /// The checksum does not match (a damaged or partly written block).
    Checksum,
    /// The seed is all zero (never a random seed).
    NoSeed,
    /// Flags or reserved bytes this version does not define, or a bad prefix.
    Malformed,
}

impl core::fmt::Display for ProvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProvError::Missing => write!(f, "no provisioning block (magic missing)"),
            ProvError::Version(v, l) => {
                write!(f, "provisioning block version {v}, length {l}: unsupported")
            }
            ProvError::Checksum => write!(f, "provisioning block checksum mismatch"),
            ProvError::NoSeed => write!(f, "provisioning block has an all-zero seed"),
            ProvError::Malformed => write!(f, "provisioning block malformed"),
        }
    }
}

fn u16_at(b: &[u8; LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8; LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn arr<const N: usize>(b: &[u8; LEN], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

impl Provisioning {
    /// Parse and check a block.
    pub fn parse(b: &[u8; LEN]) -> Result<Provisioning, ProvError> {
        if b[..4] != MAGIC {
            return Err(ProvError::Missing);
        }
        let (version, len) = (u16_at(b, 4), u16_at(b, 6));
        if version != VERSION || len as usize != LEN {
            return Err(ProvError::Version(version, len));
        }
        if CRC.checksum(&b[..124]) != u32_at(b, 124) {
            return Err(ProvError::Checksum);
        }
        let flags = u32_at(b, 8);
        let reserved_zero = b[81..84].iter().chain(&b[96..124]).all(|&x| x == 0);
        if flags & !(FLAG_KEY | FLAG_IP | FLAG_TIME) != 0 || !reserved_zero {
            return Err(ProvError::Malformed);
        }
        let seed: [u8; 32] = arr(b, 44);
        if seed == [0; 32] {
            return Err(ProvError::NoSeed);
        }
        let key = (flags & FLAG_KEY != 0).then(|| arr(b, 12));
        let ip = if flags & FLAG_IP != 0 {
            let prefix = b[80];
            if !(1..=32).contains(&prefix) {
                return Err(ProvError::Malformed);
            }
            let gw: [u8; 4] = arr(b, 84);
            Ipv4 {
                addr: arr(b, 76),
                prefix,
                gateway: (gw != [0; 4]).then_some(gw),
            }
        } else {
            Ipv4::DEFAULT
        };
        let unix_ms = (flags & FLAG_TIME != 0).then(|| u64::from_le_bytes(arr(b, 88)));
        Ok(Provisioning {
            key,
            seed,
            ip,
            unix_ms,
        })
    }

    /// The block's bytes (what the start script writes; used by tests).
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(LEN as u16).to_le_bytes());
        let mut flags = 0;
        if let Some(k) = self.key {
            flags |= FLAG_KEY;
            b[12..44].copy_from_slice(&k);
        }
        b[44..76].copy_from_slice(&self.seed);
        if self.ip != Ipv4::DEFAULT {
            flags |= FLAG_IP;
            b[76..80].copy_from_slice(&self.ip.addr);
            b[80] = self.ip.prefix;
            b[84..88].copy_from_slice(&self.ip.gateway.unwrap_or([0; 4]));
        }
        if let Some(t) = self.unix_ms {
            flags |= FLAG_TIME;
            b[88..96].copy_from_slice(&t.to_le_bytes());
        }
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        let c = CRC.checksum(&b[..124]);
        b[124..].copy_from_slice(&c.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provisioning {
        Provisioning {
            key: Some([0x11; 32]),
            seed: core::array::from_fn(|i| i as u8 + 1),
            ip: Ipv4 {
                addr: [10, 0, 0, 7],
                prefix: 8,
                gateway: Some([10, 0, 0, 1]),
            },
            unix_ms: Some(1_795_305_600_123),
        }
    }

    #[test]
    fn round_trip() {
        let p = sample();
        assert_eq!(Provisioning::parse(&p.to_bytes()), Ok(p.clone()));
        let minimal = Provisioning {
            key: None,
            ip: Ipv4::DEFAULT,
            unix_ms: None,
            ..p
        };
        let b = minimal.to_bytes();
        assert_eq!(u32_at(&b, 8), 0, "no flags");
        assert_eq!(Provisioning::parse(&b), Ok(minimal));
    }

    /// The bytes the start script (scripts/qemu-prov.py) writes for the
    /// same values: the two writers agree.
    #[test]
    fn matches_the_script_vector() {
        let b = sample().to_bytes();
        assert_eq!(&b[..12], b"TPRV\x01\x00\x80\x00\x07\x00\x00\x00");
        assert_eq!(
            &b[124..],
            &0xbccd_1684u32.to_le_bytes(),
            "{:x}",
            u32_at(&b, 124)
        );
    }

    #[test]
    fn every_damage_is_refused() {
        let good = sample().to_bytes();
        assert_eq!(Provisioning::parse(&[0; LEN]), Err(ProvError::Missing));
        for i in 0..LEN {
            let mut b = good;
            b[i] ^= 0x40;
            assert!(
                Provisioning::parse(&b).is_err(),
                "byte {i} flipped was accepted"
            );
        }
        let mut b = good;
        b[4] = 2;
        assert_eq!(Provisioning::parse(&b), Err(ProvError::Version(2, 128)));
        let zero_seed = Provisioning {
            seed: [0; 32],
            ..sample()
        };
        assert_eq!(
            Provisioning::parse(&zero_seed.to_bytes()),
            Err(ProvError::NoSeed)
        );
        let bad_prefix = Provisioning {
            ip: Ipv4 {
                prefix: 33,
                ..sample().ip
            },
            ..sample()
        };
        assert_eq!(
            Provisioning::parse(&bad_prefix.to_bytes()),
            Err(ProvError::Malformed)
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let s = std::format!("{:?}", sample());
        assert!(
            !s.contains("17, 17") && !s.contains("[1, 2") && s.contains("redacted"),
            "{s}"
        );
    }
}

//! The fixed-size frame prefix: a zero-copy view ([`Prefix`]) and a typed
//! representation ([`PrefixRepr`]).
//!
//! Every frame on the wire is `prefix (18 bytes) | header (header_len bytes) |
//! body (body_len bytes) | tag (16 bytes, only when [`Flags::SEALED`] is set)`.
//!
//! ```text
//! offset size field
//!  0      2   magic       0x54 0x48 ("TH")
//!  2      1   version     1
//!  3      1   flags       bit 0: SEALED; bit 1: ENCRYPTED; bits 2..=7 reserved, must be 0
//!  4      2   header_len  u16 little-endian, 1..=max_header
//!  6      8   body_len    u64 little-endian, 0..=max_body
//! 14      4   checksum    CRC-32C (Castagnoli) over bytes 0..14 and the header, little-endian
//! ```
//!
//! Invariants: once [`Prefix::new_checked`] succeeds, no accessor panics. The
//! checksum covers the prefix and the header, so a frame whose length fields
//! were corrupted is rejected before its body is trusted.
//!
//! ```
//! use tether_proto::wire::{Flags, PrefixRepr, Prefix, PREFIX_LEN};
//! let repr = PrefixRepr { version: 1, flags: Flags::empty(), header_len: 3, body_len: 5 };
//! let header = [0x07, 0x06, 0x00];
//! let mut bytes = [0u8; PREFIX_LEN];
//! repr.emit(&mut Prefix::new_unchecked(&mut bytes[..]), &header);
//! assert_eq!(bytes[..14], [0x54, 0x48, 1, 0, 3, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
//! let view = Prefix::new_checked(&bytes[..]).unwrap();
//! assert!(view.verify_checksum(&header));
//! assert_eq!(PrefixRepr::parse(&view).unwrap(), repr);
//! ```

use core::fmt;

/// The two magic bytes that open every frame: ASCII `"TH"`.
pub const MAGIC: [u8; 2] = *b"TH";
/// The wire format version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the fixed prefix in bytes.
pub const PREFIX_LEN: usize = 18;
/// Size of the authentication tag that follows the body of a sealed frame.
pub const TAG_LEN: usize = 16;
/// Largest header length the prefix can describe.
pub const MAX_HEADER_LEN: usize = u16::MAX as usize;

/// CRC-32C (Castagnoli, reflected, init and xorout 0xFFFF_FFFF): the frame checksum.
pub const CHECKSUM: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const FLAGS: usize = 3;
    pub const HEADER_LEN: Range<usize> = 4..6;
    pub const BODY_LEN: Range<usize> = 6..14;
    pub const CHECKSUM: Range<usize> = 14..18;
    /// The bytes the checksum covers (together with the header).
    pub const COVERED: Range<usize> = 0..14;
}

/// Frame flags (byte 3 of the prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Flags(u8);

impl Flags {
    /// A [`TAG_LEN`]-byte authentication tag follows the body.
    pub const SEALED: Flags = Flags(0x01);
    /// Header and body are ChaCha20-Poly1305 ciphertext and the tag is the
    /// AEAD's (only with SEALED, and only where ENCRYPT was negotiated).
    pub const ENCRYPTED: Flags = Flags(0x02);
    /// Every flag this version defines.
    pub const KNOWN: Flags = Flags(0x03);

    /// No flags set.
    pub const fn empty() -> Self {
        Flags(0)
    }
    /// Flags from their wire byte, keeping unknown bits.
    pub const fn from_bits_retain(bits: u8) -> Self {
        Flags(bits)
    }
    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// The bits not defined by this version.
    pub const fn unknown_bits(self) -> u8 {
        self.0 & !Self::KNOWN.0
    }
    /// Union.
    #[must_use]
    pub const fn union(self, other: Flags) -> Self {
        Flags(self.0 | other.0)
    }
}

/// Why a prefix is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PrefixError {
    /// Fewer than [`PREFIX_LEN`] bytes.
    Truncated,
    /// The first two bytes are not [`MAGIC`].
    BadMagic,
    /// A version other than [`VERSION`].
    UnsupportedVersion(u8),
    /// Reserved flag bits are set (the unknown bits are given).
    UnknownFlags(u8),
    /// A header length of zero: every frame carries a message.
    EmptyHeader,
}

impl fmt::Display for PrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrefixError::Truncated => write!(f, "frame prefix truncated (need {PREFIX_LEN} bytes)"),
            PrefixError::BadMagic => write!(f, "bad magic: this is not a tether frame"),
            PrefixError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported wire version {v} (this peer speaks {VERSION})"
                )
            }
            PrefixError::UnknownFlags(b) => write!(f, "unknown frame flags 0x{b:02x}"),
            PrefixError::EmptyHeader => write!(f, "frame header length is zero"),
        }
    }
}

impl core::error::Error for PrefixError {}

/// A zero-copy view of a frame prefix.
#[derive(Debug, Clone)]
pub struct Prefix<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Prefix<T> {
    /// Wrap a buffer without checking its length; accessors may panic if it is short.
    pub const fn new_unchecked(buffer: T) -> Self {
        Prefix { buffer }
    }

    /// Wrap a buffer, checking that it holds a whole prefix.
    pub fn new_checked(buffer: T) -> Result<Self, PrefixError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure the buffer holds at least [`PREFIX_LEN`] bytes.
    pub fn check_len(&self) -> Result<(), PrefixError> {
        if self.buffer.as_ref().len() < PREFIX_LEN {
            Err(PrefixError::Truncated)
        } else {
            Ok(())
        }
    }

    /// The inner buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The magic bytes.
    pub fn magic(&self) -> [u8; 2] {
        let b = self.buffer.as_ref();
        [b[field::MAGIC.start], b[field::MAGIC.start + 1]]
    }
    /// The version byte.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// The flags byte.
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }
    /// The header length.
    pub fn header_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::HEADER_LEN];
        u16::from_le_bytes([b[0], b[1]])
    }
    /// The body length.
    pub fn body_len(&self) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.buffer.as_ref()[field::BODY_LEN]);
        u64::from_le_bytes(v)
    }
    /// The checksum field.
    pub fn checksum(&self) -> u32 {
        let mut v = [0u8; 4];
        v.copy_from_slice(&self.buffer.as_ref()[field::CHECKSUM]);
        u32::from_le_bytes(v)
    }
    /// The checksum this prefix should carry for `header`.
    pub fn compute_checksum(&self, header: &[u8]) -> u32 {
        let mut d = CHECKSUM.digest();
        d.update(&self.buffer.as_ref()[field::COVERED]);
        d.update(header);
        d.finalize()
    }
    /// Whether the checksum field matches the prefix and `header`.
    pub fn verify_checksum(&self, header: &[u8]) -> bool {
        self.compute_checksum(header) == self.checksum()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Prefix<T> {
    fn set_checksum(&mut self, value: u32) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_le_bytes());
    }
}

/// The typed content of a prefix (everything but magic and checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PrefixRepr {
    /// Wire version.
    pub version: u8,
    /// Frame flags.
    pub flags: Flags,
    /// Length of the postcard header that follows the prefix.
    pub header_len: u16,
    /// Length of the body that follows the header.
    pub body_len: u64,
}

impl PrefixRepr {
    /// Parse and validate a prefix (the checksum is checked separately, once the header is in).
    pub fn parse<T: AsRef<[u8]>>(p: &Prefix<T>) -> Result<Self, PrefixError> {
        p.check_len()?;
        if p.magic() != MAGIC {
            return Err(PrefixError::BadMagic);
        }
        if p.version() != VERSION {
            return Err(PrefixError::UnsupportedVersion(p.version()));
        }
        let flags = p.flags();
        if flags.unknown_bits() != 0 {
            return Err(PrefixError::UnknownFlags(flags.unknown_bits()));
        }
        if flags.contains(Flags::ENCRYPTED) && !flags.contains(Flags::SEALED) {
            // Ciphertext without its tag cannot be a frame of any session.
            return Err(PrefixError::UnknownFlags(Flags::ENCRYPTED.bits()));
        }
        if p.header_len() == 0 {
            return Err(PrefixError::EmptyHeader);
        }
        Ok(PrefixRepr {
            version: p.version(),
            flags,
            header_len: p.header_len(),
            body_len: p.body_len(),
        })
    }

    /// Bytes needed to emit the prefix.
    pub const fn buffer_len(&self) -> usize {
        PREFIX_LEN
    }

    /// Bytes of the whole frame: prefix, header, body and tag.
    pub fn frame_len(&self) -> u64 {
        let tag = if self.flags.contains(Flags::SEALED) {
            TAG_LEN as u64
        } else {
            0
        };
        (PREFIX_LEN as u64 + self.header_len as u64)
            .saturating_add(self.body_len)
            .saturating_add(tag)
    }

    /// The 14 prefix bytes before the checksum (authenticated data of an
    /// encrypted frame).
    pub fn covered_bytes(&self) -> [u8; 14] {
        let mut b = [0u8; PREFIX_LEN];
        self.emit(&mut Prefix::new_unchecked(&mut b[..]), &[]);
        let mut out = [0u8; 14];
        out.copy_from_slice(&b[field::COVERED]);
        out
    }

    /// Write the prefix, with the checksum over it and `header`.
    ///
    /// # Panics
    /// If the buffer is shorter than [`PREFIX_LEN`]; use [`Prefix::new_checked`] first.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Prefix<T>, header: &[u8]) {
        let b = p.buffer.as_mut();
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = self.version;
        b[field::FLAGS] = self.flags.bits();
        b[field::HEADER_LEN].copy_from_slice(&self.header_len.to_le_bytes());
        b[field::BODY_LEN].copy_from_slice(&self.body_len.to_le_bytes());
        let crc = p.compute_checksum(header);
        p.set_checksum(crc);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn short_buffer_is_truncated() {
        for n in 0..PREFIX_LEN {
            assert_eq!(
                Prefix::new_checked(&[0u8; PREFIX_LEN][..n]).unwrap_err(),
                PrefixError::Truncated
            );
        }
    }

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C catalogue check value.
        assert_eq!(CHECKSUM.checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn parse_rejects_each_bad_field() {
        let repr = PrefixRepr {
            version: 1,
            flags: Flags::empty(),
            header_len: 2,
            body_len: 0,
        };
        let mut good = [0u8; PREFIX_LEN];
        repr.emit(&mut Prefix::new_unchecked(&mut good[..]), &[0, 4]);
        let mut b = good;
        b[0] = b'X';
        assert_eq!(
            PrefixRepr::parse(&Prefix::new_unchecked(&b[..])),
            Err(PrefixError::BadMagic)
        );
        let mut b = good;
        b[2] = 2;
        assert_eq!(
            PrefixRepr::parse(&Prefix::new_unchecked(&b[..])),
            Err(PrefixError::UnsupportedVersion(2))
        );
        let mut b = good;
        b[3] = 0x87;
        assert_eq!(
            PrefixRepr::parse(&Prefix::new_unchecked(&b[..])),
            Err(PrefixError::UnknownFlags(0x84))
        );
        b[3] = 0x02;
        assert_eq!(
            PrefixRepr::parse(&Prefix::new_unchecked(&b[..])),
            Err(PrefixError::UnknownFlags(0x02)),
            "ENCRYPTED needs SEALED"
        );
        let mut b = good;
        b[4] = 0;
        assert_eq!(
            PrefixRepr::parse(&Prefix::new_unchecked(&b[..])),
            Err(PrefixError::EmptyHeader)
        );
        assert!(Prefix::new_unchecked(&good[..]).verify_checksum(&[0, 4]));
        assert!(!Prefix::new_unchecked(&good[..]).verify_checksum(&[0, 5]));
    }
}

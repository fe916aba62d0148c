//! Composing outgoing frames: the staging queue, and writing one whole
//! frame (prefix, header, body, tag) into a buffer, sealed or encrypted as
//! the session requires.
//!
//! A frame is composed where it is sent from: straight into the driver's
//! output buffer when it fits, else into the staging queue (the caller's
//! `tx` buffer), which drains into later output buffers. The staging
//! queue is only used while it is empty or for replies made while input
//! is handled, so frames leave in the order they were sealed.

use crate::handshake::{ServerHandshake, SessionKeys};
use crate::message::Header;
use crate::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN, TAG_LEN, VERSION};

/// Authentication and sealing state of a connection.
#[derive(Debug, Clone)]
pub(crate) enum Security {
    /// Before Hello, and until Auth verified on a keyed server.
    Handshake(ServerHandshake),
    /// No key: nothing is authenticated or sealed.
    Plain,
    /// Authenticated: every frame both ways is sealed (and maybe encrypted).
    Sealed(SessionKeys),
}

impl Security {
    /// Bytes a tag adds to every outgoing frame.
    pub(crate) fn tag_len(&self) -> usize {
        match self {
            Security::Sealed(_) => TAG_LEN,
            _ => 0,
        }
    }

    /// Whether frames are encrypted.
    pub(crate) fn encrypted(&self) -> bool {
        matches!(self, Security::Sealed(k) if k.encrypted())
    }
}

/// The staging queue: `buf[start..end]` waits to be sent.
#[derive(Debug)]
pub(crate) struct Staging<B> {
    buf: B,
    start: usize,
    end: usize,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Staging<B> {
    pub(crate) fn new(buf: B) -> Self {
        Staging {
            buf,
            start: 0,
            end: 0,
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Copy queued bytes into `out`; returns how many.
    pub(crate) fn drain(&mut self, out: &mut [u8]) -> usize {
        let k = self.queued().min(out.len());
        out[..k].copy_from_slice(&self.buf.as_ref()[self.start..self.start + k]);
        self.start += k;
        if self.start == self.end {
            self.clear();
        }
        k
    }

    /// The free space after the queued bytes (moved to the front first).
    pub(crate) fn free(&mut self) -> &mut [u8] {
        if self.start > 0 {
            let (s, e) = (self.start, self.end);
            self.buf.as_mut().copy_within(s..e, 0);
            self.end = e - s;
            self.start = 0;
        }
        let end = self.end;
        &mut self.buf.as_mut()[end..]
    }

    /// Whether `need` bytes can be queued.
    pub(crate) fn has_room(&mut self, need: usize) -> bool {
        self.free().len() >= need
    }

    /// `n` bytes were written at the start of [`free`](Self::free).
    pub(crate) fn commit(&mut self, n: usize) {
        self.end += n;
    }
}

/// Bytes a frame with header `h` and no body takes on this session.
pub(crate) fn control_len(sec: &Security, h: &Header<'_>) -> usize {
    PREFIX_LEN + h.buffer_len() + sec.tag_len()
}

/// Write a whole body-less frame into `dst`; returns its length, or `None`
/// (nothing written, no sequence number used) if it does not fit.
pub(crate) fn compose(sec: &mut Security, dst: &mut [u8], h: &Header<'_>) -> Option<usize> {
    compose_with(sec, dst, h, |_| {})
}

/// [`compose`], letting `edit` change the encoded header bytes before the
/// prefix and the tag are computed (an EchoReply upper-cases its text).
pub(crate) fn compose_with(
    sec: &mut Security,
    dst: &mut [u8],
    h: &Header<'_>,
    edit: impl FnOnce(&mut [u8]),
) -> Option<usize> {
    if dst.len() < control_len(sec, h) {
        return None;
    }
    let hlen = h.buffer_len();
    h.emit(&mut dst[PREFIX_LEN..PREFIX_LEN + hlen]).ok()?;
    edit(&mut dst[PREFIX_LEN..PREFIX_LEN + hlen]);
    Some(seal(sec, dst, hlen, 0))
}

/// The body region of a frame whose header is `hlen` bytes, in a `dst` of
/// its length, capped at `max_chunk`: where the body is written before
/// [`finish`] is called.
pub(crate) fn body_region(
    sec: &Security,
    dst_len: usize,
    hlen: usize,
    max_chunk: usize,
) -> core::ops::Range<usize> {
    let start = PREFIX_LEN + hlen;
    let end = dst_len.saturating_sub(sec.tag_len()).max(start);
    start..end.min(start + max_chunk)
}

/// The body (`body_len` bytes at [`body_region`]) is in place: write header
/// `h` (exactly `hlen` bytes), the prefix and the tag; returns the frame's
/// length.
pub(crate) fn finish(sec: &mut Security, dst: &mut [u8], h: &Header<'_>, body_len: usize) -> usize {
    let hlen = h.buffer_len();
    // The caller sized the region for this header.
    let _ = h.emit(&mut dst[PREFIX_LEN..PREFIX_LEN + hlen]);
    seal(sec, dst, hlen, body_len)
}

/// Header and body are in place after the prefix: write the prefix and,
/// on a sealed session, seal or encrypt and append the tag.
fn seal(sec: &mut Security, dst: &mut [u8], hlen: usize, body_len: usize) -> usize {
    let flags = match sec {
        Security::Sealed(k) if k.encrypted() => Flags::SEALED.union(Flags::ENCRYPTED),
        Security::Sealed(_) => Flags::SEALED,
        _ => Flags::empty(),
    };
    let repr = PrefixRepr {
        version: VERSION,
        flags,
        header_len: hlen as u16,
        body_len: body_len as u64,
    };
    let end = PREFIX_LEN + hlen + body_len;
    let (prefix, rest) = dst.split_at_mut(PREFIX_LEN);
    match sec {
        Security::Sealed(SessionKeys {
            encrypt: Some(cipher),
            ..
        }) => {
            // The checksum covers the ciphertext header.
            let tag = cipher.seal_in_place(&repr, &mut rest[..hlen + body_len]);
            repr.emit(&mut Prefix::new_unchecked(&mut *prefix), &rest[..hlen]);
            dst[end..end + TAG_LEN].copy_from_slice(&tag);
            end + TAG_LEN
        }
        Security::Sealed(keys) => {
            repr.emit(&mut Prefix::new_unchecked(&mut *prefix), &rest[..hlen]);
            let mut t = keys.seal.begin(prefix);
            t.update(&rest[..hlen + body_len]);
            dst[end..end + TAG_LEN].copy_from_slice(&t.finish());
            end + TAG_LEN
        }
        _ => {
            repr.emit(&mut Prefix::new_unchecked(prefix), &rest[..hlen]);
            end
        }
    }
}

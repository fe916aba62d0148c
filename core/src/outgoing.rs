//! Writing whole outgoing frames (prefix, header, body, tag), sealed or
//! encrypted as the session requires, and the staging queue that holds
//! frames until the connection can take them. Every peer writes frames
//! through here: the server and client engines, and test peers.
//!
//! A frame is composed where it is sent from: straight into the driver's
//! output buffer when it fits, else into a [`Staging`] queue (a caller
//! buffer) that drains into later output buffers. Sealing happens as a
//! frame is composed, so frames must leave in the order they were composed.

use crate::handshake::{FrameCipher, Sealer, SessionKeys};
use crate::message::Header;
use crate::wire::{Flags, Prefix, PrefixRepr, PREFIX_LEN, TAG_LEN, VERSION};

/// The staging queue: `buf[start..end]` waits to be sent.
#[derive(Debug)]
pub struct Staging<B> {
    buf: B,
    start: usize,
    end: usize,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Staging<B> {
    /// An empty queue over `buf`.
    pub fn new(buf: B) -> Self {
        Staging {
            buf,
            start: 0,
            end: 0,
        }
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.buf.as_ref().len()
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.end - self.start
    }

    /// Drop everything queued.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Copy queued bytes into `out`; returns how many.
    pub fn drain(&mut self, out: &mut [u8]) -> usize {
        let k = self.queued().min(out.len());
        out[..k].copy_from_slice(&self.buf.as_ref()[self.start..self.start + k]);
        self.start += k;
        if self.start == self.end {
            self.clear();
        }
        k
    }

    /// The free space after the queued bytes (moved to the front first).
    pub fn free(&mut self) -> &mut [u8] {
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
    pub fn has_room(&mut self, need: usize) -> bool {
        self.free().len() >= need
    }

    /// `n` bytes were written at the start of [`free`](Self::free).
    pub fn commit(&mut self, n: usize) {
        self.end += n;
    }
}

/// Bytes a tag adds to every frame of a session with `keys`.
pub fn tag_len(keys: Option<&SessionKeys>) -> usize {
    if keys.is_some() {
        TAG_LEN
    } else {
        0
    }
}

/// Bytes a frame with header `h` and no body takes.
pub fn control_len(keys: Option<&SessionKeys>, h: &Header<'_>) -> usize {
    PREFIX_LEN + h.buffer_len() + tag_len(keys)
}

/// Write a whole body-less frame into `dst`; returns its length, or `None`
/// (nothing written, no sequence number used) if it does not fit.
pub fn compose(keys: Option<&mut SessionKeys>, dst: &mut [u8], h: &Header<'_>) -> Option<usize> {
    compose_with(keys, dst, h, |_| {})
}

/// [`compose`], letting `edit` change the encoded header bytes before the
/// prefix and the tag are computed (an EchoReply upper-cases its text).
pub fn compose_with(
    keys: Option<&mut SessionKeys>,
    dst: &mut [u8],
    h: &Header<'_>,
    edit: impl FnOnce(&mut [u8]),
) -> Option<usize> {
    if dst.len() < control_len(keys.as_deref(), h) {
        return None;
    }
    let hlen = h.buffer_len();
    h.emit(&mut dst[PREFIX_LEN..PREFIX_LEN + hlen]).ok()?;
    edit(&mut dst[PREFIX_LEN..PREFIX_LEN + hlen]);
    Some(seal(keys, dst, hlen, 0))
}

/// The body region of a frame whose header is `hlen` bytes, in a `dst` of
/// `dst_len`, capped at `max_body`: where the body is written before
/// [`finish`] is called.
pub fn body_region(
    keys: Option<&SessionKeys>,
    dst_len: usize,
    hlen: usize,
    max_body: usize,
) -> core::ops::Range<usize> {
    let start = PREFIX_LEN + hlen;
    let end = dst_len.saturating_sub(tag_len(keys)).max(start);
    start..end.min(start + max_body)
}

/// The body (`body_len` bytes at [`body_region`]) is in place: write header
/// `h`, the prefix and the tag; returns the frame's length. The caller
/// sized the region for this header.
pub fn finish(
    keys: Option<&mut SessionKeys>,
    dst: &mut [u8],
    h: &Header<'_>,
    body_len: usize,
) -> usize {
    let hlen = h.buffer_len();
    let _ = h.emit(&mut dst[PREFIX_LEN..PREFIX_LEN + hlen]);
    seal(keys, dst, hlen, body_len)
}

/// How one outgoing frame is protected.
#[derive(Debug)]
pub enum Protection<'k> {
    /// Before authentication, or on an unkeyed session: no tag.
    Plain,
    /// Flag SEALED: an HMAC tag over prefix, header and body.
    Seal(&'k mut Sealer),
    /// Flags SEALED | ENCRYPTED: header and body encrypted, an AEAD tag.
    Encrypt(&'k mut FrameCipher),
}

impl<'k> Protection<'k> {
    /// What a session with `keys` uses for every frame it sends.
    pub fn of(keys: Option<&'k mut SessionKeys>) -> Self {
        match keys {
            None => Protection::Plain,
            Some(SessionKeys {
                encrypt: Some(cipher),
                ..
            }) => Protection::Encrypt(cipher),
            Some(k) => Protection::Seal(&mut k.seal),
        }
    }
}

/// Header and body are in place after the prefix: write the prefix and,
/// on a sealed session, seal or encrypt and append the tag.
fn seal(keys: Option<&mut SessionKeys>, dst: &mut [u8], hlen: usize, body_len: usize) -> usize {
    protect(Protection::of(keys), dst, hlen, body_len)
}

/// `hlen` header bytes and `body_len` body bytes are in place after the
/// prefix in `dst` (with room for a tag after them when `p` has one):
/// write the prefix and protect the frame with `p` (taking its next
/// sequence number); returns the frame's length. The header bytes are not
/// parsed, so a test peer can protect a malformed header as a sender would.
pub fn protect(p: Protection<'_>, dst: &mut [u8], hlen: usize, body_len: usize) -> usize {
    let flags = match &p {
        Protection::Encrypt(_) => Flags::SEALED.union(Flags::ENCRYPTED),
        Protection::Seal(_) => Flags::SEALED,
        Protection::Plain => Flags::empty(),
    };
    let repr = PrefixRepr {
        version: VERSION,
        flags,
        header_len: hlen as u16,
        body_len: body_len as u64,
    };
    let end = PREFIX_LEN + hlen + body_len;
    let (prefix, rest) = dst.split_at_mut(PREFIX_LEN);
    match p {
        Protection::Encrypt(cipher) => {
            // The checksum covers the ciphertext header.
            let tag = cipher.seal_in_place(&repr, &mut rest[..hlen + body_len]);
            repr.emit(&mut Prefix::new_unchecked(&mut *prefix), &rest[..hlen]);
            dst[end..end + TAG_LEN].copy_from_slice(&tag);
            end + TAG_LEN
        }
        Protection::Seal(sealer) => {
            repr.emit(&mut Prefix::new_unchecked(&mut *prefix), &rest[..hlen]);
            let mut t = sealer.begin(prefix);
            t.update(&rest[..hlen + body_len]);
            dst[end..end + TAG_LEN].copy_from_slice(&t.finish());
            end + TAG_LEN
        }
        Protection::Plain => {
            repr.emit(&mut Prefix::new_unchecked(prefix), &rest[..hlen]);
            end
        }
    }
}

/// A whole frame around raw `header` bytes (not checked) and `body`,
/// protected with `p`: for test peers that write what a sender might.
#[cfg(feature = "alloc")]
pub fn raw_frame(p: Protection<'_>, header: &[u8], body: &[u8]) -> alloc::vec::Vec<u8> {
    let hlen = header.len();
    let mut v = alloc::vec![0u8; PREFIX_LEN + hlen + body.len() + TAG_LEN];
    v[PREFIX_LEN..PREFIX_LEN + hlen].copy_from_slice(header);
    v[PREFIX_LEN + hlen..PREFIX_LEN + hlen + body.len()].copy_from_slice(body);
    let n = protect(p, &mut v, hlen, body.len());
    v.truncate(n);
    v
}

/// A whole frame with `body`, protected with `keys` (for peers that have
/// memory to spare: tests, tools).
#[cfg(feature = "alloc")]
pub fn frame(keys: Option<&mut SessionKeys>, h: &Header<'_>, body: &[u8]) -> alloc::vec::Vec<u8> {
    let hlen = h.buffer_len();
    let mut v = alloc::vec![0u8; PREFIX_LEN + hlen + body.len() + TAG_LEN];
    v[PREFIX_LEN + hlen..PREFIX_LEN + hlen + body.len()].copy_from_slice(body);
    let n = finish(keys, &mut v, h, body.len());
    v.truncate(n);
    v
}

//! Sans-IO frame codec.
//!
//! # Decoding
//! A [`Decoder`] is fed whatever bytes arrived, in slices of any size, with
//! [`Decoder::handle_bytes`]; it returns how many bytes it consumed and at
//! most one [`Event`]. Call it again with the rest of the input until it
//! consumes nothing and returns no event: then it needs more input. For every
//! frame the events are, in order:
//!
//! 1. [`Event::Header`]: the prefix is valid, the header arrived whole and
//!    the checksum holds. The header bytes live in the caller's header buffer.
//! 2. [`Event::Body`] zero or more times: slices *of the caller's input*,
//!    together exactly `body_len` bytes. Bodies are never buffered.
//! 3. [`Event::End`]: the frame is complete (with its tag if sealed).
//!
//! Fed one byte at a time or everything at once, the decoder yields the same
//! headers, the same body bytes and the same ends; only the split of body
//! bytes into `Body` events differs.
//!
//! Limits are checked as soon as the prefix is in: a header longer than
//! [`Limits::max_header`] or a body longer than [`Limits::max_body`] is an
//! error before a byte of either is read. After any error the decoder hunts
//! for the next [`MAGIC`](crate::wire::MAGIC) (useful on serial lines); on a
//! stream transport the caller should answer with an Error frame and close.
//!
//! # Encoding
//! [`encode_head`] writes prefix and header into a caller buffer; the caller
//! then writes the body bytes (and the tag, for sealed frames) itself.

use core::fmt;

use crate::message::{EncodeError, Header};
use crate::wire::{
    Flags, Prefix, PrefixError, PrefixRepr, MAGIC, MAX_HEADER_LEN, PREFIX_LEN, TAG_LEN, VERSION,
};

/// Size limits a decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Limits {
    /// Largest header accepted (at most the header buffer's length).
    pub max_header: u16,
    /// Largest body accepted in one frame.
    pub max_body: u64,
}

impl Limits {
    /// Limits every peer accepts before Hello has negotiated others: 512-byte
    /// headers and 512-byte bodies.
    pub const HANDSHAKE: Limits = Limits {
        max_header: 512,
        max_body: 512,
    };
}

/// Why the byte stream is not a valid frame sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame does not start with the magic bytes.
    BadMagic,
    /// The frame's version is not 1 (the version given).
    UnsupportedVersion(u8),
    /// The frame sets flags this version does not define (the bits given).
    UnknownFlags(u8),
    /// The header length is zero.
    EmptyHeader,
    /// The header is longer than the limit.
    HeaderTooLarge {
        /// Header length in the prefix.
        len: u16,
        /// The limit.
        max: u16,
    },
    /// The body is longer than the limit.
    BodyTooLarge {
        /// Body length in the prefix.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The checksum over prefix and header does not match.
    Checksum {
        /// The checksum in the prefix.
        got: u32,
        /// The checksum computed.
        computed: u32,
    },
}

impl DecodeError {
    /// The error code to tell the peer.
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode as C;
        match self {
            DecodeError::BadMagic | DecodeError::EmptyHeader | DecodeError::Checksum { .. } => {
                C::BAD_FRAME
            }
            DecodeError::UnsupportedVersion(_) => C::UNSUPPORTED_VERSION,
            DecodeError::UnknownFlags(_) => C::UNKNOWN_FLAGS,
            DecodeError::HeaderTooLarge { .. } => C::HEADER_TOO_LARGE,
            DecodeError::BodyTooLarge { .. } => C::BODY_TOO_LARGE,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadMagic => write!(f, "bad magic: the peer does not speak tether"),
            DecodeError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported protocol version {v} (this peer speaks {VERSION})"
                )
            }
            DecodeError::UnknownFlags(b) => write!(f, "unknown frame flags 0x{b:02x}"),
            DecodeError::EmptyHeader => write!(f, "frame with an empty header"),
            DecodeError::HeaderTooLarge { len, max } => {
                write!(f, "header of {len} bytes exceeds the limit of {max}")
            }
            DecodeError::BodyTooLarge { len, max } => {
                write!(f, "body of {len} bytes exceeds the limit of {max}")
            }
            DecodeError::Checksum { got, computed } => write!(
                f,
                "frame checksum mismatch (frame says {got:08x}, computed {computed:08x})"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

impl From<PrefixError> for DecodeError {
    fn from(e: PrefixError) -> Self {
        match e {
            PrefixError::UnsupportedVersion(v) => DecodeError::UnsupportedVersion(v),
            PrefixError::UnknownFlags(b) => DecodeError::UnknownFlags(b),
            PrefixError::EmptyHeader => DecodeError::EmptyHeader,
            // Truncated cannot happen: the decoder parses only whole prefixes.
            PrefixError::BadMagic | PrefixError::Truncated => DecodeError::BadMagic,
        }
    }
}

/// A frame whose prefix and header have arrived and checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'d> {
    /// The prefix fields.
    pub prefix: PrefixRepr,
    /// The raw header bytes: parse with [`Header::parse`].
    pub header: &'d [u8],
}

impl<'d> Frame<'d> {
    /// Parse the header.
    pub fn parse(&self) -> Result<Header<'d>, crate::HeaderError> {
        Header::parse(self.header)
    }
}

/// What the decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'d, 'i> {
    /// A new frame's prefix and header.
    Header(Frame<'d>),
    /// Body bytes of the current frame, borrowed from the input.
    Body(&'i [u8]),
    /// The current frame is complete; `tag` is its authentication tag if sealed.
    End {
        /// The tag of a sealed frame.
        tag: Option<[u8; TAG_LEN]>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the first magic byte after an error.
    Hunt,
    /// Collecting prefix bytes (count held).
    Prefix(usize),
    /// Collecting header bytes (count held).
    Header(usize),
    /// The header event is due.
    HeaderReady,
    /// Body bytes remaining.
    Body(u64),
    /// Collecting tag bytes (count held).
    Tag(usize),
    /// The end event is due.
    EndReady,
}

/// The sans-IO frame decoder. `B` is the caller's header buffer.
#[derive(Debug)]
pub struct Decoder<B> {
    header_buf: B,
    limits: Limits,
    state: State,
    prefix: [u8; PREFIX_LEN],
    repr: Option<PrefixRepr>,
    tag: [u8; TAG_LEN],
    hunting: bool,
    encryption: bool,
    /// The End event of the frame in `repr` was returned and no input was fed since.
    ended: bool,
}

/// What one [`Decoder::handle_bytes`] call yields besides the consumed count.
pub type DecodeResult<'s, 'i> = Result<Option<Event<'s, 'i>>, DecodeError>;

impl<B: AsRef<[u8]> + AsMut<[u8]>> Decoder<B> {
    /// A decoder using `header_buf` for headers; `limits.max_header` is capped
    /// at the buffer's length.
    pub fn new(header_buf: B, limits: Limits) -> Self {
        let mut d = Decoder {
            header_buf,
            limits,
            state: State::Prefix(0),
            prefix: [0; PREFIX_LEN],
            repr: None,
            tag: [0; TAG_LEN],
            hunting: false,
            encryption: false,
            ended: false,
        };
        d.set_limits(limits);
        d
    }

    /// Change the limits (after Hello); applies from the next frame on.
    pub fn set_limits(&mut self, limits: Limits) {
        let cap = self.header_buf.as_ref().len().min(MAX_HEADER_LEN) as u16;
        self.limits = Limits {
            max_header: limits.max_header.min(cap),
            max_body: limits.max_body,
        };
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Accept frames flagged ENCRYPTED (only once ENCRYPT was negotiated and
    /// the session authenticated); until then they are `UnknownFlags(0x02)`.
    /// Their headers are ciphertext: decrypt before parsing.
    pub fn set_encryption(&mut self, on: bool) {
        self.encryption = on;
    }

    /// Whether the decoder is between frames (no partial frame held).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Prefix(0))
    }

    /// Body bytes still expected for the current frame (0 outside a body).
    pub fn body_remaining(&self) -> u64 {
        match self.state {
            State::Body(n) => n,
            _ => 0,
        }
    }

    /// The current frame, from its Header event until its End event.
    pub fn frame(&self) -> Option<Frame<'_>> {
        match (self.state, self.repr) {
            (State::Body(_) | State::Tag(_) | State::EndReady, Some(prefix)) => {
                let header = &self.header_buf.as_ref()[..prefix.header_len as usize];
                Some(Frame { prefix, header })
            }
            _ => None,
        }
    }

    /// The frame whose [`Event::End`] was the last event returned, until the
    /// next call that feeds input: a receiver of sealed frames acts on a
    /// frame only here, once its tag verified, without copying the header.
    pub fn ended_frame(&self) -> Option<Frame<'_>> {
        match (self.ended, self.repr) {
            (true, Some(prefix)) => {
                let header = &self.header_buf.as_ref()[..prefix.header_len as usize];
                Some(Frame { prefix, header })
            }
            _ => None,
        }
    }

    /// Forget any partial frame and expect a frame start.
    pub fn reset(&mut self) {
        self.state = State::Prefix(0);
        self.hunting = false;
        self.repr = None;
        self.ended = false;
    }

    fn fail<'s, 'i>(&mut self, used: usize, e: DecodeError) -> (usize, DecodeResult<'s, 'i>) {
        self.state = State::Hunt;
        self.hunting = true;
        self.repr = None;
        self.ended = false;
        (used, Err(e))
    }

    fn after_body(&mut self, sealed: bool) {
        self.state = if sealed {
            State::Tag(0)
        } else {
            State::EndReady
        };
    }

    /// Feed input; returns the bytes consumed and at most one event (or an
    /// error). See the module documentation for the call order. Never panics.
    /// `Ok(None)` means every input byte was consumed and more are needed.
    ///
    /// On an error, the bytes up to the offending one are consumed, the error
    /// is returned once, and the decoder hunts for the next frame start,
    /// skipping bytes silently until a frame passes its checksum.
    pub fn handle_bytes<'s, 'i>(&'s mut self, input: &'i [u8]) -> (usize, DecodeResult<'s, 'i>) {
        let mut used = 0usize;
        if !input.is_empty() {
            // The header buffer may be overwritten from here on.
            self.ended = false;
            if self.state == State::Prefix(0) {
                self.repr = None;
            }
        }
        loop {
            let rest = &input[used..];
            match self.state {
                State::Hunt => match rest.iter().position(|&b| b == MAGIC[0]) {
                    Some(i) => {
                        used += i;
                        self.state = State::Prefix(0);
                    }
                    None => return (input.len(), Ok(None)),
                },
                State::Prefix(have) => {
                    let Some(&byte) = rest.first() else {
                        return (used, Ok(None));
                    };
                    if have < 2 {
                        // Magic is checked byte by byte, so garbage is refused at once.
                        if byte != MAGIC[have] {
                            if self.hunting {
                                used += usize::from(have == 0);
                                self.state = State::Hunt;
                                continue;
                            }
                            // A wrong second byte may itself start a frame: leave it.
                            return self.fail(used + usize::from(have == 0), DecodeError::BadMagic);
                        }
                        self.prefix[have] = byte;
                        used += 1;
                        self.state = State::Prefix(have + 1);
                        continue;
                    }
                    let n = (PREFIX_LEN - have).min(rest.len());
                    self.prefix[have..have + n].copy_from_slice(&rest[..n]);
                    used += n;
                    if have + n < PREFIX_LEN {
                        self.state = State::Prefix(have + n);
                        continue;
                    }
                    let repr = match PrefixRepr::parse(&Prefix::new_unchecked(&self.prefix[..])) {
                        Ok(r) => r,
                        Err(e) => return self.fail(used, e.into()),
                    };
                    if repr.flags.contains(Flags::ENCRYPTED) && !self.encryption {
                        return self.fail(used, DecodeError::UnknownFlags(Flags::ENCRYPTED.bits()));
                    }
                    if repr.header_len > self.limits.max_header {
                        let max = self.limits.max_header;
                        return self.fail(
                            used,
                            DecodeError::HeaderTooLarge {
                                len: repr.header_len,
                                max,
                            },
                        );
                    }
                    if repr.body_len > self.limits.max_body {
                        let max = self.limits.max_body;
                        return self.fail(
                            used,
                            DecodeError::BodyTooLarge {
                                len: repr.body_len,
                                max,
                            },
                        );
                    }
                    self.repr = Some(repr);
                    self.state = State::Header(0);
                }
                State::Header(have) => {
                    let Some(repr) = self.repr else {
                        self.state = State::Prefix(0);
                        continue;
                    };
                    let want = repr.header_len as usize;
                    let n = (want - have).min(rest.len());
                    self.header_buf.as_mut()[have..have + n].copy_from_slice(&rest[..n]);
                    used += n;
                    if have + n < want {
                        self.state = State::Header(have + n);
                        return (used, Ok(None));
                    }
                    let p = Prefix::new_unchecked(&self.prefix[..]);
                    let computed = p.compute_checksum(&self.header_buf.as_ref()[..want]);
                    let got = p.checksum();
                    if computed != got {
                        return self.fail(used, DecodeError::Checksum { got, computed });
                    }
                    self.hunting = false;
                    self.state = State::HeaderReady;
                }
                State::HeaderReady => {
                    let Some(repr) = self.repr else {
                        self.state = State::Prefix(0);
                        continue;
                    };
                    if repr.body_len > 0 {
                        self.state = State::Body(repr.body_len);
                    } else {
                        self.after_body(repr.flags.contains(Flags::SEALED));
                    }
                    let header = &self.header_buf.as_ref()[..repr.header_len as usize];
                    return (
                        used,
                        Ok(Some(Event::Header(Frame {
                            prefix: repr,
                            header,
                        }))),
                    );
                }
                State::Body(left) => {
                    if rest.is_empty() {
                        return (used, Ok(None));
                    }
                    let n = (rest.len() as u64).min(left) as usize;
                    if left == n as u64 {
                        let sealed = self.repr.is_some_and(|r| r.flags.contains(Flags::SEALED));
                        self.after_body(sealed);
                    } else {
                        self.state = State::Body(left - n as u64);
                    }
                    return (used + n, Ok(Some(Event::Body(&rest[..n]))));
                }
                State::Tag(have) => {
                    let n = (TAG_LEN - have).min(rest.len());
                    self.tag[have..have + n].copy_from_slice(&rest[..n]);
                    used += n;
                    if have + n < TAG_LEN {
                        self.state = State::Tag(have + n);
                        return (used, Ok(None));
                    }
                    self.state = State::EndReady;
                }
                State::EndReady => {
                    let sealed = self.repr.is_some_and(|r| r.flags.contains(Flags::SEALED));
                    self.state = State::Prefix(0);
                    // `repr` stays for `ended_frame` until more input is fed.
                    self.ended = true;
                    let tag = if sealed { Some(self.tag) } else { None };
                    return (used, Ok(Some(Event::End { tag })));
                }
            }
        }
    }
}

/// Bytes [`encode_head`] writes for `header`.
pub fn head_len(header: &Header<'_>) -> usize {
    PREFIX_LEN + header.buffer_len()
}

/// Write a frame's prefix and header into `buf`; the caller sends the
/// returned slice, then exactly `body_len` body bytes (then the tag, if
/// `flags` has SEALED). If `buf` is too small, nothing is written and the
/// needed size is reported.
///
/// ```
/// use tether_proto::{codec::encode_head, wire::Flags, Header, Message};
/// let mut buf = [0u8; 64];
/// let head = encode_head(&Header::new(7, Message::Ping { stamp: 1 }), 0, Flags::empty(), &mut buf).unwrap();
/// assert_eq!(head, [0x54, 0x48, 0x01, 0x00, 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
///                   0x65, 0x4a, 0x63, 0xdd, 0x07, 0x04, 0x01]);
/// ```
pub fn encode_head<'b>(
    header: &Header<'_>,
    body_len: u64,
    flags: Flags,
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    let hlen = header.buffer_len();
    if hlen > MAX_HEADER_LEN {
        return Err(EncodeError::HeaderTooLarge {
            len: hlen,
            max: MAX_HEADER_LEN,
        });
    }
    let needed = PREFIX_LEN + hlen;
    if buf.len() < needed {
        return Err(EncodeError::BufferTooSmall { needed });
    }
    let (pbuf, hbuf) = buf.split_at_mut(PREFIX_LEN);
    let written = header.emit(hbuf)?.len();
    let repr = PrefixRepr {
        version: VERSION,
        flags,
        header_len: written as u16,
        body_len,
    };
    repr.emit(&mut Prefix::new_unchecked(pbuf), &hbuf[..written]);
    Ok(&buf[..PREFIX_LEN + written])
}

/// Encode a whole frame with an in-memory body (small frames: replies,
/// datagrams) into `buf`. Same contract as [`encode_head`].
pub fn encode_frame<'b>(
    header: &Header<'_>,
    body: &[u8],
    buf: &'b mut [u8],
) -> Result<&'b [u8], EncodeError> {
    let needed = head_len(header) + body.len();
    if buf.len() < needed {
        return Err(EncodeError::BufferTooSmall { needed });
    }
    let head = encode_head(header, body.len() as u64, Flags::empty(), buf)?.len();
    buf[head..head + body.len()].copy_from_slice(body);
    Ok(&buf[..head + body.len()])
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::message::Message;
    extern crate std;
    use std::vec::Vec;

    const BIG: Limits = Limits {
        max_header: 1024,
        max_body: 1 << 20,
    };

    fn frame(h: &Header<'_>, body: &[u8]) -> Vec<u8> {
        let mut buf = std::vec![0u8; 4096];
        let n = encode_frame(h, body, &mut buf).unwrap().len();
        buf.truncate(n);
        buf
    }

    type Frames = Vec<(Vec<u8>, Vec<u8>)>;

    /// Decode `input` fed `step` bytes at a time: (header, body) per whole
    /// frame, and the errors seen.
    fn decode_all(input: &[u8], step: usize) -> (Frames, Vec<DecodeError>) {
        let mut hb = [0u8; 1024];
        let mut d = Decoder::new(&mut hb[..], BIG);
        let (mut out, mut errs) = (Vec::new(), Vec::new());
        let mut cur: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut chunks = input.chunks(step.max(1));
        let mut rest: &[u8] = chunks.next().unwrap_or(&[]);
        loop {
            let (n, r) = d.handle_bytes(rest);
            rest = &rest[n..];
            match r {
                Ok(Some(Event::Header(f))) => cur = Some((f.header.to_vec(), Vec::new())),
                Ok(Some(Event::Body(b))) => cur.as_mut().unwrap().1.extend_from_slice(b),
                Ok(Some(Event::End { .. })) => out.push(cur.take().unwrap()),
                Ok(None) => match chunks.next() {
                    Some(c) => rest = c,
                    None => break,
                },
                Err(e) => {
                    cur = None;
                    errs.push(e);
                }
            }
        }
        (out, errs)
    }

    fn sample_stream() -> Vec<u8> {
        let mut s = frame(&Header::new(1, Message::Echo { text: "hi" }), &[]);
        s.extend(frame(&Header::new(2, Message::Data), &[7u8; 700]));
        s.extend(frame(
            &Header::new(
                2,
                Message::Done {
                    bytes: 700,
                    sha256: None,
                },
            ),
            &[],
        ));
        s
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        let stream = sample_stream();
        let (whole, errs) = decode_all(&stream, stream.len());
        assert!(errs.is_empty());
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[1].1, [7u8; 700]);
        for step in [1, 2, 3, 17, 18, 19, 100] {
            assert_eq!(
                decode_all(&stream, step),
                (whole.clone(), Vec::new()),
                "step {step}"
            );
        }
    }

    #[test]
    fn truncation_at_every_position_yields_no_false_frame() {
        let stream = sample_stream();
        let (whole, _) = decode_all(&stream, stream.len());
        for cut in 0..stream.len() {
            let (got, errs) = decode_all(&stream[..cut], 7);
            assert!(errs.is_empty(), "cut {cut}");
            assert_eq!(got[..], whole[..got.len()], "cut {cut}");
            assert!(got.len() < 3);
        }
    }

    #[test]
    fn every_single_bit_flip_in_prefix_or_header_is_detected() {
        let f = frame(&Header::new(9, Message::Stat { path: "a/b.txt" }), &[]);
        let next = frame(&Header::new(10, Message::Ping { stamp: 1 }), &[0u8; 40]);
        for bit in 0..f.len() * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            for _ in 0..12 {
                g.extend(&next);
            }
            let (frames, errs) = decode_all(&g, g.len());
            assert!(!errs.is_empty(), "bit {bit} undetected");
            // Nothing but the intact following frame may come out.
            assert!(
                frames
                    .iter()
                    .all(|(h, _)| h[..] == next[18..next.len() - 40]),
                "bit {bit} misread"
            );
        }
    }

    #[test]
    fn oversize_header_rejected_before_reading_it() {
        let mut hb = [0u8; 64];
        let mut d = Decoder::new(
            &mut hb[..],
            Limits {
                max_header: 1024,
                max_body: 10,
            },
        );
        assert_eq!(d.limits().max_header, 64);
        let p = [0x54, 0x48, 1, 0, 65, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            d.handle_bytes(&p),
            (18, Err(DecodeError::HeaderTooLarge { len: 65, max: 64 }))
        );
        d.reset();
        let p = [
            0x54, 0x48, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0,
        ];
        assert_eq!(
            d.handle_bytes(&p),
            (
                18,
                Err(DecodeError::BodyTooLarge {
                    len: 1 << 63,
                    max: 10
                })
            )
        );
    }

    #[test]
    fn resyncs_after_garbage_reporting_once() {
        let good = frame(&Header::new(3, Message::Ping { stamp: 9 }), &[]);
        let mut s = b"\x00garbage TTT".to_vec();
        s.extend(&good);
        s.extend(b"zz");
        s.extend(&good);
        for step in [1, 5, s.len()] {
            let (frames, errs) = decode_all(&s, step);
            assert_eq!(frames.len(), 2, "step {step}");
            assert_eq!(
                errs,
                [DecodeError::BadMagic, DecodeError::BadMagic],
                "step {step}"
            );
        }
    }

    #[test]
    fn sealed_frame_carries_its_tag() {
        let mut buf = [0u8; 64];
        let h = Header::new(1, Message::Data);
        let n = encode_head(&h, 2, Flags::SEALED, &mut buf).unwrap().len();
        let mut s = buf[..n].to_vec();
        s.extend([0xAB, 0xCD]);
        s.extend([0x11; TAG_LEN]);
        let mut hb = [0u8; 64];
        let mut d = Decoder::new(&mut hb[..], BIG);
        let mut rest = &s[..];
        let mut tag = None;
        loop {
            let (n, r) = d.handle_bytes(rest);
            rest = &rest[n..];
            match r.unwrap() {
                Some(Event::End { tag: t }) => {
                    tag = t;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        assert_eq!(tag, Some([0x11; TAG_LEN]));
        assert!(rest.is_empty());
    }

    #[test]
    fn ended_frame_lasts_until_more_input() {
        let mut s = frame(&Header::new(4, Message::Ping { stamp: 5 }), &[]);
        let next = frame(&Header::new(5, Message::Ping { stamp: 6 }), &[]);
        s.extend(&next);
        let mut hb = [0u8; 64];
        let mut d = Decoder::new(&mut hb[..], BIG);
        let first = s.len() - next.len();
        let (n, r) = d.handle_bytes(&s[..first]);
        assert!(matches!(r, Ok(Some(Event::Header(_)))));
        assert!(d.ended_frame().is_none(), "not before its End");
        let (m, r) = d.handle_bytes(&s[n..first]);
        assert_eq!((m, r), (0, Ok(Some(Event::End { tag: None }))));
        let f = d.ended_frame().unwrap();
        assert_eq!(
            f.parse().unwrap(),
            Header::new(4, Message::Ping { stamp: 5 })
        );
        // Feeding nothing keeps it; feeding a byte of the next frame ends it.
        assert_eq!(d.handle_bytes(&[]), (0, Ok(None)));
        assert!(d.ended_frame().is_some());
        let (k, r) = d.handle_bytes(&s[first..first + 1]);
        assert_eq!((k, r), (1, Ok(None)));
        assert!(d.ended_frame().is_none());
        assert!(d.frame().is_none());
        let (_, r) = d.handle_bytes(&s[first + 1..]);
        let Ok(Some(Event::Header(f))) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            f.parse().unwrap(),
            Header::new(5, Message::Ping { stamp: 6 })
        );
    }
}
